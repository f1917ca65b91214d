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

use std::{fmt::Write as _, time::Duration};

use hoist_proto::v1::{JobLogRequest, JobResult, JobSummary};
use serde_json::{Value, json};

use clap::Args;

use crate::commands::{Ctx, Global, QUERY_TIMEOUT, parse_duration};
use crate::{
    Failure,
    agents::client::Credentials,
    agents::fanout::{self, Answer},
    fleet::Host,
    output::escape::{one_line, visible},
    output::render::{self, Output},
    output::table::{self, Cell, Tone},
};

mod job_log;

pub use job_log::render_job;

#[derive(Args, Debug)]
pub struct LogArgs {
    /// The app, as named in the agents' config.
    pub app: String,
    /// Show this job's full log: each step's times, exit code and output.
    #[arg(long, value_name = "ID")]
    pub job: Option<String>,
    /// How many recent jobs per host (1-1000, the agents' bound).
    #[arg(long, default_value_t = 20, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Per-host limit for connecting and answering (with --job: for each page).
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
                    table::paint(
                        &format!("  {}", visible(&err.to_string())),
                        Tone::Bad,
                        colour
                    )
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
                let note = format!("  ! {}: {}", one_line(&job.job_id), one_line(first));
                let _ = writeln!(
                    text,
                    "{}",
                    table::paint(&note, render::result_tone(job.result), colour)
                );
            }
            if job.forced || !job.reason.is_empty() {
                let what = if job.forced { "forced" } else { "reason" };
                let _ = writeln!(
                    text,
                    "  ! {}: {what}: {}",
                    one_line(&job.job_id),
                    one_line(&job.reason)
                );
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
        ..Default::default()
    };
    let answers = fanout::ask_all(hosts, creds, timeout, |mut client| {
        let request = request.clone();
        async move { client.job_log(request).await.map(|r| r.into_inner().jobs) }
    })
    .await;
    if out.json {
        out.json_document("log", recent_json(&answers));
    } else {
        let text = render_recent(&answers, out.colour);
        out.text(&text);
    }
    fanout::unanswered(&answers, "job log").map_err(Failure::failed)
}

/// How many journal entries `hoist log --job` searches for the job's summary.
const JOURNAL_SEARCH: u32 = 500;

/// The most pages of one job's log `hoist log --job` asks for (agents cap a job's log
/// at about 24 MiB, in pages of up to 1 MiB: this only stops an agent that never ends).
const MAX_PAGES: usize = 1000;

/// `hoist log APP --job ID`: the job's log from every selected host that has it, page
/// by page.
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
        ..Default::default()
    };
    let journal = JobLogRequest {
        app: app.to_string(),
        job_id: String::new(),
        limit: JOURNAL_SEARCH,
        ..Default::default()
    };
    let answers = fanout::ask_all_paged(hosts, creds, timeout, |mut client| {
        let (mut request, journal) = (request.clone(), journal.clone());
        async move {
            let mut events = Vec::new();
            for _ in 0..MAX_PAGES {
                let page = client.job_log(request.clone()).await?.into_inner();
                events.extend(page.events);
                // (An agent that does not page answers with everything and no `more`.)
                if !page.more || page.next_seq <= request.from_seq {
                    break;
                }
                request.from_seq = page.next_seq;
                request.page_token = page.next_page_token;
            }
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
    let mut missing = Vec::new();
    for answer in &answers {
        match &answer.result {
            Ok((events, summary)) if !events.is_empty() => {
                found.push((answer.host.as_str(), events, summary.as_ref()));
            }
            Ok(_) => missing.push(answer.host.as_str()),
            Err(err) if err.is_not_found() => missing.push(answer.host.as_str()),
            Err(err) => problems.push(format!("{}: {err}", answer.host)),
        }
    }
    if found.is_empty() {
        let why = if problems.is_empty() {
            let asked: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
            format!(
                "no selected host has job {job_id} of {app} (asked: {}); `hoist log {app}` lists the jobs",
                asked.join(", ")
            )
        } else {
            // Say what failed: a host that could not answer may well have the job.
            let mut why = format!("cannot read job {job_id} of {app}: {}", problems.join("; "));
            if !missing.is_empty() {
                why.push_str(&format!("; not on {}", missing.join(", ")));
            }
            why
        };
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
        out.json_document("job_log", Value::Array(logs));
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
mod tests;
