//! systemd services against a real systemd: a Debian 12 container booted with
//! systemd-nspawn, with hoistd running inside it as a unit so its `systemctl` talks to
//! the container's systemd. Restart and reload through the Restart RPC, the Status RPC
//! following the unit, and a unit that cannot start failing the job. hoistd runs under
//! the shipped `systemd/hoistd.service` as it is: READY after bind, `STATUS=` text, a
//! synchronous reload that fails when the agent refuses the new config, a watchdog
//! restart of a stopped agent, and config errors that end in a `failed` unit (exit 64)
//! instead of a restart loop.

use std::time::{Duration, Instant};

use hoist_proto::v1::{
    self as pb, AppStatus, JobEvent, JobResult, RestartRequest, ServiceState, StartRequest,
    StatusRequest, StopRequest, agent_client::AgentClient,
};
use hoist_tests::{
    e2e,
    harness::{Pki, Who, connect},
    jobs::{collect, output, result},
    services::systemd::{self, ContainerAgent, Netns, RootFile, Setup, agent_config},
};

use tokio_stream::StreamExt as _;
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
echo "hoist-demo started as $$"
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

[[app.logs]]
name = "journal"
unit = "hoist-demo.service"

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
        netns: None,
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

    // The unit's journal through the Logs RPC (a viewer's): both starts, and with a
    // pattern only the matching lines.
    let mut viewer = connect(&agent.grpc, &pki, Who::Viewer).await.unwrap();
    let journal = |grep: &str| pb::LogsRequest {
        app: "demo".into(),
        source: "journal".into(),
        lines: 50,
        follow_ms: 0,
        grep: grep.into(),
    };
    let lines: Vec<String> = viewer
        .logs(journal(""))
        .await
        .unwrap()
        .into_inner()
        .map(|l| {
            let l = l.unwrap();
            format!("{}{}", l.line, l.notice)
        })
        .collect()
        .await;
    for pid in [old_pid, new_pid] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(&format!("hoist-demo started as {pid}"))),
            "{lines:?}"
        );
    }
    let matching: Vec<String> = viewer
        .logs(journal("started as \\d+$"))
        .await
        .unwrap()
        .into_inner()
        .map(|l| l.unwrap().line)
        .collect()
        .await;
    assert_eq!(matching.len(), 2, "{matching:?}");

    // `hoist stop` / `hoist start` through the agent: systemctl stop until inactive,
    // systemctl start until active (a new main pid).
    let events = collect(
        client
            .stop(StopRequest {
                app: "demo".into(),
                service: String::new(),
                job_id: "sd-stop".into(),
            })
            .await
            .expect("stop accepted")
            .into_inner(),
    )
    .await;
    let log = output(&events);
    assert_eq!(result(&events).0, JobResult::Succeeded, "{log}");
    assert_eq!(container.property(DEMO, "ActiveState").unwrap(), "inactive");
    assert!(log.contains(&format!("{DEMO} stopped: inactive")), "{log}");
    wait_state(&mut client, "demo", DEMO, ServiceState::Stopped).await;
    let events = collect(
        client
            .start(StartRequest {
                app: "demo".into(),
                service: DEMO.into(),
                job_id: "sd-start".into(),
            })
            .await
            .expect("start accepted")
            .into_inner(),
    )
    .await;
    let log = output(&events);
    assert_eq!(result(&events).0, JobResult::Succeeded, "{log}");
    assert_eq!(container.property(DEMO, "ActiveState").unwrap(), "active");
    let started_pid = container.main_pid(DEMO).unwrap();
    assert!(started_pid != 0 && started_pid != new_pid, "{log}");
    assert!(
        log.contains(&format!("{DEMO} started: active (running)")),
        "{log}"
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

const ONE_APP: &str = r#"
[[app]]
name = "demo"
repo = "/nonexistent.git"
deploy_to = "/srv/demo"
"#;

const TWO_APPS: &str = r#"
[[app]]
name = "demo"
repo = "/nonexistent.git"
deploy_to = "/srv/demo"

[[app]]
name = "other"
repo = "/nonexistent.git"
deploy_to = "/srv/other"
"#;

const UNIT: &str = "hoistd.service";
/// Longer than two `RestartSec=2s` periods: a restart loop would have shown by then.
const NO_LOOP: Duration = Duration::from_secs(6);
const WATCHDOG_LIMIT: Duration = Duration::from_secs(30);

/// What the journal says after `before` (the journal is append-only).
fn since(before: &str, now: &str) -> String {
    now.get(before.len()..).unwrap_or(now).to_string()
}

async fn app_names(grpc: &str, pki: &Pki) -> Result<Vec<String>, String> {
    let mut client = connect(grpc, pki, Who::Viewer)
        .await
        .map_err(|e| e.to_string())?;
    let status = client
        .status(StatusRequest { app: String::new() })
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    Ok(status.apps.into_iter().map(|a| a.name).collect())
}

#[tokio::test]
async fn shipped_unit_reloads_synchronously_restarts_a_stuck_agent_and_stops_on_config_errors() {
    let test =
        "shipped_unit_reloads_synchronously_restarts_a_stuck_agent_and_stops_on_config_errors";
    if systemd::require(test).is_none() {
        return;
    }
    let pki = Pki::new();
    let setup = Setup {
        files: vec![
            RootFile::new("/srv/demo/.keep", ""),
            // The shipped unit as it is, with a shorter watchdog so the test need not
            // wait a minute for it.
            RootFile::new(
                "/etc/systemd/system/hoistd.service.d/test-watchdog.conf",
                "[Service]\nWatchdogSec=3s\n",
            ),
        ],
        enable: Vec::new(),
        bind_ro: Vec::new(),
        netns: None,
    };
    let agent = ContainerAgent::start(&pki, ONE_APP, setup).expect("hoistd under the shipped unit");
    let c = &agent.container;
    assert_eq!(c.property(UNIT, "ActiveState").unwrap(), "active");
    assert_eq!(app_names(&agent.grpc, &pki).await.unwrap(), ["demo"]);

    // The installed unit, as the package put it: verified against the installed binary
    // (its man page is checked as a file: minbase has no `man`), exposure at most 4.9.
    assert!(c.path("/usr/share/man/man8/hoistd.8.gz").is_file());
    let verify = c
        .exec(&[
            "systemd-analyze",
            "verify",
            "--man=no",
            "/lib/systemd/system/hoistd.service",
        ])
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    let security = c
        .exec(&["systemd-analyze", "security", "--no-pager", UNIT])
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout).into_owned();
    let exposure: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for hoistd.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    assert!(exposure <= 4.9, "exposure {exposure} > 4.9:\n{report}");
    let status = e2e::eventually("STATUS= text", STATUS_TIMEOUT, || async {
        let text = c.property(UNIT, "StatusText").ok()?;
        text.contains("serving 1 app(s)").then_some(text)
    })
    .await;
    assert!(status.contains("no deploys yet"), "{status}");
    let journal = agent.log_text();
    assert!(journal.contains("hoistd ready"), "{journal}");
    // journald stamps lines itself: hoistd's own lines carry no second timestamp.
    let ready = journal
        .lines()
        .find(|l| l.contains("hoistd ready"))
        .unwrap();
    assert!(
        ready.trim_start().starts_with("INFO"),
        "a timestamp before the level: {ready}"
    );

    // A refused reload fails `systemctl reload`; the agent keeps serving its config.
    let pid = c.main_pid(UNIT).unwrap();
    let missing_cert =
        agent_config(TWO_APPS).replace("/etc/hoist/agent.pem", "/etc/hoist/missing.pem");
    agent.write_config(&missing_cert).unwrap();
    let before = agent.log_text();
    let refused = c.systemctl(&["reload", UNIT]);
    assert!(
        refused.is_err(),
        "reload of a config with a missing certificate succeeded"
    );
    let journal = since(&before, &agent.log_text());
    assert!(journal.contains("/etc/hoist/missing.pem"), "{journal}");
    assert!(journal.contains("refused"), "{journal}");
    assert_eq!(c.main_pid(UNIT).unwrap(), pid, "reload restarted the agent");
    assert_eq!(c.property(UNIT, "ActiveState").unwrap(), "active");
    assert_eq!(
        app_names(&agent.grpc, &pki).await.unwrap(),
        ["demo"],
        "old config kept"
    );
    let status = c.property(UNIT, "StatusText").unwrap();
    assert!(status.contains("last reload refused"), "{status}");

    // A good reload succeeds and applies at once.
    agent.write_config(&agent_config(TWO_APPS)).unwrap();
    c.systemctl(&["reload", UNIT])
        .expect("reload of a good config");
    assert_eq!(
        app_names(&agent.grpc, &pki).await.unwrap(),
        ["demo", "other"]
    );
    assert_eq!(c.main_pid(UNIT).unwrap(), pid);

    // A stopped agent stops pinging the watchdog: systemd kills and restarts it.
    let restarts: u32 = c.property(UNIT, "NRestarts").unwrap().parse().unwrap();
    // MainPID is the container's pid: signal it from inside (the shell's kill).
    let stop = c
        .exec(&["/bin/sh", "-c", &format!("kill -STOP {pid}")])
        .unwrap();
    assert!(stop.status.success(), "{stop:?}");
    let started = Instant::now();
    let new_pid = loop {
        let now = c.main_pid(UNIT).unwrap_or(0);
        let active = c.property(UNIT, "ActiveState").unwrap_or_default() == "active";
        if now != 0 && now != pid && active {
            break now;
        }
        assert!(
            started.elapsed() < WATCHDOG_LIMIT,
            "no watchdog restart in {WATCHDOG_LIMIT:?}:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_ne!(new_pid, pid);
    let after: u32 = c.property(UNIT, "NRestarts").unwrap().parse().unwrap();
    assert_eq!(after, restarts + 1, "one restart by the watchdog");
    let grpc = e2e::eventually(
        "the restarted agent's listen file",
        STATUS_TIMEOUT,
        || async { agent.listen().filter(|g| *g != agent.grpc) },
    )
    .await;
    assert_eq!(app_names(&grpc, &pki).await.unwrap(), ["demo", "other"]);

    // A config error at start: exit 64, unit failed, no restart loop, the error once.
    agent.write_config(&missing_cert).unwrap();
    let before = agent.log_text();
    assert!(
        c.systemctl(&["restart", UNIT]).is_err(),
        "start with a missing certificate succeeded"
    );
    // (an explicit restart resets the counter; it must not move from here on)
    let failed_at: u32 = c.property(UNIT, "NRestarts").unwrap().parse().unwrap();
    tokio::time::sleep(NO_LOOP).await;
    assert_eq!(c.property(UNIT, "ActiveState").unwrap(), "failed");
    assert_eq!(c.property(UNIT, "ExecMainStatus").unwrap(), "64");
    assert_eq!(
        c.property(UNIT, "NRestarts")
            .unwrap()
            .parse::<u32>()
            .unwrap(),
        failed_at,
        "restarted into the same config error:\n{}",
        agent.log_text()
    );
    let starts = since(&before, &agent.log_text())
        .matches("Starting hoistd.service")
        .count();
    assert_eq!(starts, 1, "started more than once:\n{}", agent.log_text());
    let journal = since(&before, &agent.log_text());
    let lines: Vec<&str> = journal
        .lines()
        .filter(|l| l.contains("missing.pem"))
        .collect();
    assert_eq!(lines.len(), 1, "the error once:\n{journal}");

    // A deploy_to the unit mounts read-only (ProtectHome=read-only) is a config error
    // too, named with its fix.
    agent
        .write_config(&agent_config(
            &ONE_APP.replace("/srv/demo", "/home/demo/app"),
        ))
        .unwrap();
    c.systemctl(&["reset-failed", UNIT]).unwrap();
    let before = agent.log_text();
    assert!(
        c.systemctl(&["restart", UNIT]).is_err(),
        "start with deploy_to under /home succeeded"
    );
    assert_eq!(c.property(UNIT, "ExecMainStatus").unwrap(), "64");
    let journal = since(&before, &agent.log_text());
    assert!(
        journal.contains("/home/demo/app") && journal.contains("read-only"),
        "{journal}"
    );
    assert!(journal.contains("ReadWritePaths="), "{journal}");
}

const WEB_APP: &str = r#"
[[app]]
name = "web"
repo = "/repo/app.git"
deploy_to = "/srv/web"

[app.steps]
build = "if [ -e SLOW ]; then sleep 20; fi"

[[app.services]]
kind = "systemd"
name = "hoist-demo"
action = "restart"
timeout = "30s"
"#;

/// Runs `hoist ARGS` (killed after `limit`): (exit code, stdout + stderr).
fn hoist_cli(args: &[&str], limit: Duration) -> (Option<i32>, String) {
    let mut child = std::process::Command::new(hoist_tests::harness::bin("hoist"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run hoist");
    let started = Instant::now();
    loop {
        if let Some(_status) = child.try_wait().expect("wait for hoist") {
            break;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("hoist output");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn installed_agent_deploys_survives_sigkill_and_drains_on_stop() {
    let test = "installed_agent_deploys_survives_sigkill_and_drains_on_stop";
    if systemd::require(test).is_none() {
        return;
    }
    let pki = Pki::new();
    let repo = hoist_tests::services::git::AppRepo::new_static(&[("index.html", "v\n")]);
    repo.commit_version("1", &[]);
    let setup = Setup {
        files: vec![
            RootFile::executable("/usr/local/bin/hoist-demo", DEMO_SCRIPT),
            RootFile::new(&format!("/etc/systemd/system/{DEMO}.service"), DEMO_UNIT),
            RootFile::new("/srv/web/.keep", ""),
        ],
        enable: vec![format!("{DEMO}.service")],
        bind_ro: vec![(repo.url().into(), "/repo/app.git".into())],
        netns: None,
    };
    let agent = ContainerAgent::start(&pki, WEB_APP, setup).expect("the installed hoistd");
    let c = &agent.container;
    let root = tempfile::tempdir().unwrap();
    let fleet = root.path().join("fleet.toml");
    let fleet_text = |grpc: &str| {
        format!(
            "{}\n[[host]]\nname = \"box\"\naddress = \"{grpc}\"\n",
            pki.fleet_tls(Who::Deployer)
        )
    };
    std::fs::write(&fleet, fleet_text(&agent.grpc)).unwrap();
    let fl = fleet.to_str().unwrap();
    let limit = Duration::from_secs(90);

    // A deploy through the CLI restarts the app's systemd unit: a new MainPID.
    let demo_pid = container_pid(c, DEMO);
    let (code, out) = hoist_cli(&["deploy", "web", "--ref", "main", "--fleet", fl], limit);
    assert_eq!(code, Some(0), "{out}\n{}", agent.log_text());
    let current = std::fs::read_link(c.path("/srv/web/current")).expect("current");
    assert!(
        c.path("/srv/web")
            .join(&current)
            .join("index.html")
            .is_file()
    );
    assert_ne!(
        container_pid(c, DEMO),
        demo_pid,
        "the deploy did not restart {DEMO}"
    );

    // SIGKILL in the middle of a deploy: systemd restarts the agent, the job is
    // reported interrupted, `current` still serves v1, the next deploy succeeds.
    repo.commit_version("2", &[("SLOW", "")]);
    let agent_pid = c.main_pid(UNIT).unwrap();
    let fl_owned = fl.to_string();
    let slow = std::thread::spawn(move || {
        hoist_cli(
            &["deploy", "web", "--ref", "main", "--fleet", &fl_owned],
            Duration::from_secs(60),
        )
    });
    e2e::eventually("the slow build running", STATUS_TIMEOUT, || async {
        let releases = std::fs::read_dir(c.path("/srv/web/releases")).ok()?.count();
        (releases >= 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let kill = c
        .exec(&["/bin/sh", "-c", &format!("kill -KILL {agent_pid}")])
        .unwrap();
    assert!(kill.status.success(), "{kill:?}");
    let (code, out) = slow.join().unwrap();
    assert_ne!(
        code,
        Some(0),
        "a deploy whose agent was killed succeeded:\n{out}"
    );
    let started = Instant::now();
    let grpc = loop {
        let now = c.main_pid(UNIT).unwrap_or(0);
        if now != 0
            && now != agent_pid
            && let Some(grpc) = agent.listen().filter(|g| *g != agent.grpc)
        {
            break grpc;
        }
        assert!(
            started.elapsed() < WATCHDOG_LIMIT,
            "systemd did not restart the killed agent:\n{}",
            agent.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        std::fs::read_link(c.path("/srv/web/current")).unwrap(),
        current,
        "the killed deploy changed current"
    );
    std::fs::write(&fleet, fleet_text(&grpc)).unwrap();
    let (code, out) = hoist_cli(&["log", "web", "--fleet", fl], limit);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("interrupted"), "hoist log:\n{out}");
    repo.remove_file("SLOW");
    repo.commit_version("3", &[]);
    let started = Instant::now();
    let (code, out) = hoist_cli(&["deploy", "web", "--ref", "main", "--fleet", fl], limit);
    assert_eq!(
        code,
        Some(0),
        "the deploy after the kill:\n{out}\n{}",
        agent.log_text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the deploy after the kill waited {:?} (a stale lease?)",
        started.elapsed()
    );
    let v3 = std::fs::read_link(c.path("/srv/web/current")).unwrap();
    assert_ne!(v3, current);

    // `systemctl stop` drains: the unit stops cleanly, well within TimeoutStopSec.
    let started = Instant::now();
    c.systemctl(&["stop", UNIT]).unwrap();
    let took = started.elapsed();
    assert_eq!(c.property(UNIT, "ActiveState").unwrap(), "inactive");
    assert_eq!(c.property(UNIT, "Result").unwrap(), "success");
    assert!(took < Duration::from_secs(12), "stop took {took:?}");
    let journal = agent.log_text();
    assert!(journal.contains("drain"), "{journal}");
}

/// A unit's MainPID inside the container (0 when none).
fn container_pid(c: &systemd::Container, unit: &str) -> u32 {
    c.main_pid(unit).unwrap_or(0)
}

/// Hosts of the fleet test, each a container in its own network namespace.
const FLEET_HOSTS: u8 = 3;

#[tokio::test]
async fn rolling_deploy_across_installed_agents_in_their_own_network_namespaces() {
    let test = "rolling_deploy_across_installed_agents_in_their_own_network_namespaces";
    if systemd::require(test).is_none() || e2e::require("ip", "iproute2", test).is_none() {
        return;
    }
    let pki = Pki::new();
    let repo = hoist_tests::services::git::AppRepo::new_static(&[("index.html", "v\n")]);
    repo.commit_version("1", &[]);
    // Addresses the test chose, inside namespaces it made: 10.213.N.2 per host.
    let nets: Vec<Netns> = (1..=FLEET_HOSTS)
        .map(|i| Netns::create(i).expect("a network namespace"))
        .collect();
    for (i, net) in nets.iter().enumerate() {
        pki.issue_agent(&format!("box-{}", i + 1), &[&net.addr()]);
    }
    let agents: Vec<ContainerAgent> = std::thread::scope(|scope| {
        let booting: Vec<_> = nets
            .iter()
            .enumerate()
            .map(|(i, net)| {
                let (pki, repo) = (&pki, &repo);
                scope.spawn(move || {
                    let setup = Setup {
                        files: vec![
                            RootFile::executable("/usr/local/bin/hoist-demo", DEMO_SCRIPT),
                            RootFile::new(
                                &format!("/etc/systemd/system/{DEMO}.service"),
                                DEMO_UNIT,
                            ),
                            RootFile::new("/srv/web/.keep", ""),
                        ],
                        enable: vec![format!("{DEMO}.service")],
                        bind_ro: vec![(repo.url().into(), "/repo/app.git".into())],
                        netns: Some(net.path()),
                    };
                    let listen = format!("{}:7443", net.addr());
                    ContainerAgent::start_as(
                        pki,
                        &format!("box-{}", i + 1),
                        &listen,
                        WEB_APP,
                        setup,
                    )
                    .expect("an installed agent in its namespace")
                })
            })
            .collect();
        booting.into_iter().map(|b| b.join().unwrap()).collect()
    });
    let root = tempfile::tempdir().unwrap();
    let fleet = root.path().join("fleet.toml");
    let mut text = pki.fleet_tls(Who::Deployer);
    for (i, agent) in agents.iter().enumerate() {
        assert!(agent.grpc.starts_with("10.213."), "{}", agent.grpc);
        text.push_str(&format!(
            "\n[[host]]\nname = \"box-{}\"\naddress = \"{}\"\n",
            i + 1,
            agent.grpc
        ));
    }
    std::fs::write(&fleet, text).unwrap();
    let fl = fleet.to_str().unwrap();
    let limit = Duration::from_secs(120);

    let (code, out) = hoist_cli(&["status", "--fleet", fl], limit);
    assert_eq!(code, Some(0), "{out}");
    let before: Vec<u32> = agents
        .iter()
        .map(|a| container_pid(&a.container, DEMO))
        .collect();
    let (code, out) = hoist_cli(
        &[
            "deploy",
            "web",
            "--ref",
            "main",
            "--strategy",
            "rolling",
            "--batch",
            "1",
            "--fleet",
            fl,
        ],
        limit,
    );
    assert_eq!(code, Some(0), "{out}");
    for (i, agent) in agents.iter().enumerate() {
        let c = &agent.container;
        let current = std::fs::read_link(c.path("/srv/web/current"))
            .unwrap_or_else(|e| panic!("box-{}: no current: {e}\n{out}", i + 1));
        assert!(c.path("/srv/web").join(current).join("VERSION").is_file());
        assert_ne!(
            container_pid(c, DEMO),
            before[i],
            "box-{}: {DEMO} not restarted",
            i + 1
        );
        assert_eq!(c.property(UNIT, "ActiveState").unwrap(), "active");
    }
    let (code, out) = hoist_cli(&["releases", "web", "--fleet", fl], limit);
    assert_eq!(code, Some(0), "{out}");
    for i in 1..=FLEET_HOSTS {
        assert!(out.contains(&format!("box-{i}")), "{out}");
    }
    drop(agents);
    drop(nets);
}
