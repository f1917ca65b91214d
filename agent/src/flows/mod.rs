//! The job flows: deploy (SPEC §4), rollback, restart, env. Each step is an event with
//! its start, output lines, exit code and duration ([`step`]); the flow decides what
//! happens when a step fails: before the switch the new release is removed and
//! `current` is untouched; after the switch the previous release is put back
//! automatically ([`rollback`]). Flows never write the app's journal: they send their
//! changes to the app's owner task through a [`JournalHandle`].

mod backup;
mod deploy;
mod env;
pub mod events;
pub mod pending;
mod recover;
mod restart;
mod rollback;
mod step;
pub mod task;

use std::time::{Duration, Instant};

use hoist_proto::v1::{JobFinished, JobKind, JobResult, JobStarted, job_event::Kind};
use tokio::sync::{mpsc, oneshot};

use crate::{
    host::process::RunAs,
    state::journal::{self, Change, JobRecord, Journal, JournalError},
};

pub use deploy::{FetchFailed, planned_steps as planned_deploy_steps, resolve_ref};
pub use recover::{recover, recover_unrecorded, stop_orphans, told};
pub use rollback::{RollbackPlan, RollbackRefusal, plan as plan_rollback};
pub use step::Ctx;
use step::{Failed, StepResult};

/// What a flow asks of its app's journal. The app's owner task ([`crate::apps`]) holds
/// the journal and answers these in order; no flow writes the file itself.
pub enum JournalRequest {
    Apply {
        change: Box<Change>,
        reply: oneshot::Sender<Result<(), JournalError>>,
    },
    Snapshot {
        reply: oneshot::Sender<Journal>,
    },
}

/// A job's line to its app's journal.
#[derive(Clone)]
pub struct JournalHandle(mpsc::Sender<JournalRequest>);

impl JournalHandle {
    pub fn new(tx: mpsc::Sender<JournalRequest>) -> JournalHandle {
        JournalHandle(tx)
    }

    /// Records `change` and waits until it is written; a failure is logged (the job goes
    /// on: the release on disk is the truth, the journal its history).
    pub(crate) async fn record(&self, change: Change, what: &str) {
        if let Err(err) = self.try_record(change).await {
            tracing::error!("cannot record {what}: {err}");
        }
    }

    /// Records `change` and waits until it is written, or says why it was not.
    pub(crate) async fn try_record(&self, change: Change) -> Result<(), String> {
        let (reply, rx) = oneshot::channel();
        let sent = self.0.send(JournalRequest::Apply {
            change: Box::new(change),
            reply,
        });
        match sent.await {
            Ok(()) => match rx.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(err)) => Err(err.to_string()),
                Err(_) => Err("the app's owner task stopped".into()),
            },
            Err(_) => Err("the app's owner task stopped".into()),
        }
    }

    /// The journal as it is now, after every change this job recorded.
    pub(crate) async fn snapshot(&self) -> Journal {
        let (reply, rx) = oneshot::channel();
        if self
            .0
            .send(JournalRequest::Snapshot { reply })
            .await
            .is_err()
        {
            return Journal::default();
        }
        rx.await.unwrap_or_default()
    }
}

/// What a job was asked to do.
#[derive(Clone, Debug)]
pub enum Request {
    Deploy {
        r#ref: String,
        /// The controller's release id for the whole deploy; empty: the agent picks.
        release_id: String,
        migrate: bool,
        allow_missing_env: bool,
        forced: bool,
        reason: String,
    },
    Rollback {
        to_release: String,
        migrate: bool,
        restore_db: bool,
        reason: String,
        /// `--of RELEASE`: reverse that release's migrations only.
        of_release: String,
        /// Reverse the migrations of releases after the current one only.
        ahead_only: bool,
    },
    /// `hoist backup`: a database backup now.
    Backup,
    /// `hoist restore`: the database from one backup (empty: the default one).
    Restore {
        backup_id: String,
    },
    Restart {
        service: String,
    },
    /// Stop or start the app's services (or one).
    Toggle {
        service: String,
        toggle: crate::host::services::Toggle,
    },
    /// Run a declared task (`[app.tasks]`) in the current release.
    Task {
        task: String,
    },
    /// Edit `shared/.env` (values never appear in events), then maybe restart.
    Env {
        set: Vec<(String, String)>,
        unset: Vec<String>,
        restart: bool,
    },
}

impl Request {
    pub fn kind(&self) -> JobKind {
        match self {
            Request::Deploy { .. } => JobKind::Deploy,
            Request::Rollback { .. } => JobKind::Rollback,
            Request::Backup => JobKind::Backup,
            Request::Restore { .. } => JobKind::Restore,
            Request::Restart { .. } => JobKind::Restart,
            Request::Env { .. } => JobKind::Env,
            Request::Task { .. } => JobKind::Task,
            Request::Toggle { toggle, .. } => match toggle {
                crate::host::services::Toggle::Stop => JobKind::Stop,
                crate::host::services::Toggle::Start => JobKind::Start,
            },
        }
    }
}

/// How a job ended.
pub struct Outcome {
    pub result: JobResult,
    pub release: String,
    pub previous: String,
    pub commit: String,
    pub error: String,
}

/// The journal record of a job that starts now: result `running`, written by the app's
/// owner before the job does any work (see [`crate::state::journal`]).
pub fn start_record(request: &Request, job_id: &str, who: &str, started_at_ms: u64) -> JobRecord {
    let (r#ref, forced, reason) = recorded(request);
    JobRecord {
        job_id: job_id.into(),
        kind: journal::kind_name(request.kind()).into(),
        r#ref,
        who: who.into(),
        started_at_ms,
        result: journal::result_name(JobResult::Running).into(),
        forced,
        reason,
        ..Default::default()
    }
}

/// What the journal keeps of a request: ref, forced, reason (or what an env job did).
fn recorded(request: &Request) -> (String, bool, String) {
    match request {
        Request::Deploy {
            r#ref,
            forced,
            reason,
            ..
        } => (r#ref.clone(), *forced, reason.clone()),
        Request::Rollback { reason, .. } => (String::new(), false, reason.clone()),
        Request::Restart { service } | Request::Toggle { service, .. } => {
            (String::new(), false, service.clone())
        }
        Request::Task { task } => (String::new(), false, format!("task {task}")),
        Request::Backup => (String::new(), false, String::new()),
        Request::Restore { backup_id } => (String::new(), false, format!("restore {backup_id}")),
        Request::Env { set, unset, .. } => (String::new(), false, env::env_summary(set, unset)),
    }
}

/// Runs one job to its end and records it. Never panics on a failed step: every way out
/// ends with a `JobFinished` event and a journal record. `started_at_ms` is its start
/// as its `running` record has it; `told` are notices for its client right after
/// `started` (jobs an agent restart interrupted before it).
pub async fn run(mut ctx: Ctx, request: Request, started_at_ms: u64, told: Vec<String>) -> Outcome {
    let clock = Instant::now();
    let run_as = match &ctx.app.user {
        Some(user) => Some(RunAs::resolve(user, ctx.app.group.as_deref())),
        None => None,
    };
    let (r#ref, migrate, forced, reason) = match &request {
        Request::Deploy {
            r#ref,
            migrate,
            forced,
            reason,
            ..
        } => (r#ref.clone(), *migrate, *forced, reason.clone()),
        Request::Rollback {
            migrate, reason, ..
        } => (String::new(), *migrate, false, reason.clone()),
        _ => (String::new(), false, false, String::new()),
    };
    ctx.job.emit(Kind::Started(JobStarted {
        kind: request.kind().into(),
        app: ctx.app.name.clone(),
        r#ref,
        commit: String::new(),
        release: String::new(),
        who: ctx.who.clone(),
        migrate,
        forced,
        reason,
    }));
    for text in told {
        ctx.notice(text);
    }
    match run_as {
        Some(Ok(r)) => ctx.run_as = Some(r),
        Some(Err(err)) => {
            let outcome = Outcome {
                result: JobResult::Failed,
                release: String::new(),
                previous: String::new(),
                commit: String::new(),
                error: err.to_string(),
            };
            return finish(&ctx, &request, outcome, started_at_ms, clock).await;
        }
        None => {}
    }
    if forced {
        ctx.notice("deploy window overridden with --force");
    }
    let outcome = match &request {
        Request::Deploy {
            r#ref,
            release_id,
            migrate,
            allow_missing_env,
            ..
        } => deploy::deploy(&mut ctx, r#ref, release_id, *migrate, *allow_missing_env).await,
        Request::Rollback {
            to_release,
            migrate,
            restore_db,
            of_release,
            ahead_only,
            ..
        } => {
            let ask = rollback::Ask {
                to: to_release,
                migrate: *migrate,
                restore_db: *restore_db,
                of: of_release,
                ahead_only: *ahead_only,
            };
            rollback::rollback(&mut ctx, ask).await
        }
        Request::Backup => backup::on_demand(&mut ctx).await,
        Request::Restore { backup_id } => backup::restore(&mut ctx, backup_id).await,
        Request::Restart { service } => restart::restart(&ctx, service).await,
        Request::Toggle { service, toggle } => restart::toggle(&ctx, service, *toggle).await,
        Request::Task { task } => task::task(&mut ctx, task).await,
        Request::Env {
            set,
            unset,
            restart,
        } => env::env_change(&mut ctx, set, unset, *restart).await,
    };
    finish(&ctx, &request, outcome, started_at_ms, clock).await
}

async fn finish(
    ctx: &Ctx,
    request: &Request,
    outcome: Outcome,
    started_at_ms: u64,
    clock: Instant,
) -> Outcome {
    let duration_ms = clock.elapsed().as_millis() as u64;
    let (r#ref, forced, reason) = recorded(request);
    let record = JobRecord {
        job_id: ctx.job.id.clone(),
        kind: journal::kind_name(request.kind()).into(),
        r#ref,
        commit: outcome.commit.clone(),
        release: outcome.release.clone(),
        previous_release: outcome.previous.clone(),
        who: ctx.who.clone(),
        started_at_ms,
        duration_ms,
        result: journal::result_name(outcome.result).into(),
        error: outcome.error.clone(),
        forced,
        reason,
        interrupted_at_ms: 0,
    };
    // The journal first, then the event log's end: a kill between the two leaves a log
    // without an end, which the next start completes from the journal's record.
    ctx.journal
        .record(Change::Job(record), "the job in the journal")
        .await;
    ctx.job.emit(Kind::Finished(JobFinished {
        result: outcome.result.into(),
        release: outcome.release.clone(),
        previous_release: outcome.previous.clone(),
        duration_ms,
        error: outcome.error.clone(),
        commit: outcome.commit.clone(),
    }));
    tracing::info!(app = %ctx.app.name, job = %ctx.job.id, result = journal::result_name(outcome.result),
        release = %outcome.release, "job finished");
    outcome
}

fn failed(f: Failed, release: &str, previous: &str, commit: &str) -> Outcome {
    Outcome {
        result: JobResult::Failed,
        release: release.into(),
        previous: previous.into(),
        commit: commit.into(),
        error: format!("{}: {}", f.step, f.error),
    }
}

/// How long a job's own lease lasts without renewal. The job holds it while it runs; an
/// agent that starts releases the lease of every job (none runs then), so this only
/// bounds a lease whose agent never comes back.
pub const JOB_LEASE: Duration = Duration::from_secs(3600);
