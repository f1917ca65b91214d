//! The running-job marker, `state_dir/apps/APP/running.json`: written when a job
//! starts and when it switches, removed when it ends, so a restarted agent knows what
//! it was doing.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::state::atomic;

/// Marker of a job in progress, so a restarted agent can clean up after a crash.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Running {
    pub job_id: String,
    pub release: String,
    pub switched: bool,
    pub started_at_ms: u64,
    pub kind: String,
    pub who: String,
    pub r#ref: String,
}

impl Running {
    pub fn path(state_dir: &Path, app: &str) -> PathBuf {
        state_dir.join("apps").join(app).join("running.json")
    }

    pub fn save(&self, state_dir: &Path, app: &str) {
        let path = Running::path(state_dir, app);
        let result = serde_json::to_vec(self)
            .map_err(std::io::Error::other)
            .and_then(|b| atomic::write_file(&path, &b));
        if let Err(err) = result {
            tracing::warn!(path = %path.display(), error = %err, "cannot record the running job");
        }
    }

    /// Removes the marker: the job ended (or its end was recorded after a restart).
    pub fn clear(state_dir: &Path, app: &str) {
        let _ = std::fs::remove_file(Running::path(state_dir, app));
    }
}
