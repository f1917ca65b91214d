//! The `hoist.v1.Agent` gRPC service. Handlers validate, read the owners' published
//! state, and answer; authorization already happened in [`crate::authz`].

use std::{pin::Pin, sync::Arc, time::Duration, time::SystemTime};

use hoist_proto::v1::{
    self as pb, GetInfoRequest, GetInfoResponse, JobEvent, StatusRequest, StatusResponse,
    WatchStatusRequest, agent_server::Agent,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use crate::{config::Config, monitor, tls::Peer, tls::Role};

type EventStream = Pin<Box<dyn Stream<Item = Result<JobEvent, Status>> + Send>>;

/// Shortest WatchStatus interval a client may ask for.
const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Clone)]
pub struct AgentService {
    config: watch::Receiver<Arc<Config>>,
    snapshot: watch::Receiver<Arc<monitor::Snapshot>>,
    started_at: SystemTime,
}

impl AgentService {
    pub fn new(
        config: watch::Receiver<Arc<Config>>,
        snapshot: watch::Receiver<Arc<monitor::Snapshot>>,
    ) -> Self {
        AgentService {
            config,
            snapshot,
            started_at: SystemTime::now(),
        }
    }

    fn check_app(config: &Config, app: &str) -> Result<(), Status> {
        if app.is_empty() || config.apps.iter().any(|a| a.name == app) {
            return Ok(());
        }
        let known: Vec<&str> = config.apps.iter().map(|a| a.name.as_str()).collect();
        Err(Status::not_found(format!(
            "unknown app {app:?}; this agent has: {}",
            if known.is_empty() {
                "no apps".to_string()
            } else {
                known.join(", ")
            }
        )))
    }

    async fn status_now(&self, app: &str) -> Result<StatusResponse, Status> {
        let config = self.config.borrow().clone();
        Self::check_app(&config, app)?;
        let snapshot = self.snapshot.borrow().clone();
        Ok(monitor::status(&config, &snapshot, app).await)
    }
}

/// The deploy engine's RPCs are part of the contract but not served by this build.
fn not_yet(method: &str) -> Status {
    Status::unimplemented(format!(
        "{method} is not available in hoistd {}: this agent does not run deploy jobs yet",
        crate::VERSION
    ))
}

#[tonic::async_trait]
impl Agent for AgentService {
    async fn get_info(
        &self,
        request: Request<GetInfoRequest>,
    ) -> Result<Response<GetInfoResponse>, Status> {
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
        Ok(Response::new(
            self.status_now(&request.get_ref().app).await?,
        ))
    }

    type WatchStatusStream = ReceiverStream<Result<StatusResponse, Status>>;

    async fn watch_status(
        &self,
        request: Request<WatchStatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        let req = request.into_inner();
        Self::check_app(&self.config.borrow(), &req.app)?;
        let (tx, rx) = mpsc::channel(2);
        let this = self.clone();
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
                    _ = tokio::time::sleep(interval.max(MIN_WATCH_INTERVAL)) => {}
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    type DeployStream = EventStream;
    async fn deploy(&self, _: Request<pb::DeployRequest>) -> Result<Response<EventStream>, Status> {
        Err(not_yet("Deploy"))
    }

    type RollbackStream = EventStream;
    async fn rollback(
        &self,
        _: Request<pb::RollbackRequest>,
    ) -> Result<Response<EventStream>, Status> {
        Err(not_yet("Rollback"))
    }

    type RestartStream = EventStream;
    async fn restart(
        &self,
        _: Request<pb::RestartRequest>,
    ) -> Result<Response<EventStream>, Status> {
        Err(not_yet("Restart"))
    }

    type AttachStream = EventStream;
    async fn attach(&self, _: Request<pb::AttachRequest>) -> Result<Response<EventStream>, Status> {
        Err(not_yet("Attach"))
    }

    async fn job_log(
        &self,
        _: Request<pb::JobLogRequest>,
    ) -> Result<Response<pb::JobLogResponse>, Status> {
        Err(not_yet("JobLog"))
    }

    async fn list_releases(
        &self,
        _: Request<pb::ListReleasesRequest>,
    ) -> Result<Response<pb::ListReleasesResponse>, Status> {
        Err(not_yet("ListReleases"))
    }

    async fn lock(
        &self,
        _: Request<pb::LockRequest>,
    ) -> Result<Response<pb::LockResponse>, Status> {
        Err(not_yet("Lock"))
    }

    async fn unlock(
        &self,
        _: Request<pb::UnlockRequest>,
    ) -> Result<Response<pb::UnlockResponse>, Status> {
        Err(not_yet("Unlock"))
    }

    async fn env_list(
        &self,
        _: Request<pb::EnvListRequest>,
    ) -> Result<Response<pb::EnvListResponse>, Status> {
        Err(not_yet("EnvList"))
    }

    type EnvSetStream = EventStream;
    async fn env_set(
        &self,
        _: Request<pb::EnvSetRequest>,
    ) -> Result<Response<EventStream>, Status> {
        Err(not_yet("EnvSet"))
    }

    type EnvUnsetStream = EventStream;
    async fn env_unset(
        &self,
        _: Request<pb::EnvUnsetRequest>,
    ) -> Result<Response<EventStream>, Status> {
        Err(not_yet("EnvUnset"))
    }
}
