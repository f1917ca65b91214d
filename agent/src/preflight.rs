//! Everything the daemon needs from a config before it serves it, checked the same way
//! by `hoistd check-config`, at start-up (exit 64 when it fails, so systemd stops
//! instead of restarting in a loop) and on every reload (the running config is kept):
//! the TLS material loads and makes a usable identity, and `state_dir` and every
//! `deploy_to` can be written from where the agent runs (under the unit's
//! `ProtectSystem=`/`ProtectHome=` a path outside `ReadWritePaths=` is read-only), and
//! every check's `ca` file holds PEM certificates.

use std::path::{Path, PathBuf};

use nix::{errno::Errno, unistd::AccessFlags};

use crate::{
    config::{Config, Probe},
    host::checks,
    rpc::tls,
};

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    #[error(
        "{what} {path} cannot be written here: {} is on a read-only file system; under systemd, \
         add it to ReadWritePaths= in a drop-in (`systemctl edit hoistd`) or move it under /srv or /var/lib",
        ancestor.display()
    )]
    ReadOnly {
        what: String,
        path: PathBuf,
        ancestor: PathBuf,
    },
    #[error("app {app}, check {check:?}: {why}")]
    CheckCa {
        app: String,
        check: String,
        why: String,
    },
}

/// Every problem that would stop the daemon from serving `config`; empty when none.
pub fn check(config: &Config) -> Vec<PreflightError> {
    let mut problems = Vec::new();
    if let Err(err) = tls::server_config(&config.tls) {
        problems.push(err.into());
    }
    let mut paths = vec![("state_dir".to_string(), &config.agent.state_dir)];
    for app in &config.apps {
        paths.push((format!("deploy_to of app {}", app.name), &app.deploy_to));
    }
    for (what, path) in paths {
        if let Some(ancestor) = read_only_at(path) {
            problems.push(PreflightError::ReadOnly {
                what,
                path: path.clone(),
                ancestor,
            });
        }
    }
    for app in &config.apps {
        for check in &app.checks {
            if let Probe::Http { ca: Some(ca), .. } = &check.probe
                && let Err(why) = checks::read_ca(ca)
            {
                problems.push(PreflightError::CheckCa {
                    app: app.name.clone(),
                    check: check.name(),
                    why,
                });
            }
        }
    }
    problems
}

/// Warnings for a config that passes here but not under the shipped unit, which mounts
/// `/home`, `/root` and `/run/user` read-only (`ProtectHome=read-only`).
pub fn unit_warnings(config: &Config) -> Vec<String> {
    let mut paths = vec![("state_dir".to_string(), &config.agent.state_dir)];
    for app in &config.apps {
        paths.push((format!("deploy_to of app {}", app.name), &app.deploy_to));
    }
    paths
        .into_iter()
        .filter(|(_, path)| {
            ["/home", "/root", "/run/user"]
                .iter()
                .any(|home| path.starts_with(home))
        })
        .map(|(what, path)| {
            format!(
                "warning: {what} {} is under a home directory, which the shipped hoistd.service \
                 mounts read-only (ProtectHome=read-only): move it under /srv or /var/lib, or \
                 override ProtectHome= and ReadWritePaths= in a drop-in",
                path.display()
            )
        })
        .collect()
}

/// The nearest existing directory at or above `path`, when it is on a read-only file
/// system (the agent creates what is missing below it).
fn read_only_at(path: &Path) -> Option<PathBuf> {
    let ancestor = path.ancestors().find(|p| p.exists())?;
    match nix::unistd::access(ancestor, AccessFlags::W_OK) {
        Err(Errno::EROFS) => Some(ancestor.to_path_buf()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::read_only_at;

    #[test]
    fn a_writable_tree_is_not_read_only() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_only_at(&dir.path().join("missing/deeper")), None);
    }
}
