//! `hoist top`: a live, full-screen view of the fleet's health and resources.
//!
//! One task per host follows the agent's WatchStatus stream; when the stream cannot be
//! opened or breaks, the host shows as unreachable with the error while the task
//! reconnects with backoff. The screen is redrawn from the latest snapshot of every
//! host, with the same cells and colours as `hoist status`:
//!
//! ```text
//! hoist top · fleet.toml · 3 hosts: 1 healthy, 1 unhealthy, 1 unreachable · every 2s · updated 04:30:48 UTC
//!
//! HOST   UP   VERSION  CPU  MEM            DISK   LOAD  APP  RELEASE  SERVICES  CHECKS
//! web-1  yes  0.1.0    10%  3% of 23.5GiB  74% /  2.12  web  (none)   -         1/1 ok
//! web-2  yes  0.1.0    9%   3% of 23.5GiB  74% /  2.12  web  (none)   -         1/1 ok
//!                                                       api  (none)   -         0/1 ok (failing: always-fails)
//! db-1   no   -        -    -              -      -     -    -        -         -
//!
//! web-2 api: check always-fails failing: exit 1; output: connection refused on :8080
//! db-1 (127.0.0.1:1) unreachable: transport error: tcp connect error: Connection refused (os error 111); down since 04:30:46 UTC, retrying
//!
//! q quit
//! ```
//!
//! `--once` prints one frame to stdout and exits (for scripts and tests); without it,
//! stdout must be a terminal. The terminal is always restored: on `q`, Esc, Ctrl-C,
//! SIGTERM/SIGHUP, an error, and a panic.

use std::{
    io::{self, IsTerminal as _, Write},
    sync::{
        Arc, Once,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clap::Args;
use crossterm::{
    cursor,
    event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers},
    execute, queue,
    style::Print,
    terminal::{self, ClearType},
};
use hoist_proto::v1::{ServiceState, StatusResponse, WatchStatusRequest};
use tokio::{sync::mpsc, task::JoinSet};

use crate::{
    agents::client::{self, Credentials},
    commands::{
        Ctx, Failure, Global,
        status::{self, HostReport},
        usage,
    },
    fleet::{self, Host},
    output::table::{self, Cell, Tone},
};

/// The shortest `--interval` (the agent sends no faster than this).
const MIN_INTERVAL: Duration = Duration::from_millis(200);
/// Redraws at most this often while data keeps changing.
const REDRAW_EVERY: Duration = Duration::from_millis(250);
/// The first wait before reconnecting a broken stream; it doubles up to [`BACKOFF_MAX`]
/// while the host stays down, and starts over after a snapshot arrives.
const BACKOFF_FIRST: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// How often the keyboard thread looks at its stop flag.
const KEY_POLL: Duration = Duration::from_millis(100);

#[derive(Args, Debug)]
pub struct TopArgs {
    /// Only this app.
    pub app: Option<String>,
    /// How often each agent sends a fresh snapshot.
    #[arg(long, default_value = "2s", value_parser = fleet::parse_duration)]
    pub interval: Duration,
    /// Print one frame to stdout and exit (1 if a host is unreachable); no terminal needed.
    #[arg(long)]
    pub once: bool,
    /// Limit for connecting to each agent and for its first snapshot.
    #[arg(long, default_value = "5s", value_parser = fleet::parse_duration)]
    pub timeout: Duration,
}

/// `hoist top`.
pub async fn run(global: &Global, args: TopArgs) -> Result<(), Failure> {
    if args.interval < MIN_INTERVAL {
        return Err(usage(format!(
            "--interval {:?} is too short: agents send at most every {MIN_INTERVAL:?}",
            args.interval
        )));
    }
    if global.json && !args.once {
        return Err(usage(
            "--json needs --once (`hoist top --once --json` prints one snapshot)",
        ));
    }
    if !args.once && !io::stdout().is_terminal() {
        return Err(usage(
            "hoist top is a full-screen view and stdout is not a terminal; use \
             `hoist top --once` for a single frame, or `hoist status` (--json) for scripts",
        ));
    }
    let ctx = Ctx::load(global)?;
    let (hosts, creds) = (ctx.targets(), &ctx.creds);

    let app = args.app.unwrap_or_default();
    let mut view = Board::new(
        global.fleet.display().to_string(),
        app.clone(),
        args.interval,
        !args.once,
        &hosts,
    );
    let request = WatchStatusRequest {
        app,
        interval_ms: u64::try_from(args.interval.as_millis()).unwrap_or(u64::MAX),
    };
    // A stream that stays silent this long is treated as broken and reopened.
    let stall = args.interval * 2 + args.timeout;
    let (tx, mut updates) = mpsc::channel(64 + hosts.len());
    let mut watchers = JoinSet::new();
    for (index, host) in hosts.iter().enumerate() {
        watchers.spawn(watch(Watch {
            index,
            host: (*host).clone(),
            creds: creds.clone(),
            request: request.clone(),
            timeout: args.timeout,
            stall,
            tx: tx.clone(),
        }));
    }
    drop(tx);

    let result = if args.once {
        once(&mut view, &mut updates, args.timeout, global.json).await
    } else {
        live(&mut view, &mut updates).await
    };
    watchers.abort_all();
    result
}

// === the model ===

/// What one host's watcher reports.
#[derive(Debug)]
enum Reading {
    Status(Box<StatusResponse>),
    /// The agent answered with an error (unknown app, role not allowed, ...).
    Refused(String),
    /// No connection, no answer in time, or the stream broke.
    Unreachable(String),
}

#[derive(Debug)]
struct Update {
    host: usize,
    report: Reading,
}

/// What the view knows about one host.
#[derive(Clone, Debug, PartialEq)]
enum HostState {
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
enum Health {
    Connecting,
    Healthy,
    Unhealthy,
    Unreachable,
}

struct HostView {
    name: String,
    address: String,
    state: HostState,
    /// Time from the start to the first answer (for `--once --json`).
    first_answer: Option<Duration>,
}

impl HostView {
    fn health(&self) -> Health {
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
fn healthy(status: &StatusResponse) -> bool {
    status.apps.iter().all(|app| {
        app.services
            .iter()
            .all(|s| s.state == ServiceState::Running as i32)
            && app.checks.iter().all(|c| c.ok || !c.has_run)
    })
}

/// Everything a frame is drawn from.
struct Board {
    fleet: String,
    app: String,
    interval: Duration,
    /// Live (reconnecting) rather than `--once`: unreachable hosts say since when.
    live: bool,
    hosts: Vec<HostView>,
    started: Instant,
    /// When a host last reported anything.
    updated: Option<SystemTime>,
}

impl Board {
    fn new(fleet: String, app: String, interval: Duration, live: bool, hosts: &[&Host]) -> Board {
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
    fn apply(&mut self, update: Update, now: SystemTime) -> bool {
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

    fn count(&self, health: Health) -> usize {
        self.hosts.iter().filter(|h| h.health() == health).count()
    }

    /// The first line: fleet file, host counts, interval, time of the last update.
    fn header(&self, colour: bool) -> String {
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
    fn body(&self, colour: bool) -> Vec<String> {
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

    fn report(&self, host: &HostView, result: Result<StatusResponse, String>) -> HostReport {
        HostReport {
            name: host.name.clone(),
            address: host.address.clone(),
            elapsed: host.first_answer.unwrap_or_default(),
            result,
        }
    }

    /// Every host as `hoist status --json` shows it.
    fn reports(&self) -> Vec<HostReport> {
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
    fn screen(&self, colour: bool, width: usize, height: usize) -> Vec<String> {
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
    fn frame(&self, colour: bool, width: Option<usize>) -> String {
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
fn activity_notes(host: &str, status: &StatusResponse, colour: bool) -> Vec<String> {
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
fn clock(t: SystemTime) -> String {
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
fn truncate(line: &str, width: usize) -> String {
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

// === the watchers ===

struct Watch {
    index: usize,
    host: Host,
    creds: Credentials,
    request: WatchStatusRequest,
    timeout: Duration,
    stall: Duration,
    tx: mpsc::Sender<Update>,
}

/// Follows one host's WatchStatus stream for as long as the view lives, reopening it
/// with backoff whenever it cannot be opened or breaks.
async fn watch(w: Watch) {
    let mut backoff = BACKOFF_FIRST;
    loop {
        let (report, received) = follow(&w).await;
        let update = Update {
            host: w.index,
            report,
        };
        if w.tx.send(update).await.is_err() {
            return;
        }
        if received {
            backoff = BACKOFF_FIRST;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Opens the stream and forwards its snapshots until it ends; returns why it ended and
/// whether any snapshot arrived.
async fn follow(w: &Watch) -> (Reading, bool) {
    let open = async {
        let mut agent = client::connect(&w.host.address, &w.creds, w.timeout)
            .await
            .map_err(|e| Reading::Unreachable(e.to_string()))?;
        agent
            .watch_status(w.request.clone())
            .await
            .map(|r| r.into_inner())
            .map_err(|s| classify(&s))
    };
    let mut stream = match tokio::time::timeout(w.timeout, open).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(report)) => return (report, false),
        Err(_) => {
            let why = format!("no answer within {:?}", w.timeout);
            return (Reading::Unreachable(why), false);
        }
    };
    let mut received = false;
    loop {
        let report = match tokio::time::timeout(w.stall, stream.message()).await {
            Ok(Ok(Some(status))) => {
                received = true;
                let update = Update {
                    host: w.index,
                    report: Reading::Status(Box::new(status)),
                };
                if w.tx.send(update).await.is_err() {
                    return (Reading::Unreachable("the view closed".into()), received);
                }
                continue;
            }
            Ok(Ok(None)) => Reading::Unreachable("the agent closed the stream".into()),
            Ok(Err(status)) => classify(&status),
            Err(_) => Reading::Unreachable(format!("no snapshot for {:?}", w.stall)),
        };
        return (report, received);
    }
}

/// Transport trouble makes a host unreachable; any other gRPC error is the agent's
/// answer (unknown app, role not allowed).
fn classify(status: &tonic::Status) -> Reading {
    let message = client::status_error(status);
    match status.code() {
        tonic::Code::Unavailable
        | tonic::Code::Unknown
        | tonic::Code::DeadlineExceeded
        | tonic::Code::Cancelled => Reading::Unreachable(message),
        _ => Reading::Refused(message),
    }
}

// === --once ===

/// Waits for every host's first answer (at most `timeout` and a little), then prints
/// one frame (or JSON); exit 1 when a host is not up.
async fn once(
    view: &mut Board,
    updates: &mut mpsc::Receiver<Update>,
    timeout: Duration,
    json: bool,
) -> Result<(), Failure> {
    let deadline = tokio::time::Instant::now() + timeout + Duration::from_millis(500);
    while view.count(Health::Connecting) > 0 {
        tokio::select! {
            update = updates.recv() => match update {
                Some(update) => {
                    // Only each host's first answer: a retry must not hide why it failed.
                    if view.hosts.get(update.host).is_some_and(|h| h.state == HostState::Connecting) {
                        view.apply(update, SystemTime::now());
                    }
                }
                None => break,
            },
            _ = tokio::time::sleep_until(deadline) => break,
        }
    }
    let now = SystemTime::now();
    for host in &mut view.hosts {
        if host.state == HostState::Connecting {
            host.state = HostState::Unreachable {
                error: format!("no answer within {timeout:?}"),
                since: now,
            };
        }
    }
    let mut stdout = io::stdout().lock();
    let text = if json {
        let json = serde_json::to_string_pretty(&status::to_json(&view.reports()))
            .map_err(Failure::failed)?;
        json + "\n"
    } else {
        let width = if io::stdout().is_terminal() {
            terminal::size().ok().map(|(w, _)| usize::from(w))
        } else {
            None
        };
        view.frame(table::use_colour(), width)
    };
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(Failure::failed)?;
    let down = view.hosts.len() - view.count(Health::Healthy) - view.count(Health::Unhealthy);
    let refused = view
        .hosts
        .iter()
        .filter(|h| matches!(h.state, HostState::Refused(_)))
        .count();
    if down > 0 || refused > 0 {
        let mut problems = Vec::new();
        if down > 0 {
            problems.push(format!(
                "{down} of {} host(s) unreachable",
                view.hosts.len()
            ));
        }
        if refused > 0 {
            problems.push(format!("{refused} host(s) answered with an error"));
        }
        return Err(Failure::failed(anyhow::anyhow!(problems.join("; "))));
    }
    Ok(())
}

// === the live screen ===

/// Runs the full-screen view until `q`, Esc, Ctrl-C, SIGTERM or SIGHUP.
async fn live(view: &mut Board, updates: &mut mpsc::Receiver<Update>) -> Result<(), Failure> {
    use tokio::signal::unix::{SignalKind, signal};
    let terminal_error = |what: &str, e: io::Error| Failure::failed(anyhow::anyhow!("{what}: {e}"));
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| terminal_error("SIGTERM", e))?;
    let mut sighup = signal(SignalKind::hangup()).map_err(|e| terminal_error("SIGHUP", e))?;
    let colour = table::use_colour();
    let (mut width, mut height) =
        terminal::size().map_err(|e| terminal_error("cannot read the terminal size", e))?;

    let screen = Terminal::enter().map_err(|e| terminal_error("cannot set up the terminal", e))?;
    let mut keys = Keys::spawn();
    let mut out = io::BufWriter::new(io::stdout());
    let mut dirty = true;
    let mut last_draw: Option<Instant> = None;
    loop {
        let due = match (dirty, last_draw) {
            (false, _) => None,
            (true, None) => Some(Instant::now()),
            (true, Some(at)) => Some(at + REDRAW_EVERY),
        };
        if let Some(due) = due
            && due <= Instant::now()
        {
            let lines = view.screen(colour, usize::from(width), usize::from(height));
            draw(&mut out, &lines).map_err(|e| terminal_error("cannot draw", e))?;
            dirty = false;
            last_draw = Some(Instant::now());
            continue;
        }
        let redraw = async {
            match due {
                Some(due) => tokio::time::sleep_until(due.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            update = updates.recv() => match update {
                Some(update) => dirty |= view.apply(update, SystemTime::now()),
                None => return Err(Failure::failed(anyhow::anyhow!("every host's watcher stopped"))),
            },
            event = keys.rx.recv() => match event {
                Some(Ok(Event::Key(key))) if quits(&key) => break,
                Some(Ok(Event::Resize(w, h))) => {
                    (width, height) = (w, h);
                    dirty = true;
                    last_draw = None;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(terminal_error("cannot read the keyboard", e)),
                None => return Err(Failure::failed(anyhow::anyhow!("the keyboard reader stopped"))),
            },
            () = redraw => {}
            _ = sigterm.recv() => break,
            _ = sighup.recv() => break,
        }
    }
    drop(keys);
    drop(screen);
    Ok(())
}

/// `q`, Esc and Ctrl-C quit.
fn quits(key: &KeyEvent) -> bool {
    key.kind != KeyEventKind::Release
        && match key.code {
            KeyCode::Char('q') | KeyCode::Char('Q') | KeyCode::Esc => true,
            KeyCode::Char('c') => key.modifiers.contains(KeyModifiers::CONTROL),
            _ => false,
        }
}

/// Writes `lines` over the screen, one per row, clearing what was there.
fn draw(out: &mut impl Write, lines: &[String]) -> io::Result<()> {
    for (row, line) in lines.iter().enumerate() {
        let row = u16::try_from(row).unwrap_or(u16::MAX);
        queue!(
            out,
            cursor::MoveTo(0, row),
            terminal::Clear(ClearType::CurrentLine),
            Print(line)
        )?;
    }
    out.flush()
}

/// Whether the terminal is in the view's modes (raw, alternate screen, cursor hidden).
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The terminal in full-screen mode; dropping it (or a panic) restores it.
struct Terminal;

impl Terminal {
    fn enter() -> io::Result<Terminal> {
        static PANIC_HOOK: Once = Once::new();
        PANIC_HOOK.call_once(|| {
            // The release build aborts on panic, so Drop alone would not run.
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore();
                previous(info);
            }));
        });
        terminal::enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        let screen = Terminal;
        execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)?;
        Ok(screen)
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        restore();
    }
}

/// Leaves the full-screen mode, once.
fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = execute!(io::stdout(), cursor::Show, terminal::LeaveAlternateScreen);
        let _ = terminal::disable_raw_mode();
    }
}

/// Terminal events read on a thread of their own; the thread stops (and is joined)
/// when this is dropped.
struct Keys {
    rx: mpsc::UnboundedReceiver<io::Result<Event>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Keys {
    fn spawn() -> Keys {
        let (tx, rx) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                let event = match event::poll(KEY_POLL) {
                    Ok(false) => continue,
                    Ok(true) => event::read(),
                    Err(e) => Err(e),
                };
                let failed = event.is_err();
                if tx.send(event).is_err() || failed {
                    return;
                }
            }
        });
        Keys {
            rx,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use hoist_proto::v1::{AppStatus, CheckStatus, DiskUsage, HostResources, Level, ServiceStatus};

    use super::*;

    fn host(name: &str) -> Host {
        Host {
            name: name.into(),
            address: format!("{name}.example:7443"),
            groups: Vec::new(),
            metrics: None,
        }
    }

    fn snapshot(cpu_level: Level, service: ServiceState) -> StatusResponse {
        StatusResponse {
            version: "0.1.0".into(),
            hostname: "h".into(),
            sampled_at: None,
            resources: Some(HostResources {
                cpu_percent: 97.0,
                cpu_level: cpu_level as i32,
                load1: 1.5,
                memory_used_bytes: 1 << 30,
                memory_total_bytes: 4 << 30,
                memory_level: Level::Ok as i32,
                disks: vec![DiskUsage {
                    mount: "/".into(),
                    used_bytes: 50,
                    total_bytes: 100,
                    level: Level::Ok as i32,
                }],
                ..HostResources::default()
            }),
            apps: vec![AppStatus {
                name: "shop".into(),
                current_release: "20261122T101500Z-abc1234".into(),
                services: vec![ServiceStatus {
                    kind: "supervisor".into(),
                    name: "worker".into(),
                    state: service as i32,
                    detail: "pid 7".into(),
                }],
                checks: vec![CheckStatus {
                    name: "http".into(),
                    ok: true,
                    has_run: true,
                    ..CheckStatus::default()
                }],
                running_job: "deploy-20261122T101500Z-a1b2c3".into(),
                ..AppStatus::default()
            }],
        }
    }

    fn view() -> Board {
        let hosts = [host("web-1"), host("web-2"), host("web-3"), host("web-4")];
        let refs: Vec<&Host> = hosts.iter().collect();
        let mut view = Board::new(
            "fleet.toml".into(),
            String::new(),
            Duration::from_secs(2),
            true,
            &refs,
        );
        let at = UNIX_EPOCH + Duration::from_secs(3600 * 10 + 62);
        let updates = [
            (
                0,
                Reading::Status(Box::new(snapshot(Level::Warn, ServiceState::Running))),
            ),
            (
                1,
                Reading::Status(Box::new(snapshot(Level::Ok, ServiceState::Stopped))),
            ),
            (2, Reading::Unreachable("connection refused".into())),
        ];
        for (host, report) in updates {
            assert!(view.apply(Update { host, report }, at));
        }
        view
    }

    #[test]
    fn counts_and_header() {
        let view = view();
        assert_eq!(view.count(Health::Healthy), 1, "a warning is still healthy");
        assert_eq!(view.count(Health::Unhealthy), 1, "a stopped service is not");
        assert_eq!(view.count(Health::Unreachable), 1);
        assert_eq!(view.count(Health::Connecting), 1);
        assert_eq!(
            view.header(false),
            "hoist top · fleet.toml · 4 hosts: 1 healthy, 1 unhealthy, 1 unreachable, \
             1 connecting · every 2s · updated 10:01:02 UTC"
        );
        let mut busy = snapshot(Level::Critical, ServiceState::Running);
        assert!(healthy(&busy), "a busy CPU alone is not unhealthy");
        busy.apps[0].checks[0].ok = false;
        assert!(!healthy(&busy), "a failing check is");
        busy.apps[0].checks[0].has_run = false;
        assert!(healthy(&busy), "a check that has not run yet is not");
    }

    #[test]
    fn the_same_report_changes_nothing_and_keeps_since() {
        let mut view = view();
        let later = UNIX_EPOCH + Duration::from_secs(3600 * 11);
        let same = Update {
            host: 2,
            report: Reading::Unreachable("connection refused".into()),
        };
        assert!(!view.apply(same, later));
        let other = Update {
            host: 2,
            report: Reading::Unreachable("no answer within 5s".into()),
        };
        assert!(view.apply(other, later));
        let HostState::Unreachable { since, .. } = &view.hosts[2].state else {
            panic!("not unreachable")
        };
        assert_eq!(clock(*since), "10:01:02 UTC");
    }

    #[test]
    fn frame_lists_hosts_notes_and_waiting_hosts() {
        let text = view().frame(false, None);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[2].starts_with("HOST  "), "{text}");
        assert!(
            lines[3].starts_with("web-1  yes  0.1.0    97%  25% of 4.0GiB  50% /"),
            "{text}"
        );
        assert!(text.contains("1/1 up"), "{text}");
        assert!(text.contains("0/1 up (down: worker)"), "{text}");
        assert!(lines.iter().any(|l| l.starts_with("web-3  no ")), "{text}");
        assert!(lines.iter().any(|l| l.starts_with("web-4  ...")), "{text}");
        assert!(
            text.contains(
                "web-3 (web-3.example:7443) unreachable: connection refused; \
                 down since 10:01:02 UTC, retrying"
            ),
            "{text}"
        );
        assert!(
            text.contains("web-2 shop: supervisor worker is stopped: pid 7"),
            "{text}"
        );
        assert!(
            text.contains("web-1 shop: job deploy-20261122T101500Z-a1b2c3 running"),
            "{text}"
        );
    }

    #[test]
    fn screen_fits_the_terminal() {
        let view = view();
        let lines = view.screen(false, 40, 12);
        assert_eq!(lines.len(), 12);
        assert!(lines.iter().all(|l| l.chars().count() <= 40), "{lines:#?}");
        assert_eq!(lines[11], "q quit");
        assert!(lines[10].starts_with("... "), "{lines:#?}");
        assert!(lines[10].contains("more line(s)"), "{lines:#?}");

        let tall = view.screen(true, 300, 60);
        assert_eq!(tall.len(), 60);
        assert_eq!(tall[59], "\x1b[2mq quit\x1b[0m");
        assert!(tall[1].is_empty() && tall[58].is_empty());
        assert_eq!(view.screen(false, 80, 1).len(), 1);
    }

    #[test]
    fn truncate_counts_only_visible_text() {
        assert_eq!(truncate("abcdef", 3), "abc");
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("\x1b[32mgood\x1b[0m rest", 2), "\x1b[32mgo\x1b[0m");
        assert_eq!(truncate("\x1b[32mok\x1b[0m rest", 2), "\x1b[32mok\x1b[0m");
        assert_eq!(truncate("\x1b[32mok\x1b[0m rest", 4), "\x1b[32mok\x1b[0m r");
        assert_eq!(truncate("·ab", 2), "·a");
    }

    #[test]
    fn keys_that_quit() {
        let key = |code, modifiers| KeyEvent::new(code, modifiers);
        assert!(quits(&key(KeyCode::Char('q'), KeyModifiers::NONE)));
        assert!(quits(&key(KeyCode::Esc, KeyModifiers::NONE)));
        assert!(quits(&key(KeyCode::Char('c'), KeyModifiers::CONTROL)));
        assert!(!quits(&key(KeyCode::Char('c'), KeyModifiers::NONE)));
        assert!(!quits(&key(KeyCode::Char('x'), KeyModifiers::NONE)));
    }
}
