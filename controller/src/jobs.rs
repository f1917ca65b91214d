//! Jobs on agents: their ids, starting one, following its events to the end, and
//! running one job per selected host, one host after another.
//!
//! Job ids are `<kind>-<UTC yyyymmddThhmmssZ>-<6 hex>-<host>`, e.g.
//! `deploy-20261122T101500Z-a1b2c3-web-1`: one id per host. The shared prefix groups
//! the hosts of one command; the suffix makes `hoist attach JOB` and
//! `hoist log APP --job JOB` name exactly one job, and a retried call to one host
//! (same id: the agent returns the existing job) can never be mistaken for another
//! host's job.
//!
//! Following a job survives a dropped connection: the controller re-attaches
//! ([`REATTACH_ATTEMPTS`] times, backing off) and skips the events it already showed,
//! because the agent keeps running the job whatever happens to the controller.
//!
//! Ctrl-C ([`Interrupt`]): the first press lets the current host's job run to its end
//! and starts no further host; the second detaches at once (the job keeps running on
//! the agent, and `hoist attach JOB --host HOST` re-attaches).

use std::{
    future::Future,
    io::Read as _,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures_util::StreamExt as _;
use hoist_proto::v1::{
    AttachRequest, DeployRequest, EnvSetRequest, EnvUnsetRequest, JobEvent, JobFinished, JobResult,
    RestartRequest, RollbackRequest, agent_client::AgentClient, job_event::Kind,
};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tonic::{Code, Status, codec::Streaming, transport::Channel};

use crate::{
    Failure,
    client::{self, Credentials},
    fanout,
    fleet::Host,
    render::{self, Output},
    table::{self, Cell, Tone},
};

/// How long an agent may take to accept a job (answer Deploy, Rollback, ...). Agents
/// may check out the ref before answering, so this is generous; connecting is bounded
/// by the command's `--timeout`.
pub const JOB_ACCEPT_TIMEOUT: Duration = Duration::from_secs(600);

/// Re-attach attempts after the stream of a running job breaks.
pub const REATTACH_ATTEMPTS: u32 = 3;

// === job ids ===

/// `<kind>-<yyyymmddThhmmssZ>-<6 hex>` for the UTC second `unix_seconds`.
pub fn format_job_id(kind: &str, unix_seconds: i64, random: [u8; 3]) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix_seconds)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{kind}-{:04}{:02}{:02}T{:02}{:02}{:02}Z-{:02x}{:02x}{:02x}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        random[0],
        random[1],
        random[2]
    )
}

/// A fresh id for a job of `kind` (deploy, rollback, restart, env, lock) made now.
pub fn new_job_id(kind: &str) -> std::io::Result<String> {
    let mut random = [0u8; 3];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(format_job_id(
        kind,
        i64::try_from(now).unwrap_or(i64::MAX),
        random,
    ))
}

/// The id of the job on `host` for a command whose id is `base`.
pub fn host_job_id(base: &str, host: &str) -> String {
    format!("{base}-{host}")
}

// === requests ===

/// A request that starts a job on an agent.
#[derive(Clone, Debug)]
pub enum JobRequest {
    Deploy(DeployRequest),
    Rollback(RollbackRequest),
    Restart(RestartRequest),
    EnvSet(EnvSetRequest),
    EnvUnset(EnvUnsetRequest),
}

impl JobRequest {
    pub fn job_id(&self) -> &str {
        match self {
            JobRequest::Deploy(r) => &r.deploy_id,
            JobRequest::Rollback(r) => &r.job_id,
            JobRequest::Restart(r) => &r.job_id,
            JobRequest::EnvSet(r) => &r.job_id,
            JobRequest::EnvUnset(r) => &r.job_id,
        }
    }

    /// Sends the request; the job's events follow on the returned stream.
    pub async fn start(
        self,
        client: &mut AgentClient<Channel>,
    ) -> Result<Streaming<JobEvent>, Status> {
        let response = match self {
            JobRequest::Deploy(r) => client.deploy(r).await,
            JobRequest::Rollback(r) => client.rollback(r).await,
            JobRequest::Restart(r) => client.restart(r).await,
            JobRequest::EnvSet(r) => client.env_set(r).await,
            JobRequest::EnvUnset(r) => client.env_unset(r).await,
        }?;
        Ok(response.into_inner())
    }
}

// === interrupts ===

/// Counts Ctrl-C presses (or presses simulated by a test).
pub struct Interrupt {
    presses: watch::Receiver<u32>,
}

impl Interrupt {
    /// Presses of Ctrl-C from now on. Replaces the default SIGINT action (exit) for the
    /// rest of the process, so call it only for commands that follow jobs.
    pub fn ctrl_c() -> Interrupt {
        let (tx, presses) = watch::channel(0);
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                tx.send_modify(|n| *n += 1);
            }
        });
        Interrupt { presses }
    }

    /// Presses sent through the returned sender: `send_modify(|n| *n += 1)` is one.
    pub fn manual() -> (watch::Sender<u32>, Interrupt) {
        let (tx, presses) = watch::channel(0);
        (tx, Interrupt { presses })
    }

    /// Presses so far.
    pub fn count(&self) -> u32 {
        *self.presses.borrow()
    }

    /// Waits for a press not seen yet and returns the count so far; never returns once
    /// the sender is gone.
    pub async fn pressed(&mut self) -> u32 {
        loop {
            if self.presses.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            let n = *self.presses.borrow_and_update();
            if n > 0 {
                return n;
            }
        }
    }
}

// === outcomes ===

/// How one host's job ended, as far as the controller knows.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The job's last event.
    Finished(JobFinished),
    /// The agent refused the request before changing anything (unknown app, bad ref,
    /// lock held, missing env keys, role).
    Refused(String),
    /// No connection: nothing started.
    Unreachable(String),
    /// The stream broke and re-attaching failed; the job may still be running.
    Lost(String),
    /// The operator detached; the job keeps running on the agent.
    Detached,
    /// Not started: an earlier host failed, or the operator interrupted.
    NotStarted,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        matches!(self, Outcome::Finished(f) if f.result == JobResult::Succeeded as i32)
    }

    /// The result as shown in tables.
    pub fn label(&self) -> (&'static str, Tone) {
        match self {
            Outcome::Finished(f) => (render::result_name(f.result), render::result_tone(f.result)),
            Outcome::Refused(_) => ("refused", Tone::Bad),
            Outcome::Unreachable(_) => ("unreachable", Tone::Bad),
            Outcome::Lost(_) => ("lost", Tone::Bad),
            Outcome::Detached => ("detached", Tone::Warn),
            Outcome::NotStarted => ("not started", Tone::Dim),
        }
    }

    /// The result in JSON: one snake-case word.
    pub fn key(&self) -> &'static str {
        match self {
            Outcome::Finished(f) => render::result_key(f.result),
            Outcome::NotStarted => "not_started",
            other => other.label().0,
        }
    }

    /// Why, when there is a reason to give.
    pub fn error(&self) -> &str {
        match self {
            Outcome::Finished(f) => &f.error,
            Outcome::Refused(e) | Outcome::Unreachable(e) | Outcome::Lost(e) => e,
            Outcome::Detached | Outcome::NotStarted => "",
        }
    }
}

/// One host's part of a command.
#[derive(Clone, Debug, PartialEq)]
pub struct HostRun {
    pub host: String,
    pub job_id: String,
    pub outcome: Outcome,
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
            Outcome::Lost(_) => text.push_str(&format!(
                "; the job may still be running: {} follows it",
                self.attach_hint()
            )),
            Outcome::Detached => text.push_str(&format!(
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
pub struct Report {
    /// What ran, for messages: `deploy of carbex`, `job deploy-...`.
    pub title: String,
    pub runs: Vec<HostRun>,
}

impl Report {
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
            .filter(|r| r.outcome == Outcome::NotStarted)
            .map(|r| r.host.as_str())
            .collect();
        let stopped = self
            .runs
            .iter()
            .find(|r| !r.outcome.ok() && r.outcome != Outcome::NotStarted);
        let mut text = match stopped {
            Some(run) if not_started.is_empty() => {
                let why = run.describe();
                match run.outcome {
                    Outcome::Detached => {
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

    /// `Err` with [`Report::failure`] (exit code 1) unless every host succeeded.
    pub fn check(&self) -> Result<(), Failure> {
        match self.failure() {
            Some(why) => Err(Failure::failed(anyhow::anyhow!(why))),
            None => Ok(()),
        }
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
                    Outcome::Finished(f) => (
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
                let job = if run.outcome == Outcome::NotStarted {
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
                    Outcome::Finished(f) => Some(f),
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

/// Errors that may mean the connection, not the agent's decision: worth re-attaching.
fn is_transport(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
    )
}

/// Connects to `host` within `timeout` (the job itself may take longer to answer).
pub async fn connect(
    host: &Host,
    creds: &Credentials,
    timeout: Duration,
) -> Result<AgentClient<Channel>, String> {
    let connect = client::connect(&host.address, creds, JOB_ACCEPT_TIMEOUT);
    match tokio::time::timeout(timeout, connect).await {
        Ok(result) => result,
        Err(_) => Err(format!("no connection within {timeout:?}")),
    }
}

/// What following a job produces besides its outcome: the job's events, and the
/// controller's remarks about it (connection lost, re-attaching).
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    Event(JobEvent),
    Note(String),
}

/// Follows a job to its end, sending its events and remarks to `updates`. `first` is
/// the answer to the call that started (or attached to) the job. A broken stream is
/// re-attached ([`REATTACH_ATTEMPTS`] times, backing off 1 s, 2 s, 4 s, ...) and events
/// seen already are skipped. Dropping the future stops following (the job keeps
/// running on the agent): callers race it against the operator's interrupts.
pub async fn follow_job(
    host: &Host,
    creds: &Credentials,
    timeout: Duration,
    job_id: &str,
    first: Result<Streaming<JobEvent>, Status>,
    updates: &(dyn Fn(Update) + Send + Sync),
) -> Outcome {
    let mut last_seq: Option<u64> = None;
    let mut attempts = 0;
    let (mut stream, mut lost) = match first {
        Ok(stream) => (Some(stream), String::new()),
        Err(status) if !is_transport(&status) => {
            return Outcome::Refused(client::status_error(&status));
        }
        Err(status) => (None, client::status_error(&status)),
    };
    loop {
        if let Some(current) = stream.as_mut() {
            match current.next().await {
                Some(Ok(event)) => {
                    if last_seq.is_some_and(|seen| event.seq <= seen) {
                        continue;
                    }
                    last_seq = Some(event.seq);
                    attempts = 0;
                    let finished = match &event.kind {
                        Some(Kind::Finished(finished)) => Some(finished.clone()),
                        _ => None,
                    };
                    updates(Update::Event(event));
                    if let Some(finished) = finished {
                        return Outcome::Finished(finished);
                    }
                    continue;
                }
                Some(Err(status)) if last_seq.is_none() && !is_transport(&status) => {
                    return Outcome::Refused(client::status_error(&status));
                }
                Some(Err(status)) => lost = client::status_error(&status),
                None => lost = "the agent closed the stream before the job finished".into(),
            }
            stream = None;
        }
        attempts += 1;
        match recover(host, creds, timeout, job_id, &lost, attempts, updates).await {
            Ok(next) => stream = Some(next),
            Err(Outcome::Lost(why)) if attempts < REATTACH_ATTEMPTS => lost = why,
            Err(Outcome::Refused(why)) if last_seq.is_some() => return Outcome::Lost(why),
            Err(outcome) => return outcome,
        }
    }
}

/// One re-attach attempt after the stream broke (`lost` says how): waits (1 s, 2 s,
/// 4 s, ...), reconnects and calls Attach. `Err(Lost)` to try again, `Err(Refused)`
/// when the agent does not know the job (so it never started).
async fn recover(
    host: &Host,
    creds: &Credentials,
    timeout: Duration,
    job_id: &str,
    lost: &str,
    attempt: u32,
    updates: &(dyn Fn(Update) + Send + Sync),
) -> Result<Streaming<JobEvent>, Outcome> {
    updates(Update::Note(format!(
        "connection lost ({lost}); re-attaching to {job_id} ({attempt}/{REATTACH_ATTEMPTS})"
    )));
    tokio::time::sleep(Duration::from_secs(1 << attempt.saturating_sub(1).min(5))).await;
    let mut agent = connect(host, creds, timeout).await.map_err(Outcome::Lost)?;
    let request = AttachRequest {
        job_id: job_id.to_string(),
    };
    match agent.attach(request).await {
        Ok(response) => Ok(response.into_inner()),
        Err(status) if status.code() == Code::NotFound => Err(Outcome::Refused(format!(
            "{lost}; the agent does not know the job, so it did not start ({})",
            status.message()
        ))),
        Err(status) => Err(Outcome::Lost(client::status_error(&status))),
    }
}

impl Session<'_, '_> {
    /// Runs `future` while watching for Ctrl-C; `Err` once the operator detached.
    async fn race<F: Future>(
        &mut self,
        host: &str,
        job_id: &str,
        more_hosts: bool,
        future: F,
    ) -> Result<F::Output, Outcome> {
        tokio::pin!(future);
        loop {
            tokio::select! {
                output = &mut future => return Ok(output),
                presses = self.interrupt.pressed() => {
                    self.interrupted(host, job_id, more_hosts, presses)?;
                }
            }
        }
    }

    /// The note for the `presses`-th Ctrl-C during `job_id`; `Err(Detached)` once the
    /// operator detached.
    fn interrupted(
        &mut self,
        host: &str,
        job_id: &str,
        more_hosts: bool,
        presses: u32,
    ) -> Result<(), Outcome> {
        let attach = format!("`hoist attach {job_id} --host {host}`");
        if presses >= self.detach_after {
            self.out.note(
                host,
                job_id,
                &format!("detached: {job_id} keeps running on {host}; {attach} re-attaches"),
            );
            return Err(Outcome::Detached);
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

    /// Connects to `host`, starts `request` and follows the job to its end.
    pub async fn run_one(&mut self, host: &Host, request: JobRequest, more_hosts: bool) -> Outcome {
        let job_id = request.job_id().to_string();
        let mut client = match connect(host, self.creds, self.timeout).await {
            Ok(client) => client,
            Err(why) => return Outcome::Unreachable(why),
        };
        if self.interrupt.count() > 0 {
            return Outcome::NotStarted;
        }
        let started = match self
            .race(&host.name, &job_id, more_hosts, request.start(&mut client))
            .await
        {
            Ok(started) => started,
            Err(outcome) => return outcome,
        };
        self.follow(host, &job_id, started, more_hosts).await
    }

    /// Shows a job's events until its end. `first` is the answer to the call that
    /// started (or attached to) the job. A broken stream is re-attached; events seen
    /// already are skipped ([`follow_job`]); Ctrl-C notes or detaches meanwhile.
    pub async fn follow(
        &mut self,
        host: &Host,
        job_id: &str,
        first: Result<Streaming<JobEvent>, Status>,
        more_hosts: bool,
    ) -> Outcome {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let send = move |update| {
            let _ = tx.send(update);
        };
        let job = follow_job(host, self.creds, self.timeout, job_id, first, &send);
        tokio::pin!(job);
        let outcome = loop {
            tokio::select! {
                biased;
                Some(update) = rx.recv() => self.show(&host.name, job_id, update),
                outcome = &mut job => break outcome,
                presses = self.interrupt.pressed() => {
                    while let Ok(update) = rx.try_recv() {
                        self.show(&host.name, job_id, update);
                    }
                    if let Err(outcome) = self.interrupted(&host.name, job_id, more_hosts, presses) {
                        return outcome;
                    }
                }
            }
        };
        while let Ok(update) = rx.try_recv() {
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
    pub async fn run_in_order(&mut self, title: &str, jobs: Vec<(&Host, JobRequest)>) -> Report {
        let total = jobs.len();
        let mut runs = Vec::with_capacity(total);
        let mut stop = false;
        for (i, (host, request)) in jobs.into_iter().enumerate() {
            let job_id = request.job_id().to_string();
            if stop || self.interrupt.count() > 0 {
                runs.push(HostRun {
                    host: host.name.clone(),
                    job_id,
                    outcome: Outcome::NotStarted,
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
        Report {
            title: title.to_string(),
            runs,
        }
    }

    /// A line for outcomes that no job event announced (refused, unreachable, lost).
    fn announce(&mut self, run: &HostRun) {
        if matches!(
            run.outcome,
            Outcome::Finished(_) | Outcome::Detached | Outcome::NotStarted
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
                text.push_str(error);
            }
            if let Outcome::Lost(_) = run.outcome {
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
    pub async fn attach(&mut self, hosts: &[&Host], job_id: &str) -> Result<Report, Failure> {
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
            let mut why = format!(
                "no selected host knows job {job_id} (asked: {})",
                asked.join(", ")
            );
            if !problems.is_empty() {
                why.push_str(&format!("; no answer from {}", problems.join("; ")));
            }
            return Err(Failure::failed(anyhow::anyhow!(why)));
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
            .ok_or_else(|| Failure::failed(anyhow::anyhow!("host {name} vanished")))?;
        let outcome = self.follow(host, job_id, Ok(stream), false).await;
        let run = HostRun {
            host: name,
            job_id: job_id.to_string(),
            outcome,
        };
        self.announce(&run);
        Ok(Report {
            title: format!("job {job_id}"),
            runs: vec![run],
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{
        path::Path,
        pin::Pin,
        sync::{Arc, Mutex},
    };

    use hoist_proto::v1::{
        EnvListRequest, EnvListResponse, GetInfoRequest, GetInfoResponse, JobKind, JobLogRequest,
        JobLogResponse, JobStarted, ListReleasesRequest, ListReleasesResponse, LockRequest,
        LockResponse, RecordRefusalRequest, RecordRefusalResponse, StatusRequest, StatusResponse,
        StepFinished, StepStarted, UnlockRequest, UnlockResponse, WatchStatusRequest,
        agent_server::{Agent, AgentServer},
    };
    use tokio::sync::Semaphore;
    use tokio_stream::{Stream, wrappers::ReceiverStream};
    use tonic::{
        Request, Response,
        transport::{Certificate, Identity, Server, ServerTlsConfig},
    };

    use super::*;
    use crate::{ca, fleet::FleetTls, render::tests::T0};

    #[test]
    fn job_ids() {
        assert_eq!(
            format_job_id("deploy", T0, [0xa1, 0xb2, 0xc3]),
            "deploy-20261122T101500Z-a1b2c3"
        );
        assert_eq!(
            host_job_id("deploy-20261122T101500Z-a1b2c3", "web-1"),
            "deploy-20261122T101500Z-a1b2c3-web-1"
        );
        let id = new_job_id("rollback").unwrap();
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(parts.len(), 3, "{id}");
        assert_eq!(parts[0], "rollback");
        assert_eq!(parts[1].len(), 16, "{id}");
        assert!(
            parts[1].starts_with("20") && parts[1].ends_with('Z'),
            "{id}"
        );
        assert_eq!(parts[1].as_bytes()[8], b'T', "{id}");
        assert!(
            parts[2].len() == 6 && parts[2].chars().all(|c| c.is_ascii_hexdigit()),
            "{id}"
        );
        // What the agent accepts as a job id: letters, digits, '-', '_', '.'; at most 128.
        let full = host_job_id(&id, "web-1_eu");
        assert!(full.len() <= 128);
        assert!(
            full.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        );
    }

    fn finished(result: JobResult, error: &str) -> JobFinished {
        JobFinished {
            result: result as i32,
            release: if result == JobResult::Succeeded {
                "20261122T101500Z-abc1234".into()
            } else {
                String::new()
            },
            previous_release: "20261121T090000Z-0f0f0f0".into(),
            duration_ms: 12_300,
            error: error.into(),
        }
    }

    fn run(host: &str, outcome: Outcome) -> HostRun {
        HostRun {
            host: host.into(),
            job_id: format!("deploy-x-{host}"),
            outcome,
        }
    }

    #[test]
    fn reports_name_the_host_and_why() {
        let report = Report {
            title: "deploy of carbex main".into(),
            runs: vec![
                run(
                    "web-1",
                    Outcome::Finished(finished(JobResult::Succeeded, "")),
                ),
                run(
                    "web-2",
                    Outcome::Finished(finished(
                        JobResult::RolledBack,
                        "check http failed: 500\nbody: down",
                    )),
                ),
                run("web-3", Outcome::NotStarted),
            ],
        };
        assert!(!report.ok());
        assert_eq!(
            report.failure().unwrap(),
            "deploy of carbex main stopped at web-2: rolled back: check http failed: 500; not started: web-3"
        );
        assert_eq!(report.check().unwrap_err().code, crate::EXIT_FAILED);
        assert_eq!(
            report.summary_text(false),
            "HOST   RESULT       RELEASE                   DURATION  JOB\n\
             web-1  succeeded    20261122T101500Z-abc1234  12.3s     deploy-x-web-1\n\
             web-2  rolled back  -                         12.3s     deploy-x-web-2\n\
             web-3  not started  -                         -         -\n"
        );
        let json = report.summary_json();
        assert_eq!(json["kind"], "summary");
        assert_eq!(json["ok"], false);
        assert_eq!(json["hosts"][1]["result"], "rolled_back");
        assert_eq!(json["hosts"][2]["result"], "not_started");
        assert_eq!(json["hosts"][2]["release"], Value::Null);

        let lost = Report {
            title: "restart of carbex".into(),
            runs: vec![run("web-1", Outcome::Lost("Unavailable: reset".into()))],
        };
        assert_eq!(
            lost.failure().unwrap(),
            "restart of carbex failed on web-1: lost: Unavailable: reset; the job may still be \
             running: `hoist attach deploy-x-web-1 --host web-1` follows it"
        );
        let detached = Report {
            title: "deploy of slow main".into(),
            runs: vec![run("web-1", Outcome::Detached)],
        };
        assert_eq!(
            detached.failure().unwrap(),
            "deploy of slow main: detached from web-1: the job keeps running on the agent; \
             `hoist attach deploy-x-web-1 --host web-1` re-attaches"
        );
        let ok = Report {
            title: "x".into(),
            runs: vec![run(
                "web-1",
                Outcome::Finished(finished(JobResult::Succeeded, "")),
            )],
        };
        assert!(ok.ok() && ok.failure().is_none() && ok.check().is_ok());
        let interrupted = Report {
            title: "deploy of carbex main".into(),
            runs: vec![
                run(
                    "web-1",
                    Outcome::Finished(finished(JobResult::Succeeded, "")),
                ),
                run("web-2", Outcome::NotStarted),
            ],
        };
        assert_eq!(
            interrupted.failure().unwrap(),
            "deploy of carbex main interrupted; not started: web-2"
        );
    }

    // === a fake agent ===

    type EventStream = Pin<Box<dyn Stream<Item = Result<JobEvent, Status>> + Send>>;

    /// What the fake answers to Deploy.
    #[derive(Clone)]
    enum Script {
        Refuse(Code, &'static str),
        /// These events, then wait for a permit, then the rest; then the stream ends.
        Events {
            first: Vec<JobEvent>,
            gate: Option<Arc<Semaphore>>,
            rest: Vec<JobEvent>,
        },
    }

    struct Fake {
        name: String,
        deploy: Script,
        /// Attach answers with these events; NotFound when empty.
        attach: Vec<JobEvent>,
        calls: Arc<Mutex<Vec<String>>>,
    }

    fn event(job_id: &str, seq: u64, kind: Kind) -> JobEvent {
        JobEvent {
            job_id: job_id.into(),
            seq,
            at: crate::render::tests::at(T0, seq as i32),
            kind: Some(kind),
        }
    }

    /// started, build started, build finished, finished with `result`.
    fn job(job_id: &str, result: JobResult) -> Vec<JobEvent> {
        vec![
            event(
                job_id,
                0,
                Kind::Started(JobStarted {
                    kind: JobKind::Deploy as i32,
                    app: "carbex".into(),
                    r#ref: "main".into(),
                    commit: "abc1234def".into(),
                    who: "op".into(),
                    ..Default::default()
                }),
            ),
            event(
                job_id,
                1,
                Kind::StepStarted(StepStarted {
                    step: "build".into(),
                    description: "make".into(),
                }),
            ),
            event(
                job_id,
                2,
                Kind::StepFinished(StepFinished {
                    step: "build".into(),
                    ok: true,
                    duration_ms: 100,
                    ..Default::default()
                }),
            ),
            event(
                job_id,
                3,
                Kind::Finished(finished(
                    result,
                    if result == JobResult::Succeeded {
                        ""
                    } else {
                        "check http failed"
                    },
                )),
            ),
        ]
    }

    fn stream_of(
        first: Vec<JobEvent>,
        gate: Option<Arc<Semaphore>>,
        rest: Vec<JobEvent>,
    ) -> EventStream {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            for e in first {
                let _ = tx.send(Ok(e)).await;
            }
            if let Some(gate) = gate {
                let _ = gate.acquire().await.map(|p| p.forget());
            }
            for e in rest {
                let _ = tx.send(Ok(e)).await;
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }

    fn not_in_the_fake<T>() -> Result<T, Status> {
        Err(Status::unimplemented("not in the fake"))
    }

    #[tonic::async_trait]
    impl Agent for Fake {
        type WatchStatusStream = Pin<Box<dyn Stream<Item = Result<StatusResponse, Status>> + Send>>;
        type DeployStream = EventStream;
        type RollbackStream = EventStream;
        type RestartStream = EventStream;
        type AttachStream = EventStream;
        type EnvSetStream = EventStream;
        type EnvUnsetStream = EventStream;

        async fn get_info(
            &self,
            _: Request<GetInfoRequest>,
        ) -> Result<Response<GetInfoResponse>, Status> {
            not_in_the_fake()
        }
        async fn status(
            &self,
            _: Request<StatusRequest>,
        ) -> Result<Response<StatusResponse>, Status> {
            not_in_the_fake()
        }
        async fn watch_status(
            &self,
            _: Request<WatchStatusRequest>,
        ) -> Result<Response<Self::WatchStatusStream>, Status> {
            not_in_the_fake()
        }
        async fn deploy(
            &self,
            request: Request<DeployRequest>,
        ) -> Result<Response<EventStream>, Status> {
            let r = request.into_inner();
            self.calls.lock().unwrap().push(format!(
                "{} deploy {} migrate={}",
                self.name, r.deploy_id, r.migrate
            ));
            match self.deploy.clone() {
                Script::Refuse(code, message) => Err(Status::new(code, message)),
                Script::Events { first, gate, rest } => {
                    let fix = |events: Vec<JobEvent>| {
                        events
                            .into_iter()
                            .map(|mut e| {
                                e.job_id = r.deploy_id.clone();
                                e
                            })
                            .collect()
                    };
                    Ok(Response::new(stream_of(fix(first), gate, fix(rest))))
                }
            }
        }
        async fn rollback(
            &self,
            _: Request<RollbackRequest>,
        ) -> Result<Response<EventStream>, Status> {
            not_in_the_fake()
        }
        async fn restart(
            &self,
            _: Request<RestartRequest>,
        ) -> Result<Response<EventStream>, Status> {
            not_in_the_fake()
        }
        async fn attach(
            &self,
            request: Request<AttachRequest>,
        ) -> Result<Response<EventStream>, Status> {
            let id = request.into_inner().job_id;
            self.calls
                .lock()
                .unwrap()
                .push(format!("{} attach {id}", self.name));
            if self.attach.is_empty() {
                return Err(Status::not_found(format!("no job {id}")));
            }
            Ok(Response::new(stream_of(self.attach.clone(), None, vec![])))
        }
        async fn job_log(
            &self,
            _: Request<JobLogRequest>,
        ) -> Result<Response<JobLogResponse>, Status> {
            not_in_the_fake()
        }
        async fn list_releases(
            &self,
            _: Request<ListReleasesRequest>,
        ) -> Result<Response<ListReleasesResponse>, Status> {
            not_in_the_fake()
        }
        async fn lock(&self, _: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
            not_in_the_fake()
        }
        async fn unlock(
            &self,
            _: Request<UnlockRequest>,
        ) -> Result<Response<UnlockResponse>, Status> {
            not_in_the_fake()
        }
        async fn env_list(
            &self,
            _: Request<EnvListRequest>,
        ) -> Result<Response<EnvListResponse>, Status> {
            not_in_the_fake()
        }
        async fn env_set(
            &self,
            _: Request<EnvSetRequest>,
        ) -> Result<Response<EventStream>, Status> {
            not_in_the_fake()
        }
        async fn env_unset(
            &self,
            _: Request<EnvUnsetRequest>,
        ) -> Result<Response<EventStream>, Status> {
            not_in_the_fake()
        }
        async fn record_refusal(
            &self,
            _: Request<RecordRefusalRequest>,
        ) -> Result<Response<RecordRefusalResponse>, Status> {
            not_in_the_fake()
        }
    }

    /// Certificates for the fakes (`agent`, SAN 127.0.0.1) and the operator (`op`).
    struct Pki {
        dir: tempfile::TempDir,
        creds: Credentials,
    }

    fn pki() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        ca::init(dir.path(), false).unwrap();
        ca::issue_agent(dir.path(), "agent", &["127.0.0.1".into()], 1, false).unwrap();
        ca::issue_user(dir.path(), "op", ca::Role::Deployer, 1, false).unwrap();
        let p = |f: &str| dir.path().join(f);
        let creds = Credentials::load(&FleetTls {
            ca: p("ca.pem"),
            cert: p("op.pem"),
            key: p("op.key"),
        })
        .unwrap();
        Pki { dir, creds }
    }

    /// Serves `fake` on a fresh loopback port; the host is named after the fake.
    async fn serve(dir: &Path, fake: Fake) -> Host {
        let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(read("agent.pem"), read("agent.key")))
            .client_ca_root(Certificate::from_pem(read("ca.pem")));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let name = fake.name.clone();
        let server = Server::builder()
            .tls_config(tls)
            .unwrap()
            .add_service(AgentServer::new(fake))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        Host {
            name,
            address,
            groups: vec![],
            metrics: None,
        }
    }

    fn fake(name: &str, deploy: Script, calls: &Arc<Mutex<Vec<String>>>) -> Fake {
        Fake {
            name: name.into(),
            deploy,
            attach: vec![],
            calls: calls.clone(),
        }
    }

    fn events(result: JobResult) -> Script {
        Script::Events {
            first: job("x", result),
            gate: None,
            rest: vec![],
        }
    }

    fn deploy_options() -> crate::deploy::DeployOptions {
        crate::deploy::DeployOptions {
            app: "carbex".into(),
            git_ref: "main".into(),
            migrate_on: crate::fleet::MigrateOn::First,
            allow_missing_env: false,
            force: false,
            reason: None,
        }
    }

    /// Runs a deploy of carbex main to `hosts`, with its text output.
    async fn deploy_to(pki: &Pki, hosts: &[&Host], interrupt: &mut Interrupt) -> (Report, String) {
        let mut buf = Vec::new();
        let mut out = Output::new(&mut buf, false, false);
        let mut session = Session {
            creds: &pki.creds,
            timeout: Duration::from_secs(5),
            out: &mut out,
            interrupt,
            detach_after: 2,
        };
        let options = deploy_options();
        let report = session
            .run_in_order(
                "deploy of carbex main",
                options.requests(hosts, "deploy-20261122T101500Z-a1b2c3"),
            )
            .await;
        (report, String::from_utf8(buf).unwrap())
    }

    #[tokio::test]
    async fn stops_at_the_first_host_that_fails() {
        let pki = pki();
        let calls = Arc::default();
        let web1 = serve(
            pki.dir.path(),
            fake("web-1", events(JobResult::Succeeded), &calls),
        )
        .await;
        let web2 = serve(
            pki.dir.path(),
            fake("web-2", events(JobResult::RolledBack), &calls),
        )
        .await;
        let web3 = serve(
            pki.dir.path(),
            fake("web-3", events(JobResult::Succeeded), &calls),
        )
        .await;
        let (report, text) =
            deploy_to(&pki, &[&web1, &web2, &web3], &mut Interrupt::manual().1).await;

        let outcomes: Vec<&str> = report.runs.iter().map(|r| r.outcome.key()).collect();
        assert_eq!(outcomes, ["succeeded", "rolled_back", "not_started"]);
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert!(
            calls[0].starts_with("web-1 deploy deploy-")
                && calls[0].ends_with("-web-1 migrate=true")
        );
        assert!(
            calls[1].starts_with("web-2 deploy deploy-")
                && calls[1].ends_with("-web-2 migrate=false")
        );
        assert!(text.starts_with("==> web-1: deploy carbex main (abc1234) as op\n  ▶ build  make\n  ✓ build  0.1s\n==> web-1: succeeded: release 20261122T101500Z-abc1234"), "{text}");
        assert!(text.contains("\n\n==> web-2: deploy carbex main"), "{text}");
        assert!(
            text.contains("==> web-2: rolled back after 12.3s"),
            "{text}"
        );
        assert!(!text.contains("==> web-3"), "{text}");
        let why = report.failure().unwrap();
        assert!(
            why.starts_with(
                "deploy of carbex main stopped at web-2: rolled back: check http failed"
            ) && why.ends_with("; not started: web-3"),
            "{why}"
        );
    }

    #[tokio::test]
    async fn refused_and_unreachable_hosts_stop_the_deploy() {
        let pki = pki();
        let calls = Arc::default();
        let held = Script::Refuse(
            Code::FailedPrecondition,
            "carbex is locked by dana since 2026-11-22 10:00:00 UTC",
        );
        let web1 = serve(pki.dir.path(), fake("web-1", held, &calls)).await;
        let (report, text) = deploy_to(&pki, &[&web1], &mut Interrupt::manual().1).await;
        assert_eq!(
            report.runs[0].outcome,
            Outcome::Refused(
                "FailedPrecondition: carbex is locked by dana since 2026-11-22 10:00:00 UTC".into()
            )
        );
        assert_eq!(
            text,
            "==> web-1: refused: FailedPrecondition: carbex is locked by dana since 2026-11-22 10:00:00 UTC\n"
        );

        // A port nobody listens on.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = closed.local_addr().unwrap().to_string();
        drop(closed);
        let gone = Host {
            name: "web-9".into(),
            address,
            groups: vec![],
            metrics: None,
        };
        let (report, text) = deploy_to(&pki, &[&gone, &web1], &mut Interrupt::manual().1).await;
        assert!(
            matches!(report.runs[0].outcome, Outcome::Unreachable(_)),
            "{report:?}"
        );
        assert_eq!(report.runs[1].outcome, Outcome::NotStarted);
        assert!(text.starts_with("==> web-9: unreachable: "), "{text}");
        assert!(
            report
                .failure()
                .unwrap()
                .contains("stopped at web-9: unreachable")
        );
    }

    #[tokio::test]
    async fn reattaches_when_the_stream_breaks() {
        let pki = pki();
        let calls = Arc::default();
        let whole = job("x", JobResult::Succeeded);
        let mut broken = fake(
            "web-1",
            Script::Events {
                first: whole[..2].to_vec(),
                gate: None,
                rest: vec![],
            },
            &calls,
        );
        broken.attach = whole;
        let web1 = serve(pki.dir.path(), broken).await;
        let (report, text) = deploy_to(&pki, &[&web1], &mut Interrupt::manual().1).await;
        assert!(report.ok(), "{report:?}\n{text}");
        assert_eq!(text.matches("▶ build").count(), 1, "{text}");
        assert_eq!(text.matches("==> web-1: deploy").count(), 1, "{text}");
        assert!(
            text.contains("  ! connection lost (the agent closed the stream before the job finished); re-attaching to deploy-"),
            "{text}"
        );
        let calls = calls.lock().unwrap().clone();
        assert!(calls[1].starts_with("web-1 attach deploy-"), "{calls:?}");

        // The agent forgot the job and the stream broke before any event: nothing started.
        let calls = Arc::default();
        let silent = fake(
            "web-2",
            Script::Events {
                first: vec![],
                gate: None,
                rest: vec![],
            },
            &calls,
        );
        let web2 = serve(pki.dir.path(), silent).await;
        let (report, _) = deploy_to(&pki, &[&web2], &mut Interrupt::manual().1).await;
        let Outcome::Refused(why) = &report.runs[0].outcome else {
            panic!("{report:?}")
        };
        assert!(why.contains("did not start"), "{why}");
    }

    #[tokio::test]
    async fn ctrl_c_finishes_the_current_host_then_stops() {
        let pki = pki();
        let calls: Arc<Mutex<Vec<String>>> = Arc::default();
        let gate = Arc::new(Semaphore::new(0));
        let whole = job("x", JobResult::Succeeded);
        let slow = Script::Events {
            first: whole[..2].to_vec(),
            gate: Some(gate.clone()),
            rest: whole[2..].to_vec(),
        };
        let web1 = serve(pki.dir.path(), fake("web-1", slow, &calls)).await;
        let web2 = serve(
            pki.dir.path(),
            fake("web-2", events(JobResult::Succeeded), &calls),
        )
        .await;
        let (presses, mut interrupt) = Interrupt::manual();
        let operator = async {
            while calls.lock().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            presses.send_modify(|n| *n += 1);
            tokio::time::sleep(Duration::from_millis(100)).await;
            gate.add_permits(1);
        };
        let hosts = [&web1, &web2];
        let ((report, text), ()) = tokio::join!(deploy_to(&pki, &hosts, &mut interrupt), operator);
        assert!(report.runs[0].outcome.ok(), "{report:?}");
        assert_eq!(report.runs[1].outcome, Outcome::NotStarted);
        assert!(text.contains("  ! interrupted: deploy-"), "{text}");
        assert!(
            text.contains("no further host will start; Ctrl-C again to detach"),
            "{text}"
        );
        assert!(text.contains("==> web-1: succeeded"), "{text}");
        assert_eq!(calls.lock().unwrap().len(), 1);

        // Twice: detach at once; the job keeps running on the agent.
        let calls: Arc<Mutex<Vec<String>>> = Arc::default();
        let gate = Arc::new(Semaphore::new(0));
        let slow = Script::Events {
            first: whole[..2].to_vec(),
            gate: Some(gate.clone()),
            rest: whole[2..].to_vec(),
        };
        let web3 = serve(pki.dir.path(), fake("web-3", slow, &calls)).await;
        let (presses, mut interrupt) = Interrupt::manual();
        let operator = async {
            while calls.lock().unwrap().is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            presses.send_modify(|n| *n += 2);
        };
        let hosts = [&web3, &web2];
        let ((report, text), ()) = tokio::join!(deploy_to(&pki, &hosts, &mut interrupt), operator);
        gate.add_permits(1);
        assert_eq!(report.runs[0].outcome, Outcome::Detached);
        assert_eq!(report.runs[1].outcome, Outcome::NotStarted);
        assert!(text.contains("  ! detached: deploy-"), "{text}");
        assert!(text.contains("--host web-3` re-attaches"), "{text}");
        let why = report.failure().unwrap();
        assert!(
            why.contains("stopped at web-3: detached: the job keeps running"),
            "{why}"
        );
    }

    #[tokio::test]
    async fn attach_follows_the_host_that_knows_the_job() {
        let pki = pki();
        let calls = Arc::default();
        let mut knows = fake("web-2", events(JobResult::Succeeded), &calls);
        knows.attach = job("deploy-x-web-2", JobResult::Succeeded);
        let web1 = serve(
            pki.dir.path(),
            fake("web-1", events(JobResult::Succeeded), &calls),
        )
        .await;
        let web2 = serve(pki.dir.path(), knows).await;
        let mut buf = Vec::new();
        let mut out = Output::new(&mut buf, false, true);
        let (_presses, mut interrupt) = Interrupt::manual();
        let mut session = Session {
            creds: &pki.creds,
            timeout: Duration::from_secs(5),
            out: &mut out,
            interrupt: &mut interrupt,
            detach_after: 1,
        };
        let report = session
            .attach(&[&web1, &web2], "deploy-x-web-2")
            .await
            .unwrap_or_else(|f| panic!("{:#}", f.error));
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.runs[0].host, "web-2");
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines
                .iter()
                .all(|l| l["host"] == "web-2" && l["job_id"] == "deploy-x-web-2")
        );
        assert_eq!(lines[3]["kind"], "finished");

        let mut buf = Vec::new();
        let mut out = Output::new(&mut buf, false, false);
        let mut session = Session {
            creds: &pki.creds,
            timeout: Duration::from_secs(5),
            out: &mut out,
            interrupt: &mut interrupt,
            detach_after: 1,
        };
        let err = session
            .attach(&[&web1], "deploy-x-web-9")
            .await
            .unwrap_err();
        assert_eq!(err.code, crate::EXIT_FAILED);
        assert_eq!(
            err.error.to_string(),
            "no selected host knows job deploy-x-web-9 (asked: web-1)"
        );
    }
}
