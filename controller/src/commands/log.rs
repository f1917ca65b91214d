//! `hoist log APP [--job ID] [--limit N]`: the agents' job journals.
//!
//! Without `--job`: each host's recent jobs, newest first. With `--job`: that job as
//! the deployment log operators used to keep by hand: who, when, ref and commit,
//! releases, override; each step with its start, end, duration, exit code and output;
//! then the verification (the check steps) and the automatic rollback, and the result.
//!
//! Steps are sorted into sections by name and order: steps named `check…`,
//! `health…` or `verify…` are verification; in a deploy, the steps after a failed
//! check (or after a notice that the agent is rolling back, or named `rollback…`,
//! `switch_back…`, `revert…`) are the rollback.

use std::{collections::HashMap, fmt::Write as _, time::Duration};

use hoist_proto::v1::{
    JobEvent, JobFinished, JobKind, JobLogRequest, JobResult, JobStarted, JobSummary, StepFinished,
    StepOutput, job_event::Kind,
};
use prost_types::Timestamp;
use serde_json::{Value, json};

use clap::Args;

use crate::commands::{Ctx, Global, QUERY_TIMEOUT, parse_duration};
use crate::{
    Failure,
    agents::client::Credentials,
    agents::fanout::{self, Answer},
    fleet::Host,
    output::render::{self, Output},
    output::table::{self, Cell, Tone},
};

#[derive(Args, Debug)]
pub struct LogArgs {
    /// The app, as named in the agents' config.
    pub app: String,
    /// Show this job's full log: each step's times, exit code and output.
    #[arg(long, value_name = "ID")]
    pub job: Option<String>,
    /// How many recent jobs per host.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub limit: u32,
    /// Per-host limit for connecting and answering.
    #[arg(long, default_value = QUERY_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `hoist log APP [--job ID]`.
pub async fn run(global: &Global, args: LogArgs) -> Result<(), Failure> {
    let mut ctx = Ctx::load(global)?;
    let hosts = ctx.hosts.iter().collect::<Vec<_>>();
    match &args.job {
        Some(id) => {
            job(
                &hosts,
                &ctx.creds,
                args.timeout,
                &args.app,
                id,
                &mut ctx.out,
            )
            .await
        }
        None => {
            recent(
                &hosts,
                &ctx.creds,
                args.timeout,
                &args.app,
                args.limit,
                &mut ctx.out,
            )
            .await
        }
    }
}

// === recent jobs ===

/// One section per host: JOB, KIND, RESULT, REF, COMMIT, RELEASE, WHO, STARTED,
/// DURATION; failed jobs' errors and overrides' reasons underneath.
pub fn render_recent(answers: &[Answer<Vec<JobSummary>>], colour: bool) -> String {
    let mut text = String::new();
    for (i, answer) in answers.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        let _ = writeln!(text, "{} ({})", answer.host, answer.address);
        let jobs = match &answer.result {
            Err(err) => {
                let _ = writeln!(
                    text,
                    "{}",
                    table::paint(&format!("  {err}"), Tone::Bad, colour)
                );
                continue;
            }
            Ok(jobs) if jobs.is_empty() => {
                let _ = writeln!(text, "{}", table::paint("  no jobs yet", Tone::Dim, colour));
                continue;
            }
            Ok(jobs) => jobs,
        };
        let rows: Vec<Vec<Cell>> = jobs
            .iter()
            .map(|job| {
                let dash = |s: &str| {
                    if s.is_empty() {
                        Cell::new("-", Tone::Dim)
                    } else {
                        Cell::from(s.to_string())
                    }
                };
                vec![
                    Cell::from(job.job_id.clone()),
                    Cell::from(render::kind_name(job.kind)),
                    Cell::new(
                        render::result_name(job.result),
                        render::result_tone(job.result),
                    ),
                    dash(&job.r#ref),
                    dash(render::short_commit(&job.commit)),
                    dash(&job.release),
                    dash(&job.who),
                    Cell::from(render::utc_time(job.started_at.as_ref())),
                    if job.result == JobResult::Running as i32 {
                        Cell::new("-", Tone::Dim)
                    } else {
                        Cell::from(render::human_duration(job.duration_ms))
                    },
                ]
            })
            .collect();
        let header = [
            "JOB", "KIND", "RESULT", "REF", "COMMIT", "RELEASE", "WHO", "STARTED", "DURATION",
        ];
        for line in table::render(&header, &rows, colour).lines() {
            let _ = writeln!(text, "  {line}");
        }
        for job in jobs {
            if !job.error.is_empty() {
                let first = job.error.lines().next().unwrap_or_default();
                let note = format!("  ! {}: {first}", job.job_id);
                let _ = writeln!(
                    text,
                    "{}",
                    table::paint(&note, render::result_tone(job.result), colour)
                );
            }
            if job.forced || !job.reason.is_empty() {
                let what = if job.forced { "forced" } else { "reason" };
                let _ = writeln!(text, "  ! {}: {what}: {}", job.job_id, job.reason);
            }
        }
    }
    text
}

pub fn summary_json(job: &JobSummary) -> Value {
    json!({
        "job_id": job.job_id,
        "kind": render::kind_name(job.kind),
        "app": job.app,
        "ref": job.r#ref,
        "commit": job.commit,
        "release": job.release,
        "who": job.who,
        "started_at": render::timestamp_json(job.started_at.as_ref()),
        "duration_ms": job.duration_ms,
        "result": render::result_key(job.result),
        "error": job.error,
        "forced": job.forced,
        "reason": job.reason,
    })
}

pub fn recent_json(answers: &[Answer<Vec<JobSummary>>]) -> Value {
    Value::Array(
        answers
            .iter()
            .map(|a| match &a.result {
                Err(err) => json!({ "host": a.host, "error": err.to_string() }),
                Ok(jobs) => json!({
                    "host": a.host,
                    "jobs": jobs.iter().map(summary_json).collect::<Vec<_>>(),
                }),
            })
            .collect(),
    )
}

/// `hoist log APP [--limit N]`.
pub async fn recent(
    hosts: &[&Host],
    creds: &Credentials,
    timeout: Duration,
    app: &str,
    limit: u32,
    out: &mut Output<'_>,
) -> Result<(), Failure> {
    let request = JobLogRequest {
        app: app.to_string(),
        job_id: String::new(),
        limit,
    };
    let answers = fanout::ask_all(hosts, creds, timeout, |mut client| {
        let request = request.clone();
        async move { client.job_log(request).await.map(|r| r.into_inner().jobs) }
    })
    .await;
    if out.json {
        out.json_document(&recent_json(&answers));
    } else {
        let text = render_recent(&answers, out.colour);
        out.text(&text);
    }
    fanout::unanswered(&answers, "job log").map_err(Failure::failed)
}

// === one job: the deployment log ===

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Section {
    Steps,
    Verification,
    Rollback,
}

/// A step as the log shows it.
#[derive(Default)]
struct StepLog<'e> {
    name: &'e str,
    description: &'e str,
    started: Option<&'e Timestamp>,
    ended: Option<&'e Timestamp>,
    finished: Option<&'e StepFinished>,
    output: Vec<&'e StepOutput>,
}

enum Entry<'e> {
    Step(StepLog<'e>),
    Notice(&'e str),
}

fn is_check(step: &str) -> bool {
    let step = step.to_ascii_lowercase();
    ["check", "health", "verify"]
        .iter()
        .any(|p| step.starts_with(p))
}

fn is_rollback_step(step: &str) -> bool {
    let step = step.to_ascii_lowercase();
    ["rollback", "switch_back", "revert"]
        .iter()
        .any(|p| step.starts_with(p))
}

/// A job's events sorted into header, sections and end.
struct JobLog<'e> {
    started: Option<&'e JobStarted>,
    finished: Option<&'e JobFinished>,
    first_at: Option<&'e Timestamp>,
    finished_at: Option<&'e Timestamp>,
    steps: Vec<Entry<'e>>,
    verification: Vec<Entry<'e>>,
    rollback: Vec<Entry<'e>>,
}

impl<'e> JobLog<'e> {
    fn new(events: &'e [JobEvent]) -> JobLog<'e> {
        let mut log = JobLog {
            started: None,
            finished: None,
            first_at: events.first().and_then(|e| e.at.as_ref()),
            finished_at: None,
            steps: Vec::new(),
            verification: Vec::new(),
            rollback: Vec::new(),
        };
        let deploy = |log: &JobLog| log.started.is_none_or(|s| s.kind == JobKind::Deploy as i32);
        // Steps outside verification go here: `Rollback` once a deploy's check failed.
        let mut phase = Section::Steps;
        let mut last = Section::Steps;
        let mut open: HashMap<&str, (Section, usize)> = HashMap::new();
        for event in events {
            let at = event.at.as_ref();
            match &event.kind {
                Some(Kind::Started(s)) => log.started = Some(s),
                Some(Kind::StepStarted(s)) => {
                    let section = if is_check(&s.step) {
                        Section::Verification
                    } else if deploy(&log) && is_rollback_step(&s.step) {
                        phase = Section::Rollback;
                        phase
                    } else {
                        phase
                    };
                    let step = StepLog {
                        name: &s.step,
                        description: &s.description,
                        started: at,
                        ..Default::default()
                    };
                    let entries = log.section(section);
                    entries.push(Entry::Step(step));
                    open.insert(&s.step, (section, entries.len() - 1));
                    last = section;
                }
                Some(Kind::Output(o)) => {
                    let (section, index) = log.open_or_new(&mut open, &o.step, phase);
                    if let Some(Entry::Step(step)) = log.section(section).get_mut(index) {
                        step.output.push(o);
                    }
                }
                Some(Kind::StepFinished(f)) => {
                    let (section, index) = log.open_or_new(&mut open, &f.step, phase);
                    if let Some(Entry::Step(step)) = log.section(section).get_mut(index) {
                        step.finished = Some(f);
                        step.ended = at;
                    }
                    if is_check(&f.step) && !f.ok && deploy(&log) {
                        phase = Section::Rollback;
                    }
                }
                Some(Kind::Notice(n)) => {
                    let lower = n.message.to_ascii_lowercase();
                    if deploy(&log) && lower.contains("rolling back") {
                        phase = Section::Rollback;
                        last = phase;
                    }
                    log.section(last).push(Entry::Notice(&n.message));
                }
                Some(Kind::Finished(f)) => {
                    log.finished = Some(f);
                    log.finished_at = at;
                }
                None => {}
            }
        }
        log
    }

    fn section(&mut self, section: Section) -> &mut Vec<Entry<'e>> {
        match section {
            Section::Steps => &mut self.steps,
            Section::Verification => &mut self.verification,
            Section::Rollback => &mut self.rollback,
        }
    }

    /// The latest step called `name` (agents may send a step's last output after its
    /// end), or a new entry for a step whose start is missing.
    fn open_or_new(
        &mut self,
        open: &mut HashMap<&'e str, (Section, usize)>,
        name: &'e str,
        phase: Section,
    ) -> (Section, usize) {
        if let Some(found) = open.get(name) {
            return *found;
        }
        let section = if is_check(name) {
            Section::Verification
        } else {
            phase
        };
        let entries = self.section(section);
        entries.push(Entry::Step(StepLog {
            name,
            ..Default::default()
        }));
        let found = (section, entries.len() - 1);
        open.insert(name, found);
        found
    }
}

fn title(kind: i32) -> &'static str {
    match JobKind::try_from(kind).unwrap_or(JobKind::Unspecified) {
        JobKind::Deploy => "Deployment log",
        JobKind::Rollback => "Rollback log",
        JobKind::Restart => "Restart log",
        JobKind::Env => "Env change log",
        JobKind::Unspecified => "Job log",
    }
}

fn step_line(step: &StepLog, width: usize, colour: bool) -> String {
    let name = format!("{:width$}", step.name);
    let start = render::utc_clock(step.started);
    let Some(f) = step.finished else {
        let state = table::paint("did not finish", Tone::Bad, colour);
        return format!("  {name}  {start} → …         {state}\n");
    };
    let end = render::utc_clock(step.ended);
    let took = render::human_duration(f.duration_ms);
    let exit = if f.timed_out {
        "timed out".to_string()
    } else if f.exit_code >= 0 {
        format!("exit {}", f.exit_code)
    } else {
        "exit -".to_string()
    };
    let state = if f.ok {
        table::paint("ok", Tone::Good, colour)
    } else {
        table::paint("FAILED", Tone::Bad, colour)
    };
    let mut line = format!("  {name}  {start} → {end}  {took:>6}  {exit:<9}  {state}");
    let mut lines = f.error.trim_end().lines();
    if let Some(first) = lines.next() {
        let _ = write!(line, ": {first}");
    }
    line.push('\n');
    for more in lines {
        let _ = writeln!(line, "      {more}");
    }
    line
}

fn render_entries(entries: &[Entry], width: usize, colour: bool, text: &mut String) {
    for entry in entries {
        match entry {
            Entry::Notice(message) => text.push_str(&render::notice_text(message, colour)),
            Entry::Step(step) => {
                text.push_str(&step_line(step, width, colour));
                if !step.description.is_empty() {
                    let _ = writeln!(
                        text,
                        "    {}",
                        table::paint(step.description, Tone::Dim, colour)
                    );
                }
                for output in &step.output {
                    text.push_str(&render::output_text(output, colour));
                }
            }
        }
    }
}

/// The deployment log of one job on `host` from its events. `summary` (the job's
/// journal entry, when the agent has one) fills in what the events leave out: agents
/// announce a job before they resolve its ref to a commit.
pub fn render_job(
    host: &str,
    app: &str,
    job_id: &str,
    events: &[JobEvent],
    summary: Option<&JobSummary>,
    colour: bool,
) -> String {
    let log = JobLog::new(events);
    let mut started = log.started.cloned().unwrap_or_default();
    if let Some(summary) = summary {
        let fill = |field: &mut String, from: &str| {
            if field.is_empty() {
                *field = from.to_string();
            }
        };
        fill(&mut started.commit, &summary.commit);
        fill(&mut started.r#ref, &summary.r#ref);
        fill(&mut started.who, &summary.who);
        fill(&mut started.release, &summary.release);
        fill(&mut started.reason, &summary.reason);
        started.forced |= summary.forced;
        if started.kind == JobKind::Unspecified as i32 {
            started.kind = summary.kind;
        }
    }
    let app = if started.app.is_empty() {
        app
    } else {
        started.app.as_str()
    };
    let mut text = format!("{}: {app} on {host}\n", title(started.kind));
    let mut field = |key: &str, value: &str| {
        let _ = writeln!(text, "  {key:<10} {value}");
    };
    field("job", job_id);
    if !started.who.is_empty() {
        field("who", &started.who);
    }
    field("started", &render::utc_time(log.first_at));
    if let Some(finished) = log.finished {
        let took = render::human_duration(finished.duration_ms);
        field(
            "ended",
            &format!("{} ({took})", render::utc_time(log.finished_at)),
        );
    }
    match (started.r#ref.as_str(), started.commit.as_str()) {
        ("", "") => {}
        ("", commit) => field("commit", commit),
        (r, "") => field("ref", r),
        (r, commit) => field("ref", &format!("{r} → {commit}")),
    }
    let release = log
        .finished
        .map(|f| f.release.as_str())
        .filter(|r| !r.is_empty())
        .unwrap_or(started.release.as_str());
    if !release.is_empty() {
        field("release", release);
    }
    if let Some(previous) = log
        .finished
        .map(|f| f.previous_release.as_str())
        .filter(|p| !p.is_empty())
    {
        field("previous", previous);
    }
    if started.kind == JobKind::Deploy as i32 || started.migrate {
        field("migrate", if started.migrate { "yes" } else { "no" });
    }
    match (started.forced, started.reason.as_str()) {
        (true, "") => field("forced", "yes"),
        (true, reason) => field("forced", &format!("yes: {reason}")),
        (false, "") => {}
        (false, reason) => field("reason", reason),
    }

    let width = [&log.steps, &log.verification, &log.rollback]
        .iter()
        .flat_map(|entries| entries.iter())
        .filter_map(|e| match e {
            Entry::Step(s) => Some(s.name.chars().count()),
            Entry::Notice(_) => None,
        })
        .max()
        .unwrap_or(0);
    for (heading, entries) in [
        ("Steps", &log.steps),
        ("Verification", &log.verification),
        ("Rollback", &log.rollback),
    ] {
        if !entries.is_empty() {
            let _ = writeln!(text, "\n{heading}");
            render_entries(entries, width, colour, &mut text);
        }
    }

    text.push('\n');
    match log.finished {
        Some(f) => {
            let took = render::human_duration(f.duration_ms);
            let word = table::paint(
                render::result_name(f.result),
                render::result_tone(f.result),
                colour,
            );
            let when = if f.result == JobResult::Succeeded as i32 {
                format!("in {took}")
            } else {
                format!("after {took}")
            };
            let _ = write!(text, "Result: {word} {when}");
            let mut lines = f.error.trim_end().lines();
            if let Some(first) = lines.next() {
                let _ = write!(text, ": {first}");
            }
            text.push('\n');
            for more in lines {
                let _ = writeln!(text, "  {more}");
            }
        }
        None => text.push_str(
            "Result: not finished (the log ends here; `hoist attach` follows a running job)\n",
        ),
    }
    text
}

/// How many journal entries `hoist log --job` searches for the job's summary.
const JOURNAL_SEARCH: u32 = 500;

/// `hoist log APP --job ID`: the job's log from every selected host that has it.
pub async fn job(
    hosts: &[&Host],
    creds: &Credentials,
    timeout: Duration,
    app: &str,
    job_id: &str,
    out: &mut Output<'_>,
) -> Result<(), Failure> {
    let request = JobLogRequest {
        app: app.to_string(),
        job_id: job_id.to_string(),
        limit: 0,
    };
    let journal = JobLogRequest {
        app: app.to_string(),
        job_id: String::new(),
        limit: JOURNAL_SEARCH,
    };
    let answers = fanout::ask_all(hosts, creds, timeout, |mut client| {
        let (request, journal) = (request.clone(), journal.clone());
        async move {
            let events = client.job_log(request).await?.into_inner().events;
            if events.is_empty() {
                return Ok((events, None));
            }
            // The journal entry only adds detail (the commit); without it the log stands.
            let summary = match client.job_log(journal).await {
                Ok(r) => r.into_inner().jobs.into_iter().find(|j| j.job_id == job_id),
                Err(_) => None,
            };
            Ok((events, summary))
        }
    })
    .await;
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for answer in &answers {
        match &answer.result {
            Ok((events, summary)) if !events.is_empty() => {
                found.push((answer.host.as_str(), events, summary.as_ref()));
            }
            Ok(_) => {}
            Err(err) if err.is_not_found() => {}
            Err(err) => problems.push(format!("{}: {err}", answer.host)),
        }
    }
    if found.is_empty() {
        let asked: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
        let mut why = format!(
            "no selected host has job {job_id} of {app} (asked: {}); `hoist log {app}` lists the jobs",
            asked.join(", ")
        );
        if !problems.is_empty() {
            why.push_str(&format!("; no answer from {}", problems.join("; ")));
        }
        return Err(Failure::failed(anyhow::anyhow!(why)));
    }
    if out.json {
        let logs: Vec<Value> = found
            .iter()
            .map(|(host, events, summary)| {
                let events: Vec<Value> = events
                    .iter()
                    .map(|e| render::event_to_json(host, e))
                    .collect();
                json!({
                    "host": host,
                    "app": app,
                    "job_id": job_id,
                    "summary": summary.map_or(Value::Null, summary_json),
                    "events": events,
                })
            })
            .collect();
        out.json_document(&Value::Array(logs));
    } else {
        for (i, (host, events, summary)) in found.iter().enumerate() {
            if i > 0 {
                out.text("\n");
            }
            let text = render_job(host, app, job_id, events, *summary, out.colour);
            out.text(&text);
        }
        for problem in &problems {
            let text = format!(
                "{}\n",
                table::paint(&format!("no answer from {problem}"), Tone::Warn, out.colour)
            );
            out.text(&text);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use hoist_proto::v1::{Notice, StepStarted, Stream as OutputStream};

    use super::*;
    use crate::{
        agents::fanout::CallError,
        output::render::tests::{T0, at, failed_deploy},
    };

    fn event(seq: u64, offset_ms: i64, kind: Kind) -> JobEvent {
        JobEvent {
            job_id: "deploy-20261122T101500Z-a1b2c3-web-1".into(),
            seq,
            at: at(T0 + offset_ms / 1000, (offset_ms % 1000) as i32),
            kind: Some(kind),
        }
    }

    fn step(
        seq: &mut u64,
        ms: &mut i64,
        name: &str,
        ok: bool,
        took: u64,
        output: &[&str],
    ) -> Vec<JobEvent> {
        let mut events = vec![event(
            *seq,
            *ms,
            Kind::StepStarted(StepStarted {
                step: name.into(),
                description: String::new(),
            }),
        )];
        *seq += 1;
        for line in output {
            events.push(event(
                *seq,
                *ms,
                Kind::Output(StepOutput {
                    step: name.into(),
                    stream: OutputStream::Stdout as i32,
                    line: line.to_string(),
                }),
            ));
            *seq += 1;
        }
        *ms += took as i64;
        events.push(event(
            *seq,
            *ms,
            Kind::StepFinished(StepFinished {
                step: name.into(),
                ok,
                exit_code: if ok { 0 } else { -1 },
                duration_ms: took,
                error: if ok {
                    String::new()
                } else {
                    "GET http://127.0.0.1/health: 500 Internal Server Error\nbody: {\"status\":\"down\"}".into()
                },
                timed_out: false,
            }),
        ));
        *seq += 1;
        events
    }

    /// A deploy whose check fails after the switch, rolled back automatically.
    fn rolled_back_deploy() -> Vec<JobEvent> {
        let (mut seq, mut ms) = (1, 0);
        let mut events = vec![event(
            0,
            0,
            Kind::Started(JobStarted {
                kind: JobKind::Deploy as i32,
                app: "carbex".into(),
                r#ref: "v3".into(),
                commit: "c0ffee0123456789".into(),
                release: "20261122T101500Z-c0ffee0".into(),
                who: "dana".into(),
                migrate: false,
                forced: false,
                reason: String::new(),
            }),
        )];
        events.extend(step(&mut seq, &mut ms, "build", true, 1200, &["built"]));
        events.extend(step(&mut seq, &mut ms, "switch", true, 10, &[]));
        events.extend(step(&mut seq, &mut ms, "check:http", false, 10_000, &[]));
        events.push(event(
            seq,
            ms,
            Kind::Notice(Notice {
                message: "checks failed; rolling back to 20261121T090000Z-0f0f0f0".into(),
            }),
        ));
        seq += 1;
        events.extend(step(&mut seq, &mut ms, "switch", true, 10, &[]));
        events.extend(step(&mut seq, &mut ms, "restart", true, 300, &[]));
        events.push(event(
            seq,
            ms,
            Kind::Notice(Notice {
                message:
                    "migrations are not reversed automatically; `hoist rollback --migrate` does it"
                        .into(),
            }),
        ));
        seq += 1;
        events.push(event(
            seq,
            ms,
            Kind::Finished(JobFinished {
                result: JobResult::RolledBack as i32,
                release: "20261122T101500Z-c0ffee0".into(),
                previous_release: "20261121T090000Z-0f0f0f0".into(),
                duration_ms: ms as u64,
                error: "check http failed: GET http://127.0.0.1/health: 500".into(),
            }),
        ));
        events
    }

    #[test]
    fn deployment_log_of_a_failed_deploy() {
        let text = render_job(
            "web-1",
            "carbex",
            "deploy-20261122T101500Z-a1b2c3-web-1",
            &failed_deploy(),
            None,
            false,
        );
        assert_eq!(
            text,
            "Deployment log: carbex on web-1
  job        deploy-20261122T101500Z-a1b2c3-web-1
  who        dana
  started    2026-11-22 10:15:00 UTC
  ended      2026-11-22 10:15:04 UTC (4.1s)
  ref        main → abc1234def5678
  release    20261122T101500Z-abc1234
  previous   20261121T090000Z-0f0f0f0
  migrate    yes
  forced     yes: hotfix #42

Steps
  build    10:15:00 → 10:15:03    3.2s  exit 0     ok
    composer install --no-dev
    │ Installing dependencies
    ! npm WARN deprecated
  migrate  10:15:03 → 10:15:03    0.4s  exit 1     FAILED: php artisan migrate --force exited with 1
    php artisan migrate --force
    ! SQLSTATE[42P01]: no such table
  ! current still points at 20261121T090000Z-0f0f0f0

Result: failed after 4.1s: step migrate failed
"
        );
    }

    #[test]
    fn deployment_log_of_a_rollback() {
        let text = render_job(
            "web-2",
            "carbex",
            "deploy-x-web-2",
            &rolled_back_deploy(),
            None,
            false,
        );
        let expected_tail = "
Steps
  build       10:15:00 → 10:15:01    1.2s  exit 0     ok
    │ built
  switch      10:15:01 → 10:15:01    0.0s  exit 0     ok

Verification
  check:http  10:15:01 → 10:15:11   10.0s  exit -     FAILED: GET http://127.0.0.1/health: 500 Internal Server Error
      body: {\"status\":\"down\"}

Rollback
  ! checks failed; rolling back to 20261121T090000Z-0f0f0f0
  switch      10:15:11 → 10:15:11    0.0s  exit 0     ok
  restart     10:15:11 → 10:15:11    0.3s  exit 0     ok
  ! migrations are not reversed automatically; `hoist rollback --migrate` does it

Result: rolled back after 11.5s: check http failed: GET http://127.0.0.1/health: 500
";
        assert!(text.ends_with(expected_tail), "{text}");
        assert!(
            text.contains("  ref        v3 → c0ffee0123456789\n"),
            "{text}"
        );
        assert!(
            text.contains("  previous   20261121T090000Z-0f0f0f0\n"),
            "{text}"
        );
        assert!(text.contains("  migrate    no\n"), "{text}");
        assert!(!text.contains("forced"), "{text}");
    }

    #[test]
    fn late_output_and_the_journal_entry() {
        // The agent sends a step's last output after its end, and no commit at the start.
        let mut events = failed_deploy();
        if let Some(Kind::Started(s)) = &mut events[0].kind {
            s.commit.clear();
        }
        let late = event(
            5,
            3300,
            Kind::Output(StepOutput {
                step: "build".into(),
                stream: OutputStream::Stdout as i32,
                line: "main → abc1234def5678".into(),
            }),
        );
        events.insert(5, late);
        let summary = JobSummary {
            job_id: "j".into(),
            commit: "abc1234def5678".into(),
            ..Default::default()
        };
        let text = render_job("web-1", "carbex", "j", &events, Some(&summary), false);
        assert!(
            text.contains("  ref        main → abc1234def5678\n"),
            "{text}"
        );
        assert!(
            text.contains("    ! npm WARN deprecated\n    │ main → abc1234def5678\n  migrate"),
            "{text}"
        );
        assert!(!text.contains("did not finish"), "{text}");
        let without = render_job("web-1", "carbex", "j", &events, None, false);
        assert!(without.contains("  ref        main\n"), "{without}");
    }

    #[test]
    fn unfinished_job() {
        let events = &failed_deploy()[..5];
        let text = render_job("web-1", "carbex", "j", events, None, false);
        assert!(
            text.ends_with(
                "Result: not finished (the log ends here; `hoist attach` follows a running job)\n"
            ),
            "{text}"
        );
        let events = &failed_deploy()[..3];
        let text = render_job("web-1", "carbex", "j", events, None, false);
        assert!(
            text.contains("  build  10:15:00 → …         did not finish\n"),
            "{text}"
        );
    }

    #[test]
    fn recent_jobs_table() {
        let summary = |id: &str, result: JobResult, error: &str, forced| JobSummary {
            job_id: id.into(),
            kind: JobKind::Deploy as i32,
            app: "carbex".into(),
            r#ref: "main".into(),
            commit: "abc1234def".into(),
            release: "20261122T101500Z-abc1234".into(),
            who: "dana".into(),
            started_at: at(T0, 0),
            duration_ms: 12_300,
            result: result as i32,
            error: error.into(),
            forced,
            reason: if forced {
                "incident 7".into()
            } else {
                String::new()
            },
        };
        let answers = vec![
            Answer {
                host: "web-1".into(),
                address: "10.0.0.11:7443".into(),
                elapsed: std::time::Duration::ZERO,
                result: Ok(vec![
                    summary(
                        "deploy-b-web-1",
                        JobResult::RolledBack,
                        "check http failed",
                        false,
                    ),
                    summary("deploy-a-web-1", JobResult::Succeeded, "", true),
                ]),
            },
            Answer {
                host: "web-2".into(),
                address: "10.0.0.12:7443".into(),
                elapsed: std::time::Duration::ZERO,
                result: Err(CallError::Unreachable("connection refused".into())),
            },
        ];
        assert_eq!(
            render_recent(&answers, false),
            "web-1 (10.0.0.11:7443)
  JOB             KIND    RESULT       REF   COMMIT   RELEASE                   WHO   STARTED                  DURATION
  deploy-b-web-1  deploy  rolled back  main  abc1234  20261122T101500Z-abc1234  dana  2026-11-22 10:15:00 UTC  12.3s
  deploy-a-web-1  deploy  succeeded    main  abc1234  20261122T101500Z-abc1234  dana  2026-11-22 10:15:00 UTC  12.3s
  ! deploy-b-web-1: check http failed
  ! deploy-a-web-1: forced: incident 7

web-2 (10.0.0.12:7443)
  unreachable: connection refused
"
        );
        let json = recent_json(&answers);
        assert_eq!(json[0]["jobs"][0]["result"], "rolled_back");
        assert_eq!(json[0]["jobs"][1]["started_at"], "2026-11-22T10:15:00Z");
        assert_eq!(json[1]["error"], "unreachable: connection refused");
    }
}
