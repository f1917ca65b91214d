//! Status against real services: a supervisord program running and stopped, and a real
//! HTTP health endpoint that is healthy, unhealthy (JSON) and down.

use std::time::Duration;

use hoist_proto::v1::{AppStatus, ServiceState, StatusRequest, WatchStatusRequest};
use hoist_tests::{
    e2e,
    harness::{AgentBuilder, Pki, Who, deployed_dir},
    services::{
        http_health::HealthServer,
        supervisor::{Program, Supervisord},
    },
};
use serde_json::json;

async fn app_status(agent: &hoist_tests::harness::Agent, pki: &Pki) -> AppStatus {
    let mut client = agent.connect(pki, Who::Viewer).await.unwrap();
    let status = client
        .status(StatusRequest { app: "web".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.apps.len(), 1);
    status.apps.into_iter().next().unwrap()
}

/// Waits until the background check result satisfies `want`.
async fn check_becomes(
    agent: &hoist_tests::harness::Agent,
    pki: &Pki,
    what: &str,
    want: impl Fn(&hoist_proto::v1::CheckStatus) -> bool,
) -> hoist_proto::v1::CheckStatus {
    e2e::eventually(what, Duration::from_secs(20), || async {
        let app = app_status(agent, pki).await;
        app.checks.into_iter().find(|c| c.has_run && want(c))
    })
    .await
}

#[tokio::test]
async fn supervisor_programs_and_http_checks() {
    let Some(_) = e2e::require(
        "supervisord",
        "supervisor",
        "supervisor_programs_and_http_checks",
    ) else {
        return;
    };
    let supervisor = Supervisord::start(&[
        Program {
            name: "worker".into(),
            command: "sleep 1000".into(),
            autostart: true,
            numprocs: 2,
            group: None,
        },
        Program {
            name: "mailer".into(),
            command: "sleep 1000".into(),
            autostart: false,
            numprocs: 1,
            group: None,
        },
    ])
    .unwrap();
    let health = HealthServer::start().await;
    health.set(200, json!({"status": "healthy", "db": {"up": true}}));

    let pki = Pki::new();
    let deployed = deployed_dir();
    let apps = format!(
        r#"
[[app]]
name = "web"
repo = "/nonexistent.git"
deploy_to = "{deploy_to}"

[[app.services]]
kind = "supervisor"
name = "worker:*"
serverurl = "{url}"

[[app.services]]
kind = "supervisor"
name = "mailer"
serverurl = "{url}"

[[app.checks]]
kind = "http"
name = "api"
url = "{health}"
expect_status = 200
expect_json = {{ status = "healthy", "db.up" = true }}
timeout = "2s"
"#,
        url = supervisor.serverurl(),
        health = health.url(),
        deploy_to = deployed.path().display(),
    );
    let agent = AgentBuilder::new(&pki)
        .health_interval("300ms")
        .apps(&apps)
        .start()
        .await;

    // Services are probed for real.
    let app = app_status(&agent, &pki).await;
    assert_eq!(app.current_release, "1");
    let worker = &app.services[0];
    assert_eq!(worker.state(), ServiceState::Running, "{worker:?}");
    assert!(
        worker.detail.contains("worker:worker_00 RUNNING pid"),
        "{worker:?}"
    );
    assert!(
        worker.detail.contains("worker:worker_01 RUNNING"),
        "{worker:?}"
    );
    let mailer = &app.services[1];
    assert_eq!(mailer.state(), ServiceState::Stopped, "{mailer:?}");

    // Stop a worker process: the group is no longer all running.
    supervisor.ctl(&["stop", "worker:worker_01"]).unwrap();
    let app = app_status(&agent, &pki).await;
    assert_eq!(
        app.services[0].state(),
        ServiceState::Stopped,
        "{:?}",
        app.services[0]
    );

    // Healthy.
    let ok = check_becomes(&agent, &pki, "check healthy", |c| c.ok).await;
    assert_eq!(ok.name, "api");
    assert!(ok.output.contains("200"), "{ok:?}");

    // 200 but the JSON says otherwise: failing, with the field and the body.
    health.set(200, json!({"status": "degraded", "db": {"up": true}}));
    let bad = check_becomes(&agent, &pki, "check sees bad JSON", |c| !c.ok).await;
    assert!(
        bad.output
            .contains("status = \"degraded\", expected \"healthy\""),
        "{bad:?}"
    );

    // Wrong status code.
    health.set(503, json!({"status": "healthy", "db": {"up": true}}));
    let bad = check_becomes(&agent, &pki, "check sees 503", |c| {
        !c.ok && c.output.contains("503")
    })
    .await;
    assert!(bad.output.contains("expected 200"), "{bad:?}");

    // Recovers.
    health.set(200, json!({"status": "healthy", "db": {"up": true}}));
    check_becomes(&agent, &pki, "check recovers", |c| c.ok).await;

    // Endpoint down: connection refused.
    let mut health = health;
    health.stop();
    let down = check_becomes(&agent, &pki, "check sees the endpoint down", |c| !c.ok).await;
    assert!(down.output.contains("connect"), "{down:?}");

    // The metrics say the same.
    let metrics = agent.scrape().await.unwrap();
    assert!(
        metrics.contains("hoist_app_check_up{app=\"web\",check=\"api\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hoist_service_up{app=\"web\",service=\"mailer\"} 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn watch_status_streams_until_the_client_goes_away() {
    let pki = Pki::new();
    let agent = AgentBuilder::new(&pki)
        .apps(
            r#"
[[app]]
name = "web"
repo = "/nonexistent.git"
deploy_to = "/var/www/web"
"#,
        )
        .start()
        .await;
    let mut client = agent.connect(&pki, Who::Viewer).await.unwrap();
    let mut stream = client
        .watch_status(WatchStatusRequest {
            app: "web".into(),
            interval_ms: 200,
        })
        .await
        .unwrap()
        .into_inner();
    let mut stamps = Vec::new();
    for _ in 0..3 {
        let status = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("a status within 10s")
            .unwrap()
            .expect("stream open");
        assert_eq!(status.apps[0].name, "web");
        let res = status.resources.unwrap();
        assert!(res.memory_total_bytes > 0);
        assert!(!res.disks.is_empty());
        stamps.push(status.sampled_at);
    }
    drop(stream);

    // Unknown app: NotFound naming the known ones.
    let err = client
        .watch_status(WatchStatusRequest {
            app: "nope".into(),
            interval_ms: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(
        err.message().contains("this agent has: web"),
        "{}",
        err.message()
    );
}
