//! One job on one agent: the request that starts it, connecting, starting, and
//! following its events to the end.
//!
//! Following a job survives a dropped connection: the controller re-attaches (at most
//! [`REATTACH_ATTEMPTS`] times in a row without a new event, backing off) and skips the
//! events it already showed, because the agent keeps running the job whatever happens
//! to the controller. An error that another try cannot fix (OutOfRange, InvalidArgument,
//! PermissionDenied, ...) is not retried at all.

use std::time::Duration;

use futures_util::StreamExt as _;
use hoist_proto::v1::{
    AttachRequest, DeployRequest, EnvSetRequest, EnvUnsetRequest, JobEvent, JobFinished, JobResult,
    RestartRequest, RollbackRequest, RunTaskRequest, StartRequest, StopRequest, job_event::Kind,
};
use tonic::{Code, Status, codec::Streaming};

use crate::{
    agents::client::{self, ConnectError, Credentials},
    fleet::Host,
    output::{render, table::Tone},
};

/// How long an agent may take to accept a job (answer Deploy, Rollback, ...). Agents
/// may check out the ref before answering, so this is generous; connecting is bounded
/// by the command's `--timeout`.
pub const JOB_ACCEPT_TIMEOUT: Duration = Duration::from_secs(600);

/// Re-attach attempts after the stream of a running job breaks.
pub const REATTACH_ATTEMPTS: u32 = 3;

// === requests ===

/// A request that starts a job on an agent.
#[derive(Clone, Debug)]
pub enum JobRequest {
    Deploy(DeployRequest),
    Rollback(RollbackRequest),
    Restart(RestartRequest),
    Stop(StopRequest),
    Start(StartRequest),
    RunTask(RunTaskRequest),
    EnvSet(EnvSetRequest),
    EnvUnset(EnvUnsetRequest),
}

impl JobRequest {
    pub fn job_id(&self) -> &str {
        match self {
            JobRequest::Deploy(r) => &r.deploy_id,
            JobRequest::Rollback(r) => &r.job_id,
            JobRequest::Restart(r) => &r.job_id,
            JobRequest::Stop(r) => &r.job_id,
            JobRequest::Start(r) => &r.job_id,
            JobRequest::RunTask(r) => &r.job_id,
            JobRequest::EnvSet(r) => &r.job_id,
            JobRequest::EnvUnset(r) => &r.job_id,
        }
    }

    /// Sends the request; the job's events follow on the returned stream.
    pub async fn start(self, client: &mut client::Client) -> Result<Streaming<JobEvent>, Status> {
        let response = match self {
            JobRequest::Deploy(r) => client.deploy(r).await,
            JobRequest::Rollback(r) => client.rollback(r).await,
            JobRequest::Restart(r) => client.restart(r).await,
            JobRequest::Stop(r) => client.stop(r).await,
            JobRequest::Start(r) => client.start(r).await,
            JobRequest::RunTask(r) => client.run_task(r).await,
            JobRequest::EnvSet(r) => client.env_set(r).await,
            JobRequest::EnvUnset(r) => client.env_unset(r).await,
        }?;
        Ok(response.into_inner())
    }
}

// === outcomes ===

/// How one host's job ended, as far as the controller knows.
#[derive(Clone, Debug, PartialEq)]
pub enum JobOutcome {
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

impl JobOutcome {
    pub fn ok(&self) -> bool {
        matches!(self, JobOutcome::Finished(f) if f.result == JobResult::Succeeded as i32)
    }

    /// The result as shown in tables.
    pub fn label(&self) -> (&'static str, Tone) {
        match self {
            JobOutcome::Finished(f) => {
                (render::result_name(f.result), render::result_tone(f.result))
            }
            JobOutcome::Refused(_) => ("refused", Tone::Bad),
            JobOutcome::Unreachable(_) => ("unreachable", Tone::Bad),
            JobOutcome::Lost(_) => ("lost", Tone::Bad),
            JobOutcome::Detached => ("detached", Tone::Warn),
            JobOutcome::NotStarted => ("not started", Tone::Dim),
        }
    }

    /// The result in JSON: one snake-case word.
    pub fn key(&self) -> &'static str {
        match self {
            JobOutcome::Finished(f) => render::result_key(f.result),
            JobOutcome::NotStarted => "not_started",
            other => other.label().0,
        }
    }

    /// Why, when there is a reason to give.
    pub fn error(&self) -> &str {
        match self {
            JobOutcome::Finished(f) => &f.error,
            JobOutcome::Refused(e) | JobOutcome::Unreachable(e) | JobOutcome::Lost(e) => e,
            JobOutcome::Detached | JobOutcome::NotStarted => "",
        }
    }
}

/// Errors that may mean the connection, not the agent's decision: worth re-attaching.
fn is_transport(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
    )
}

/// Errors that the same request would get again: never retried.
pub fn is_permanent(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::OutOfRange
            | Code::InvalidArgument
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::Unimplemented
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::DataLoss
    )
}

/// The seq of the last event `event` stands for: an `OutputOmitted` event stands for
/// every output event the agent left out of the job's log.
pub fn covers_to(event: &JobEvent) -> u64 {
    match &event.kind {
        Some(Kind::Omitted(m)) => m.last_seq.max(event.seq),
        _ => event.seq,
    }
}

/// Connects to `host` within `timeout` (the job itself may take longer to answer).
pub async fn connect(
    host: &Host,
    creds: &Credentials,
    timeout: Duration,
) -> Result<client::Client, ConnectError> {
    let connect = client::connect(&host.address, creds, JOB_ACCEPT_TIMEOUT);
    match tokio::time::timeout(timeout, connect).await {
        Ok(result) => result,
        Err(_) => Err(ConnectError::Timeout(timeout)),
    }
}

/// Connects to `host`, starts `request` unless `proceed` (asked once connected) says
/// no, and follows the job to its end ([`follow_job`]). The one path from a request to
/// a job's outcome, for rollouts and for host-by-host commands alike.
pub async fn run_job(
    host: &Host,
    creds: &Credentials,
    timeout: Duration,
    request: JobRequest,
    proceed: impl FnOnce() -> bool,
    updates: &(dyn Fn(Update) + Send + Sync),
) -> JobOutcome {
    let job_id = request.job_id().to_string();
    let mut client = match connect(host, creds, timeout).await {
        Ok(client) => client,
        Err(why) => return JobOutcome::Unreachable(why.to_string()),
    };
    if !proceed() {
        return JobOutcome::NotStarted;
    }
    let started = request.start(&mut client).await;
    follow_job(host, creds, timeout, &job_id, started, updates).await
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
/// re-attached (at most [`REATTACH_ATTEMPTS`] times in a row without a new event,
/// backing off 1 s, 2 s, 4 s) and events seen already are skipped; a permanent error
/// ([`is_permanent`]) ends following at once. Dropping the future stops following (the job keeps
/// running on the agent): callers race it against the operator's interrupts.
pub async fn follow_job(
    host: &Host,
    creds: &Credentials,
    timeout: Duration,
    job_id: &str,
    first: Result<Streaming<JobEvent>, Status>,
    updates: &(dyn Fn(Update) + Send + Sync),
) -> JobOutcome {
    let mut last_seq: Option<u64> = None;
    // Re-attach attempts since the last new event.
    let mut attempts = 0;
    let (mut stream, mut lost) = match first {
        Ok(stream) => (Some(stream), String::new()),
        Err(status) if !is_transport(&status) => {
            return JobOutcome::Refused(client::status_error(&status));
        }
        Err(status) => (None, client::status_error(&status)),
    };
    loop {
        if let Some(current) = stream.as_mut() {
            match current.next().await {
                Some(Ok(event)) => {
                    if last_seq.is_some_and(|seen| covers_to(&event) <= seen) {
                        continue;
                    }
                    // An omission marker does not move on: events it skipped over that
                    // the agent kept (a step's end) still follow it.
                    if !matches!(event.kind, Some(Kind::Omitted(_))) {
                        last_seq = Some(event.seq);
                    }
                    attempts = 0;
                    let finished = match &event.kind {
                        Some(Kind::Finished(finished)) => Some(finished.clone()),
                        _ => None,
                    };
                    updates(Update::Event(event));
                    if let Some(finished) = finished {
                        return JobOutcome::Finished(finished);
                    }
                    continue;
                }
                Some(Err(status)) if last_seq.is_none() && !is_transport(&status) => {
                    return JobOutcome::Refused(client::status_error(&status));
                }
                Some(Err(status)) if is_permanent(&status) => {
                    return JobOutcome::Lost(format!(
                        "{} (not retried: another try would fail the same way)",
                        client::status_error(&status)
                    ));
                }
                Some(Err(status)) => lost = client::status_error(&status),
                None => lost = "the agent closed the stream before the job finished".into(),
            }
            stream = None;
        }
        if attempts >= REATTACH_ATTEMPTS {
            return JobOutcome::Lost(format!(
                "{lost} (gave up after {REATTACH_ATTEMPTS} re-attach attempts)"
            ));
        }
        attempts += 1;
        match recover(host, creds, timeout, job_id, &lost, attempts, updates).await {
            Ok(next) => stream = Some(next),
            Err(JobOutcome::Lost(why)) => lost = why,
            Err(JobOutcome::Refused(why)) if last_seq.is_some() => return JobOutcome::Lost(why),
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
) -> Result<Streaming<JobEvent>, JobOutcome> {
    updates(Update::Note(format!(
        "connection lost ({lost}); re-attaching to {job_id} ({attempt}/{REATTACH_ATTEMPTS})"
    )));
    tokio::time::sleep(Duration::from_secs(1 << attempt.saturating_sub(1).min(5))).await;
    creds.forget(&host.address);
    let mut agent = connect(host, creds, timeout)
        .await
        .map_err(|e| JobOutcome::Lost(e.to_string()))?;
    let request = AttachRequest {
        job_id: job_id.to_string(),
    };
    match agent.attach(request).await {
        Ok(response) => Ok(response.into_inner()),
        Err(status) if status.code() == Code::NotFound => Err(JobOutcome::Refused(format!(
            "{lost}; the agent does not know the job, so it did not start ({})",
            status.message()
        ))),
        // Attach refused for good (role, bad id): the job cannot be followed from here.
        Err(status) if is_permanent(&status) => {
            Err(JobOutcome::Refused(client::status_error(&status)))
        }
        Err(status) => Err(JobOutcome::Lost(client::status_error(&status))),
    }
}
