//! One job's deployment log as text: the steps in order with their times, exit codes
//! and output, the verification checks, and an automatic rollback's steps apart.

use std::{collections::HashMap, fmt::Write as _};

use hoist_proto::v1::{
    JobEvent, JobFinished, JobKind, JobResult, JobStarted, JobSummary, OutputOmitted, StepFinished,
    StepOutput, job_event::Kind,
};
use prost_types::Timestamp;

use crate::output::{
    escape::{one_line, visible},
    render,
    table::{self, Tone},
};

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
    /// Output the agent left out of the log: stands between the steps it cut.
    Omitted(&'e OutputOmitted),
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
                Some(Kind::Omitted(m)) => log.section(last).push(Entry::Omitted(m)),
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
        JobKind::Task => "Task log",
        JobKind::Stop => "Stop log",
        JobKind::Start => "Start log",
        JobKind::Backup => "Backup log",
        JobKind::Restore => "Restore log",
        JobKind::Unspecified => "Job log",
    }
}

fn step_line(step: &StepLog, width: usize, colour: bool) -> String {
    let name = format!("{:width$}", one_line(step.name));
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
    let error = visible(&f.error);
    let mut lines = error.trim_end().lines();
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
            Entry::Omitted(omitted) => text.push_str(&render::omitted_text(omitted, colour)),
            Entry::Step(step) => {
                text.push_str(&step_line(step, width, colour));
                if !step.description.is_empty() {
                    let _ = writeln!(
                        text,
                        "    {}",
                        table::paint(&one_line(step.description), Tone::Dim, colour)
                    );
                }
                let mut lines = render::LineJoiner::default();
                for output in &step.output {
                    text.push_str(&lines.piece(output, colour));
                }
                text.push_str(lines.close());
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
    let mut text = format!("{}: {} on {host}\n", title(started.kind), one_line(app));
    let mut field = |key: &str, value: &str| {
        let _ = writeln!(text, "  {key:<10} {}", one_line(value));
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
            Entry::Notice(_) | Entry::Omitted(_) => None,
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
            let error = visible(&f.error);
            let mut lines = error.trim_end().lines();
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
