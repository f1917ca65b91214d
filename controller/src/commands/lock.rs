//! `hoist lock APP --reason TEXT` and `hoist unlock APP [--force]`: a manual lock keeps
//! deploys away from an app (a database migration by hand, an incident) until it is
//! released.
//!
//! Locks are the agents' app locks (leases). A manual lock has id `lock-<UTC>-<hex>`
//! and no expiry. `hoist lock` takes the hosts in sorted order, all or nothing: if one
//! host refuses, the locks already taken are released again. `hoist unlock` reads each
//! host's lock from Status and releases it by its id, so it never releases a lock it
//! did not mean to: a deploy's lease, or another operator's manual lock, needs
//! `--force`.

use std::time::Duration;

use clap::Args;
use hoist_proto::v1::{GetInfoRequest, LockInfo, StatusRequest, UnlockRequest};
use serde_json::{Value, json};

use crate::{
    agents::{client::Credentials, fanout, ids},
    commands::{Ctx, Failure, Global, QUERY_TIMEOUT, parse_duration, usage},
    fleet::Host,
    output::{
        escape::one_line,
        render::{self, Output},
        table::{self, Tone},
    },
    rollout::lease::{self, Unreachable},
};

/// Prefix of the ids of manual locks (`hoist lock`).
pub const MANUAL_PREFIX: &str = "lock-";

/// `by dana since 2026-11-22 10:15:00 UTC (lock-...): reason`.
pub fn describe(lock: &LockInfo) -> String {
    let mut text = String::new();
    if !lock.holder.is_empty() {
        text.push_str(&format!("by {} ", one_line(&lock.holder)));
    }
    text.push_str(&format!("since {}", render::utc_time(lock.since.as_ref())));
    if !lock.deploy_id.is_empty() {
        text.push_str(&format!(" ({})", one_line(&lock.deploy_id)));
    }
    if !lock.reason.is_empty() {
        text.push_str(&format!(": {}", one_line(&lock.reason)));
    }
    text
}

pub fn lock_json(lock: &LockInfo) -> Value {
    json!({
        "holder": lock.holder,
        "deploy_id": lock.deploy_id,
        "reason": lock.reason,
        "since": render::timestamp_json(lock.since.as_ref()),
        "expires_at": render::timestamp_json(lock.expires_at.as_ref()),
    })
}

fn sorted<'h>(hosts: &[&'h Host]) -> Vec<&'h Host> {
    let mut hosts = hosts.to_vec();
    hosts.sort_by(|a, b| a.name.cmp(&b.name));
    hosts
}
fn line(out: &mut Output<'_>, host: &str, text: &str, tone: Tone) {
    let text = format!(
        "{host}: {}\n",
        table::paint(&one_line(text), tone, out.colour)
    );
    out.text(&text);
}

#[derive(Args, Debug)]
pub struct LockArgs {
    /// The app, as named in the agents' config.
    pub app: String,
    /// Why deploys must wait; shown to whoever tries one.
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
    /// Per-host limit for connecting and answering.
    #[arg(long, default_value = QUERY_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// The app, as named in the agents' config.
    pub app: String,
    /// Also release a running job's lock or another operator's manual lock.
    #[arg(long)]
    pub force: bool,
    /// Per-host limit for connecting and answering.
    #[arg(long, default_value = QUERY_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `hoist lock APP --reason TEXT`.
pub async fn lock_command(global: &Global, args: LockArgs) -> Result<(), Failure> {
    if args.reason.trim().is_empty() {
        return Err(usage(
            "--reason is empty; say why deploys must wait (it is shown to whoever tries)",
        ));
    }
    let mut ctx = Ctx::load(global)?;
    let hosts = ctx.hosts.iter().collect::<Vec<_>>();
    lock(
        &hosts,
        &ctx.creds,
        args.timeout,
        &args.app,
        &args.reason,
        &mut ctx.out,
    )
    .await
}

/// `hoist unlock APP [--force]`.
pub async fn unlock_command(global: &Global, args: UnlockArgs) -> Result<(), Failure> {
    let mut ctx = Ctx::load(global)?;
    let hosts = ctx.hosts.iter().collect::<Vec<_>>();
    unlock(
        &hosts,
        &ctx.creds,
        args.timeout,
        &args.app,
        args.force,
        &mut ctx.out,
    )
    .await
}

/// `hoist lock APP --reason TEXT` on every host, or on none.
pub async fn lock(
    hosts: &[&Host],
    creds: &Credentials,
    timeout: Duration,
    app: &str,
    reason: &str,
    out: &mut Output<'_>,
) -> Result<(), Failure> {
    let id = ids::new_job_id("lock").map_err(Failure::failed)?;
    let targets: Vec<(&Host, String)> = hosts.iter().map(|h| (*h, id.clone())).collect();
    let mut rows = Vec::new();
    let round = lease::lock_in_order(
        &targets,
        creds,
        timeout,
        app,
        reason,
        lease::NO_EXPIRY,
        Unreachable::Refuse,
        |host, _, lock| {
            line(
                out,
                &host.name,
                &format!("locked {app} {}", describe(&lock)),
                Tone::Good,
            );
            rows.push(json!({ "host": host.name, "locked": true, "lock": lock_json(&lock) }));
        },
    )
    .await;
    let refusal = match round {
        Ok(_) => {
            if out.json {
                out.json_document("lock", Value::Array(rows));
            } else {
                out.text(&format!(
                    "deploys of {app} wait until `hoist unlock {app}` releases the lock\n"
                ));
            }
            return Ok(());
        }
        Err(refusal) => refusal,
    };
    let (name, err) = (&refusal.host, &refusal.error);
    line(out, name, &format!("cannot lock {app}: {err}"), Tone::Bad);
    rows.push(json!({ "host": name, "locked": false, "error": err.to_string() }));
    let mut kept = Vec::new();
    for (host, released) in &refusal.released {
        match released {
            Ok(()) => line(out, host, &format!("released {app} again"), Tone::Warn),
            Err(e) => {
                line(
                    out,
                    host,
                    &format!("could not release {app} again: {e}"),
                    Tone::Bad,
                );
                kept.push(host.as_str());
            }
        }
    }
    if out.json {
        out.json_document("lock", Value::Array(rows));
    }
    let mut why = format!("cannot lock {app} on {name}: {err}");
    if kept.is_empty() {
        why.push_str("; nothing was left locked");
    } else {
        why.push_str(&format!(
            "; still locked on {} (`hoist unlock {app} --hosts {}` releases them)",
            kept.join(", "),
            kept.join(",")
        ));
    }
    Err(Failure::failed_with(why))
}

/// What `hoist unlock` may do with a host's lock, before asking the agent.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    NotLocked,
    /// Release the lock with this id (and force).
    Release {
        deploy_id: String,
        force: bool,
    },
    /// Leave it: the reason, naming `--force`.
    Refuse(String),
}

/// Decides about `lock` on an app held as shown, for a caller whose certificate
/// identity is `caller` (empty when unknown).
pub fn decide(app: &str, lock: Option<&LockInfo>, caller: &str, force: bool) -> Decision {
    let Some(lock) = lock else {
        return Decision::NotLocked;
    };
    let release = Decision::Release {
        deploy_id: lock.deploy_id.clone(),
        force,
    };
    if force {
        return release;
    }
    if !lock.deploy_id.starts_with(MANUAL_PREFIX) {
        return Decision::Refuse(format!(
            "{app} is held {} for a running job; it is released when the job ends or its \
             lease expires ({}); --force releases it now",
            describe(lock),
            render::utc_time(lock.expires_at.as_ref())
        ));
    }
    if !caller.is_empty() && !lock.holder.is_empty() && lock.holder != caller {
        return Decision::Refuse(format!(
            "{app} is locked {}; it is {}'s lock, --force releases it",
            describe(lock),
            lock.holder
        ));
    }
    release
}

/// `hoist unlock APP [--force]` on every host.
pub async fn unlock(
    hosts: &[&Host],
    creds: &Credentials,
    timeout: Duration,
    app: &str,
    force: bool,
    out: &mut Output<'_>,
) -> Result<(), Failure> {
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for host in sorted(hosts) {
        let result = unlock_one(host, creds, timeout, app, force).await;
        match &result {
            Ok((Some(lock), true)) => {
                line(
                    out,
                    &host.name,
                    &format!("unlocked {app} (was held {})", describe(lock)),
                    Tone::Good,
                );
                rows.push(json!({ "host": host.name, "unlocked": true, "was": lock_json(lock) }));
            }
            Ok((_, _)) => {
                line(out, &host.name, &format!("{app} is not locked"), Tone::Dim);
                rows.push(json!({ "host": host.name, "unlocked": false, "locked": false }));
            }
            Err(why) => {
                line(out, &host.name, why, Tone::Bad);
                rows.push(json!({ "host": host.name, "unlocked": false, "error": why }));
                failed.push(host.name.as_str());
            }
        }
    }
    if out.json {
        out.json_document("unlock", Value::Array(rows));
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::failed(anyhow::anyhow!(
            "{app} is still locked on {}",
            failed.join(", ")
        )))
    }
}

/// The lock found on `host` and whether it was released.
async fn unlock_one(
    host: &Host,
    creds: &Credentials,
    timeout: Duration,
    app: &str,
    force: bool,
) -> Result<(Option<LockInfo>, bool), String> {
    let request = StatusRequest {
        app: app.to_string(),
    };
    let status = fanout::ask_one(host, creds, timeout, |mut client| async move {
        client.status(request).await.map(|r| r.into_inner())
    })
    .await
    .map_err(|e| e.to_string())?;
    let Some(found) = status.apps.into_iter().find(|a| a.name == app) else {
        return Err(format!("{} has no app `{app}`", host.name));
    };
    let lock = found.lock;
    let needs_identity = !force
        && lock
            .as_ref()
            .is_some_and(|l| l.deploy_id.starts_with(MANUAL_PREFIX));
    let caller = if needs_identity {
        fanout::ask_one(host, creds, timeout, |mut client| async move {
            client
                .get_info(GetInfoRequest {})
                .await
                .map(|r| r.into_inner())
        })
        .await
        .map_err(|e| e.to_string())?
        .caller_identity
    } else {
        String::new()
    };
    match decide(app, lock.as_ref(), &caller, force) {
        Decision::NotLocked => Ok((None, false)),
        Decision::Refuse(why) => Err(why),
        Decision::Release { deploy_id, force } => {
            let request = UnlockRequest {
                app: app.to_string(),
                deploy_id,
                force,
            };
            fanout::ask_one(host, creds, timeout, |mut client| async move {
                client.unlock(request).await.map(|r| r.into_inner())
            })
            .await
            .map_err(|e| e.to_string())?;
            Ok((lock, true))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::render::tests::{T0, at};

    fn held(deploy_id: &str, holder: &str) -> LockInfo {
        LockInfo {
            holder: holder.into(),
            deploy_id: deploy_id.into(),
            reason: "db maintenance".into(),
            since: at(T0, 0),
            expires_at: at(T0 + 60, 0),
        }
    }

    #[test]
    fn describes_locks() {
        assert_eq!(
            describe(&held("lock-20261122T101500Z-a1b2c3", "dana")),
            "by dana since 2026-11-22 10:15:00 UTC (lock-20261122T101500Z-a1b2c3): db maintenance"
        );
        let json = lock_json(&held("x", "dana"));
        assert_eq!(json["since"], "2026-11-22T10:15:00Z");
    }

    #[test]
    fn unlock_releases_only_what_it_should() {
        assert_eq!(decide("carbex", None, "dana", false), Decision::NotLocked);
        let manual = held("lock-20261122T101500Z-a1b2c3", "dana");
        assert_eq!(
            decide("carbex", Some(&manual), "dana", false),
            Decision::Release {
                deploy_id: manual.deploy_id.clone(),
                force: false
            }
        );
        assert_eq!(
            decide("carbex", Some(&manual), "", false),
            Decision::Release {
                deploy_id: manual.deploy_id.clone(),
                force: false
            }
        );
        let Decision::Refuse(why) = decide("carbex", Some(&manual), "bob", false) else {
            panic!("bob released dana's lock")
        };
        assert!(
            why.contains("dana's lock") && why.contains("--force"),
            "{why}"
        );
        assert!(matches!(
            decide("carbex", Some(&manual), "bob", true),
            Decision::Release { force: true, .. }
        ));

        let lease = held("deploy-20261122T101500Z-a1b2c3-web-1", "dana");
        let Decision::Refuse(why) = decide("carbex", Some(&lease), "dana", false) else {
            panic!("released a running deploy's lease")
        };
        assert!(
            why.contains("running job") && why.contains("--force"),
            "{why}"
        );
        assert!(why.contains("2026-11-22 10:16:00 UTC"), "{why}");
        assert_eq!(
            decide("carbex", Some(&lease), "dana", true),
            Decision::Release {
                deploy_id: lease.deploy_id.clone(),
                force: true
            }
        );
    }
}
