//! What `--dry-run` checks besides printing the plan: every selected host is asked for
//! the app's status (as the real rollout would reach it) and what the operation would
//! do there ([`identity`]: for a deploy, the ref fetched and resolved to a commit and
//! the steps the app declares; for a rollback, where `--to` is on that host and its
//! steps). The dry run says, per host, what the rollout would find — serving which
//! release, the release it would get (the one id the fleet would share) or go back to,
//! the steps in order — or why it would not proceed there; and whether the rollout as
//! a whole would be refused: a closed window without `--force`, a lock held by someone
//! else (the rollout locks all or nothing), a ref or `--to` that some host cannot
//! resolve, hosts that disagree on the ref's commit, or more hosts unusable than the
//! failure budget tolerates.

use hoist_proto::v1::{AppStatus, StatusRequest};

use crate::rollout::operation::BackupOptions;
use serde_json::json;

use crate::{
    agents::fanout::{self, Answer, CallError},
    rollout::{
        Rollout,
        identity::{self, HostPlan},
        operation::Operation,
        plan::Plan,
        progress::Progress,
    },
};

/// One host as the dry run found it.
struct Found {
    host: String,
    /// Serving this release (empty: nothing deployed yet).
    current: String,
    /// Why the operation would not proceed there.
    problem: Option<Problem>,
    /// What the host said the operation would do (none when it could not say).
    plan: Option<HostPlan>,
    /// This host would run the migrations (deploys).
    migrates: bool,
}

enum Problem {
    /// Refuses the whole rollout (locks are all or nothing; the release id needs every
    /// host's commit; a rollback target must exist on every host).
    Blocks(String),
    /// Counts against the failure budget.
    Fails(String),
}

/// What every host answered, before anything is printed (the plan's text depends on
/// it: no host "migrates first" for an app without a migrate step).
pub(crate) struct Findings {
    found: Vec<Found>,
    plans: Vec<Answer<HostPlan>>,
}

impl Findings {
    /// `Some(false)` when the hosts that answered declare no migrate step.
    pub(crate) fn declares_migrate(&self) -> Option<bool> {
        let mut answered = self.found.iter().filter_map(|f| match &f.plan {
            Some(HostPlan::Deploy(p)) => Some(p.declares_migrate),
            _ => None,
        });
        let first = answered.next()?;
        Some(first || answered.any(|d| d))
    }
}

/// Asks every host its status and what `op` would do there.
pub(crate) async fn ask(rollout: &Rollout<'_>, op: &Operation, plan: &Plan<'_>) -> Findings {
    let app = op.app().to_string();
    let migrator = plan.planned_migrator().map(|m| plan.hosts[m].name.clone());
    let migrates = |host: &str| match op.migrate_on() {
        crate::fleet::MigrateOn::All => true,
        crate::fleet::MigrateOn::First => migrator.as_deref() == Some(host),
        crate::fleet::MigrateOn::None => false,
    };
    let statuses = fanout::ask_all_bounded(
        &rollout.hosts,
        rollout.creds,
        rollout.timeout,
        rollout.shape.concurrency,
        |mut client| {
            let app = app.clone();
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
    // Only hosts that answered are asked what the operation would do (a fetch may take
    // long; an unreachable host is not waited for twice).
    let answering: Vec<&crate::fleet::Host> = rollout
        .hosts
        .iter()
        .filter(|h| {
            statuses
                .iter()
                .any(|a| a.host == h.name && !matches!(a.result, Err(CallError::Unreachable(_))))
        })
        .copied()
        .collect();
    let plans = identity::ask(
        &answering,
        rollout.creds,
        rollout.timeout,
        rollout.shape.concurrency,
        op,
        migrates,
    )
    .await;
    let found = statuses
        .into_iter()
        .map(|answer| {
            let host = answer.host;
            let mut found = match answer.result {
                Ok(Some(status)) => judge(host, &status),
                Ok(None) => Found {
                    problem: Some(Problem::Fails(format!("app {app} is not configured here"))),
                    host,
                    current: String::new(),
                    plan: None,
                    migrates: false,
                },
                Err(err) => Found {
                    problem: Some(Problem::Fails(match &err {
                        e if e.is_not_found() => format!("app {app} is not configured here"),
                        CallError::Unreachable(why) => format!("unreachable: {why}"),
                        CallError::Status(_) => err.reason(),
                    })),
                    host,
                    current: String::new(),
                    plan: None,
                    migrates: false,
                },
            };
            found.migrates = migrates(&found.host);
            found
        })
        .collect::<Vec<_>>();
    let mut findings = Findings {
        found,
        plans: Vec::new(),
    };
    for answer in plans {
        let Some(f) = findings.found.iter_mut().find(|f| f.host == answer.host) else {
            continue;
        };
        match &answer.result {
            Ok(p) => f.plan = Some(p.clone()),
            // An older agent: nothing more to say.
            Err(err) if identity::predates(err) => {}
            Err(_) if f.problem.is_some() => {}
            Err(CallError::Unreachable(why)) => {
                f.problem = Some(Problem::Fails(format!("unreachable: {why}")));
            }
            Err(err) if err.is_not_found() => {
                f.problem = Some(Problem::Fails(identity::why(err)));
            }
            Err(err) => f.problem = Some(Problem::Blocks(identity::why(err))),
        }
        findings.plans.push(answer);
    }
    findings
}

/// Prints what every host said; `Err` says why the real rollout would be refused or
/// stop.
pub(crate) fn report(
    findings: &Findings,
    op: &Operation,
    budget: usize,
    window_refusal: Option<String>,
    view: &mut Progress<'_, '_>,
) -> Result<(), String> {
    let mut refusals: Vec<String> = Vec::new();
    if let Some(window) = window_refusal {
        refusals.push(window);
    }
    // The one release id the deploy would give every host.
    let release = match op {
        Operation::Deploy(o) => match identity::one_commit(&o.git_ref, &findings.plans) {
            Ok(Some((commit, taken))) => Some(identity::release_id(
                jiff::Timestamp::now().as_second(),
                &commit,
                &taken,
            )),
            Ok(None) => None,
            Err(why) => {
                // Hosts that could not resolve it are named below already.
                if why.contains("different commits") {
                    refusals.push(why);
                }
                None
            }
        },
        Operation::Rollback(_) => None,
    };

    for f in &findings.found {
        let mut text = match &f.problem {
            None if f.current.is_empty() => "ok, nothing deployed yet".to_string(),
            None => format!("ok, serving {}", f.current),
            Some(Problem::Blocks(why)) | Some(Problem::Fails(why)) => {
                format!("would not {}: {why}", op.kind())
            }
        };
        let mut json_release = json!(null);
        let mut json_commit = json!(null);
        let mut steps: Vec<String> = Vec::new();
        let (mut migrate_down, mut restore) = (false, false);
        match (&f.problem, &f.plan) {
            (None, Some(HostPlan::Deploy(p))) => {
                let id = release
                    .clone()
                    .unwrap_or_else(|| "(chosen by the host)".into());
                text.push_str(&format!("; would get release {id} (commit {})", p.commit));
                json_release = json!(release);
                json_commit = json!(p.commit);
                steps = p.steps.clone();
                if f.migrates && !p.declares_migrate {
                    text.push_str("; the app declares no migrate step");
                }
            }
            (None, Some(HostPlan::Rollback(p))) => {
                migrate_down = p.steps.iter().any(|s| s.starts_with("migrate_rollback"));
                restore = p.steps.iter().any(|s| s.starts_with("restore"));
                let how = match (migrate_down, restore) {
                    (false, false) => "code only, no migration down, no restore",
                    (true, false) => "migrating down first, no restore",
                    (false, true) => "restoring the database first, no migration down",
                    (true, true) => "migrating down and restoring the database first",
                };
                text.push_str(&format!(
                    "; would roll back to {} (commit {}), {how}",
                    p.release,
                    if p.commit.is_empty() {
                        "unknown"
                    } else {
                        &p.commit
                    }
                ));
                json_release = json!(p.release);
                json_commit = json!(p.commit);
                steps = p.steps.clone();
            }
            _ => {}
        }
        if !steps.is_empty() {
            text.push_str(&format!("\n    steps: {}", steps.join(", ")));
        }
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
                "release": json_release,
                "commit": json_commit,
                "steps": steps,
                "migrates": f.migrates && matches!(&f.plan, Some(HostPlan::Deploy(p)) if p.declares_migrate),
                "migrate_down": migrate_down,
                "restore": restore,
            })),
        );
    }

    let blocked: Vec<String> = findings
        .found
        .iter()
        .filter_map(|f| match &f.problem {
            Some(Problem::Blocks(why)) => Some(format!("{}: {why}", f.host)),
            _ => None,
        })
        .collect();
    if !blocked.is_empty() {
        refusals.push(format!(
            "every host must be able to {} before any changes ({})",
            op.kind(),
            blocked.join("; ")
        ));
    }
    let failing: Vec<String> = findings
        .found
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
            Problem::Blocks(format!(
                "locked by {}{reason}; wait with --lock-wait, or ask the holder",
                lock.holder
            ))
        })
    };
    Found {
        host,
        current: status.current_release.clone(),
        problem,
        plan: None,
        migrates: false,
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
