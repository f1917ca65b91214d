//! The `hoist.v1.Agent` gRPC service. Handlers validate, read the owners' published
//! state, and answer; authorization already happened in [`crate::rpc::authz`].

use std::{pin::Pin, sync::Arc, time::Duration, time::SystemTime};

use hoist_proto::v1::{
    self as pb, GetInfoRequest, GetInfoResponse, JobEvent, StatusRequest, StatusResponse,
    WatchStatusRequest, agent_server::Agent,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, StreamExt as _, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use crate::{
    apps::Apps,
    config::{App, Config, TaskRole},
    flows::{self, events, events::Job},
    host::{
        logs,
        services::{self, Toggle},
    },
    monitor,
    rpc::{
        bounds,
        tls::{Peer, Role},
    },
    state::{
        envfile,
        journal::{self, JobRecord},
        release,
    },
};

/// A stream of a job's events, as returned by Deploy, Rollback, Restart and Attach.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<JobEvent, Status>> + Send>>;

/// Every event of `job` from the first, then live ones until it finishes.
fn follow(job: &Arc<Job>) -> EventStream {
    Box::pin(job.follow().map(Ok))
}

#[derive(Clone)]
pub struct AgentService {
    config: watch::Receiver<Arc<Config>>,
    snapshot: watch::Receiver<Arc<monitor::Snapshot>>,
    apps: Apps,
    /// Becomes true when the agent starts draining: live streams end then.
    stopping: watch::Receiver<bool>,
    started_at: SystemTime,
    /// `hoist logs` streams at once (each may hold a tool or open files).
    log_streams: Arc<tokio::sync::Semaphore>,
}

/// The most `Logs` streams served at once.
pub const MAX_LOG_STREAMS: usize = 16;

impl AgentService {
    pub fn new(
        config: watch::Receiver<Arc<Config>>,
        snapshot: watch::Receiver<Arc<monitor::Snapshot>>,
        apps: Apps,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        AgentService {
            config,
            snapshot,
            apps,
            stopping,
            started_at: SystemTime::now(),
            log_streams: Arc::new(tokio::sync::Semaphore::new(MAX_LOG_STREAMS)),
        }
    }

    /// Starts (or finds, by id) a job and streams its events from the first.
    /// The app named `name`, its directories and its journal: what the read-only
    /// calls about releases and backups start from.
    async fn app_on_disk(
        &self,
        name: &str,
    ) -> Result<(App, release::Layout, journal::Journal), Status> {
        let app = {
            let config = self.config.borrow().clone();
            find_app(&config, name)?.clone()
        };
        let layout = release::Layout::new(&app.deploy_to);
        let journal = self.apps.journal(&app.name).await?;
        Ok((app, layout, journal))
    }

    async fn run_job(
        &self,
        app: &str,
        job_id: &str,
        who: &str,
        request: flows::Request,
    ) -> Result<Response<EventStream>, Status> {
        let job = self.apps.start(app, job_id, who, request).await?;
        Ok(Response::new(follow(&job)))
    }

    /// Checks an env edit (names and values; nothing empty) and runs it as a job.
    async fn env_job(
        &self,
        app: &str,
        job_id: &str,
        who: &str,
        set: Vec<(String, String)>,
        unset: Vec<String>,
        restart: bool,
    ) -> Result<Response<EventStream>, Status> {
        for (key, value) in &set {
            envfile::check_assignment(key, value)?;
        }
        for key in &unset {
            envfile::check_assignment(key, "")?;
        }
        if set.is_empty() && unset.is_empty() {
            return Err(Status::invalid_argument(
                "nothing to change; pass KEY=VALUE to set or KEY to unset",
            ));
        }
        let job_id = job_id_or_new(job_id, "env");
        let request = flows::Request::Env {
            set,
            unset,
            restart,
        };
        self.run_job(app, &job_id, who, request).await
    }

    /// Refuses a service name none of the app's services (or compose services) has.
    async fn check_service(&self, app: &str, service: &str) -> Result<(), Status> {
        let config = self.config.borrow().clone();
        let app = find_app(&config, app)?;
        if service.is_empty() {
            return Ok(());
        }
        let layout = release::Layout::new(&app.deploy_to);
        let dir = layout
            .current()
            .map_or_else(|| app.deploy_to.clone(), |c| layout.release(&c));
        services::select(&app.name, app.all_services(), &dir, service)
            .await
            .map_err(|e| Status::not_found(e.to_string()))?;
        Ok(())
    }

    async fn toggle_job(
        &self,
        app: &str,
        service: &str,
        job_id: &str,
        who: &str,
        toggle: Toggle,
    ) -> Result<Response<EventStream>, Status> {
        self.check_service(app, service).await?;
        let job_id = job_id_or_new(job_id, toggle.as_str());
        let request = flows::Request::Toggle {
            service: service.to_string(),
            toggle,
        };
        self.run_job(app, &job_id, who, request).await
    }

    async fn status_now(&self, app: &str) -> Result<StatusResponse, Status> {
        let config = self.config.borrow().clone();
        known(&config, app)?;
        let snapshot = self.snapshot.borrow().clone();
        let mut status = monitor::status(&config, &snapshot, app).await;
        for app in &mut status.apps {
            let (lock, running) = self.apps.state(&app.name).await;
            app.lock = lock;
            app.running_job = running.unwrap_or_default();
        }
        Ok(status)
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn get_info(
        &self,
        request: Request<GetInfoRequest>,
    ) -> Result<Response<GetInfoResponse>, Status> {
        let request = bounds::checked(request)?;
        let peer = request.extensions().get::<Peer>();
        let config = self.config.borrow().clone();
        Ok(Response::new(GetInfoResponse {
            version: crate::VERSION.into(),
            hostname: crate::hostname(),
            apps: config.apps.iter().map(|a| a.name.clone()).collect(),
            started_at: Some(self.started_at.into()),
            caller_role: match peer.and_then(|p| p.role) {
                Some(Role::Viewer) => pb::Role::Viewer,
                Some(Role::Deployer) => pb::Role::Deployer,
                None => pb::Role::Unspecified,
            }
            .into(),
            caller_identity: peer.map(|p| p.name.clone()).unwrap_or_default(),
        }))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let request = bounds::checked(request)?;
        Ok(Response::new(
            self.status_now(&request.get_ref().app).await?,
        ))
    }

    type WatchStatusStream = ReceiverStream<Result<StatusResponse, Status>>;

    async fn watch_status(
        &self,
        request: Request<WatchStatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        let request = bounds::checked(request)?;
        let req = request.into_inner();
        known(&self.config.borrow(), &req.app)?;
        let (tx, rx) = mpsc::channel(2);
        let this = self.clone();
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            loop {
                let status = this.status_now(&req.app).await;
                if tx.send(status).await.is_err() {
                    return; // the client went away
                }
                let interval = match req.interval_ms {
                    0 => this.config.borrow().agent.health_interval,
                    ms => Duration::from_millis(ms),
                };
                tokio::select! {
                    _ = tokio::time::sleep(interval.max(bounds::MIN_WATCH_INTERVAL)) => {}
                    _ = tx.closed() => return,
                    _ = stopping.wait_for(|s| *s) => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type DeployStream = EventStream;
    async fn deploy(
        &self,
        request: Request<pb::DeployRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let request = bounds::checked(request)?;
        let who = who(&request);
        let req = request.into_inner();
        release::validate_ref(&req.r#ref)?;
        if !req.release_id.is_empty() {
            release::chosen_release_commit(&req.release_id)?;
        }
        self.run_job(
            &req.app,
            &req.deploy_id,
            &who,
            flows::Request::Deploy {
                r#ref: req.r#ref,
                release_id: req.release_id,
                migrate: req.migrate,
                allow_missing_env: req.allow_missing_env,
                forced: req.forced,
                reason: req.reason,
            },
        )
        .await
    }

    type RollbackStream = EventStream;
    async fn rollback(
        &self,
        request: Request<pb::RollbackRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let request = bounds::checked(request)?;
        let who = who(&request);
        let req = request.into_inner();
        if !req.to_release.is_empty() && release::validate_release_id(&req.to_release).is_err() {
            // A ref or a commit (resolved against the journal, never used as a path).
            release::validate_ref(&req.to_release)?;
        }
        if !req.of_release.is_empty() {
            release::validate_release_id(&req.of_release)?;
        }
        if (!req.of_release.is_empty() || req.ahead_only) && !req.migrate {
            return Err(Status::invalid_argument(
                "--of reverses a release's migrations: it needs --migrate",
            ));
        }
        if !req.of_release.is_empty() && !req.to_release.is_empty() {
            return Err(Status::invalid_argument(
                "--of RELEASE keeps the current release; it does not go with --to",
            ));
        }
        if req.restore_db && !req.confirm_restore {
            return Err(Status::invalid_argument(
                "restoring the database replaces everything written since that release's backup; \
                 confirm with --yes",
            ));
        }
        let job_id = job_id_or_new(&req.job_id, "rollback");
        self.run_job(
            &req.app,
            &job_id,
            &who,
            flows::Request::Rollback {
                to_release: req.to_release,
                migrate: req.migrate,
                restore_db: req.restore_db,
                reason: req.reason,
                of_release: req.of_release,
                ahead_only: req.ahead_only,
            },
        )
        .await
    }

    type RestartStream = EventStream;
    async fn restart(
        &self,
        request: Request<pb::RestartRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let request = bounds::checked(request)?;
        let who = who(&request);
        let req = request.into_inner();
        self.check_service(&req.app, &req.service).await?;
        let job_id = job_id_or_new(&req.job_id, "restart");
        self.run_job(
            &req.app,
            &job_id,
            &who,
            flows::Request::Restart {
                service: req.service,
            },
        )
        .await
    }

    type StopStream = EventStream;
    async fn stop(
        &self,
        request: Request<pb::StopRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let request = bounds::checked(request)?;
        let who = who(&request);
        let req = request.into_inner();
        self.toggle_job(&req.app, &req.service, &req.job_id, &who, Toggle::Stop)
            .await
    }

    type StartStream = EventStream;
    async fn start(
        &self,
        request: Request<pb::StartRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let request = bounds::checked(request)?;
        let who = who(&request);
        let req = request.into_inner();
        self.toggle_job(&req.app, &req.service, &req.job_id, &who, Toggle::Start)
            .await
    }

    type RunTaskStream = EventStream;
    async fn run_task(
        &self,
        request: Request<pb::RunTaskRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let request = bounds::checked(request)?;
        let who = who(&request);
        let role = request.extensions().get::<Peer>().and_then(|p| p.role);
        let req = request.into_inner();
        {
            let config = self.config.borrow().clone();
            let app = find_app(&config, &req.app)?;
            if !hoist_config::is_name(&req.task) {
                return Err(Status::invalid_argument(format!(
                    "invalid task name ({} bytes); task names are 1-63 characters of a-z, 0-9, \
                     '-' and '_'; app {}'s tasks: {}",
                    req.task.len(),
                    app.name,
                    flows::task::declared(app)
                )));
            }
            let task = app.tasks.get(&req.task).ok_or_else(|| {
                Status::not_found(format!(
                    "app {} declares no task {:?}; its tasks: {}",
                    app.name,
                    req.task,
                    flows::task::declared(app)
                ))
            })?;
            let needed = match task.role {
                TaskRole::Viewer => Role::Viewer,
                TaskRole::Deployer => Role::Deployer,
            };
            if role.is_none_or(|r| r < needed) {
                return Err(Status::permission_denied(format!(
                    "task {} of app {} needs role {}; {who} has role {}",
                    req.task,
                    app.name,
                    task.role.as_str(),
                    role.map_or("none".to_string(), |r| r.to_string())
                )));
            }
            if release::Layout::new(&app.deploy_to).current().is_none() {
                return Err(Status::failed_precondition(format!(
                    "app {} has nothing deployed on this host (no current release); deploy \
                     first, then run task {}",
                    app.name, req.task
                )));
            }
        }
        let job_id = job_id_or_new(&req.job_id, "task");
        self.run_job(
            &req.app,
            &job_id,
            &who,
            flows::Request::Task { task: req.task },
        )
        .await
    }

    type LogsStream = Pin<Box<dyn Stream<Item = Result<pb::LogLine, Status>> + Send>>;
    async fn logs(
        &self,
        request: Request<pb::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let req = bounds::checked(request)?.into_inner();
        let app = find_app(&self.config.borrow().clone(), &req.app)?.clone();
        let sources = if req.source.is_empty() {
            if app.logs.is_empty() {
                return Err(Status::failed_precondition(format!(
                    "app {} declares no log sources; add [[app.logs]] entries (path, unit or \
                     compose_service) to the agent config",
                    app.name
                )));
            }
            app.logs.clone()
        } else {
            vec![
                app.log_source(&req.source)
                    .map_err(|e| Status::not_found(e.to_string()))?
                    .clone(),
            ]
        };
        let grep = match req.grep.as_str() {
            "" => None,
            // (Checked by the bounds already.)
            text => Some(
                hoist_config::Pattern::parse(text)
                    .map_err(|e| Status::invalid_argument(format!("grep: {e}")))?,
            ),
        };
        let opts = logs::Options {
            lines: match req.lines {
                0 => 100,
                n => n as usize,
            },
            follow: (req.follow_ms > 0).then(|| Duration::from_millis(req.follow_ms)),
            grep,
        };
        let permit = self.log_streams.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "this agent already serves {MAX_LOG_STREAMS} log streams; end one (or wait for \
                 a -f to reach its --for) and ask again"
            ))
        })?;
        let (tx, rx) = mpsc::channel(64);
        let mut stopping = self.stopping.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let closed = tx.clone();
            tokio::select! {
                () = logs::read(&app, &sources, &opts, tx) => {}
                () = closed.closed() => {}
                _ = stopping.wait_for(|s| *s) => {}
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx).map(Ok))))
    }

    type AttachStream = EventStream;
    async fn attach(
        &self,
        request: Request<pb::AttachRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let request = bounds::checked(request)?;
        let id = request.into_inner().job_id;
        events::validate_id(&id)?;
        let job = self.apps.registry().get(&id).ok_or_else(|| {
            Status::not_found(format!(
                "no job {id} on this host; `hoist log APP` lists the jobs"
            ))
        })?;
        Ok(Response::new(follow(&job)))
    }

    async fn job_log(
        &self,
        request: Request<pb::JobLogRequest>,
    ) -> Result<Response<pb::JobLogResponse>, Status> {
        let request = bounds::checked(request)?;
        let req = request.into_inner();
        known(&self.config.borrow(), &req.app)?;
        if req.app.is_empty() {
            return Err(Status::invalid_argument("name the app whose log you want"));
        }
        if req.job_id.is_empty() {
            let journal = self.apps.journal(&req.app).await?;
            let limit = if req.limit == 0 {
                20
            } else {
                req.limit as usize
            };
            // The running job is recorded (result `running`) before it does any work,
            // and it is the newest: it comes first.
            let jobs = journal.summaries(&req.app, limit);
            return Ok(Response::new(pb::JobLogResponse {
                jobs,
                ..Default::default()
            }));
        }
        events::validate_id(&req.job_id)?;
        let job = self
            .apps
            .registry()
            .get(&req.job_id)
            .filter(|j| j.app == req.app || j.app.is_empty())
            .ok_or_else(|| {
                Status::not_found(format!("app {} has no job {}", req.app, req.job_id))
            })?;
        let max_bytes = match req.max_bytes as usize {
            0 => events::MAX_PAGE_BYTES,
            n => n.min(events::MAX_PAGE_BYTES),
        };
        let page = job
            .page(req.from_seq, &req.page_token, max_bytes)
            .map_err(|err| {
                Status::internal(format!("cannot read the log of job {}: {err}", req.job_id))
            })?;
        Ok(Response::new(pb::JobLogResponse {
            jobs: Vec::new(),
            events: page.events,
            next_seq: page.next_seq,
            more: page.more,
            next_page_token: page.next_token,
        }))
    }

    async fn list_releases(
        &self,
        request: Request<pb::ListReleasesRequest>,
    ) -> Result<Response<pb::ListReleasesResponse>, Status> {
        let request = bounds::checked(request)?;
        let req = request.into_inner();
        let (_, layout, journal) = self.app_on_disk(&req.app).await?;
        let releases = journal.list(
            &layout.list(),
            &layout.current().unwrap_or_default(),
            &layout.previous(&journal).unwrap_or_default(),
        );
        Ok(Response::new(pb::ListReleasesResponse { releases }))
    }

    type BackupStream = EventStream;
    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let request = bounds::checked(request)?;
        let who = who(&request);
        let req = request.into_inner();
        let job_id = job_id_or_new(&req.job_id, "backup");
        self.run_job(&req.app, &job_id, &who, flows::Request::Backup)
            .await
    }

    async fn list_backups(
        &self,
        request: Request<pb::ListBackupsRequest>,
    ) -> Result<Response<pb::ListBackupsResponse>, Status> {
        let request = bounds::checked(request)?;
        let req = request.into_inner();
        let (_, layout, journal) = self.app_on_disk(&req.app).await?;
        let backups = journal.list_backups(
            &layout.backup_files(),
            &layout.current().unwrap_or_default(),
        );
        Ok(Response::new(pb::ListBackupsResponse { backups }))
    }

    type RestoreStream = EventStream;
    async fn restore(
        &self,
        request: Request<pb::RestoreRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let request = bounds::checked(request)?;
        let who = who(&request);
        let req = request.into_inner();
        if !req.confirm {
            return Err(Status::invalid_argument(
                "a restore replaces the database with the backup, losing every write made \
                 since it was taken; confirm with --yes",
            ));
        }
        if !req.backup_id.is_empty() {
            release::validate_release_id(&req.backup_id)?;
        }
        let job_id = job_id_or_new(&req.job_id, "restore");
        self.run_job(
            &req.app,
            &job_id,
            &who,
            flows::Request::Restore {
                backup_id: req.backup_id,
            },
        )
        .await
    }

    async fn pending_migrations(
        &self,
        request: Request<pb::PendingMigrationsRequest>,
    ) -> Result<Response<pb::PendingMigrationsResponse>, Status> {
        let request = bounds::checked(request)?;
        let req = request.into_inner();
        let app = {
            let config = self.config.borrow().clone();
            find_app(&config, &req.app)?.clone()
        };
        Ok(Response::new(flows::pending::check(&app).await))
    }

    async fn plan_deploy(
        &self,
        request: Request<pb::PlanDeployRequest>,
    ) -> Result<Response<pb::PlanDeployResponse>, Status> {
        let request = bounds::checked(request)?;
        let req = request.into_inner();
        release::validate_ref(&req.r#ref)?;
        let config = self.config.borrow().clone();
        let app = find_app(&config, &req.app)?.clone();
        if let (_, Some(job)) = self.apps.state(&app.name).await {
            return Err(Status::failed_precondition(format!(
                "job {job} of {} is running; ask again when it has finished",
                app.name
            )));
        }
        let layout = release::Layout::new(&app.deploy_to);
        let steps = flows::planned_deploy_steps(&app, req.migrate);
        let declares_migrate = app.steps.migrate.is_some();
        let commit = flows::resolve_ref(&config.agent.state_dir, app, &req.r#ref)
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        Ok(Response::new(pb::PlanDeployResponse {
            commit,
            current_release: layout.current().unwrap_or_default(),
            releases: layout.list(),
            steps,
            declares_migrate,
        }))
    }

    async fn plan_rollback(
        &self,
        request: Request<pb::PlanRollbackRequest>,
    ) -> Result<Response<pb::PlanRollbackResponse>, Status> {
        let request = bounds::checked(request)?;
        let req = request.into_inner();
        if !req.to.is_empty() {
            release::validate_ref(&req.to)?;
        }
        let (app, layout, journal) = self.app_on_disk(&req.app).await?;
        let plan = flows::plan_rollback(
            &app,
            &layout,
            &journal,
            &req.to,
            req.migrate,
            req.restore_db,
        )?;
        Ok(Response::new(pb::PlanRollbackResponse {
            release: plan.target,
            commit: plan.commit,
            current_release: plan.current,
            steps: plan.steps,
        }))
    }

    async fn lock(
        &self,
        request: Request<pb::LockRequest>,
    ) -> Result<Response<pb::LockResponse>, Status> {
        let request = bounds::checked(request)?;
        let who = who(&request);
        let req = request.into_inner();
        let id = if req.deploy_id.is_empty() {
            format!("lock-{who}")
        } else {
            req.deploy_id
        };
        let ttl = (req.ttl_ms > 0).then(|| Duration::from_millis(req.ttl_ms));
        let lock = self
            .apps
            .lock(&req.app, &who, &id, &req.reason, ttl)
            .await?;
        Ok(Response::new(pb::LockResponse { lock: Some(lock) }))
    }

    async fn unlock(
        &self,
        request: Request<pb::UnlockRequest>,
    ) -> Result<Response<pb::UnlockResponse>, Status> {
        let request = bounds::checked(request)?;
        let who = who(&request);
        let req = request.into_inner();
        let id = if req.deploy_id.is_empty() {
            format!("lock-{who}")
        } else {
            req.deploy_id
        };
        self.apps.unlock(&req.app, &id, req.force).await?;
        Ok(Response::new(pb::UnlockResponse {}))
    }

    async fn env_list(
        &self,
        request: Request<pb::EnvListRequest>,
    ) -> Result<Response<pb::EnvListResponse>, Status> {
        let request = bounds::checked(request)?;
        let role = request.extensions().get::<Peer>().and_then(|p| p.role);
        let req = request.into_inner();
        if req.show && role != Some(Role::Deployer) {
            return Err(Status::permission_denied(
                "showing env values needs role deployer; without --show the keys are listed",
            ));
        }
        let config = self.config.borrow().clone();
        let app = find_app(&config, &req.app)?;
        let shared = release::Layout::new(&app.deploy_to)
            .shared_dir()
            .map_err(|e| match e.not_found() {
                true => envfile::EnvFileError::Missing {
                    name: "`shared/.env`".into(),
                },
                false => e.into(),
            })?;
        let vars = envfile::list(&shared, ".env", req.show)?;
        Ok(Response::new(pb::EnvListResponse { vars }))
    }

    type EnvSetStream = EventStream;
    async fn env_set(
        &self,
        request: Request<pb::EnvSetRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let request = bounds::checked(request)?;
        let who = who(&request);
        let req = request.into_inner();
        let set: Vec<(String, String)> = req.vars.into_iter().map(|v| (v.key, v.value)).collect();
        self.env_job(&req.app, &req.job_id, &who, set, Vec::new(), req.restart)
            .await
    }

    type EnvUnsetStream = EventStream;
    async fn env_unset(
        &self,
        request: Request<pb::EnvUnsetRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let request = bounds::checked(request)?;
        let who = who(&request);
        let req = request.into_inner();
        self.env_job(
            &req.app,
            &req.job_id,
            &who,
            Vec::new(),
            req.keys,
            req.restart,
        )
        .await
    }
    async fn record_refusal(
        &self,
        request: Request<pb::RecordRefusalRequest>,
    ) -> Result<Response<pb::RecordRefusalResponse>, Status> {
        let request = bounds::checked(request)?;
        let who = who(&request);
        let req = request.into_inner();
        events::validate_id(&req.job_id)?;
        if req.reason.trim().is_empty() {
            return Err(Status::invalid_argument(
                "say why the operation was refused",
            ));
        }
        let config = self.config.borrow().clone();
        let app = find_app(&config, &req.app)?;
        let kind = journal::kind_name(req.kind());
        let record = JobRecord {
            job_id: req.job_id,
            kind: kind.into(),
            r#ref: req.r#ref,
            who,
            started_at_ms: journal::now_ms(),
            result: journal::result_name(pb::JobResult::Refused).into(),
            error: req.reason,
            ..Default::default()
        };
        self.apps.record(&app.name, record).await?;
        Ok(Response::new(pb::RecordRefusalResponse {}))
    }
}

/// A job that has not finished, as a journal summary with result `running`: kind,
/// ref, who and start from its first event.
/// The caller's name from its certificate: the author of jobs and holder of locks.
fn who<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<Peer>()
        .map(|p| p.name.clone())
        .unwrap_or_else(|| "unknown".into())
}

/// The app a request names, when it names one (an empty name means every app).
fn known<'a>(config: &'a Config, name: &str) -> Result<Option<&'a App>, Status> {
    if name.is_empty() {
        return Ok(None);
    }
    Ok(Some(config.app(name)?))
}

/// The app a request must name.
fn find_app<'a>(config: &'a Config, name: &str) -> Result<&'a App, Status> {
    known(config, name)?.ok_or_else(|| Status::invalid_argument("name the app"))
}

/// The controller names its jobs; older or hand-made clients may not. A new id is
/// `KIND-STAMP-RANDOM`, e.g. `restart-20261122T101500Z-5f0c2a9e1b7d`: ordered by time
/// to the second, unique by 48 random bits.
fn job_id_or_new(id: &str, kind: &str) -> String {
    if !id.is_empty() {
        return id.to_string();
    }
    let now = journal::now_ms();
    format!(
        "{kind}-{}-{:012x}",
        release::utc_stamp(now / 1000),
        random_u64() & 0xffff_ffff_ffff
    )
}

/// 64 bits from the kernel's random source; should it be unreadable, the clock and the
/// pid, mixed (still distinct per call through a counter).
fn random_u64() -> u64 {
    use std::io::Read as _;
    let mut bytes = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok()
    {
        return u64::from_le_bytes(bytes);
    }
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    (nanos ^ (u64::from(std::process::id()) << 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_job_ids_are_valid_and_distinct() {
        let a = job_id_or_new("", "restart");
        let b = job_id_or_new("", "restart");
        assert_ne!(a, b);
        events::validate_id(&a).unwrap();
        assert!(
            a.starts_with("restart-") && a.len() == "restart-".len() + 16 + 1 + 12,
            "{a}"
        );
        assert_eq!(job_id_or_new("d-1", "restart"), "d-1");
    }
}
