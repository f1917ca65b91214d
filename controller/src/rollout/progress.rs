//! What a rollout shows while it runs, in one of three forms:
//!
//! - **live** (stdout is a terminal): one line per host with its state, current step
//!   and elapsed time (indicatif), rollout messages printed above the lines, and the
//!   error of a failed step as it happens (step output and the agents' notices stay
//!   in the other views, `hoist attach` and `hoist log --job`);
//! - **lines** (stdout is a pipe or file): every job event as `hoist deploy` on one host
//!   prints it, each line prefixed with its host, so concurrent hosts stay readable
//!   and greppable;
//! - **json** (`--json`): the job events as JSON lines (`render::event_to_json`) plus
//!   rollout events (`plan`, `batch_started`, `bake_started`, `gate`, `budget`,
//!   `host_result`, `summary`, ...).

use std::{io::IsTerminal as _, time::Duration};

use hoist_proto::v1::job_event::Kind;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use crate::{
    agents::follow::Update,
    output::{
        escape::one_line,
        render::{self, Output},
        table::{Tone, paint},
    },
};

/// How often the live lines redraw.
const TICK: Duration = Duration::from_millis(120);

/// Whether the live view fits: stdout is a terminal and the output is not JSON.
pub fn live_possible(json: bool) -> bool {
    !json && std::io::stdout().is_terminal() && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
}

struct Live {
    multi: MultiProgress,
    bars: Vec<ProgressBar>,
    waiting: ProgressStyle,
    running: ProgressStyle,
}

/// The rollout's output.
pub struct Progress<'a, 'o> {
    out: &'a mut Output<'o>,
    hosts: Vec<String>,
    width: usize,
    live: Option<Live>,
}

impl<'a, 'o> Progress<'a, 'o> {
    /// A view of `hosts`; live when `live` (see [`live_possible`]).
    pub fn new(out: &'a mut Output<'o>, hosts: Vec<String>, live: bool) -> Progress<'a, 'o> {
        let width = hosts.iter().map(|h| h.chars().count()).max().unwrap_or(0);
        let live = (live && !out.json).then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
            let waiting =
                ProgressStyle::with_template(&format!("  {{prefix:{width}}}  {{wide_msg}}"))
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
            let running = ProgressStyle::with_template(&format!(
                "{{spinner}} {{prefix:{width}}}  {{elapsed:>3}}  {{wide_msg}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ ");
            Live {
                multi,
                bars: Vec::new(),
                waiting,
                running,
            }
        });
        Progress {
            out,
            hosts,
            width,
            live,
        }
    }

    /// Whether the live view is on.
    pub fn live(&self) -> bool {
        self.live.is_some()
    }

    pub fn json(&self) -> bool {
        self.out.json
    }

    pub fn colour(&self) -> bool {
        self.out.colour
    }

    /// Shows a line per host (live view only), each with `message`.
    pub fn show_hosts(&mut self, messages: &[String]) {
        let Some(live) = &mut self.live else {
            return;
        };
        for (host, message) in self.hosts.iter().zip(messages) {
            let bar = live.multi.add(ProgressBar::new_spinner());
            bar.set_style(live.waiting.clone());
            bar.set_prefix(host.clone());
            bar.set_message(one_line(message).into_owned());
            live.bars.push(bar);
        }
    }

    /// A remark for the operator on stderr, outside the rollout's output (stdout stays
    /// its text or JSON lines): `hoist: TEXT`.
    pub fn warn(&self, text: &str) {
        eprintln!("hoist: {}", crate::output::escape::visible(text));
    }

    /// A rollout message: text (lines and live views) and its JSON form.
    pub fn say(&mut self, text: &str, json: Option<Value>) {
        if self.out.json {
            if let Some(json) = json {
                self.out.json_line(&json);
            }
            return;
        }
        self.print(text);
    }

    /// Text only (nothing in JSON).
    pub fn print(&mut self, text: &str) {
        let text = text.trim_end_matches('\n');
        match &self.live {
            Some(live) => {
                for line in text.lines() {
                    let _ = live.multi.println(line);
                }
            }
            None => {
                self.out.text(&format!("{text}\n"));
            }
        }
    }

    /// JSON only (nothing in text).
    pub fn json_line(&mut self, json: &Value) {
        if self.out.json {
            self.out.json_line(json);
        }
    }

    /// A host's job began: its live line starts ticking.
    pub fn started(&mut self, host: usize, what: &str) {
        if let Some(bar) = self.bar(host) {
            let running = self.live.as_ref().map(|l| l.running.clone());
            if let Some(style) = running {
                bar.set_style(style);
            }
            bar.reset_elapsed();
            bar.set_message(one_line(what).into_owned());
            bar.enable_steady_tick(TICK);
        }
    }

    /// A host's line shows `message` (still ticking if it was).
    pub fn state(&mut self, host: usize, message: &str) {
        if let Some(bar) = self.bar(host) {
            bar.set_message(one_line(message).into_owned());
        }
    }

    /// A host's line stops ticking and shows `message` for good (until it runs again).
    pub fn done(&mut self, host: usize, message: &str) {
        let waiting = self.live.as_ref().map(|l| l.waiting.clone());
        if let (Some(bar), Some(style)) = (self.bar(host), waiting) {
            bar.disable_steady_tick();
            bar.set_style(style);
            bar.set_message(one_line(message).into_owned());
            bar.tick();
        }
    }

    fn bar(&self, host: usize) -> Option<ProgressBar> {
        self.live.as_ref().and_then(|l| l.bars.get(host).cloned())
    }

    /// One update of a host's job.
    pub fn update(&mut self, host: usize, job_id: &str, update: &Update) {
        let name = self.hosts[host].clone();
        if self.out.json {
            match update {
                Update::Event(event) => self.out.event(&name, event),
                Update::Note(note) => self.out.note(&name, job_id, note),
            }
            return;
        }
        let colour = self.out.colour;
        if self.live.is_none() {
            let text = match update {
                Update::Event(event) => render::event_text(&name, event, colour),
                Update::Note(note) => render::notice_text(note, colour),
            };
            let prefixed = self.prefix(&name, &text);
            self.out.text(&prefixed);
            return;
        }
        match update {
            Update::Note(note) => {
                let text = self.prefix(&name, &render::notice_text(note, colour));
                self.print(&text);
            }
            Update::Event(event) => match &event.kind {
                Some(Kind::Started(started)) => {
                    let line = render::started_line(&name, started);
                    let what = line
                        .strip_prefix(&format!("==> {name}: "))
                        .unwrap_or(&line)
                        .to_string();
                    self.state(host, &what);
                    let job = render::job_id_line(&event.job_id);
                    let text = self.prefix(&name, &format!("{}\n", job.trim_start()));
                    self.print(&text);
                }
                Some(Kind::StepStarted(step)) => {
                    self.state(host, &format!("▶ {}", step.step));
                }
                Some(Kind::StepFinished(step)) if !step.ok => {
                    let text = self.prefix(&name, &render::step_finished_text(step, colour));
                    self.print(&text);
                }
                // Notices and step output stay in the line view, `hoist attach` and
                // `hoist log --job`: the live view keeps to what needs attention.
                _ => {}
            },
        }
    }

    /// `==> host: ...` lines stay as they are; the others get `host ` in front.
    fn prefix(&self, host: &str, text: &str) -> String {
        let mut out = String::new();
        for line in text.lines() {
            if line.starts_with("==> ") {
                out.push_str(line);
            } else {
                out.push_str(&format!(
                    "{} {line}",
                    paint(
                        &format!("{host:<w$}", w = self.width),
                        Tone::Dim,
                        self.out.colour
                    )
                ));
            }
            out.push('\n');
        }
        out
    }

    /// Clears the live lines (before the summary).
    pub fn finish(&mut self) {
        if let Some(live) = self.live.take() {
            for bar in &live.bars {
                bar.finish_and_clear();
            }
            let _ = live.multi.clear();
        }
    }

    /// The summary: text or one JSON line.
    pub fn summary(&mut self, text: &str, json: &Value) {
        self.finish();
        if self.out.json {
            self.out.json_line(json);
        } else {
            self.out.text(text);
        }
    }
}

impl Drop for Progress<'_, '_> {
    fn drop(&mut self) {
        self.finish();
    }
}
