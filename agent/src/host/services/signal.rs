//! Signal-managed daemons through their pidfile: probed by pid, signalled, then watched
//! until the new master or workers are up.

use std::{
    collections::BTreeSet, os::unix::fs::MetadataExt as _, path::Path, str::FromStr as _,
    time::Duration,
};

use hoist_proto::v1::ServiceState;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::time::Instant;

use crate::host::process::Stream;

use super::*;

/// Whether root may send a signal to the `pid` that `pidfile` names. A pidfile (or a
/// link to it) owned by another user than root — e.g. under `shared/`, which the app's
/// user writes — may only name a process of that user: otherwise whoever writes the
/// file could make the agent signal any process on the host.
pub(super) fn may_signal(pidfile: &Path, pid: i32) -> Result<(), String> {
    let owners: BTreeSet<u32> = [
        std::fs::symlink_metadata(pidfile),
        std::fs::metadata(pidfile),
    ]
    .into_iter()
    .filter_map(|m| m.ok().map(|m| m.uid()))
    .filter(|uid| *uid != 0)
    .collect();
    if owners.is_empty() {
        return Ok(());
    }
    let process = std::fs::metadata(format!("/proc/{pid}"))
        .map(|m| m.uid())
        .map_err(|e| format!("cannot tell who owns pid {pid}: {e}"))?;
    match owners.iter().find(|owner| **owner != process) {
        None => Ok(()),
        Some(owner) => Err(format!(
            "{} belongs to uid {owner} but names pid {pid} of uid {process}; hoist (root) only signals a process of the user who can write its pidfile (make the pidfile root's, or fix `pidfile`)",
            pidfile.display()
        )),
    }
}

/// Reads the pid from `pidfile` and checks the process exists.
pub fn pidfile_state(pidfile: &Path) -> (ServiceState, String) {
    match read_pidfile(pidfile) {
        Err(state) => state,
        Ok(pid) if alive(pid) => (ServiceState::Running, format!("pid {pid}")),
        Ok(pid) => (
            ServiceState::Stopped,
            format!("pid {pid} from {} is not running", pidfile.display()),
        ),
    }
}

/// The pid in `pidfile`; otherwise the state to report and why.
pub(super) fn read_pidfile(pidfile: &Path) -> Result<i32, (ServiceState, String)> {
    let text = match std::fs::read_to_string(pidfile) {
        Ok(t) => t,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err((
                ServiceState::Stopped,
                format!("{} does not exist", pidfile.display()),
            ));
        }
        Err(err) => {
            return Err((
                ServiceState::Unknown,
                format!("cannot read {}: {err}", pidfile.display()),
            ));
        }
    };
    match text.trim().parse::<i32>() {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => Err((
            ServiceState::Unknown,
            format!(
                "{} does not hold a pid: {:?}",
                pidfile.display(),
                text.trim()
            ),
        )),
    }
}

/// Whether `pid` is a live process: it exists (possibly owned by another user) and is
/// not a zombie waiting to be reaped.
pub(super) fn alive(pid: i32) -> bool {
    let exists = matches!(
        kill(Pid::from_raw(pid), None),
        Ok(()) | Err(nix::errno::Errno::EPERM)
    );
    exists
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| parse_proc_stat(&stat))
            .is_none_or(|(state, _)| state != 'Z')
}

/// The state letter and parent pid from a `/proc/<pid>/stat` line. The command name in
/// parentheses may itself contain spaces and parentheses, so fields are counted from the
/// last `)`.
pub(super) fn parse_proc_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// The live (non-zombie) children of `parent`, found by scanning `/proc/*/stat`
/// (`/proc/<pid>/task/*/children` needs a kernel option that is not always set).
pub(super) fn children_of(parent: i32) -> BTreeSet<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parse_proc_stat(&stat))
                .is_some_and(|(state, ppid)| ppid == parent && state != 'Z')
        })
        .collect()
}

/// How long a signalled daemon must stay alive when the signal's effect cannot be
/// observed (see [`signal_progress`]).
pub(super) const SIGNAL_SETTLE: Duration = Duration::from_secs(1);

// --- signal ---

/// What a signalled daemon looked like before the signal.
pub(super) struct SignalBefore<'a> {
    pidfile: &'a Path,
    signal: &'a str,
    pid: i32,
    children: BTreeSet<i32>,
    stamp: Option<PidfileStamp>,
    /// When the signal's effect is not observable: succeed if still alive by then.
    settle_until: Option<Instant>,
}

/// Identifies one writing of a pidfile: a daemon that re-execs rewrites it.
pub(super) type PidfileStamp = (u64, i64, i64);

pub(super) fn pidfile_stamp(pidfile: &Path) -> Option<PidfileStamp> {
    let meta = std::fs::metadata(pidfile).ok()?;
    Some((meta.ino(), meta.mtime(), meta.mtime_nsec()))
}

pub(super) async fn restart_signal(
    run: &Runner<'_>,
    pidfile: &Path,
    signal_name: &str,
) -> Result<String, RestartError> {
    let signal = Signal::from_str(signal_name)
        .map_err(|_| run.failed(format!("unknown signal {signal_name}"), ""))?;
    let pid = read_pidfile(pidfile).map_err(|(_, why)| run.failed(why, ""))?;
    if !alive(pid) {
        let problem = format!("pid {pid} from {} is not running", pidfile.display());
        return Err(run.failed(problem, ""));
    }
    may_signal(pidfile, pid).map_err(|why| run.failed(why, ""))?;
    let before = SignalBefore {
        pidfile,
        signal: signal_name,
        pid,
        children: children_of(pid),
        stamp: pidfile_stamp(pidfile),
        // SIGUSR2 is the graceful re-exec signal (php-fpm, unicorn, nginx's binary
        // upgrade): its completion is observable, so it is waited for. Any other signal
        // (SIGHUP to reopen logs, SIGUSR1, ...) may change nothing visible; then the
        // process still being alive after a short settle is the only evidence there is.
        settle_until: (signal != Signal::SIGUSR2).then(|| Instant::now() + SIGNAL_SETTLE),
    };
    kill(Pid::from_raw(pid), signal)
        .map_err(|err| run.failed(format!("cannot send {signal_name} to pid {pid}: {err}"), ""))?;
    let _ = run
        .out
        .send((Stream::Stdout, format!("sent {signal_name} to pid {pid}")));
    let before = &before;
    let detail = run
        .poll(move || async move { Ok(signal_progress(before)) })
        .await?;
    Ok(format!("{signal_name} handled: {detail}"))
}

/// Whether the signalled daemon is back: a new live master in the pidfile; or, for a
/// master that keeps its pid (php-fpm re-execs itself), a new non-empty set of workers
/// none of which existed before; or, when it had no workers to replace, a live master
/// that rewrote its pidfile. A master that is gone (and not replaced) has failed.
pub(super) fn signal_progress(before: &SignalBefore<'_>) -> Progress<String> {
    let listed = read_pidfile(before.pidfile).ok().filter(|pid| alive(*pid));
    let master = match listed {
        Some(pid) => pid,
        None if alive(before.pid) => before.pid,
        None => {
            let problem = format!("pid {} exited after {}", before.pid, before.signal);
            return Progress::Failed(problem, String::new());
        }
    };
    if master != before.pid {
        return Progress::Ready(format!("master pid {}→{master}", before.pid));
    }
    let children = children_of(master);
    let workers_replaced = !before.children.is_empty()
        && !children.is_empty()
        && children.is_disjoint(&before.children);
    if workers_replaced {
        return Progress::Ready(format!(
            "master pid {master}, workers {}→{}",
            pid_list(&before.children),
            pid_list(&children)
        ));
    }
    if before.children.is_empty()
        && listed.is_some()
        && pidfile_stamp(before.pidfile) != before.stamp
    {
        return Progress::Ready(format!(
            "master pid {master} rewrote {}",
            before.pidfile.display()
        ));
    }
    if before.settle_until.is_some_and(|t| Instant::now() >= t) {
        return Progress::Ready(format!(
            "pid {master} still running {SIGNAL_SETTLE:?} after the signal (nothing else to observe)"
        ));
    }
    Progress::Waiting(format!(
        "master pid {master}, workers {} (before the signal: {})",
        pid_list(&children),
        pid_list(&before.children)
    ))
}

/// `[12, 13]` as `12,13`, or `none`.
pub(super) fn pid_list(pids: &BTreeSet<i32>) -> String {
    if pids.is_empty() {
        return "none".into();
    }
    pids.iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// SIGTERM to the pidfile's pid, then waits until that process is gone.
pub(super) async fn stop_signal(run: &Runner<'_>, pidfile: &Path) -> Result<String, RestartError> {
    let pid = match read_pidfile(pidfile) {
        Ok(pid) => pid,
        Err((ServiceState::Stopped, why)) => return Ok(format!("already stopped: {why}")),
        Err((_, why)) => return Err(run.failed(why, "")),
    };
    if !alive(pid) {
        return Ok(format!(
            "already stopped: pid {pid} from {} is not running",
            pidfile.display()
        ));
    }
    kill(Pid::from_raw(pid), Signal::SIGTERM)
        .map_err(|err| run.failed(format!("cannot send SIGTERM to pid {pid}: {err}"), ""))?;
    let _ = run
        .out
        .send((Stream::Stdout, format!("sent SIGTERM to pid {pid}")));
    run.poll(move || async move {
        Ok(if alive(pid) {
            Progress::Waiting(format!("pid {pid} still running after SIGTERM"))
        } else {
            Progress::Ready(())
        })
    })
    .await?;
    Ok(format!("stopped: pid {pid} exited after SIGTERM"))
}
