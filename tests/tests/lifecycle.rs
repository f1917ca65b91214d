//! Agent lifecycle against real processes: config errors and exit 64, SIGHUP reload
//! (good and bad), SIGTERM drain, metrics that pass promtool, and the `hoist` CLI's
//! status, targets and unreachable-host handling.

use std::{process::Command, time::Duration};

use hoist_proto::v1::GetInfoRequest;
use hoist_tests::{
    e2e,
    harness::{AgentBuilder, Pki, Who, bin, deployed_dir, hoist},
    services::promtool,
};
use nix::sys::signal::Signal;

const APP: &str = r#"
[[app]]
name = "web"
repo = "/nonexistent.git"
deploy_to = "/var/www/web"

[[app.checks]]
kind = "command"
name = "true"
command = "true"
"#;

#[tokio::test]
async fn bad_config_exits_64_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(
        &path,
        "[agent]\nlisten = \"127.0.0.1:0\"\nhealth_intervl = \"15s\"\n",
    )
    .unwrap();
    for args in [
        vec!["check-config", path.to_str().unwrap()],
        vec!["--config", path.to_str().unwrap()],
    ] {
        let out = Command::new(bin("hoistd")).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("{}:3:1", path.display())), "{err}");
        assert!(err.contains("health_intervl"), "{err}");
    }
    // A good config passes.
    let pki = Pki::new();
    let good = AgentBuilder::new(&pki).apps(APP).config_text(dir.path());
    std::fs::write(&path, good).unwrap();
    let out = Command::new(bin("hoistd"))
        .args(["check-config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The example config the package ships, given real certificates (and its paths moved
/// under a temp dir), passes `check-config`; a missing certificate is named, exit 64.
#[test]
fn shipped_example_config_passes_with_its_certificates() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../packaging/agent.toml"
    ))
    .unwrap();
    let ca = pki.ca_dir();
    let text = example
        .replace("/etc/hoist/ca.pem", ca.join("ca.pem").to_str().unwrap())
        .replace(
            "/etc/hoist/agent.pem",
            ca.join("agent.pem").to_str().unwrap(),
        )
        .replace(
            "/etc/hoist/agent.key",
            ca.join("agent.key").to_str().unwrap(),
        )
        .replace("/var/lib/hoist", dir.path().join("state").to_str().unwrap());
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, &text).unwrap();
    let out = Command::new(bin("hoistd"))
        .args(["check-config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));

    std::fs::write(&path, text.replace("agent.pem", "missing.pem")).unwrap();
    let out = Command::new(bin("hoistd"))
        .args(["check-config", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.pem"), "{err}");
}

#[tokio::test]
async fn sighup_reloads_good_config_and_keeps_old_on_error() {
    let pki = Pki::new();
    let agent = AgentBuilder::new(&pki).apps(APP).start().await;
    let mut client = agent.connect(&pki, Who::Viewer).await.unwrap();
    let info = client
        .get_info(GetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.apps, vec!["web"]);

    // Good: a second app appears without a restart.
    let text = std::fs::read_to_string(&agent.config).unwrap();
    let two = format!("{text}{}", APP.replace("web", "api"));
    std::fs::write(&agent.config, &two).unwrap();
    agent.signal(Signal::SIGHUP);
    e2e::eventually("reload adds app api", Duration::from_secs(10), || {
        let mut client = client.clone();
        async move {
            let info = client.get_info(GetInfoRequest {}).await.ok()?.into_inner();
            (info.apps == vec!["web", "api"]).then_some(())
        }
    })
    .await;

    // Bad: refused with the reason in the log; the running config stays.
    std::fs::write(&agent.config, format!("{two}\nbogus = 1\n")).unwrap();
    agent.signal(Signal::SIGHUP);
    e2e::eventually("reload refusal logged", Duration::from_secs(10), || async {
        agent.log_text().contains("reload refused").then_some(())
    })
    .await;
    let log = agent.log_text();
    assert!(log.contains("bogus"), "{log}");
    let info = client
        .get_info(GetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.apps, vec!["web", "api"]);
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let pki = Pki::new();
    let mut agent = AgentBuilder::new(&pki).start().await;
    let status = agent.stop().expect("hoistd stopped within the timeout");
    assert!(status.success(), "{status:?}\n{}", agent.log_text());
    let log = agent.log_text();
    assert!(log.contains("draining"), "{log}");
    assert!(!agent.dir.path().join("state/listen").exists());
}

#[tokio::test]
async fn metrics_pass_promtool() {
    let Some(_) = e2e::require("promtool", "prometheus", "metrics_pass_promtool") else {
        return;
    };
    let pki = Pki::new();
    let deployed = deployed_dir();
    let agent = AgentBuilder::new(&pki)
        .health_interval("200ms")
        .apps(&APP.replace("/var/www/web", &deployed.path().display().to_string()))
        .start()
        .await;
    let text = e2e::eventually("check metrics appear", Duration::from_secs(10), || async {
        let text = agent.scrape().await.ok()?;
        text.contains("hoist_app_check_up").then_some(text)
    })
    .await;
    for name in [
        "hoist_up 1",
        "hoist_build_info{version=",
        "hoist_cpu_usage_ratio",
        "hoist_load1",
        "hoist_load5",
        "hoist_load15",
        "hoist_memory_used_bytes",
        "hoist_memory_total_bytes",
        "hoist_disk_used_bytes{mountpoint=",
        "hoist_disk_total_bytes{mountpoint=",
        "hoist_app_deployed{app=\"web\"} 1",
        "hoist_app_check_gate{app=\"web\",check=\"true\"} 1",
        "hoist_deploys_total{app=\"web\",result=\"succeeded\"} 0",
        "hoist_deploys_total{app=\"web\",result=\"rolled_back\"} 0",
        "# TYPE hoist_deploy_duration_seconds histogram",
        "hoist_deploy_duration_seconds_bucket{app=\"web\",le=\"+Inf\"} 0",
        "hoist_deploy_duration_seconds_count{app=\"web\"} 0",
        "hoist_app_lock_held{app=\"web\"} 0",
        "hoist_app_job_running{app=\"web\"} 0",
        "hoist_agent_certificate_expiry_timestamp_seconds ",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_start_time_seconds ",
        "process_open_fds ",
        "process_max_fds ",
        "hoist_app_check_up{app=\"web\",check=\"true\"} 1",
        "hoist_app_check_duration_seconds{app=\"web\",check=\"true\"}",
        "hoist_agent_resident_memory_bytes",
    ] {
        assert!(text.contains(name), "missing {name} in:\n{text}");
    }
    promtool::check_metrics(&text).unwrap();
}

#[tokio::test]
async fn hoist_status_table_json_and_unreachable_hosts() {
    let pki = Pki::new();
    let a = AgentBuilder::new(&pki).apps(APP).start().await;
    let b = AgentBuilder::new(&pki).apps(APP).start().await;
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet.toml");
    let mut text = pki.fleet_tls(Who::Viewer);
    text.push_str(&a.fleet_entry("web-1"));
    text.push_str(&b.fleet_entry("web-2"));
    std::fs::write(&fleet, &text).unwrap();
    let fleet_s = fleet.to_str().unwrap();

    let (status, out, err) = hoist(&["status", "--fleet", fleet_s]);
    assert!(status.success(), "{out}{err}");
    for needle in [
        "HOST",
        "web-1",
        "web-2",
        "web",
        "not deployed",
        env!("CARGO_PKG_VERSION"),
    ] {
        assert!(out.contains(needle), "missing {needle}:\n{out}");
    }

    let (status, out, _) = hoist(&["status", "--fleet", fleet_s, "--json", "--hosts", "web-2"]);
    assert!(status.success());
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["kind"], "status");
    assert_eq!(json["v"], 1);
    let json = &json["hosts"];
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["host"], "web-2");
    assert_eq!(json[0]["reachable"], true);
    assert_eq!(json[0]["apps"][0]["name"], "web");

    // A host that does not answer: listed with the error, exit 1.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    text.push_str(&format!(
        "\n[[host]]\nname = \"web-3\"\naddress = \"{dead_addr}\"\n"
    ));
    std::fs::write(&fleet, &text).unwrap();
    let (status, out, err) = hoist(&["status", "--fleet", fleet_s, "--timeout", "2s"]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(
        out.contains("web-3") && out.contains("unreachable"),
        "{out}"
    );
    assert!(err.contains("1 of 3 host(s) unreachable"), "{err}");

    // Unknown host: usage error, exit 2.
    let (status, _, err) = hoist(&["status", "--fleet", fleet_s, "--hosts", "web-9"]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("web-9"), "{err}");

    // file_sd targets for Prometheus.
    let (status, out, _) = hoist(&["targets", "--fleet", fleet_s]);
    assert!(status.success());
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 3);
    assert_eq!(json[0]["labels"]["hoist_host"], "web-1");
}

#[test]
fn demo_runs_to_the_end() {
    let (status, out, err) = hoist(&["demo"]);
    assert!(status.success(), "{out}{err}");
    for needle in [
        "1. deploy v1",
        "2. rolling deploy of v2",
        "3. v3 fails its checks",
        "every host serves v2 again",
        "rolled back",
        "Deployment log: shop on web-1",
        "STATUS says broken",
        "stopping the agents",
        "done in",
    ] {
        assert!(out.contains(needle), "missing {needle}:\n{out}");
    }
    let dir = out
        .lines()
        .find_map(|l| l.strip_prefix("==> hoist demo in "))
        .unwrap()
        .to_string();
    let _ = std::fs::remove_dir_all(dir);
}
