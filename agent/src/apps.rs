//! One task owns each app's deploy state (its lock and its running job). RPC handlers
//! validate, then send the owner a command and await its reply; jobs run in their own
//! tasks and report back when done.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use hoist_proto::v1::LockInfo;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::Status;

use crate::{
    config::Config,
    flows::{
        self, Request,
        events::{Job, Registry},
    },
    state::{journal, lock::AppLock},
};

type Reply<T> = oneshot::Sender<Result<T, Status>>;

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

    /// Marks jobs that died with a previous agent `interrupted` and removes their
    /// half-built releases. Called once before serving.
    pub fn recover(&self) -> Vec<String> {
        let config = self.config.borrow().clone();
        config
            .apps
            .iter()
            .filter_map(|app| {
                let id = flows::recover(&config.agent.state_dir, app, &self.registry)?;
                // A lock taken by the dead job dies with it.
                let mut lock = AppLock::load(&config.agent.state_dir, &app.name);
                let _ = lock.release(&app.name, &id, false, journal::now_ms());
                Some(id)
            })
            .collect()
    }

    fn owner(&self, app: &str) -> Result<mpsc::Sender<Command>, Status> {
        let config = self.config.borrow().clone();
        if !config.apps.iter().any(|a| a.name == app) {
            let known: Vec<&str> = config.apps.iter().map(|a| a.name.as_str()).collect();
            return Err(Status::not_found(format!(
                "unknown app {app:?}; this agent has: {}",
                if known.is_empty() {
                    "no apps".into()
                } else {
                    known.join(", ")
                }
            )));
        }
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = owners.get(app).filter(|tx| !tx.is_closed()) {
            return Ok(tx.clone());
        }
        let (tx, rx) = mpsc::channel(32);
        let owner = Owner {
            app: app.to_string(),
            state_dir: config.agent.state_dir.clone(),
            config: self.config.clone(),
            registry: self.registry.clone(),
            lock: AppLock::load(&config.agent.state_dir, app),
            running: None,
            tx: tx.downgrade(),
            recheck: self.recheck.clone(),
        };
        tokio::spawn(owner.run(rx));
        owners.insert(app.to_string(), tx.clone());
        Ok(tx)
    }

    async fn ask<T>(&self, app: &str, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, Status> {
        let (reply, rx) = oneshot::channel();
        self.owner(app)?
            .send(make(reply))
            .await
            .map_err(|_| Status::unavailable("the app's owner task stopped; retry"))?;
        rx.await
            .map_err(|_| Status::unavailable("the app's owner task stopped; retry"))?
    }

    /// Starts a job, or returns the existing one with the same id.
    pub async fn start(
        &self,
        app: &str,
        job_id: &str,
        who: &str,
        request: Request,
    ) -> Result<Arc<Job>, Status> {
        crate::flows::events::validate_id(job_id)?;
        if let Some(job) = self.registry.get(job_id) {
            if job.app != app && !job.app.is_empty() {
                return Err(Status::already_exists(format!(
                    "job id {job_id} is already used by app {}",
                    job.app
                )));
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
    ) -> Result<LockInfo, Status> {
        self.ask(app, |reply| Command::Lock {
            holder: holder.into(),
            deploy_id: deploy_id.into(),
            reason: reason.into(),
            ttl,
            reply,
        })
        .await
    }

    pub async fn unlock(&self, app: &str, deploy_id: &str, force: bool) -> Result<(), Status> {
        self.ask(app, |reply| Command::Unlock {
            deploy_id: deploy_id.into(),
            force,
            reply,
        })
        .await
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
    /// The running job and whether it took the lock itself (rather than running under
    /// a lease the controller took first).
    running: Option<(Arc<Job>, bool)>,
    tx: mpsc::WeakSender<Command>,
    recheck: Arc<tokio::sync::Notify>,
}

impl Owner {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(cmd) = rx.recv().await {
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
                        .map(|l| l.info());
                    let _ = reply.send(r);
                }
                Command::Unlock {
                    deploy_id,
                    force,
                    reply,
                } => {
                    let r = match &self.running {
                        Some((job, true)) if job.id == deploy_id && !force => {
                            Err(Status::failed_precondition(format!(
                                "job {} is running and holds the lock; it releases it when it ends",
                                job.id
                            )))
                        }
                        _ => self.lock.release(&self.app, &deploy_id, force, now),
                    };
                    let _ = reply.send(r);
                }
                Command::State { reply } => {
                    let lock = self.lock.current(now).map(|l| l.info());
                    let running = self.running.as_ref().map(|(j, _)| j.id.clone());
                    let _ = reply.send((lock, running));
                }
                Command::Finished { job_id } => {
                    if let Some((job, took_lock)) = self.running.take_if(|(j, _)| j.id == job_id) {
                        if took_lock {
                            let _ = self.lock.release(&self.app, &job.id, false, now);
                        }
                        self.registry.retire(&job.id);
                        self.recheck.notify_one();
                        // Event logs of jobs the journal no longer lists go too.
                        let journal = journal::Journal::load(&journal::Journal::path(
                            &self.state_dir,
                            &self.app,
                        ));
                        self.registry
                            .prune(&self.app, &|id| journal.jobs.iter().any(|j| j.job_id == id));
                    }
                }
            }
        }
    }

    fn start(
        &mut self,
        job_id: String,
        who: String,
        request: Request,
        now: u64,
    ) -> Result<Arc<Job>, Status> {
        if let Some((job, _)) = &self.running {
            if job.id == job_id {
                return Ok(job.clone());
            }
            return Err(Status::failed_precondition(format!(
                "app {} is busy with job {}; `hoist attach {}` to follow it",
                self.app, job.id, job.id
            )));
        }
        let config = self.config.borrow().clone();
        let app = config
            .apps
            .iter()
            .find(|a| a.name == self.app)
            .cloned()
            .ok_or_else(|| {
                Status::not_found(format!("app {} is no longer configured", self.app))
            })?;
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
                &format!("{} job", crate::state::journal::kind_name(request.kind())),
                Some(flows::JOB_LEASE),
                now,
            )?;
        }
        let job = self
            .registry
            .create(&job_id, &self.app)
            .map_err(|e| Status::internal(format!("cannot create the job log: {e}")))?;
        self.running = Some((job.clone(), !held_for_us));
        let ctx = flows::Ctx::new(&self.state_dir, app, job.clone(), who);
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
