//! Deploy windows (`[window]`): whether now, in the window's timezone, is inside an
//! `allow` rule and not on a `blackout` day, and when the next window opens.
//!
//! The parsing and `Window::permits` live in `fleet`; this module brings the clock and
//! the timezone database (jiff: the system's zoneinfo, else the copy bundled in the
//! binary), so `timezone = "Asia/Dhaka"` works on any machine.

use jiff::{Timestamp, tz::TimeZone};

use crate::fleet::{Date, Window, weekday_name};

/// How far ahead the next open window is looked for.
const SEARCH_DAYS: i32 = 800;

/// Whether a deploy may start now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub open: bool,
    /// `Wed 2026-12-16 11:30 Asia/Dhaka`.
    pub now: String,
    /// Why it is closed (empty when open).
    pub why: String,
    /// When it opens next, when closed: `Tue 2026-12-22 10:00 Asia/Dhaka (in 5d 22h30m)`.
    pub next: Option<String>,
}

impl Verdict {
    /// One line: `open (now ...)` or `closed: why; the next window opens ...`.
    pub fn describe(&self) -> String {
        if self.open {
            return format!("open (now {})", self.now);
        }
        let mut text = format!("closed: {}", self.why);
        match &self.next {
            Some(next) => text.push_str(&format!("; the next window opens {next}")),
            None => text.push_str(&format!("; no window opens in the next {SEARCH_DAYS} days")),
        }
        text
    }
}

/// A `[window]` timezone jiff does not know.
#[derive(Debug, thiserror::Error)]
#[error(
    "[window] timezone {timezone:?} is not a known IANA zone ({reason}); use e.g. \"UTC\" \
     or \"Asia/Dhaka\""
)]
pub struct ZoneError {
    pub timezone: String,
    pub reason: String,
}

/// The window's zone, or an error naming it.
pub fn zone(window: &Window) -> Result<TimeZone, ZoneError> {
    TimeZone::get(&window.timezone).map_err(|e| ZoneError {
        timezone: window.timezone.clone(),
        reason: e.to_string(),
    })
}

/// The verdict on deploying at `now`.
pub fn check(window: &Window, now: Timestamp) -> Result<Verdict, ZoneError> {
    let tz = zone(window)?;
    let local = now.to_zoned(tz.clone());
    let (date, minute) = (
        local.date(),
        local.hour() as u16 * 60 + local.minute() as u16,
    );
    let label = |date: Date, minute: u16| {
        format!(
            "{} {date} {:02}:{:02} {}",
            weekday_name(date.weekday()),
            minute / 60,
            minute % 60,
            window.timezone
        )
    };
    let now_text = label(date, minute);
    if window.permits(date, minute) {
        return Ok(Verdict {
            open: true,
            now: now_text,
            why: String::new(),
            next: None,
        });
    }
    let why = if window.blackout.contains(&date) {
        format!("{date} is a blackout day in [window]")
    } else {
        let rules: Vec<String> = window.allow.iter().map(|r| r.to_string()).collect();
        format!(
            "now ({now_text}) is outside the allowed {}",
            rules.join(", ")
        )
    };
    let next = next_open(window, date, minute).map(|(day, start)| {
        let at = day
            .at((start / 60) as i8, (start % 60) as i8, 0, 0)
            .to_zoned(tz.clone())
            .map(|z| z.timestamp());
        let wait = match at {
            Ok(at) => format!(" (in {})", human(at.as_second() - now.as_second())),
            Err(_) => String::new(),
        };
        format!("{}{wait}", label(day, start))
    });
    Ok(Verdict {
        open: false,
        now: now_text,
        why,
        next,
    })
}

/// The first (day, minute) at or after `minute` on `today` that the window permits.
pub fn next_open(window: &Window, today: Date, minute: u16) -> Option<(Date, u16)> {
    let mut day = today;
    for offset in 0..SEARCH_DAYS {
        if offset > 0 {
            day = day.tomorrow().ok()?;
        }
        let date = day;
        if window.blackout.contains(&date) {
            continue;
        }
        let from = if offset == 0 { minute } else { 0 };
        let start = if window.allow.is_empty() {
            Some(from)
        } else {
            window
                .allow
                .iter()
                .filter(|r| r.contains(date.weekday(), r.start))
                .filter_map(|r| {
                    let start = r.start.max(from);
                    (start < r.end).then_some(start)
                })
                .min()
        };
        if let Some(start) = start {
            return Some((day, start));
        }
    }
    None
}

/// `3d 04h`, `5h 20m`, `12m`, `under a minute`.
fn human(seconds: i64) -> String {
    let minutes = seconds.max(0) / 60;
    let (d, h, m) = (minutes / 1440, minutes / 60 % 24, minutes % 60);
    match (d, h, m) {
        (0, 0, 0) => "under a minute".into(),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m:02}m"),
        (d, h, _) => format!("{d}d {h:02}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(allow: &[&str], tz: &str, blackout: &[&str]) -> Window {
        Window {
            allow: allow.iter().map(|r| r.parse().unwrap()).collect(),
            timezone: tz.into(),
            blackout: blackout.iter().map(|d| d.parse().unwrap()).collect(),
        }
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn open_inside_the_rule_in_its_timezone() {
        let w = window(&["Tue-Thu 10:00-16:00"], "Asia/Dhaka", &["2026-12-16"]);
        // 05:30 UTC is 11:30 in Dhaka (UTC+6), a Tuesday.
        let v = check(&w, at("2026-12-15T05:30:00Z")).unwrap();
        assert!(v.open, "{v:?}");
        assert_eq!(v.now, "Tue 2026-12-15 11:30 Asia/Dhaka");
        assert_eq!(v.describe(), "open (now Tue 2026-12-15 11:30 Asia/Dhaka)");
        // 11:00 UTC is 17:00 in Dhaka: after hours; tomorrow is a blackout; Thursday.
        let v = check(&w, at("2026-12-15T11:00:00Z")).unwrap();
        assert!(!v.open);
        assert_eq!(
            v.describe(),
            "closed: now (Tue 2026-12-15 17:00 Asia/Dhaka) is outside the allowed \
             Tue-Thu 10:00-16:00; the next window opens Thu 2026-12-17 10:00 Asia/Dhaka \
             (in 1d 17h)"
        );
        let v = check(&w, at("2026-12-16T05:00:00Z")).unwrap();
        assert!(!v.open);
        assert!(
            v.why.starts_with("2026-12-16 is a blackout day"),
            "{}",
            v.why
        );
        // Before opening time the same day: opens today.
        let v = check(&w, at("2026-12-17T03:00:00Z")).unwrap();
        assert_eq!(
            v.next.as_deref(),
            Some("Thu 2026-12-17 10:00 Asia/Dhaka (in 1h 00m)")
        );
    }

    #[test]
    fn blackouts_without_allow_rules_and_wrapping_days() {
        let w = window(&[], "UTC", &["2026-12-24", "2026-12-25"]);
        let v = check(&w, at("2026-12-24T12:00:00Z")).unwrap();
        assert_eq!(
            v.next.as_deref(),
            Some("Sat 2026-12-26 00:00 UTC (in 1d 12h)")
        );
        assert!(check(&w, at("2026-12-23T23:59:00Z")).unwrap().open);
        let w = window(&["Fri-Mon 22:00-24:00"], "UTC", &[]);
        // A Wednesday: Friday 22:00 is next.
        let v = check(&w, at("2026-12-16T12:00:00Z")).unwrap();
        assert_eq!(
            v.next.as_deref(),
            Some("Fri 2026-12-18 22:00 UTC (in 2d 10h)")
        );
        assert!(check(&w, at("2026-12-21T23:00:00Z")).unwrap().open); // Monday
    }

    #[test]
    fn never_open_and_unknown_zones() {
        let w = window(&["Mon 10:00-11:00"], "UTC", &[]);
        let mut every_monday = w.clone();
        let mut day: Date = "2026-12-14".parse().unwrap();
        for _ in 0..(SEARCH_DAYS / 7 + 2) {
            every_monday.blackout.push(day);
            day = day.checked_add(jiff::Span::new().days(7)).unwrap();
        }
        let v = check(&every_monday, at("2026-12-14T10:30:00Z")).unwrap();
        assert!(!v.open && v.next.is_none());
        assert!(
            v.describe()
                .ends_with("no window opens in the next 800 days")
        );
        let bad = window(&[], "Mars/Olympus_Mons", &[]);
        let err = check(&bad, at("2026-12-14T10:30:00Z"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("Mars/Olympus_Mons"), "{err}");
        assert_eq!(human(59), "under a minute");
        assert_eq!(human(3 * 86400 + 4 * 3600 + 120), "3d 04h");
    }
}
