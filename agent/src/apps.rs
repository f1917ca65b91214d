//! One task owns each app's deploy state: its lock, its running job and its journal.
//! RPC handlers validate, then send the owner a command and await its reply; jobs run in
//! their own tasks and send the owner their journal changes ([`JournalRequest`]) and,
//! when done, that they finished. The owner is the only writer of the app's journal and
//! lock files, so two writers can never lose each other's records.
//!
//! A job starts durably before it does any work: its lease is taken (named after the
//! job), its event log created, and its `running` record written to the journal, all
//! before its task is spawned; if the journal cannot be written the job is refused and
//! the lease given back. The journal is the one record of which job runs; a lease named
//! after a job holds only while that job runs. So the owner's recovery at start-up,
//! when no job runs, ends every `running` record as `interrupted` and releases every
//! lease named after a job the agent knows (its own, or the controller's lease the job
//! ran under: the controller renews a lease it still wants, which takes it again).

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use hoist_proto::v1::{JobFinished, JobResult, LockInfo};
use tokio::sync::{mpsc, oneshot, watch};

use crate::{
    config::{Config, UnknownApp},
    flows::{
        self, JournalHandle, JournalRequest, Request,
        events::{InvalidJobId, Job, Registry},
    },
    state::{
        journal::{self, Change, JobRecord, Journal, JournalError, JournalFile},
        lock::{AppLock, LockError},
        running, sweep,
    },
};

/// Why an app's owner refused or could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum AppsError {
    #[error(transparent)]
    UnknownApp(#[from] UnknownApp),
    #[error("app {0} is no longer configured")]
    NoLongerConfigured(String),
    #[error(transparent)]
    InvalidJobId(#[from] InvalidJobId),
    #[error("job id {job} is already used by app {app}")]
    JobIdTaken { job: String, app: String },
    #[error("app {app} is busy with job {job}; `hoist attach {job}` to follow it")]
    Busy { app: String, job: String },
    #[error("job {0} is running and holds the lock; it releases it when it ends")]
    JobHoldsLock(String),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("cannot create the job log: {0}")]
    JobLog(std::io::Error),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("the app's owner task stopped; retry")]
    OwnerStopped,
}

type Reply<T> = oneshot::Sender<Result<T, AppsError>>;

enum Command {
    Start {
        job_id: String,
        who: String,
        request: Request,
        reply: Reply<Arc<Job>>,
    },
    Lock {
        holder: String,
        deploy_id: String,
        reason: String,
        ttl: Option<Duration>,
        reply: Reply<LockInfo>,
    },
    Unlock {
        deploy_id: String,
        force: bool,
        reply: Reply<()>,
    },
    State {
        reply: oneshot::Sender<(Option<LockInfo>, Option<String>)>,
    },
    /// A record from outside any job (RecordRefusal).
    Record {
        record: JobRecord,
        reply: Reply<()>,
    },
    Journal {
        reply: oneshot::Sender<Journal>,
    },
    /// The first command of an app's first owner: finish what a previous agent left
    /// running ([`Owner::recover`]).
    Recover {
        reply: oneshot::Sender<Vec<String>>,
    },
    Finished {
        job_id: String,
    },
}

/// Handles to every app's owner task.
#[derive(Clone)]
pub struct Apps {
    config: watch::Receiver<Arc<Config>>,
    registry: Arc<Registry>,
    owners: Arc<Mutex<HashMap<String, mpsc::Sender<Command>>>>,
    /// Wakes the monitor for fresh check results when a job ends.
    recheck: Arc<tokio::sync::Notify>,
}

impl Apps {
    pub fn new(
        config: watch::Receiver<Arc<Config>>,
        registry: Arc<Registry>,
        recheck: Arc<tokio::sync::Notify>,
    ) -> Apps {
        Apps {
            config,
            registry,
            owners: Arc::new(Mutex::new(HashMap::new())),
            recheck,
        }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Starts every configured app's owner, which ends the jobs that died with a
    /// previous agent (`interrupted`), removes their half-built releases, releases their
    /// leases and sweeps the temp files the dead agent left. Called once before serving
    /// (so no job of this agent runs yet); returns the interrupted jobs' ids.
    pub async fn recover(&self) -> Vec<String> {
        let config = self.config.borrow().clone();
        for path in sweep::temps(&config.agent.state_dir) {
            tracing::warn!(path = %path.display(), "removed a temp file a previous agent left");
        }
        let mut interrupted = Vec::new();
        for app in &config.apps {
            let (reply, rx) = oneshot::channel();
            if self.owner_recovering(&app.name, Some(reply)).is_ok()
                && let Ok(ids) = rx.await
            {
                interrupted.extend(ids);
            }
        }
        interrupted
    }

    fn owner(&self, app: &str) -> Result<mpsc::Sender<Command>, AppsError> {
        self.owner_recovering(app, None)
    }

    /// The app's owner, started if need be. The first owner of an app in this process
    /// recovers first (its first command, before any job can start): at start-up for
    /// the configured apps, later for an app a reload added. `reply` hears what that
    /// recovery interrupted (nothing, if the owner existed).
    fn owner_recovering(
        &self,
        app: &str,
        reply: Option<oneshot::Sender<Vec<String>>>,
    ) -> Result<mpsc::Sender<Command>, AppsError> {
        let config = self.config.borrow().clone();
        config.app(app)?;
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = owners.get(app).filter(|tx| !tx.is_closed()) {
            return Ok(tx.clone());
        }
        // (An owner that stopped is replaced without a recovery: its jobs may still
        // run in their own tasks.)
        let first = !owners.contains_key(app);
        let (tx, rx) = mpsc::channel(32);
        if first {
            let reply = reply.unwrap_or_else(|| oneshot::channel().0);
            // A fresh channel has room: this is the owner's first command.
            let _ = tx.try_send(Command::Recover { reply });
        }
        let (journal_tx, journal_rx) = mpsc::channel(32);
        // The one place an app's lock and journal are opened (clippy.toml forbids it
        // elsewhere): the owner task holds them from here on.
        #[allow(clippy::disallowed_methods)]
        let owner = Owner {
            app: app.to_string(),
            state_dir: config.agent.state_dir.clone(),
            config: self.config.clone(),
            registry: self.registry.clone(),
            lock: AppLock::load(&config.agent.state_dir, app),
            journal: JournalFile::open(&config.agent.state_dir, app),
            journal_tx,
            running: None,
            tx: tx.downgrade(),
            recheck: self.recheck.clone(),
        };
        tokio::spawn(owner.run(rx, journal_rx));
        owners.insert(app.to_string(), tx.clone());
        Ok(tx)
    }

    async fn ask<T>(
        &self,
        app: &str,
        make: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, AppsError> {
        let (reply, rx) = oneshot::channel();
        self.owner(app)?
            .send(make(reply))
            .await
            .map_err(|_| AppsError::OwnerStopped)?;
        rx.await.map_err(|_| AppsError::OwnerStopped)?
    }

    /// Starts a job, or returns the existing one with the same id.
    pub async fn start(
        &self,
        app: &str,
        job_id: &str,
        who: &str,
        request: Request,
    ) -> Result<Arc<Job>, AppsError> {
        flows::events::validate_id(job_id)?;
        if let Some(job) = self.registry.get(job_id) {
            if job.app != app && !job.app.is_empty() {
                return Err(AppsError::JobIdTaken {
                    job: job_id.into(),
                    app: job.app.clone(),
                });
            }
            return Ok(job);
        }
        self.ask(app, |reply| Command::Start {
            job_id: job_id.into(),
            who: who.into(),
            request,
            reply,
        })
        .await
    }

    pub async fn lock(
        &self,
        app: &str,
        holder: &str,
        deploy_id: &str,
        reason: &str,
        ttl: Option<Duration>,
    ) -> Result<LockInfo, AppsError> {
        self.ask(app, |reply| Command::Lock {
            holder: holder.into(),
            deploy_id: deploy_id.into(),
            reason: reason.into(),
            ttl,
            reply,
        })
        .await
    }

    pub async fn unlock(&self, app: &str, deploy_id: &str, force: bool) -> Result<(), AppsError> {
        self.ask(app, |reply| Command::Unlock {
            deploy_id: deploy_id.into(),
            force,
            reply,
        })
        .await
    }

    /// Records a job that never ran (a refusal) in the app's journal.
    pub async fn record(&self, app: &str, record: JobRecord) -> Result<(), AppsError> {
        self.ask(app, |reply| Command::Record { record, reply })
            .await
    }

    /// The app's journal as it is now.
    pub async fn journal(&self, app: &str) -> Result<Journal, AppsError> {
        let (reply, rx) = oneshot::channel();
        self.owner(app)?
            .send(Command::Journal { reply })
            .await
            .map_err(|_| AppsError::OwnerStopped)?;
        rx.await.map_err(|_| AppsError::OwnerStopped)
    }

    /// The live lock and the running job of an app.
    pub async fn state(&self, app: &str) -> (Option<LockInfo>, Option<String>) {
        let Ok(tx) = self.owner(app) else {
            return (None, None);
        };
        let (reply, rx) = oneshot::channel();
        if tx.send(Command::State { reply }).await.is_err() {
            return (None, None);
        }
        rx.await.unwrap_or((None, None))
    }
}

/// The task owning one app.
struct Owner {
    app: String,
    state_dir: PathBuf,
    config: watch::Receiver<Arc<Config>>,
    registry: Arc<Registry>,
    lock: AppLock,
    journal: JournalFile,
    /// Handed to each job, for its journal changes.
    journal_tx: mpsc::Sender<JournalRequest>,
    /// The running job and whether it took the lock itself (rather than running under
    /// a lease the controller took first).
    running: Option<(Arc<Job>, bool)>,
    tx: mpsc::WeakSender<Command>,
    recheck: Arc<tokio::sync::Notify>,
}

impl Owner {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Command>,
        mut journal_rx: mpsc::Receiver<JournalRequest>,
    ) {
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(cmd) => self.command(cmd),
                    None => return,
                },
                Some(request) = journal_rx.recv() => self.journal_request(request),
            }
        }
    }

    fn journal_request(&mut self, request: JournalRequest) {
        match request {
            JournalRequest::Apply { change, reply } => {
                let _ = reply.send(self.journal.apply(*change));
            }
            JournalRequest::Snapshot { reply } => {
                let _ = reply.send(self.journal.get().clone());
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        let now = journal::now_ms();
        match cmd {
            Command::Start {
                job_id,
                who,
                request,
                reply,
            } => {
                let _ = reply.send(self.start(job_id, who, request, now));
            }
            Command::Lock {
                holder,
                deploy_id,
                reason,
                ttl,
                reply,
            } => {
                let r = self
                    .lock
                    .acquire(&self.app, &holder, &deploy_id, &reason, ttl, now)
                    .map(|l| l.info())
                    .map_err(AppsError::from);
                let _ = reply.send(r);
            }
            Command::Unlock {
                deploy_id,
                force,
                reply,
            } => {
                let r = match &self.running {
                    Some((job, true)) if job.id == deploy_id && !force => {
                        Err(AppsError::JobHoldsLock(job.id.clone()))
                    }
                    _ => self
                        .lock
                        .release(&self.app, &deploy_id, force, now)
                        .map_err(AppsError::from),
                };
                let _ = reply.send(r);
            }
            Command::State { reply } => {
                let lock = self.lock.current(now).map(|l| l.info());
                let running = self.running.as_ref().map(|(j, _)| j.id.clone());
                let _ = reply.send((lock, running));
            }
            Command::Record { record, reply } => {
                let r = self.journal.apply(Change::Job(record));
                let _ = reply.send(r.map_err(AppsError::from));
            }
            Command::Journal { reply } => {
                let _ = reply.send(self.journal.get().clone());
            }
            Command::Recover { reply } => {
                let _ = reply.send(self.recover(now));
            }
            Command::Finished { job_id } => {
                if let Some((job, took_lock)) = self.running.take_if(|(j, _)| j.id == job_id) {
                    if took_lock {
                        let _ = self.lock.release(&self.app, &job.id, false, now);
                    }
                    self.registry.retire(&job.id);
                    // The job's output has come and gone: give its memory back.
                    crate::memory::trim();
                    self.recheck.notify_one();
                    // Event logs of jobs the journal no longer lists go too.
                    let journal = self.journal.get();
                    self.registry
                        .prune(&self.app, &|id| journal.jobs.iter().any(|j| j.job_id == id));
                }
            }
        }
    }

    /// At start-up, before any job of this agent runs: kills what the dead jobs left
    /// running, sweeps what the dead agent left half-written, ends the jobs the journal
    /// records as running (`interrupted`, their half-built releases removed), makes the
    /// last job's event log end like its journal record, and releases the lease of any
    /// job (none runs now). Returns the interrupted jobs' ids.
    fn recover(&mut self, now: u64) -> Vec<String> {
        let config = self.config.borrow().clone();
        let Ok(app) = config.app(&self.app) else {
            return Vec::new();
        };
        if let Some(legacy) = running::take_legacy(&self.state_dir, &self.app)
            && self.journal.get().job(&legacy.job_id).is_none()
        {
            self.write(Change::Job(legacy), "the running job of an older agent");
        }
        let running: Vec<JobRecord> = self.journal.get().running().cloned().collect();
        // First what the dead jobs left running, so nothing rewrites what is swept.
        for job in &running {
            flows::stop_orphans(&self.app, &job.job_id);
        }
        for path in sweep::app(&self.state_dir, &self.app, &app.deploy_to) {
            tracing::warn!(app = %self.app, path = %path.display(), "removed a leftover of a previous agent");
        }
        let mut interrupted = Vec::new();
        for job in running {
            let record = flows::recover(app, &self.registry, &job, self.journal.get(), now);
            if record.result == journal::result_name(JobResult::Interrupted) {
                interrupted.push(record.job_id.clone());
            }
            self.write(Change::Job(record), "the interrupted job");
        }
        // The lease of a job (its own, or the controller's it ran under) dies with the
        // job: every job has ended now. Expired or not, it goes.
        if let Some(lease) = self.lock.held().cloned() {
            let record = self.journal.get().job(&lease.deploy_id).cloned();
            if let Some(job) = record.as_ref().filter(|j| !j.running()) {
                // Killed between the journal's final record and the log's `finished`
                // event (the lease is released after both): the log ends as recorded.
                flows::events::end_log(
                    &self.registry,
                    &self.app,
                    &job.job_id,
                    JobFinished {
                        result: journal::result_from_name(&job.result).into(),
                        release: job.release.clone(),
                        previous_release: job.previous_release.clone(),
                        duration_ms: job.duration_ms,
                        error: job.error.clone(),
                        commit: job.commit.clone(),
                    },
                );
            }
            let logged = record.is_none() && self.registry.knows(&lease.deploy_id);
            if logged
                && let Some(job) =
                    flows::recover_unrecorded(app, &self.registry, &lease.deploy_id, now)
            {
                // A job with a log and a lease but no journal record (a journal that was
                // unreadable and moved aside): interrupted too, so `hoist log` lists it.
                interrupted.push(job.job_id.clone());
                self.write(Change::Job(job), "the interrupted job");
            }
            if record.is_some() || logged {
                let _ = self.lock.release(&self.app, &lease.deploy_id, true, now);
                tracing::warn!(app = %self.app, job = %lease.deploy_id, holder = %lease.holder,
                    "released the lock of a job that no longer runs");
            }
        }
        let journal = self.journal.get();
        self.registry
            .prune(&self.app, &|id| journal.jobs.iter().any(|j| j.job_id == id));
        interrupted
    }

    /// Applies `change` to the journal; a failure is logged.
    fn write(&mut self, change: Change, what: &str) {
        if let Err(err) = self.journal.apply(change) {
            tracing::error!(app = %self.app, error = %err, "cannot record {what}");
        }
    }

    fn start(
        &mut self,
        job_id: String,
        who: String,
        request: Request,
        now: u64,
    ) -> Result<Arc<Job>, AppsError> {
        if let Some((job, _)) = &self.running {
            if job.id == job_id {
                return Ok(job.clone());
            }
            return Err(AppsError::Busy {
                app: self.app.clone(),
                job: job.id.clone(),
            });
        }
        let config = self.config.borrow().clone();
        let app = config
            .app(&self.app)
            .map_err(|_| AppsError::NoLongerConfigured(self.app.clone()))?
            .clone();
        // Under a lease the controller already holds for this deploy id, or our own.
        let held_for_us = self
            .lock
            .current(now)
            .is_some_and(|l| l.deploy_id == job_id);
        if !held_for_us {
            self.lock.acquire(
                &self.app,
                &who,
                &job_id,
                &format!("{} job", journal::kind_name(request.kind())),
                Some(flows::JOB_LEASE),
                now,
            )?;
        }
        let give_back = |owner: &mut Owner| {
            if !held_for_us {
                let _ = owner.lock.release(&owner.app, &job_id, false, now);
            }
        };
        let job = match self.registry.create(&job_id, &self.app) {
            Ok(job) => job,
            Err(err) => {
                give_back(self);
                return Err(AppsError::JobLog(err));
            }
        };
        // What the last jobs' interruption was, told to this job's client; then the job
        // is recorded as running, before it does anything.
        let told: Vec<String> = self
            .journal
            .get()
            .untold_interrupted()
            .into_iter()
            .map(flows::told)
            .collect();
        let record = flows::start_record(&request, &job_id, &who, now);
        if let Err(err) = self.journal.apply_or_undo(Change::Job(record)) {
            give_back(self);
            self.registry.discard(&self.app, &job_id);
            return Err(AppsError::Journal(err));
        }
        self.running = Some((job.clone(), !held_for_us));
        let journal = JournalHandle::new(self.journal_tx.clone());
        let ctx = flows::Ctx::new(&self.state_dir, app, job.clone(), who, journal);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            flows::run(ctx, request, now, told).await;
            if let Some(tx) = tx.upgrade() {
                let _ = tx.send(Command::Finished { job_id }).await;
            }
        });
        Ok(job)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use futures_util::future::join_all;
    use tokio_stream::StreamExt as _;

    use super::*;

    /// The race the single owner exists for: records sent while a job finishes are all
    /// kept, in memory and on disk.
    #[tokio::test]
    async fn records_sent_while_a_job_finishes_are_all_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let text = format!(
            "[agent]\nstate_dir = {state:?}\n[tls]\nca = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n\
             [[app]]\nname = \"web\"\nrepo = \"/nonexistent\"\ndeploy_to = {:?}\n",
            dir.path().join("web")
        );
        let config = crate::config::parse(&text, Path::new("/etc/hoist/agent.toml")).unwrap();
        let registry = Arc::new(Registry::new(&state).unwrap());
        let (_config_tx, config_rx) = watch::channel(Arc::new(config));
        let apps = Apps::new(config_rx, registry, Arc::new(tokio::sync::Notify::new()));

        let restart = Request::Restart {
            service: String::new(),
        };
        let job = apps
            .start("web", "restart-1", "dana", restart)
            .await
            .unwrap();
        let refusals = (0..20).map(|i| {
            let record = JobRecord {
                job_id: format!("refused-{i}"),
                kind: "deploy".into(),
                result: "refused".into(),
                ..Default::default()
            };
            apps.record("web", record)
        });
        for r in join_all(refusals).await {
            r.unwrap();
        }
        let events: Vec<_> = job.follow().collect().await;
        assert!(job.finished(), "{events:?}");

        let ids = |journal: &Journal| {
            let mut ids: Vec<String> = journal.jobs.iter().map(|j| j.job_id.clone()).collect();
            ids.sort();
            ids
        };
        let in_memory = ids(&apps.journal("web").await.unwrap());
        assert_eq!(in_memory.len(), 21, "{in_memory:?}");
        assert!(in_memory.contains(&"restart-1".to_string()));
        let on_disk = ids(&Journal::read(&Journal::path(&state, "web")));
        assert_eq!(on_disk, in_memory);

        let unknown = apps.journal("shop").await.unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "unknown app \"shop\"; this agent has: web"
        );
    }

    fn agent(dir: &Path, apps: &[&str]) -> Apps {
        let (apps, config_tx) = agent_reloadable(dir, apps);
        std::mem::forget(config_tx);
        apps
    }

    fn config_of(dir: &Path, apps: &[&str]) -> Config {
        let state = dir.join("state");
        let mut text = format!(
            "[agent]\nstate_dir = {state:?}\n[tls]\nca = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n"
        );
        for app in apps {
            text.push_str(&format!(
                "[[app]]\nname = \"{app}\"\nrepo = \"/nonexistent\"\ndeploy_to = {:?}\n",
                dir.join(app)
            ));
        }
        crate::config::parse(&text, Path::new("/etc/hoist/agent.toml")).unwrap()
    }

    fn agent_reloadable(dir: &Path, apps: &[&str]) -> (Apps, watch::Sender<Arc<Config>>) {
        let registry = Arc::new(Registry::new(&dir.join("state")).unwrap());
        let (config_tx, config_rx) = watch::channel(Arc::new(config_of(dir, apps)));
        let apps = Apps::new(config_rx, registry, Arc::new(tokio::sync::Notify::new()));
        (apps, config_tx)
    }

    fn lease(deploy_id: &str, expires_ms: Option<u64>) -> Vec<u8> {
        serde_json::to_vec(&crate::state::lock::Lease {
            holder: "dana".into(),
            deploy_id: deploy_id.into(),
            reason: "deploy job".into(),
            since_ms: journal::now_ms(),
            expires_ms,
        })
        .unwrap()
    }

    /// What a SIGKILL leaves: a job recorded `running` with its lease and a log without
    /// an end, a half-built release, temp files; a job whose journal record was written
    /// but not its log's end nor its lease release; a manual lock. After recovery: the
    /// first is `interrupted` (journal and log), its release gone, both leases released,
    /// the manual lock kept, no temp left, and the next job tells of the interruption.
    #[tokio::test]
    async fn recovery_ends_dead_jobs_releases_their_leases_and_sweeps() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let hour = Some(journal::now_ms() + 3_600_000);
        let write = |path: std::path::PathBuf, bytes: &[u8]| {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        };
        {
            // The dead agent's files.
            let registry = Registry::new(&state).unwrap();
            let running = JobRecord {
                job_id: "d-dead".into(),
                kind: "deploy".into(),
                r#ref: "main".into(),
                release: "20261122T101500Z-abc1234".into(),
                started_at_ms: journal::now_ms(),
                result: "running".into(),
                ..Default::default()
            };
            let web = Journal {
                jobs: vec![running],
                ..Default::default()
            };
            write(
                Journal::path(&state, "web"),
                &serde_json::to_vec(&web).unwrap(),
            );
            write(state.join("apps/web/lock.json"), &lease("d-dead", hour));
            write(state.join("apps/web/.journal.json.tmp-7-3"), b"{");
            let job = registry.create("d-dead", "web").unwrap();
            job.emit(hoist_proto::v1::job_event::Kind::Notice(
                hoist_proto::v1::Notice {
                    message: "building".into(),
                },
            ));
            let releases = dir.path().join("web/releases");
            write(releases.join("20261122T101500Z-abc1234/REVISION"), b"abc\n");
            write(releases.join(".20261122T101500Z-abc1234.index"), b"");
            write(
                releases.join("20261122T101600Z-def5678.tmp/index.html"),
                b"",
            );
            let backups = dir.path().join("web/backups");
            write(
                backups.join("initial.before-20261122T101500Z-abc1234.backup"),
                b"part",
            );
            write(
                backups.join("initial.before-20261121T101500Z-0000000.backup"),
                b"old",
            );

            let finished = JobRecord {
                job_id: "d-done".into(),
                kind: "deploy".into(),
                result: "succeeded".into(),
                ..Default::default()
            };
            let api = Journal {
                jobs: vec![finished],
                ..Default::default()
            };
            write(
                Journal::path(&state, "api"),
                &serde_json::to_vec(&api).unwrap(),
            );
            write(state.join("apps/api/lock.json"), &lease("d-done", hour));
            registry.create("d-done", "api").unwrap();

            write(
                state.join("apps/db/lock.json"),
                &lease("lock-20261122-ab", None),
            );
            write(state.join(".listen.tmp-7-1"), b"grpc=");

            // A journal lost (moved aside as unreadable): the job is known by its log.
            write(state.join("apps/ops/lock.json"), &lease("d-lost", hour));
            let lost = registry.create("d-lost", "ops").unwrap();
            lost.emit(hoist_proto::v1::job_event::Kind::Started(
                hoist_proto::v1::JobStarted {
                    kind: hoist_proto::v1::JobKind::Rollback.into(),
                    app: "ops".into(),
                    who: "vera".into(),
                    ..Default::default()
                },
            ));
        }

        let apps = agent(dir.path(), &["web", "api", "db", "ops"]);
        assert_eq!(apps.recover().await, ["d-dead", "d-lost"]);
        assert!(
            apps.recover().await.is_empty(),
            "recovered once per process"
        );

        let web = apps.journal("web").await.unwrap();
        let dead = web.job("d-dead").unwrap();
        assert_eq!(dead.result, "interrupted");
        assert!(dead.interrupted_at_ms > 0);
        assert!(
            dead.error.contains(
                "the half-built release 20261122T101500Z-abc1234 was removed; current is not set"
            ),
            "{}",
            dead.error
        );
        let log = apps.registry().get("d-dead").unwrap();
        assert_eq!(log.result(), Some(JobResult::Interrupted));
        assert_eq!(
            apps.registry().get("d-done").unwrap().result(),
            Some(JobResult::Succeeded)
        );
        for app in ["web", "api"] {
            assert_eq!(
                apps.state(app).await,
                (None, None),
                "{app}: no lock survives its job"
            );
            assert!(!state.join(format!("apps/{app}/lock.json")).exists());
        }
        let ops = apps.journal("ops").await.unwrap();
        let lost = ops.job("d-lost").unwrap();
        assert_eq!(
            (lost.kind.as_str(), lost.result.as_str(), lost.who.as_str()),
            ("rollback", "interrupted", "vera")
        );
        let lost_log = apps.registry().get("d-lost").unwrap();
        assert_eq!(lost_log.result(), Some(JobResult::Interrupted));
        assert_eq!(apps.state("ops").await, (None, None));
        let (manual, _) = apps.state("db").await;
        assert_eq!(
            manual.unwrap().deploy_id,
            "lock-20261122-ab",
            "a manual lock stays"
        );
        let releases: Vec<_> = std::fs::read_dir(dir.path().join("web/releases"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(releases.is_empty(), "{releases:?}");
        let backups = dir.path().join("web/backups");
        assert!(
            !backups
                .join("initial.before-20261122T101500Z-abc1234.backup")
                .exists()
        );
        assert!(
            backups
                .join("initial.before-20261121T101500Z-0000000.backup")
                .exists()
        );
        assert!(!state.join("apps/web/.journal.json.tmp-7-3").exists());
        assert!(!state.join(".listen.tmp-7-1").exists());

        // The next job tells of it, the one after does not.
        let restart = || Request::Restart {
            service: String::new(),
        };
        let notices = |events: Vec<hoist_proto::v1::JobEvent>| -> Vec<String> {
            events
                .into_iter()
                .filter_map(|e| match e.kind {
                    Some(hoist_proto::v1::job_event::Kind::Notice(n)) => Some(n.message),
                    _ => None,
                })
                .collect()
        };
        let next = apps
            .start("web", "restart-1", "vera", restart())
            .await
            .unwrap();
        let told = notices(next.follow().collect().await);
        assert!(
            told.iter().any(
                |n| n.starts_with("previous job d-dead (deploy of main, started ")
                    && n.contains("was interrupted by an agent restart at ")
            ),
            "{told:?}"
        );
        let later = apps
            .start("web", "restart-2", "vera", restart())
            .await
            .unwrap();
        let told = notices(later.follow().collect().await);
        assert!(!told.iter().any(|n| n.contains("d-dead")), "{told:?}");
    }

    /// A job's start is durable before it runs: its `running` record is in the journal
    /// file while it runs; a journal that cannot be written refuses the job and leaves
    /// no lease behind.
    #[tokio::test]
    async fn a_job_is_recorded_running_before_it_runs_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let apps = agent(dir.path(), &["web"]);
        apps.recover().await;
        // Make the journal unwritable: its directory is a file's place.
        let app_dir = state.join("apps/web");
        std::fs::create_dir_all(&app_dir).unwrap();
        std::fs::create_dir_all(Journal::path(&state, "web")).unwrap();
        let refused = apps
            .start(
                "web",
                "env-1",
                "dana",
                Request::Restart {
                    service: String::new(),
                },
            )
            .await;
        assert!(
            matches!(refused, Err(AppsError::Journal(_))),
            "{:?}",
            refused.err()
        );
        assert_eq!(apps.state("web").await, (None, None));
        assert!(apps.journal("web").await.unwrap().jobs.is_empty());
        assert!(!apps.registry().knows("env-1"));
    }

    /// An app a reload adds is recovered before its first job too.
    #[tokio::test]
    async fn an_app_added_by_a_reload_is_recovered_first() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let dead = Journal {
            jobs: vec![JobRecord {
                job_id: "d-old".into(),
                kind: "deploy".into(),
                result: "running".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        std::fs::create_dir_all(state.join("apps/api")).unwrap();
        std::fs::write(
            Journal::path(&state, "api"),
            serde_json::to_vec(&dead).unwrap(),
        )
        .unwrap();
        std::fs::write(state.join("apps/api/lock.json"), lease("d-old", None)).unwrap();
        let (apps, config_tx) = agent_reloadable(dir.path(), &["web"]);
        assert!(apps.recover().await.is_empty());
        config_tx.send_replace(Arc::new(config_of(dir.path(), &["web", "api"])));
        let journal = apps.journal("api").await.unwrap();
        assert_eq!(journal.job("d-old").unwrap().result, "interrupted");
        assert_eq!(apps.state("api").await, (None, None));
    }
}
