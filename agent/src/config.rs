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

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::SocketAddr,
    ops::Range,
    path::{Component, Path, PathBuf},
    str::FromStr,
    time::Duration,
};

pub use hoist_config::{Diagnostic, de_duration, parse_duration};
use hoist_config::{Hints, checked_str, hinted, is_host_port, is_name, line_column, render};
use serde::{
    Deserialize, Deserializer,
    de::{self, Error as _},
};
use toml::Spanned;

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

/// `[tls]`: the fleet CA and this agent's certificate and key (PEM).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
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
    pub migrate_rollback: Option<Command>,
    pub restore: Option<Command>,
    pub after_switch: Option<Command>,
    pub maintenance_off: Option<Command>,
}

/// A hook: one or more command lines, each run by `/bin/sh -c`, in order, stopping at
/// the first that fails. Written as a string or a list of strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command(pub Vec<String>);

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

/// An `[[app.checks]]` entry: gates every deploy and runs every `health_interval`.
#[derive(Clone, Debug, PartialEq)]
pub enum Check {
    Http {
        name: Option<String>,
        /// Plain `http://`: checks target the app's local endpoint.
        url: String,
        expect_status: u16,
        /// Dotted paths into the response JSON and the values they must have.
        expect_json: BTreeMap<String, serde_json::Value>,
        timeout: Duration,
        retries: u32,
        interval: Duration,
    },
    Tcp {
        name: Option<String>,
        /// `host:port`.
        address: String,
        timeout: Duration,
        retries: u32,
        interval: Duration,
    },
    Command {
        name: Option<String>,
        /// Run like a hook: as the app's user, in the current release.
        command: Command,
        timeout: Duration,
        retries: u32,
        interval: Duration,
    },
}

// === loading ===

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Validates config text. `origin` names the file in diagnostics, and relative paths
/// resolve against its directory.
pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    let mut report = Report {
        text,
        origin,
        errors: Vec::new(),
    };
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(err) => {
            report.toml_error(&err);
            return Err(report.into_error());
        }
    };
    let base = origin.parent().unwrap_or(Path::new(""));
    let config = raw.validate(base, &mut report);
    if report.errors.is_empty() {
        Ok(config)
    } else {
        Err(report.into_error())
    }
}

/// Collects diagnostics, turning byte spans into lines and columns.
struct Report<'a> {
    text: &'a str,
    origin: &'a Path,
    errors: Vec<Diagnostic>,
}

impl Report<'_> {
    fn error(&mut self, span: Range<usize>, message: impl Into<String>, hint: Option<String>) {
        let diagnostic = Diagnostic::at(self.origin, self.text, span.start, message, hint);
        self.errors.push(diagnostic);
    }

    fn toml_error(&mut self, err: &toml::de::Error) {
        let diagnostic = Diagnostic::from_toml(self.origin, self.text, err, &HINTS);
        self.errors.push(diagnostic);
    }

    fn into_error(mut self) -> ConfigError {
        self.errors.sort_by_key(|d| (d.line, d.column));
        ConfigError::Invalid {
            errors: self.errors,
        }
    }
}

/// The agent config's own hints for toml's and serde's errors.
const HINTS: Hints = Hints {
    unknown_key: Some(kind_keys),
    missing_key: &[
        (
            "tls",
            "add a [tls] table with `ca`, `cert` and `key` (PEM files; \
             `hoist ca issue --agent NAME` makes them)",
        ),
        (
            "kind",
            "set `kind` first; it decides which keys the entry takes",
        ),
    ],
    message: &[(
        "invalid type: map, expected a sequence",
        "write `[[app]]` (a list of tables), not `[app]`",
    )],
};

/// The hint for an unknown key of a service or check entry: the keys of each kind, as
/// the union of every kind's keys (all serde knows) would mislead.
fn kind_keys(keys: &str) -> Option<String> {
    let (_, what, kinds) = [
        ("pidfile", "services", SERVICE_KEYS),
        ("expect_json", "checks", CHECK_KEYS),
    ]
    .into_iter()
    .find(|(marker, _, _)| keys.starts_with("kind, ") && keys.contains(marker))?;
    let hints: Vec<String> = kinds
        .iter()
        .map(|(kind, keys)| format!("{kind} {what} take {}", keys.join(", ")))
        .collect();
    Some(hints.join("; "))
}

// === the raw document and the validation pass ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    agent: AgentSection,
    tls: TlsSection,
    #[serde(default)]
    thresholds: Thresholds,
    #[serde(default, rename = "app")]
    apps: Vec<RawApp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    name: Spanned<Name>,
    repo: Repo,
    deploy_to: Spanned<DeployTo>,
    strategy: Option<Spanned<Strategy>>,
    user: Option<Account>,
    group: Option<Account>,
    #[serde(default)]
    keep_releases: KeepReleases,
    #[serde(default)]
    shared_files: Vec<SharedPath>,
    #[serde(default)]
    shared_dirs: Vec<SharedPath>,
    #[serde(default)]
    env: BTreeMap<EnvKey, String>,
    step_timeout: Option<Timeout>,
    #[serde(default)]
    steps: Steps,
    #[serde(default)]
    services: Vec<RawService>,
    #[serde(default)]
    checks: Vec<RawCheck>,
    compose_file: Option<Spanned<Word>>,
    project: Option<Spanned<Name>>,
    activate: Option<Spanned<Command>>,
    deactivate: Option<Spanned<Command>>,
}

impl RawConfig {
    fn validate(self, base: &Path, report: &mut Report<'_>) -> Config {
        let mut agent = self.agent;
        agent.state_dir = base.join(&agent.state_dir);
        let tls = TlsSection {
            ca: base.join(&self.tls.ca),
            cert: base.join(&self.tls.cert),
            key: base.join(&self.tls.key),
        };
        let mut names: HashMap<String, Range<usize>> = HashMap::new();
        let mut roots: HashMap<PathBuf, String> = HashMap::new();
        let mut apps = Vec::with_capacity(self.apps.len());
        for raw in self.apps {
            let name = raw.name.get_ref().0.clone();
            if let Some(first) = names.get(&name) {
                let (line, _) = line_column(report.text, first.start);
                report.error(
                    raw.name.span(),
                    format!("duplicate app `{name}`"),
                    Some(format!(
                        "the first `{name}` is at line {line}; app names are unique"
                    )),
                );
            } else {
                names.insert(name.clone(), raw.name.span());
            }
            let root = raw.deploy_to.get_ref().0.clone();
            if let Some(other) = roots.get(&root) {
                report.error(
                    raw.deploy_to.span(),
                    format!("deploy_to {} is already app `{other}`'s", root.display()),
                    Some("every app needs its own deploy_to".into()),
                );
            } else {
                roots.insert(root, name);
            }
            apps.push(raw.validate(base, report));
        }
        Config {
            agent,
            tls,
            thresholds: self.thresholds,
            apps,
        }
    }
}

impl RawApp {
    fn validate(self, base: &Path, report: &mut Report<'_>) -> App {
        let name = self.name.into_inner().0;
        let strategy = self
            .strategy
            .as_ref()
            .map_or(Strategy::Symlink, |s| *s.get_ref());
        let strategy_span = self.strategy.as_ref().map(Spanned::span);
        // A strategy's own keys: required with it, and a likely mistake without it.
        let keys: [(&str, Strategy, Option<Range<usize>>); 4] = [
            (
                "compose_file",
                Strategy::Compose,
                spanned(&self.compose_file),
            ),
            ("project", Strategy::Compose, spanned(&self.project)),
            ("activate", Strategy::Command, spanned(&self.activate)),
            ("deactivate", Strategy::Command, spanned(&self.deactivate)),
        ];
        for (key, wants, span) in keys {
            if let Some(span) = span
                && wants != strategy
            {
                report.error(
                    span,
                    format!("`{key}` only applies to strategy = \"{}\"", wants.as_str()),
                    Some(format!(
                        "this app's strategy is \"{}\"; remove `{key}` or change the strategy",
                        strategy.as_str()
                    )),
                );
            }
        }
        let missing: Vec<&str> = match strategy {
            Strategy::Symlink => vec![],
            Strategy::Compose => [
                ("compose_file", self.compose_file.is_none()),
                ("project", self.project.is_none()),
            ]
            .into_iter()
            .filter_map(|(key, absent)| absent.then_some(key))
            .collect(),
            Strategy::Command => match self.activate {
                None => vec!["activate"],
                Some(_) => vec![],
            },
        };
        if !missing.is_empty() {
            let keys = missing.join("` and `");
            report.error(
                strategy_span.unwrap_or(0..0),
                format!("strategy = \"{}\" needs `{keys}`", strategy.as_str()),
                Some(match strategy {
                    Strategy::Compose => {
                        "e.g. compose_file = \"compose.yaml\", project = \"shop\"".into()
                    }
                    _ => "e.g. activate = \"helm upgrade --install shop ./chart --wait\"".into(),
                }),
            );
        }

        let services = self
            .services
            .into_iter()
            .filter_map(|s| s.validate(base, report))
            .collect();
        let mut checks = Vec::with_capacity(self.checks.len());
        let mut check_names: HashMap<String, usize> = HashMap::new();
        for raw in self.checks {
            let span = raw.name.as_ref().map_or(raw.kind.span(), Spanned::span);
            let Some(check) = raw.validate(report) else {
                continue;
            };
            let check_name = check.name();
            if let Some(line) = check_names.get(&check_name) {
                report.error(
                    span,
                    format!("duplicate check `{check_name}` in app `{name}`"),
                    Some(format!(
                        "the first is at line {line}; give each check a distinct `name`"
                    )),
                );
            } else {
                check_names.insert(check_name, line_column(report.text, span.start).0);
            }
            checks.push(check);
        }

        App {
            name,
            repo: self.repo.0,
            deploy_to: self.deploy_to.into_inner().0,
            strategy,
            user: self.user.map(|a| a.0),
            group: self.group.map(|a| a.0),
            keep_releases: self.keep_releases.0,
            shared_files: self.shared_files.into_iter().map(|p| p.0).collect(),
            shared_dirs: self.shared_dirs.into_iter().map(|p| p.0).collect(),
            env: self.env.into_iter().map(|(k, v)| (k.0, v)).collect(),
            step_timeout: self.step_timeout.map_or(Duration::from_secs(600), |t| t.0),
            steps: self.steps,
            services,
            checks,
            compose_file: self.compose_file.map(|f| f.into_inner().0),
            project: self.project.map(|p| p.into_inner().0),
            activate: self.activate.map(Spanned::into_inner),
            deactivate: self.deactivate.map(Spanned::into_inner),
        }
    }
}

fn spanned<T>(value: &Option<Spanned<T>>) -> Option<Range<usize>> {
    value.as_ref().map(Spanned::span)
}

/// Reports the keys of an entry that belong to another `kind` of entry.
fn foreign_keys(
    report: &mut Report<'_>,
    what: &str,
    allowed: &[&str],
    present: &[(&str, Option<Range<usize>>)],
) {
    for (key, span) in present {
        if let Some(span) = span
            && !allowed.contains(key)
        {
            report.error(
                span.clone(),
                format!("`{key}` is not a key of {what}"),
                Some(format!("{what} take: kind, {}", allowed.join(", "))),
            );
        }
    }
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

// === services ===

#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ServiceKind {
    Systemd,
    Supervisor,
    Compose,
    Signal,
}

/// Every key of every service kind; the validation pass sorts out which apply.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    kind: Spanned<ServiceKind>,
    name: Option<Spanned<Word>>,
    action: Option<Spanned<String>>,
    serverurl: Option<Spanned<ServerUrl>>,
    compose_file: Option<Spanned<Word>>,
    project: Option<Spanned<Name>>,
    services: Option<Spanned<Vec<Word>>>,
    pidfile: Option<Spanned<PathBuf>>,
    signal: Option<Spanned<SignalName>>,
    timeout: Option<Spanned<Timeout>>,
}

/// The keys each kind of service takes besides `kind`.
const SERVICE_KEYS: &[(&str, &[&str])] = &[
    ("systemd", &["name", "action", "timeout"]),
    ("supervisor", &["name", "serverurl", "action", "timeout"]),
    (
        "compose",
        &["compose_file", "project", "services", "action", "timeout"],
    ),
    ("signal", &["name", "pidfile", "signal", "timeout"]),
];

/// The keys of `kind` in a `(kind, keys)` table.
fn keys_of(table: &[(&str, &'static [&'static str])], kind: &str) -> &'static [&'static str] {
    table
        .iter()
        .find_map(|(k, keys)| (*k == kind).then_some(*keys))
        .unwrap_or_default()
}

impl RawService {
    fn validate(self, base: &Path, report: &mut Report<'_>) -> Option<Service> {
        let kind = *self.kind.get_ref();
        let what = format!("{} services", kind.as_str());
        let allowed = keys_of(SERVICE_KEYS, kind.as_str());
        let present = [
            ("name", spanned(&self.name)),
            ("action", spanned(&self.action)),
            ("serverurl", spanned(&self.serverurl)),
            ("compose_file", spanned(&self.compose_file)),
            ("project", spanned(&self.project)),
            ("services", spanned(&self.services)),
            ("pidfile", spanned(&self.pidfile)),
            ("signal", spanned(&self.signal)),
            ("timeout", spanned(&self.timeout)),
        ];
        let before = report.errors.len();
        foreign_keys(report, &what, allowed, &present);

        let mut require = |key: &str, present: bool| {
            if !present {
                report.error(self.kind.span(), format!("{what} need `{key}`"), None);
            }
        };
        match kind {
            ServiceKind::Systemd | ServiceKind::Supervisor => require("name", self.name.is_some()),
            ServiceKind::Compose => require("project", self.project.is_some()),
            ServiceKind::Signal => {
                require("pidfile", self.pidfile.is_some());
                require("signal", self.signal.is_some());
            }
        }
        let actions: &[&str] = match kind {
            ServiceKind::Systemd => &["reload", "restart"],
            ServiceKind::Supervisor => &["restart"],
            ServiceKind::Compose => &["recreate", "restart"],
            ServiceKind::Signal => &[],
        };
        let action = match &self.action {
            Some(a) if !actions.is_empty() && !actions.contains(&a.get_ref().as_str()) => {
                report.error(
                    a.span(),
                    format!("unknown action `{}` for {what}", a.get_ref()),
                    Some(format!("valid actions: {}", actions.join(", "))),
                );
                None
            }
            other => other.as_ref().map(|a| a.get_ref().as_str()),
        };
        if report.errors.len() > before {
            return None;
        }

        let timeout = self
            .timeout
            .map_or(Duration::from_secs(60), |t| t.into_inner().0);
        let name = self.name.map(|n| n.into_inner().0);
        Some(match kind {
            ServiceKind::Systemd => Service::Systemd {
                name: name?,
                action: match action {
                    Some("reload") => SystemdAction::Reload,
                    _ => SystemdAction::Restart,
                },
                timeout,
            },
            ServiceKind::Supervisor => Service::Supervisor {
                name: name?,
                serverurl: self.serverurl.map(|u| u.into_inner().0),
                action: SupervisorAction::Restart,
                timeout,
            },
            ServiceKind::Compose => Service::Compose {
                compose_file: self.compose_file.map(|f| f.into_inner().0),
                project: self.project?.into_inner().0,
                services: self.services.map_or_else(Vec::new, |s| {
                    s.into_inner().into_iter().map(|w| w.0).collect()
                }),
                action: match action {
                    Some("restart") => ComposeAction::Restart,
                    _ => ComposeAction::Recreate,
                },
                timeout,
            },
            ServiceKind::Signal => Service::Signal {
                name,
                pidfile: base.join(self.pidfile?.into_inner()),
                signal: self.signal?.into_inner().0,
                timeout,
            },
        })
    }
}

impl ServiceKind {
    fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Systemd => "systemd",
            ServiceKind::Supervisor => "supervisor",
            ServiceKind::Compose => "compose",
            ServiceKind::Signal => "signal",
        }
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

// === checks ===

#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum CheckKind {
    Http,
    Tcp,
    Command,
}

/// Every key of every check kind; the validation pass sorts out which apply.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    kind: Spanned<CheckKind>,
    name: Option<Spanned<CheckName>>,
    url: Option<Spanned<HttpUrl>>,
    expect_status: Option<Spanned<StatusCode>>,
    expect_json: Option<Spanned<BTreeMap<String, serde_json::Value>>>,
    address: Option<Spanned<HostPort>>,
    command: Option<Spanned<Command>>,
    timeout: Option<Spanned<Timeout>>,
    retries: Option<Spanned<Retries>>,
    interval: Option<Spanned<Dur>>,
}

/// The keys each kind of check takes besides `kind`.
const CHECK_KEYS: &[(&str, &[&str])] = &[
    (
        "http",
        &[
            "name",
            "url",
            "expect_status",
            "expect_json",
            "timeout",
            "retries",
            "interval",
        ],
    ),
    (
        "tcp",
        &["name", "address", "timeout", "retries", "interval"],
    ),
    (
        "command",
        &["name", "command", "timeout", "retries", "interval"],
    ),
];

impl RawCheck {
    fn validate(self, report: &mut Report<'_>) -> Option<Check> {
        let kind = *self.kind.get_ref();
        let what = format!("{} checks", kind.as_str());
        let allowed = keys_of(CHECK_KEYS, kind.as_str());
        let present = [
            ("name", spanned(&self.name)),
            ("url", spanned(&self.url)),
            ("expect_status", spanned(&self.expect_status)),
            ("expect_json", spanned(&self.expect_json)),
            ("address", spanned(&self.address)),
            ("command", spanned(&self.command)),
            ("timeout", spanned(&self.timeout)),
            ("retries", spanned(&self.retries)),
            ("interval", spanned(&self.interval)),
        ];
        let before = report.errors.len();
        foreign_keys(report, &what, allowed, &present);
        let required = match kind {
            CheckKind::Http => (
                "url",
                self.url.is_some(),
                "url = \"http://127.0.0.1/health\"",
            ),
            CheckKind::Tcp => (
                "address",
                self.address.is_some(),
                "address = \"127.0.0.1:5432\"",
            ),
            CheckKind::Command => (
                "command",
                self.command.is_some(),
                "command = \"php artisan ...\"",
            ),
        };
        if let (key, false, example) = required {
            report.error(
                self.kind.span(),
                format!("{what} need `{key}`"),
                Some(format!("e.g. {example}")),
            );
        }
        if report.errors.len() > before {
            return None;
        }

        let name = self.name.map(|n| n.into_inner().0);
        let timeout = self
            .timeout
            .map_or(Duration::from_secs(5), |t| t.into_inner().0);
        let retries = self.retries.map_or(3, |r| r.into_inner().0);
        let interval = self
            .interval
            .map_or(Duration::from_secs(2), |i| i.into_inner().0);
        Some(match kind {
            CheckKind::Http => Check::Http {
                name,
                url: self.url?.into_inner().0,
                expect_status: self.expect_status.map_or(200, |s| s.into_inner().0),
                expect_json: self
                    .expect_json
                    .map(Spanned::into_inner)
                    .unwrap_or_default(),
                timeout,
                retries,
                interval,
            },
            CheckKind::Tcp => Check::Tcp {
                name,
                address: self.address?.into_inner().0,
                timeout,
                retries,
                interval,
            },
            CheckKind::Command => Check::Command {
                name,
                command: self.command?.into_inner(),
                timeout,
                retries,
                interval,
            },
        })
    }
}

impl CheckKind {
    fn as_str(self) -> &'static str {
        match self {
            CheckKind::Http => "http",
            CheckKind::Tcp => "tcp",
            CheckKind::Command => "command",
        }
    }
}

impl Check {
    /// `http`, `tcp` or `command`.
    pub fn kind(&self) -> &'static str {
        match self {
            Check::Http { .. } => "http",
            Check::Tcp { .. } => "tcp",
            Check::Command { .. } => "command",
        }
    }

    /// The explicit `name`, else one derived from what the check does:
    /// `http GET /api/health`, `tcp 127.0.0.1:5432`, `command php artisan ...`.
    pub fn name(&self) -> String {
        match self {
            Check::Http { name: Some(n), .. }
            | Check::Tcp { name: Some(n), .. }
            | Check::Command { name: Some(n), .. } => n.clone(),
            Check::Http { url, .. } => {
                let path = url
                    .parse::<http::Uri>()
                    .ok()
                    .and_then(|u| u.path_and_query().map(|p| p.as_str().to_string()))
                    .unwrap_or_else(|| url.clone());
                format!("http GET {path}")
            }
            Check::Tcp { address, .. } => format!("tcp {address}"),
            Check::Command { command, .. } => {
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
        match self {
            Check::Http { timeout, .. }
            | Check::Tcp { timeout, .. }
            | Check::Command { timeout, .. } => *timeout,
        }
    }

    /// Attempts before the check counts as failed (at least 1).
    pub fn retries(&self) -> u32 {
        match self {
            Check::Http { retries, .. }
            | Check::Tcp { retries, .. }
            | Check::Command { retries, .. } => *retries,
        }
    }

    /// Pause between attempts.
    pub fn interval(&self) -> Duration {
        match self {
            Check::Http { interval, .. }
            | Check::Tcp { interval, .. }
            | Check::Command { interval, .. } => *interval,
        }
    }
}

// === durations ===

/// Like [`de_duration`], but zero is an error (a timeout or interval of nothing).
fn de_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    Timeout::deserialize(d).map(|t| t.0)
}

// === validated values ===
//
// Each newtype checks one value while it is deserialized, so toml puts the value's
// position on the error.

/// Implements `Deserialize` for a newtype over a string, through a checking function.
macro_rules! checked_str {
    ($name:ident($inner:ty), $check:expr) => {
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let check: fn(String) -> Result<$inner, String> = $check;
                checked_str(d, check).map($name)
            }
        }
    };
}

struct Dur(Duration);
checked_str!(Dur(Duration), |s| parse_duration(&s));

struct Timeout(Duration);
checked_str!(Timeout(Duration), |s| match parse_duration(&s)? {
    Duration::ZERO => Err(hinted(
        format!("duration {s:?} is zero"),
        "a timeout or interval must be longer than 0s"
    )),
    d => Ok(d),
});

/// An app or compose project name: `^[a-z0-9][a-z0-9_-]{0,62}$`.
struct Name(String);
checked_str!(Name(String), |s| {
    if is_name(&s) {
        Ok(s)
    } else {
        Err(hinted(
            format!("invalid name {s:?}"),
            "names are 1-63 characters of a-z, 0-9, '-' and '_', starting with a letter or \
             digit (no '/', no '..')",
        ))
    }
});

/// A unit, program, compose file or service name: passed as one argument to a tool.
struct Word(String);
checked_str!(Word(String), |s| {
    if s.is_empty() || s.starts_with('-') || s.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        Err(format!(
            "invalid value {s:?}: expected a non-empty name without spaces, not starting with '-'"
        ))
    } else {
        Ok(s)
    }
});

struct CheckName(String);
checked_str!(CheckName(String), |s| {
    if s.trim().is_empty() || s.chars().any(char::is_control) {
        Err(format!(
            "invalid check name {s:?}: expected a non-empty, one-line name"
        ))
    } else {
        Ok(s)
    }
});

struct Repo(String);
checked_str!(Repo(String), |s| {
    if s.trim().is_empty() || s.starts_with('-') {
        Err(hinted(
            format!("invalid repo {s:?}"),
            "use a git URL or a local path, e.g. \"git@github.com:acme/shop.git\"",
        ))
    } else {
        Ok(s)
    }
});

/// A user or group name (or numeric id).
struct Account(String);
checked_str!(Account(String), |s| {
    let ok = !s.is_empty()
        && s.len() <= 32
        && !s.starts_with('-')
        && s.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphanumeric() || "_.-".contains(c) || (c == '$' && i == s.len() - 1)
        });
    if ok {
        Ok(s)
    } else {
        Err(format!(
            "invalid user or group {s:?}: expected a name like \"www-data\" or a numeric id"
        ))
    }
});

/// An absolute, normalised directory that is not `/`.
struct DeployTo(PathBuf);
checked_str!(DeployTo(PathBuf), |s| {
    let path = PathBuf::from(&s);
    let normal = path
        .components()
        .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !path.is_absolute() {
        Err(hinted(
            format!("deploy_to {s:?} is not an absolute path"),
            "releases live under deploy_to; write it in full, e.g. \"/var/www/shop\"",
        ))
    } else if !normal || path.parent().is_none() {
        Err(format!(
            "deploy_to {s:?} must be a plain absolute directory (not '/', no '.' or '..')"
        ))
    } else {
        Ok(path)
    }
});

/// A path under the app's `shared/` directory.
struct SharedPath(String);
checked_str!(SharedPath(String), |s| {
    let path = Path::new(&s);
    let ok = !s.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(s)
    } else {
        Err(hinted(
            format!("invalid shared path {s:?}"),
            "shared files and dirs are relative to deploy_to/shared, without '..', \
             e.g. \".env\" or \"storage\"",
        ))
    }
});

/// A shell identifier not in the agent's `HOIST_` namespace.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct EnvKey(String);
checked_str!(EnvKey(String), |s| {
    let ident = s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ident {
        Err(hinted(
            format!("invalid environment variable name {s:?}"),
            "use letters, digits and '_', not starting with a digit, e.g. APP_ENV",
        ))
    } else if s.starts_with("HOIST_") {
        Err(format!(
            "{s} is set by the agent itself; the HOIST_ prefix is reserved"
        ))
    } else {
        Ok(s)
    }
});

/// A signal by name, normalised to the `SIG` form.
struct SignalName(String);
checked_str!(SignalName(String), |s| {
    let upper = s.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    match nix::sys::signal::Signal::from_str(&full) {
        Ok(_) => Ok(full),
        Err(_) => Err(hinted(
            format!("unknown signal {s:?}"),
            "use a signal name such as SIGHUP, SIGUSR1, SIGUSR2, SIGQUIT, SIGTERM or SIGWINCH",
        )),
    }
});

/// `supervisorctl -s`: a `unix://` or `http://` URL.
struct ServerUrl(String);
checked_str!(ServerUrl(String), |s| {
    if ["unix://", "http://", "https://"]
        .iter()
        .any(|p| s.len() > p.len() && s.starts_with(p))
    {
        Ok(s)
    } else {
        Err(hinted(
            format!("invalid serverurl {s:?}"),
            "use supervisord's socket or HTTP URL, e.g. \"unix:///run/supervisor.sock\"",
        ))
    }
});

/// A plain-HTTP URL with a host.
struct HttpUrl(String);
checked_str!(HttpUrl(String), |s| {
    if s.starts_with("https://") {
        return Err(hinted(
            format!("check url {s:?} uses https"),
            "checks target the app's local endpoint over plain HTTP, e.g. \
             \"http://127.0.0.1/health\"; TLS is terminated in front of it",
        ));
    }
    let with_host = s.starts_with("http://")
        && s.parse::<http::Uri>()
            .is_ok_and(|u| u.host().is_some_and(|h| !h.is_empty()));
    if with_host {
        Ok(s)
    } else {
        Err(hinted(
            format!("invalid check url {s:?}"),
            "use http://HOST[:PORT]/PATH, e.g. \"http://127.0.0.1/api/health\"",
        ))
    }
});

/// `host:port`, with IPv6 hosts in brackets.
struct HostPort(String);
checked_str!(HostPort(String), |s| {
    if is_host_port(&s) {
        Ok(s)
    } else {
        Err(hinted(
            format!("invalid address {s:?}"),
            "use host:port, e.g. \"127.0.0.1:5432\" or \"[::1]:6379\"",
        ))
    }
});

struct StatusCode(u16);

impl<'de> Deserialize<'de> for StatusCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        match u16::try_from(n) {
            Ok(code @ 100..=599) => Ok(StatusCode(code)),
            _ => Err(D::Error::custom(format!(
                "invalid expect_status {n}: expected an HTTP status code, 100-599"
            ))),
        }
    }
}

struct Retries(u32);

impl<'de> Deserialize<'de> for Retries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        match u32::try_from(n) {
            Ok(n @ 1..) => Ok(Retries(n)),
            _ => Err(D::Error::custom(hinted(
                format!("invalid retries {n}"),
                "retries counts attempts before the check fails; use 1 or more",
            ))),
        }
    }
}

struct KeepReleases(u32);

impl Default for KeepReleases {
    fn default() -> Self {
        KeepReleases(5)
    }
}

impl<'de> Deserialize<'de> for KeepReleases {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        match u32::try_from(n) {
            Ok(n @ 2..) => Ok(KeepReleases(n)),
            _ => Err(D::Error::custom(hinted(
                format!("keep_releases = {n} is too few"),
                "keep at least 2: the current release and one to roll back to",
            ))),
        }
    }
}

fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        hinted(
            format!("invalid listen address {s:?}"),
            "use IP:PORT, e.g. \"0.0.0.0:7443\", \"127.0.0.1:9464\" or \"[::]:7443\"",
        )
    })
}

fn de_socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    parse_socket_addr(&String::deserialize(d)?).map_err(D::Error::custom)
}

fn de_metrics_listen<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    match String::deserialize(d)?.as_str() {
        "" => Ok(None),
        s => parse_socket_addr(s).map(Some).map_err(D::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[tls]
ca = "ca.pem"
cert = "/etc/hoist/agent.pem"
key = "agent.key"
"#;

    fn parse_ok(text: &str) -> Config {
        match parse(text, Path::new("/etc/hoist/agent.toml")) {
            Ok(config) => config,
            Err(err) => panic!("expected a valid config, got:\n{err}"),
        }
    }

    fn errors(text: &str) -> Vec<Diagnostic> {
        match parse(text, Path::new("agent.toml")) {
            Ok(_) => panic!("expected errors for:\n{text}"),
            Err(ConfigError::Invalid { errors }) => errors,
            Err(err) => panic!("unexpected error {err}"),
        }
    }

    fn app(body: &str) -> String {
        format!(
            "{MINIMAL}\n[[app]]\nname = \"shop\"\nrepo = \"/srv/shop.git\"\ndeploy_to = \"/var/www/shop\"\n{body}"
        )
    }

    #[test]
    fn defaults_and_relative_paths() {
        let config = parse_ok(MINIMAL);
        assert_eq!(config.agent, AgentSection::default());
        assert_eq!(config.tls.ca, Path::new("/etc/hoist/ca.pem"));
        assert_eq!(config.tls.cert, Path::new("/etc/hoist/agent.pem"));
        assert_eq!(config.thresholds, Thresholds::default());
        assert!(config.apps.is_empty());

        let config = parse_ok(&format!(
            "[agent]\nstate_dir = \"state\"\nmetrics_listen = \"\"\n{MINIMAL}"
        ));
        assert_eq!(config.agent.state_dir, Path::new("/etc/hoist/state"));
        assert_eq!(config.agent.metrics_listen, None);
    }

    #[test]
    fn app_defaults() {
        let config = parse_ok(&app(""));
        let app = &config.apps[0];
        assert_eq!(app.strategy, Strategy::Symlink);
        assert_eq!(app.keep_releases, 5);
        assert_eq!(app.step_timeout, Duration::from_secs(600));
        assert_eq!(app.steps, Steps::default());
        assert!(app.services.is_empty() && app.checks.is_empty());
    }

    #[test]
    fn services_and_checks() {
        let config = parse_ok(&app(r#"
[[app.services]]
kind = "systemd"
name = "php8.2-fpm"
action = "reload"
[[app.services]]
kind = "signal"
pidfile = "run/fpm.pid"
signal = "usr2"
timeout = "5s"
[[app.checks]]
kind = "http"
url = "http://127.0.0.1:8080/api/health?deep=1"
expect_json = { status = "healthy", "checks.db" = true }
[[app.checks]]
kind = "command"
command = ["php artisan about --only=environment --json | grep -q production"]
retries = 1
interval = "0s"
"#));
        let app = &config.apps[0];
        assert_eq!(
            app.services[0],
            Service::Systemd {
                name: "php8.2-fpm".into(),
                action: SystemdAction::Reload,
                timeout: Duration::from_secs(60)
            }
        );
        assert_eq!(
            app.services[1],
            Service::Signal {
                name: None,
                pidfile: "/etc/hoist/run/fpm.pid".into(),
                signal: "SIGUSR2".into(),
                timeout: Duration::from_secs(5)
            }
        );
        assert_eq!(app.services[1].display_name(), "/etc/hoist/run/fpm.pid");
        assert_eq!(app.checks[0].name(), "http GET /api/health?deep=1");
        assert_eq!(app.checks[0].retries(), 3);
        let Check::Http { expect_json, .. } = &app.checks[0] else {
            panic!("expected an http check");
        };
        assert_eq!(expect_json["checks.db"], serde_json::Value::Bool(true));
        assert_eq!(
            app.checks[1].name(),
            "command php artisan about --only=environment --j…"
        );
        assert_eq!(app.checks[1].interval(), Duration::ZERO);
    }

    #[test]
    fn threshold_levels() {
        let t = Threshold::new(80.0, 95.0);
        assert_eq!(t.level(10.0), Level::Ok);
        assert_eq!(t.level(80.0), Level::Warn);
        assert_eq!(t.level(95.0), Level::Critical);
        assert_eq!(t.level(100.0), Level::Critical);
    }

    #[test]
    fn tagged_entries_reject_other_kinds_keys() {
        let errs = errors(&app(
            "[[app.services]]\nkind = \"systemd\"\nname = \"x\"\npidfile = \"/run/x.pid\"\n",
        ));
        assert_eq!(errs.len(), 1);
        assert_eq!((errs[0].line, errs[0].column), (14, 11));
        assert_eq!(
            errs[0].message,
            "`pidfile` is not a key of systemd services"
        );
        assert_eq!(
            errs[0].hint.as_deref(),
            Some("systemd services take: kind, name, action, timeout")
        );

        let errs = errors(&app(
            "[[app.checks]]\nkind = \"tcp\"\nurl = \"http://x/\"\n",
        ));
        let messages: Vec<&str> = errs.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "tcp checks need `address`",
                "`url` is not a key of tcp checks"
            ]
        );
    }

    #[test]
    fn reports_every_semantic_error_at_once() {
        let text = format!(
            "{MINIMAL}
[[app]]
name = \"a\"
repo = \"r\"
deploy_to = \"/srv/a\"
strategy = \"compose\"
activate = \"x\"
[[app.checks]]
kind = \"tcp\"
address = \"127.0.0.1:1\"
[[app.checks]]
kind = \"tcp\"
address = \"127.0.0.1:1\"
[[app]]
name = \"a\"
repo = \"r\"
deploy_to = \"/srv/a\"
"
        );
        let rendered: Vec<String> = errors(&text).iter().map(ToString::to_string).collect();
        assert_eq!(
            rendered,
            [
                "agent.toml:11:12: strategy = \"compose\" needs `compose_file` and `project`\n  \
                 hint: e.g. compose_file = \"compose.yaml\", project = \"shop\"",
                "agent.toml:12:12: `activate` only applies to strategy = \"command\"\n  \
                 hint: this app's strategy is \"compose\"; remove `activate` or change the strategy",
                "agent.toml:17:8: duplicate check `tcp 127.0.0.1:1` in app `a`\n  \
                 hint: the first is at line 14; give each check a distinct `name`",
                "agent.toml:20:8: duplicate app `a`\n  \
                 hint: the first `a` is at line 8; app names are unique",
                "agent.toml:22:13: deploy_to /srv/a is already app `a`'s\n  \
                 hint: every app needs its own deploy_to",
            ]
        );
    }

    #[test]
    fn io_error_names_the_file() {
        let err = load(Path::new("/nonexistent/hoist/agent.toml")).unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }));
        assert!(
            err.to_string()
                .starts_with("cannot read /nonexistent/hoist/agent.toml: ")
        );
    }

    #[test]
    fn packaged_example_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/agent.toml");
        let config = match load(&path) {
            Ok(config) => config,
            Err(err) => panic!("{err}"),
        };
        let app = &config.apps[0];
        assert_eq!(app.name, "carbex");
        let steps = &app.steps;
        let all = [
            &steps.build,
            &steps.backup,
            &steps.maintenance_on,
            &steps.migrate,
            &steps.migrate_status,
            &steps.migrate_rollback,
            &steps.restore,
            &steps.after_switch,
            &steps.maintenance_off,
        ];
        assert!(all.iter().all(|s| s.is_some()), "every step is shown");
        let kinds: Vec<&str> = app.services.iter().map(Service::kind).collect();
        assert_eq!(kinds, ["systemd", "supervisor", "signal"]);
        let kinds: Vec<&str> = app.checks.iter().map(Check::kind).collect();
        assert_eq!(kinds, ["http", "tcp", "command"]);
    }

    /// Every file under tests/fixtures/config/valid parses; every file under
    /// .../invalid fails with its first line's `# expect: LINE:COL text`.
    #[test]
    fn fixtures() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config");
        let files = |dir: &str| {
            let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
                .unwrap_or_else(|e| panic!("{dir}: {e}"))
                .map(|e| e.expect("dir entry").path())
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect();
            paths.sort();
            assert!(!paths.is_empty(), "no fixtures in {dir}");
            paths
        };
        for path in files("valid") {
            if let Err(err) = load(&path) {
                panic!("{} should be valid:\n{err}", path.display());
            }
        }
        for path in files("invalid") {
            let text = std::fs::read_to_string(&path).expect("fixture");
            let expect = text
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("# expect: "))
                .unwrap_or_else(|| {
                    panic!(
                        "{}: first line must be `# expect: LINE:COL text`",
                        path.display()
                    )
                });
            let (position, needle) = expect.split_once(' ').expect("`LINE:COL text`");
            let errs = match parse(&text, &path) {
                Ok(_) => panic!("{} should be invalid", path.display()),
                Err(ConfigError::Invalid { errors }) => errors,
                Err(err) => panic!("{}: {err}", path.display()),
            };
            let first = &errs[0];
            let rendered = first.to_string();
            assert_eq!(
                format!("{}:{}", first.line, first.column),
                position,
                "{rendered}"
            );
            assert!(
                rendered.contains(needle),
                "{}: {rendered:?} lacks {needle:?}",
                path.display()
            );
            assert!(rendered.starts_with(&format!("{}:{position}: ", path.display())));
        }
    }
}
