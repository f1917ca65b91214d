//! The model of `hoist top`: each host's latest snapshot or error, and the frame drawn
//! from them (the same cells and colours as `hoist status`).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hoist_proto::v1::{ServiceState, StatusResponse};

use crate::{
    commands::status::{self, HostReport},
    fleet::Host,
    output::table::{self, Cell, Tone},
};

// === the model ===

/// What one host's watcher reports.
#[derive(Debug)]
pub(crate) enum Reading {
    Status(Box<StatusResponse>),
    /// The agent answered with an error (unknown app, role not allowed, ...).
    Refused(String),
    /// No connection, no answer in time, or the stream broke.
    Unreachable(String),
}

#[derive(Debug)]
pub(crate) struct HostUpdate {
    pub(crate) host: usize,
    pub(crate) report: Reading,
}

/// What the view knows about one host.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum HostState {
    /// No answer yet.
    Connecting,
    /// The latest snapshot.
    Up(Box<StatusResponse>),
    Refused(String),
    Unreachable {
        error: String,
        since: SystemTime,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Health {
    Connecting,
    Healthy,
    Unhealthy,
    Unreachable,
}

pub(crate) struct HostView {
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) state: HostState,
    /// Time from the start to the first answer (for `--once --json`).
    pub(crate) first_answer: Option<Duration>,
}

impl HostView {
    pub(crate) fn health(&self) -> Health {
        match &self.state {
            HostState::Connecting => Health::Connecting,
            HostState::Up(status) if healthy(status) => Health::Healthy,
            HostState::Up(_) | HostState::Refused(_) => Health::Unhealthy,
            HostState::Unreachable { .. } => Health::Unreachable,
        }
    }
}

/// A host is healthy when every service of its apps runs and no check that has run is
/// failing (pending checks do not count). Resources do not decide it: a busy CPU comes
/// and goes; their warn/critical colours in the table say how they stand.
pub(crate) fn healthy(status: &StatusResponse) -> bool {
    status.apps.iter().all(|app| {
        app.services
            .iter()
            .all(|s| s.state == ServiceState::Running as i32)
            && app.checks.iter().all(|c| c.ok || !c.has_run)
    })
}

/// Everything a frame is drawn from.
pub(crate) struct Board {
    pub(crate) fleet: String,
    pub(crate) app: String,
    pub(crate) interval: Duration,
    /// Live (reconnecting) rather than `--once`: unreachable hosts say since when.
    pub(crate) live: bool,
    pub(crate) hosts: Vec<HostView>,
    pub(crate) started: Instant,
    /// When a host last reported anything.
    pub(crate) updated: Option<SystemTime>,
}

impl Board {
    pub(crate) fn new(
        fleet: String,
        app: String,
        interval: Duration,
        live: bool,
        hosts: &[&Host],
    ) -> Board {
        Board {
            fleet,
            app,
            interval,
            live,
            hosts: hosts
                .iter()
                .map(|h| HostView {
                    name: h.name.clone(),
                    address: h.address.clone(),
                    state: HostState::Connecting,
                    first_answer: None,
                })
                .collect(),
            started: Instant::now(),
            updated: None,
        }
    }

    /// Applies one report; returns whether anything shown changed.
    pub(crate) fn apply(&mut self, update: HostUpdate, now: SystemTime) -> bool {
        let Some(host) = self.hosts.get_mut(update.host) else {
            return false;
        };
        host.first_answer
            .get_or_insert_with(|| self.started.elapsed());
        let state = match update.report {
            Reading::Status(status) => HostState::Up(status),
            Reading::Refused(error) => HostState::Refused(error),
            Reading::Unreachable(error) => HostState::Unreachable {
                error,
                since: match &host.state {
                    HostState::Unreachable { since, .. } => *since,
                    _ => now,
                },
            },
        };
        self.updated = Some(now);
        if host.state == state {
            return false;
        }
        host.state = state;
        true
    }

    pub(crate) fn count(&self, health: Health) -> usize {
        self.hosts.iter().filter(|h| h.health() == health).count()
    }

    /// The first line: fleet file, host counts, interval, time of the last update.
    pub(crate) fn header(&self, colour: bool) -> String {
        let count = |health: Health, bad: Tone| {
            let n = self.count(health);
            (n, if n == 0 { Tone::Plain } else { bad })
        };
        let (healthy, healthy_tone) = count(Health::Healthy, Tone::Good);
        let (unhealthy, unhealthy_tone) = count(Health::Unhealthy, Tone::Bad);
        let (unreachable, unreachable_tone) = count(Health::Unreachable, Tone::Bad);
        let connecting = self.count(Health::Connecting);
        let hosts = self.hosts.len();
        let mut parts = vec![
            table::paint("hoist top", Tone::Plain, colour),
            self.fleet.clone(),
            format!(
                "{hosts} host{}: {}, {}, {}{}",
                if hosts == 1 { "" } else { "s" },
                table::paint(&format!("{healthy} healthy"), healthy_tone, colour),
                table::paint(&format!("{unhealthy} unhealthy"), unhealthy_tone, colour),
                table::paint(
                    &format!("{unreachable} unreachable"),
                    unreachable_tone,
                    colour
                ),
                if connecting == 0 {
                    String::new()
                } else {
                    format!(
                        ", {}",
                        table::paint(&format!("{connecting} connecting"), Tone::Dim, colour)
                    )
                },
            ),
        ];
        if !self.app.is_empty() {
            parts.push(format!("app {}", self.app));
        }
        parts.push(format!("every {:?}", self.interval));
        parts.push(match self.updated {
            Some(t) => format!("updated {}", clock(t)),
            None => table::paint("waiting for the first update", Tone::Dim, colour),
        });
        parts.join(" · ")
    }

    /// The table (one row per host and app, as `hoist status`) and the notes under it.
    pub(crate) fn body(&self, colour: bool) -> Vec<String> {
        let mut rows = Vec::new();
        let mut notes = Vec::new();
        for host in &self.hosts {
            let placeholder = |up: Cell| {
                let mut row = vec![Cell::from(host.name.clone()), up];
                row.extend((2..status::HEADER.len()).map(|_| Cell::new("-", Tone::Dim)));
                row
            };
            match &host.state {
                HostState::Connecting => rows.push(placeholder(Cell::new("...", Tone::Dim))),
                HostState::Refused(error) => {
                    rows.push(placeholder(Cell::new("error", Tone::Bad)));
                    notes.push(table::paint(
                        &format!("{} ({}): {error}", host.name, host.address),
                        Tone::Bad,
                        colour,
                    ));
                }
                HostState::Unreachable { error, since } => {
                    let error = if self.live {
                        format!("{error}; down since {}, retrying", clock(*since))
                    } else {
                        error.clone()
                    };
                    status::host_rows(
                        &self.report(host, Err(error)),
                        colour,
                        &mut rows,
                        &mut notes,
                    );
                }
                HostState::Up(snapshot) => {
                    let report = self.report(host, Ok((**snapshot).clone()));
                    status::host_rows(&report, colour, &mut rows, &mut notes);
                    notes.extend(activity_notes(&host.name, snapshot, colour));
                }
            }
        }
        let mut lines: Vec<String> = table::render(&status::HEADER, &rows, colour)
            .lines()
            .map(str::to_string)
            .collect();
        if !notes.is_empty() {
            lines.push(String::new());
            lines.extend(notes);
        }
        lines
    }

    pub(crate) fn report(
        &self,
        host: &HostView,
        result: Result<StatusResponse, String>,
    ) -> HostReport {
        HostReport {
            name: host.name.clone(),
            address: host.address.clone(),
            elapsed: host.first_answer.unwrap_or_default(),
            result,
            refused: None,
        }
    }

    /// Every host as `hoist status --json` shows it.
    pub(crate) fn reports(&self) -> Vec<HostReport> {
        self.hosts
            .iter()
            .map(|host| {
                let result = match &host.state {
                    HostState::Up(status) => Ok((**status).clone()),
                    HostState::Refused(error) | HostState::Unreachable { error, .. } => {
                        Err(error.clone())
                    }
                    HostState::Connecting => Err("no answer yet".into()),
                };
                self.report(host, result)
            })
            .collect()
    }

    /// The screen for a terminal of `width` x `height`: header, table and notes (cut to
    /// fit, saying how much was cut), and the footer on the last line.
    pub(crate) fn screen(&self, colour: bool, width: usize, height: usize) -> Vec<String> {
        let footer = table::paint("q quit", Tone::Dim, colour);
        let mut lines = vec![self.header(colour)];
        if height >= 3 {
            lines.push(String::new());
            let mut body = self.body(colour);
            let room = height - 3;
            if body.len() > room {
                let kept = room.saturating_sub(1);
                let cut = body.len() - kept;
                body.truncate(kept);
                if room > 0 {
                    body.push(table::paint(
                        &format!("... {cut} more line(s); enlarge the window to see them"),
                        Tone::Dim,
                        colour,
                    ));
                }
            }
            lines.extend(body);
        }
        if height >= 2 {
            lines.resize(height - 1, String::new());
            lines.push(footer);
        }
        lines.truncate(height);
        lines.iter().map(|l| truncate(l, width)).collect()
    }

    /// The frame `--once` prints: header, table and notes, cut to `width` if given.
    pub(crate) fn frame(&self, colour: bool, width: Option<usize>) -> String {
        let mut lines = vec![self.header(colour), String::new()];
        lines.extend(self.body(colour));
        let mut out = String::new();
        for line in lines {
            match width {
                Some(width) => out.push_str(&truncate(&line, width)),
                None => out.push_str(&line),
            }
            out.push('\n');
        }
        out
    }
}

/// Jobs running and manual locks, which the status table has no column for.
pub(crate) fn activity_notes(host: &str, status: &StatusResponse, colour: bool) -> Vec<String> {
    let mut notes = Vec::new();
    for app in &status.apps {
        if !app.running_job.is_empty() {
            notes.push(table::paint(
                &format!("{host} {}: job {} running", app.name, app.running_job),
                Tone::Warn,
                colour,
            ));
        }
        if let Some(lock) = &app.lock
            && lock.deploy_id != app.running_job
        {
            let why = if lock.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", lock.reason)
            };
            notes.push(table::paint(
                &format!("{host} {}: locked by {}{why}", app.name, lock.holder),
                Tone::Warn,
                colour,
            ));
        }
    }
    notes
}

/// `HH:MM:SS UTC`.
pub(crate) fn clock(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() % 86_400);
    format!(
        "{:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// `line` cut to `width` visible characters; colour codes do not count, and a cut
/// inside coloured text resets the colour.
pub(crate) fn truncate(line: &str, width: usize) -> String {
    let mut out = String::with_capacity(line.len());
    let mut visible = 0;
    let mut styled = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            let mut sequence = String::from(c);
            for c in chars.by_ref() {
                sequence.push(c);
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
            styled = sequence != "\x1b[0m";
            out.push_str(&sequence);
            continue;
        }
        if visible == width {
            if styled {
                out.push_str("\x1b[0m");
            }
            return out;
        }
        out.push(c);
        visible += 1;
    }
    out
}
