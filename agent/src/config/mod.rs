//! The agent's config file, `/etc/hoist/agent.toml` (SPEC §3): the apps this host
//! deploys, the commands each step runs, its services and its checks.
//!
//! Parsing is strict: unknown keys are errors, and every error names the file, line and
//! column it is about, with a hint where one helps. Values that can be checked on their
//! own (names, durations, addresses, paths) are checked while deserializing, so toml
//! attaches the value's position to the error; checks that span several values
//! (duplicates, keys that belong to another `kind`, a strategy's required keys) run in a
//! second pass over `toml::Spanned` values and report every problem at once.
//!
//! Relative paths (`state_dir`, the `[tls]` files, a signal service's `pidfile`) resolve
//! against the directory of the config file, so a config and its certificates can be
//! moved together. `deploy_to` must be absolute.

mod check;
mod diagnostics;
mod load;
mod logs;
mod service;
#[cfg(test)]
mod tests;
mod values;

use std::{collections::BTreeMap, fmt, net::SocketAddr, path::PathBuf, time::Duration};

pub use hoist_config::{Diagnostic, de_duration, parse_duration};
use hoist_config::{hinted, render};
use serde::{
    Deserialize, Deserializer,
    de::{self, Error as _},
};

pub use load::{load, parse};
pub use logs::{LogKind, LogRoot, LogSource, glob};
use values::{de_metrics_listen, de_socket_addr, de_timeout};

// === errors ===

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render(errors))]
    Invalid { errors: Vec<Diagnostic> },
}

/// A request named an app this agent does not have.
#[derive(Debug, thiserror::Error)]
#[error("unknown app {app:?}; this agent has: {}", known_apps(.known))]
pub struct UnknownApp {
    pub app: String,
    pub known: Vec<String>,
}

fn known_apps(known: &[String]) -> String {
    if known.is_empty() {
        "no apps".into()
    } else {
        known.join(", ")
    }
}

// === the config ===

/// The whole agent config.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub agent: AgentSection,
    pub tls: TlsSection,
    pub thresholds: Thresholds,
    pub apps: Vec<App>,
}

/// `[agent]`: listeners, state, background intervals. Every key has a default.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSection {
    /// gRPC over mutual TLS.
    #[serde(deserialize_with = "de_socket_addr")]
    pub listen: SocketAddr,
    /// Journals, job logs, git mirrors, locks.
    pub state_dir: PathBuf,
    /// Prometheus text over plain HTTP; `""` in the file disables it.
    #[serde(deserialize_with = "de_metrics_listen")]
    pub metrics_listen: Option<SocketAddr>,
    /// Background health checks and resource sampling.
    #[serde(deserialize_with = "de_timeout")]
    pub health_interval: Duration,
    /// How long in-flight RPCs may run after SIGTERM before the agent exits.
    #[serde(deserialize_with = "de_duration")]
    pub drain_timeout: Duration,
}

impl Default for AgentSection {
    fn default() -> Self {
        AgentSection {
            listen: SocketAddr::from(([0, 0, 0, 0], 7443)),
            state_dir: PathBuf::from("/var/lib/hoist"),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
            health_interval: Duration::from_secs(15),
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// `[tls]`: the fleet CA and this agent's certificate and key (PEM), and the CA's
/// certificate revocation list.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CRL from `hoist ca revoke`. Set: the file must exist. Unset: `crl.pem` beside
    /// `ca` is loaded when it exists (see [`TlsSection::crl_path`]).
    #[serde(default)]
    pub crl: Option<PathBuf>,
}

impl TlsSection {
    /// File name of the conventional CRL beside the CA certificate.
    pub const DEFAULT_CRL: &'static str = "crl.pem";

    /// The CRL to load and whether it must exist: the configured one (required), or
    /// `crl.pem` beside `ca` (optional).
    pub fn crl_path(&self) -> (PathBuf, bool) {
        match &self.crl {
            Some(path) => (path.clone(), true),
            None => (
                self.ca
                    .parent()
                    .unwrap_or(std::path::Path::new("."))
                    .join(Self::DEFAULT_CRL),
                false,
            ),
        }
    }
}

/// `[thresholds]`: warn / critical levels for resource usage, in percent.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    pub cpu: Threshold,
    pub memory: Threshold,
    pub disk: Threshold,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            cpu: Threshold::new(80.0, 95.0),
            memory: Threshold::new(85.0, 95.0),
            disk: Threshold::new(80.0, 95.0),
        }
    }
}

/// A `[warn, critical]` pair, `0 < warn <= critical <= 100`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Threshold {
    pub warn: f64,
    pub critical: f64,
}

/// How a measured value compares with its threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Critical,
}

/// One `[[app]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct App {
    pub name: String,
    /// Any git URL or local path.
    pub repo: String,
    /// Absolute; holds `releases/`, `shared/`, `current`, `backups/`.
    pub deploy_to: PathBuf,
    pub strategy: Strategy,
    /// Hooks and checks run as this user (and group); `None` runs them as the agent.
    pub user: Option<String>,
    pub group: Option<String>,
    /// Releases kept on disk, at least 2: the current one and one to roll back to.
    pub keep_releases: u32,
    /// Backups kept in `backups/` besides the ones releases on disk still need (the
    /// backup of each, and the one taken before each's migrations); default
    /// `keep_releases`.
    pub keep_backups: u32,
    /// Relative to `shared/`; linked into every release.
    pub shared_files: Vec<String>,
    pub shared_dirs: Vec<String>,
    /// Declared environment for hooks and checks (the `HOIST_*` variables are added).
    pub env: BTreeMap<String, String>,
    /// Limit for one step; the step's process group is killed when it runs out.
    pub step_timeout: Duration,
    pub steps: Steps,
    pub services: Vec<Service>,
    pub checks: Vec<Check>,
    /// `compose` strategy: the compose file (relative to the release, or absolute).
    pub compose_file: Option<String>,
    /// `compose` strategy: the compose project name.
    pub project: Option<String>,
    /// `command` strategy: makes a release live (e.g. `helm upgrade --install ... --wait`).
    pub activate: Option<Command>,
    /// `command` strategy: takes a release down again (e.g. `helm rollback`).
    pub deactivate: Option<Command>,
    /// `[app.tasks]`: one-off commands operators may run (`hoist run APP TASK`).
    pub tasks: BTreeMap<String, Task>,
    /// `[[app.logs]]`: what `hoist logs APP` reads.
    pub logs: Vec<LogSource>,
    /// `.env` keys (or `*` patterns) whose values are masked in output, besides
    /// [`DEFAULT_SECRET_KEYS`].
    pub secret_keys: Vec<String>,
}

/// `.env` keys whose values are masked in output whatever `secret_keys` says
/// (case-insensitive; `*` is any run of characters).
pub const DEFAULT_SECRET_KEYS: &[&str] = &[
    "*PASSWORD*",
    "*PASSWD*",
    "*PASS",
    "*PWD",
    "*SECRET*",
    "*TOKEN*",
    "*_KEY",
    "*CREDENTIALS*",
    "*PRIVATE*",
    "DATABASE_URL",
    "*_DSN",
];

impl App {
    /// Whether the values of `.env` key `key` are masked in output.
    pub fn is_secret_key(&self, key: &str) -> bool {
        let key = key.to_ascii_uppercase();
        DEFAULT_SECRET_KEYS
            .iter()
            .copied()
            .chain(self.secret_keys.iter().map(String::as_str))
            .any(|p| glob(&p.to_ascii_uppercase(), &key))
    }

    /// The declared log source `name`, or why there is none (naming the declared ones).
    pub fn log_source(&self, name: &str) -> Result<&LogSource, UnknownLogSource> {
        self.logs
            .iter()
            .find(|l| l.name == name)
            .ok_or_else(|| UnknownLogSource {
                app: self.name.clone(),
                source_name: name.to_string(),
                known: self.logs.iter().map(|l| l.name.clone()).collect(),
            })
    }
}

/// A request named a log source the app does not declare.
#[derive(Debug, thiserror::Error)]
#[error(
    "app {app} declares no log source {source_name:?}; {}",
    if known.is_empty() { "it declares none: add [[app.logs]] entries to the agent config".to_string() } else { format!("its log sources: {}", known.join(", ")) }
)]
pub struct UnknownLogSource {
    pub app: String,
    pub source_name: String,
    pub known: Vec<String>,
}

/// One `[app.tasks]` entry: a command run like a hook in the current release, and the
/// least role that may run it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub command: Command,
    pub role: TaskRole,
}

/// Who may run a task: `viewer` marks it read-only and safe for anyone with a
/// certificate; `deployer` (the default) is for anything that changes state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskRole {
    Viewer,
    #[default]
    Deployer,
}

impl TaskRole {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskRole::Viewer => "viewer",
            TaskRole::Deployer => "deployer",
        }
    }
}

impl<'de> Deserialize<'de> for Task {
    /// A command (string or list of strings), or `{ command = ..., role = ... }`.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            command: Command,
            #[serde(default)]
            role: TaskRole,
        }
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = Task;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a command string, a list of them, or { command = \"...\", role = \"viewer\" }",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Task, E> {
                let command = Command::deserialize(de::value::StrDeserializer::<E>::new(s))?;
                Ok(Task {
                    command,
                    role: TaskRole::Deployer,
                })
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Task, A::Error> {
                let command = Command::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
                Ok(Task {
                    command,
                    role: TaskRole::Deployer,
                })
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Task, A::Error> {
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(Task {
                    command: t.command,
                    role: t.role,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// How a release goes live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Switch the `current` symlink atomically.
    #[default]
    Symlink,
    /// Bring up the app's compose project with the new release.
    Compose,
    /// Run the declared `activate` command.
    Command,
}

/// `[app.steps]`: the commands of a deploy, each optional.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Steps {
    pub build: Option<Command>,
    pub backup: Option<Command>,
    pub maintenance_on: Option<Command>,
    pub migrate: Option<Command>,
    pub migrate_status: Option<Command>,
    /// Answers by its exit status whether migrations are pending: 0 yes, 1 no,
    /// anything else is an error.
    pub migrate_pending: Option<Command>,
    pub migrate_rollback: Option<Command>,
    pub restore: Option<Command>,
    pub after_switch: Option<Command>,
    pub maintenance_off: Option<Command>,
    /// Run in the current release by `hoist env set|unset --restart` before the
    /// restart; default: `after_switch` (e.g. `php artisan config:cache`).
    pub on_env_change: Option<Command>,
}

/// A hook: one or more command lines, each run by `/bin/sh -c`, in order, stopping at
/// the first that fails. Written as a string or a list of strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command(pub Vec<String>);

impl Config {
    /// The app called `name`: the one place an unknown app is told apart.
    pub fn app(&self, name: &str) -> Result<&App, UnknownApp> {
        self.apps
            .iter()
            .find(|a| a.name == name)
            .ok_or_else(|| UnknownApp {
                app: name.to_string(),
                known: self.apps.iter().map(|a| a.name.clone()).collect(),
            })
    }
}

impl App {
    /// The app's services, plus, for the compose strategy, the app's compose project
    /// itself (every service in it, recreated from the release's compose file).
    pub fn all_services(&self) -> Vec<Service> {
        let mut services = self.services.clone();
        if self.strategy == Strategy::Compose
            && let Some(project) = &self.project
        {
            services.insert(
                0,
                Service::Compose {
                    compose_file: self.compose_file.clone(),
                    project: project.clone(),
                    services: Vec::new(),
                    action: ComposeAction::Recreate,
                    timeout: self.step_timeout,
                },
            );
        }
        services
    }
}

/// An `[[app.services]]` entry: something to reload or restart after a switch.
#[derive(Clone, Debug, PartialEq)]
pub enum Service {
    Systemd {
        name: String,
        action: SystemdAction,
        timeout: Duration,
    },
    Supervisor {
        /// A program, or `group:*`.
        name: String,
        /// `supervisorctl -s`; `None` uses supervisorctl's own default.
        serverurl: Option<String>,
        action: SupervisorAction,
        timeout: Duration,
    },
    Compose {
        compose_file: Option<String>,
        project: String,
        /// Empty means every service of the project.
        services: Vec<String>,
        action: ComposeAction,
        timeout: Duration,
    },
    Signal {
        name: Option<String>,
        pidfile: PathBuf,
        /// Normalised to the `SIG` form, e.g. `SIGUSR2`.
        signal: String,
        timeout: Duration,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SystemdAction {
    Reload,
    #[default]
    Restart,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SupervisorAction {
    #[default]
    Restart,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ComposeAction {
    /// `docker compose up -d --force-recreate`.
    #[default]
    Recreate,
    /// `docker compose restart`.
    Restart,
}

/// An `[[app.checks]]` entry: runs every `health_interval`, and gates every deploy
/// unless `gate = false` (a monitor-only check: exported and shown, never a verdict).
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub name: Option<String>,
    /// `false`: monitored only; a deploy neither runs nor waits for it, a bake ignores it.
    pub gate: bool,
    pub timeout: Duration,
    pub retries: u32,
    pub interval: Duration,
    pub probe: Probe,
}

/// What a check does.
#[derive(Clone, Debug, PartialEq)]
pub enum Probe {
    Http {
        /// `http://` or `https://` (verified against the system's roots plus `ca`).
        url: String,
        expect_status: u16,
        /// Dotted paths into the response JSON and the values they must have.
        expect_json: BTreeMap<String, serde_json::Value>,
        /// Extra PEM roots trusted for this check's https URL (a private CA).
        ca: Option<PathBuf>,
    },
    Tcp {
        /// `host:port`.
        address: String,
    },
    Command {
        /// Run like a hook: as the app's user, in the current release.
        command: Command,
    },
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Symlink => "symlink",
            Strategy::Compose => "compose",
            Strategy::Command => "command",
        }
    }
}

// === impl Threshold ===

impl Threshold {
    const fn new(warn: f64, critical: f64) -> Self {
        Threshold { warn, critical }
    }

    /// The level of a usage `percent`: at or above `critical`, at or above `warn`, or ok.
    pub fn level(&self, percent: f64) -> Level {
        if percent >= self.critical {
            Level::Critical
        } else if percent >= self.warn {
            Level::Warn
        } else {
            Level::Ok
        }
    }
}

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = Threshold;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a [warn, critical] pair of percentages, e.g. [80, 95]")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Threshold, A::Error> {
                let pair = "a threshold is a [warn, critical] pair of percentages, e.g. [80, 95]";
                let warn: f64 = seq.next_element()?.ok_or_else(|| A::Error::custom(pair))?;
                let critical: f64 = seq.next_element()?.ok_or_else(|| A::Error::custom(pair))?;
                if seq.next_element::<f64>()?.is_some() {
                    return Err(A::Error::custom(pair));
                }
                if !(warn > 0.0 && warn <= critical && critical <= 100.0) {
                    return Err(A::Error::custom(hinted(
                        format!("invalid threshold [{warn}, {critical}]"),
                        "use [warn, critical] with 0 < warn <= critical <= 100",
                    )));
                }
                Ok(Threshold::new(warn, critical))
            }
        }
        d.deserialize_seq(Visitor)
    }
}

// === impl Command ===

impl Command {
    /// The command lines joined for display (`a && b`).
    pub fn display(&self) -> String {
        self.0.join(" && ")
    }
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        const EMPTY: &str = "empty command; write a command line, or a list of them";
        impl<'de> de::Visitor<'de> for Visitor {
            type Value = Command;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a command string or a list of command strings")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Command, E> {
                if s.trim().is_empty() {
                    return Err(E::custom(EMPTY));
                }
                Ok(Command(vec![s.to_string()]))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Command, A::Error> {
                let mut lines = Vec::new();
                while let Some(line) = seq.next_element::<String>()? {
                    if line.trim().is_empty() {
                        return Err(A::Error::custom(EMPTY));
                    }
                    lines.push(line);
                }
                if lines.is_empty() {
                    return Err(A::Error::custom(EMPTY));
                }
                Ok(Command(lines))
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl Service {
    /// `systemd`, `supervisor`, `compose` or `signal`.
    pub fn kind(&self) -> &'static str {
        match self {
            Service::Systemd { .. } => "systemd",
            Service::Supervisor { .. } => "supervisor",
            Service::Compose { .. } => "compose",
            Service::Signal { .. } => "signal",
        }
    }

    /// What operators call it: the unit or program, the compose project, or the
    /// signal service's name (else its pidfile).
    pub fn display_name(&self) -> String {
        match self {
            Service::Systemd { name, .. } | Service::Supervisor { name, .. } => name.clone(),
            Service::Compose { project, .. } => project.clone(),
            Service::Signal { name, pidfile, .. } => name
                .clone()
                .unwrap_or_else(|| pidfile.display().to_string()),
        }
    }

    /// How long the reload or restart may take.
    pub fn timeout(&self) -> Duration {
        match self {
            Service::Systemd { timeout, .. }
            | Service::Supervisor { timeout, .. }
            | Service::Compose { timeout, .. }
            | Service::Signal { timeout, .. } => *timeout,
        }
    }
}

impl SystemdAction {
    /// The `systemctl` verb.
    pub fn as_str(self) -> &'static str {
        match self {
            SystemdAction::Reload => "reload",
            SystemdAction::Restart => "restart",
        }
    }
}

impl SupervisorAction {
    /// The `supervisorctl` verb.
    pub fn as_str(self) -> &'static str {
        match self {
            SupervisorAction::Restart => "restart",
        }
    }
}

impl ComposeAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ComposeAction::Recreate => "recreate",
            ComposeAction::Restart => "restart",
        }
    }
}

impl Check {
    /// `http`, `tcp` or `command`.
    pub fn kind(&self) -> &'static str {
        match self.probe {
            Probe::Http { .. } => "http",
            Probe::Tcp { .. } => "tcp",
            Probe::Command { .. } => "command",
        }
    }

    /// The explicit `name`, else one derived from what the check does:
    /// `http GET /api/health`, `tcp 127.0.0.1:5432`, `command php artisan ...`.
    pub fn name(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        match &self.probe {
            Probe::Http { url, .. } => {
                let path = url
                    .parse::<http::Uri>()
                    .ok()
                    .and_then(|u| u.path_and_query().map(|p| p.as_str().to_string()))
                    .unwrap_or_else(|| url.clone());
                format!("http GET {path}")
            }
            Probe::Tcp { address } => format!("tcp {address}"),
            Probe::Command { command } => {
                let line = command.display();
                let mut short: String = line.chars().take(40).collect();
                if short.len() < line.len() {
                    short.push('…');
                }
                format!("command {short}")
            }
        }
    }

    /// How long one attempt may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Attempts before the check counts as failed (at least 1).
    pub fn retries(&self) -> u32 {
        self.retries
    }

    /// Pause between attempts.
    pub fn interval(&self) -> Duration {
        self.interval
    }
}
