//! The app's services, probed and restarted for real: systemd through `systemctl`,
//! supervisor through `supervisorctl`, compose containers through `docker compose` and
//! the Docker engine, and signal-managed daemons through their pidfile.
//!
//! Probes ([`probe`]) are read-only and never fail. Restarts ([`restart`]) perform the
//! declared action and then wait, bounded by the service's `timeout`, until the service
//! is really back.

use std::{
    collections::{BTreeSet, VecDeque},
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::Stdio,
    str::FromStr as _,
    time::Duration,
};

use hoist_proto::v1::{ServiceState, ServiceStatus};
use nix::{
    sys::signal::{Signal, kill, killpg},
    unistd::Pid,
};
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt as _, BufReader},
    process::Command,
    sync::mpsc::UnboundedSender,
    time::Instant,
};

use crate::{
    config::{ComposeAction, Service, SystemdAction},
    process::{Stream, tail},
};

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
fn systemctl_field<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or("")
        .trim()
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

/// Every process state `supervisorctl status` prints.
const SUPERVISOR_STATES: [&str; 8] = [
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

/// `docker ps` rows as [`parse_docker_ps`] reads them: service, state, status.
const DOCKER_PS_FORMAT: &str = "{{.Label \"com.docker.compose.service\"}}\t{{.State}}\t{{.Status}}";

/// The `docker ps` filter selecting a compose project's containers.
fn compose_filter(project: &str) -> String {
    format!("label=com.docker.compose.project={project}")
}

/// The `docker ps` filter leaving out one-off containers (`compose run`, e.g. a
/// migration): they carry the service's label, but an exited one is not the service
/// being down.
const COMPOSE_NOT_ONEOFF: &str = "label=com.docker.compose.oneoff=False";

/// `docker ps` arguments listing a compose project's service containers (`filter` is
/// [`compose_filter`]'s).
fn docker_ps_args(filter: &str) -> [&str; 8] {
    [
        "ps",
        "--all",
        "--filter",
        filter,
        "--filter",
        COMPOSE_NOT_ONEOFF,
        "--format",
        DOCKER_PS_FORMAT,
    ]
}

async fn compose(project: &str, services: &[String]) -> (ServiceState, String) {
    let filter = compose_filter(project);
    match tool("docker", &docker_ps_args(&filter)).await {
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
fn read_pidfile(pidfile: &Path) -> Result<i32, (ServiceState, String)> {
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
fn alive(pid: i32) -> bool {
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
fn parse_proc_stat(stat: &str) -> Option<(char, i32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// The live (non-zombie) children of `parent`, found by scanning `/proc/*/stat`
/// (`/proc/<pid>/task/*/children` needs a kernel option that is not always set).
fn children_of(parent: i32) -> BTreeSet<i32> {
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

// === restarts ===

/// Poll interval after an action: starts short, backs off to [`POLL_MAX`].
const POLL_FIRST: Duration = Duration::from_millis(50);
const POLL_MAX: Duration = Duration::from_millis(500);
/// How long a tool that has exited may keep its output pipes open (through a
/// grandchild) before its output is taken as complete.
const PIPE_GRACE: Duration = Duration::from_secs(1);
/// Output lines kept per tool invocation (older lines are still streamed).
const KEPT_LINES: usize = 500;
/// Output lines and bytes quoted in a [`RestartError`].
const ERROR_LINES: usize = 3;
const ERROR_BYTES: usize = 400;
/// How long a signalled daemon must stay alive when the signal's effect cannot be
/// observed (see [`signal_progress`]).
const SIGNAL_SETTLE: Duration = Duration::from_secs(1);
/// Named in the error when neither flavour of compose is available.
const COMPOSE_TOOLS: &str = "docker compose (v2 plugin) or docker-compose";
/// Compose's own default file names, in its order of preference.
const COMPOSE_DEFAULT_FILES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// Why a restart or reload failed. Displayed as one line naming the service (e.g.
/// `supervisor worker:*`), what went wrong and the tool's last output.
#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    #[error("{service}: {tool} is not installed on this host")]
    NotInstalled { service: String, tool: String },
    #[error("{service}: cannot run {tool}: {reason}")]
    Spawn {
        service: String,
        tool: String,
        reason: String,
    },
    /// The action's tool failed or ran past the timeout.
    #[error("{service}: `{command}` {outcome}{}", last_output(.output))]
    Command {
        service: String,
        command: String,
        outcome: String,
        output: String,
    },
    /// The service went into a failed state, died, or cannot be acted on.
    #[error("{service}: {}{}", one_line(.problem), last_output(.output))]
    Failed {
        service: String,
        problem: String,
        output: String,
    },
    /// Still not back when the timeout passed.
    #[error("{service}: not back within {timeout:?}; last seen: {}", one_line(.state))]
    Timeout {
        service: String,
        timeout: Duration,
        state: String,
    },
}

/// Performs `service`'s action (restart, reload, recreate or signal) and waits until the
/// service is really back, all bounded by the service's `timeout`. The tools' output
/// lines go to `out` as they come. Returns a one-line summary, e.g.
/// `worker:* restarted: worker:worker_00 pid 123→456, worker:worker_01 pid 124→457`.
///
/// `release_dir` is where compose runs and where a relative `compose_file` is found.
pub async fn restart(
    service: &Service,
    release_dir: &Path,
    out: &UnboundedSender<(Stream, String)>,
) -> Result<String, RestartError> {
    let run = Runner {
        service: format!("{} {}", service.kind(), service.display_name()),
        timeout: service.timeout(),
        deadline: Instant::now() + service.timeout(),
        out,
    };
    match service {
        Service::Systemd { name, action, .. } => restart_systemd(&run, name, *action).await,
        Service::Supervisor {
            name, serverurl, ..
        } => restart_supervisor(&run, name, serverurl.as_deref()).await,
        Service::Compose {
            compose_file,
            project,
            services,
            action,
            ..
        } => {
            let target = ComposeTarget {
                release_dir,
                compose_file: compose_file.as_deref(),
                project,
                services,
            };
            restart_compose(&run, &target, *action).await
        }
        Service::Signal {
            pidfile, signal, ..
        } => restart_signal(&run, pidfile, signal).await,
    }
}

/// What one look at a service after its action found.
enum Progress<T> {
    Ready(T),
    /// Failed for good: the problem and the tool output showing it.
    Failed(String, String),
    /// Not yet: the state seen, reported if the timeout passes.
    Waiting(String),
}

/// What a tool printed (both streams, interleaved, the last [`KEPT_LINES`] lines) and
/// whether it succeeded.
#[derive(Debug)]
struct ToolOutput {
    success: bool,
    /// "exited with status 1", "was killed by signal 9".
    status: String,
    text: String,
}

/// Runs one service's tools against one deadline.
struct Runner<'a> {
    /// `kind name`, e.g. `supervisor worker:*`: how errors name the service.
    service: String,
    timeout: Duration,
    deadline: Instant,
    out: &'a UnboundedSender<(Stream, String)>,
}

impl Runner<'_> {
    fn failed(&self, problem: impl Into<String>, output: impl Into<String>) -> RestartError {
        RestartError::Failed {
            service: self.service.clone(),
            problem: problem.into(),
            output: output.into(),
        }
    }

    /// Runs a read-only tool (status, show, ps) quietly. Errors only when it cannot run
    /// or outlives the deadline; a non-zero exit is in the output.
    async fn tool(&self, argv: &[&str]) -> Result<ToolOutput, RestartError> {
        self.run(argv, None, false).await
    }

    /// Runs the action, streaming its output. A failure is an error carrying the
    /// output, followed by `diagnose`'s output when given (e.g. `systemctl status`).
    async fn action(
        &self,
        argv: &[&str],
        cwd: Option<&Path>,
        diagnose: Option<&[&str]>,
    ) -> Result<ToolOutput, RestartError> {
        let output = self.run(argv, cwd, true).await?;
        if output.success {
            return Ok(output);
        }
        let mut text = output.text;
        if let Some(diagnose) = diagnose
            && let Ok(more) = self.tool(diagnose).await
        {
            text = format!("{text}\n{}", more.text);
        }
        Err(RestartError::Command {
            service: self.service.clone(),
            command: argv.join(" "),
            outcome: output.status,
            output: text,
        })
    }

    /// Spawns `argv` (no shell) in its own process group, bounded by the deadline; on
    /// timeout the whole group is killed.
    async fn run(
        &self,
        argv: &[&str],
        cwd: Option<&Path>,
        stream: bool,
    ) -> Result<ToolOutput, RestartError> {
        let (program, args) = argv.split_first().unwrap_or((&"", &[]));
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        if let Some(dir) = cwd {
            if !dir.is_dir() {
                return Err(self.failed(format!("{} is not a directory", dir.display()), ""));
            }
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => RestartError::NotInstalled {
                service: self.service.clone(),
                tool: program.to_string(),
            },
            _ => RestartError::Spawn {
                service: self.service.clone(),
                tool: program.to_string(),
                reason: err.to_string(),
            },
        })?;
        let pgid = child.id().and_then(|id| i32::try_from(id).ok());
        let mut lines = VecDeque::new();
        let sink = |s: Stream, line: String| {
            if stream {
                let _ = self.out.send((s, line.clone()));
            }
            if lines.len() == KEPT_LINES {
                lines.pop_front();
            }
            lines.push_back(line);
        };
        let finished = tokio::time::timeout_at(self.deadline, collect(&mut child, sink)).await;
        // Whatever the tool left behind in its group (or all of it, on timeout) goes.
        if let Some(pgid) = pgid {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
        let text = Vec::from(lines).join("\n");
        match finished {
            Ok(Ok(status)) => Ok(ToolOutput {
                success: status.success(),
                status: describe_exit(status),
                text,
            }),
            Ok(Err(err)) => Err(RestartError::Spawn {
                service: self.service.clone(),
                tool: program.to_string(),
                reason: err.to_string(),
            }),
            Err(_) => Err(RestartError::Command {
                service: self.service.clone(),
                command: argv.join(" "),
                outcome: format!("did not finish within {:?}", self.timeout),
                output: text,
            }),
        }
    }

    /// Calls `look` until it reports the service ready or failed, backing off between
    /// looks; past the deadline the last state seen is the error.
    async fn poll<T, F, Fut>(&self, mut look: F) -> Result<T, RestartError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Progress<T>, RestartError>>,
    {
        let mut delay = POLL_FIRST;
        loop {
            let state = match look().await? {
                Progress::Ready(value) => return Ok(value),
                Progress::Failed(problem, output) => return Err(self.failed(problem, output)),
                Progress::Waiting(state) => state,
            };
            let now = Instant::now();
            if now >= self.deadline {
                return Err(RestartError::Timeout {
                    service: self.service.clone(),
                    timeout: self.timeout,
                    state,
                });
            }
            tokio::time::sleep(delay.min(self.deadline - now)).await;
            delay = (delay * 3 / 2).min(POLL_MAX);
        }
    }
}

/// Feeds `child`'s stdout and stderr lines to `sink` as they come and waits for it to
/// exit; output still open [`PIPE_GRACE`] after the exit is abandoned.
async fn collect(
    child: &mut tokio::process::Child,
    mut sink: impl FnMut(Stream, String),
) -> std::io::Result<std::process::ExitStatus> {
    let mut stdout = child.stdout.take().map(BufReader::new);
    let mut stderr = child.stderr.take().map(BufReader::new);
    let (mut out_buf, mut err_buf) = (Vec::new(), Vec::new());
    let mut status = None;
    let mut grace = Instant::now();
    loop {
        tokio::select! {
            line = next_line(stdout.as_mut(), &mut out_buf), if stdout.is_some() => match line {
                Some(line) => sink(Stream::Stdout, line),
                None => stdout = None,
            },
            line = next_line(stderr.as_mut(), &mut err_buf), if stderr.is_some() => match line {
                Some(line) => sink(Stream::Stderr, line),
                None => stderr = None,
            },
            exit = child.wait(), if status.is_none() => {
                status = Some(exit?);
                grace = Instant::now() + PIPE_GRACE;
            },
            () = tokio::time::sleep_until(grace), if status.is_some() => break,
        }
        if stdout.is_none() && stderr.is_none() && status.is_some() {
            break;
        }
    }
    status.ok_or_else(|| std::io::Error::other("no exit status"))
}

/// The next line from `reader` (lossy UTF-8, without its line ending), or `None` at the
/// end. Partial lines survive cancellation in `buf`, so this may be used in `select!`.
async fn next_line<R: AsyncBufRead + Unpin>(
    reader: Option<&mut R>,
    buf: &mut Vec<u8>,
) -> Option<String> {
    // A read error ends the stream like the end of file does.
    let _ = reader?.read_until(b'\n', buf).await;
    if buf.is_empty() {
        return None;
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    let line = String::from_utf8_lossy(buf).into_owned();
    buf.clear();
    Some(line)
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => "ended abnormally".into(),
    }
}

/// `text` squeezed onto one line: its last few non-blank lines joined by ` | `, cut to
/// a few hundred bytes.
fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let joined = lines[lines.len().saturating_sub(ERROR_LINES)..].join(" | ");
    if joined.len() > ERROR_BYTES {
        format!("…{}", tail(&joined, ERROR_BYTES))
    } else {
        joined
    }
}

/// `; last output: ...` when there is any output.
fn last_output(output: &str) -> String {
    match one_line(output) {
        line if line.is_empty() => String::new(),
        line => format!("; last output: {line}"),
    }
}

// --- systemd ---

async fn restart_systemd(
    run: &Runner<'_>,
    unit: &str,
    action: SystemdAction,
) -> Result<String, RestartError> {
    let show = [
        "systemctl",
        "show",
        "--property=ActiveState,SubState,MainPID",
        "--",
        unit,
    ];
    let status = [
        "systemctl",
        "status",
        "--no-pager",
        "--lines=10",
        "--",
        unit,
    ];
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
fn systemd_summary(show: &str, old_pid: &str) -> String {
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

async fn restart_supervisor(
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
fn supervisor_progress(status: &str) -> Progress<Vec<SupervisorProcess>> {
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
fn supervisor_summary(before: &[SupervisorProcess], after: &[SupervisorProcess]) -> String {
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

// --- compose ---

/// Where and what compose acts on.
struct ComposeTarget<'a> {
    release_dir: &'a Path,
    compose_file: Option<&'a str>,
    project: &'a str,
    services: &'a [String],
}

async fn restart_compose(
    run: &Runner<'_>,
    target: &ComposeTarget<'_>,
    action: ComposeAction,
) -> Result<String, RestartError> {
    let file = compose_file(target.release_dir, target.compose_file)
        .map_err(|problem| run.failed(problem, ""))?;
    let mut argv: Vec<&str> = compose_command(run).await?;
    argv.extend(["-p", target.project, "-f", file]);
    argv.extend(match action {
        ComposeAction::Recreate => &["up", "-d", "--force-recreate", "--no-deps"][..],
        ComposeAction::Restart => &["restart"][..],
    });
    argv.extend(target.services.iter().map(String::as_str));
    run.action(&argv, Some(target.release_dir), None)
        .await
        .map_err(|err| match err {
            RestartError::NotInstalled { service, .. } => RestartError::NotInstalled {
                service,
                tool: COMPOSE_TOOLS.into(),
            },
            err => err,
        })?;
    let filter = compose_filter(target.project);
    let mut ps = vec!["docker"];
    ps.extend(docker_ps_args(&filter));
    let ps = &ps;
    let detail = run
        .poll(move || async move {
            let listed = run.tool(ps).await?;
            if !listed.success {
                return Ok(Progress::Waiting(listed.text));
            }
            Ok(match parse_docker_ps(&listed.text, target.services) {
                (ServiceState::Running, detail) => Progress::Ready(detail),
                (ServiceState::Failed, detail) => Progress::Failed(detail, String::new()),
                (_, detail) => Progress::Waiting(detail),
            })
        })
        .await?;
    let done = match action {
        ComposeAction::Recreate => "recreated",
        ComposeAction::Restart => "restarted",
    };
    Ok(format!("{} {done}: {detail}", target.project))
}

/// The compose file argument (relative to the release dir, or absolute): the configured
/// one, or compose's default names, whichever exists first.
fn compose_file<'a>(release_dir: &Path, configured: Option<&'a str>) -> Result<&'a str, String> {
    let candidates: Vec<&str> = match configured {
        Some(file) => vec![file],
        None => COMPOSE_DEFAULT_FILES.to_vec(),
    };
    candidates
        .iter()
        .find(|name| release_dir.join(name).is_file())
        .copied()
        .ok_or_else(|| match configured {
            Some(file) => format!(
                "compose file {} does not exist",
                release_dir.join(file).display()
            ),
            None => format!(
                "no compose file in {}: expected one of {}",
                release_dir.display(),
                COMPOSE_DEFAULT_FILES.join(", ")
            ),
        })
}

/// `docker compose` when the v2 plugin answers `docker compose version`, else
/// `docker-compose` (whose absence [`restart_compose`] reports).
async fn compose_command(run: &Runner<'_>) -> Result<Vec<&'static str>, RestartError> {
    match run.tool(&["docker", "compose", "version"]).await {
        Ok(out) if out.success => Ok(vec!["docker", "compose"]),
        Ok(_) | Err(RestartError::NotInstalled { .. }) => Ok(vec!["docker-compose"]),
        Err(err) => Err(err),
    }
}

// --- signal ---

/// What a signalled daemon looked like before the signal.
struct SignalBefore<'a> {
    pidfile: &'a Path,
    signal: &'a str,
    pid: i32,
    children: BTreeSet<i32>,
    stamp: Option<PidfileStamp>,
    /// When the signal's effect is not observable: succeed if still alive by then.
    settle_until: Option<Instant>,
}

/// Identifies one writing of a pidfile: a daemon that re-execs rewrites it.
type PidfileStamp = (u64, i64, i64);

fn pidfile_stamp(pidfile: &Path) -> Option<PidfileStamp> {
    let meta = std::fs::metadata(pidfile).ok()?;
    Some((meta.ino(), meta.mtime(), meta.mtime_nsec()))
}

async fn restart_signal(
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
fn signal_progress(before: &SignalBefore<'_>) -> Progress<String> {
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
fn pid_list(pids: &BTreeSet<i32>) -> String {
    if pids.is_empty() {
        return "none".into();
    }
    pids.iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",")
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
        let running =
            "a   RUNNING   pid 20, uptime 0:00:01\nb   RUNNING   pid 21, uptime 0:00:01\n";
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
            output:
                "worker:worker_00: ERROR (spawn error)\nworker:worker_01: ERROR (spawn error)\n"
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
    fn compose_files() {
        let dir = tempfile::tempdir().unwrap();
        let err = compose_file(dir.path(), None).unwrap_err();
        assert!(err.contains("no compose file in"), "{err}");
        std::fs::write(dir.path().join("docker-compose.yml"), "services: {}\n").unwrap();
        assert_eq!(compose_file(dir.path(), None), Ok("docker-compose.yml"));
        std::fs::write(dir.path().join("compose.yaml"), "services: {}\n").unwrap();
        assert_eq!(compose_file(dir.path(), None), Ok("compose.yaml"));
        assert_eq!(
            compose_file(dir.path(), Some("docker-compose.yml")),
            Ok("docker-compose.yml")
        );
        let err = compose_file(dir.path(), Some("deploy/prod.yml")).unwrap_err();
        assert!(err.contains("deploy/prod.yml does not exist"), "{err}");
        let absolute = dir.path().join("compose.yaml");
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
}
