//! How job events look: the live text an operator watches while a job runs, and one
//! JSON object per event for `--json`.
//!
//! ```text
//! ==> web-1: deploy carbex main (abc1234) as dana
//!   ▶ build  composer install --no-dev
//!     │ Installing dependencies from lock file
//!     ! npm WARN deprecated glob@7.2.3        (a stderr line)
//!   ✓ build  3.2s
//!   ✗ migrate  exit 1 after 0.4s: SQLSTATE[42P01]
//!   ! migrations are not reversed automatically; `hoist rollback --migrate` does it
//! ==> web-1: failed after 4.1s: step migrate failed
//! ```
//!
//! Everything here is a pure function of the events (so tests feed hand-made
//! sequences); [`Output`] writes the results to stdout, or to a buffer in tests.

use std::io::Write;

use hoist_proto::v1::{
    JobEvent, JobFinished, JobKind, JobResult, JobStarted, OutputOmitted, StepFinished, StepOutput,
    Stream as OutputStream, job_event::Kind,
};
use prost_types::Timestamp;
use serde_json::{Value, json};

use crate::output::{
    escape::{one_line, visible},
    table::{Tone, paint},
};

// === names ===

pub fn kind_name(kind: i32) -> &'static str {
    match JobKind::try_from(kind).unwrap_or(JobKind::Unspecified) {
        JobKind::Deploy => "deploy",
        JobKind::Rollback => "rollback",
        JobKind::Restart => "restart",
        JobKind::Env => "env",
        JobKind::Task => "task",
        JobKind::Stop => "stop",
        JobKind::Start => "start",
        JobKind::Unspecified => "job",
    }
}

/// A job result as an operator reads it.
pub fn result_name(result: i32) -> &'static str {
    match JobResult::try_from(result).unwrap_or(JobResult::Unspecified) {
        JobResult::Running => "running",
        JobResult::Succeeded => "succeeded",
        JobResult::Failed => "failed",
        JobResult::RolledBack => "rolled back",
        JobResult::Interrupted => "interrupted",
        JobResult::Refused => "refused",
        JobResult::Unspecified => "unknown",
    }
}

/// A job result in JSON: one word, snake case.
pub fn result_key(result: i32) -> &'static str {
    match JobResult::try_from(result).unwrap_or(JobResult::Unspecified) {
        JobResult::RolledBack => "rolled_back",
        other => result_name(other as i32),
    }
}

pub fn result_tone(result: i32) -> Tone {
    match JobResult::try_from(result).unwrap_or(JobResult::Unspecified) {
        JobResult::Succeeded => Tone::Good,
        JobResult::Running => Tone::Plain,
        JobResult::RolledBack | JobResult::Refused => Tone::Warn,
        JobResult::Failed | JobResult::Interrupted | JobResult::Unspecified => Tone::Bad,
    }
}

// === durations, times, commits ===

/// `0.4s`, `12.3s`, `2m05s`, `1h03m`.
pub fn human_duration(ms: u64) -> String {
    let tenths = (ms + 50) / 100;
    if tenths < 600 {
        return format!("{}.{}s", tenths / 10, tenths % 10);
    }
    let secs = (ms + 500) / 1000;
    if secs < 3600 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        let mins = secs / 60;
        format!("{}h{:02}m", mins / 60, mins % 60)
    }
}

/// The abbreviated commit operators recognise (7 characters).
pub fn short_commit(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}

/// The second of `ts`, in UTC.
fn datetime(ts: &Timestamp) -> Option<jiff::Timestamp> {
    jiff::Timestamp::from_second(ts.seconds).ok()
}

/// `2026-11-22 10:15:00 UTC`; `-` when absent.
pub fn utc_time(ts: Option<&Timestamp>) -> String {
    match ts.and_then(datetime) {
        Some(t) => t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => "-".into(),
    }
}

/// `10:15:00` (UTC); `-` when absent.
pub fn utc_clock(ts: Option<&Timestamp>) -> String {
    match ts.and_then(datetime) {
        Some(t) => t.strftime("%H:%M:%S").to_string(),
        None => "-".into(),
    }
}

/// Milliseconds from `a` to `b`, when both are known and in order.
pub fn millis_between(a: Option<&Timestamp>, b: Option<&Timestamp>) -> Option<u64> {
    let (a, b) = (a?, b?);
    let ms = |t: &Timestamp| i128::from(t.seconds) * 1000 + i128::from(t.nanos) / 1_000_000;
    u64::try_from(ms(b) - ms(a)).ok()
}

/// RFC 3339 for JSON; `null` when absent.
pub fn timestamp_json(ts: Option<&Timestamp>) -> Value {
    ts.map_or(Value::Null, |t| json!(t.to_string()))
}

// === live text ===

/// `==> web-1: deploy carbex main (abc1234) as dana`.
pub fn started_line(host: &str, started: &JobStarted) -> String {
    let kind = JobKind::try_from(started.kind).unwrap_or(JobKind::Unspecified);
    let mut text = format!(
        "==> {host}: {} {}",
        kind_name(started.kind),
        one_line(&started.app)
    );
    match kind {
        JobKind::Rollback if !started.release.is_empty() => {
            text.push_str(&format!(" to {}", one_line(&started.release)));
        }
        _ if !started.r#ref.is_empty() => {
            text.push_str(&format!(" {}", one_line(&started.r#ref)));
        }
        _ => {}
    }
    if !started.commit.is_empty() {
        text.push_str(&format!(" ({})", one_line(short_commit(&started.commit))));
    }
    if !started.who.is_empty() {
        text.push_str(&format!(" as {}", one_line(&started.who)));
    }
    if started.migrate {
        text.push_str(", with migrations");
    }
    if started.forced {
        text.push_str(", forced");
    }
    if !started.reason.is_empty() {
        text.push_str(&format!(" (reason: {})", one_line(&started.reason)));
    }
    text
}

/// `  job ID (follow it from elsewhere: hoist attach ID)`, printed when a job starts so
/// that another terminal can find it.
pub fn job_id_line(job_id: &str) -> String {
    format!("  job {job_id} (follow it from elsewhere: hoist attach {job_id})")
}

/// The first line of a possibly multi-line text, and the rest.
fn split_first_line(text: &str) -> (&str, Vec<&str>) {
    let mut lines = text.trim_end().lines();
    let first = lines.next().unwrap_or("");
    (first, lines.collect())
}

/// `  ✓ build  3.2s` or `  ✗ migrate  exit 1 after 0.4s: <error>` (and the error's
/// further lines, indented).
pub fn step_finished_text(step: &StepFinished, colour: bool) -> String {
    let took = human_duration(step.duration_ms);
    let (name, error) = (one_line(&step.step), visible(&step.error));
    if step.ok {
        return format!("  {} {}  {took}\n", paint("✓", Tone::Good, colour), name);
    }
    let how = if step.timed_out {
        format!("timed out after {took}")
    } else if step.exit_code >= 0 {
        format!("exit {} after {took}", step.exit_code)
    } else {
        format!("failed after {took}")
    };
    let (first, rest) = split_first_line(&error);
    let mut text = format!("  {} {name}  {how}", paint("✗", Tone::Bad, colour));
    if !first.is_empty() {
        text.push_str(": ");
        text.push_str(first);
    }
    text.push('\n');
    for line in rest {
        text.push_str(&format!("      {line}\n"));
    }
    text
}

/// `    │ line` for stdout, `    ! line` for stderr.
pub fn output_text(output: &StepOutput, colour: bool) -> String {
    let line = one_line(output.line.trim_end_matches(['\n', '\r']));
    // A piece of a longer line, shown on its own: `…` says the line goes on.
    let more = if output.continued { "…" } else { "" };
    if output.stream == OutputStream::Stderr as i32 {
        format!(
            "    {}{more}\n",
            paint(&format!("! {line}"), Tone::Dim, colour)
        )
    } else {
        format!("    {} {line}{more}\n", paint("│", Tone::Dim, colour))
    }
}

/// Joins the pieces of lines longer than the agent's 64 KiB events back into lines: a
/// piece marked `continued` is printed without a line break, and the next piece of the
/// same stream goes on from there.
#[derive(Debug, Default)]
pub struct LineJoiner {
    /// The stream of the line left open by a continued piece.
    open: Option<i32>,
}

impl LineJoiner {
    /// The text of one output event.
    pub fn piece(&mut self, output: &StepOutput, colour: bool) -> String {
        let line = if output.continued {
            output.line.as_str()
        } else {
            output.line.trim_end_matches(['\n', '\r'])
        };
        let stderr = output.stream == OutputStream::Stderr as i32;
        let mut text = String::new();
        match self.open {
            Some(stream) if stream == output.stream => {
                if stderr {
                    text.push_str(&paint(line, Tone::Dim, colour));
                } else {
                    text.push_str(line);
                }
            }
            open => {
                if open.is_some() {
                    text.push('\n');
                }
                if stderr {
                    text.push_str(&format!(
                        "    {}",
                        paint(&format!("! {line}"), Tone::Dim, colour)
                    ));
                } else {
                    text.push_str(&format!("    {} {line}", paint("│", Tone::Dim, colour)));
                }
            }
        }
        if output.continued {
            self.open = Some(output.stream);
        } else {
            text.push('\n');
            self.open = None;
        }
        text
    }

    /// Ends a line left open (before anything else is printed).
    pub fn close(&mut self) -> &'static str {
        if self.open.take().is_some() { "\n" } else { "" }
    }
}

/// `  ! 1234 output events (41.2 MiB) left out here …`: where the agent dropped the
/// middle of a job's output.
pub fn omitted_text(omitted: &OutputOmitted, colour: bool) -> String {
    notice_text(
        &format!(
            "{} output event(s) ({}) left out here: the agent keeps the first and the last 8 MiB of a job's output",
            omitted.events,
            size(omitted.bytes)
        ),
        colour,
    )
}

/// `512 B`, `64.0 KiB`, `41.2 MiB`.
fn size(bytes: u64) -> String {
    match bytes {
        0..1024 => format!("{bytes} B"),
        1024..1_048_576 => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / 1_048_576.0),
    }
}

/// `  ! text`, further lines indented under it.
pub fn notice_text(message: &str, colour: bool) -> String {
    let message = visible(message);
    let (first, rest) = split_first_line(&message);
    let mut text = format!("  {} {first}\n", paint("!", Tone::Warn, colour));
    for line in rest {
        text.push_str(&format!("    {line}\n"));
    }
    text
}

/// `==> web-1: succeeded: release R (was P) in 12.3s`, `rolled back` or `failed`.
pub fn finished_line(host: &str, finished: &JobFinished, colour: bool) -> String {
    let took = human_duration(finished.duration_ms);
    let (release, previous, error) = (
        one_line(&finished.release),
        one_line(&finished.previous_release),
        visible(&finished.error),
    );
    let result = JobResult::try_from(finished.result).unwrap_or(JobResult::Unspecified);
    let word = paint(
        result_name(finished.result),
        result_tone(finished.result),
        colour,
    );
    let mut text = format!("==> {host}: {word}");
    match result {
        JobResult::Succeeded => {
            if !finished.release.is_empty() {
                text.push_str(&format!(": release {release}"));
                if !previous.is_empty() && previous != release {
                    text.push_str(&format!(" (was {previous})"));
                }
            }
            text.push_str(&format!(" in {took}"));
        }
        JobResult::RolledBack => {
            text.push_str(&format!(" after {took}"));
            if !finished.release.is_empty() {
                text.push_str(&format!(": release {release} failed its checks"));
            }
            if !previous.is_empty() {
                text.push_str(&format!("; {previous} serves again"));
            }
            // The reason goes underneath: the line above is long enough.
            text.push('\n');
            for line in error.trim_end().lines() {
                text.push_str(&format!("    {line}\n"));
            }
            return text;
        }
        _ => text.push_str(&format!(" after {took}")),
    }
    let (first, rest) = split_first_line(&error);
    if !first.is_empty() {
        text.push_str(&format!(": {first}"));
    }
    text.push('\n');
    for line in rest {
        text.push_str(&format!("    {line}\n"));
    }
    text
}

/// The live text of one event, ending in a newline (empty for an event without kind).
pub fn event_text(host: &str, event: &JobEvent, colour: bool) -> String {
    match &event.kind {
        Some(Kind::Started(s)) => format!(
            "{}\n{}\n",
            started_line(host, s),
            paint(&job_id_line(&event.job_id), Tone::Dim, colour)
        ),
        Some(Kind::StepStarted(s)) if s.description.is_empty() => {
            format!(
                "  {} {}\n",
                paint("▶", Tone::Dim, colour),
                one_line(&s.step)
            )
        }
        Some(Kind::StepStarted(s)) => {
            format!(
                "  {} {}  {}\n",
                paint("▶", Tone::Dim, colour),
                one_line(&s.step),
                one_line(&s.description)
            )
        }
        Some(Kind::Output(o)) => output_text(o, colour),
        Some(Kind::StepFinished(f)) => step_finished_text(f, colour),
        Some(Kind::Notice(n)) => notice_text(&n.message, colour),
        Some(Kind::Omitted(m)) => omitted_text(m, colour),
        Some(Kind::Finished(f)) => finished_line(host, f, colour),
        None => String::new(),
    }
}

// === JSON ===

/// One event as one JSON object: `host`, `job_id`, `seq`, `at`, `kind` and the kind's
/// fields. Only what the agent sent; nothing is added from elsewhere.
pub fn event_to_json(host: &str, event: &JobEvent) -> Value {
    let mut object = json!({
        "host": host,
        "job_id": event.job_id,
        "seq": event.seq,
        "at": timestamp_json(event.at.as_ref()),
    });
    let fields = match &event.kind {
        Some(Kind::Started(s)) => json!({
            "kind": "started",
            "job_kind": kind_name(s.kind),
            "app": s.app,
            "ref": s.r#ref,
            "commit": s.commit,
            "release": s.release,
            "who": s.who,
            "migrate": s.migrate,
            "forced": s.forced,
            "reason": s.reason,
        }),
        Some(Kind::StepStarted(s)) => json!({
            "kind": "step_started", "step": s.step, "description": s.description,
        }),
        Some(Kind::Output(o)) => json!({
            "kind": "output",
            "step": o.step,
            "stream": if o.stream == OutputStream::Stderr as i32 { "stderr" } else { "stdout" },
            "line": o.line,
            "continued": o.continued,
        }),
        Some(Kind::Omitted(m)) => json!({
            "kind": "omitted",
            "events": m.events,
            "bytes": m.bytes,
            "first_seq": m.first_seq,
            "last_seq": m.last_seq,
        }),
        Some(Kind::StepFinished(f)) => json!({
            "kind": "step_finished",
            "step": f.step,
            "ok": f.ok,
            "exit_code": f.exit_code,
            "duration_ms": f.duration_ms,
            "error": f.error,
            "timed_out": f.timed_out,
        }),
        Some(Kind::Notice(n)) => json!({ "kind": "notice", "message": n.message }),
        Some(Kind::Finished(f)) => json!({
            "kind": "finished",
            "result": result_key(f.result),
            "release": f.release,
            "previous_release": f.previous_release,
            "duration_ms": f.duration_ms,
            "error": f.error,
        }),
        None => json!({ "kind": "unknown" }),
    };
    if let (Value::Object(object), Value::Object(fields)) = (&mut object, fields) {
        object.extend(fields);
    }
    object
}

// === output ===

/// Where a command's output goes: text (coloured or not) or JSON lines. Write errors
/// (a closed pipe) are ignored: the job on the agent does not depend on the terminal.
pub struct Output<'a> {
    out: Sink<'a>,
    pub colour: bool,
    pub json: bool,
    /// Joins the pieces of long lines in the text of [`Output::event`].
    lines: LineJoiner,
}

/// Where [`Output`] writes (no drop glue: a borrowed buffer is free again after the
/// last write).
enum Sink<'a> {
    Borrowed(&'a mut (dyn Write + Send)),
    Stdout(std::io::Stdout),
}

impl Write for Sink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Borrowed(w) => w.write(buf),
            Sink::Stdout(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Borrowed(w) => w.flush(),
            Sink::Stdout(w) => w.flush(),
        }
    }
}

impl<'a> Output<'a> {
    pub fn new(out: &'a mut (dyn Write + Send), colour: bool, json: bool) -> Output<'a> {
        Output {
            out: Sink::Borrowed(out),
            colour,
            json,
            lines: LineJoiner::default(),
        }
    }

    /// Output to stdout.
    pub fn stdout(colour: bool, json: bool) -> Output<'static> {
        Output {
            out: Sink::Stdout(std::io::stdout()),
            colour,
            json,
            lines: LineJoiner::default(),
        }
    }

    /// One job event from `host`, as text or as a JSON line.
    pub fn event(&mut self, host: &str, event: &JobEvent) {
        if self.json {
            self.json_line(&event_to_json(host, event));
        } else if let Some(Kind::Output(output)) = &event.kind {
            let text = self.lines.piece(output, self.colour);
            self.write_text(&text);
        } else {
            let text = event_text(host, event, self.colour);
            self.text(&text);
        }
    }

    /// The controller's own remark about a host's job (interrupt, re-attach, refusal):
    /// `  ! text`, or `{"host", "job_id", "kind": "controller", "message"}`.
    pub fn note(&mut self, host: &str, job_id: &str, message: &str) {
        if self.json {
            self.json_line(&json!({
                "host": host, "job_id": job_id, "kind": "controller", "message": message,
            }));
        } else {
            let text = notice_text(message, self.colour);
            self.text(&text);
        }
    }

    /// Text output; nothing in JSON mode. Ends a long line left open first.
    pub fn text(&mut self, text: &str) {
        if !self.json {
            let close = self.lines.close();
            let _ = self.out.write_all(close.as_bytes());
            self.write_text(text);
        }
    }

    fn write_text(&mut self, text: &str) {
        let _ = self.out.write_all(text.as_bytes());
        let _ = self.out.flush();
    }

    /// One JSON-lines record: an object with a `kind`, given the contract's `"v"`.
    pub fn json_line(&mut self, value: &Value) {
        let _ = writeln!(self.out, "{}", versioned(value.clone()));
        let _ = self.out.flush();
    }

    /// The one document a query command prints: `{"kind", "v", "hosts": [...]}`.
    pub fn json_document(&mut self, kind: &str, hosts: Value) {
        let _ = writeln!(self.out, "{}", document(kind, hosts));
        let _ = self.out.flush();
    }
}

/// The version of the `--json` contract (docs/REFERENCE.md, "JSON output"): bumped when
/// a field changes meaning or goes away; new fields and kinds do not bump it.
pub const JSON_VERSION: u64 = 1;

/// `value` with `"v": JSON_VERSION` (objects only).
pub fn versioned(mut value: Value) -> Value {
    if let Value::Object(map) = &mut value {
        map.insert("v".into(), JSON_VERSION.into());
    }
    value
}

/// A pretty-printed document: `{"kind": KIND, "v": 1, "hosts": HOSTS}`.
pub fn document(kind: &str, hosts: Value) -> String {
    let value = json!({ "kind": kind, "v": JSON_VERSION, "hosts": hosts });
    serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string())
}

#[cfg(test)]
pub(crate) mod tests;
