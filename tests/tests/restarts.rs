//! Service restarts against real services: a supervisord group and a crashing program,
//! a real php-fpm master reloaded by SIGUSR2, signals to dead and dying processes, and
//! the clear errors when systemctl / supervisorctl / docker compose are missing or
//! cannot reach their daemon.

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use hoist_agent::{
    config::{ComposeAction, Service, SupervisorAction, SystemdAction},
    host::{
        process::Stream,
        services::{RestartError, restart},
    },
};
use hoist_tests::{
    e2e,
    services::{
        nginx_php::{PhpFpm, php_fpm_bin},
        supervisor::{Program, Supervisord},
    },
};
use nix::{sys::signal::kill, unistd::Pid};
use tokio::sync::mpsc;

const TIMEOUT: Duration = Duration::from_secs(30);
/// Set by [`missing_tools_are_clear_errors`] for the copy of this binary it runs.
const EMPTY_PATH_CHILD: &str = "HOIST_RESTARTS_EMPTY_PATH_CHILD";

/// Restarts `service` and returns the result with every output line it streamed.
async fn restart_collecting(
    service: &Service,
    release_dir: &Path,
) -> (Result<String, RestartError>, Vec<String>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Stream, String)>();
    let result = restart(service, release_dir, &tx).await;
    let mut lines = Vec::new();
    while let Ok((_, line)) = rx.try_recv() {
        lines.push(line);
    }
    (result, lines)
}

fn supervisor_service(name: &str, serverurl: String) -> Service {
    Service::Supervisor {
        name: name.into(),
        serverurl: Some(serverurl),
        action: SupervisorAction::Restart,
        timeout: TIMEOUT,
    }
}

fn signal_service(pidfile: &Path, signal: &str) -> Service {
    Service::Signal {
        name: Some("php-fpm".into()),
        pidfile: pidfile.to_path_buf(),
        signal: signal.into(),
        timeout: TIMEOUT,
    }
}

fn is_alive(pid: u32) -> bool {
    kill(Pid::from_raw(i32::try_from(pid).unwrap()), None).is_ok()
}

/// The error's text, asserting it is one line.
fn one_line_error(result: Result<String, RestartError>) -> String {
    let text = result.expect_err("the restart should fail").to_string();
    assert!(!text.contains('\n'), "error spans lines: {text}");
    text
}

#[tokio::test]
async fn supervisor_group_restart_and_a_program_that_cannot_start() {
    let test = "supervisor_group_restart_and_a_program_that_cannot_start";
    if e2e::require("supervisord", "supervisor", test).is_none()
        || e2e::require("supervisorctl", "supervisor", test).is_none()
    {
        return;
    }
    let supervisor = Supervisord::start(&[
        Program {
            numprocs: 2,
            ..Program::new("worker", "sleep 1000")
        },
        Program {
            autostart: false,
            ..Program::new("crashy", "sh -c 'exit 3'")
        },
    ])
    .unwrap();
    let names = ["worker:worker_00", "worker:worker_01"];
    let old: Vec<u32> = names
        .iter()
        .map(|n| supervisor.pid_of(n).expect("worker runs"))
        .collect();

    let service = supervisor_service("worker:*", supervisor.serverurl());
    let (result, lines) = restart_collecting(&service, supervisor.dir()).await;
    let summary = result.unwrap_or_else(|e| panic!("{e}\n{}", supervisor.log_text()));
    let new: Vec<u32> = names
        .iter()
        .map(|n| supervisor.pid_of(n).expect("worker runs again"))
        .collect();
    for ((name, old), new) in names.iter().zip(&old).zip(&new) {
        assert_ne!(old, new, "{name} kept pid {old}");
        assert!(is_alive(*new), "{name} pid {new} is not alive");
        assert!(!is_alive(*old), "{name}'s old pid {old} still alive");
        assert!(
            summary.contains(&format!("{name} pid {old}→{new}")),
            "{summary}"
        );
    }
    assert!(summary.starts_with("worker:* restarted: "), "{summary}");
    assert!(
        lines.iter().any(|l| l == "worker:worker_00: started"),
        "supervisorctl's output was not streamed: {lines:?}"
    );

    // A program whose command exits at once never reaches RUNNING.
    let crashy = supervisor_service("crashy", supervisor.serverurl());
    let text = one_line_error(restart_collecting(&crashy, supervisor.dir()).await.0);
    assert!(text.starts_with("supervisor crashy: "), "{text}");
    assert!(
        ["spawn error", "BACKOFF", "FATAL"]
            .iter()
            .any(|w| text.contains(w)),
        "{text}"
    );

    // An unknown program and an unreachable supervisord are errors, not hangs.
    let nope = supervisor_service("nope", supervisor.serverurl());
    let text = one_line_error(restart_collecting(&nope, supervisor.dir()).await.0);
    assert!(text.contains("no such process"), "{text}");
    let socket = supervisor.dir().join("missing.sock");
    let gone = supervisor_service("worker:*", format!("unix://{}", socket.display()));
    let started = Instant::now();
    let text = one_line_error(restart_collecting(&gone, supervisor.dir()).await.0);
    assert!(text.contains("no such file"), "{text}");
    assert!(started.elapsed() < TIMEOUT, "took {:?}", started.elapsed());
}

/// php-fpm, or `None` after reporting the skip.
fn php_fpm_or_skip(test: &str) -> Option<PhpFpm> {
    if php_fpm_bin().is_none() && e2e::require("php-fpm8.2", "php-fpm", test).is_none() {
        return None;
    }
    Some(PhpFpm::start().unwrap())
}

#[tokio::test]
async fn php_fpm_sigusr2_reload_replaces_the_workers() {
    let Some(fpm) = php_fpm_or_skip("php_fpm_sigusr2_reload_replaces_the_workers") else {
        return;
    };
    let master = fpm.master_pid();
    let old = fpm.worker_pids();
    assert_eq!(old.len(), 2, "{}", fpm.log_text());

    let service = signal_service(&fpm.pidfile(), "SIGUSR2");
    let (result, lines) = restart_collecting(&service, fpm.dir()).await;
    let summary = result.unwrap_or_else(|e| panic!("{e}\n{}", fpm.log_text()));

    // Back means new workers already exist when restart returns: none of the old ones.
    let now = fpm.worker_pids();
    assert!(!now.is_empty(), "restart returned before any new worker");
    assert!(
        now.iter().all(|pid| !old.contains(pid)),
        "restart returned while old workers {old:?} remained: {now:?}"
    );
    assert_eq!(fpm.master_pid(), master);
    assert!(is_alive(master), "master {master} died");
    let pidfile = std::fs::read_to_string(fpm.pidfile()).unwrap();
    assert_eq!(pidfile.trim(), master.to_string());
    assert!(
        summary.contains(&format!("master pid {master}, workers")),
        "{summary}"
    );
    assert!(
        lines.contains(&format!("sent SIGUSR2 to pid {master}")),
        "{lines:?}"
    );
    let full = e2e::eventually("two new workers", TIMEOUT, || async {
        let pids = fpm.worker_pids();
        (pids.len() == 2).then_some(pids)
    })
    .await;
    assert!(full.iter().all(|pid| !old.contains(pid)), "{full:?}");

    // SIGUSR1 only reopens the logs: nothing changes, so liveness after the settle is
    // all there is to check, and the workers stay.
    let started = Instant::now();
    let service = signal_service(&fpm.pidfile(), "SIGUSR1");
    let summary = restart_collecting(&service, fpm.dir()).await.0.unwrap();
    assert!(summary.contains("still running"), "{summary}");
    assert!(started.elapsed() < TIMEOUT / 2, "{:?}", started.elapsed());
    assert_eq!(fpm.worker_pids(), full);
}

#[tokio::test]
async fn php_fpm_reload_into_a_broken_config_is_an_error() {
    let Some(fpm) = php_fpm_or_skip("php_fpm_reload_into_a_broken_config_is_an_error") else {
        return;
    };
    let master = fpm.master_pid();
    // What a bad deploy does: the config the master re-reads on reload is broken.
    std::fs::write(fpm.dir().join("php-fpm.conf"), "[global\nthis is not ini\n").unwrap();
    let service = signal_service(&fpm.pidfile(), "SIGUSR2");
    let text = one_line_error(restart_collecting(&service, fpm.dir()).await.0);
    assert_eq!(
        text,
        format!("signal php-fpm: pid {master} exited after SIGUSR2")
    );
}

#[tokio::test]
async fn signal_to_a_dead_pid_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let pidfile = dir.path().join("app.pid");
    std::fs::write(&pidfile, format!("{pid}\n")).unwrap();

    let text = one_line_error(
        restart_collecting(&signal_service(&pidfile, "SIGUSR2"), dir.path())
            .await
            .0,
    );
    assert_eq!(
        text,
        format!(
            "signal php-fpm: pid {pid} from {} is not running",
            pidfile.display()
        )
    );
    std::fs::remove_file(&pidfile).unwrap();
    let text = one_line_error(
        restart_collecting(&signal_service(&pidfile, "SIGHUP"), dir.path())
            .await
            .0,
    );
    assert!(text.ends_with("app.pid does not exist"), "{text}");
}

/// systemd and Docker are not running here (another suite covers them); whatever this
/// host has, restarting a unit or a compose project that cannot work must be a clear
/// one-line error naming the service, quickly, not a panic or a hang.
#[tokio::test]
async fn systemd_and_compose_fail_clearly_on_this_host() {
    let dir = tempfile::tempdir().unwrap();
    let unit = Service::Systemd {
        name: "hoist-test-no-such-unit".into(),
        action: SystemdAction::Restart,
        timeout: TIMEOUT,
    };
    let started = Instant::now();
    let text = one_line_error(restart_collecting(&unit, dir.path()).await.0);
    assert!(
        text.starts_with("systemd hoist-test-no-such-unit: "),
        "{text}"
    );
    assert!(started.elapsed() < TIMEOUT, "{:?}", started.elapsed());

    // Invalid for compose wherever it runs: refused before anything is created.
    std::fs::write(
        dir.path().join("compose.yaml"),
        "services:\n  web:\n    image: hoist-test.invalid/none\n    no_such_key: 1\n",
    )
    .unwrap();
    let project = Service::Compose {
        compose_file: None,
        project: "hoist-test-restarts".into(),
        services: vec!["web".into()],
        action: ComposeAction::Recreate,
        timeout: TIMEOUT,
    };
    let text = one_line_error(restart_collecting(&project, dir.path()).await.0);
    assert!(text.starts_with("compose hoist-test-restarts: "), "{text}");

    let missing = Service::Compose {
        compose_file: Some("deploy/compose.prod.yaml".into()),
        project: "hoist-test-restarts".into(),
        services: Vec::new(),
        action: ComposeAction::Restart,
        timeout: TIMEOUT,
    };
    let text = one_line_error(restart_collecting(&missing, dir.path()).await.0);
    assert!(
        text.ends_with("deploy/compose.prod.yaml does not exist"),
        "{text}"
    );
}

/// Runs [`missing_tools_child`] in a copy of this test binary whose `PATH` is an empty
/// directory, so none of systemctl, supervisorctl, docker or docker-compose is found.
#[test]
fn missing_tools_are_clear_errors() {
    let empty = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let out = e2e::run_with_timeout(
        Command::new(exe)
            .args(["missing_tools_child", "--exact", "--ignored", "--nocapture"])
            .env("PATH", empty.path())
            .env(EMPTY_PATH_CHILD, "1"),
        None,
        Duration::from_secs(60),
    )
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("1 passed"),
        "the child test did not run:\n{text}"
    );
}

#[tokio::test]
#[ignore = "run by missing_tools_are_clear_errors with an empty PATH"]
async fn missing_tools_child() {
    if std::env::var_os(EMPTY_PATH_CHILD).is_none() {
        // Only meaningful with the empty PATH its parent test sets up.
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("compose.yaml"), "services: {}\n").unwrap();
    let cases = [
        (
            Service::Systemd {
                name: "php8.2-fpm".into(),
                action: SystemdAction::Reload,
                timeout: TIMEOUT,
            },
            "systemd php8.2-fpm: systemctl is not installed on this host",
        ),
        (
            Service::Supervisor {
                name: "worker:*".into(),
                serverurl: None,
                action: SupervisorAction::Restart,
                timeout: TIMEOUT,
            },
            "supervisor worker:*: supervisorctl is not installed on this host",
        ),
        (
            Service::Compose {
                compose_file: None,
                project: "shop".into(),
                services: Vec::new(),
                action: ComposeAction::Restart,
                timeout: TIMEOUT,
            },
            "compose shop: docker compose (v2 plugin) or docker-compose is not installed on \
             this host",
        ),
    ];
    for (service, expected) in cases {
        let text = one_line_error(restart_collecting(&service, dir.path()).await.0);
        assert_eq!(text, expected);
    }
}
