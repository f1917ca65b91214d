//! What `--dry-run` checks besides printing the plan: every selected host is asked for
//! the app's status (as the real rollout would reach it), and the dry run says, per
//! host, what the rollout would find — serving which release, or why it would not
//! deploy there — and whether the rollout as a whole would be refused: a closed window
//! without `--force`, a lock held by someone else (the rollout locks all or nothing),
//! or more hosts unusable than the failure budget tolerates.

use hoist_proto::v1::{AppStatus, StatusRequest};

use crate::rollout::operation::BackupOptions;
use serde_json::json;

use crate::{
    agents::fanout::{self, CallError},
    rollout::{Rollout, progress::Progress},
};

/// One host as the dry run found it.
struct Found {
    host: String,
    /// Serving this release (empty: nothing deployed yet).
    current: String,
    /// Why the deploy would not proceed there.
    problem: Option<Problem>,
}

enum Problem {
    /// Fails the whole rollout (locks are all or nothing).
    Blocks(String),
    /// Counts against the failure budget.
    Fails(String),
}

/// Asks every host and prints what it found; `Err` says why the real rollout would be
/// refused or stop.
pub(crate) async fn check(
    rollout: &Rollout<'_>,
    app: &str,
    budget: usize,
    window_refusal: Option<String>,
    view: &mut Progress<'_, '_>,
) -> Result<(), String> {
    let answers = fanout::ask_all_bounded(
        &rollout.hosts,
        rollout.creds,
        rollout.timeout,
        rollout.shape.concurrency,
        |mut client| {
            let app = app.to_string();
            async move {
                let status = client
                    .status(StatusRequest { app: app.clone() })
                    .await?
                    .into_inner();
                Ok(status.apps.into_iter().find(|a| a.name == app))
            }
        },
    )
    .await;
    let found: Vec<Found> = answers
        .into_iter()
        .map(|answer| {
            let host = answer.host;
            match answer.result {
                Ok(Some(status)) => judge(host, &status),
                Ok(None) => Found {
                    problem: Some(Problem::Fails(format!("app {app} is not configured here"))),
                    host,
                    current: String::new(),
                },
                Err(err) => Found {
                    problem: Some(Problem::Fails(match &err {
                        e if e.is_not_found() => format!("app {app} is not configured here"),
                        CallError::Unreachable(why) => format!("unreachable: {why}"),
                        CallError::Status(_) => err.reason(),
                    })),
                    host,
                    current: String::new(),
                },
            }
        })
        .collect();

    for f in &found {
        let text = match &f.problem {
            None if f.current.is_empty() => "ok, nothing deployed yet".to_string(),
            None => format!("ok, serving {}", f.current),
            Some(Problem::Blocks(why)) | Some(Problem::Fails(why)) => {
                format!("would not deploy: {why}")
            }
        };
        view.say(
            &format!("  {}: {text}", f.host),
            Some(json!({
                "kind": "dry_run_host",
                "host": f.host,
                "current": f.current,
                "ok": f.problem.is_none(),
                "problem": f.problem.as_ref().map(|p| match p {
                    Problem::Blocks(why) | Problem::Fails(why) => why.clone(),
                }),
            })),
        );
    }

    let mut refusals: Vec<String> = Vec::new();
    if let Some(window) = window_refusal {
        refusals.push(window);
    }
    let blocked: Vec<String> = found
        .iter()
        .filter_map(|f| match &f.problem {
            Some(Problem::Blocks(why)) => Some(format!("{}: {why}", f.host)),
            _ => None,
        })
        .collect();
    if !blocked.is_empty() {
        refusals.push(format!(
            "locks are taken on every host or none ({}); wait with --lock-wait, or ask the holder",
            blocked.join("; ")
        ));
    }
    let failing: Vec<String> = found
        .iter()
        .filter_map(|f| match &f.problem {
            Some(Problem::Fails(why)) => Some(format!("{}: {why}", f.host)),
            _ => None,
        })
        .collect();
    if failing.len() > budget {
        refusals.push(format!(
            "{} host(s) would fail, {budget} tolerated ({})",
            failing.len(),
            failing.join("; ")
        ));
    }
    if refusals.is_empty() {
        Ok(())
    } else {
        Err(refusals.join("; "))
    }
}

fn judge(host: String, status: &AppStatus) -> Found {
    let problem = if !status.running_job.is_empty() {
        Some(Problem::Blocks(format!(
            "job {} is running",
            status.running_job
        )))
    } else {
        status.lock.as_ref().map(|lock| {
            let reason = if lock.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", lock.reason)
            };
            Problem::Blocks(format!("locked by {}{reason}", lock.holder))
        })
    };
    Found {
        host,
        current: status.current_release.clone(),
        problem,
    }
}

/// Per host, what the app's `migrate_status` and `migrate_pending` say in the current
/// release: `pending`, `none` (the deploy would skip backup, maintenance and migrate
/// there, unless the new ref brings migrations) or `unknown`, with the status output.
pub(crate) async fn pending(rollout: &Rollout<'_>, app: &str, view: &mut Progress<'_, '_>) {
    let request = BackupOptions::pending_request(app);
    let answers = fanout::ask_all_bounded(
        &rollout.hosts,
        rollout.creds,
        rollout.timeout,
        rollout.shape.concurrency,
        |mut client| {
            let request = request.clone();
            async move { Ok(client.pending_migrations(request).await?.into_inner()) }
        },
    )
    .await;
    for answer in answers {
        let (text, json) = match &answer.result {
            Ok(p) => {
                let mut text = format!("  {}: migrations: {}", answer.host, p.state);
                if !p.release.is_empty() {
                    text.push_str(&format!(" (as of the current release {})", p.release));
                }
                if !p.error.is_empty() {
                    text.push_str(&format!(": {}", p.error));
                }
                for line in &p.status {
                    text.push_str(&format!("\n      {}", crate::output::escape::visible(line)));
                }
                (
                    text,
                    json!({
                        "kind": "dry_run_migrations",
                        "host": answer.host,
                        "state": p.state,
                        "release": p.release,
                        "status": p.status,
                        "error": p.error,
                    }),
                )
            }
            Err(err) => (
                format!("  {}: migrations: unknown ({})", answer.host, err.reason()),
                json!({
                    "kind": "dry_run_migrations",
                    "host": answer.host,
                    "state": "unknown",
                    "error": err.reason(),
                }),
            ),
        };
        view.say(&text, Some(json));
    }
}
