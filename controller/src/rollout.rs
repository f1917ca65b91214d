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
//!    Then each phase's hosts deploy at once (at most [`CONCURRENCY`] at a time), and
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
//!    release, duration, why), notifications (`notify`), exit 1 unless it completed.
//!
//! Ctrl-C once: no further host starts, the bake ends, running jobs finish; twice:
//! detach (the jobs keep running on the agents). Locks are released either way.
//!
//! `hoist rollback` uses the same plan, locks and budget with rollback jobs and no
//! bake, no gates and no window (a rollback is how you get out of trouble), and
//! nothing to undo.

use std::{
    collections::{BTreeSet, VecDeque},
    time::{Duration, Instant},
};

use futures_util::{StreamExt as _, future::join_all, stream::FuturesUnordered};
use hoist_proto::v1::{
    JobFinished, JobKind, RecordRefusalRequest, RollbackRequest, StatusRequest, job_event::Kind,
};
use prost_types::Timestamp;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{
    Failure, bake,
    cli::{self, DeployArgs, Global, RollbackArgs},
    client::Credentials,
    deploy::{self, DeployOptions, RollbackOptions},
    fanout,
    fleet::{Amount, DeployDefaults, Fleet, Gate, Host, MigrateOn, Strategy},
    gates,
    jobs::{self, Interrupt, JobRequest, Outcome, Update},
    lease::Leases,
    notify::{Event, Notifier},
    plan::{self, Plan, Shape},
    progress::View,
    render::{self, Output},
    table::{self, Cell, Tone},
    window,
};

/// Hosts whose jobs run at once, in a phase and when rolling back.
pub const CONCURRENCY: usize = 16;
/// Gates are evaluated at the start and end of a bake and this often in between.
pub const GATE_EVERY: Duration = Duration::from_secs(5);
/// Status snapshots asked of each baking host at most this often.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// What the rollout does on each host.
#[derive(Clone, Debug)]
pub enum Operation {
    Deploy(DeployOptions),
    Rollback(RollbackOptions),
}

impl Operation {
    fn app(&self) -> &str {
        match self {
            Operation::Deploy(o) => &o.app,
            Operation::Rollback(o) => &o.app,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Operation::Deploy(_) => "deploy",
            Operation::Rollback(_) => "rollback",
        }
    }

    /// `deploy of web main`, `rollback of web`, `rollback of web to R`.
    fn title(&self) -> String {
        match self {
            Operation::Deploy(o) => format!("deploy of {} {}", o.app, o.git_ref),
            Operation::Rollback(o) => match &o.to_release {
                Some(to) => format!("rollback of {} to {to}", o.app),
                None => format!("rollback of {}", o.app),
            },
        }
    }

    fn migrates(&self) -> bool {
        matches!(self, Operation::Deploy(o) if o.migrate_on != MigrateOn::None)
    }

    fn validate(&self) -> Result<(), String> {
        match self {
            Operation::Deploy(o) => o.validate(),
            Operation::Rollback(o) => o.validate(),
        }
    }
}

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

/// Why the rollout stopped before its end.
#[derive(Clone, Debug, PartialEq)]
enum Stop {
    OverBudget,
    MigrationFailed(String),
    Interrupted,
    Detached,
}

/// One host's part.
#[derive(Clone, Debug, Default)]
struct Record {
    host: String,
    job_id: String,
    /// Current release before the rollout (from Status after locking).
    before: Option<String>,
    /// Not reachable when locking: skipped.
    skipped: Option<String>,
    /// The job's outcome; `None` while not started.
    outcome: Option<Outcome>,
    /// Time of the job's last event, on the agent's clock: the bake's freshness line.
    finished_at: Option<Timestamp>,
    started: Option<Instant>,
    took_ms: Option<u64>,
    /// A check failed (or the host vanished) during a bake.
    unhealthy: Option<String>,
    /// Counted against the budget (once per host).
    counted: bool,
    undo_id: Option<String>,
    undo: Option<Outcome>,
}

impl Record {
    fn switched(&self) -> bool {
        self.outcome.as_ref().is_some_and(Outcome::ok)
    }

    fn finished(&self) -> Option<&JobFinished> {
        match &self.outcome {
            Some(Outcome::Finished(f)) => Some(f),
            _ => None,
        }
    }
}

/// What does not change while the rollout runs.
struct Ctx<'a> {
    op: &'a Operation,
    plan: &'a Plan<'a>,
    creds: &'a Credentials,
    timeout: Duration,
    gates: &'a [Gate],
    bake: Duration,
}

/// What does.
struct State<'a, 'v, 'o> {
    view: View<'v, 'o>,
    records: Vec<Record>,
    /// Failures tolerated.
    budget: usize,
    /// `(host or gate, why)`, in order.
    failures: Vec<(String, String)>,
    stop: Option<Stop>,
    /// The host that ran the migrations (migrate_on = "first").
    migrator: Option<usize>,
    interrupt: &'a mut Interrupt,
}

/// Runs `op` across the hosts as `rollout` says.
pub async fn run(
    rollout: Rollout<'_>,
    op: Operation,
    out: &mut Output<'_>,
    interrupt: &mut Interrupt,
) -> Result<(), Failure> {
    let usage = |e: String| Failure::usage(anyhow::anyhow!(e));
    op.validate().map_err(usage)?;
    let deploying = matches!(op, Operation::Deploy(_));
    let gate_list = gates_of(rollout.fleet, &op);
    gates::validate(gate_list).map_err(usage)?;
    let mut shape = rollout.shape.clone();
    if !deploying {
        shape.bake = Duration::ZERO;
        shape.migrate_on = MigrateOn::None;
    }
    let plan = Plan::new(&rollout.hosts, shape);
    let title = op.title();
    let verdict = match (&op, &rollout.fleet.window) {
        (Operation::Deploy(_), Some(w)) => {
            Some(window::check(w, jiff::Timestamp::now()).map_err(usage)?)
        }
        _ => None,
    };
    let forced = match &op {
        Operation::Deploy(o) if o.force => o.reason.clone(),
        _ => None,
    };

    // The plan, first of all.
    let mut extra: Vec<(&str, String)> = Vec::new();
    if deploying || plan.budget > 0 {
        extra.push(("failure budget", plan.describe_budget()));
    }
    if let Operation::Deploy(o) = &op {
        let who = match o.migrate_on {
            MigrateOn::First => format!(
                "{} only, before any other host switches",
                plan.hosts.first().map_or("-", |h| h.name.as_str())
            ),
            MigrateOn::All => "every host".into(),
            MigrateOn::None => "no host".into(),
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
    let mut view = View::new(out, names.clone(), rollout.live && !rollout.dry_run);
    let plan_json = plan.json(
        op.migrates(),
        json!({
            "operation": op.kind(),
            "title": title,
            "app": op.app(),
            "ref": match &op { Operation::Deploy(o) => json!(o.git_ref), Operation::Rollback(_) => Value::Null },
            "dry_run": rollout.dry_run,
            "gates": gate_list.iter().map(|g| json!({"prometheus": g.prometheus, "query": g.query, "max": g.max})).collect::<Vec<_>>(),
            "window": verdict.as_ref().map(|v| json!({"open": v.open, "now": v.now, "why": v.why, "next": v.next})),
            "forced": forced,
        }),
    );
    let count = plan.hosts.len();
    let hosts_word = if count == 1 { "host" } else { "hosts" };
    let to = if deploying { "to" } else { "on" };
    let heading = format!("{title} {to} {count} {hosts_word}");
    view.say(&plan.text(&heading, op.migrates(), &extra), Some(plan_json));
    if rollout.dry_run {
        view.say("dry run: nothing was changed and no lock was taken", None);
        return Ok(());
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
    mut view: View<'_, '_>,
    interrupt: &mut Interrupt,
    notifier: &Notifier,
) -> Result<(), Failure> {
    let title = op.title();
    let app = op.app().to_string();
    let gate_list = gates_of(rollout.fleet, op);
    let base = deploy::new_id(op.kind())?;
    let ids: Vec<String> = plan
        .hosts
        .iter()
        .map(|h| jobs::host_job_id(&base, &h.name))
        .collect();
    let forced = matches!(op, Operation::Deploy(o) if o.force);

    // The window.
    if let Some(v) = verdict.as_ref().filter(|v| !v.open && !forced) {
        let why = format!("outside the deploy window: {}", v.describe());
        refuse_on_hosts(rollout, op, plan, &ids, &why).await;
        view.json_line(&json!({"kind": "refused", "why": why}));
        notifier
            .send(
                Event::Refusal,
                &format!("hoist: {title} refused: {why}"),
                &[("app", app.clone()), ("window", v.describe())],
            )
            .await;
        return Err(Failure::failed(anyhow::anyhow!(
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
            eprintln!(
                "hoist: waiting up to {} for the lock on {host} ({why})",
                render::human_duration(plan::millis(rollout.lock_wait))
            );
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
            notifier
                .send(
                    Event::Refusal,
                    &format!("hoist: {title} refused: {why}"),
                    &[("app", app.clone())],
                )
                .await;
            return Err(Failure::failed(anyhow::anyhow!("{title}: {why}")));
        }
    };

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
            state.records[i].outcome = Some(Outcome::Unreachable(why.clone()));
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

    let ctx = Ctx {
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
        let mut fields = vec![
            ("app", app.clone()),
            ("hosts", plan.hosts.len().to_string()),
            ("plan", plan.describe_shape()),
        ];
        if let Operation::Deploy(o) = op {
            fields.push(("ref", o.git_ref.clone()));
            if let Some(reason) = o.reason.as_ref().filter(|_| o.force) {
                fields.push(("forced", reason.clone()));
            }
        }
        notifier
            .send(
                Event::Start,
                &format!(
                    "hoist: {title} started on {} host(s): {}",
                    plan.hosts.len(),
                    plan.describe_shape()
                ),
                &fields,
            )
            .await;
        phases(&ctx, &mut state).await;
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
        undone = undo(&ctx, &mut state, &leases).await;
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
    let (text, summary_json, failure) = summary(&ctx, &state);
    state.view.summary(&text, &summary_json);
    if !undone.is_empty() {
        let names = undone.join(", ");
        notifier
            .send(
                Event::Rollback,
                &format!("hoist: {title} rolled back {names} to their previous releases"),
                &[("app", app.clone()), ("hosts", names.clone())],
            )
            .await;
    }
    match failure {
        None => {
            notifier
                .send(
                    Event::Success,
                    &format!(
                        "hoist: {title} succeeded on {}",
                        succeeded_hosts(&state).join(", ")
                    ),
                    &[("app", app.clone())],
                )
                .await;
            Ok(())
        }
        Some(why) => {
            notifier
                .send(
                    Event::Failure,
                    &format!("hoist: {why}"),
                    &[("app", app.clone())],
                )
                .await;
            Err(Failure::failed(anyhow::anyhow!(why)))
        }
    }
}

/// The gates a rollout evaluates: the fleet's for deploys, none for rollbacks.
fn gates_of<'f>(fleet: &'f Fleet, op: &Operation) -> &'f [Gate] {
    match op {
        Operation::Deploy(_) => &fleet.gates,
        Operation::Rollback(_) => &[],
    }
}

fn join_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "no host".into()
    } else {
        names.join(", ")
    }
}

fn paint_bad(text: &str, colour: bool) -> String {
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

/// Records a refused deploy in every target's journal (best effort).
async fn refuse_on_hosts(
    rollout: &Rollout<'_>,
    op: &Operation,
    plan: &Plan<'_>,
    ids: &[String],
    why: &str,
) {
    let Operation::Deploy(o) = op else {
        return;
    };
    let asks = plan.hosts.iter().zip(ids).map(|(host, id)| {
        let request = RecordRefusalRequest {
            app: o.app.clone(),
            job_id: id.clone(),
            kind: JobKind::Deploy as i32,
            r#ref: o.git_ref.clone(),
            reason: why.to_string(),
        };
        async move {
            let answer =
                fanout::ask_one(host, rollout.creds, rollout.timeout, |mut c| async move {
                    c.record_refusal(request).await.map(|_| ())
                })
                .await;
            if let Err(err) = answer {
                eprintln!("hoist: {}: could not record the refusal: {err}", host.name);
            }
        }
    });
    join_all(asks).await;
}

// === state ===

impl State<'_, '_, '_> {
    fn over(&self) -> bool {
        self.failures.len() > self.budget
    }

    /// Counts host `i` against the budget (once), with why.
    fn count(&mut self, i: usize, why: &str) {
        if self.records[i].counted {
            return;
        }
        self.records[i].counted = true;
        let (host, job_id) = (self.records[i].host.clone(), self.records[i].job_id.clone());
        self.failures.push((host.clone(), why.to_string()));
        self.report_budget(&host, why, json!({"host": host, "job_id": job_id}));
    }

    /// Counts a failed gate against the budget.
    fn count_gate(&mut self, gate: &str, why: &str) {
        self.failures
            .push((format!("gate {gate}"), why.to_string()));
        self.report_budget(&format!("gate {gate}"), why, json!({"gate": gate}));
    }

    fn report_budget(&mut self, what: &str, why: &str, mut fields: Value) {
        let (used, allowed, over) = (self.failures.len(), self.budget, self.over());
        let mut text = format!("budget: {used} failure(s) of {allowed} tolerated — {what}: {why}");
        if over {
            text.push_str(" — over the budget: no further host starts");
            if matches!(self.stop, None | Some(Stop::Interrupted)) {
                self.stop = Some(Stop::OverBudget);
            }
        }
        if let Value::Object(object) = &mut fields {
            object.extend([
                ("kind".to_string(), json!("budget")),
                ("used".to_string(), json!(used)),
                ("allowed".to_string(), json!(allowed)),
                ("over".to_string(), json!(over)),
                ("why".to_string(), json!(why)),
            ]);
        }
        let text = table::paint(
            &text,
            if over { Tone::Bad } else { Tone::Warn },
            self.view.colour(),
        );
        self.view.say(&text, Some(fields));
    }

    fn job_id(&self, i: usize, undo: bool) -> String {
        let r = &self.records[i];
        match (&r.undo_id, undo) {
            (Some(id), true) => id.clone(),
            _ => r.job_id.clone(),
        }
    }

    fn on_update(&mut self, i: usize, update: Update, undo: bool) {
        if !undo
            && let Update::Event(event) = &update
            && let Some(Kind::Finished(_)) = &event.kind
        {
            self.records[i].finished_at = event.at;
        }
        let job_id = self.job_id(i, undo);
        self.view.update(i, &job_id, &update);
    }

    fn on_outcome(&mut self, i: usize, outcome: Outcome, undo: bool) {
        let colour = self.view.colour();
        let job_id = self.job_id(i, undo);
        let host = self.records[i].host.clone();
        let took = self.records[i].started.map(|s| s.elapsed());
        let (label, _) = outcome.label();
        let error = first_line(outcome.error());
        let finished = match &outcome {
            Outcome::Finished(f) => Some(f.clone()),
            _ => None,
        };
        if !self.view.json() && !matches!(outcome, Outcome::Finished(_) | Outcome::NotStarted) {
            // Job events announce finished jobs; these outcomes had no event.
            let mut text = format!(
                "==> {host}: {}",
                table::paint(label, outcome.label().1, colour)
            );
            if !error.is_empty() {
                text.push_str(&format!(": {error}"));
            }
            if !self.view.live() {
                self.view.print(&text);
            }
        }
        self.view.json_line(&json!({
            "kind": "host_result",
            "host": host,
            "job_id": job_id,
            "phase": if undo { "rollback" } else { "forward" },
            "result": outcome.key(),
            "release": finished.as_ref().map(|f| f.release.clone()),
            "previous_release": finished.as_ref().map(|f| f.previous_release.clone()),
            "duration_ms": finished.as_ref().map(|f| f.duration_ms),
            "error": outcome.error(),
        }));
        let took_text = took
            .map(|t| render::human_duration(plan::millis(t)))
            .unwrap_or_default();
        let line = match (&outcome, undo) {
            (o, false) if o.ok() => table::paint(
                &format!(
                    "✓ {label} · {} · {took_text}",
                    finished.as_ref().map_or("", |f| f.release.as_str())
                ),
                Tone::Good,
                colour,
            ),
            (o, true) if o.ok() => table::paint(
                &format!(
                    "↩ rolled back to {} · {took_text}",
                    finished.as_ref().map_or("", |f| f.release.as_str())
                ),
                Tone::Warn,
                colour,
            ),
            (_, true) => paint_bad(&format!("✗ rollback {label}: {error}"), colour),
            (Outcome::Detached, false) => format!("detached · {took_text}"),
            (_, false) => paint_bad(&format!("✗ {label}: {error} · {took_text}"), colour),
        };
        self.view.done(i, &line);
        let record = &mut self.records[i];
        if undo {
            record.undo = Some(outcome);
            return;
        }
        record.took_ms = finished.as_ref().map(|f| f.duration_ms);
        let counts = !outcome.ok() && !matches!(outcome, Outcome::Detached | Outcome::NotStarted);
        record.outcome = Some(outcome);
        if counts {
            let why = if error.is_empty() {
                label.to_string()
            } else if error.starts_with(label) {
                error
            } else {
                format!("{label}: {error}")
            };
            self.count(i, &why);
        }
    }
}

fn first_line(text: &str) -> String {
    let text = text.trim();
    text.lines().next().unwrap_or(text).to_string()
}

// === phases ===

/// The request for host `i`.
fn request(ctx: &Ctx<'_>, state: &State<'_, '_, '_>, i: usize, migrate: bool) -> JobRequest {
    let job_id = state.records[i].job_id.clone();
    match ctx.op {
        Operation::Deploy(o) => o.request(job_id, migrate),
        Operation::Rollback(o) => o.request(job_id),
    }
}

/// Every phase in order, each followed by its bake, until the end or a stop.
async fn phases(ctx: &Ctx<'_>, state: &mut State<'_, '_, '_>) {
    let migrate_on = match ctx.op {
        Operation::Deploy(o) => o.migrate_on,
        Operation::Rollback(_) => MigrateOn::None,
    };
    // The first reachable host migrates (the planned one may not answer).
    let mut migrator = (migrate_on == MigrateOn::First)
        .then(|| (0..state.records.len()).find(|&i| state.records[i].skipped.is_none()))
        .flatten();
    for phase in &ctx.plan.phases {
        if state.stop.is_some() {
            break;
        }
        let members: Vec<usize> = phase
            .hosts
            .iter()
            .copied()
            .filter(|&i| state.records[i].skipped.is_none())
            .collect();
        if members.is_empty() {
            continue;
        }
        let names: Vec<&str> = members
            .iter()
            .map(|&i| state.records[i].host.as_str())
            .collect();
        state.view.say(
            &format!("-- {}: {}", phase.name, names.join(", ")),
            Some(json!({"kind": "batch_started", "phase": phase.name, "hosts": names})),
        );
        let mut rest = members.clone();
        if let Some(m) = migrator.filter(|m| members.contains(m)) {
            migrator = None;
            state.migrator = Some(m);
            rest.retain(|&i| i != m);
            let first = request(ctx, state, m, true);
            run_jobs(ctx, state, vec![(m, first)], false).await;
            if !state.records[m].switched() {
                if !matches!(state.stop, Some(Stop::Detached)) {
                    state.stop = Some(Stop::MigrationFailed(state.records[m].host.clone()));
                }
                break;
            }
        }
        if state.stop.is_none() {
            let jobs = rest
                .iter()
                .map(|&i| (i, request(ctx, state, i, migrate_on == MigrateOn::All)))
                .collect();
            run_jobs(ctx, state, jobs, false).await;
        }
        if state.stop.is_some() {
            break;
        }
        bake_phase(ctx, state, &phase.name).await;
    }
}

/// Runs `jobs` at once (at most [`CONCURRENCY`] at a time) and follows them to their
/// ends. Forward jobs stop starting when the rollout stops; `undo` jobs (rollbacks of
/// switched hosts) always start.
async fn run_jobs(
    ctx: &Ctx<'_>,
    state: &mut State<'_, '_, '_>,
    jobs: Vec<(usize, JobRequest)>,
    undo: bool,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Update)>();
    let mut queue: VecDeque<(usize, JobRequest)> = jobs.into();
    let mut running = FuturesUnordered::new();
    let mut in_flight = BTreeSet::new();
    loop {
        while running.len() < CONCURRENCY && (undo || state.stop.is_none()) {
            let Some((i, request)) = queue.pop_front() else {
                break;
            };
            state.records[i].started = Some(Instant::now());
            state
                .view
                .started(i, if undo { "rolling back" } else { "connecting" });
            in_flight.insert(i);
            running.push(run_job(ctx, i, request, tx.clone()));
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            Some((i, update)) = rx.recv() => state.on_update(i, update, undo),
            Some((i, outcome)) = running.next() => {
                while let Ok((j, update)) = rx.try_recv() {
                    state.on_update(j, update, undo);
                }
                in_flight.remove(&i);
                state.on_outcome(i, outcome, undo);
            }
            presses = state.interrupt.pressed() => {
                while let Ok((j, update)) = rx.try_recv() {
                    state.on_update(j, update, undo);
                }
                let names: Vec<String> = in_flight.iter().map(|&i| state.records[i].host.clone()).collect();
                if presses >= 2 {
                    state.view.say(
                        &format!(
                            "detached: the jobs on {} keep running on the agents; `hoist attach JOB --host HOST` follows one",
                            names.join(", ")
                        ),
                        Some(json!({"kind": "detached", "hosts": names})),
                    );
                    for &i in &in_flight {
                        state.on_outcome(i, Outcome::Detached, undo);
                    }
                    state.stop = Some(Stop::Detached);
                    return;
                }
                if state.stop.is_none() {
                    state.stop = Some(Stop::Interrupted);
                }
                state.view.say(
                    &format!(
                        "interrupted: no further host will start; {} finish first (Ctrl-C again to detach)",
                        join_or_none(&names)
                    ),
                    Some(json!({"kind": "interrupted", "running": names})),
                );
            }
        }
    }
}

async fn run_job(
    ctx: &Ctx<'_>,
    i: usize,
    request: JobRequest,
    tx: mpsc::UnboundedSender<(usize, Update)>,
) -> (usize, Outcome) {
    let host = ctx.plan.hosts[i];
    let job_id = request.job_id().to_string();
    let mut client = match jobs::connect(host, ctx.creds, ctx.timeout).await {
        Ok(client) => client,
        Err(why) => return (i, Outcome::Unreachable(why)),
    };
    let started = request.start(&mut client).await;
    let send = move |update| {
        let _ = tx.send((i, update));
    };
    let outcome = jobs::follow_job(host, ctx.creds, ctx.timeout, &job_id, started, &send).await;
    (i, outcome)
}

// === bake ===

/// The bake after a phase: the switched hosts' checks stay green and the gates hold
/// for `ctx.bake`. Gates are evaluated at the start, every [`GATE_EVERY`] and at the
/// end (once when the bake is zero); a gate counts once per bake.
async fn bake_phase(ctx: &Ctx<'_>, state: &mut State<'_, '_, '_>, phase: &str) {
    let watched: Vec<usize> = (0..state.records.len())
        .filter(|&i| state.records[i].switched() && !state.records[i].counted)
        .collect();
    if ctx.gates.is_empty() && (ctx.bake.is_zero() || watched.is_empty()) {
        return;
    }
    let names: Vec<String> = watched
        .iter()
        .map(|&i| state.records[i].host.clone())
        .collect();
    let took = render::human_duration(plan::millis(ctx.bake));
    let watching = match names.len() {
        0..=4 => join_or_none(&names),
        n => format!("{n} hosts"),
    };
    state.view.say(
        &format!(
            "-- bake {took} after {phase}: checks on {watching}{}",
            match ctx.gates.len() {
                0 => String::new(),
                1 => ", 1 gate".into(),
                n => format!(", {n} gates"),
            }
        ),
        Some(json!({
            "kind": "bake_started",
            "phase": phase,
            "duration_ms": plan::millis(ctx.bake),
            "hosts": names,
            "gates": ctx.gates.len(),
        })),
    );
    for &i in &watched {
        state.view.started(i, "baking");
    }
    let failures_before = state.failures.len();
    let mut cut_short = false;
    let mut failed_gates = vec![false; ctx.gates.len()];
    evaluate_gates(ctx, state, &mut failed_gates, phase).await;
    if !ctx.bake.is_zero() && !state.over() {
        let app = ctx.op.app();
        let interval = WATCH_EVERY
            .min(ctx.bake / 2)
            .max(Duration::from_millis(100));
        let mut watchers: FuturesUnordered<_> = watched
            .iter()
            .map(|&i| {
                let since = state.records[i].finished_at;
                async move {
                    let host = ctx.plan.hosts[i];
                    (
                        i,
                        bake::watch_host(host, ctx.creds, ctx.timeout, app, since, interval).await,
                    )
                }
            })
            .collect();
        let deadline = tokio::time::Instant::now() + ctx.bake;
        let mut next_gate = tokio::time::Instant::now() + GATE_EVERY;
        loop {
            let gates_due = !ctx.gates.is_empty() && next_gate < deadline;
            tokio::select! {
                biased;
                presses = state.interrupt.pressed() => {
                    if state.stop.is_none() {
                        state.stop = Some(Stop::Interrupted);
                    }
                    let detach = if presses >= 2 { " (nothing runs: nothing to detach from)" } else { "" };
                    state.view.say(
                        &format!("interrupted: the bake ends now and no further host will start{detach}"),
                        Some(json!({"kind": "interrupted", "running": []})),
                    );
                    cut_short = true;
                    break;
                }
                Some((i, why)) = watchers.next() => {
                    state.records[i].unhealthy = Some(why.clone());
                    let host = state.records[i].host.clone();
                    state.view.print(&paint_bad(&format!("==> {host}: {why}"), state.view.colour()));
                    let line = paint_bad(&format!("✗ unhealthy: {why}"), state.view.colour());
                    state.view.done(i, &line);
                    state.count(i, &why);
                    if state.over() {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(next_gate), if gates_due => {
                    evaluate_gates(ctx, state, &mut failed_gates, phase).await;
                    next_gate += GATE_EVERY;
                    if state.over() {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    evaluate_gates(ctx, state, &mut failed_gates, phase).await;
                    break;
                }
            }
        }
    }
    for &i in &watched {
        if state.records[i].unhealthy.is_none() {
            let release = state.records[i]
                .finished()
                .map(|f| f.release.clone())
                .unwrap_or_default();
            let line = table::paint(
                &format!("✓ healthy · {release}"),
                Tone::Good,
                state.view.colour(),
            );
            state.view.done(i, &line);
        }
    }
    let new_failures = state.failures.len() - failures_before;
    let ok = new_failures == 0;
    let text = if ok && cut_short {
        format!("-- bake after {phase}: cut short, healthy so far")
    } else if ok {
        table::paint(
            &format!("-- bake after {phase}: healthy"),
            Tone::Good,
            state.view.colour(),
        )
    } else {
        paint_bad(
            &format!("-- bake after {phase}: {new_failures} failure(s)"),
            state.view.colour(),
        )
    };
    state.view.say(
        &text,
        Some(json!({
            "kind": "bake_finished",
            "phase": phase,
            "ok": ok,
            "failures": new_failures,
            "cut_short": cut_short,
        })),
    );
}

/// Evaluates the gates not failed yet in this bake; counts the ones that fail.
async fn evaluate_gates(
    ctx: &Ctx<'_>,
    state: &mut State<'_, '_, '_>,
    failed: &mut [bool],
    phase: &str,
) {
    let pending: Vec<usize> = (0..ctx.gates.len()).filter(|&g| !failed[g]).collect();
    let verdicts = join_all(pending.iter().map(|&g| gates::evaluate(&ctx.gates[g]))).await;
    for (g, verdict) in pending.into_iter().zip(verdicts) {
        let gate = &ctx.gates[g];
        let described = gates::describe(gate);
        let text = format!("gate {described}: {verdict}");
        let tone = if verdict.ok() { Tone::Good } else { Tone::Bad };
        state.view.say(
            &table::paint(&text, tone, state.view.colour()),
            Some(json!({
                "kind": "gate",
                "phase": phase,
                "prometheus": gate.prometheus,
                "query": gate.query,
                "max": gate.max,
                "value": verdict.value(),
                "ok": verdict.ok(),
                "error": match &verdict { gates::Verdict::Error(why) => why.as_str(), _ => "" },
            })),
        );
        if !verdict.ok() {
            failed[g] = true;
            state.count_gate(&described, &verdict.to_string());
        }
    }
}

// === undo ===

/// Rolls back every host this deploy switched to the release it had before, at once
/// (bounded); returns the hosts rolled back.
async fn undo(ctx: &Ctx<'_>, state: &mut State<'_, '_, '_>, leases: &Leases) -> Vec<String> {
    let switched: Vec<usize> = (0..state.records.len())
        .filter(|&i| state.records[i].switched())
        .collect();
    if switched.is_empty() {
        return Vec::new();
    }
    let names: Vec<String> = switched
        .iter()
        .map(|&i| state.records[i].host.clone())
        .collect();
    let why = match &state.stop {
        Some(Stop::MigrationFailed(host)) => format!("{host} failed to migrate"),
        _ => "over the failure budget".to_string(),
    };
    state.view.say(
        &paint_bad(
            &format!(
                "-- rolling back {} (switched by this deploy): {why}",
                names.join(", ")
            ),
            state.view.colour(),
        ),
        Some(json!({"kind": "rollback_started", "hosts": names, "why": why})),
    );
    let base = match deploy::new_id("rollback") {
        Ok(base) => base,
        Err(failure) => {
            for &i in &switched {
                state.records[i].undo = Some(Outcome::Refused(format!("{:#}", failure.error)));
            }
            return Vec::new();
        }
    };
    let reason = format!("{}: {why}", ctx.op.title());
    let mut prepared = Vec::new();
    for &i in &switched {
        let record = &mut state.records[i];
        let id = jobs::host_job_id(&base, &record.host);
        record.undo_id = Some(id.clone());
        let to = record
            .before
            .clone()
            .or_else(|| record.finished().map(|f| f.previous_release.clone()))
            .filter(|r| !r.is_empty());
        prepared.push((i, id, to));
    }
    let handovers = prepared.iter().map(|(i, id, to)| {
        let host = state.records[*i].host.clone();
        async move {
            let to = to.clone().ok_or_else(|| {
                "no earlier release to return to (this was the app's first deploy there)"
                    .to_string()
            })?;
            leases.hand_over(&host, id).await.map(|()| to)
        }
    });
    let handed = join_all(handovers).await;
    let mut jobs = Vec::new();
    for ((i, id, _), handed) in prepared.into_iter().zip(handed) {
        match handed {
            Ok(to) => jobs.push((
                i,
                JobRequest::Rollback(RollbackRequest {
                    app: ctx.op.app().to_string(),
                    to_release: to,
                    job_id: id,
                    migrate: false,
                    restore_db: false,
                    confirm_restore: false,
                    reason: reason.clone(),
                }),
            )),
            Err(why) => state.on_outcome(i, Outcome::Refused(why), true),
        }
    }
    run_jobs(ctx, state, jobs, true).await;
    if let Some(m) = state.migrator.filter(|m| switched.contains(m)) {
        let host = state.records[m].host.clone();
        state.view.print(&format!(
            "  ! the migrations {host} ran are not reversed; `hoist rollback {} --migrate \
             --hosts {host}` reverses them if the old release needs the old schema",
            ctx.op.app()
        ));
    }
    switched
        .into_iter()
        .filter(|&i| state.records[i].undo.as_ref().is_some_and(Outcome::ok))
        .map(|i| state.records[i].host.clone())
        .collect()
}

// === summary ===

/// A host's line in the summary: result, tone, release serving now, duration, why.
fn row(record: &Record) -> (String, Tone, String, String, String) {
    let took = record
        .took_ms
        .map(render::human_duration)
        .unwrap_or_else(|| "-".into());
    let before = record.before.clone().unwrap_or_else(|| "-".into());
    let Some(outcome) = &record.outcome else {
        return ("not started".into(), Tone::Dim, before, took, String::new());
    };
    if let Some(why) = &record.skipped {
        return (
            "unreachable".into(),
            Tone::Bad,
            "-".into(),
            took,
            why.clone(),
        );
    }
    let finished = record.finished();
    if outcome.ok() {
        let release = finished.map(|f| f.release.clone()).unwrap_or_default();
        let health = record.unhealthy.clone();
        return match &record.undo {
            Some(undo) if undo.ok() => {
                let to = match undo {
                    Outcome::Finished(f) => f.release.clone(),
                    _ => before,
                };
                let why = health.unwrap_or_else(|| {
                    "switched, then rolled back when the rollout stopped".into()
                });
                ("rolled back".into(), Tone::Warn, to, took, why)
            }
            Some(undo) => (
                "rollback failed".into(),
                Tone::Bad,
                release,
                took,
                format!("{}: {}", undo.label().0, first_line(undo.error())),
            ),
            None => match health {
                Some(why) => ("unhealthy".into(), Tone::Bad, release, took, why),
                None => ("succeeded".into(), Tone::Good, release, took, String::new()),
            },
        };
    }
    let (label, tone) = outcome.label();
    let release = match finished {
        Some(f) if !f.previous_release.is_empty() => f.previous_release.clone(),
        Some(_) => "-".into(),
        None => before,
    };
    (
        label.to_string(),
        tone,
        release,
        took,
        first_line(outcome.error()),
    )
}

/// The summary table (text), its JSON, and the failure that sets the exit code (`None`
/// when the rollout completed with at least one host done).
fn summary(ctx: &Ctx<'_>, state: &State<'_, '_, '_>) -> (String, Value, Option<String>) {
    let title = ctx.op.title();
    let rows: Vec<(String, Tone, String, String, String)> = state.records.iter().map(row).collect();
    let cells: Vec<Vec<Cell>> = state
        .records
        .iter()
        .zip(&rows)
        .map(|(r, (label, tone, release, took, why))| {
            vec![
                Cell::from(r.host.clone()),
                Cell::new(label.clone(), *tone),
                Cell::from(release.clone()),
                Cell::from(took.clone()),
                Cell::new(why.clone(), Tone::Dim),
            ]
        })
        .collect();
    // The WHY column only when some host has a reason to give.
    let header = ["HOST", "RESULT", "RELEASE", "DURATION", "WHY"];
    let columns = if rows.iter().any(|r| !r.4.is_empty()) {
        5
    } else {
        4
    };
    let cells: Vec<Vec<Cell>> = cells
        .into_iter()
        .map(|mut row| {
            row.truncate(columns);
            row
        })
        .collect();
    let mut text = format!(
        "\n{}",
        table::render(&header[..columns], &cells, state.view.colour())
    );
    let failures: Vec<String> = state
        .failures
        .iter()
        .map(|(what, why)| format!("{what}: {why}"))
        .collect();
    let names = |pick: &dyn Fn(&Record, &str) -> bool| -> Vec<String> {
        state
            .records
            .iter()
            .zip(&rows)
            .filter(|(r, (label, ..))| pick(r, label))
            .map(|(r, _)| r.host.clone())
            .collect()
    };
    let not_started = names(&|_, label| label == "not started");
    let rolled_back = names(&|r, _| r.undo.as_ref().is_some_and(Outcome::ok));
    let undo_failed = names(&|r, _| r.undo.as_ref().is_some_and(|u| !u.ok()));
    let done = names(&|_, label| label == "succeeded");
    let mut failure = match &state.stop {
        Some(Stop::OverBudget) => Some(format!(
            "{title} stopped: {} failure(s), {} tolerated ({})",
            state.failures.len(),
            state.budget,
            failures.join("; ")
        )),
        Some(Stop::MigrationFailed(host)) => Some(format!(
            "{title} stopped: {host} ran the migrations and did not succeed, so no other host \
             started ({})",
            failures.join("; ")
        )),
        Some(Stop::Interrupted) => Some(format!("{title} interrupted")),
        Some(Stop::Detached) => Some(format!(
            "{title}: detached; the jobs still running keep running on the agents"
        )),
        None if done.is_empty() => Some(format!(
            "{title}: no host succeeded ({})",
            if failures.is_empty() {
                "nothing ran".to_string()
            } else {
                failures.join("; ")
            }
        )),
        None => None,
    };
    if let Some(why) = &mut failure {
        if !rolled_back.is_empty() {
            why.push_str(&format!(
                "; rolled back {} to their previous releases",
                rolled_back.join(", ")
            ));
        }
        if !undo_failed.is_empty() {
            why.push_str(&format!(
                "; could not roll back {} (see above)",
                undo_failed.join(", ")
            ));
        }
        if !not_started.is_empty() {
            why.push_str(&format!("; not started: {}", not_started.join(", ")));
        }
    } else if !failures.is_empty() {
        text.push_str(&format!(
            "{title} completed with {} failure(s) within the budget of {}: {}\n",
            failures.len(),
            state.budget,
            failures.join("; ")
        ));
    } else {
        if done.len() == state.records.len() && done.len() > 4 {
            text.push_str(&format!("{title} succeeded on all {} hosts\n", done.len()));
        } else {
            text.push_str(&format!("{title} succeeded on {}\n", done.join(", ")));
        }
    }
    let json = json!({
        "kind": "summary",
        "title": title,
        "ok": failure.is_none(),
        "stopped": state.stop.as_ref().map(|s| match s {
            Stop::OverBudget => "over_budget",
            Stop::MigrationFailed(_) => "migration_failed",
            Stop::Interrupted => "interrupted",
            Stop::Detached => "detached",
        }),
        "budget": {"used": state.failures.len(), "allowed": state.budget},
        "failures": state.failures.iter().map(|(what, why)| json!({"what": what, "why": why})).collect::<Vec<_>>(),
        "hosts": state.records.iter().zip(&rows).map(|(r, (label, _, release, _, why))| json!({
            "host": r.host,
            "job_id": r.job_id,
            "result": label.replace(' ', "_"),
            "release": release,
            "before": r.before,
            "duration_ms": r.took_ms,
            "rollback_job_id": r.undo_id,
            "error": why,
        })).collect::<Vec<_>>(),
        "error": failure,
    });
    (text, json, failure)
}

// === commands ===

/// Rollout flags shared by `hoist deploy` and `hoist rollback`; unset flags take the
/// fleet file's `[deploy]` values.
#[derive(clap::Args, Debug, Clone, Default, PartialEq)]
pub struct RolloutFlags {
    /// all (every host at once), rolling (batches, a bake after each) or canary (the
    /// canary hosts and a bake first). Default: `strategy` in [deploy].
    #[arg(long, value_name = "all|rolling|canary", value_parser = parse_strategy)]
    pub strategy: Option<Strategy>,
    /// Hosts per batch, a number or a percentage of the selected hosts.
    #[arg(long, value_name = "N|N%", value_parser = parse_positive)]
    pub batch: Option<Amount>,
    /// Canary hosts (strategy canary), a number or a percentage.
    #[arg(long, value_name = "N|N%", value_parser = parse_positive)]
    pub canary: Option<Amount>,
    /// Fleet-wide failure budget: failures tolerated before the rollout stops and rolls
    /// back what it switched.
    #[arg(long, value_name = "N|N%", value_parser = parse_amount)]
    pub max_unhealthy: Option<Amount>,
    /// Wait up to this long for locks held by someone else (default: fail at once).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lock_wait: Option<Duration>,
    /// Print the plan (batches, who migrates, gates, window) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    s.parse()
}

fn parse_amount(s: &str) -> Result<Amount, String> {
    s.parse()
}

fn parse_positive(s: &str) -> Result<Amount, String> {
    match s.parse()? {
        Amount::Count(0) | Amount::Percent(0) => Err(format!(
            "{s} hosts would never deploy; use at least 1, e.g. 1 or 10%"
        )),
        amount => Ok(amount),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::fleet::parse_duration(s)
}

impl RolloutFlags {
    /// The rollout's shape: these flags over the fleet's `[deploy]`.
    pub fn shape(
        &self,
        defaults: &DeployDefaults,
        bake: Option<Duration>,
        migrate_on: MigrateOn,
    ) -> Shape {
        Shape {
            strategy: self.strategy.unwrap_or(defaults.strategy),
            batch: self.batch.unwrap_or(defaults.batch),
            canary: self.canary.unwrap_or(defaults.canary),
            bake: bake.unwrap_or(defaults.bake),
            max_unhealthy: self.max_unhealthy.unwrap_or(defaults.max_unhealthy),
            migrate_on,
        }
    }
}

/// `hoist deploy APP --ref REF ...`.
pub async fn deploy_command(global: &Global, args: DeployArgs) -> Result<(), Failure> {
    let mut options = DeployOptions {
        app: args.app,
        git_ref: args.git_ref,
        migrate_on: args.migrate_on.unwrap_or_default(),
        allow_missing_env: args.allow_missing_env,
        force: args.force,
        reason: args.reason,
    };
    options
        .validate()
        .map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
    let fleet = cli::load_fleet(global)?;
    options.migrate_on = args.migrate_on.unwrap_or(fleet.deploy.migrate_on);
    let shape = args
        .rollout
        .shape(&fleet.deploy, args.bake, options.migrate_on);
    run_command(
        global,
        &fleet,
        &args.rollout,
        shape,
        args.timeout,
        Operation::Deploy(options),
    )
    .await
}

/// `hoist rollback APP [--to RELEASE] ...`.
pub async fn rollback_command(global: &Global, args: RollbackArgs) -> Result<(), Failure> {
    let options = RollbackOptions {
        app: args.app,
        to_release: args.to_release,
        migrate: args.migrate,
        restore_db: args.restore_db,
        yes: args.yes,
        reason: args.reason,
    };
    options
        .validate()
        .map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
    let fleet = cli::load_fleet(global)?;
    let shape = args
        .rollout
        .shape(&fleet.deploy, Some(Duration::ZERO), MigrateOn::None);
    run_command(
        global,
        &fleet,
        &args.rollout,
        shape,
        args.timeout,
        Operation::Rollback(options),
    )
    .await
}

async fn run_command(
    global: &Global,
    fleet: &Fleet,
    flags: &RolloutFlags,
    shape: Shape,
    timeout: Duration,
    op: Operation,
) -> Result<(), Failure> {
    let hosts = cli::select(fleet, global)?;
    let creds = cli::credentials(fleet)?;
    let mut stdout = std::io::stdout();
    let mut out = Output::new(&mut stdout, table::use_colour(), global.json);
    let mut interrupt = Interrupt::ctrl_c();
    let rollout = Rollout {
        fleet,
        hosts,
        creds: &creds,
        timeout,
        shape,
        lock_wait: flags.lock_wait.unwrap_or(Duration::ZERO),
        dry_run: flags.dry_run,
        live: crate::progress::live_possible(global.json),
    };
    run(rollout, op, &mut out, &mut interrupt).await
}

#[cfg(test)]
mod tests {
    use hoist_proto::v1::JobResult;

    use super::*;

    fn finished(result: JobResult, release: &str, previous: &str, error: &str) -> Outcome {
        Outcome::Finished(JobFinished {
            result: result as i32,
            release: release.into(),
            previous_release: previous.into(),
            duration_ms: 1200,
            error: error.into(),
        })
    }

    fn record(outcome: Option<Outcome>) -> Record {
        Record {
            host: "web-1".into(),
            job_id: "deploy-x-web-1".into(),
            before: Some("R1".into()),
            took_ms: Some(1200),
            outcome,
            ..Default::default()
        }
    }

    #[test]
    fn summary_rows_say_what_serves_now_and_why() {
        let label = |r: &Record| {
            let (label, _, release, _, why) = row(r);
            (label, release, why)
        };
        assert_eq!(
            label(&record(None)),
            ("not started".into(), "R1".into(), String::new())
        );
        let ok = finished(JobResult::Succeeded, "R2", "R1", "");
        assert_eq!(
            label(&record(Some(ok.clone()))),
            ("succeeded".into(), "R2".into(), String::new())
        );
        let mut undone = record(Some(ok.clone()));
        undone.undo = Some(finished(JobResult::Succeeded, "R1", "R2", ""));
        assert_eq!(
            label(&undone),
            (
                "rolled back".into(),
                "R1".into(),
                "switched, then rolled back when the rollout stopped".into()
            )
        );
        undone.unhealthy = Some("check http failed during the bake: 500".into());
        assert_eq!(label(&undone).2, "check http failed during the bake: 500");
        let mut stuck = record(Some(ok.clone()));
        stuck.undo = Some(Outcome::Refused("cannot lock web for the rollback".into()));
        assert_eq!(
            label(&stuck),
            (
                "rollback failed".into(),
                "R2".into(),
                "refused: cannot lock web for the rollback".into()
            )
        );
        let mut sick = record(Some(ok));
        sick.unhealthy = Some("check x failed during the bake".into());
        assert_eq!(label(&sick).0, "unhealthy");
        let agent_rolled_back = finished(
            JobResult::RolledBack,
            "R2",
            "R1",
            "rolled back to R1: check\nmore",
        );
        assert_eq!(
            label(&record(Some(agent_rolled_back))),
            (
                "rolled back".into(),
                "R1".into(),
                "rolled back to R1: check".into()
            )
        );
        let mut gone = record(Some(Outcome::Unreachable("connection refused".into())));
        gone.skipped = Some("connection refused".into());
        assert_eq!(
            label(&gone),
            (
                "unreachable".into(),
                "-".into(),
                "connection refused".into()
            )
        );
    }

    #[test]
    fn flags_override_the_fleet_defaults() {
        let defaults = DeployDefaults::default();
        let flags = RolloutFlags {
            strategy: Some(Strategy::Canary),
            max_unhealthy: Some(Amount::Percent(10)),
            ..Default::default()
        };
        let shape = flags.shape(&defaults, Some(Duration::from_secs(30)), MigrateOn::All);
        assert_eq!(shape.strategy, Strategy::Canary);
        assert_eq!(shape.batch, defaults.batch);
        assert_eq!(shape.canary, defaults.canary);
        assert_eq!(shape.bake, Duration::from_secs(30));
        assert_eq!(shape.max_unhealthy, Amount::Percent(10));
        assert_eq!(shape.migrate_on, MigrateOn::All);
        assert_eq!(
            flags.shape(&defaults, None, MigrateOn::None).bake,
            defaults.bake
        );
        assert!(parse_positive("0").unwrap_err().contains("never deploy"));
        assert_eq!(parse_positive("2"), Ok(Amount::Count(2)));
    }
}
