//! `[window]` values: allow rules (`Tue-Thu 10:00-16:00`), weekdays, blackout dates
//! (jiff's civil dates), and whether a moment is inside the window.

use std::{fmt, str::FromStr};

use hoist_config::hinted;
use serde::{Deserialize, Deserializer, de::Error as _};

use super::{AllowRule, Date, ValueError, Weekday, Window};

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

pub(super) fn utc() -> String {
    "UTC".into()
}

pub(super) fn de_timezone<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
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
        parse_allow_rule(s).map_err(ValueError)
    }
}

fn parse_allow_rule(s: &str) -> Result<AllowRule, String> {
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
}

/// `HH:MM` (up to `24:00`) as minutes after midnight.
pub(super) fn minutes(s: &str) -> Result<u16, String> {
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
pub(super) const DAYS: [(Weekday, &str); 7] = [
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
pub(super) fn parse_weekday(s: &str) -> Result<Weekday, String> {
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
pub(super) fn parse_date(s: &str) -> Result<Date, String> {
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
pub(super) struct DateField(Date);

impl<'de> Deserialize<'de> for DateField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_date(&text).map(DateField).map_err(D::Error::custom)
    }
}

pub(super) fn de_dates<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Date>, D::Error> {
    Ok(Vec::<DateField>::deserialize(d)?
        .into_iter()
        .map(|DateField(date)| date)
        .collect())
}
