//! The app locks a fleet rollout holds: taken on every target first (sorted by host
//! name, so two rollouts never each hold half the fleet), renewed in the background
//! while the rollout runs, released at the end whatever happened.
//!
//! Each host's lease id is the id of the job the rollout runs there: the agent runs a
//! Deploy or Rollback whose id holds the lease under it (it neither takes nor releases
//! it). Rolling a host back after its deploy hands the lease over: Unlock with the
//! deploy's id, Lock with the rollback's id.
//!
//! A rollout whose controller dies leaves leases that expire within [`TTL`].
//!
//! [`lock_in_order`] is the one "lock every host in name order, all or nothing": the
//! rollout's leases and `hoist lock`'s manual locks (no expiry) both take it.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures_util::future::join_all;
use hoist_proto::v1::{LockInfo, LockRequest, UnlockRequest};
use tokio::task::JoinHandle;

use crate::{
    agents::client::Credentials,
    agents::fanout::{self, CallError},
    fleet::Host,
};

/// Lease length of a rollout's locks; a lease not renewed within it lapses. The one
/// lease constant of the controller.
pub const TTL: Duration = Duration::from_secs(60);
/// `ttl_ms` of a lock that never expires (`hoist lock`).
pub const NO_EXPIRY: u64 = 0;
/// How often leases are renewed.
pub const RENEW_EVERY: Duration = Duration::from_secs(20);
/// Pause between attempts while `--lock-wait` lasts.
const RETRY_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone, Debug)]
struct Held {
    host: Host,
    id: String,
}

/// Why the locks could not be taken.
#[derive(Debug)]
pub struct Refused {
    pub host: String,
    pub why: String,
    /// Hosts whose lock could not be released again (still held until their lease
    /// lapses).
    pub kept: Vec<String>,
}

/// Leases held on hosts, renewed until released.
pub struct Leases {
    app: String,
    reason: String,
    creds: Credentials,
    timeout: Duration,
    held: Arc<Mutex<Vec<Held>>>,
    /// Written by a renewal round, read by hand-overs (which may run at once), so a
    /// renewal never re-takes the lease a hand-over just released.
    busy: Arc<tokio::sync::RwLock<()>>,
    renewer: Option<JoinHandle<()>>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

async fn lock(
    host: &Host,
    creds: &Credentials,
    timeout: Duration,
    app: &str,
    reason: &str,
    id: &str,
    ttl_ms: u64,
) -> Result<LockInfo, CallError> {
    let request = LockRequest {
        app: app.to_string(),
        reason: reason.to_string(),
        deploy_id: id.to_string(),
        ttl_ms,
    };
    fanout::ask_one(host, creds, timeout, |mut client| async move {
        client
            .lock(request)
            .await
            .map(|r| r.into_inner().lock.unwrap_or_default())
    })
    .await
}

fn lease_ms() -> u64 {
    u64::try_from(TTL.as_millis()).unwrap_or(u64::MAX)
}

async fn unlock(
    host: &Host,
    creds: &Credentials,
    timeout: Duration,
    app: &str,
    id: &str,
) -> Result<(), CallError> {
    let request = UnlockRequest {
        app: app.to_string(),
        deploy_id: id.to_string(),
        force: false,
    };
    fanout::ask_one(host, creds, timeout, |mut client| async move {
        client.unlock(request).await.map(|_| ())
    })
    .await
}

/// Why a host's lease could not move to the job that runs next there.
#[derive(Debug, thiserror::Error)]
pub enum HandOverError {
    #[error("{0} is not locked by this rollout")]
    NotLocked(String),
    #[error("cannot release the deploy's lease: {0}")]
    Release(CallError),
    #[error("cannot lock {app} for the rollback: {error}")]
    Relock { app: String, error: CallError },
}

/// A host refused a lock in [`lock_in_order`]; the locks taken before it were
/// released again (or not: `released` says, in the order tried).
#[derive(Debug)]
pub struct Refusal {
    pub host: String,
    pub error: CallError,
    pub released: Vec<(String, Result<(), CallError>)>,
}

/// What [`lock_in_order`] does with a host that does not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unreachable {
    /// Skip it and go on (a rollout counts it against its budget).
    Skip,
    /// Treat it as a refusal (`hoist lock`: all or nothing).
    Refuse,
}

/// Locks `app` on every `(host, lock id)` in host-name order (so two callers never
/// each hold half the fleet), all or nothing: the first host that refuses stops, and
/// every lock taken is released again, newest first. `locked` hears of each lock
/// taken. Returns the hosts skipped as unreachable, `(host, why)`.
#[allow(clippy::too_many_arguments)]
pub async fn lock_in_order(
    targets: &[(&Host, String)],
    creds: &Credentials,
    timeout: Duration,
    app: &str,
    reason: &str,
    ttl_ms: u64,
    unreachable: Unreachable,
    mut locked: impl FnMut(&Host, &str, LockInfo),
) -> Result<Vec<(String, String)>, Refusal> {
    let mut sorted: Vec<&(&Host, String)> = targets.iter().collect();
    sorted.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let mut taken: Vec<(&Host, &str)> = Vec::new();
    let mut skipped = Vec::new();
    for (host, id) in sorted {
        match lock(host, creds, timeout, app, reason, id, ttl_ms).await {
            Ok(info) => {
                locked(host, id, info);
                taken.push((host, id));
            }
            Err(CallError::Unreachable(why)) if unreachable == Unreachable::Skip => {
                skipped.push((host.name.clone(), why));
            }
            Err(error) => {
                let mut released = Vec::new();
                for (host, id) in taken.into_iter().rev() {
                    let result = unlock(host, creds, timeout, app, id).await;
                    released.push((host.name.clone(), result));
                }
                return Err(Refusal {
                    host: host.name.clone(),
                    error,
                    released,
                });
            }
        }
    }
    Ok(skipped)
}

impl Leases {
    /// Leases on `app` described by `reason`, none taken yet.
    pub fn new(app: &str, reason: &str, creds: &Credentials, timeout: Duration) -> Leases {
        Leases {
            app: app.to_string(),
            reason: reason.to_string(),
            creds: creds.clone(),
            timeout,
            held: Arc::default(),
            busy: Arc::default(),
            renewer: None,
        }
    }

    /// Takes the app lock on every `(host, lease id)`, in host-name order, and keeps
    /// renewing them. A host that refuses (held by someone else, unknown app, role)
    /// releases every lock taken and fails, unless `wait` is non-zero: then it retries
    /// until `wait` has passed, calling `waiting` with the host and why before each pause,
    /// and stopping early once `cancelled` says so (Ctrl-C). Hosts that do not answer
    /// are skipped and returned as `(host, why)`.
    pub async fn take(
        &mut self,
        targets: &[(&Host, String)],
        wait: Duration,
        mut waiting: impl FnMut(&str, &str),
        cancelled: impl Fn() -> bool,
    ) -> Result<Vec<(String, String)>, Refused> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let held = self.held.clone();
            let round = lock_in_order(
                targets,
                &self.creds,
                self.timeout,
                &self.app,
                &self.reason,
                lease_ms(),
                Unreachable::Skip,
                |host, id, _| {
                    locked(&held).push(Held {
                        host: host.clone(),
                        id: id.to_string(),
                    })
                },
            )
            .await;
            let refusal = match round {
                Ok(unreachable) => {
                    self.renew_in_background();
                    return Ok(unreachable);
                }
                Err(refusal) => refusal,
            };
            locked(&self.held).clear();
            let held_elsewhere = matches!(
                &refusal.error,
                CallError::Status(status) if status.code() == tonic::Code::FailedPrecondition
            );
            let why = refusal.error.to_string();
            let kept: Vec<String> = refusal
                .released
                .into_iter()
                .filter(|(_, result)| result.is_err())
                .map(|(host, _)| host)
                .collect();
            let host = refusal.host;
            if !held_elsewhere
                || !kept.is_empty()
                || cancelled()
                || tokio::time::Instant::now() + RETRY_EVERY > deadline
            {
                return Err(Refused { host, why, kept });
            }
            waiting(&host, &why);
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    fn renew_in_background(&mut self) {
        let (held, creds, timeout) = (self.held.clone(), self.creds.clone(), self.timeout);
        let (app, reason, busy) = (self.app.clone(), self.reason.clone(), self.busy.clone());
        self.renewer = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                let _round = busy.write().await;
                let now: Vec<Held> = locked(&held).clone();
                let renewals = now.iter().map(|h| async {
                    let renewed =
                        lock(&h.host, &creds, timeout, &app, &reason, &h.id, lease_ms()).await;
                    if let Err(err) = renewed {
                        tracing::warn!(host = %h.host.name, error = %err, "cannot renew the lock's lease");
                    }
                });
                join_all(renewals).await;
            }
        }));
    }

    /// Names of the hosts locked.
    pub fn hosts(&self) -> Vec<String> {
        locked(&self.held)
            .iter()
            .map(|h| h.host.name.clone())
            .collect()
    }

    /// Moves `host`'s lease to `new_id` (the id of the job that runs next there).
    pub async fn hand_over(&self, host: &str, new_id: &str) -> Result<(), HandOverError> {
        let _no_renewal = self.busy.read().await;
        let Some(held) = locked(&self.held)
            .iter()
            .find(|h| h.host.name == host)
            .cloned()
        else {
            return Err(HandOverError::NotLocked(host.to_string()));
        };
        unlock(&held.host, &self.creds, self.timeout, &self.app, &held.id)
            .await
            .map_err(HandOverError::Release)?;
        let relocked = lock(
            &held.host,
            &self.creds,
            self.timeout,
            &self.app,
            &self.reason,
            new_id,
            lease_ms(),
        )
        .await;
        let mut all = locked(&self.held);
        match relocked {
            Ok(_) => {
                if let Some(h) = all.iter_mut().find(|h| h.host.name == host) {
                    h.id = new_id.to_string();
                }
                Ok(())
            }
            Err(e) => {
                all.retain(|h| h.host.name != host);
                Err(HandOverError::Relock {
                    app: self.app.clone(),
                    error: e,
                })
            }
        }
    }

    /// Stops renewing and releases every lease; returns `(host, why)` for those that
    /// could not be released (their lease lapses within [`TTL`]).
    pub async fn release(&mut self) -> Vec<(String, String)> {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        let held: Vec<Held> = std::mem::take(&mut *locked(&self.held));
        let releases = held.iter().map(|h| async {
            unlock(&h.host, &self.creds, self.timeout, &self.app, &h.id)
                .await
                .map_err(|e| (h.host.name.clone(), e.to_string()))
        });
        join_all(releases)
            .await
            .into_iter()
            .filter_map(Result::err)
            .collect()
    }
}

impl Drop for Leases {
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
    }
}
