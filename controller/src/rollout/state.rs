//! What a rollout knows while it runs: each host's part, the failure budget, why it
//! stopped, and how each result is shown as it arrives.

use std::time::{Duration, Instant};

use hoist_proto::v1::{JobFinished, job_event::Kind};
use prost_types::Timestamp;
use serde_json::{Value, json};

use crate::{
    agents::{
        client::Credentials,
        follow::{JobOutcome, Update},
        session::Interrupt,
    },
    fleet::Gate,
    output::{
        render,
        table::{self, Tone},
    },
    rollout::{
        operation::Operation,
        paint_bad,
        plan::{self, Plan},
        progress::Progress,
    },
};

/// Why the rollout stopped before its end.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Stop {
    OverBudget,
    MigrationFailed(String),
    Interrupted,
    Detached,
}

/// One host's part.
#[derive(Clone, Debug, Default)]
pub(crate) struct Record {
    pub(crate) host: String,
    pub(crate) job_id: String,
    /// Current release before the rollout (from Status after locking).
    pub(crate) before: Option<String>,
    /// Not reachable when locking: skipped.
    pub(crate) skipped: Option<String>,
    /// The job's outcome; `None` while not started.
    pub(crate) outcome: Option<JobOutcome>,
    /// Time of the job's last event, on the agent's clock: the bake's freshness line.
    pub(crate) finished_at: Option<Timestamp>,
    pub(crate) started: Option<Instant>,
    pub(crate) took_ms: Option<u64>,
    /// A check failed (or the host vanished) during a bake.
    pub(crate) unhealthy: Option<String>,
    /// Counted against the budget (once per host).
    pub(crate) counted: bool,
    pub(crate) undo_id: Option<String>,
    pub(crate) undo: Option<JobOutcome>,
    /// The forward job's steps as they started, in order (`fetch`, `shared`, `migrate`…),
    /// and the first that failed: how a failure is named.
    pub(crate) steps: Vec<String>,
    pub(crate) failed_step: Option<String>,
    /// The commit the forward job deployed (from its start or finish event).
    pub(crate) commit: Option<String>,
}

impl Record {
    pub(crate) fn switched(&self) -> bool {
        self.outcome.as_ref().is_some_and(JobOutcome::ok)
    }

    pub(crate) fn finished(&self) -> Option<&JobFinished> {
        match &self.outcome {
            Some(JobOutcome::Finished(f)) => Some(f),
            _ => None,
        }
    }
}

/// What does not change while the rollout runs.
pub(crate) struct Setup<'a> {
    pub(crate) op: &'a Operation,
    pub(crate) plan: &'a Plan<'a>,
    pub(crate) creds: &'a Credentials,
    pub(crate) timeout: Duration,
    pub(crate) gates: &'a [Gate],
    pub(crate) bake: Duration,
}

/// What does.
pub(crate) struct State<'a, 'v, 'o> {
    pub(crate) view: Progress<'v, 'o>,
    pub(crate) records: Vec<Record>,
    /// Failures tolerated.
    pub(crate) budget: usize,
    /// `(host or gate, why)`, in order.
    pub(crate) failures: Vec<(String, String)>,
    pub(crate) stop: Option<Stop>,
    /// The host that ran the migrations (migrate_on = "first").
    pub(crate) migrator: Option<usize>,
    pub(crate) interrupt: &'a mut Interrupt,
}

impl State<'_, '_, '_> {
    pub(crate) fn over(&self) -> bool {
        self.failures.len() > self.budget
    }

    /// Counts host `i` against the budget (once), with why.
    pub(crate) fn count(&mut self, i: usize, why: &str) {
        if self.records[i].counted {
            return;
        }
        self.records[i].counted = true;
        let (host, job_id) = (self.records[i].host.clone(), self.records[i].job_id.clone());
        self.failures.push((host.clone(), why.to_string()));
        self.report_budget(&host, why, json!({"host": host, "job_id": job_id}));
    }

    /// Counts a failed gate against the budget.
    pub(crate) fn count_gate(&mut self, gate: &str, why: &str) {
        self.failures
            .push((format!("gate {gate}"), why.to_string()));
        self.report_budget(&format!("gate {gate}"), why, json!({"gate": gate}));
    }

    pub(crate) fn report_budget(&mut self, what: &str, why: &str, mut fields: Value) {
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

    pub(crate) fn job_id(&self, i: usize, undo: bool) -> String {
        let r = &self.records[i];
        match (&r.undo_id, undo) {
            (Some(id), true) => id.clone(),
            _ => r.job_id.clone(),
        }
    }

    pub(crate) fn on_update(&mut self, i: usize, update: Update, undo: bool) {
        if !undo && let Update::Event(event) = &update {
            match &event.kind {
                Some(Kind::Finished(finished)) => {
                    self.records[i].finished_at = event.at;
                    if !finished.commit.is_empty() {
                        self.records[i].commit = Some(finished.commit.clone());
                    }
                }
                Some(Kind::StepStarted(step)) => self.records[i].steps.push(step.step.clone()),
                Some(Kind::Started(started)) if !started.commit.is_empty() => {
                    self.records[i].commit = Some(started.commit.clone());
                }
                Some(Kind::StepFinished(step)) if !step.ok => {
                    let record = &mut self.records[i];
                    record.failed_step.get_or_insert_with(|| step.step.clone());
                }
                _ => {}
            }
        }
        let job_id = self.job_id(i, undo);
        self.view.update(i, &job_id, &update);
    }

    pub(crate) fn on_outcome(&mut self, i: usize, outcome: JobOutcome, undo: bool) {
        let colour = self.view.colour();
        let job_id = self.job_id(i, undo);
        let host = self.records[i].host.clone();
        let took = self.records[i].started.map(|s| s.elapsed());
        let (label, _) = outcome.label();
        let error = first_line(outcome.error());
        let finished = match &outcome {
            JobOutcome::Finished(f) => Some(f.clone()),
            _ => None,
        };
        if !self.view.json() && !matches!(outcome, JobOutcome::Finished(_) | JobOutcome::NotStarted)
        {
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
            (JobOutcome::Detached, false) => format!("detached · {took_text}"),
            (_, false) => paint_bad(&format!("✗ {label}: {error} · {took_text}"), colour),
        };
        self.view.done(i, &line);
        let record = &mut self.records[i];
        if undo {
            record.undo = Some(outcome);
            return;
        }
        record.took_ms = finished.as_ref().map(|f| f.duration_ms);
        let counts =
            !outcome.ok() && !matches!(outcome, JobOutcome::Detached | JobOutcome::NotStarted);
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

pub(crate) fn first_line(text: &str) -> String {
    let text = text.trim();
    text.lines().next().unwrap_or(text).to_string()
}
