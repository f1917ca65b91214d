//! `hoist status`: ask every selected agent for its status concurrently (bounded, with a
//! per-host timeout) and show one table, or JSON.

use std::time::Duration;

use clap::Args;
use hoist_proto::v1::{
    AppStatus, HostResources, Level, LockInfo, ServiceState, StatusRequest, StatusResponse,
};
use serde_json::{Value, json};

use crate::{
    agents::{client::Credentials, fanout},
    commands::{Ctx, Failure, Global, parse_duration},
    fleet::Host,
    output::table::{self, Cell, Tone},
};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Only this app.
    pub app: Option<String>,
    /// Per-host limit for connecting and answering.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Hosts asked at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

/// `hoist status [APP]`.
pub async fn run(global: &Global, args: StatusArgs) -> Result<(), Failure> {
    let ctx = Ctx::load(global)?;
    if let Some(warning) = ctx.creds.expiry_warning() {
        eprintln!("{warning}");
    }
    let app = args.app.unwrap_or_default();
    let reports = fetch(
        &ctx.targets(),
        &ctx.creds,
        &app,
        args.timeout,
        args.concurrency,
    )
    .await;
    if global.json {
        println!(
            "{}",
            crate::output::render::document("status", to_json(&reports))
        );
    } else {
        print!("{}", render(&reports, table::use_colour()));
    }
    let mut failed = fanout::Unanswered {
        what: "status".into(),
        unreachable: Vec::new(),
        refused: Vec::new(),
    };
    for report in &reports {
        match (&report.result, &report.refused) {
            (Ok(_), _) => {}
            (Err(_), Some(message)) => failed.refused.push((report.name.clone(), message.clone())),
            (Err(_), None) => failed.unreachable.push(report.name.clone()),
        }
    }
    if failed.unreachable.is_empty() && !failed.refused.is_empty() {
        return Err(Failure::failed(failed));
    }
    if !failed.unreachable.is_empty() {
        let down = failed.unreachable.len();
        let mut text = format!("{down} of {} host(s) unreachable", reports.len());
        if !failed.refused.is_empty() {
            failed.unreachable.clear();
            text.push_str(&format!("; {failed}"));
        }
        return Err(Failure::failed_with(text));
    }
    Ok(())
}

/// What one host answered.
pub struct HostReport {
    pub name: String,
    pub address: String,
    pub elapsed: Duration,
    pub result: Result<StatusResponse, String>,
    /// The agent's message when it answered with an error (the host is up).
    pub refused: Option<String>,
}

/// Asks `hosts` for their status, at most `concurrency` at a time, each bounded by
/// `timeout` (connect + call). Results come back in the order of `hosts`.
pub async fn fetch(
    hosts: &[&Host],
    creds: &Credentials,
    app: &str,
    timeout: Duration,
    concurrency: usize,
) -> Vec<HostReport> {
    let request = StatusRequest {
        app: app.to_string(),
    };
    fanout::ask_all_bounded(hosts, creds, timeout, concurrency, |mut client| {
        let request = request.clone();
        async move { client.status(request).await.map(|r| r.into_inner()) }
    })
    .await
    .into_iter()
    .map(|answer| HostReport {
        refused: match &answer.result {
            Err(fanout::CallError::Status(status)) => Some(status.message().to_string()),
            _ => None,
        },
        name: answer.host,
        address: answer.address,
        elapsed: answer.elapsed,
        result: answer.result.map_err(|e| e.reason()),
    })
    .collect()
}

fn level_tone(level: i32) -> Tone {
    match Level::try_from(level).unwrap_or(Level::Unspecified) {
        Level::Ok => Tone::Plain,
        Level::Warn => Tone::Warn,
        Level::Critical => Tone::Bad,
        Level::Unspecified => Tone::Dim,
    }
}

fn worst(levels: impl Iterator<Item = i32>) -> i32 {
    levels.max().unwrap_or(Level::Ok as i32)
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        format!("{value:.1}{}", UNITS[unit])
    }
}

fn percent(used: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        used as f64 * 100.0 / total as f64
    }
}

/// Resource cells: CPU, MEM, DISK (the fullest disk), LOAD.
fn resource_cells(r: &HostResources) -> Vec<Cell> {
    let disk = r
        .disks
        .iter()
        .max_by(|a, b| {
            percent(a.used_bytes, a.total_bytes).total_cmp(&percent(b.used_bytes, b.total_bytes))
        })
        .map(|d| {
            Cell::new(
                format!("{:.0}% {}", percent(d.used_bytes, d.total_bytes), d.mount),
                level_tone(worst(r.disks.iter().map(|d| d.level))),
            )
        })
        .unwrap_or_else(|| Cell::new("-", Tone::Dim));
    vec![
        Cell::new(format!("{:.0}%", r.cpu_percent), level_tone(r.cpu_level)),
        Cell::new(
            format!(
                "{:.0}% of {}",
                percent(r.memory_used_bytes, r.memory_total_bytes),
                human_bytes(r.memory_total_bytes)
            ),
            level_tone(r.memory_level),
        ),
        disk,
        Cell::new(format!("{:.2}", r.load1), Tone::Plain),
    ]
}

fn service_cell(app: &AppStatus) -> Cell {
    if app.services.is_empty() {
        return Cell::new("-", Tone::Dim);
    }
    let running = app
        .services
        .iter()
        .filter(|s| s.state == ServiceState::Running as i32)
        .count();
    let down: Vec<&str> = app
        .services
        .iter()
        .filter(|s| s.state != ServiceState::Running as i32)
        .map(|s| s.name.as_str())
        .collect();
    if down.is_empty() {
        Cell::new(format!("{running}/{} up", app.services.len()), Tone::Good)
    } else {
        Cell::new(
            format!(
                "{running}/{} up (down: {})",
                app.services.len(),
                down.join(", ")
            ),
            Tone::Bad,
        )
    }
}

fn check_cell(app: &AppStatus) -> Cell {
    let checks = &app.checks;
    if app.current_release.is_empty() && app.running_job.is_empty() {
        return Cell::new("not deployed", Tone::Dim);
    }
    if checks.is_empty() {
        return Cell::new("-", Tone::Dim);
    }
    let failing = |monitor_only: bool| -> Vec<&str> {
        checks
            .iter()
            .filter(|c| c.has_run && !c.ok && c.monitor_only == monitor_only)
            .map(|c| c.name.as_str())
            .collect()
    };
    let (gating, monitored) = (failing(false), failing(true));
    let passing = checks.iter().filter(|c| c.ok).count();
    let mut text = format!("{passing}/{} ok", checks.len());
    if !gating.is_empty() {
        text.push_str(&format!(" (failing: {})", gating.join(", ")));
    }
    if !monitored.is_empty() {
        text.push_str(&format!(" (monitor failing: {})", monitored.join(", ")));
    }
    if !gating.is_empty() {
        Cell::new(text, Tone::Bad)
    } else if !monitored.is_empty() {
        Cell::new(text, Tone::Warn)
    } else if checks.iter().any(|c| !c.has_run) {
        Cell::new(format!("{text} (pending)"), Tone::Warn)
    } else {
        Cell::new(text, Tone::Good)
    }
}

/// The columns of the status table (`hoist status`, `hoist top`).
pub const HEADER: [&str; 11] = [
    "HOST", "UP", "VERSION", "CPU", "MEM", "DISK", "LOAD", "APP", "RELEASE", "SERVICES", "CHECKS",
];

/// The status table, with the failing checks' output and the unreachable hosts' errors
/// listed underneath (the table alone cannot say why).
pub fn render(reports: &[HostReport], colour: bool) -> String {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for report in reports {
        host_rows(report, colour, &mut rows, &mut notes);
    }
    let mut out = table::render(&HEADER, &rows, colour);
    if !notes.is_empty() {
        out.push('\n');
        for n in notes {
            out.push_str(&n);
            out.push('\n');
        }
    }
    out
}

/// One host's rows of the status table (one per app; the host columns on the first),
/// and the notes that explain them (unreachable, failing checks, services down),
/// already painted.
pub fn host_rows(
    report: &HostReport,
    colour: bool,
    rows: &mut Vec<Vec<Cell>>,
    notes: &mut Vec<String>,
) {
    let host = Cell::new(report.name.clone(), Tone::Plain);
    match &report.result {
        Err(err) => {
            let up = match report.refused {
                Some(_) => Cell::new("yes", Tone::Good),
                None => Cell::new("no", Tone::Bad),
            };
            let mut row = vec![host, up];
            row.extend((2..HEADER.len()).map(|_| Cell::new("-", Tone::Dim)));
            rows.push(row);
            let note = match &report.refused {
                Some(message) => {
                    format!("{} ({}) answered: {message}", report.name, report.address)
                }
                None => format!("{} ({}) unreachable: {err}", report.name, report.address),
            };
            notes.push(paint_note(&note, Tone::Bad, colour));
        }
        Ok(status) => {
            let mut base = vec![host, Cell::new("yes", Tone::Good)];
            base.push(Cell::from(status.version.clone()));
            base.extend(resource_cells(
                &status.resources.clone().unwrap_or_default(),
            ));
            if status.apps.is_empty() {
                let mut row = base.clone();
                row.extend((0..4).map(|_| Cell::new("-", Tone::Dim)));
                rows.push(row);
            }
            for (i, app) in status.apps.iter().enumerate() {
                let mut row = if i == 0 {
                    base.clone()
                } else {
                    (0..base.len()).map(|_| Cell::from("")).collect()
                };
                row.push(Cell::from(app.name.clone()));
                row.push(if app.current_release.is_empty() {
                    Cell::new("not deployed", Tone::Dim)
                } else {
                    Cell::from(app.current_release.clone())
                });
                row.push(service_cell(app));
                row.push(check_cell(app));
                rows.push(row);
                if !app.running_job.is_empty() {
                    notes.push(paint_note(
                        &format!(
                            "{} {}: job {} running (`hoist attach {}` follows it)",
                            report.name, app.name, app.running_job, app.running_job
                        ),
                        Tone::Warn,
                        colour,
                    ));
                }
                if let Some(lock) = &app.lock {
                    notes.push(paint_note(
                        &format!("{} {}: {}", report.name, app.name, lock_text(lock)),
                        Tone::Warn,
                        colour,
                    ));
                }
                for c in app.checks.iter().filter(|c| c.has_run && !c.ok) {
                    let (what, tone) = if c.monitor_only {
                        ("monitor-only check", Tone::Warn)
                    } else {
                        ("check", Tone::Bad)
                    };
                    notes.push(paint_note(
                        &format!(
                            "{} {}: {what} {} failing: {}",
                            report.name,
                            app.name,
                            c.name,
                            c.output.trim()
                        ),
                        tone,
                        colour,
                    ));
                }
                for s in app
                    .services
                    .iter()
                    .filter(|s| s.state != ServiceState::Running as i32)
                {
                    notes.push(paint_note(
                        &format!(
                            "{} {}: {} {} is {}: {}",
                            report.name,
                            app.name,
                            s.kind,
                            s.name,
                            state_name(s.state),
                            s.detail
                        ),
                        Tone::Warn,
                        colour,
                    ));
                }
            }
        }
    }
}

/// `locked by dana since 2026-12-02T10:00:00Z: db maintenance (lease until ...)`.
fn lock_text(lock: &LockInfo) -> String {
    let when = |t: &Option<prost_types::Timestamp>| {
        t.as_ref()
            .map_or_else(|| "?".to_string(), ToString::to_string)
    };
    let mut text = format!("locked by {} since {}", lock.holder, when(&lock.since));
    if !lock.reason.is_empty() {
        text.push_str(&format!(": {}", lock.reason));
    }
    if lock.expires_at.is_some() {
        text.push_str(&format!(" (lease until {})", when(&lock.expires_at)));
    }
    text
}

fn lock_json(lock: &Option<LockInfo>) -> Value {
    lock.as_ref().map_or(Value::Null, |l| {
        json!({
            "holder": l.holder,
            "deploy_id": l.deploy_id,
            "reason": l.reason,
            "since": timestamp(&l.since),
            "expires_at": timestamp(&l.expires_at),
        })
    })
}

/// A note is made of what agents said (errors, check output): shown on one line.
fn paint_note(text: &str, tone: Tone, colour: bool) -> String {
    table::paint(&crate::output::escape::one_line(text), tone, colour)
}

pub fn state_name(state: i32) -> &'static str {
    match ServiceState::try_from(state).unwrap_or(ServiceState::Unspecified) {
        ServiceState::Running => "running",
        ServiceState::Stopped => "stopped",
        ServiceState::Failed => "failed",
        ServiceState::Starting => "starting",
        ServiceState::Unknown | ServiceState::Unspecified => "unknown",
    }
}

fn level_name(level: i32) -> &'static str {
    match Level::try_from(level).unwrap_or(Level::Unspecified) {
        Level::Ok => "ok",
        Level::Warn => "warn",
        Level::Critical => "critical",
        Level::Unspecified => "unknown",
    }
}

fn timestamp(ts: &Option<prost_types::Timestamp>) -> Value {
    ts.as_ref().map_or(Value::Null, |t| json!(t.to_string()))
}

/// The machine-readable form of the same reports.
pub fn to_json(reports: &[HostReport]) -> Value {
    Value::Array(
        reports
            .iter()
            .map(|r| match &r.result {
                Err(err) => json!({
                    "host": r.name, "address": r.address, "reachable": r.refused.is_some(),
                    "error": r.refused.as_ref().unwrap_or(err),
                }),
                Ok(s) => {
                    let res = s.resources.clone().unwrap_or_default();
                    json!({
                        "host": r.name,
                        "address": r.address,
                        "reachable": true,
                        "elapsed_ms": r.elapsed.as_millis() as u64,
                        "version": s.version,
                        "hostname": s.hostname,
                        "sampled_at": timestamp(&s.sampled_at),
                        "resources": {
                            "cpu_percent": res.cpu_percent,
                            "cpu_level": level_name(res.cpu_level),
                            "load": [res.load1, res.load5, res.load15],
                            "memory_used_bytes": res.memory_used_bytes,
                            "memory_total_bytes": res.memory_total_bytes,
                            "memory_level": level_name(res.memory_level),
                            "swap_used_bytes": res.swap_used_bytes,
                            "swap_total_bytes": res.swap_total_bytes,
                            "uptime_seconds": res.uptime_seconds,
                            "agent_resident_memory_bytes": res.agent_resident_memory_bytes,
                            "disks": res.disks.iter().map(|d| json!({
                                "mount": d.mount, "used_bytes": d.used_bytes,
                                "total_bytes": d.total_bytes, "level": level_name(d.level),
                            })).collect::<Vec<_>>(),
                        },
                        "apps": s.apps.iter().map(|a| json!({
                            "name": a.name,
                            "deployed": !a.current_release.is_empty(),
                            "current_release": a.current_release,
                            "current_commit": a.current_commit,
                            "running_job": if a.running_job.is_empty() {
                                Value::Null
                            } else {
                                json!(a.running_job)
                            },
                            "lock": lock_json(&a.lock),
                            "services": a.services.iter().map(|v| json!({
                                "kind": v.kind, "name": v.name,
                                "state": state_name(v.state), "detail": v.detail,
                            })).collect::<Vec<_>>(),
                            "checks": a.checks.iter().map(|c| json!({
                                "name": c.name, "kind": c.kind, "ok": c.ok, "has_run": c.has_run,
                                "gate": !c.monitor_only,
                                "last_run": timestamp(&c.last_run),
                                "duration_ms": c.duration_ms, "output": c.output,
                            })).collect::<Vec<_>>(),
                        })).collect::<Vec<_>>(),
                    })
                }
            })
            .collect(),
    )
}
