//! supervisor programs and groups through `supervisorctl`: probed with `status`,
//! restarted, then watched until every process is RUNNING.

use hoist_proto::v1::ServiceState;

use super::*;

pub(super) async fn supervisor(name: &str, serverurl: Option<&str>) -> (ServiceState, String) {
    let mut args = Vec::new();
    if let Some(url) = serverurl {
        args.extend(["-s", url]);
    }
    args.extend(["status", name]);
    match tool("supervisorctl", &args).await {
        Err(err) => (ServiceState::Unknown, err.to_string()),
        Ok((_, out)) => parse_supervisor_status(&out),
    }
}

/// Every process state `supervisorctl status` prints.
pub(super) const SUPERVISOR_STATES: [&str; 8] = [
    "RUNNING", "STOPPED", "STARTING", "BACKOFF", "STOPPING", "EXITED", "FATAL", "UNKNOWN",
];

/// Aggregates `supervisorctl status` lines (one per process of a program or group).
pub fn parse_supervisor_status(out: &str) -> (ServiceState, String) {
    let mut states = Vec::new();
    let mut details = Vec::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.split_whitespace();
        let (Some(proc_name), Some(state)) = (parts.next(), parts.next()) else {
            continue;
        };
        if !SUPERVISOR_STATES.contains(&state) {
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

// --- supervisor ---

/// One process line of `supervisorctl status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SupervisorProcess {
    /// `worker:worker_00`, or a program's own name outside a group.
    pub name: String,
    /// `RUNNING`, `FATAL`, ...
    pub state: String,
    pub pid: Option<u32>,
    /// The rest of the line: `pid 12, uptime 0:01:02`, `Exited too quickly ...`.
    pub description: String,
}

/// The process lines of `supervisorctl status` output; error lines (`no such process`,
/// a refused socket) are left out.
pub fn parse_supervisor_processes(out: &str) -> Vec<SupervisorProcess> {
    out.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (name, state) = (words.next()?, words.next()?);
            if !SUPERVISOR_STATES.contains(&state) {
                return None;
            }
            let description = words.collect::<Vec<_>>().join(" ");
            let pid = description
                .strip_prefix("pid ")
                .and_then(|rest| rest.split(',').next()?.trim().parse().ok());
            Some(SupervisorProcess {
                name: name.into(),
                state: state.into(),
                pid,
                description,
            })
        })
        .collect()
}

pub(super) async fn restart_supervisor(
    run: &Runner<'_>,
    name: &str,
    serverurl: Option<&str>,
) -> Result<String, RestartError> {
    let ctl = |verb: &'static str| {
        let mut argv = vec!["supervisorctl"];
        if let Some(url) = serverurl {
            argv.extend(["-s", url]);
        }
        argv.extend([verb, name]);
        argv
    };
    let status = ctl("status");
    let before = parse_supervisor_processes(&run.tool(&status).await?.text);
    run.action(&ctl("restart"), None, Some(&status)).await?;
    let status = &status;
    let after = run
        .poll(move || async move { Ok(supervisor_progress(&run.tool(status).await?.text)) })
        .await?;
    Ok(format!(
        "{name} restarted: {}",
        supervisor_summary(&before, &after)
    ))
}

/// Ready once every process of the program or group is RUNNING; failed as soon as one
/// is FATAL or BACKOFF (crashing on start), or when supervisorctl lists none.
pub(super) fn supervisor_progress(status: &str) -> Progress<Vec<SupervisorProcess>> {
    let procs = parse_supervisor_processes(status);
    if procs.is_empty() {
        return Progress::Failed("supervisorctl lists no such process".into(), status.into());
    }
    if let Some(bad) = procs
        .iter()
        .find(|p| p.state == "FATAL" || p.state == "BACKOFF")
    {
        let problem = format!("{} is {} ({})", bad.name, bad.state, bad.description);
        return Progress::Failed(problem, String::new());
    }
    if procs.iter().all(|p| p.state == "RUNNING") {
        return Progress::Ready(procs);
    }
    let states: Vec<String> = procs
        .iter()
        .map(|p| format!("{} {}", p.name, p.state))
        .collect();
    Progress::Waiting(states.join(", "))
}

/// `worker:worker_00 pid 123→456, mailer pid 789 (was not running)`.
pub(super) fn supervisor_summary(
    before: &[SupervisorProcess],
    after: &[SupervisorProcess],
) -> String {
    after
        .iter()
        .map(|p| {
            let new = p.pid.map_or_else(|| "?".into(), |pid| pid.to_string());
            match before.iter().find(|b| b.name == p.name).and_then(|b| b.pid) {
                Some(old) => format!("{} pid {old}→{new}", p.name),
                None => format!("{} pid {new} (was not running)", p.name),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `supervisorctl stop|start`, then waits until no process is left running (stop) or
/// every one is RUNNING (start).
pub(super) async fn start_stop_supervisor(
    run: &Runner<'_>,
    name: &str,
    serverurl: Option<&str>,
    toggle: Toggle,
) -> Result<String, RestartError> {
    let ctl = |verb: &'static str| {
        let mut argv = vec!["supervisorctl"];
        if let Some(url) = serverurl {
            argv.extend(["-s", url]);
        }
        argv.extend([verb, name]);
        argv
    };
    let status = ctl("status");
    run.action(&ctl(toggle.as_str()), None, Some(&status))
        .await?;
    let status = &status;
    let after = run
        .poll(move || async move {
            let text = run.tool(status).await?.text;
            Ok(match toggle {
                Toggle::Start => supervisor_progress(&text),
                Toggle::Stop => supervisor_stopped(&text),
            })
        })
        .await?;
    let states: Vec<String> = after
        .iter()
        .map(|p| format!("{} {}", p.name, p.state))
        .collect();
    Ok(format!("{name} {}: {}", toggle.done(), states.join(", ")))
}

/// Ready once no process of the program or group is running or stopping.
pub(super) fn supervisor_stopped(status: &str) -> Progress<Vec<SupervisorProcess>> {
    let procs = parse_supervisor_processes(status);
    if procs.is_empty() {
        return Progress::Failed("supervisorctl lists no such process".into(), status.into());
    }
    if procs
        .iter()
        .all(|p| ["STOPPED", "EXITED", "FATAL"].contains(&p.state.as_str()))
    {
        return Progress::Ready(procs);
    }
    let states: Vec<String> = procs
        .iter()
        .map(|p| format!("{} {}", p.name, p.state))
        .collect();
    Progress::Waiting(states.join(", "))
}
