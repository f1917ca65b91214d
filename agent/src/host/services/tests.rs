// These tests start stand-in daemons and children directly, as the services under test.
#![allow(clippy::disallowed_methods)]

use std::{path::Path, time::Duration};

use hoist_proto::v1::ServiceState;
use tokio::{sync::mpsc::UnboundedSender, time::Instant};

use super::{compose::*, signal::*, supervisor::*, systemd::*, *};
use crate::{config::Service, host::process::Stream};

#[test]
fn supervisor_lines() {
    let out = "web:web_00   RUNNING   pid 12, uptime 0:01:02\nweb:web_01   RUNNING   pid 13, uptime 0:01:02\n";
    assert_eq!(parse_supervisor_status(out).0, ServiceState::Running);
    let out = "web:web_00   RUNNING   pid 12, uptime 0:01:02\nweb:web_01   STOPPED   Not started\n";
    assert_eq!(parse_supervisor_status(out).0, ServiceState::Stopped);
    let out = "worker   FATAL     Exited too quickly\n";
    assert_eq!(parse_supervisor_status(out).0, ServiceState::Failed);
    let out = "worker: ERROR (no such process)\n";
    assert_eq!(parse_supervisor_status(out).0, ServiceState::Unknown);
    let out = "unix:///tmp/x.sock no such file\n";
    assert_eq!(parse_supervisor_status(out).0, ServiceState::Unknown);
}

#[test]
fn systemctl_show() {
    let (state, detail) =
        parse_systemctl_show("ActiveState=active\nSubState=running\nMainPID=42\n");
    assert_eq!(state, ServiceState::Running);
    assert_eq!(detail, "active (running), pid 42");
    let (state, _) = parse_systemctl_show("ActiveState=failed\nSubState=failed\nMainPID=0\n");
    assert_eq!(state, ServiceState::Failed);
}

#[test]
fn docker_ps_rows() {
    let rows = "web\trunning\tUp 3 minutes (healthy)\nworker\texited\tExited (1) 2 seconds ago\n";
    assert_eq!(parse_docker_ps(rows, &[]).0, ServiceState::Stopped);
    assert_eq!(
        parse_docker_ps(rows, &["web".into()]).0,
        ServiceState::Running
    );
    let rows = "web\trunning\tUp 3 minutes (unhealthy)\n";
    assert_eq!(parse_docker_ps(rows, &[]).0, ServiceState::Failed);
    assert_eq!(
        parse_docker_ps("", &["web".into()]).0,
        ServiceState::Stopped
    );
}

#[test]
fn pidfiles() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("x.pid");
    assert_eq!(pidfile_state(&pidfile).0, ServiceState::Stopped);
    std::fs::write(&pidfile, format!("{}\n", std::process::id())).unwrap();
    assert_eq!(pidfile_state(&pidfile).0, ServiceState::Running);
    std::fs::write(&pidfile, "junk").unwrap();
    assert_eq!(pidfile_state(&pidfile).0, ServiceState::Unknown);
}

#[test]
fn supervisor_processes_and_progress() {
    let out = "worker:worker_00   RUNNING   pid 12, uptime 0:01:02\n\
                   worker:worker_01   STARTING  \n\
                   nope: ERROR (no such process)\n";
    let procs = parse_supervisor_processes(out);
    assert_eq!(procs.len(), 2);
    assert_eq!(procs[0].name, "worker:worker_00");
    assert_eq!(procs[0].state, "RUNNING");
    assert_eq!(procs[0].pid, Some(12));
    assert_eq!(procs[0].description, "pid 12, uptime 0:01:02");
    assert_eq!(procs[1].pid, None);

    assert!(matches!(
        supervisor_progress(out),
        Progress::Waiting(s) if s == "worker:worker_00 RUNNING, worker:worker_01 STARTING"
    ));
    let crashing = "crashy   BACKOFF   Exited too quickly (process log may have details)\n";
    assert!(matches!(
        supervisor_progress(crashing),
        Progress::Failed(p, _) if p.starts_with("crashy is BACKOFF (Exited too quickly")
    ));
    assert!(matches!(
        supervisor_progress("x: ERROR (no such process)\n"),
        Progress::Failed(..)
    ));
    let running = "a   RUNNING   pid 20, uptime 0:00:01\nb   RUNNING   pid 21, uptime 0:00:01\n";
    let Progress::Ready(after) = supervisor_progress(running) else {
        panic!("all RUNNING is ready");
    };
    let before = parse_supervisor_processes(
        "a   RUNNING   pid 10, uptime 1:00:00\nb   STOPPED   Not started\n",
    );
    assert_eq!(
        supervisor_summary(&before, &after),
        "a pid 10→20, b pid 21 (was not running)"
    );
}

#[test]
fn systemd_summaries() {
    let show = "ActiveState=active\nSubState=running\nMainPID=42\n";
    assert_eq!(systemd_summary(show, "41"), "active (running), pid 41→42");
    assert_eq!(systemd_summary(show, "42"), "active (running), pid 42");
    assert_eq!(systemd_summary(show, "0"), "active (running), pid 42");
    assert_eq!(systemctl_field(show, "SubState"), "running");
    assert_eq!(systemctl_field(show, "Nope"), "");
}

#[test]
fn proc_stat_lines() {
    assert_eq!(
        parse_proc_stat("42 (php-fpm: pool www) S 41 42 42 0 -1"),
        Some(('S', 41))
    );
    // A command name with a ") " inside does not shift the fields.
    assert_eq!(parse_proc_stat("7 (a) Z 1 (b) R 99 7"), Some(('R', 99)));
    assert_eq!(parse_proc_stat("garbage"), None);
}

#[test]
fn children_and_zombies() {
    let mut sleeper = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let sleeper_pid = i32::try_from(sleeper.id()).unwrap();
    let me = i32::try_from(std::process::id()).unwrap();
    assert!(children_of(me).contains(&sleeper_pid));
    assert!(alive(sleeper_pid));

    let mut quick = std::process::Command::new("true").spawn().unwrap();
    let quick_pid = i32::try_from(quick.id()).unwrap();
    // Not reaped yet: a zombie, which must not count as alive.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alive(quick_pid) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!alive(quick_pid), "zombie {quick_pid} counted as alive");
    assert!(!children_of(me).contains(&quick_pid));
    quick.wait().unwrap();

    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    assert!(!alive(sleeper_pid));
}

#[test]
fn errors_quote_one_line_of_output() {
    assert_eq!(one_line("a\n\n b \nc\nd\n"), "b | c | d");
    assert_eq!(last_output(""), "");
    assert_eq!(last_output("x\ny"), "; last output: x | y");
    let long = "z".repeat(2 * ERROR_BYTES);
    assert_eq!(one_line(&long).len(), ERROR_BYTES + "…".len());
    let err = RestartError::Command {
        service: "supervisor worker:*".into(),
        command: "supervisorctl restart worker:*".into(),
        outcome: "exited with status 7".into(),
        output: "worker:worker_00: ERROR (spawn error)\nworker:worker_01: ERROR (spawn error)\n"
            .into(),
    };
    assert_eq!(
        err.to_string(),
        "supervisor worker:*: `supervisorctl restart worker:*` exited with status 7; last \
             output: worker:worker_00: ERROR (spawn error) | worker:worker_01: ERROR (spawn error)"
    );
    let err = RestartError::Timeout {
        service: "signal php-fpm".into(),
        timeout: Duration::from_secs(30),
        state: "master pid 5\nworkers none".into(),
    };
    assert_eq!(
        err.to_string(),
        "signal php-fpm: not back within 30s; last seen: master pid 5 | workers none"
    );
}

#[test]
#[allow(clippy::disallowed_methods)] // plants the links compose_file must refuse
fn compose_files() {
    let dir = tempfile::tempdir().unwrap();
    let err = compose_file(dir.path(), None).unwrap_err();
    assert!(err.to_string().contains("no compose file in"), "{err}");
    std::fs::write(dir.path().join("docker-compose.yml"), "services: {}\n").unwrap();
    assert_eq!(compose_file(dir.path(), None), Ok("docker-compose.yml"));
    std::fs::write(dir.path().join("compose.yaml"), "services: {}\n").unwrap();
    assert_eq!(compose_file(dir.path(), None), Ok("compose.yaml"));
    assert_eq!(
        compose_file(dir.path(), Some("docker-compose.yml")),
        Ok("docker-compose.yml")
    );
    let err = compose_file(dir.path(), Some("deploy/prod.yml")).unwrap_err();
    assert!(
        err.to_string().contains("deploy/prod.yml does not exist"),
        "{err}"
    );
    // A link in the release is refused, whatever it points at.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.yml"), "ROOT_ONLY: x\n").unwrap();
    std::fs::remove_file(dir.path().join("compose.yaml")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.yml"),
        dir.path().join("compose.yaml"),
    )
    .unwrap();
    let err = compose_file(dir.path(), None).unwrap_err().to_string();
    assert!(
        err.contains("`compose.yaml` in the release is a symbolic link"),
        "{err}"
    );
    std::fs::create_dir(dir.path().join("deploy")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("deploy/conf")).unwrap();
    let err = compose_file(dir.path(), Some("deploy/conf/secret.yml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`deploy/conf` in the release is a symbolic link"),
        "{err}"
    );
    let absolute = outside.path().join("secret.yml");
    let absolute = absolute.to_str().unwrap();
    assert_eq!(
        compose_file(Path::new("/nonexistent"), Some(absolute)),
        Ok(absolute)
    );
}

fn runner(out: &UnboundedSender<(Stream, String)>, timeout: Duration) -> Runner<'_> {
    Runner {
        service: "test svc".into(),
        timeout,
        deadline: Instant::now() + timeout,
        out,
    }
}

#[tokio::test]
async fn runner_streams_reports_and_times_out() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let run = runner(&tx, Duration::from_secs(10));
    let err = run.tool(&["hoist-no-such-tool"]).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "test svc: hoist-no-such-tool is not installed on this host"
    );

    let out = run
        .action(&["sh", "-c", "echo one; echo two >&2"], None, None)
        .await
        .unwrap();
    assert!(out.success);
    let mut streamed = Vec::new();
    while let Ok(line) = rx.try_recv() {
        streamed.push(line);
    }
    streamed.sort_by_key(|(s, _)| *s == Stream::Stderr);
    assert_eq!(
        streamed,
        [
            (Stream::Stdout, "one".to_string()),
            (Stream::Stderr, "two".to_string())
        ]
    );

    let err = run
        .action(
            &["sh", "-c", "echo bad; exit 3"],
            None,
            Some(&["echo", "diag"]),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "test svc: `sh -c echo bad; exit 3` exited with status 3; last output: bad | diag"
    );

    let short = runner(&tx, Duration::from_millis(300));
    let started = std::time::Instant::now();
    let err = short
        .action(&["sh", "-c", "echo started; sleep 30 & wait"], None, None)
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        err.to_string(),
        "test svc: `sh -c echo started; sleep 30 & wait` did not finish within 300ms; \
             last output: started"
    );
}

#[tokio::test]
async fn a_tool_that_exits_is_not_held_by_a_background_child() {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let run = runner(&tx, Duration::from_secs(20));
    let started = std::time::Instant::now();
    // The background sleep keeps stdout open after sh exits.
    let out = run
        .tool(&["sh", "-c", "echo hi; sleep 30 &"])
        .await
        .unwrap();
    assert!(out.success);
    assert_eq!(out.text, "hi");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn poll_reports_failure_and_timeout() {
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let run = runner(&tx, Duration::from_millis(200));
    let mut looks = 0;
    let err = run
        .poll(|| {
            looks += 1;
            let state = format!("look {looks}");
            async move { Ok(Progress::<()>::Waiting(state)) }
        })
        .await
        .unwrap_err();
    assert!(looks >= 2, "{looks}");
    assert!(
        matches!(&err, RestartError::Timeout { state, .. } if *state == format!("look {looks}")),
        "{err}"
    );
    let err = run
        .poll(|| async { Ok(Progress::<()>::Failed("it broke".into(), "why".into())) })
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "test svc: it broke; last output: why");
}

#[test]
fn restart_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let service = Service::Signal {
        name: None,
        pidfile: "/nonexistent.pid".into(),
        signal: "SIGHUP".into(),
        timeout: Duration::from_secs(1),
    };
    assert_send(&restart(&service, Path::new("/"), &tx));
}

/// A test's child process, killed and reaped however the test ends.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn signal_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("d.pid");
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let service = |signal: &str| Service::Signal {
        name: Some("d".into()),
        pidfile: pidfile.clone(),
        signal: signal.into(),
        timeout: Duration::from_secs(10),
    };
    let err = restart(&service("SIGHUP"), dir.path(), &tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("d.pid does not exist"), "{err}");

    // A daemon without workers that ignores SIGHUP (the ignored disposition survives
    // the exec): nothing to observe, so alive after the settle is success.
    let ready = dir.path().join("ready");
    let script = format!("trap '' HUP; : > {}; exec sleep 1000", ready.display());
    let mut daemon = Reaped(
        std::process::Command::new("sh")
            .args(["-c", &script])
            .spawn()
            .unwrap(),
    );
    let pid = daemon.0.id();
    std::fs::write(&pidfile, pid.to_string()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !ready.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let started = std::time::Instant::now();
    let summary = restart(&service("SIGHUP"), dir.path(), &tx).await.unwrap();
    assert_eq!(
        summary,
        format!(
            "SIGHUP handled: pid {pid} still running 1s after the signal (nothing else to observe)"
        )
    );
    assert!(started.elapsed() >= SIGNAL_SETTLE);

    // SIGTERM kills it: the restart fails (it stays a zombie until reaped below).
    let err = restart(&service("SIGTERM"), dir.path(), &tx)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("signal d: pid {pid} exited after SIGTERM")
    );
    daemon.0.wait().unwrap();
    let err = restart(&service("SIGHUP"), dir.path(), &tx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is not running"), "{err}");
}

#[test]
#[allow(clippy::disallowed_methods)] // hands the pidfile to another user, as shared/ would
fn a_pidfile_another_user_writes_names_only_their_processes() {
    if !nix::unistd::Uid::effective().is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("app.pid");
    // Our own (root's) pid, in a file root wrote: fine.
    let me = std::process::id() as i32;
    std::fs::write(&pidfile, format!("{me}\n")).unwrap();
    assert_eq!(may_signal(&pidfile, me), Ok(()));
    // The same file handed to uid 4242 (the app's user could write it): refused.
    std::os::unix::fs::chown(&pidfile, Some(4242), Some(4242)).unwrap();
    let err = may_signal(&pidfile, me).unwrap_err();
    assert!(err.contains("belongs to uid 4242 but names pid"), "{err}");
    // A root-owned pidfile reached through a link another user planted: refused too.
    let real = dir.path().join("real.pid");
    std::fs::write(&real, format!("{me}\n")).unwrap();
    let link = dir.path().join("link.pid");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    std::os::unix::fs::lchown(&link, Some(4242), Some(4242)).unwrap();
    assert!(may_signal(&link, me).is_err());
}
