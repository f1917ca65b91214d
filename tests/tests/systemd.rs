//! systemd services against a real systemd: a Debian 12 container booted with
//! systemd-nspawn, with hoistd running inside it as a unit so its `systemctl` talks to
//! the container's systemd. Restart and reload through the Restart RPC, the Status RPC
//! following the unit, and a unit that cannot start failing the job.

use std::time::Duration;

use hoist_proto::v1::{
    AppStatus, JobEvent, JobResult, RestartRequest, ServiceState, StatusRequest,
    agent_client::AgentClient,
};
use hoist_tests::{
    e2e,
    harness::{Pki, Who, connect},
    jobs::{collect, output, result},
    services::systemd::{self, ContainerAgent, RootFile, Setup},
};
use tonic::transport::Channel;

const DEMO: &str = "hoist-demo";
const BROKEN: &str = "hoist-broken";
/// Where the demo service appends its pid each time it handles SIGHUP.
const RELOADS: &str = "/var/lib/hoist-demo/reloads";
const STATUS_TIMEOUT: Duration = Duration::from_secs(15);

/// A daemon that stays up and records each SIGHUP (the reload) instead of dying of it.
/// The unit sends it with the shell's `kill`: minbase has no `/bin/kill` (procps).
const DEMO_SCRIPT: &str = r#"#!/bin/sh
echo $$ > /run/hoist-demo.pid
trap 'echo $$ >> /var/lib/hoist-demo/reloads' HUP
while :; do
    sleep 1 &
    wait $!
done
"#;

const DEMO_UNIT: &str = r#"[Unit]
Description=hoist demo daemon

[Service]
ExecStart=/usr/local/bin/hoist-demo
ExecReload=/bin/sh -c 'kill -HUP "$$MAINPID"'
StateDirectory=hoist-demo

[Install]
WantedBy=multi-user.target
"#;

/// Its start job fails: `systemctl restart` exits non-zero and the unit is `failed`.
const BROKEN_UNIT: &str = "[Unit]
Description=hoist unit that cannot start

[Service]
Type=oneshot
ExecStart=/bin/false
";

const APPS: &str = r#"
[[app]]
name = "demo"
repo = "/nonexistent.git"
deploy_to = "/srv/demo"

[[app.services]]
kind = "systemd"
name = "hoist-demo"
action = "restart"
timeout = "30s"

[[app.services]]
kind = "systemd"
name = "hoist-demo"
action = "reload"
timeout = "30s"

[[app]]
name = "broken"
repo = "/nonexistent.git"
deploy_to = "/srv/broken"

[[app.services]]
kind = "systemd"
name = "hoist-broken"
timeout = "20s"
"#;

async fn restart(client: &mut AgentClient<Channel>, app: &str, job_id: &str) -> Vec<JobEvent> {
    collect(
        client
            .restart(RestartRequest {
                app: app.into(),
                service: String::new(),
                job_id: job_id.into(),
            })
            .await
            .expect("restart accepted")
            .into_inner(),
    )
    .await
}

/// Waits until every status entry of `unit` in `app` is `want`; returns the app.
async fn wait_state(
    client: &mut AgentClient<Channel>,
    app: &str,
    unit: &str,
    want: ServiceState,
) -> AppStatus {
    e2e::eventually(
        &format!("{unit} {want:?} in {app}'s status"),
        STATUS_TIMEOUT,
        || {
            let mut client = client.clone();
            async move {
                let status = client
                    .status(StatusRequest { app: app.into() })
                    .await
                    .map_err(|e| e.to_string())?
                    .into_inner();
                let app = status.apps.into_iter().next().ok_or("no app")?;
                let entries: Vec<_> = app.services.iter().filter(|s| s.name == unit).collect();
                if !entries.is_empty()
                    && entries
                        .iter()
                        .all(|s| s.kind == "systemd" && s.state() == want)
                {
                    Ok(app)
                } else {
                    Err(format!("{:?}", app.services))
                }
            }
        },
    )
    .await
}

fn reloads(agent: &ContainerAgent) -> Vec<String> {
    std::fs::read_to_string(agent.container.path(RELOADS))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn systemd_restart_reload_status_and_failure_in_a_container() {
    let test = "systemd_restart_reload_status_and_failure_in_a_container";
    if systemd::require(test).is_none() {
        return;
    }
    let pki = Pki::new();
    let setup = Setup {
        files: vec![
            RootFile::executable("/usr/local/bin/hoist-demo", DEMO_SCRIPT),
            RootFile::new(&format!("/etc/systemd/system/{DEMO}.service"), DEMO_UNIT),
            RootFile::new(
                &format!("/etc/systemd/system/{BROKEN}.service"),
                BROKEN_UNIT,
            ),
            RootFile::new("/srv/demo/.keep", ""),
            RootFile::new("/srv/broken/.keep", ""),
        ],
        enable: vec![format!("{DEMO}.service")],
        bind_ro: Vec::new(),
    };
    let agent = ContainerAgent::start(&pki, APPS, setup).expect("hoistd in a systemd container");
    let container = &agent.container;
    let mut client = connect(&agent.grpc, &pki, Who::Deployer)
        .await
        .expect("connect to the agent in the container");

    // The enabled unit came up with the boot.
    let old_pid = container.main_pid(DEMO).unwrap();
    assert_ne!(old_pid, 0, "{DEMO} has no main pid");
    let app = wait_state(&mut client, "demo", DEMO, ServiceState::Running).await;
    assert!(
        app.services
            .iter()
            .all(|s| s.detail == format!("active (running), pid {old_pid}")),
        "{:?}",
        app.services
    );

    // Restart (a new main pid), then reload (SIGHUP to the same pid).
    let events = restart(&mut client, "demo", "sd-restart").await;
    let log = output(&events);
    assert_eq!(
        result(&events).0,
        JobResult::Succeeded,
        "{log}\n{}",
        agent.log_text()
    );
    let new_pid = container.main_pid(DEMO).unwrap();
    assert_ne!(new_pid, 0, "{DEMO} has no main pid after restart:\n{log}");
    assert_ne!(new_pid, old_pid, "restart kept pid {old_pid}:\n{log}");
    assert!(
        log.contains(&format!(
            "{DEMO} restarted: active (running), pid {old_pid}→{new_pid}"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("{DEMO} reloaded: active (running), pid {new_pid}")),
        "{log}"
    );
    let handled = e2e::eventually("the reload's SIGHUP handled", STATUS_TIMEOUT, || async {
        let lines = reloads(&agent);
        (!lines.is_empty()).then_some(lines)
    })
    .await;
    assert_eq!(handled, [new_pid.to_string()], "one reload, by the new pid");
    assert_eq!(
        container.main_pid(DEMO).unwrap(),
        new_pid,
        "reload restarted"
    );
    let app = wait_state(&mut client, "demo", DEMO, ServiceState::Running).await;
    assert!(
        app.services
            .iter()
            .all(|s| s.detail == format!("active (running), pid {new_pid}")),
        "{:?}",
        app.services
    );

    // Stopped behind the agent's back: Status follows the unit.
    container.systemctl(&["stop", DEMO]).unwrap();
    let app = wait_state(&mut client, "demo", DEMO, ServiceState::Stopped).await;
    assert!(
        app.services.iter().all(|s| s.detail == "inactive (dead)"),
        "{:?}",
        app.services
    );

    // A unit that cannot start fails the job, naming the unit.
    let events = restart(&mut client, "broken", "sd-broken").await;
    let (res, _, err) = result(&events);
    assert_eq!(res, JobResult::Failed, "{}", output(&events));
    assert!(
        err.contains(&format!("systemd {BROKEN}")),
        "{err}\n{}",
        output(&events)
    );
    assert_eq!(container.property(BROKEN, "ActiveState").unwrap(), "failed");
    wait_state(&mut client, "broken", BROKEN, ServiceState::Failed).await;
}
