//! The outcome of the last SIGHUP, `state_dir/reload`: which agent (pid), how many
//! reloads it has handled (`seq`), whether the last one was applied, and why not. The
//! agent writes it at start-up (seq 0) and after every reload; `hoistd reload` (the
//! unit's `ExecReload`) signals the agent and waits for `seq` to move, so
//! `systemctl reload` fails when the agent kept its old config.

use std::{
    io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::atomic;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadStatus {
    pub pid: u32,
    pub seq: u64,
    /// Whether reload `seq` was applied (true for seq 0: the config the agent started with).
    pub applied: bool,
    /// What was refused, or what was applied.
    pub message: String,
}

impl ReloadStatus {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("reload")
    }

    /// The last status written, if there is a readable one.
    pub fn read(state_dir: &Path) -> Option<ReloadStatus> {
        let text = std::fs::read(Self::path(state_dir)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn write(&self, state_dir: &Path) -> io::Result<()> {
        let mut bytes = serde_json::to_vec(self).map_err(io::Error::other)?;
        bytes.push(b'\n');
        atomic::write_file(&Self::path(state_dir), &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::ReloadStatus;

    #[test]
    fn round_trips_and_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(ReloadStatus::read(dir.path()), None);
        let status = ReloadStatus {
            pid: 7,
            seq: 2,
            applied: false,
            message: "cannot read certificate /x".into(),
        };
        status.write(dir.path()).unwrap();
        assert_eq!(ReloadStatus::read(dir.path()), Some(status));
    }
}
