//! The authorization matrix against a real hoistd: every implemented RPC × no
//! certificate, a foreign CA, a certificate without role, viewer, deployer.

use hoist_proto::v1::{
    DeployRequest, GetInfoRequest, Role, StatusRequest, WatchStatusRequest,
    agent_client::AgentClient,
};
use hoist_tests::harness::{AgentBuilder, Pki, Who, channel, error_chain};
use tonic::{Code, transport::Channel};

#[derive(Debug, Clone, Copy)]
enum Rpc {
    GetInfo,
    Status,
    WatchStatus,
    Deploy,
}

/// Calls `rpc`; Ok(()) when the handler answered, Err(code, message) otherwise.
async fn call(client: &mut AgentClient<Channel>, rpc: Rpc) -> Result<(), (Code, String)> {
    let err = |s: tonic::Status| (s.code(), format!("{}: {}", s.message(), error_chain(&s)));
    match rpc {
        Rpc::GetInfo => client
            .get_info(GetInfoRequest {})
            .await
            .map(drop)
            .map_err(err),
        Rpc::Status => client
            .status(StatusRequest::default())
            .await
            .map(drop)
            .map_err(err),
        Rpc::WatchStatus => {
            let mut stream = client
                .watch_status(WatchStatusRequest::default())
                .await
                .map_err(err)?
                .into_inner();
            stream.message().await.map(drop).map_err(err)
        }
        Rpc::Deploy => {
            let req = DeployRequest {
                app: "web".into(),
                r#ref: "main".into(),
                deploy_id: "d1".into(),
                ..Default::default()
            };
            client.deploy(req).await.map(drop).map_err(err)
        }
    }
}

#[tokio::test]
async fn authorization_matrix() {
    let pki = Pki::new();
    let agent = AgentBuilder::new(&pki).start().await;

    let rpcs = [Rpc::GetInfo, Rpc::Status, Rpc::WatchStatus, Rpc::Deploy];
    for who in [Who::Anonymous, Who::Foreign] {
        for rpc in rpcs {
            // The handshake is refused: either the connect or the first call fails,
            // and no handler ever runs.
            let result = match agent.connect(&pki, who).await {
                Err(e) => Err((Code::Unavailable, e)),
                Ok(mut client) => call(&mut client, rpc).await,
            };
            let (code, msg) = result.expect_err(&format!("{who:?} must be refused for {rpc:?}"));
            assert!(
                matches!(
                    code,
                    Code::Unavailable | Code::Unknown | Code::Unauthenticated | Code::Cancelled
                ),
                "{who:?} {rpc:?}: {code:?} {msg}"
            );
        }
    }

    for rpc in rpcs {
        let mut client = agent.connect(&pki, Who::NoRole).await.unwrap();
        let (code, msg) = call(&mut client, rpc).await.unwrap_err();
        assert_eq!(code, Code::PermissionDenied, "no role {rpc:?}: {msg}");
        assert!(msg.contains("carries no hoist role"), "{msg}");
    }

    let mut viewer = agent.connect(&pki, Who::Viewer).await.unwrap();
    for rpc in [Rpc::GetInfo, Rpc::Status, Rpc::WatchStatus] {
        call(&mut viewer, rpc)
            .await
            .unwrap_or_else(|e| panic!("viewer {rpc:?}: {e:?}"));
    }
    let (code, msg) = call(&mut viewer, Rpc::Deploy).await.unwrap_err();
    assert_eq!(code, Code::PermissionDenied, "{msg}");
    assert!(
        msg.contains("vera has role viewer; Deploy needs role deployer"),
        "{msg}"
    );

    let mut deployer = agent.connect(&pki, Who::Deployer).await.unwrap();
    for rpc in [Rpc::GetInfo, Rpc::Status, Rpc::WatchStatus] {
        call(&mut deployer, rpc)
            .await
            .unwrap_or_else(|e| panic!("deployer {rpc:?}: {e:?}"));
    }
    // Authorized: the handler itself answers (this agent has no app "web").
    let (code, msg) = call(&mut deployer, Rpc::Deploy).await.unwrap_err();
    assert_eq!(code, Code::NotFound, "{msg}");
    assert!(msg.contains("unknown app \"web\""), "{msg}");

    let info = deployer
        .get_info(GetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.caller_role(), Role::Deployer);
    assert_eq!(info.caller_identity, "dana");
    let info = viewer
        .get_info(GetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.caller_role(), Role::Viewer);

    // The refusals are in the agent's log with the reason.
    let log = agent.log_text();
    assert!(log.contains("TLS handshake refused"), "{log}");
    assert!(log.contains("request denied"), "{log}");
}

#[tokio::test]
async fn grpc_health_and_reflection_need_a_certificate() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let pki = Pki::new();
    let agent = AgentBuilder::new(&pki).start().await;

    let viewer = channel(&agent.grpc, &pki, Who::Viewer).await.unwrap();
    let mut health = HealthClient::new(viewer);
    for service in ["", "hoist.v1.Agent"] {
        let resp = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.status, 1, "{service:?} must be SERVING");
    }
    // No role → refused, like every other method.
    let no_role = channel(&agent.grpc, &pki, Who::NoRole).await.unwrap();
    let err = HealthClient::new(no_role)
        .check(HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}
