//! The rollout values of the fleet file and the command line: strategies, who
//! migrates, and amounts of hosts (`2`, `25%`).

use std::{fmt, str::FromStr};

use hoist_config::hinted;
use serde::{
    Deserialize, Deserializer,
    de::{self, Error as _},
};

use super::{Amount, MigrateOn, Strategy, ValueError};

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
        parse_amount(s).map_err(ValueError)
    }
}

fn parse_amount(s: &str) -> Result<Amount, String> {
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

pub(super) fn de_positive_amount<'de, D: Deserializer<'de>>(d: D) -> Result<Amount, D::Error> {
    match Amount::deserialize(d)? {
        Amount::Count(0) | Amount::Percent(0) => Err(D::Error::custom(hinted(
            "a batch or canary of 0 hosts would never deploy",
            "use at least 1, e.g. 1 or \"10%\"",
        ))),
        amount => Ok(amount),
    }
}

pub(super) fn de_concurrency<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(d)?;
    if (1..=super::MAX_CONCURRENCY).contains(&n) {
        Ok(n)
    } else {
        Err(D::Error::custom(hinted(
            format!("concurrency {n} is out of range"),
            format!("use 1 to {} hosts at once", super::MAX_CONCURRENCY),
        )))
    }
}

/// `--concurrency N`: 1 to [`super::MAX_CONCURRENCY`].
pub fn parse_concurrency(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=super::MAX_CONCURRENCY).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?} is not a number of hosts from 1 to {}",
            super::MAX_CONCURRENCY
        )),
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
        parse_strategy(s).map_err(ValueError)
    }
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    match s {
        "all" => Ok(Strategy::All),
        "rolling" => Ok(Strategy::Rolling),
        "canary" => Ok(Strategy::Canary),
        _ => Err(format!(
            "unknown strategy {s:?}: expected all, rolling or canary"
        )),
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
        parse_migrate_on(s).map_err(ValueError)
    }
}

fn parse_migrate_on(s: &str) -> Result<MigrateOn, String> {
    match s {
        "first" => Ok(MigrateOn::First),
        "all" => Ok(MigrateOn::All),
        "none" => Ok(MigrateOn::None),
        _ => Err(format!(
            "unknown migrate_on {s:?}: expected first, all or none"
        )),
    }
}
