//! The app's services, probed and restarted for real: systemd through `systemctl`,
//! supervisor through `supervisorctl`, compose containers through `docker compose` and
//! the Docker engine, and signal-managed daemons through their pidfile.
//!
//! Probes ([`probe`]) are read-only and never fail. Restarts ([`restart`]) perform the
//! declared action and then wait, bounded by the service's `timeout`, until the service
//! is really back.

mod compose;
pub(crate) use compose::{COMPOSE_NOT_ONEOFF, compose_filter};
mod signal;
mod supervisor;
mod systemd;
#[cfg(test)]
mod tests;

use std::{collections::VecDeque, path::Path, time::Duration};

use hoist_proto::v1::ServiceStatus;
use tokio::{sync::mpsc::UnboundedSender, time::Instant};

use crate::{
    config::Service,
    host::process::{self, Stream, tail},
};

pub use compose::parse_docker_ps;
use compose::{
    ComposeTarget, compose, compose_services, restart_compose, start_compose, stop_compose,
};
pub use signal::pidfile_state;
use signal::{restart_signal, stop_signal};
pub use supervisor::{SupervisorProcess, parse_supervisor_processes, parse_supervisor_status};
use supervisor::{restart_supervisor, start_stop_supervisor, supervisor};
pub use systemd::parse_systemctl_show;
use systemd::{restart_systemd, start_stop_systemd, systemd};

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

/// Why a probe tool gave no answer (the probe then reports `unknown` with this).
#[derive(Debug, thiserror::Error)]
pub(super) enum ProbeError {
    #[error("{program} did not answer within {PROBE_TIMEOUT:?}")]
    Timeout { program: String },
    #[error("{program} is not installed on this host")]
    NotInstalled { program: String },
    #[error("cannot run {program}: {source}")]
    Run {
        program: String,
        source: std::io::Error,
    },
}

/// Runs a probe tool; returns its stdout and stderr lines whatever its exit code, since
/// status tools exit non-zero for stopped services.
async fn tool(program: &str, args: &[&str]) -> Result<(bool, String), ProbeError> {
    let mut argv = vec![program];
    argv.extend(args);
    let mut text = String::new();
    let sink = |_, line: String| {
        text.push_str(&line);
        text.push('\n');
    };
    let outcome = process::run_tool(&argv, None, Instant::now() + PROBE_TIMEOUT, sink)
        .await
        .map_err(|err| match err {
            err if err.not_found() => ProbeError::NotInstalled {
                program: program.into(),
            },
            err => ProbeError::Run {
                program: program.into(),
                source: err.into_io(),
            },
        })?;
    if outcome.timed_out {
        return Err(ProbeError::Timeout {
            program: program.into(),
        });
    }
    Ok((outcome.success(), text))
}

// === restarts ===

/// Poll interval after an action: starts short, backs off to [`POLL_MAX`].
const POLL_FIRST: Duration = Duration::from_millis(50);
const POLL_MAX: Duration = Duration::from_millis(500);
/// Output lines kept per tool invocation (older lines are still streamed).
const KEPT_LINES: usize = 500;
/// Output lines and bytes quoted in a [`RestartError`].
const ERROR_LINES: usize = 3;
const ERROR_BYTES: usize = 400;

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

/// Stopping or starting a service (`hoist stop` / `hoist start`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toggle {
    Stop,
    Start,
}

impl Toggle {
    pub fn as_str(self) -> &'static str {
        match self {
            Toggle::Stop => "stop",
            Toggle::Start => "start",
        }
    }

    fn done(self) -> &'static str {
        match self {
            Toggle::Stop => "stopped",
            Toggle::Start => "started",
        }
    }
}

/// Stops or starts `service` and waits, bounded by its `timeout`, until it really is
/// stopped (no process left) or running. A signal service can be stopped (SIGTERM to
/// its pidfile's pid) but not started: hoist knows only its pidfile, not how to launch
/// it. Returns a one-line summary, like [`restart`].
pub async fn toggle(
    service: &Service,
    release_dir: &Path,
    toggle: Toggle,
    out: &UnboundedSender<(Stream, String)>,
) -> Result<String, RestartError> {
    let run = Runner {
        service: format!("{} {}", service.kind(), service.display_name()),
        timeout: service.timeout(),
        deadline: Instant::now() + service.timeout(),
        out,
    };
    match service {
        Service::Systemd { name, .. } => start_stop_systemd(&run, name, toggle).await,
        Service::Supervisor {
            name, serverurl, ..
        } => start_stop_supervisor(&run, name, serverurl.as_deref(), toggle).await,
        Service::Compose {
            compose_file,
            project,
            services,
            ..
        } => {
            let target = ComposeTarget {
                release_dir,
                compose_file: compose_file.as_deref(),
                project,
                services,
            };
            match toggle {
                Toggle::Stop => stop_compose(&run, &target).await,
                Toggle::Start => start_compose(&run, &target).await,
            }
        }
        Service::Signal { pidfile, .. } => match toggle {
            Toggle::Stop => stop_signal(&run, pidfile).await,
            Toggle::Start => Err(run.failed(
                "hoist cannot start a signal service: it knows only its pidfile, not how to \
                 launch it; start it with its own init (or declare it as a systemd or \
                 supervisor service)",
                "",
            )),
        },
    }
}

/// The services a compose entry covers: its declared `services`, or, when it covers
/// the whole project, the services of its compose file (`compose config --services`,
/// run in `release_dir`). Empty for any other kind.
pub async fn compose_service_names(
    service: &Service,
    release_dir: &Path,
) -> Result<Vec<String>, RestartError> {
    let Service::Compose {
        compose_file,
        project,
        services,
        ..
    } = service
    else {
        return Ok(Vec::new());
    };
    if !services.is_empty() {
        return Ok(services.clone());
    }
    let (out, _) = tokio::sync::mpsc::unbounded_channel();
    let run = Runner {
        service: format!("compose {project}"),
        timeout: PROBE_TIMEOUT,
        deadline: Instant::now() + PROBE_TIMEOUT,
        out: &out,
    };
    let target = ComposeTarget {
        release_dir,
        compose_file: compose_file.as_deref(),
        project,
        services,
    };
    compose_services(&run, &target).await
}

/// A service name that none of the app's services answers to.
#[derive(Debug, thiserror::Error)]
#[error("app {app} has no service {name:?}; its services: {}", if .known.is_empty() { "none".to_string() } else { .known.join(", ") })]
pub struct NoSuchService {
    pub app: String,
    pub name: String,
    pub known: Vec<String>,
}

/// The services `only` names among `services` (all of them when `only` is empty): a
/// declared service by its name, or one service of a compose project by the name the
/// compose file gives it (then only that compose service is acted on).
pub async fn select(
    app: &str,
    services: Vec<Service>,
    release_dir: &Path,
    only: &str,
) -> Result<Vec<Service>, NoSuchService> {
    if only.is_empty() {
        return Ok(services);
    }
    let mut known = Vec::new();
    let mut chosen = Vec::new();
    for service in services {
        let name = service.display_name();
        if name == only {
            chosen.push(service);
            continue;
        }
        known.push(name);
        // A compose file that cannot be read adds no names; the error then lists the
        // declared ones.
        let inner = compose_service_names(&service, release_dir)
            .await
            .unwrap_or_default();
        if inner.iter().any(|s| s == only) {
            let mut narrowed = service;
            if let Service::Compose { services, .. } = &mut narrowed {
                *services = vec![only.to_string()];
            }
            chosen.push(narrowed);
        } else {
            known.extend(inner.into_iter().map(|s| format!("{s} (compose)")));
        }
    }
    if chosen.is_empty() {
        return Err(NoSuchService {
            app: app.into(),
            name: only.into(),
            known,
        });
    }
    Ok(chosen)
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

    /// Runs `argv` (no shell) through the one spawner, bounded by the deadline.
    async fn run(
        &self,
        argv: &[&str],
        cwd: Option<&Path>,
        stream: bool,
    ) -> Result<ToolOutput, RestartError> {
        let program = argv.first().copied().unwrap_or_default();
        if let Some(dir) = cwd
            && !dir.is_dir()
        {
            return Err(self.failed(format!("{} is not a directory", dir.display()), ""));
        }
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
        let outcome = process::run_tool(argv, cwd, self.deadline, sink)
            .await
            .map_err(|err| match err {
                err if err.not_found() => RestartError::NotInstalled {
                    service: self.service.clone(),
                    tool: program.to_string(),
                },
                err => RestartError::Spawn {
                    service: self.service.clone(),
                    tool: program.to_string(),
                    reason: err.into_io().to_string(),
                },
            })?;
        let text = Vec::from(lines).join("\n");
        if outcome.timed_out {
            return Err(RestartError::Command {
                service: self.service.clone(),
                command: argv.join(" "),
                outcome: format!("did not finish within {:?}", self.timeout),
                output: text,
            });
        }
        Ok(ToolOutput {
            success: outcome.success(),
            status: outcome.describe(),
            text,
        })
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
