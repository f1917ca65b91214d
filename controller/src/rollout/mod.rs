//! Fleet rollouts: `hoist deploy` and `hoist rollback` across the selected hosts.
//!
//! 1. **Plan** (`plan`): hosts in fleet order, split into a canary and batches; who
//!    migrates; the failure budget. `--dry-run` prints it, with the gates and the
//!    window's verdict, and stops there: no lock, no call to any agent.
//! 2. **Window** (deploys): outside `[window]` or on a blackout day the deploy is
//!    refused with the next open window — recorded in every target's journal
//!    (RecordRefusal) and notified — unless `--force --reason TEXT`; then `forced` and
//!    the reason go into every DeployRequest, so the agents' journals record them.
//! 3. **Locks** (`lease`): every target's app lock, in host-name order, before any
//!    change. A host that refuses releases everything taken and aborts, naming the
//!    holder (`--lock-wait` retries). A host that does not answer is skipped and
//!    counts against the budget.
//! 4. **Phases**: with `migrate_on = "first"` the first host deploys alone with
//!    migrations before any other host starts; if it fails, no other host starts.
//!    Then each phase's hosts deploy at once (at most the shape's `concurrency` at a time), and
//!    a bake follows each phase: the switched hosts' checks must stay green
//!    (WatchStatus) and every gate must stay at or under its max.
//! 5. **Failure budget** (`--max-unhealthy`, fleet-wide, never per batch): a host counts
//!    once, whether its deploy failed or was rolled back by its agent, it was
//!    unreachable, or one of its checks failed during a bake; each gate counts once
//!    per bake in which it fails (or cannot be evaluated). One failure more than the
//!    budget stops the rollout: no further host starts, hosts still deploying finish,
//!    and every host this rollout switched is rolled back to the release it had
//!    before (in parallel, bounded). A rollout that completes within its budget exits
//!    0 and names the hosts that failed.
//! 6. **End**: locks released whatever happened, a summary table (host, result,
//!    release, duration, why), notifications (`webhooks`), exit 1 unless it completed.
//!
//! Ctrl-C once: no further host starts, the bake ends, running jobs finish; twice:
//! detach (the jobs keep running on the agents). Locks are released either way.
//!
//! `hoist rollback` uses the same plan, locks and budget with rollback jobs and no
//! bake, no gates and no window (a rollback is how you get out of trouble), and
//! nothing to undo.

mod bake;
mod dry_run;
pub mod gates;
pub mod httpc;
pub mod identity;
pub mod lease;
pub mod operation;
mod phases;
pub mod plan;
pub mod progress;
mod state;
mod summary;
mod undo;
pub mod webhooks;
pub mod window;

use std::time::Duration;

use futures_util::future::join_all;
use hoist_proto::v1::StatusRequest;
use serde_json::{Value, json};

use crate::{
    agents::{
        client::Credentials,
        fanout::{self, CallError},
        follow::JobOutcome,
        ids::{self, IdError},
        session::Interrupt,
    },
    fleet::{Fleet, Gate, Host, MigrateOn},
    output::{
        render::{self, Output},
        table::{self, Tone},
    },
    rollout::{
        lease::Leases,
        operation::Operation,
        plan::{Plan, Shape},
        progress::Progress,
        state::{Record, Setup, State, Stop},
        webhooks::{Event, Facts, Notifier},
    },
};

/// Why a rollout did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// The fleet file's gates cannot be used (a usage error: exit 2).
    #[error(transparent)]
    Gate(#[from] gates::GateError),
    /// The fleet file's window cannot be used (a usage error: exit 2).
    #[error(transparent)]
    Window(#[from] window::ZoneError),
    #[error(transparent)]
    Id(#[from] IdError),
    /// Refused (window, locks), stopped, interrupted, or no host succeeded: the
    /// message names why.
    #[error("{0}")]
    Failed(String),
}

/// Gates are evaluated at the start and end of a bake and this often in between.
pub const GATE_EVERY: Duration = Duration::from_secs(5);
/// Status snapshots asked of each baking host at most this often.
pub(crate) const WATCH_EVERY: Duration = Duration::from_millis(500);

/// Everything a rollout needs besides the operation.
pub struct Rollout<'a> {
    pub fleet: &'a Fleet,
    /// The selected hosts, in fleet order.
    pub hosts: Vec<&'a Host>,
    pub creds: &'a Credentials,
    /// Limit for connecting to an agent (and for lock and status calls).
    pub timeout: Duration,
    pub shape: Shape,
    /// How long to retry taking locks held by someone else.
    pub lock_wait: Duration,
    pub dry_run: bool,
    /// One live line per host (stdout is a terminal).
    pub live: bool,
}

/// Runs `op` across the hosts as `rollout` says.
pub async fn run(
    rollout: Rollout<'_>,
    op: Operation,
    out: &mut Output<'_>,
    interrupt: &mut Interrupt,
) -> Result<(), RolloutError> {
    // Ctrl-C is counted from here on (it no longer exits the process).
    interrupt.listen();
    let deploying = matches!(op, Operation::Deploy(_));
    let gate_list = gates_of(rollout.fleet, &op);
    gates::validate(gate_list)?;
    let mut shape = rollout.shape.clone();
    if !deploying {
        shape.bake = Duration::ZERO;
        shape.migrate_on = MigrateOn::None;
    }
    let plan = Plan::new(&rollout.hosts, shape);
    let title = op.title();
    let verdict = match (&op, &rollout.fleet.window) {
        (Operation::Deploy(_), Some(w)) => Some(window::check(w, jiff::Timestamp::now())?),
        _ => None,
    };
    let forced = op
        .deploy()
        .and_then(|o| o.forced_reason())
        .map(str::to_string);

    // A dry run asks every host first: what it would do there shapes the plan's text.
    let findings = if rollout.dry_run {
        Some(dry_run::ask(&rollout, &op, &plan).await)
    } else {
        None
    };
    let no_migrate_step = findings
        .as_ref()
        .and_then(|f| f.declares_migrate())
        .is_some_and(|declared| !declared);
    let migrates = op.migrates() && !no_migrate_step;

    // The plan, first of all.
    let mut extra: Vec<(&str, String)> = Vec::new();
    if deploying || plan.budget > 0 {
        extra.push(("failure budget", plan.describe_budget()));
    }
    if let Operation::Deploy(o) = &op {
        let who = match o.migrate_on {
            MigrateOn::First => format!(
                "{} only, before any other host switches",
                plan.planned_migrator()
                    .map_or("-", |m| plan.hosts[m].name.as_str())
            ),
            MigrateOn::All => "every host".into(),
            MigrateOn::None => "no host".into(),
        };
        let who = if no_migrate_step {
            "no host: the app declares no migrate step".into()
        } else {
            who
        };
        extra.push(("migrations", who));
    }
    for gate in plan::gate_lines(gate_list) {
        extra.push(("gate", gate));
    }
    if let Some(v) = &verdict {
        let mut text = v.describe();
        if !v.open && forced.is_some() {
            text.push_str("; overridden by --force");
        }
        extra.push(("window", text));
    }
    if let Some(reason) = &forced {
        extra.push(("forced", reason.clone()));
    }
    let names: Vec<String> = plan.hosts.iter().map(|h| h.name.clone()).collect();
    let mut view = Progress::new(out, names.clone(), rollout.live && !rollout.dry_run);
    let plan_json = plan.json(
        migrates,
        json!({
            "operation": op.kind(),
            "title": title,
            "app": op.app(),
            "ref": match &op { Operation::Deploy(o) => json!(o.git_ref), Operation::Rollback(_) => Value::Null },
            "dry_run": rollout.dry_run,
            "gates": gate_list.iter().map(|g| json!({"name": gates::describe(g), "prometheus": crate::output::redact::userinfo(&g.prometheus), "query": g.query, "max": g.max, "on_empty": match g.on_empty { crate::fleet::OnEmpty::Pass => "pass", crate::fleet::OnEmpty::Fail => "fail" }})).collect::<Vec<_>>(),
            "window": verdict.as_ref().map(|v| json!({"open": v.open, "now": v.now, "why": v.why, "next": v.next})),
            "forced": forced,
        }),
    );
    let count = plan.hosts.len();
    let hosts_word = if count == 1 { "host" } else { "hosts" };
    let to = if deploying { "to" } else { "on" };
    let heading = format!("{title} {to} {count} {hosts_word}");
    view.say(&plan.text(&heading, migrates, &extra), Some(plan_json));
    if rollout.dry_run {
        let window_refusal = verdict
            .as_ref()
            .filter(|v| !v.open && forced.is_none())
            .map(|v| {
                format!(
                    "outside the deploy window ({}); --force --reason overrides",
                    v.describe()
                )
            });
        let findings = findings.expect("asked above");
        let checked = dry_run::report(&findings, &op, plan.budget, window_refusal, &mut view);
        if op.migrates() {
            dry_run::pending(&rollout, op.app(), &mut view).await;
        }
        view.say("dry run: nothing was changed and no lock was taken", None);
        return checked.map_err(|why| {
            RolloutError::Failed(format!("dry run: {title} would be refused: {why}"))
        });
    }

    let notifier = Notifier::new(&rollout.fleet.notify);
    let result = execute(&rollout, &op, &plan, verdict, view, interrupt, &notifier).await;
    notifier.finish().await;
    result
}

async fn execute(
    rollout: &Rollout<'_>,
    op: &Operation,
    plan: &Plan<'_>,
    verdict: Option<window::Verdict>,
    mut view: Progress<'_, '_>,
    interrupt: &mut Interrupt,
    notifier: &Notifier,
) -> Result<(), RolloutError> {
    let title = op.title();
    let app = op.app().to_string();
    let gate_list = gates_of(rollout.fleet, op);
    let base = ids::new_job_id(op.kind())?;
    let ids: Vec<String> = plan
        .hosts
        .iter()
        .map(|h| ids::host_job_id(&base, &h.name))
        .collect();
    let forced = matches!(op, Operation::Deploy(o) if o.force);
    let began = std::time::Instant::now();

    // The window.
    if let Some(v) = verdict.as_ref().filter(|v| !v.open && !forced) {
        let why = format!("outside the deploy window: {}", v.describe());
        for (host, err) in refuse_on_hosts(rollout, op, plan, &ids, &why).await {
            view.warn(&format!("{host}: could not record the refusal: {err}"));
        }
        view.json_line(&json!({"kind": "refused", "why": why}));
        notifier
            .send(
                Event::Refusal,
                &format!("hoist: {title} refused: {why}"),
                &[("app", app.clone()), ("window", v.describe())],
            )
            .await;
        return Err(RolloutError::Failed(format!(
            "{title} refused: {why}; --force --reason TEXT overrides (both are recorded in \
             every host's journal)"
        )));
    }

    // The locks.
    let reason = format!("hoist {title} ({base})");
    let targets: Vec<(&Host, String)> = plan
        .hosts
        .iter()
        .zip(&ids)
        .map(|(h, id)| (*h, id.clone()))
        .collect();
    let mut leases = Leases::new(&app, &reason, rollout.creds, rollout.timeout);
    let pressed = || interrupt.count() > 0;
    let mut waiting_for = String::new();
    let waiting = |host: &str, why: &str| {
        // Once per host that holds things up, not once per retry.
        if host != waiting_for {
            view.warn(&format!(
                "waiting up to {} for the lock on {host} ({why})",
                render::human_duration(plan::millis(rollout.lock_wait))
            ));
            waiting_for = host.to_string();
        }
    };
    let taken = leases
        .take(&targets, rollout.lock_wait, waiting, pressed)
        .await;
    let unreachable = match taken {
        Ok(unreachable) => unreachable,
        Err(refused) => {
            let mut why = format!("cannot lock {app} on {}: {}", refused.host, refused.why);
            if refused.kept.is_empty() {
                why.push_str("; nothing was changed and no lock is left behind");
            } else {
                why.push_str(&format!(
                    "; nothing was changed, but the lock on {} could not be released (its \
                     lease lapses within a minute)",
                    refused.kept.join(", ")
                ));
            }
            view.json_line(&json!({"kind": "refused", "host": refused.host, "why": why}));
            return Err(
                notify_refusal(notifier, &title, &app, format!("{title}: {why}"), &why).await,
            );
        }
    };

    // What the ref is on every host (one release id), or where `--to` is on each.
    let reachable: Vec<&Host> = plan
        .hosts
        .iter()
        .filter(|h| !unreachable.iter().any(|(u, _)| *u == h.name))
        .copied()
        .collect();
    if let Some(o) = op.deploy() {
        view.print(&format!(
            "fetching {} on every host to choose one release id",
            o.git_ref
        ));
    }
    let resolved = identity::resolve(
        &reachable,
        rollout.creds,
        rollout.timeout,
        rollout.shape.concurrency,
        op,
    )
    .await;
    let op = match resolved {
        Ok(op) => op,
        Err(why) => {
            let kept = leases.release().await;
            let mut why = format!("{why}; nothing was changed");
            if !kept.is_empty() {
                let names: Vec<&str> = kept.iter().map(|(h, _)| h.as_str()).collect();
                why.push_str(&format!(
                    " (the lock on {} could not be released; its lease lapses within a minute)",
                    names.join(", ")
                ));
            }
            view.json_line(&json!({"kind": "refused", "why": why}));
            let error = format!("{title} refused: {why}");
            return Err(notify_refusal(notifier, &title, &app, error, &why).await);
        }
    };
    let op = &op;
    if op.deploy().is_some() && plan.shape.migrate_on != MigrateOn::None && !op.migrates() {
        view.say(
            "no host migrates: the app declares no migrate step",
            Some(json!({"kind": "no_migrate_step"})),
        );
    }
    if let Some(id) = op.deploy().and_then(|o| o.release_id.as_ref()) {
        view.say(
            &format!("release {id} on every host"),
            Some(json!({"kind": "release", "release": id})),
        );
    }
    if let Operation::Rollback(o) = op
        && !o.targets.is_empty()
    {
        let first = &o.targets[0].1;
        let text = if o.targets.iter().all(|(_, r)| r == first) {
            format!("rolling back to {first} on every host")
        } else {
            let each: Vec<String> = o.targets.iter().map(|(h, r)| format!("{h}: {r}")).collect();
            format!("rolling back to {}", each.join(", "))
        };
        view.say(
            &text,
            Some(json!({"kind": "targets", "targets": o.targets.iter().map(|(h, r)| json!({"host": h, "release": r})).collect::<Vec<_>>()})),
        );
    }

    let mut state = State {
        view,
        records: plan
            .hosts
            .iter()
            .zip(&ids)
            .map(|(h, id)| Record {
                host: h.name.clone(),
                job_id: id.clone(),
                ..Default::default()
            })
            .collect(),
        budget: plan.budget,
        failures: Vec::new(),
        stop: None,
        migrator: None,
        interrupt,
    };
    let mut locked = leases.hosts();
    locked.sort_by_key(|name| plan.hosts.iter().position(|h| &h.name == name));
    let on = match locked.len() {
        n if n == plan.hosts.len() && n > 6 => format!("all {n} hosts"),
        n if n > 6 => format!("{n} hosts"),
        _ => join_or_none(&locked),
    };
    state.view.say(
        &format!("locked {app} on {on}"),
        Some(json!({
            "kind": "locked",
            "hosts": locked,
            "unreachable": unreachable.iter().map(|(h, e)| json!({"host": h, "error": e})).collect::<Vec<_>>(),
        })),
    );
    let index = |name: &str| plan.hosts.iter().position(|h| h.name == name);
    for (host, why) in &unreachable {
        if let Some(i) = index(host) {
            state.records[i].skipped = Some(why.clone());
            state.records[i].outcome = Some(JobOutcome::Unreachable(why.clone()));
            let why = format!("unreachable: {why}");
            state.count(i, &why);
        }
    }
    let waiting: Vec<String> = plan
        .hosts
        .iter()
        .enumerate()
        .map(|(i, _)| {
            let phase = plan.phases.iter().find(|p| p.hosts.contains(&i));
            match (&state.records[i].skipped, phase) {
                (Some(why), _) => paint_bad(&format!("✗ unreachable: {why}"), state.view.colour()),
                (None, Some(p)) => format!("waiting ({})", p.name),
                (None, None) => "waiting".into(),
            }
        })
        .collect();
    state.view.show_hosts(&waiting);

    let setup = Setup {
        op,
        plan,
        creds: rollout.creds,
        timeout: rollout.timeout,
        gates: gate_list,
        bake: plan.shape.bake,
    };
    if state.interrupt.count() > 0 {
        state.stop = Some(Stop::Interrupted);
    } else if !state.over() {
        // Where each host stands before any change.
        let reachable: Vec<&Host> = plan
            .hosts
            .iter()
            .enumerate()
            .filter(|(i, _)| state.records[*i].skipped.is_none())
            .map(|(_, h)| *h)
            .collect();
        let answers = fanout::ask_all(&reachable, rollout.creds, rollout.timeout, |mut c| {
            let app = app.clone();
            async move {
                c.status(StatusRequest { app })
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await;
        for answer in answers {
            if let (Some(i), Ok(status)) = (index(&answer.host), answer.result) {
                state.records[i].before = status
                    .apps
                    .iter()
                    .find(|a| a.name == app)
                    .map(|a| a.current_release.clone())
                    .filter(|r| !r.is_empty());
            }
        }
        let facts = Facts {
            who: rollout.creds.who.clone(),
            app: app.clone(),
            git_ref: op.deploy().map(|o| o.git_ref.clone()),
            hosts: plan.hosts.iter().map(|h| h.name.clone()).collect(),
            forced: op
                .deploy()
                .and_then(|o| o.forced_reason())
                .map(str::to_string),
            ..Facts::default()
        };
        let mut fields = facts.fields();
        fields.push(("plan", plan.describe_shape()));
        notifier
            .send(
                Event::Start,
                &facts.text(&format!(
                    "hoist: {title} started on {} host(s): {}",
                    plan.hosts.len(),
                    plan.describe_shape()
                )),
                &fields,
            )
            .await;
        phases::run(&setup, &mut state).await;
    } else {
        state.stop = Some(Stop::OverBudget);
    }

    // Undo what this deploy switched, when it stopped for failures.
    let undoing = matches!(
        state.stop,
        Some(Stop::OverBudget | Stop::MigrationFailed(_))
    ) && matches!(op, Operation::Deploy(_));
    let mut undone = Vec::new();
    if undoing {
        undone = undo::run(&setup, &mut state, &leases).await;
    }

    // Locks, whatever happened.
    let kept = leases.release().await;
    if kept.is_empty() {
        state.view.say(
            &format!("released the lock on {app}"),
            Some(json!({"kind": "unlocked", "kept": []})),
        );
    } else {
        let text: Vec<String> = kept.iter().map(|(h, e)| format!("{h} ({e})")).collect();
        state.view.say(
            &format!(
                "could not release the lock on {}; the lease lapses within a minute",
                text.join(", ")
            ),
            Some(json!({"kind": "unlocked", "kept": kept.iter().map(|(h, e)| json!({"host": h, "error": e})).collect::<Vec<_>>()})),
        );
    }

    // The end.
    let (text, summary_json, failure) = summary::summary(&setup, &state);
    state.view.summary(&text, &summary_json);
    let facts = |failed: Option<String>| Facts {
        who: rollout.creds.who.clone(),
        app: app.clone(),
        git_ref: op.deploy().map(|o| o.git_ref.clone()),
        commit: state
            .records
            .iter()
            .find_map(|r| r.commit.as_deref())
            .map(|c| render::short_commit(c).to_string()),
        hosts: plan.hosts.iter().map(|h| h.name.clone()).collect(),
        duration_ms: Some(began.elapsed().as_millis() as u64),
        failed,
        forced: op
            .deploy()
            .and_then(|o| o.forced_reason())
            .map(str::to_string),
    };
    // What failed first: a host's check or step, or a gate.
    let first_failure = state
        .failures
        .first()
        .map(|(what, why)| format!("{what}: {why}"));
    if !undone.is_empty() {
        let names = undone.join(", ");
        let facts = facts(first_failure.clone());
        notifier
            .send(
                Event::Rollback,
                &facts.text(&format!(
                    "hoist: {title} rolled back {names} to their previous releases"
                )),
                &facts.fields(),
            )
            .await;
    }
    match failure {
        None => {
            let facts = facts(None);
            notifier
                .send(
                    Event::Success,
                    &facts.text(&format!(
                        "hoist: {title} succeeded on {}",
                        succeeded_hosts(&state).join(", ")
                    )),
                    &facts.fields(),
                )
                .await;
            Ok(())
        }
        Some(why) => {
            let facts = facts(first_failure);
            notifier
                .send(
                    Event::Failure,
                    &facts.text(&format!("hoist: {why}")),
                    &facts.fields(),
                )
                .await;
            Err(RolloutError::Failed(why))
        }
    }
}

/// Notifies that the rollout was refused before any change (`why`), and returns the
/// command's error (`error`).
async fn notify_refusal(
    notifier: &Notifier,
    title: &str,
    app: &str,
    error: String,
    why: &str,
) -> RolloutError {
    notifier
        .send(
            Event::Refusal,
            &format!("hoist: {title} refused: {why}"),
            &[("app", app.to_string())],
        )
        .await;
    RolloutError::Failed(error)
}

/// The gates a rollout evaluates: the fleet's for deploys, none for rollbacks.
fn gates_of<'f>(fleet: &'f Fleet, op: &Operation) -> &'f [Gate] {
    match op {
        Operation::Deploy(_) => &fleet.gates,
        Operation::Rollback(_) => &[],
    }
}

pub(crate) fn join_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "no host".into()
    } else {
        names.join(", ")
    }
}

pub(crate) fn paint_bad(text: &str, colour: bool) -> String {
    table::paint(text, Tone::Bad, colour)
}

fn succeeded_hosts(state: &State<'_, '_, '_>) -> Vec<String> {
    state
        .records
        .iter()
        .filter(|r| r.switched() && r.undo.is_none() && r.unhealthy.is_none())
        .map(|r| r.host.clone())
        .collect()
}

/// Records a refused deploy in every target's journal (best effort); returns the
/// hosts that could not record it, with why.
async fn refuse_on_hosts(
    rollout: &Rollout<'_>,
    op: &Operation,
    plan: &Plan<'_>,
    ids: &[String],
    why: &str,
) -> Vec<(String, CallError)> {
    let Some(o) = op.deploy() else {
        return Vec::new();
    };
    let asks = plan.hosts.iter().zip(ids).map(|(host, id)| {
        let request = o.refusal(id.clone(), why);
        async move {
            let answer =
                fanout::ask_one(host, rollout.creds, rollout.timeout, |mut c| async move {
                    c.record_refusal(request).await.map(|_| ())
                })
                .await;
            answer.err().map(|err| (host.name.clone(), err))
        }
    });
    join_all(asks).await.into_iter().flatten().collect()
}
