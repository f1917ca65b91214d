//! One task owns each app's deploy state: its lock, its running job and its journal.
//! RPC handlers validate, then send the owner a command and await its reply; jobs run in
//! their own tasks and send the owner their journal changes ([`JournalRequest`]) and,
//! when done, that they finished. The owner is the only writer of the app's journal and
//! lock files, so two writers can never lose each other's records.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use hoist_proto::v1::LockInfo;
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
        running::Running,
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
    /// Startup: finish what a previous agent left running.
    Recover {
        reply: oneshot::Sender<Option<String>>,
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

    /// Starts every configured app's owner, which marks jobs that died with a previous
    /// agent `interrupted` and removes their half-built releases. Called once before
    /// serving; returns the interrupted jobs' ids.
    pub async fn recover(&self) -> Vec<String> {
        let config = self.config.borrow().clone();
        let mut interrupted = Vec::new();
        for app in &config.apps {
            let (reply, rx) = oneshot::channel();
            let Ok(owner) = self.owner(&app.name) else {
                continue;
            };
            if owner.send(Command::Recover { reply }).await.is_ok()
                && let Ok(Some(id)) = rx.await
            {
                interrupted.push(id);
            }
        }
        interrupted
    }

    fn owner(&self, app: &str) -> Result<mpsc::Sender<Command>, AppsError> {
        let config = self.config.borrow().clone();
        config.app(app)?;
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = owners.get(app).filter(|tx| !tx.is_closed()) {
            return Ok(tx.clone());
        }
        let (tx, rx) = mpsc::channel(32);
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

    /// Records the end of a job a previous agent left running, and frees its lock.
    fn recover(&mut self, now: u64) -> Option<String> {
        let config = self.config.borrow().clone();
        let app = config.app(&self.app).ok()?;
        let record = flows::recover(&self.state_dir, app, &self.registry)?;
        let id = record.job_id.clone();
        if let Err(err) = self.journal.apply(Change::Job(record)) {
            tracing::error!(app = %self.app, error = %err, "cannot record the interrupted job");
        }
        Running::clear(&self.state_dir, &self.app);
        // A lock taken by the dead job dies with it.
        let _ = self.lock.release(&self.app, &id, false, now);
        Some(id)
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
        let job = self
            .registry
            .create(&job_id, &self.app)
            .map_err(AppsError::JobLog)?;
        self.running = Some((job.clone(), !held_for_us));
        let journal = JournalHandle::new(self.journal_tx.clone());
        let ctx = flows::Ctx::new(&self.state_dir, app, job.clone(), who, journal);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            flows::run(ctx, request).await;
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
}
