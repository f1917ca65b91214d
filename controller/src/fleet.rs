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
    str::FromStr,
    time::Duration,
};

pub use hoist_config::{Diagnostic, parse_duration};
use hoist_config::{
    Hints, checked_str, de_duration, hinted, is_host_port, is_name, line_column, render,
};
use serde::{
    Deserialize, Deserializer,
    de::{self, Error as _},
};
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

/// `[deploy]`: rollout defaults; every key is also a flag of `hoist deploy`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeployDefaults {
    pub strategy: Strategy,
    /// Hosts per batch (at least 1).
    #[serde(deserialize_with = "de_positive_amount")]
    pub batch: Amount,
    /// Canary strategy: hosts deployed first (at least 1).
    #[serde(deserialize_with = "de_positive_amount")]
    pub canary: Amount,
    /// Watch window after the canary and after each batch: checks stay green and gates
    /// hold. Zero moves on as soon as a batch's own checks pass.
    #[serde(deserialize_with = "de_duration")]
    pub bake: Duration,
    /// Fleet-wide failure budget; one more failure stops the deploy and rolls back.
    pub max_unhealthy: Amount,
    pub migrate_on: MigrateOn,
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
    #[serde(deserialize_with = "de_url")]
    pub prometheus: String,
    #[serde(deserialize_with = "de_query")]
    pub query: String,
    #[serde(deserialize_with = "de_finite")]
    pub max: f64,
}

/// `[window]`: when deploys may run, in `timezone`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Empty allows any time outside the blackout days.
    #[serde(default)]
    pub allow: Vec<AllowRule>,
    /// An IANA zone name such as `Asia/Dhaka`; converting to it is the caller's job.
    #[serde(default = "utc", deserialize_with = "de_timezone")]
    pub timezone: String,
    /// `YYYY-MM-DD` days, in `timezone`.
    #[serde(default, deserialize_with = "de_dates")]
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

// === impl Amount ===

impl Amount {
    /// A batch or canary size out of `total` hosts: percentages round up, and the
    /// result is at least 1 and at most `total` (0 only when `total` is 0).
    pub fn resolve(&self, total: usize) -> usize {
        let n = match *self {
            Amount::Count(n) => n as usize,
            Amount::Percent(p) => (total * p as usize).div_ceil(100),
        };
        n.clamp(1, total.max(1)).min(total)
    }

    /// A failure budget out of `total` hosts: percentages round down, so `0` and
    /// `"0%"` tolerate no failure; at most `total`.
    pub fn budget(&self, total: usize) -> usize {
        match *self {
            Amount::Count(n) => (n as usize).min(total),
            Amount::Percent(p) => total * p as usize / 100,
        }
    }
}

impl FromStr for Amount {
    type Err = ValueError;

    /// `"3"` or `"25%"`.
    fn from_str(s: &str) -> Result<Self, ValueError> {
        (|| -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid amount {s:?}: expected a number of hosts or a percentage, e.g. \"2\" or \"25%\""
            )
        };
        match s.strip_suffix('%') {
            Some(p) => match p.parse::<u32>() {
                Ok(p @ 0..=100) => Ok(Amount::Percent(p)),
                Ok(_) => Err(format!(
                    "invalid amount {s:?}: a percentage is at most 100%"
                )),
                Err(_) => Err(bad()),
            },
            None => s.parse().map(Amount::Count).map_err(|_| bad()),
        }
            })()
        .map_err(ValueError)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amount::Count(n) => write!(f, "{n}"),
            Amount::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Amount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of hosts or a percentage, e.g. 2 or \"25%\"")
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Amount, E> {
                u32::try_from(n)
                    .map(Amount::Count)
                    .map_err(|_| E::custom(format!("invalid amount {n}: expected 0 or more hosts")))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Amount, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

fn de_positive_amount<'de, D: Deserializer<'de>>(d: D) -> Result<Amount, D::Error> {
    match Amount::deserialize(d)? {
        Amount::Count(0) | Amount::Percent(0) => Err(D::Error::custom(hinted(
            "a batch or canary of 0 hosts would never deploy",
            "use at least 1, e.g. 1 or \"10%\"",
        ))),
        amount => Ok(amount),
    }
}

// === impl Strategy, MigrateOn ===

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::All => "all",
            Strategy::Rolling => "rolling",
            Strategy::Canary => "canary",
        }
    }
}

impl FromStr for Strategy {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        (|| -> Result<Self, String> {
            match s {
                "all" => Ok(Strategy::All),
                "rolling" => Ok(Strategy::Rolling),
                "canary" => Ok(Strategy::Canary),
                _ => Err(format!(
                    "unknown strategy {s:?}: expected all, rolling or canary"
                )),
            }
        })()
        .map_err(ValueError)
    }
}

impl MigrateOn {
    pub fn as_str(self) -> &'static str {
        match self {
            MigrateOn::First => "first",
            MigrateOn::All => "all",
            MigrateOn::None => "none",
        }
    }
}

impl FromStr for MigrateOn {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        (|| -> Result<Self, String> {
            match s {
                "first" => Ok(MigrateOn::First),
                "all" => Ok(MigrateOn::All),
                "none" => Ok(MigrateOn::None),
                _ => Err(format!(
                    "unknown migrate_on {s:?}: expected first, all or none"
                )),
            }
        })()
        .map_err(ValueError)
    }
}

// === impl Window ===

impl Window {
    /// Whether a deploy may start on `date` at `minute` after midnight, both in the
    /// window's timezone: not a blackout day, and inside an `allow` rule if any.
    pub fn permits(&self, date: Date, minute: u16) -> bool {
        let day = date.weekday();
        !self.blackout.contains(&date)
            && (self.allow.is_empty() || self.allow.iter().any(|r| r.contains(day, minute)))
    }
}

fn utc() -> String {
    "UTC".into()
}

fn de_timezone<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let ok = !s.is_empty()
        && !s.starts_with('/')
        && !s.contains("..")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-/".contains(c));
    if ok {
        Ok(s)
    } else {
        Err(D::Error::custom(hinted(
            format!("invalid timezone {s:?}"),
            "use an IANA zone name, e.g. \"UTC\", \"Europe/Berlin\" or \"Asia/Dhaka\"",
        )))
    }
}

impl AllowRule {
    /// Whether `minute` after midnight on `day` falls in this rule.
    pub fn contains(&self, day: Weekday, minute: u16) -> bool {
        let (first, last, day) = (
            self.first.to_monday_zero_offset(),
            self.last.to_monday_zero_offset(),
            day.to_monday_zero_offset(),
        );
        let in_days = if first <= last {
            first <= day && day <= last
        } else {
            day >= first || day <= last
        };
        in_days && self.start <= minute && minute < self.end
    }
}

impl FromStr for AllowRule {
    type Err = ValueError;

    /// `DAY[-DAY] [HH:MM-HH:MM]`; without times, the whole day.
    fn from_str(s: &str) -> Result<Self, ValueError> {
        (|| -> Result<Self, String> {
        let bad = |why: &str| {
            hinted(
                format!("invalid allow entry {s:?}: {why}"),
                "write DAY[-DAY] HH:MM-HH:MM, e.g. \"Tue-Thu 10:00-16:00\" or \"Mon 09:30-12:00\"",
            )
        };
        let mut parts = s.split_whitespace();
        let days = parts.next().ok_or_else(|| bad("it is empty"))?;
        let times = parts.next();
        if parts.next().is_some() {
            return Err(bad("too many parts"));
        }
        let day = |d: &str| parse_weekday(d).map_err(|e| bad(&e));
        let (first, last) = match days.split_once('-') {
            Some((a, b)) => (day(a)?, day(b)?),
            None => (day(days)?, day(days)?),
        };
        let (start, end) = match times {
            None => (0, 24 * 60),
            Some(times) => {
                let (a, b) = times.split_once('-').ok_or_else(|| bad("no time range"))?;
                (
                    minutes(a).map_err(|e| bad(&e))?,
                    minutes(b).map_err(|e| bad(&e))?,
                )
            }
        };
        if start >= end {
            return Err(bad(
                "the end is not after the start; split a window that crosses midnight in two",
            ));
        }
        Ok(AllowRule {
            first,
            last,
            start,
            end,
        })
            })()
        .map_err(ValueError)
    }
}

/// `HH:MM` (up to `24:00`) as minutes after midnight.
fn minutes(s: &str) -> Result<u16, String> {
    let parsed = s.split_once(':').and_then(|(h, m)| {
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (s.len() == 5 && m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
    });
    parsed.ok_or_else(|| format!("{s:?} is not a time HH:MM between 00:00 and 24:00"))
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (first, last) = (weekday_name(self.first), weekday_name(self.last));
        if first == last {
            write!(f, "{first}")?;
        } else {
            write!(f, "{first}-{last}")?;
        }
        let (s, e) = (self.start, self.end);
        write!(
            f,
            " {:02}:{:02}-{:02}:{:02}",
            s / 60,
            s % 60,
            e / 60,
            e % 60
        )
    }
}

impl<'de> Deserialize<'de> for AllowRule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

/// The days of the week, Monday first, with their short names.
const DAYS: [(Weekday, &str); 7] = [
    (Weekday::Monday, "Mon"),
    (Weekday::Tuesday, "Tue"),
    (Weekday::Wednesday, "Wed"),
    (Weekday::Thursday, "Thu"),
    (Weekday::Friday, "Fri"),
    (Weekday::Saturday, "Sat"),
    (Weekday::Sunday, "Sun"),
];

/// `Mon` ... `Sun`.
pub fn weekday_name(day: Weekday) -> &'static str {
    DAYS[usize::from(day.to_monday_zero_offset().unsigned_abs())].1
}

/// `Mon` ... `Sun` or full names (`monday`), any case.
fn parse_weekday(s: &str) -> Result<Weekday, String> {
    let lower = s.to_ascii_lowercase();
    DAYS.iter()
        .find(|(day, short)| {
            lower == short.to_ascii_lowercase() || lower == format!("{day:?}").to_ascii_lowercase()
        })
        .map(|(day, _)| *day)
        .ok_or_else(|| format!("{s:?} is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"))
}

// === dates ===

/// `YYYY-MM-DD`, a day that exists (years 1-9999); other spellings jiff would take
/// (`20261225`, `+002026-12-25`) are refused.
fn parse_date(s: &str) -> Result<Date, String> {
    let field = |p: &str, len: usize| {
        let digits = p.len() == len && p.bytes().all(|b| b.is_ascii_digit());
        digits.then(|| p.parse::<i16>().ok()).flatten()
    };
    let mut parts = s.split('-');
    let date = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(y), Some(m), Some(d), None) => (|| {
            let (y, m, d) = (field(y, 4)?, field(m, 2)?, field(d, 2)?);
            if y < 1 {
                return None;
            }
            Date::new(y, i8::try_from(m).ok()?, i8::try_from(d).ok()?).ok()
        })(),
        _ => None,
    };
    date.ok_or_else(|| {
        format!("invalid date {s:?}: expected an existing YYYY-MM-DD, e.g. \"2026-12-25\"")
    })
}

/// One blackout day, checked where it is written (so the error points at it).
struct DateField(Date);

impl<'de> Deserialize<'de> for DateField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_date(&text).map(DateField).map_err(D::Error::custom)
    }
}

fn de_dates<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Date>, D::Error> {
    Ok(Vec::<DateField>::deserialize(d)?
        .into_iter()
        .map(|DateField(date)| date)
        .collect())
}

// === impl Webhook ===

impl Webhook {
    /// The full URL, secret path included: for sending, never for printing.
    pub fn url(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, rest) = self.0.split_once("://").unwrap_or(("", &self.0));
        let host = rest.split('/').next().unwrap_or_default();
        write!(f, "{scheme}://{host}/…")
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

/// An `http://` or `https://` URL with a host.
fn de_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let host = ["http://", "https://"]
        .iter()
        .find_map(|p| s.strip_prefix(p));
    match host.and_then(|rest| rest.split('/').next()) {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => Ok(s),
        _ => Err(D::Error::custom(hinted(
            format!("invalid URL {s:?}"),
            "use http://HOST[:PORT]/... or https://..., e.g. \"http://127.0.0.1:9090\"",
        ))),
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
mod tests {
    use super::*;

    const TLS: &str = "[tls]\nca = \"certs/ca.pem\"\ncert = \"/abs/deployer.pem\"\nkey = \"certs/deployer.key\"\n";

    fn hosts() -> String {
        format!(
            "{TLS}
[[host]]
name = \"web-1\"
address = \"10.0.0.11:7443\"
groups = [\"web\", \"prod\"]
[[host]]
name = \"web-2\"
address = \"10.0.0.12:7443\"
groups = [\"web\"]
[[host]]
name = \"db-1\"
address = \"[2001:db8::1]:7443\"
metrics = \"10.0.1.1:9464\"
"
        )
    }

    fn parse_ok(text: &str) -> Fleet {
        parse(text, Path::new("/home/ops/fleet.toml")).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The first diagnostic, rendered.
    fn error(text: &str) -> String {
        match parse(text, Path::new("fleet.toml")) {
            Err(FleetError::Invalid { errors }) => errors[0].to_string(),
            Err(err) => panic!("unexpected error {err}"),
            Ok(_) => panic!("expected an error for:\n{text}"),
        }
    }

    #[test]
    fn spec_example() {
        let fleet = parse_ok(&format!(
            "{TLS}
[[host]]
name = \"web-1\"
address = \"10.0.0.11:7443\"
groups = [\"web\", \"prod\"]

[deploy]
strategy = \"rolling\"
batch = \"25%\"
canary = \"5%\"
bake = \"5m\"
max_unhealthy = 0
migrate_on = \"first\"

[[gate]]
prometheus = \"http://127.0.0.1:9090\"
query = 'sum(rate(http_requests_total{{status=~\"5..\"}}[5m])) / sum(rate(http_requests_total[5m]))'
max = 0.01

[window]
allow = [\"Tue-Thu 10:00-16:00\"]
timezone = \"Asia/Dhaka\"
blackout = [\"2026-12-16\", \"2026-12-25\"]

[notify]
webhooks = [\"https://hooks.slack.com/services/T000/B000/XXXX\"]
"
        ));
        assert_eq!(fleet.tls.ca, Path::new("/home/ops/certs/ca.pem"));
        assert_eq!(fleet.tls.cert, Path::new("/abs/deployer.pem"));
        assert_eq!(fleet.hosts[0].groups, ["web", "prod"]);
        assert_eq!(
            fleet.deploy,
            DeployDefaults {
                strategy: Strategy::Rolling,
                batch: Amount::Percent(25),
                canary: Amount::Percent(5),
                bake: Duration::from_secs(300),
                max_unhealthy: Amount::Count(0),
                migrate_on: MigrateOn::First,
            }
        );
        assert_eq!(fleet.gates[0].max, 0.01);
        let window = fleet.window.expect("window");
        assert_eq!(window.allow[0].to_string(), "Tue-Thu 10:00-16:00");
        assert_eq!(window.timezone, "Asia/Dhaka");
        assert_eq!(window.blackout[1].to_string(), "2026-12-25");
        let hook = &fleet.notify.webhooks[0];
        assert_eq!(
            hook.url(),
            "https://hooks.slack.com/services/T000/B000/XXXX"
        );
        assert_eq!(format!("{hook:?}"), "Webhook(https://hooks.slack.com/…)");
    }

    #[test]
    fn defaults() {
        let fleet = parse_ok(&hosts());
        assert_eq!(fleet.deploy, DeployDefaults::default());
        assert!(fleet.gates.is_empty() && fleet.window.is_none());
        assert!(fleet.notify.webhooks.is_empty());
        assert_eq!(fleet.hosts[2].metrics.as_deref(), Some("10.0.1.1:9464"));
        let window = parse_ok(&format!("{}[window]\n", hosts()))
            .window
            .expect("window");
        assert_eq!(window.timezone, "UTC");
    }

    #[test]
    fn select() {
        let fleet = parse_ok(&hosts());
        let names = |hosts: &[&str], group| -> Result<Vec<String>, String> {
            let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
            fleet
                .select(&hosts, group)
                .map(|hs| hs.iter().map(|h| h.name.clone()).collect())
                .map_err(|e| e.to_string())
        };
        assert_eq!(names(&[], None).unwrap(), ["web-1", "web-2", "db-1"]);
        assert_eq!(names(&["db-1", "web-1"], None).unwrap(), ["web-1", "db-1"]);
        assert_eq!(names(&[], Some("web")).unwrap(), ["web-1", "web-2"]);
        assert_eq!(names(&["web-2", "db-1"], Some("web")).unwrap(), ["web-2"]);
        assert_eq!(
            names(&["web-9"], None).unwrap_err(),
            "unknown host `web-9`; the fleet file lists: web-1, web-2, db-1"
        );
        assert_eq!(
            names(&[], Some("staging")).unwrap_err(),
            "unknown group `staging`; the fleet file's groups are: prod, web"
        );
        assert_eq!(
            names(&["db-1"], Some("prod")).unwrap_err(),
            "none of the hosts db-1 is in group `prod`"
        );
    }

    #[test]
    fn amounts() {
        assert_eq!("3".parse(), Ok(Amount::Count(3)));
        assert_eq!("25%".parse(), Ok(Amount::Percent(25)));
        assert!("101%".parse::<Amount>().is_err() && "x%".parse::<Amount>().is_err());
        assert_eq!(Amount::Percent(25).resolve(10), 3);
        assert_eq!(Amount::Percent(5).resolve(10), 1);
        assert_eq!(Amount::Percent(100).resolve(10), 10);
        assert_eq!(Amount::Count(50).resolve(10), 10);
        assert_eq!(Amount::Count(2).resolve(0), 0);
        assert_eq!(Amount::Count(0).budget(10), 0);
        assert_eq!(Amount::Percent(10).budget(15), 1);
        assert_eq!(Amount::Count(20).budget(15), 15);
        assert_eq!(Amount::Percent(25).to_string(), "25%");
    }

    #[test]
    fn windows() {
        let rule: AllowRule = "tue-thu 10:00-16:00".parse().unwrap();
        assert!(rule.contains(Weekday::Wednesday, 10 * 60));
        assert!(!rule.contains(Weekday::Wednesday, 16 * 60));
        assert!(!rule.contains(Weekday::Monday, 12 * 60));
        let wrap: AllowRule = "Fri-Mon".parse().unwrap();
        assert!(wrap.contains(Weekday::Sunday, 0) && wrap.contains(Weekday::Monday, 23 * 60 + 59));
        assert!(!wrap.contains(Weekday::Tuesday, 12 * 60));
        assert_eq!(
            "Sunday 22:00-24:00"
                .parse::<AllowRule>()
                .unwrap()
                .to_string(),
            "Sun 22:00-24:00"
        );
        for bad in [
            "",
            "Tue-Thu 16:00-10:00",
            "Tue-Thu 10:00",
            "Tus 10:00-11:00",
            "Mon 9:00-10:00",
            "Mon 10:00-24:01",
        ] {
            assert!(bad.parse::<AllowRule>().is_err(), "{bad}");
        }

        let date: Date = parse_date("2024-02-29").unwrap();
        assert_eq!(date.weekday(), Weekday::Thursday);
        assert_eq!(parse_date("2026-12-25").unwrap().weekday(), Weekday::Friday);
        for bad in [
            "2023-02-29",
            "2026-13-01",
            "2026-1-01",
            "26-12-25",
            "2026-12-25x",
            "20261225",
            "+002026-12-25",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
        let window = Window {
            allow: vec![rule],
            timezone: utc(),
            blackout: vec!["2026-12-16".parse().unwrap()],
        };
        assert!(window.permits("2026-12-15".parse().unwrap(), 11 * 60)); // a Tuesday
        assert!(!window.permits("2026-12-16".parse().unwrap(), 11 * 60)); // blackout
        assert!(!window.permits("2026-12-18".parse().unwrap(), 11 * 60)); // a Friday
    }

    #[test]
    fn diagnostics() {
        let cases = [
            (
                "[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\nverify = false\n",
                "fleet.toml:5:1: unknown key `verify`\n  hint: valid keys here: ca, cert, key",
            ),
            (
                "[[host]]\nname = \"web-1\"\naddress = \"10.0.0.11:7443\"\n",
                "fleet.toml:1:1: missing key `tls`\n  hint: add a [tls] table",
            ),
            (
                TLS,
                "fleet.toml:1:1: the fleet file lists no hosts\n  hint: add one [[host]] table",
            ),
            (
                &format!(
                    "{}[[host]]\nname = \"web-1\"\naddress = \"10.0.0.13:7443\"\n",
                    hosts()
                ),
                "fleet.toml:19:8: duplicate host `web-1`\n  hint: the first `web-1` is at line 7",
            ),
            (
                &format!(
                    "{}[[host]]\nname = \"web-3\"\naddress = \"10.0.0.11:7443\"\n",
                    hosts()
                ),
                "fleet.toml:20:11: address 10.0.0.11:7443 is already host `web-1`'s",
            ),
            (
                &format!("{TLS}[[host]]\nname = \"Web 1\"\naddress = \"10.0.0.11:7443\"\n"),
                "fleet.toml:6:8: invalid name \"Web 1\"",
            ),
            (
                &format!("{TLS}[[host]]\nname = \"web-1\"\naddress = \"10.0.0.11\"\n"),
                "fleet.toml:7:11: invalid address \"10.0.0.11\": expected host:port",
            ),
            (
                &format!("{}[deploy]\nstrategy = \"blue-green\"\n", hosts()),
                "fleet.toml:19:12: unknown value `blue-green`\n  hint: valid values: all, rolling, canary",
            ),
            (
                &format!("{}[deploy]\nbatch = \"0%\"\n", hosts()),
                "fleet.toml:19:9: a batch or canary of 0 hosts would never deploy",
            ),
            (
                &format!("{}[deploy]\nmax_unhealthy = \"150%\"\n", hosts()),
                "fleet.toml:19:17: invalid amount \"150%\": a percentage is at most 100%",
            ),
            (
                &format!("{}[deploy]\nbake = \"5 minutes\"\n", hosts()),
                "fleet.toml:19:8: invalid duration \"5 minutes\"",
            ),
            (
                &format!("{}[deploy]\nmigrate_on = \"some\"\n", hosts()),
                "fleet.toml:19:14: unknown value `some`\n  hint: valid values: first, all, none",
            ),
            (
                &format!(
                    "{}[[gate]]\nprometheus = \"localhost:9090\"\nquery = \"up\"\nmax = 1\n",
                    hosts()
                ),
                "fleet.toml:19:14: invalid URL \"localhost:9090\"",
            ),
            (
                &format!(
                    "{}[[gate]]\nprometheus = \"http://p:9090\"\nquery = \"up\"\nmin = 1\n",
                    hosts()
                ),
                "fleet.toml:21:1: unknown key `min`\n  hint: valid keys here: prometheus, query, max",
            ),
            (
                &format!("{}[window]\nallow = [\"Tue-Thu 16:00-10:00\"]\n", hosts()),
                "fleet.toml:19:9: invalid allow entry \"Tue-Thu 16:00-10:00\": the end is not after the start",
            ),
            (
                &format!("{}[window]\nblackout = [\"2026-02-30\"]\n", hosts()),
                "fleet.toml:19:12: invalid date \"2026-02-30\"",
            ),
            (
                &format!("{}[window]\ntimezone = \"\"\n", hosts()),
                "fleet.toml:19:12: invalid timezone \"\"",
            ),
            (
                &format!("{}[notify]\nwebhooks = [\"hooks.slack.com/x\"]\n", hosts()),
                "fleet.toml:19:12: invalid URL \"hooks.slack.com/x\"",
            ),
        ];
        for (text, want) in cases {
            let got = error(text);
            assert!(got.starts_with(want), "got:\n{got}\nwant a prefix:\n{want}");
        }
    }

    #[test]
    fn io_error() {
        let err = load(Path::new("/nonexistent/fleet.toml")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read the fleet file /nonexistent/fleet.toml (pass --fleet PATH or set HOIST_FLEET)"
        );
        assert!(std::error::Error::source(&err).is_some());
    }
}
