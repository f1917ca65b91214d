//! The fleet file, `fleet.toml` (SPEC §7): the operator's TLS material, the hosts and
//! their groups, deploy defaults, Prometheus gates, deploy windows and notifications.
//!
//! Parsing is strict in the same way as the agent's config: unknown keys are errors,
//! values are checked while deserializing (so toml positions the error on the value),
//! and a second pass over `toml::Spanned` values finds duplicates. Every error prints as
//! `PATH:LINE:COL: MESSAGE`, with a hint on the next line where one helps. Relative
//! `[tls]` paths resolve against the fleet file's directory.

use std::{
    collections::HashMap,
    fmt,
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

pub use hoist_config::{Diagnostic, parse_duration};
use hoist_config::{
    Hints, checked_str, de_duration, hinted, is_host_port, is_name, line_column, render,
};
use serde::{Deserialize, Deserializer, de::Error as _};
use toml::Spanned;

// === errors ===

/// A value that does not parse (a strategy, amount, allow rule on the command line or
/// in the fleet file): the message says what is wrong, with a hint where one helps.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(pub String);

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("cannot read the fleet file {} (pass --fleet PATH or set HOIST_FLEET)", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render(errors))]
    Invalid { errors: Vec<Diagnostic> },
    #[error("unknown host `{name}`; the fleet file lists: {known}")]
    UnknownHost { name: String, known: String },
    #[error("unknown group `{name}`; {known}")]
    UnknownGroup { name: String, known: String },
    #[error("none of the hosts {hosts} is in group `{group}`")]
    EmptySelection { hosts: String, group: String },
}

// === the fleet ===

#[derive(Clone, Debug, PartialEq)]
pub struct Fleet {
    pub tls: FleetTls,
    pub hosts: Vec<Host>,
    pub deploy: DeployDefaults,
    pub gates: Vec<Gate>,
    pub window: Option<Window>,
    pub notify: Notify,
}

/// `[tls]`: the fleet CA and the operator's client certificate and key (PEM).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A `[[host]]`: one hoistd agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    /// The agent's gRPC `host:port`; `host` must be a SAN of the agent's certificate.
    pub address: String,
    pub groups: Vec<String>,
    /// The agent's metrics `host:port`, when it is not the address's host on 9464.
    pub metrics: Option<String>,
}

/// Hosts whose jobs run at once in a phase unless `[deploy] concurrency` or
/// `--concurrency` says otherwise: enough for `--strategy all` across 100 hosts in a
/// few rounds, few enough for one controller's connections and the agents' CPU.
pub const DEFAULT_CONCURRENCY: usize = 64;
/// The most a rollout runs at once (each job holds a connection and a stream).
pub const MAX_CONCURRENCY: usize = 1024;

/// `[deploy]`: rollout defaults; every key is also a flag of `hoist deploy`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeployDefaults {
    pub strategy: Strategy,
    /// Hosts per batch (at least 1).
    #[serde(deserialize_with = "values::de_positive_amount")]
    pub batch: Amount,
    /// Canary strategy: hosts deployed first (at least 1).
    #[serde(deserialize_with = "values::de_positive_amount")]
    pub canary: Amount,
    /// Watch window after the canary and after each batch: checks stay green and gates
    /// hold. Zero moves on as soon as a batch's own checks pass.
    #[serde(deserialize_with = "de_duration")]
    pub bake: Duration,
    /// Fleet-wide failure budget; one more failure stops the deploy and rolls back.
    pub max_unhealthy: Amount,
    pub migrate_on: MigrateOn,
    /// Hosts whose jobs run at once within a phase (and when rolling back).
    #[serde(deserialize_with = "values::de_concurrency")]
    pub concurrency: usize,
}

impl Default for DeployDefaults {
    fn default() -> Self {
        DeployDefaults {
            strategy: Strategy::Rolling,
            batch: Amount::Percent(25),
            canary: Amount::Count(1),
            bake: Duration::ZERO,
            max_unhealthy: Amount::Count(0),
            migrate_on: MigrateOn::First,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }
}

/// How a deploy moves through the selected hosts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Every host at once.
    All,
    /// Batches, each followed by the bake.
    #[default]
    Rolling,
    /// The canary hosts, the bake, then batches.
    Canary,
}

/// Which hosts run the app's migrations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MigrateOn {
    /// The first host, before any other switches; the rest skip them.
    #[default]
    First,
    All,
    None,
}

/// A number of hosts, absolute or a percentage of the hosts selected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Amount {
    Count(u32),
    /// 0-100.
    Percent(u32),
}

/// A `[[gate]]`: a Prometheus query whose value must stay at or below `max` during
/// the bake.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gate {
    /// How the gate is shown (`Error rate < 1%`); without one, `QUERY <= MAX`.
    #[serde(default, deserialize_with = "de_gate_name")]
    pub name: Option<String>,
    #[serde(deserialize_with = "de_url")]
    pub prometheus: String,
    #[serde(deserialize_with = "de_query")]
    pub query: String,
    #[serde(deserialize_with = "de_finite")]
    pub max: f64,
    /// What a query that returns no data (or NaN) means.
    #[serde(default)]
    pub on_empty: OnEmpty,
}

/// A gate's `on_empty`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnEmpty {
    /// No data fails the gate (with a hint): silence from Prometheus is not health.
    #[default]
    Fail,
    /// No data holds, e.g. an error ratio before the first error.
    Pass,
}

/// `[window]`: when deploys may run, in `timezone`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Empty allows any time outside the blackout days.
    #[serde(default)]
    pub allow: Vec<AllowRule>,
    /// An IANA zone name such as `Asia/Dhaka`; converting to it is the caller's job.
    #[serde(default = "window::utc", deserialize_with = "window::de_timezone")]
    pub timezone: String,
    /// `YYYY-MM-DD` days, in `timezone`.
    #[serde(default, deserialize_with = "window::de_dates")]
    pub blackout: Vec<Date>,
}

/// An `allow` entry such as `Tue-Thu 10:00-16:00`: a day range (it may wrap, as in
/// `Fri-Mon`) and a time range within each of those days.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllowRule {
    pub first: Weekday,
    pub last: Weekday,
    /// Minutes after midnight, inclusive.
    pub start: u16,
    /// Minutes after midnight, exclusive; at most 24:00.
    pub end: u16,
}

/// Calendar dates and weekdays are jiff's (`[window]` blackout days, allow rules).
pub use jiff::civil::{Date, Weekday};

/// `[notify]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Notify {
    /// Slack-compatible JSON webhooks, told about every deploy and rollback.
    pub webhooks: Vec<Webhook>,
}

/// A webhook URL. Its path is usually a secret token, so `Debug` and `Display` show
/// only the scheme and host.
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook(String);

// === loading ===

/// Reads and validates the fleet file at `path`.
pub fn load(path: &Path) -> Result<Fleet, FleetError> {
    let text = std::fs::read_to_string(path).map_err(|source| FleetError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Validates fleet text. `origin` names the file in diagnostics, and relative paths
/// resolve against its directory.
pub fn parse(text: &str, origin: &Path) -> Result<Fleet, FleetError> {
    let diagnostic = |span: Range<usize>, message: String, hint: Option<String>| {
        Diagnostic::at(origin, text, span.start, message, hint)
    };
    let raw: RawFleet = toml::from_str(text).map_err(|err| FleetError::Invalid {
        errors: vec![Diagnostic::from_toml(origin, text, &err, &HINTS)],
    })?;

    let mut errors = Vec::new();
    if raw.hosts.is_empty() {
        let hint = "add one [[host]] table per agent, with `name` and `address`";
        errors.push(diagnostic(
            0..0,
            "the fleet file lists no hosts".into(),
            Some(hint.into()),
        ));
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut addresses: HashMap<&str, &str> = HashMap::new();
    for host in &raw.hosts {
        let (name, address) = (
            host.name.get_ref().0.as_str(),
            host.address.get_ref().0.as_str(),
        );
        if let Some(line) = names.get(name) {
            let hint = format!("the first `{name}` is at line {line}; host names are unique");
            let message = format!("duplicate host `{name}`");
            errors.push(diagnostic(host.name.span(), message, Some(hint)));
        } else {
            names.insert(name, line_column(text, host.name.span().start).0);
        }
        if let Some(other) = addresses.insert(address, name) {
            let message = format!("address {address} is already host `{other}`'s");
            errors.push(diagnostic(host.address.span(), message, None));
        }
    }
    if !errors.is_empty() {
        return Err(FleetError::Invalid { errors });
    }

    let base = origin.parent().unwrap_or(Path::new(""));
    Ok(Fleet {
        tls: FleetTls {
            ca: base.join(&raw.tls.ca),
            cert: base.join(&raw.tls.cert),
            key: base.join(&raw.tls.key),
        },
        hosts: raw
            .hosts
            .into_iter()
            .map(|h| Host {
                name: h.name.into_inner().0,
                address: h.address.into_inner().0,
                groups: h.groups.into_iter().map(|g| g.0).collect(),
                metrics: h.metrics.map(|m| m.0),
            })
            .collect(),
        deploy: raw.deploy,
        gates: raw.gates,
        window: raw.window,
        notify: raw.notify,
    })
}

/// The fleet file's own hints for toml's and serde's errors.
const HINTS: Hints = Hints {
    missing_key: &[(
        "tls",
        "add a [tls] table with the CA and your client certificate and key \
         (`hoist ca issue --user NAME --role deployer` makes them)",
    )],
    ..Hints::NONE
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    tls: FleetTls,
    #[serde(default, rename = "host")]
    hosts: Vec<RawHost>,
    #[serde(default)]
    deploy: DeployDefaults,
    #[serde(default, rename = "gate")]
    gates: Vec<Gate>,
    window: Option<Window>,
    #[serde(default)]
    notify: Notify,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    name: Spanned<Name>,
    address: Spanned<HostPort>,
    #[serde(default)]
    groups: Vec<Name>,
    metrics: Option<HostPort>,
}

// === impl Fleet ===

impl Fleet {
    /// The hosts a command targets, in fleet-file order: those named in `hosts` (all
    /// when empty), narrowed to `group` when given. Unknown names are errors.
    pub fn select(&self, hosts: &[String], group: Option<&str>) -> Result<Vec<&Host>, FleetError> {
        if let Some(name) = hosts
            .iter()
            .find(|n| !self.hosts.iter().any(|h| &h.name == *n))
        {
            let known: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
            return Err(FleetError::UnknownHost {
                name: name.clone(),
                known: known.join(", "),
            });
        }
        if let Some(group) = group
            && !self
                .hosts
                .iter()
                .any(|h| h.groups.iter().any(|g| g == group))
        {
            let mut known: Vec<&str> = self
                .hosts
                .iter()
                .flat_map(|h| h.groups.iter().map(String::as_str))
                .collect();
            known.sort_unstable();
            known.dedup();
            let known = if known.is_empty() {
                "the fleet file defines no groups".to_string()
            } else {
                format!("the fleet file's groups are: {}", known.join(", "))
            };
            return Err(FleetError::UnknownGroup {
                name: group.to_string(),
                known,
            });
        }
        let selected: Vec<&Host> = self
            .hosts
            .iter()
            .filter(|h| hosts.is_empty() || hosts.contains(&h.name))
            .filter(|h| group.is_none_or(|g| h.groups.iter().any(|hg| hg == g)))
            .collect();
        match (selected.is_empty(), group) {
            (true, Some(group)) => Err(FleetError::EmptySelection {
                hosts: hosts.join(", "),
                group: group.to_string(),
            }),
            _ => Ok(selected),
        }
    }
}

mod values;
pub use values::parse_concurrency;
mod window;

pub use window::weekday_name;

// === impl Webhook ===

impl Webhook {
    /// The full URL, secret path included: for sending, never for printing.
    pub fn url(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::output::redact::host_only(&self.0))
    }
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Webhook({self})")
    }
}

impl<'de> Deserialize<'de> for Webhook {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        de_url(d).map(Webhook)
    }
}

// === checked values ===

/// An `http://` or `https://` URL with a host, as [`http::Uri`] parses it. The error
/// never shows a password from the URL.
fn de_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let ok = s.parse::<http::Uri>().is_ok_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.authority().is_some_and(|a| !a.host().is_empty())
    });
    if ok {
        Ok(s)
    } else {
        Err(D::Error::custom(hinted(
            format!("invalid URL {:?}", crate::output::redact::userinfo(&s)),
            "use http://HOST[:PORT]/... or https://..., e.g. \"http://127.0.0.1:9090\"",
        )))
    }
}

fn de_query<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() {
        Err(D::Error::custom("empty query; write a PromQL expression"))
    } else {
        Ok(s)
    }
}

fn de_gate_name<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    if s.trim().is_empty() || s.chars().count() > 100 || s.chars().any(char::is_control) {
        Err(D::Error::custom(hinted(
            format!("invalid gate name {s:?}"),
            "a gate name is 1-100 printable characters, e.g. \"Error rate < 1%\"",
        )))
    } else {
        Ok(Some(s))
    }
}

fn de_finite<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    match f64::deserialize(d)? {
        max if max.is_finite() => Ok(max),
        max => Err(D::Error::custom(format!(
            "invalid max {max}: expected a finite number"
        ))),
    }
}

/// A host or group name: `^[a-z0-9][a-z0-9_-]{0,62}$`, like app names.
struct Name(String);

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, |s| {
            if is_name(&s) {
                Ok(Name(s))
            } else {
                Err(hinted(
                    format!("invalid name {s:?}"),
                    "names are 1-63 characters of a-z, 0-9, '-' and '_', starting with a letter \
                     or digit",
                ))
            }
        })
    }
}

/// `host:port`, with IPv6 hosts in brackets.
struct HostPort(String);

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, |s| {
            if is_host_port(&s) {
                Ok(HostPort(s))
            } else {
                Err(hinted(
                    format!("invalid address {s:?}: expected host:port"),
                    "include the port, e.g. \"10.0.0.11:7443\", \"web-1.example.com:7443\" or \
                     \"[2001:db8::11]:7443\"",
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests;
