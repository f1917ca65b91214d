//! App locks are leases: a holder (from the client certificate), a deploy id, a reason,
//! since when, and an expiry. A lease that is not renewed expires, so a vanished
//! controller never blocks a fleet for days; releasing checks the deploy id, so a stale
//! unlock cannot free someone else's lock. Manual locks (`hoist lock`) have no expiry.
//!
//! A lease's deploy id is the id of the job that runs under it (the agent's own lease
//! for a job, or a controller's lease for its rollout's job on this host). Such a lease
//! holds only while its job runs: an agent that starts (no job runs then) releases every
//! lease named after a job it knows ([`crate::apps`]), whatever its expiry.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use crate::state::{atomic, journal};
use hoist_proto::v1::LockInfo;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Lease {
    pub holder: String,
    pub deploy_id: String,
    pub reason: String,
    pub since_ms: u64,
    /// `None`: held until unlocked.
    pub expires_ms: Option<u64>,
}

impl Lease {
    pub fn live(&self, now_ms: u64) -> bool {
        self.expires_ms.is_none_or(|e| e > now_ms)
    }

    pub fn info(&self) -> LockInfo {
        LockInfo {
            holder: self.holder.clone(),
            deploy_id: self.deploy_id.clone(),
            reason: self.reason.clone(),
            since: Some(journal::timestamp(self.since_ms)),
            expires_at: self.expires_ms.map(journal::timestamp),
        }
    }

    /// "locked by dana (deploy d-1: "release train") since 2026-11-22 10:15:00 UTC, 5m ago"
    pub fn describe(&self, app: &str, now_ms: u64) -> String {
        let age = Duration::from_millis(now_ms.saturating_sub(self.since_ms));
        let reason = if self.reason.is_empty() {
            String::new()
        } else {
            format!(": {:?}", self.reason)
        };
        let expiry = match self.expires_ms {
            Some(e) => format!(", lease expires in {}s", e.saturating_sub(now_ms) / 1000),
            None => ", until unlocked".to_string(),
        };
        format!(
            "app {app} is locked by {} (job {}{reason}) since {} ago{expiry}",
            self.holder,
            self.deploy_id,
            human(age)
        )
    }
}

pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{}h{}m", s / 3600, (s % 3600) / 60),
    }
}

/// Why a lock could not be taken or released.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else holds it; `held` describes them (see [`Lease::describe`]).
    #[error("{held}; wait for it, or `hoist unlock {app} --force` if it is stale")]
    Busy { app: String, held: String },
    /// An unlock named another deploy id than the holder's.
    #[error("{held}; this unlock names {deploy_id:?}; pass --force to break it")]
    NotHolder { held: String, deploy_id: String },
}

/// The lock of one app, persisted so a manual lock survives a restart.
pub struct AppLock {
    path: PathBuf,
    lease: Option<Lease>,
}

impl AppLock {
    pub fn load(state_dir: &Path, app: &str) -> AppLock {
        let path = state_dir.join("apps").join(app).join("lock.json");
        let lease = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        AppLock { path, lease }
    }

    /// The lease on file, live or expired.
    pub fn held(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// The live lease, if any.
    pub fn current(&self, now_ms: u64) -> Option<&Lease> {
        self.lease.as_ref().filter(|l| l.live(now_ms))
    }

    /// Takes or renews the lock for `deploy_id`. Busy: an error naming the holder and
    /// since when.
    pub fn acquire(
        &mut self,
        app: &str,
        holder: &str,
        deploy_id: &str,
        reason: &str,
        ttl: Option<Duration>,
        now_ms: u64,
    ) -> Result<Lease, LockError> {
        if let Some(held) = self.current(now_ms)
            && held.deploy_id != deploy_id
        {
            return Err(LockError::Busy {
                app: app.to_string(),
                held: held.describe(app, now_ms),
            });
        }
        let since_ms = self.current(now_ms).map_or(now_ms, |held| held.since_ms);
        let lease = Lease {
            holder: holder.to_string(),
            deploy_id: deploy_id.to_string(),
            reason: reason.to_string(),
            since_ms,
            // Saturating, never wrapping: a wrapped expiry would lie before `since` and lock
            // nothing (requests are bounded in rpc::bounds; this is the second line).
            expires_ms: ttl
                .map(|t| now_ms.saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX))),
        };
        self.lease = Some(lease.clone());
        self.persist();
        Ok(lease)
    }

    /// Releases the lock if `deploy_id` holds it (or `force`).
    pub fn release(
        &mut self,
        app: &str,
        deploy_id: &str,
        force: bool,
        now_ms: u64,
    ) -> Result<(), LockError> {
        match self.current(now_ms) {
            None => {
                self.lease = None;
                self.persist();
                Ok(())
            }
            Some(held) if force || held.deploy_id == deploy_id => {
                self.lease = None;
                self.persist();
                Ok(())
            }
            Some(held) => Err(LockError::NotHolder {
                held: held.describe(app, now_ms),
                deploy_id: deploy_id.to_string(),
            }),
        }
    }

    fn persist(&self) {
        let result = match &self.lease {
            Some(lease) => serde_json::to_vec(lease)
                .map_err(std::io::Error::other)
                .and_then(|b| {
                    if let Some(dir) = self.path.parent() {
                        std::fs::create_dir_all(dir)?;
                    }
                    atomic::write_file(&self.path, &b)
                }),
            None => match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        };
        if let Err(err) = result {
            tracing::warn!(path = %self.path.display(), error = %err, "cannot persist the lock");
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the tests are the owner of the lock here
mod tests {
    use super::*;

    #[test]
    fn leases_expire_and_check_their_holder() {
        let dir = tempfile::tempdir().unwrap();
        let mut lock = AppLock::load(dir.path(), "web");
        let ttl = Some(Duration::from_secs(30));
        lock.acquire("web", "dana", "d-1", "", ttl, 1_000).unwrap();
        // Renewal by the same deploy keeps `since`.
        let renewed = lock.acquire("web", "dana", "d-1", "", ttl, 20_000).unwrap();
        assert_eq!(renewed.since_ms, 1_000);
        let busy = tonic::Status::from(
            lock.acquire("web", "vera", "d-2", "", ttl, 21_000)
                .unwrap_err(),
        );
        assert_eq!(busy.code(), tonic::Code::FailedPrecondition);
        assert!(
            busy.message().contains("locked by dana (job d-1)"),
            "{}",
            busy.message()
        );
        assert!(
            busy.message().contains("since 20s ago"),
            "{}",
            busy.message()
        );
        assert!(lock.release("web", "d-2", false, 21_000).is_err());
        // The lease lapses when not renewed.
        lock.acquire("web", "vera", "d-2", "", ttl, 60_000).unwrap();
        // A manual lock persists across loads.
        lock.release("web", "d-2", false, 61_000).unwrap();
        lock.acquire("web", "ops", "manual", "db migration", None, 62_000)
            .unwrap();
        let again = AppLock::load(dir.path(), "web");
        assert_eq!(again.current(u64::MAX).unwrap().holder, "ops");
    }
}
