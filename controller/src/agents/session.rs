//! Running one job per selected host, one host after another, with the operator's
//! interrupts, and what each host did ([`RunReport`]).
//!
//! Ctrl-C ([`Interrupt`]): the first press lets the current host's job run to its end
//! and starts no further host; the second detaches at once (the job keeps running on
//! the agent, and `hoist attach JOB --host HOST` re-attaches).

use std::{
    future::Future,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use hoist_proto::v1::{AttachRequest, JobEvent, JobResult};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tonic::{Status, codec::Streaming};

use crate::{
    agents::{
        client::Credentials,
        fanout,
        follow::{self, JobOutcome, JobRequest, Update},
    },
    fleet::Host,
    output::{
        render::{self, Output},
        table::{self, Cell, Tone},
    },
};

/// Why `hoist attach` found no job to follow.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AttachError(String);

// === interrupts ===

/// Counts Ctrl-C presses (or presses simulated by a test).
pub struct Interrupt {
    /// Set on first use: from then on Ctrl-C no longer exits the process.
    presses: OnceLock<watch::Receiver<u32>>,
}

impl Interrupt {
    /// Presses of Ctrl-C, counted from the first use of the value on. Replaces the
    /// default SIGINT action (exit) for the rest of the process then, so only commands
    /// that follow jobs use it.
    pub fn ctrl_c() -> Interrupt {
        Interrupt {
            presses: OnceLock::new(),
        }
    }

    /// Presses sent through the returned sender: `send_modify(|n| *n += 1)` is one.
    pub fn manual() -> (watch::Sender<u32>, Interrupt) {
        let (tx, presses) = watch::channel(0);
        (
            tx,
            Interrupt {
                presses: OnceLock::from(presses),
            },
        )
    }

    /// Starts counting now (installs the Ctrl-C handler).
    pub fn listen(&self) -> &watch::Receiver<u32> {
        self.presses.get_or_init(|| {
            let (tx, presses) = watch::channel(0);
            tokio::spawn(async move {
                while tokio::signal::ctrl_c().await.is_ok() {
                    tx.send_modify(|n| *n += 1);
                }
            });
            presses
        })
    }

    /// Presses so far.
    pub fn count(&self) -> u32 {
        *self.listen().borrow()
    }

    /// Waits for a press not seen yet and returns the count so far; never returns once
    /// the sender is gone.
    pub async fn pressed(&mut self) -> u32 {
        self.listen();
        let Some(presses) = self.presses.get_mut() else {
            return std::future::pending().await;
        };
        loop {
            if presses.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            let n = *presses.borrow_and_update();
            if n > 0 {
                return n;
            }
        }
    }
}

/// One host's part of a command.
#[derive(Clone, Debug, PartialEq)]
pub struct HostRun {
    pub host: String,
    pub job_id: String,
    pub outcome: JobOutcome,
}

impl HostRun {
    fn attach_hint(&self) -> String {
        format!("`hoist attach {} --host {}`", self.job_id, self.host)
    }

    /// `rolled back: <error>`, with how to follow a job that may still run.
    pub fn describe(&self) -> String {
        let (label, _) = self.outcome.label();
        let error = self.outcome.error().trim();
        let error = error.lines().next().unwrap_or(error);
        // Agents often say it already: "rolled back to R: check ..." needs no prefix.
        let mut text = if error.is_empty() {
            label.to_string()
        } else if error.starts_with(label) {
            error.to_string()
        } else {
            format!("{label}: {error}")
        };
        match self.outcome {
            JobOutcome::Lost(_) => text.push_str(&format!(
                "; the job may still be running: {} follows it",
                self.attach_hint()
            )),
            JobOutcome::Detached => text.push_str(&format!(
                ": the job keeps running on the agent; {} re-attaches",
                self.attach_hint()
            )),
            _ => {}
        }
        text
    }
}

/// What a command did on each host, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct RunReport {
    /// What ran, for messages: `deploy of carbex`, `job deploy-...`.
    pub title: String,
    pub runs: Vec<HostRun>,
}

impl RunReport {
    pub fn ok(&self) -> bool {
        !self.runs.is_empty() && self.runs.iter().all(|r| r.outcome.ok())
    }

    /// The one-line reason the command failed, naming the host and why; `None` when
    /// every host succeeded.
    pub fn failure(&self) -> Option<String> {
        if self.ok() {
            return None;
        }
        let not_started: Vec<&str> = self
            .runs
            .iter()
            .filter(|r| r.outcome == JobOutcome::NotStarted)
            .map(|r| r.host.as_str())
            .collect();
        let stopped = self
            .runs
            .iter()
            .find(|r| !r.outcome.ok() && r.outcome != JobOutcome::NotStarted);
        let mut text = match stopped {
            Some(run) if not_started.is_empty() => {
                let why = run.describe();
                match run.outcome {
                    JobOutcome::Detached => {
                        let why = why.strip_prefix("detached: ").unwrap_or(&why);
                        format!("{}: detached from {}: {why}", self.title, run.host)
                    }
                    _ => {
                        let why = why.strip_prefix("failed: ").unwrap_or(&why);
                        format!("{} failed on {}: {why}", self.title, run.host)
                    }
                }
            }
            Some(run) => format!("{} stopped at {}: {}", self.title, run.host, run.describe()),
            None if self.runs.is_empty() => format!("{}: no hosts selected", self.title),
            None => format!("{} interrupted", self.title),
        };
        if !not_started.is_empty() {
            text.push_str(&format!("; not started: {}", not_started.join(", ")));
        }
        Some(text)
    }

    /// HOST, RESULT, RELEASE, DURATION, JOB.
    pub fn summary_text(&self, colour: bool) -> String {
        let rows: Vec<Vec<Cell>> = self
            .runs
            .iter()
            .map(|run| {
                let (label, tone) = run.outcome.label();
                // A failed deploy's release was removed: only name releases that exist.
                let (release, took) = match &run.outcome {
                    JobOutcome::Finished(f) => (
                        if f.release.is_empty()
                            || !matches!(
                                JobResult::try_from(f.result),
                                Ok(JobResult::Succeeded | JobResult::RolledBack)
                            )
                        {
                            "-".to_string()
                        } else {
                            f.release.clone()
                        },
                        render::human_duration(f.duration_ms),
                    ),
                    _ => ("-".to_string(), "-".to_string()),
                };
                let job = if run.outcome == JobOutcome::NotStarted {
                    "-".to_string()
                } else {
                    run.job_id.clone()
                };
                vec![
                    Cell::from(run.host.clone()),
                    Cell::new(label, tone),
                    Cell::from(release),
                    Cell::from(took),
                    Cell::new(job, Tone::Dim),
                ]
            })
            .collect();
        table::render(
            &["HOST", "RESULT", "RELEASE", "DURATION", "JOB"],
            &rows,
            colour,
        )
    }

    /// `{"kind": "summary", "title", "ok", "hosts": [...]}`.
    pub fn summary_json(&self) -> Value {
        json!({
            "kind": "summary",
            "title": self.title,
            "ok": self.ok(),
            "hosts": self.runs.iter().map(|run| {
                let finished = match &run.outcome {
                    JobOutcome::Finished(f) => Some(f),
                    _ => None,
                };
                json!({
                    "host": run.host,
                    "job_id": run.job_id,
                    "result": run.outcome.key(),
                    "release": finished.map(|f| f.release.as_str()),
                    "previous_release": finished.map(|f| f.previous_release.as_str()),
                    "duration_ms": finished.map(|f| f.duration_ms),
                    "error": run.outcome.error(),
                })
            }).collect::<Vec<_>>(),
        })
    }

    /// The summary table (text) or the summary line (JSON).
    pub fn print_summary(&self, out: &mut Output<'_>) {
        if out.json {
            out.json_line(&self.summary_json());
        } else {
            let text = format!("\n{}", self.summary_text(out.colour));
            out.text(&text);
        }
    }
}

// === following jobs ===

/// What following jobs needs: credentials, the connect limit, where output goes and
/// the operator's interrupts.
pub struct Session<'a, 'o> {
    pub creds: &'a Credentials,
    /// Limit for connecting to an agent.
    pub timeout: Duration,
    pub out: &'a mut Output<'o>,
    pub interrupt: &'a mut Interrupt,
    /// Presses of Ctrl-C that detach: 2 for commands that change hosts (the first only
    /// stops further hosts), 1 for `hoist attach`.
    pub detach_after: u32,
}

/// The note when the operator detaches from a rollout whose jobs run on `hosts`.
pub fn detached_from(hosts: &[String]) -> String {
    format!(
        "detached: the jobs on {} keep running on the agents; `hoist attach JOB --host HOST` \
         follows one",
        hosts.join(", ")
    )
}

/// The note at the first Ctrl-C of a rollout: `running` is what still finishes.
pub fn interrupted_rollout(running: &str) -> String {
    format!(
        "interrupted: no further host will start; {running} finish first (Ctrl-C again to \
         detach)"
    )
}

/// The note at Ctrl-C during a bake (no job runs; `presses` so far).
pub fn interrupted_bake(presses: u32) -> String {
    let detach = if presses >= 2 {
        " (nothing runs: nothing to detach from)"
    } else {
        ""
    };
    format!("interrupted: the bake ends now and no further host will start{detach}")
}

impl Session<'_, '_> {
    /// The note for the `presses`-th Ctrl-C during `job_id`; `Err(Detached)` once the
    /// operator detached.
    fn interrupted(
        &mut self,
        host: &str,
        job_id: &str,
        more_hosts: bool,
        presses: u32,
    ) -> Result<(), JobOutcome> {
        let attach = format!("`hoist attach {job_id} --host {host}`");
        if presses >= self.detach_after {
            self.out.note(
                host,
                job_id,
                &format!("detached: {job_id} keeps running on {host}; {attach} re-attaches"),
            );
            return Err(JobOutcome::Detached);
        }
        let further = if more_hosts {
            "no further host will start; "
        } else {
            ""
        };
        self.out.note(
            host,
            job_id,
            &format!(
                "interrupted: {job_id} keeps running on {host} to its end; {further}\
                 Ctrl-C again to detach ({attach} re-attaches)"
            ),
        );
        Ok(())
    }

    /// Connects to `host`, starts `request` and follows the job to its end
    /// ([`follow::run_job`]); Ctrl-C notes or detaches meanwhile. A press while
    /// connecting means the job does not start.
    pub async fn run_one(
        &mut self,
        host: &Host,
        request: JobRequest,
        more_hosts: bool,
    ) -> JobOutcome {
        let job_id = request.job_id().to_string();
        let connected = Arc::new(AtomicBool::new(false));
        let presses = self.interrupt.listen().clone();
        let proceed = {
            let connected = connected.clone();
            move || {
                connected.store(true, Ordering::SeqCst);
                *presses.borrow() == 0
            }
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let send = move |update| {
            let _ = tx.send(update);
        };
        let job = follow::run_job(host, self.creds, self.timeout, request, proceed, &send);
        self.drive(host, &job_id, more_hosts, rx, Some(&connected), job)
            .await
    }

    /// Shows a job's events until its end. `first` is the answer to the call that
    /// started (or attached to) the job. A broken stream is re-attached; events seen
    /// already are skipped ([`follow::follow_job`]); Ctrl-C notes or detaches meanwhile.
    pub async fn follow(
        &mut self,
        host: &Host,
        job_id: &str,
        first: Result<Streaming<JobEvent>, Status>,
        more_hosts: bool,
    ) -> JobOutcome {
        let (tx, rx) = mpsc::unbounded_channel();
        let send = move |update| {
            let _ = tx.send(update);
        };
        let job = follow::follow_job(host, self.creds, self.timeout, job_id, first, &send);
        self.drive(host, job_id, more_hosts, rx, None, job).await
    }

    /// Shows `updates` while `job` runs, and the operator's Ctrl-C presses (ignored
    /// until `connected`, when given, is set: the job then does not start).
    async fn drive(
        &mut self,
        host: &Host,
        job_id: &str,
        more_hosts: bool,
        mut updates: mpsc::UnboundedReceiver<Update>,
        connected: Option<&AtomicBool>,
        job: impl Future<Output = JobOutcome>,
    ) -> JobOutcome {
        tokio::pin!(job);
        let outcome = loop {
            tokio::select! {
                biased;
                Some(update) = updates.recv() => self.show(&host.name, job_id, update),
                outcome = &mut job => break outcome,
                presses = self.interrupt.pressed() => {
                    if connected.is_some_and(|c| !c.load(Ordering::SeqCst)) {
                        continue;
                    }
                    while let Ok(update) = updates.try_recv() {
                        self.show(&host.name, job_id, update);
                    }
                    if let Err(outcome) = self.interrupted(&host.name, job_id, more_hosts, presses) {
                        return outcome;
                    }
                }
            }
        };
        while let Ok(update) = updates.try_recv() {
            self.show(&host.name, job_id, update);
        }
        outcome
    }

    fn show(&mut self, host: &str, job_id: &str, update: Update) {
        match update {
            Update::Event(event) => self.out.event(host, &event),
            Update::Note(note) => self.out.note(host, job_id, &note),
        }
    }

    /// Runs each `(host, request)` in order and follows it to its end; stops at the
    /// first host that does not succeed, or after the current host on Ctrl-C.
    pub async fn run_in_order(&mut self, title: &str, jobs: Vec<(&Host, JobRequest)>) -> RunReport {
        let total = jobs.len();
        let mut runs = Vec::with_capacity(total);
        let mut stop = false;
        for (i, (host, request)) in jobs.into_iter().enumerate() {
            let job_id = request.job_id().to_string();
            if stop || self.interrupt.count() > 0 {
                runs.push(HostRun {
                    host: host.name.clone(),
                    job_id,
                    outcome: JobOutcome::NotStarted,
                });
                continue;
            }
            if i > 0 {
                self.out.text("\n");
            }
            let outcome = self.run_one(host, request, i + 1 < total).await;
            let run = HostRun {
                host: host.name.clone(),
                job_id,
                outcome,
            };
            self.announce(&run);
            stop = !run.outcome.ok();
            runs.push(run);
        }
        RunReport {
            title: title.to_string(),
            runs,
        }
    }

    /// A line for outcomes that no job event announced (refused, unreachable, lost).
    fn announce(&mut self, run: &HostRun) {
        if matches!(
            run.outcome,
            JobOutcome::Finished(_) | JobOutcome::Detached | JobOutcome::NotStarted
        ) {
            return;
        }
        if self.out.json {
            self.out.json_line(&json!({
                "host": run.host,
                "job_id": run.job_id,
                "kind": "error",
                "result": run.outcome.key(),
                "error": run.outcome.error(),
            }));
        } else {
            let (label, tone) = run.outcome.label();
            let mut text = format!(
                "==> {}: {}",
                run.host,
                table::paint(label, tone, self.out.colour)
            );
            let error = run.outcome.error().trim();
            if !error.is_empty() {
                text.push_str(": ");
                text.push_str(&crate::output::escape::visible(error));
            }
            if let JobOutcome::Lost(_) = run.outcome {
                text.push_str(&format!(
                    "\n    the job may still be running: {} follows it",
                    run.attach_hint()
                ));
            }
            text.push('\n');
            self.out.text(&text);
        }
    }

    /// `hoist attach JOB`: asks `hosts` which one knows the job and follows it there.
    pub async fn attach(
        &mut self,
        hosts: &[&Host],
        job_id: &str,
    ) -> Result<RunReport, AttachError> {
        let request = AttachRequest {
            job_id: job_id.to_string(),
        };
        let answers = fanout::ask_all(hosts, self.creds, self.timeout, |mut client| {
            let request = request.clone();
            async move { client.attach(request).await.map(|r| r.into_inner()) }
        })
        .await;
        let mut found = Vec::new();
        let mut problems = Vec::new();
        for answer in answers {
            match answer.result {
                Ok(stream) => found.push((answer.host, stream)),
                Err(err) if err.is_not_found() => {}
                Err(err) => problems.push(format!("{}: {err}", answer.host)),
            }
        }
        let mut found = found.into_iter();
        let Some((name, stream)) = found.next() else {
            let asked: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
            let why = if problems.is_empty() {
                format!(
                    "no selected host knows job {job_id} (asked: {})",
                    asked.join(", ")
                )
            } else {
                // Say what failed: a host that could not answer may well have the job.
                format!(
                    "cannot attach to job {job_id}: {} (asked: {})",
                    problems.join("; "),
                    asked.join(", ")
                )
            };
            return Err(AttachError(why));
        };
        let others: Vec<String> = found.map(|(name, _)| name).collect();
        if !others.is_empty() {
            self.out.note(
                &name,
                job_id,
                &format!(
                    "{job_id} is also known on {}; --host NAME picks one",
                    others.join(", ")
                ),
            );
        }
        let host = hosts
            .iter()
            .find(|h| h.name == name)
            .copied()
            .ok_or_else(|| AttachError(format!("host {name} vanished")))?;
        let outcome = self.follow(host, job_id, Ok(stream), false).await;
        let run = HostRun {
            host: name,
            job_id: job_id.to_string(),
            outcome,
        };
        self.announce(&run);
        Ok(RunReport {
            title: format!("job {job_id}"),
            runs: vec![run],
        })
    }
}

#[cfg(test)]
mod tests;
