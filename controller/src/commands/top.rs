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
    time::{Duration, Instant, SystemTime},
};

use clap::Args;
use crossterm::{
    cursor,
    event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers},
    execute, queue,
    style::Print,
    terminal::{self, ClearType},
};
use hoist_proto::v1::WatchStatusRequest;
use tokio::{sync::mpsc, task::JoinSet};

use crate::{
    commands::{
        Ctx, Failure, Global,
        status::{self},
        usage,
    },
    fleet::{self},
    output::table::{self},
};

/// The shortest `--interval` (the agent sends no faster than this).
mod board;
mod watch;

use board::*;
use watch::*;

const MIN_INTERVAL: Duration = Duration::from_millis(200);
/// The longest `--interval` (the agent's bound on WatchStatus).
const MAX_INTERVAL: Duration = Duration::from_secs(3600);
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
    if args.interval > MAX_INTERVAL {
        return Err(usage(format!(
            "--interval {:?} is too long: agents send at least every {MAX_INTERVAL:?}",
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

// === --once ===

/// Waits for every host's first answer (at most `timeout` and a little), then prints
/// one frame (or JSON); exit 1 when a host is not up.
async fn once(
    view: &mut Board,
    updates: &mut mpsc::Receiver<HostUpdate>,
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
        crate::output::render::document("status", status::to_json(&view.reports())) + "\n"
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
async fn live(view: &mut Board, updates: &mut mpsc::Receiver<HostUpdate>) -> Result<(), Failure> {
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
    use std::time::UNIX_EPOCH;

    use hoist_proto::v1::{
        AppStatus, CheckStatus, DiskUsage, HostResources, Level, ServiceState, ServiceStatus,
        StatusResponse,
    };

    use super::*;
    use crate::fleet::Host;

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
            assert!(view.apply(HostUpdate { host, report }, at));
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
        let same = HostUpdate {
            host: 2,
            report: Reading::Unreachable("connection refused".into()),
        };
        assert!(!view.apply(same, later));
        let other = HostUpdate {
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
