//! Rules shared by hoist's TOML files: diagnostics with file:line:column and hints, durations.
//!
//! The agent's `agent.toml` and the controller's `fleet.toml` are parsed the same way:
//! values are checked while serde deserializes them (so toml puts the value's position on
//! the error), a check's error carries its hint inside the text with [`hinted`], and
//! [`Diagnostic::from_toml`] turns toml's error into `PATH:LINE:COL: MESSAGE` with the
//! hint on the next line. What differs between the files (their own hints) comes in
//! through [`Hints`].

use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Deserializer, de::Error as _};

mod pattern;
pub use pattern::{MAX_PATTERN, Pattern, PatternError};

// === diagnostics ===

/// One problem in a TOML file, at a 1-based line and column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A problem at byte `offset` of `text`, the contents of the file at `path`.
    pub fn at(
        path: &Path,
        text: &str,
        offset: usize,
        message: impl Into<String>,
        hint: Option<String>,
    ) -> Diagnostic {
        let (line, column) = line_column(text, offset);
        Diagnostic {
            path: path.to_path_buf(),
            line,
            column,
            message: message.into(),
            hint,
        }
    }

    /// toml's error for `text` (a syntax error, or a value's check failing while it is
    /// deserialized), explained for an operator by [`explain`] with the file's `hints`.
    pub fn from_toml(path: &Path, text: &str, err: &toml::de::Error, hints: &Hints) -> Diagnostic {
        let (message, hint) = explain(err.message(), hints);
        Diagnostic::at(path, text, err.span().map_or(0, |s| s.start), message, hint)
    }
}

/// `PATH:LINE:COL: MESSAGE`, then `\n  hint: HINT` when there is a hint.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (path, line, column) = (self.path.display(), self.line, self.column);
        write!(f, "{path}:{line}:{column}: {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Diagnostics one after another, a line each (and a line for each hint): the text of
/// an error that holds them.
pub fn render(errors: &[Diagnostic]) -> String {
    let lines: Vec<String> = errors.iter().map(Diagnostic::to_string).collect();
    lines.join("\n")
}

/// Separates a message from its hint inside a serde error, which carries only text.
const HINT: &str = "\nhint: ";

/// A check's error message with a hint, as one text for serde's `Error::custom`;
/// [`explain`] separates them again.
pub fn hinted(message: impl fmt::Display, hint: impl fmt::Display) -> String {
    format!("{message}{HINT}{hint}")
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

// === explaining serde's and toml's messages ===

/// A file's own hints, on top of the ones [`explain`] gives for any file.
#[derive(Clone, Copy, Debug, Default)]
pub struct Hints {
    /// The hint for an unknown key, given the keys the table takes (`a, b, c`), when the
    /// file knows better than `valid keys here: a, b, c`.
    pub unknown_key: Option<fn(&str) -> Option<String>>,
    /// Hints for missing keys: `(key, hint)`.
    pub missing_key: &'static [(&'static str, &'static str)],
    /// Hints for messages matched whole: `(message, hint)`.
    pub message: &'static [(&'static str, &'static str)],
}

impl Hints {
    /// No hints of the file's own.
    pub const NONE: Hints = Hints {
        unknown_key: None,
        missing_key: &[],
        message: &[],
    };
}

/// Rewrites serde's and toml's messages for an operator: "key" instead of "field", the
/// expected keys or values as a hint, the hint of a [`hinted`] message split off, and the
/// file's own `hints`. Returns the message and its hint.
pub fn explain(message: &str, hints: &Hints) -> (String, Option<String>) {
    if let Some((message, hint)) = message.split_once(HINT) {
        return (message.to_string(), Some(hint.to_string()));
    }
    let expected = |rest: &str| {
        rest.strip_prefix("one of ")
            .unwrap_or(rest)
            .replace('`', "")
    };
    let lookup = |table: &[(&str, &str)], key: &str| {
        table
            .iter()
            .find_map(|(k, hint)| (*k == key).then(|| hint.to_string()))
    };
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((key, rest)) = rest.split_once('`')
    {
        let keys = expected(
            rest.trim_start_matches(", expected ")
                .trim_start_matches(", "),
        );
        let hint = match hints.unknown_key.and_then(|hint| hint(&keys)) {
            Some(hint) => hint,
            None if keys == "there are no fields" => "this table takes no keys".to_string(),
            None => format!("valid keys here: {keys}"),
        };
        return (format!("unknown key `{key}`"), Some(hint));
    }
    if let Some(rest) = message.strip_prefix("unknown variant `")
        && let Some((value, rest)) = rest.split_once("`, expected ")
    {
        let values = expected(rest);
        return (
            format!("unknown value `{value}`"),
            Some(format!("valid values: {values}")),
        );
    }
    if let Some(key) = message
        .strip_prefix("missing field `")
        .and_then(|k| k.strip_suffix('`'))
    {
        return (
            format!("missing key `{key}`"),
            lookup(hints.missing_key, key),
        );
    }
    if let Some(hint) = lookup(hints.message, message) {
        return (message.to_string(), Some(hint));
    }
    match message.split_once('\n') {
        Some((first, rest)) => (first.to_string(), Some(rest.replace('\n', "; "))),
        None => (message.to_string(), None),
    }
}

// === durations ===

/// Parses `"500ms"`, `"30s"`, `"5m"`, `"1h"`, `"1h30m"`, `"2d"`: numbers with units,
/// largest unit first, each unit at most once.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const UNITS: [(&str, u64); 5] = [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let bad = || {
        format!(
            "invalid duration {s:?}: expected a number and a unit (ms, s, m, h, d), \
             e.g. \"500ms\", \"30s\", \"5m\", \"1h30m\""
        )
    };
    let mut rest = s;
    let mut total: u64 = 0;
    let mut last_unit = None;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let letters = rest[digits..]
            .bytes()
            .take_while(u8::is_ascii_alphabetic)
            .count();
        let (number, unit) = (&rest[..digits], &rest[digits..digits + letters]);
        rest = &rest[digits + letters..];
        let n: u64 = number.parse().map_err(|_| bad())?;
        let index = UNITS.iter().position(|(u, _)| *u == unit).ok_or_else(bad)?;
        if last_unit.is_some_and(|last| index <= last) {
            return Err(bad());
        }
        last_unit = Some(index);
        total = n
            .checked_mul(UNITS[index].1)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(bad)?;
    }
    Ok(Duration::from_millis(total))
}

/// Serde helper for a duration field, through [`parse_duration`]:
/// `#[serde(deserialize_with = "hoist_config::de_duration")]`.
pub fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    checked_str(d, |s| parse_duration(&s))
}

// === checked values ===

/// Deserializes a string and checks it while it is deserialized, so toml puts the
/// value's position on the error; `check`'s error (a [`hinted`] one keeps its hint)
/// becomes serde's.
pub fn checked_str<'de, D: Deserializer<'de>, T>(
    d: D,
    check: impl FnOnce(String) -> Result<T, String>,
) -> Result<T, D::Error> {
    check(String::deserialize(d)?).map_err(D::Error::custom)
}

/// An app, compose project, host or group name: `^[a-z0-9][a-z0-9_-]{0,62}$`.
pub fn is_name(s: &str) -> bool {
    s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// `host:port` with a port above 0 and IPv6 hosts in brackets, e.g. `10.0.0.11:7443`,
/// `web-1.example.com:7443` or `[2001:db8::11]:7443`. The host is not resolved.
pub fn is_host_port(s: &str) -> bool {
    s.rsplit_once(':').is_some_and(|(host, port)| {
        let host_ok = match host.strip_prefix('[') {
            Some(v6) => v6
                .strip_suffix(']')
                .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
            None => !host.is_empty() && !host.contains(':') && !host.contains(char::is_whitespace),
        };
        host_ok && port.parse::<u16>().is_ok_and(|p| p > 0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("500ms", 500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("1h30m", 5_400_000),
            ("1d2h3m4s5ms", 93_784_005),
            ("0s", 0),
        ];
        for (text, ms) in ok {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        for bad in [
            "",
            "5",
            "30",
            "s",
            "1.5s",
            "5 m",
            "5x",
            "30m1h",
            "1m1h",
            "1m1m",
            "-1s",
            "99999999999999999999d",
        ] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(
                err.contains(&format!("{bad:?}")) && err.contains("\"1h30m\""),
                "{err}"
            );
        }
    }

    #[test]
    fn de_duration_positions_the_error_on_the_value() {
        #[derive(Debug, Deserialize)]
        struct T {
            #[serde(deserialize_with = "de_duration")]
            bake: Duration,
        }
        let t: T = toml::from_str("bake = \"1h30m\"").expect("valid");
        assert_eq!(t.bake, Duration::from_secs(5400));
        let text = "\nbake = \"5 minutes\"\n";
        let err = toml::from_str::<T>(text).expect_err("invalid");
        let d = Diagnostic::from_toml(Path::new("f.toml"), text, &err, &Hints::NONE);
        assert!(
            d.to_string()
                .starts_with("f.toml:2:8: invalid duration \"5 minutes\""),
            "{d}"
        );
    }

    #[test]
    fn display_and_render() {
        let d = |hint: Option<&str>| Diagnostic {
            path: "a.toml".into(),
            line: 3,
            column: 7,
            message: "bad".into(),
            hint: hint.map(Into::into),
        };
        assert_eq!(d(None).to_string(), "a.toml:3:7: bad");
        assert_eq!(
            render(&[d(Some("fix it")), d(None)]),
            "a.toml:3:7: bad\n  hint: fix it\na.toml:3:7: bad"
        );
    }

    #[test]
    fn line_columns() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 9), (2, 3)); // after the two-byte é
        assert_eq!(line_column(text, 999), (3, 1));
    }

    #[test]
    fn explanations() {
        let none = |m: &str| explain(m, &Hints::NONE);
        let pair = |m: &str, h: Option<&str>| (m.to_string(), h.map(String::from));
        assert_eq!(
            none(&hinted("invalid x", "use y")),
            pair("invalid x", Some("use y"))
        );
        assert_eq!(
            none("unknown field `verify`, expected one of `ca`, `cert`, `key`"),
            pair(
                "unknown key `verify`",
                Some("valid keys here: ca, cert, key")
            )
        );
        assert_eq!(
            none("unknown field `x`, there are no fields"),
            pair("unknown key `x`", Some("this table takes no keys"))
        );
        assert_eq!(
            none("unknown variant `a`b`, expected `c` or `d`"),
            pair("unknown value `a`b`", Some("valid values: c or d"))
        );
        assert_eq!(none("missing field `tls`"), pair("missing key `tls`", None));
        assert_eq!(
            none("TOML parse error\nexpected `=`\n"),
            pair("TOML parse error", Some("expected `=`; "))
        );

        const OWN: Hints = Hints {
            unknown_key: Some(|keys| keys.starts_with("kind, ").then(|| "by kind".into())),
            missing_key: &[("tls", "add [tls]")],
            message: &[("invalid type: map, expected a sequence", "write [[x]]")],
        };
        let own = |m: &str| explain(m, &OWN);
        assert_eq!(
            own("unknown field `x`, expected one of `kind`, `name`"),
            pair("unknown key `x`", Some("by kind"))
        );
        assert_eq!(
            own("unknown field `x`, expected `name`"),
            pair("unknown key `x`", Some("valid keys here: name"))
        );
        assert_eq!(
            own("missing field `tls`"),
            pair("missing key `tls`", Some("add [tls]"))
        );
        assert_eq!(
            own("invalid type: map, expected a sequence"),
            pair(
                "invalid type: map, expected a sequence",
                Some("write [[x]]")
            )
        );
    }

    #[test]
    fn names_and_addresses() {
        for ok in ["a", "web-1", "db_2", "0", &"x".repeat(63)] {
            assert!(is_name(ok), "{ok}");
        }
        for bad in ["", "-a", "_a", "Web", "a b", "a/b", "..", &"x".repeat(64)] {
            assert!(!is_name(bad), "{bad}");
        }
        for ok in [
            "10.0.0.11:7443",
            "web-1.example.com:7443",
            "[2001:db8::11]:7443",
        ] {
            assert!(is_host_port(ok), "{ok}");
        }
        for bad in [
            "10.0.0.11",
            ":7443",
            "h:0",
            "h:65536",
            "2001:db8::11:7443",
            "[x]:1",
            "a b:1",
        ] {
            assert!(!is_host_port(bad), "{bad}");
        }
    }
}

/// The log filter both binaries read from `var` (e.g. `HOIST_LOG=debug` or
/// `HOIST_LOG=warn,hoist_agent=debug`: a default level and `target=level` pairs),
/// `default` when unset. A value that does not parse is said on stderr, once, and the
/// default is used. (`Targets`, not `EnvFilter`: no regex engine in the binaries.)
pub fn log_filter(var: &str, default: tracing::Level) -> tracing_subscriber::filter::Targets {
    let fallback = || tracing_subscriber::filter::Targets::new().with_default(default);
    match std::env::var(var) {
        Err(_) => fallback(),
        Ok(text) => parse_log_filter(&text).unwrap_or_else(|err| {
            eprintln!("{var}={text:?} is not a log filter ({err}); using {default}. E.g. {var}=debug or {var}=info,hoist_agent=debug");
            fallback()
        }),
    }
}

fn parse_log_filter(text: &str) -> Result<tracing_subscriber::filter::Targets, String> {
    text.parse().map_err(|e| format!("{e}"))
}

#[cfg(test)]
mod log_filter_tests {
    use tracing::Level;

    #[test]
    fn levels_and_targets_parse_and_nonsense_does_not() {
        let f = super::parse_log_filter("warn,hoist_agent=debug").unwrap();
        assert!(f.would_enable("hoist_agent::daemon", &Level::DEBUG));
        assert!(!f.would_enable("h2", &Level::INFO));
        assert!(f.would_enable("h2", &Level::WARN));
        assert!(super::parse_log_filter("hoist_agent=loud").is_err());
    }
}
