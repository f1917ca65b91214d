//! Checks that monitor: https checks against a local TLS server with a test CA (trusted
//! through `ca`, unknown without it, expired), a monitor-only check (`gate = false`)
//! that fails without rolling a real deploy back, and a fresh host that says "not
//! deployed" instead of failing its checks; the metrics a deploy dashboard reads,
//! through promtool.

use std::{convert::Infallible, path::Path, time::Duration};

use hoist_proto::v1::{CheckStatus, StatusRequest};
use hoist_tests::{
    e2e,
    harness::{Agent, AgentBuilder, Pki, Who, deployed_dir, hoist},
    services::{git::AppRepo, promtool, tls},
};
use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio_rustls::TlsAcceptor;

/// An https health endpoint on loopback answering `{"status":"ok"}` with `cert`.
/// Returns its port; serves until the test's runtime ends.
async fn tls_health(cert: &Path, key: &Path) -> u16 {
    let acceptor = TlsAcceptor::from(tls::server_config(cert, key));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(|_: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                        br#"{"status":"ok"}"#,
                    ))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    port
}

async fn checks(agent: &Agent, pki: &Pki) -> Vec<CheckStatus> {
    let mut client = agent.connect(pki, Who::Viewer).await.unwrap();
    let status = client
        .status(StatusRequest { app: "web".into() })
        .await
        .unwrap()
        .into_inner();
    status.apps.into_iter().next().unwrap().checks
}

/// Waits until the check called `name` has run and `want` holds for it.
async fn check_becomes(
    agent: &Agent,
    pki: &Pki,
    name: &str,
    want: impl Fn(&CheckStatus) -> bool,
) -> CheckStatus {
    e2e::eventually(name, Duration::from_secs(20), || async {
        checks(agent, pki)
            .await
            .into_iter()
            .find(|c| c.name == name && c.has_run && want(c))
    })
    .await
}

#[tokio::test]
async fn https_checks_verify_the_server_against_system_roots_and_ca() {
    let pki = Pki::new();
    let ca_dir = pki.ca_dir();
    pki.issue_agent("site", &["127.0.0.1"]);
    // Expired yesterday (`hoist ca issue` refuses to make one).
    tls::issue_window(&ca_dir, &ca_dir, "stale", -30, -1, true);
    let good = tls_health(&ca_dir.join("site.pem"), &ca_dir.join("site.key")).await;
    let expired = tls_health(&ca_dir.join("stale.pem"), &ca_dir.join("stale.key")).await;
    let ca = ca_dir.join("ca.pem");
    let deployed = deployed_dir();
    let apps = format!(
        r#"
[[app]]
name = "web"
repo = "/nonexistent.git"
deploy_to = "{deploy_to}"

[[app.checks]]
kind = "http"
name = "trusted"
url = "https://127.0.0.1:{good}/up"
ca = "{ca}"
expect_json = {{ status = "ok" }}

[[app.checks]]
kind = "http"
name = "unknown-ca"
url = "https://127.0.0.1:{good}/up"

[[app.checks]]
kind = "http"
name = "expired"
url = "https://127.0.0.1:{expired}/up"
ca = "{ca}"
"#,
        deploy_to = deployed.path().display(),
        ca = ca.display(),
    );
    let agent = AgentBuilder::new(&pki)
        .health_interval("300ms")
        .apps(&apps)
        .start()
        .await;

    let ok = check_becomes(&agent, &pki, "trusted", |c| c.ok).await;
    assert!(ok.output.contains("200 OK"), "{ok:?}");
    let unknown = check_becomes(&agent, &pki, "unknown-ca", |c| !c.ok).await;
    assert!(
        unknown
            .output
            .contains("not signed by the system's roots (set `ca` on the check"),
        "{unknown:?}"
    );
    let stale = check_becomes(&agent, &pki, "expired", |c| !c.ok).await;
    assert!(
        stale
            .output
            .contains("the server's certificate has expired"),
        "{stale:?}"
    );

    // A `ca` that is not a certificate: check-config names the check and the file.
    std::fs::write(deployed.path().join("bad.pem"), "not a certificate\n").unwrap();
    let config = agent.dir.path().join("agent.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &ca.display().to_string(),
        &deployed.path().join("bad.pem").display().to_string(),
    );
    let bad = agent.dir.path().join("bad.toml");
    std::fs::write(&bad, text).unwrap();
    let out = std::process::Command::new(hoist_tests::harness::bin("hoistd"))
        .args(["check-config", bad.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("check \"trusted\"") && stderr.contains("holds no certificate"),
        "{stderr}"
    );
}

fn app(repo: &AppRepo, deploy_to: &Path) -> String {
    format!(
        r#"
[[app]]
name = "web"
repo = "{}"
deploy_to = "{}"

[[app.checks]]
kind = "command"
name = "release-ok"
command = "test -s VERSION"
retries = 1

[[app.checks]]
kind = "command"
name = "tls-expiry"
command = "echo certificate expires in 3 days; exit 1"
retries = 1
gate = false
"#,
        repo.url(),
        deploy_to.display()
    )
}

/// One scrape once `hoist_app_deployed` has the wanted value and the checks' series
/// are as many as `check_series`.
async fn scrape_when(agent: &Agent, deployed: u8, check_series: usize) -> String {
    e2e::eventually("metrics", Duration::from_secs(20), || async {
        let text = agent.scrape().await.ok()?;
        let ups = text
            .lines()
            .filter(|l| l.starts_with("hoist_app_check_up{"))
            .count();
        (text.contains(&format!("hoist_app_deployed{{app=\"web\"}} {deployed}"))
            && ups == check_series)
            .then_some(text)
    })
    .await
}

#[tokio::test]
async fn monitor_only_checks_never_roll_back_and_fresh_hosts_are_not_deployed() {
    let Some(_) = e2e::require("promtool", "prometheus", "monitor_only_checks") else {
        return;
    };
    let repo = AppRepo::new_static(&[("VERSION", "1\n")]);
    let pki = Pki::new();
    let root = tempfile::tempdir().unwrap();
    let deploy_to = root.path().join("web");
    let agent = AgentBuilder::new(&pki)
        .health_interval("200ms")
        .apps(&app(&repo, &deploy_to))
        .start()
        .await;
    let fleet = agent.one_host_fleet(&pki, Who::Deployer, root.path());
    let fl = fleet.as_str();

    // Fresh host: several monitor rounds pass (counted by their sample times), and no
    // check runs, none fails, nothing is logged, no check series is exported.
    let seen = std::sync::Mutex::new(std::collections::BTreeSet::new());
    let (seen, agent_ref, pki_ref) = (&seen, &agent, &pki);
    e2e::eventually(
        "three monitor rounds",
        Duration::from_secs(20),
        || async move {
            let mut client = agent_ref.connect(pki_ref, Who::Viewer).await.ok()?;
            let status = client
                .status(StatusRequest { app: "web".into() })
                .await
                .ok()?
                .into_inner();
            let at = status.sampled_at.map(|t| (t.seconds, t.nanos));
            let mut seen = seen.lock().unwrap();
            seen.insert(at);
            (seen.len() > 3).then_some(())
        },
    )
    .await;
    let fresh = checks(&agent, &pki).await;
    assert!(
        fresh
            .iter()
            .all(|c| !c.has_run && c.output == "not deployed"),
        "{fresh:?}"
    );
    assert!(
        !agent.log_text().contains("check failing"),
        "{}",
        agent.log_text()
    );
    let text = scrape_when(&agent, 0, 0).await;
    assert!(
        text.contains("hoist_deploys_total{app=\"web\",result=\"succeeded\"} 0"),
        "{text}"
    );
    promtool::check_metrics(&text).unwrap();
    let (status, out, err) = hoist(&["status", "--fleet", fl]);
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("not deployed"), "{out}");
    assert!(!out.contains("failing"), "{out}");

    // A real deploy: the monitor-only check fails all along, and the deploy succeeds.
    let (status, out, err) = hoist(&["deploy", "web", "--ref", "main", "--fleet", fl]);
    assert!(status.success(), "{out}{err}");
    assert!(
        !out.contains("tls-expiry"),
        "a monitor-only check is no deploy step:\n{out}"
    );
    assert!(deploy_to.join("current").exists());

    let failing = check_becomes(&agent, &pki, "tls-expiry", |c| !c.ok).await;
    assert!(failing.monitor_only, "{failing:?}");
    check_becomes(&agent, &pki, "release-ok", |c| c.ok).await;
    let (status, out, err) = hoist(&["status", "--fleet", fl]);
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains(
            "monitor-only check tls-expiry failing: exit 1; output: certificate expires in 3 days"
        ),
        "{out}"
    );
    let (_, out, _) = hoist(&["status", "--fleet", fl, "--json"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let apps = &json["hosts"][0]["apps"][0];
    assert_eq!(apps["deployed"], true, "{apps}");
    assert_eq!(apps["checks"][1]["gate"], false, "{apps}");

    // Metrics: both checks exported, the deploy counted and in the histogram.
    let text = scrape_when(&agent, 1, 2).await;
    for needle in [
        "hoist_app_check_up{app=\"web\",check=\"tls-expiry\"} 0",
        "hoist_app_check_gate{app=\"web\",check=\"tls-expiry\"} 0",
        "hoist_app_check_gate{app=\"web\",check=\"release-ok\"} 1",
        "hoist_deploys_total{app=\"web\",result=\"succeeded\"} 1",
        "hoist_deploys_total{app=\"web\",result=\"rolled_back\"} 0",
        "hoist_deploy_duration_seconds_bucket{app=\"web\",le=\"+Inf\"} 1",
        "hoist_deploy_duration_seconds_count{app=\"web\"} 1",
        "hoist_app_last_deploy_timestamp_seconds{app=\"web\",result=\"succeeded\"}",
        "hoist_app_lock_held{app=\"web\"} 0",
        "hoist_app_job_running{app=\"web\"} 0",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
    promtool::check_metrics(&text).unwrap();
}
