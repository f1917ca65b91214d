//! A fake agent for the controller's tests: a real gRPC server over mutual TLS on a
//! loopback port, answering Deploy and Attach from a script and recording the calls.

use std::{
    path::Path,
    pin::Pin,
    sync::{Arc, Mutex},
};

use hoist_proto::v1::{
    AttachRequest, DeployRequest, EnvListRequest, EnvListResponse, EnvSetRequest, EnvUnsetRequest,
    GetInfoRequest, GetInfoResponse, JobEvent, JobFinished, JobKind, JobLogRequest, JobLogResponse,
    JobResult, JobStarted, ListReleasesRequest, ListReleasesResponse, LockRequest, LockResponse,
    RecordRefusalRequest, RecordRefusalResponse, RestartRequest, RollbackRequest, StatusRequest,
    StatusResponse, StepFinished, StepStarted, UnlockRequest, UnlockResponse, WatchStatusRequest,
    agent_server::{Agent, AgentServer},
    job_event::Kind,
};
use tokio::sync::Semaphore;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{
    Code, Request, Response, Status,
    transport::{Certificate, Identity, Server, ServerTlsConfig},
};

use crate::{
    agents::client::Credentials,
    ca,
    fleet::{FleetTls, Host},
    output::render::tests::T0,
};

pub(crate) fn finished(result: JobResult, error: &str) -> JobFinished {
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
        commit: String::new(),
    }
}

pub(crate) type EventStream = Pin<Box<dyn Stream<Item = Result<JobEvent, Status>> + Send>>;

/// What the fake answers to Deploy.
#[derive(Clone)]
pub(crate) enum Script {
    Refuse(Code, &'static str),
    /// These events, then wait for a permit, then the rest; then the stream ends.
    Events {
        first: Vec<JobEvent>,
        gate: Option<Arc<Semaphore>>,
        rest: Vec<JobEvent>,
    },
}

pub(crate) struct Fake {
    pub(crate) name: String,
    pub(crate) deploy: Script,
    /// Attach answers with these events; NotFound when empty.
    pub(crate) attach: Vec<JobEvent>,
    /// Deploy's stream ends with this error after its events.
    pub(crate) deploy_error: Option<(Code, &'static str)>,
    pub(crate) calls: Arc<Mutex<Vec<String>>>,
}

pub(crate) fn event(job_id: &str, seq: u64, kind: Kind) -> JobEvent {
    JobEvent {
        job_id: job_id.into(),
        seq,
        at: crate::output::render::tests::at(T0, seq as i32),
        kind: Some(kind),
    }
}

/// started, build started, build finished, finished with `result`.
pub(crate) fn job(job_id: &str, result: JobResult) -> Vec<JobEvent> {
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

pub(crate) fn stream_of(
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

pub(crate) fn not_in_the_fake<T>() -> Result<T, Status> {
    Err(Status::unimplemented("not in the fake"))
}

#[tonic::async_trait]
impl Agent for Fake {
    type WatchStatusStream = Pin<Box<dyn Stream<Item = Result<StatusResponse, Status>> + Send>>;
    type DeployStream = EventStream;
    type RollbackStream = EventStream;
    type RestartStream = EventStream;
    type StopStream = EventStream;
    type StartStream = EventStream;
    type RunTaskStream = EventStream;
    type AttachStream = EventStream;
    type EnvSetStream = EventStream;
    type EnvUnsetStream = EventStream;
    type LogsStream = Pin<Box<dyn Stream<Item = Result<hoist_proto::v1::LogLine, Status>> + Send>>;

    async fn get_info(
        &self,
        _: Request<GetInfoRequest>,
    ) -> Result<Response<GetInfoResponse>, Status> {
        not_in_the_fake()
    }
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
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
                let events = stream_of(fix(first), gate, fix(rest));
                match self.deploy_error {
                    None => Ok(Response::new(events)),
                    Some((code, message)) => {
                        let error = tokio_stream::once(Err(Status::new(code, message)));
                        Ok(Response::new(Box::pin(tokio_stream::StreamExt::chain(
                            events, error,
                        ))))
                    }
                }
            }
        }
    }
    async fn rollback(&self, _: Request<RollbackRequest>) -> Result<Response<EventStream>, Status> {
        not_in_the_fake()
    }
    type BackupStream = EventStream;
    async fn backup(
        &self,
        _: Request<hoist_proto::v1::BackupRequest>,
    ) -> Result<Response<EventStream>, Status> {
        not_in_the_fake()
    }
    async fn list_backups(
        &self,
        _: Request<hoist_proto::v1::ListBackupsRequest>,
    ) -> Result<Response<hoist_proto::v1::ListBackupsResponse>, Status> {
        not_in_the_fake()
    }
    type RestoreStream = EventStream;
    async fn restore(
        &self,
        _: Request<hoist_proto::v1::RestoreRequest>,
    ) -> Result<Response<EventStream>, Status> {
        not_in_the_fake()
    }
    async fn pending_migrations(
        &self,
        _: Request<hoist_proto::v1::PendingMigrationsRequest>,
    ) -> Result<Response<hoist_proto::v1::PendingMigrationsResponse>, Status> {
        not_in_the_fake()
    }
    async fn restart(&self, _: Request<RestartRequest>) -> Result<Response<EventStream>, Status> {
        not_in_the_fake()
    }
    async fn stop(
        &self,
        _: Request<hoist_proto::v1::StopRequest>,
    ) -> Result<Response<EventStream>, Status> {
        not_in_the_fake()
    }
    async fn start(
        &self,
        _: Request<hoist_proto::v1::StartRequest>,
    ) -> Result<Response<EventStream>, Status> {
        not_in_the_fake()
    }
    async fn run_task(
        &self,
        _: Request<hoist_proto::v1::RunTaskRequest>,
    ) -> Result<Response<EventStream>, Status> {
        not_in_the_fake()
    }
    async fn logs(
        &self,
        _: Request<hoist_proto::v1::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
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
    async fn job_log(&self, _: Request<JobLogRequest>) -> Result<Response<JobLogResponse>, Status> {
        not_in_the_fake()
    }
    async fn list_releases(
        &self,
        _: Request<ListReleasesRequest>,
    ) -> Result<Response<ListReleasesResponse>, Status> {
        not_in_the_fake()
    }
    async fn plan_deploy(
        &self,
        _: Request<hoist_proto::v1::PlanDeployRequest>,
    ) -> Result<Response<hoist_proto::v1::PlanDeployResponse>, Status> {
        not_in_the_fake()
    }
    async fn plan_rollback(
        &self,
        _: Request<hoist_proto::v1::PlanRollbackRequest>,
    ) -> Result<Response<hoist_proto::v1::PlanRollbackResponse>, Status> {
        not_in_the_fake()
    }
    async fn lock(&self, _: Request<LockRequest>) -> Result<Response<LockResponse>, Status> {
        not_in_the_fake()
    }
    async fn unlock(&self, _: Request<UnlockRequest>) -> Result<Response<UnlockResponse>, Status> {
        not_in_the_fake()
    }
    async fn env_list(
        &self,
        _: Request<EnvListRequest>,
    ) -> Result<Response<EnvListResponse>, Status> {
        not_in_the_fake()
    }
    async fn env_set(&self, _: Request<EnvSetRequest>) -> Result<Response<EventStream>, Status> {
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
pub(crate) struct Pki {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) creds: Credentials,
}

pub(crate) fn pki() -> Pki {
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
pub(crate) async fn serve(dir: &Path, fake: Fake) -> Host {
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

pub(crate) fn fake(name: &str, deploy: Script, calls: &Arc<Mutex<Vec<String>>>) -> Fake {
    Fake {
        name: name.into(),
        deploy,
        attach: vec![],
        deploy_error: None,
        calls: calls.clone(),
    }
}

pub(crate) fn events(result: JobResult) -> Script {
    Script::Events {
        first: job("x", result),
        gate: None,
        rest: vec![],
    }
}
