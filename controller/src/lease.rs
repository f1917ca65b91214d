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

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use futures_util::future::join_all;
use hoist_proto::v1::{LockRequest, UnlockRequest};
use tokio::task::JoinHandle;

use crate::{
    client::Credentials,
    fanout::{self, CallError},
    fleet::Host,
};

/// Lease length; a lease not renewed within it lapses.
pub const TTL: Duration = Duration::from_secs(60);
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
) -> Result<(), CallError> {
    let request = LockRequest {
        app: app.to_string(),
        reason: reason.to_string(),
        deploy_id: id.to_string(),
        ttl_ms: TTL.as_millis() as u64,
    };
    fanout::ask_one(host, creds, timeout, |mut client| async move {
        client.lock(request).await.map(|_| ())
    })
    .await
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
        let mut sorted: Vec<&(&Host, String)> = targets.iter().collect();
        sorted.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut unreachable = Vec::new();
            let mut refused = None;
            for (host, id) in &sorted {
                match lock(host, &self.creds, self.timeout, &self.app, &self.reason, id).await {
                    Ok(()) => locked(&self.held).push(Held {
                        host: (*host).clone(),
                        id: id.clone(),
                    }),
                    Err(CallError::Unreachable(why)) => {
                        unreachable.push((host.name.clone(), why));
                    }
                    Err(CallError::Status(status)) => {
                        let held_elsewhere = status.code() == tonic::Code::FailedPrecondition;
                        refused =
                            Some((host.name.clone(), CallError::Status(status), held_elsewhere));
                        break;
                    }
                }
            }
            let Some((host, err, held_elsewhere)) = refused else {
                self.renew_in_background();
                return Ok(unreachable);
            };
            let failures = self.release().await;
            let why = err.to_string();
            let kept: Vec<String> = failures.into_iter().map(|(h, _)| h).collect();
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
                    if let Err(err) = lock(&h.host, &creds, timeout, &app, &reason, &h.id).await {
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
    pub async fn hand_over(&self, host: &str, new_id: &str) -> Result<(), String> {
        let _no_renewal = self.busy.read().await;
        let Some(held) = locked(&self.held)
            .iter()
            .find(|h| h.host.name == host)
            .cloned()
        else {
            return Err(format!("{host} is not locked by this rollout"));
        };
        unlock(&held.host, &self.creds, self.timeout, &self.app, &held.id)
            .await
            .map_err(|e| format!("cannot release the deploy's lease: {e}"))?;
        let relocked = lock(
            &held.host,
            &self.creds,
            self.timeout,
            &self.app,
            &self.reason,
            new_id,
        )
        .await;
        let mut all = locked(&self.held);
        match relocked {
            Ok(()) => {
                if let Some(h) = all.iter_mut().find(|h| h.host.name == host) {
                    h.id = new_id.to_string();
                }
                Ok(())
            }
            Err(e) => {
                all.retain(|h| h.host.name != host);
                Err(format!("cannot lock {} for the rollback: {e}", self.app))
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
