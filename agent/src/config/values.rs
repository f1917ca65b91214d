//! Validated values: each newtype checks one value while it is deserialized, so toml
//! puts the value's position on the error.

use std::{
    net::SocketAddr,
    path::{Component, Path, PathBuf},
    str::FromStr,
    time::Duration,
};

pub use hoist_config::parse_duration;
use hoist_config::{checked_str, hinted, is_host_port, is_name};
use serde::{Deserialize, Deserializer, de::Error as _};

// === durations ===

/// Like [`de_duration`], but zero is an error (a timeout or interval of nothing).
pub(super) fn de_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
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

pub(super) struct Dur(pub(super) Duration);
checked_str!(Dur(Duration), |s| parse_duration(&s));

pub(super) struct Timeout(pub(super) Duration);
checked_str!(Timeout(Duration), |s| match parse_duration(&s)? {
    Duration::ZERO => Err(hinted(
        format!("duration {s:?} is zero"),
        "a timeout or interval must be longer than 0s"
    )),
    d => Ok(d),
});

/// An app or compose project name: `^[a-z0-9][a-z0-9_-]{0,62}$`.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Name(pub(super) String);
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
pub(super) struct Word(pub(super) String);
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

pub(super) struct CheckName(pub(super) String);
checked_str!(CheckName(String), |s| {
    if s.trim().is_empty() || s.chars().any(char::is_control) {
        Err(format!(
            "invalid check name {s:?}: expected a non-empty, one-line name"
        ))
    } else {
        Ok(s)
    }
});

pub(super) struct Repo(pub(super) String);
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
pub(super) struct Account(pub(super) String);
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
pub(super) struct DeployTo(pub(super) PathBuf);
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
pub(super) struct SharedPath(pub(super) String);
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
pub(super) struct EnvKey(pub(super) String);
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
pub(super) struct SignalName(pub(super) String);
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
pub(super) struct ServerUrl(pub(super) String);
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
pub(super) struct HttpUrl(pub(super) String);
checked_str!(HttpUrl(String), |s| {
    let with_host = (s.starts_with("http://") || s.starts_with("https://"))
        && s.parse::<http::Uri>()
            .is_ok_and(|u| u.host().is_some_and(|h| !h.is_empty()));
    if with_host {
        Ok(s)
    } else {
        Err(hinted(
            format!("invalid check url {s:?}"),
            "use http://HOST[:PORT]/PATH or https://HOST[:PORT]/PATH, e.g. \
             \"http://127.0.0.1/api/health\"",
        ))
    }
});

/// `host:port`, with IPv6 hosts in brackets.
pub(super) struct HostPort(pub(super) String);
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

pub(super) struct StatusCode(pub(super) u16);

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

pub(super) struct Retries(pub(super) u32);

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

pub(super) struct KeepReleases(pub(super) u32);

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

pub(super) fn de_socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    parse_socket_addr(&String::deserialize(d)?).map_err(D::Error::custom)
}

pub(super) fn de_metrics_listen<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    match String::deserialize(d)?.as_str() {
        "" => Ok(None),
        s => parse_socket_addr(s).map(Some).map_err(D::Error::custom),
    }
}
