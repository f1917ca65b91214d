//! systemd units through `systemctl`: probed with `show`, restarted or reloaded, then
//! watched until `active`.

use hoist_proto::v1::ServiceState;

use crate::config::SystemdAction;

use super::*;

pub(super) async fn systemd(unit: &str) -> (ServiceState, String) {
    let args = [
        "show",
        "--property=ActiveState,SubState,MainPID",
        "--",
        unit,
    ];
    match tool("systemctl", &args).await {
        Err(err) => (ServiceState::Unknown, err.to_string()),
        Ok((false, out)) => (ServiceState::Unknown, out.trim().to_string()),
        Ok((true, out)) => parse_systemctl_show(&out),
    }
}

pub fn parse_systemctl_show(out: &str) -> (ServiceState, String) {
    let field = |key| systemctl_field(out, key);
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

/// One `KEY=value` property of `systemctl show` output; empty when absent.
pub(super) fn systemctl_field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or("")
        .trim()
}

// --- systemd ---

/// `systemctl show` of what a restart, stop or start waits on.
fn show_argv(unit: &str) -> [&str; 5] {
    [
        "systemctl",
        "show",
        "--property=ActiveState,SubState,MainPID",
        "--",
        unit,
    ]
}

/// `systemctl status`, quoted when the unit does not come back.
fn status_argv(unit: &str) -> [&str; 6] {
    [
        "systemctl",
        "status",
        "--no-pager",
        "--lines=10",
        "--",
        unit,
    ]
}

pub(super) async fn restart_systemd(
    run: &Runner<'_>,
    unit: &str,
    action: SystemdAction,
) -> Result<String, RestartError> {
    let (show, status) = (show_argv(unit), status_argv(unit));
    let (verb, done) = match action {
        SystemdAction::Reload => ("reload-or-restart", "reloaded"),
        SystemdAction::Restart => ("restart", "restarted"),
    };
    let before = run.tool(&show).await?;
    let old_pid = systemctl_field(&before.text, "MainPID").to_string();
    let argv = ["systemctl", "--no-ask-password", verb, "--", unit];
    run.action(&argv, None, Some(&status)).await?;
    let (show, status) = (&show, &status);
    let after = run
        .poll(move || async move {
            let shown = run.tool(show).await?;
            Ok(match systemctl_field(&shown.text, "ActiveState") {
                "active" => Progress::Ready(shown.text),
                "failed" => {
                    let detail = run.tool(status).await.map(|s| s.text);
                    Progress::Failed(format!("{unit} failed"), detail.unwrap_or_default())
                }
                _ => Progress::Waiting(parse_systemctl_show(&shown.text).1),
            })
        })
        .await?;
    Ok(format!(
        "{unit} {done}: {}",
        systemd_summary(&after, &old_pid)
    ))
}

/// `active (running), pid 41→42` when the main pid changed, else the plain state.
pub(super) fn systemd_summary(show: &str, old_pid: &str) -> String {
    let (_, detail) = parse_systemctl_show(show);
    let new_pid = systemctl_field(show, "MainPID");
    if ["", "0", new_pid].contains(&old_pid) || ["", "0"].contains(&new_pid) {
        detail
    } else {
        detail.replace(
            &format!("pid {new_pid}"),
            &format!("pid {old_pid}→{new_pid}"),
        )
    }
}

/// `systemctl stop|start`, then waits for `inactive` (stop) or `active` (start).
pub(super) async fn start_stop_systemd(
    run: &Runner<'_>,
    unit: &str,
    toggle: Toggle,
) -> Result<String, RestartError> {
    let (show, status) = (show_argv(unit), status_argv(unit));
    let argv = [
        "systemctl",
        "--no-ask-password",
        toggle.as_str(),
        "--",
        unit,
    ];
    run.action(&argv, None, Some(&status)).await?;
    let (show, status) = (&show, &status);
    let after = run
        .poll(move || async move {
            let shown = run.tool(show).await?;
            let state = systemctl_field(&shown.text, "ActiveState");
            Ok(match (toggle, state) {
                (Toggle::Stop, "inactive" | "failed") | (Toggle::Start, "active") => {
                    Progress::Ready(shown.text)
                }
                (Toggle::Start, "failed") => {
                    let detail = run.tool(status).await.map(|s| s.text);
                    Progress::Failed(format!("{unit} failed"), detail.unwrap_or_default())
                }
                _ => Progress::Waiting(parse_systemctl_show(&shown.text).1),
            })
        })
        .await?;
    Ok(format!(
        "{unit} {}: {}",
        toggle.done(),
        parse_systemctl_show(&after).1
    ))
}
