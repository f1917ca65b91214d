//! The app's services, probed for real: systemd through `systemctl show`, supervisor
//! through `supervisorctl status`, compose containers through the Docker engine, and
//! signal-managed daemons through their pidfile.

use std::{path::Path, process::Stdio, time::Duration};

use hoist_proto::v1::{ServiceState, ServiceStatus};
use nix::{sys::signal::kill, unistd::Pid};
use tokio::process::Command;

use crate::config::Service;

/// How long one probe may take before the service is reported `unknown`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Probes one service. Never fails: a probe that cannot run reports `Unknown` with why.
pub async fn probe(service: &Service) -> ServiceStatus {
    let (state, detail) = match service {
        Service::Systemd { name, .. } => systemd(name).await,
        Service::Supervisor {
            name, serverurl, ..
        } => supervisor(name, serverurl.as_deref()).await,
        Service::Compose {
            project, services, ..
        } => compose(project, services).await,
        Service::Signal { pidfile, .. } => pidfile_state(pidfile),
    };
    ServiceStatus {
        kind: service.kind().into(),
        name: service.display_name(),
        state: state.into(),
        detail,
    }
}

/// Runs a probe tool; returns its stdout (and stderr) whatever its exit code, since
/// status tools exit non-zero for stopped services.
async fn tool(program: &str, args: &[&str]) -> Result<(bool, String), String> {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(PROBE_TIMEOUT, child).await {
        Err(_) => Err(format!("{program} did not answer within {PROBE_TIMEOUT:?}")),
        Ok(Err(err)) if err.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("{program} is not installed on this host"))
        }
        Ok(Err(err)) => Err(format!("cannot run {program}: {err}")),
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            Ok((out.status.success(), text))
        }
    }
}

async fn systemd(unit: &str) -> (ServiceState, String) {
    let args = [
        "show",
        "--property=ActiveState,SubState,MainPID",
        "--",
        unit,
    ];
    match tool("systemctl", &args).await {
        Err(err) => (ServiceState::Unknown, err),
        Ok((false, out)) => (ServiceState::Unknown, out.trim().to_string()),
        Ok((true, out)) => parse_systemctl_show(&out),
    }
}

pub fn parse_systemctl_show(out: &str) -> (ServiceState, String) {
    let field = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .unwrap_or("")
            .trim()
    };
    let (active, sub, pid) = (field("ActiveState"), field("SubState"), field("MainPID"));
    let state = match active {
        "active" | "reloading" => ServiceState::Running,
        "activating" => ServiceState::Starting,
        "failed" => ServiceState::Failed,
        "inactive" | "deactivating" => ServiceState::Stopped,
        _ => ServiceState::Unknown,
    };
    let detail = if pid.is_empty() || pid == "0" {
        format!("{active} ({sub})")
    } else {
        format!("{active} ({sub}), pid {pid}")
    };
    (state, detail)
}

async fn supervisor(name: &str, serverurl: Option<&str>) -> (ServiceState, String) {
    let mut args = Vec::new();
    if let Some(url) = serverurl {
        args.extend(["-s", url]);
    }
    args.extend(["status", name]);
    match tool("supervisorctl", &args).await {
        Err(err) => (ServiceState::Unknown, err),
        Ok((_, out)) => parse_supervisor_status(&out),
    }
}

/// Aggregates `supervisorctl status` lines (one per process of a program or group).
pub fn parse_supervisor_status(out: &str) -> (ServiceState, String) {
    let mut states = Vec::new();
    let mut details = Vec::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.split_whitespace();
        let (Some(proc_name), Some(state)) = (parts.next(), parts.next()) else {
            continue;
        };
        let known = [
            "RUNNING", "STOPPED", "STARTING", "BACKOFF", "STOPPING", "EXITED", "FATAL", "UNKNOWN",
        ];
        if !known.contains(&state) {
            // An error line such as "no such process" or a refused socket.
            return (ServiceState::Unknown, line.trim().to_string());
        }
        states.push(state.to_string());
        let rest: Vec<&str> = parts.collect();
        details.push(
            format!("{proc_name} {state} {}", rest.join(" "))
                .trim()
                .to_string(),
        );
    }
    if states.is_empty() {
        return (ServiceState::Unknown, out.trim().to_string());
    }
    let any = |s: &[&str]| states.iter().any(|st| s.contains(&st.as_str()));
    let state = if any(&["FATAL", "BACKOFF", "UNKNOWN"]) {
        ServiceState::Failed
    } else if any(&["STOPPED", "EXITED", "STOPPING"]) {
        ServiceState::Stopped
    } else if any(&["STARTING"]) {
        ServiceState::Starting
    } else {
        ServiceState::Running
    };
    (state, details.join("; "))
}

async fn compose(project: &str, services: &[String]) -> (ServiceState, String) {
    let filter = format!("label=com.docker.compose.project={project}");
    let format = "{{.Label \"com.docker.compose.service\"}}\t{{.State}}\t{{.Status}}";
    let args = ["ps", "--all", "--filter", &filter, "--format", format];
    match tool("docker", &args).await {
        Err(err) => (ServiceState::Unknown, err),
        Ok((false, out)) => (ServiceState::Unknown, out.trim().to_string()),
        Ok((true, out)) => parse_docker_ps(&out, services),
    }
}

/// Aggregates `docker ps` rows of a compose project (only the declared services, when
/// any are declared).
pub fn parse_docker_ps(out: &str, services: &[String]) -> (ServiceState, String) {
    let mut rows: Vec<(&str, &str, &str)> = out
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, '\t');
            Some((f.next()?, f.next()?, f.next().unwrap_or("")))
        })
        .filter(|(svc, _, _)| services.is_empty() || services.iter().any(|s| s == svc))
        .collect();
    rows.sort();
    let missing: Vec<&String> = services
        .iter()
        .filter(|s| !rows.iter().any(|(svc, _, _)| svc == s))
        .collect();
    if rows.is_empty() {
        return (ServiceState::Stopped, "no containers".into());
    }
    let mut detail: Vec<String> = rows
        .iter()
        .map(|(svc, _, status)| format!("{svc}: {status}"))
        .collect();
    detail.extend(missing.iter().map(|s| format!("{s}: no container")));
    let state = if rows
        .iter()
        .any(|(_, st, status)| *st == "dead" || status.contains("unhealthy"))
    {
        ServiceState::Failed
    } else if !missing.is_empty() || rows.iter().any(|(_, st, _)| *st != "running") {
        if rows
            .iter()
            .any(|(_, st, _)| *st == "restarting" || *st == "created")
        {
            ServiceState::Starting
        } else {
            ServiceState::Stopped
        }
    } else if rows
        .iter()
        .any(|(_, _, status)| status.contains("health: starting"))
    {
        ServiceState::Starting
    } else {
        ServiceState::Running
    };
    (state, detail.join("; "))
}

/// Reads the pid from `pidfile` and checks the process exists.
pub fn pidfile_state(pidfile: &Path) -> (ServiceState, String) {
    let text = match std::fs::read_to_string(pidfile) {
        Ok(t) => t,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return (
                ServiceState::Stopped,
                format!("{} does not exist", pidfile.display()),
            );
        }
        Err(err) => {
            return (
                ServiceState::Unknown,
                format!("cannot read {}: {err}", pidfile.display()),
            );
        }
    };
    match text.trim().parse::<i32>() {
        Ok(pid) if pid > 0 => match kill(Pid::from_raw(pid), None) {
            Ok(()) | Err(nix::errno::Errno::EPERM) => (ServiceState::Running, format!("pid {pid}")),
            Err(_) => (
                ServiceState::Stopped,
                format!("pid {pid} from {} is not running", pidfile.display()),
            ),
        },
        _ => (
            ServiceState::Unknown,
            format!(
                "{} does not hold a pid: {:?}",
                pidfile.display(),
                text.trim()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supervisor_lines() {
        let out = "web:web_00   RUNNING   pid 12, uptime 0:01:02\nweb:web_01   RUNNING   pid 13, uptime 0:01:02\n";
        assert_eq!(parse_supervisor_status(out).0, ServiceState::Running);
        let out =
            "web:web_00   RUNNING   pid 12, uptime 0:01:02\nweb:web_01   STOPPED   Not started\n";
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
        let rows =
            "web\trunning\tUp 3 minutes (healthy)\nworker\texited\tExited (1) 2 seconds ago\n";
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
}
