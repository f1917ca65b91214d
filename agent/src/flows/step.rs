//! What every flow is made of: a [`Ctx`] per job, and its steps: events with a start,
//! output lines (secrets masked), an exit code and a duration; hooks, the agent's own
//! tools, service restarts and checks.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};

use hoist_proto::v1::{
    Notice, StepFinished, StepOutput, StepStarted, Stream as WireStream, job_event::Kind,
};
use tokio::sync::mpsc;

use crate::{
    config::{self, App},
    flows::JournalHandle,
    flows::events::Job,
    host::{
        checks,
        process::{self, Piece, RunAs, Stream},
        services,
    },
    state::{journal::Change, release::Layout, secrets::Secrets},
};

/// The most stdout of one of the agent's own tools (git) that it keeps to parse.
const MAX_TOOL_STDOUT: usize = 1 << 20;

/// How much of a line cut in two is held back so a URL's password across the cut is
/// still masked (a longer `user:password@host` is not masked across a 64 KiB cut).
const MAX_URL_AUTHORITY: usize = 256;

/// A step that failed: which, and why (with the tool's output tail).
#[derive(Debug)]
pub(super) struct Failed {
    pub(super) step: String,
    pub(super) error: String,
}

pub(super) type StepResult<T = ()> = Result<T, Failed>;

/// Everything a running job needs.
pub struct Ctx {
    pub state_dir: PathBuf,
    pub app: App,
    pub job: Arc<Job>,
    pub who: String,
    /// The app's journal, written by its owner task.
    pub(super) journal: JournalHandle,
    pub(super) layout: Layout,
    pub(super) run_as: Option<RunAs>,
    pub(super) secrets: Secrets,
    pub(super) vars: BTreeMap<String, String>,
}

impl Ctx {
    pub fn new(
        state_dir: &Path,
        app: App,
        job: Arc<Job>,
        who: String,
        journal: JournalHandle,
    ) -> Ctx {
        let layout = Layout::new(&app.deploy_to);
        let secrets = secrets_of(&app, &layout);
        Ctx {
            state_dir: state_dir.to_path_buf(),
            layout,
            run_as: None,
            secrets,
            vars: BTreeMap::new(),
            app,
            job,
            who,
            journal,
        }
    }

    pub(super) fn notice(&self, message: impl Into<String>) {
        self.job.emit(Kind::Notice(Notice {
            message: message.into(),
        }));
    }

    pub(super) fn start(&self, step: &str, description: impl Into<String>) -> Instant {
        self.job.emit(Kind::StepStarted(StepStarted {
            step: step.into(),
            description: description.into(),
        }));
        Instant::now()
    }

    pub(super) fn finish<T>(
        &self,
        step: &str,
        started: Instant,
        result: StepResult<T>,
    ) -> StepResult<T> {
        self.finish_with(step, started, result, -1, false)
    }

    pub(super) fn finish_with<T>(
        &self,
        step: &str,
        started: Instant,
        result: StepResult<T>,
        exit_code: i32,
        timed_out: bool,
    ) -> StepResult<T> {
        let (ok, error) = match &result {
            Ok(_) => (true, String::new()),
            Err(f) => (false, f.error.clone()),
        };
        self.job.emit(Kind::StepFinished(StepFinished {
            step: step.into(),
            ok,
            exit_code: if ok && exit_code < 0 { 0 } else { exit_code },
            duration_ms: started.elapsed().as_millis() as u64,
            error,
            timed_out,
        }));
        result
    }

    pub(super) fn fail<T>(&self, step: &str, error: impl Into<String>) -> StepResult<T> {
        Err(Failed {
            step: step.into(),
            error: self.redact(&error.into()),
        })
    }

    /// Re-reads the values to mask after `shared/.env` changed.
    pub(super) fn reload_secrets(&mut self) {
        self.secrets = secrets_of(&self.app, &self.layout);
    }

    /// Masks the app's secrets ([`Secrets`]) wherever they appear in output.
    pub(super) fn redact(&self, line: &str) -> String {
        self.secrets.mask(line)
    }

    /// Runs `f` while forwarding output pieces into the job's events under `step`,
    /// secrets masked. The channel is bounded: a process printing faster than its
    /// output is stored waits on its pipe. A secret cut in two by a piece boundary is
    /// still masked: the end of a continued piece is held back and masked with the next.
    pub(super) async fn with_pieces<F, Fut, T>(&self, step: &str, f: F) -> T
    where
        F: FnOnce(process::Pieces) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let (tx, mut rx) = mpsc::channel::<Piece>(process::PIECES_IN_FLIGHT);
        // (A URL password is masked once its URL's authority is whole: held too.)
        let hold = self.secrets.longest().max(MAX_URL_AUTHORITY);
        let forward = async {
            // Per stream: the masked end of the last continued piece, not sent yet.
            let (mut out_carry, mut err_carry) = (String::new(), String::new());
            while let Some(piece) = rx.recv().await {
                let carry = match piece.stream {
                    Stream::Stdout => &mut out_carry,
                    Stream::Stderr => &mut err_carry,
                };
                carry.push_str(&piece.text);
                let mut text = self.redact(carry);
                carry.clear();
                if piece.continued && hold > 0 {
                    let mut cut = text.len().saturating_sub(hold);
                    while !text.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    carry.push_str(&text[cut..]);
                    text.truncate(cut);
                }
                self.emit_output(step, piece.stream, text, piece.continued);
            }
            for (stream, carry) in [(Stream::Stdout, out_carry), (Stream::Stderr, err_carry)] {
                if !carry.is_empty() {
                    self.emit_output(step, stream, carry, false);
                }
            }
        };
        let (result, ()) = tokio::join!(f(tx), forward);
        result
    }

    /// Emits `line` as output of `step`: in pieces of at most [`process::MAX_PIECE`]
    /// bytes (masking can make a piece longer than it was read), each but the last
    /// continued, the last `continued` as given.
    fn emit_output(&self, step: &str, stream: Stream, mut line: String, continued: bool) {
        while line.len() > process::MAX_PIECE {
            let mut cut = process::MAX_PIECE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            let rest = line.split_off(cut);
            self.emit_piece(step, stream, line, true);
            line = rest;
        }
        self.emit_piece(step, stream, line, continued);
    }

    fn emit_piece(&self, step: &str, stream: Stream, line: String, continued: bool) {
        self.job.emit(Kind::Output(StepOutput {
            step: step.into(),
            stream: match stream {
                Stream::Stdout => WireStream::Stdout,
                Stream::Stderr => WireStream::Stderr,
            }
            .into(),
            line,
            continued,
        }));
    }

    /// Runs `f` while forwarding the lines of the host's service tools into the job's
    /// events under `step`.
    pub(super) async fn with_output<F, Fut, T>(&self, step: &str, f: F) -> T
    where
        F: FnOnce(mpsc::UnboundedSender<(Stream, String)>) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Stream, String)>();
        let forward = async {
            while let Some((stream, line)) = rx.recv().await {
                self.job.emit(Kind::Output(StepOutput {
                    step: step.into(),
                    stream: match stream {
                        Stream::Stdout => WireStream::Stdout,
                        Stream::Stderr => WireStream::Stderr,
                    }
                    .into(),
                    line: self.redact(&line),
                    continued: false,
                }));
            }
        };
        let (result, ()) = tokio::join!(f(tx), forward);
        result
    }

    /// The hook environment: declared env plus the `HOIST_*` variables.
    pub(super) fn env(&self) -> BTreeMap<String, String> {
        let mut env = self.app.env.clone();
        env.insert("HOIST_APP".into(), self.app.name.clone());
        env.insert(process::JOB_ENV.into(), self.job.id.clone());
        env.extend(self.vars.clone());
        env
    }

    /// Runs a declared hook (each line by `/bin/sh -c`, in order, as the app's user, in
    /// `cwd`) as one step.
    pub(super) async fn hook(
        &self,
        step: &str,
        command: &config::Command,
        cwd: &Path,
    ) -> StepResult {
        self.hook_exit(step, command, cwd, &[0]).await.map(|_| ())
    }

    /// [`Ctx::hook`] for a command whose exit status is an answer: a line exiting with
    /// one of `answers` (0 among them or not) ends the step there, successfully, with
    /// that code; any other non-zero code fails the step.
    pub(super) async fn hook_exit(
        &self,
        step: &str,
        command: &config::Command,
        cwd: &Path,
        answers: &[i32],
    ) -> StepResult<i32> {
        let started = self.start(step, command.0.join(" && "));
        let mut last_code = 0;
        for line in &command.0 {
            let spec = process::Spec {
                shell: line.clone(),
                cwd: cwd.to_path_buf(),
                env: self.env(),
                run_as: self.run_as.clone(),
                timeout: self.app.step_timeout,
            };
            let outcome = self
                .with_pieces(step, |tx| async move { process::run(&spec, tx).await })
                .await;
            match outcome {
                Err(err) => return self.finish(step, started, self.fail(step, err.to_string())),
                Ok(o) if o.timed_out => {
                    let r = self.fail(
                        step,
                        format!(
                            "`{line}` timed out after {:?}; its process group was killed (raise step_timeout if it needs longer)",
                            self.app.step_timeout
                        ),
                    );
                    return self.finish_with(step, started, r, -1, true);
                }
                Ok(o) if o.code.is_some_and(|c| c != 0 && answers.contains(&c)) => {
                    let code = o.code.unwrap_or(-1);
                    return self.finish_with(step, started, Ok(code), code, false);
                }
                Ok(o) if !o.success() => {
                    let code = o.code.unwrap_or(-1);
                    let r = self.fail(step, format!("`{line}` exited with {code}"));
                    return self.finish_with(step, started, r, code, false);
                }
                Ok(o) => last_code = o.code.unwrap_or(0),
            }
        }
        self.finish_with(step, started, Ok(last_code), last_code, false)
    }

    /// Runs an optional hook; a missing one is skipped silently.
    pub(super) async fn maybe_hook(
        &self,
        step: &str,
        command: Option<&config::Command>,
        cwd: &Path,
    ) -> StepResult {
        match command {
            Some(c) => self.hook(step, c, cwd).await,
            None => Ok(()),
        }
    }

    /// Runs a tool of the agent's own (git) with argv, output into `step`'s events.
    /// Returns stdout lines.
    pub(super) async fn tool(
        &self,
        step: &str,
        argv: &[&str],
        cwd: &Path,
    ) -> StepResult<Vec<String>> {
        let mut env = BTreeMap::new();
        env.insert("GIT_TERMINAL_PROMPT".to_string(), "0".to_string());
        env.insert(process::JOB_ENV.into(), self.job.id.clone());
        if let Some(home) = std::env::var_os("HOME") {
            env.insert("HOME".into(), home.to_string_lossy().into_owned());
        }
        let mut stdout: Vec<String> = Vec::new();
        let (tx, mut rx) = mpsc::channel(process::PIECES_IN_FLIGHT);
        let timeout = self.app.step_timeout;
        let run = async move { process::run_argv(argv, cwd, &env, timeout, tx).await };
        let collect = async {
            let mut tail: Vec<String> = Vec::new();
            let (mut stdout_bytes, mut joined) = (0usize, false);
            while let Some(piece) = rx.recv().await {
                if piece.stream == Stream::Stdout {
                    // What the agent parses (ids, refs) is short; a flood is cut off.
                    stdout_bytes += piece.text.len();
                    if stdout_bytes <= MAX_TOOL_STDOUT {
                        match stdout.last_mut() {
                            Some(last) if joined => last.push_str(&piece.text),
                            _ => stdout.push(piece.text),
                        }
                    }
                    joined = piece.continued;
                } else {
                    self.emit_output(
                        step,
                        Stream::Stderr,
                        self.redact(&piece.text),
                        piece.continued,
                    );
                    if tail.len() == 3 {
                        tail.remove(0);
                    }
                    tail.push(process::tail(&piece.text, 200).to_string());
                }
            }
            tail
        };
        let (outcome, tail) = tokio::join!(run, collect);
        match outcome {
            Err(err) => self.fail(step, err.to_string()),
            Ok(o) if o.success() => Ok(stdout),
            Ok(o) => self.fail(
                step,
                format!(
                    "`{}` failed ({}): {}",
                    argv.join(" "),
                    if o.timed_out {
                        "timed out".to_string()
                    } else {
                        format!("exit {}", o.code.unwrap_or(-1))
                    },
                    tail.join(" / ")
                ),
            ),
        }
    }

    /// The app's services `only` names (all when empty), a step failure otherwise.
    pub(super) async fn select_services(
        &self,
        step: &str,
        release_dir: &Path,
        only: &str,
    ) -> StepResult<Vec<config::Service>> {
        services::select(&self.app.name, self.app.all_services(), release_dir, only)
            .await
            .or_else(|e| self.fail(step, e.to_string()))
    }

    /// Restarts the app's services (or the one named), one step each.
    pub(super) async fn restart_services(&self, release_dir: &Path, only: &str) -> StepResult {
        self.service_steps(release_dir, only, None).await
    }

    /// Stops (in reverse order) or starts the app's services (or the one named), one
    /// step each.
    pub(super) async fn toggle_services(
        &self,
        release_dir: &Path,
        only: &str,
        toggle: services::Toggle,
    ) -> StepResult {
        self.service_steps(release_dir, only, Some(toggle)).await
    }

    async fn service_steps(
        &self,
        release_dir: &Path,
        only: &str,
        toggle: Option<services::Toggle>,
    ) -> StepResult {
        let verb = toggle.map_or("restart", services::Toggle::as_str);
        let mut chosen = self.select_services(verb, release_dir, only).await?;
        if toggle == Some(services::Toggle::Stop) {
            chosen.reverse();
        }
        for service in &chosen {
            let name = match service {
                config::Service::Compose { services, .. }
                    if services.len() == 1 && !only.is_empty() && services[0] == only =>
                {
                    format!("{}/{only}", service.display_name())
                }
                _ => service.display_name(),
            };
            let step = format!("{verb} {name}");
            let started = self.start(&step, format!("{} {name}", service.kind()));
            let result = self
                .with_output(&step, |tx| async move {
                    match toggle {
                        None => services::restart(service, release_dir, &tx).await,
                        Some(t) => services::toggle(service, release_dir, t, &tx).await,
                    }
                })
                .await;
            let result = match result {
                Ok(summary) => {
                    self.job.emit(Kind::Output(StepOutput {
                        step: step.clone(),
                        stream: WireStream::Stdout.into(),
                        line: summary,
                        continued: false,
                    }));
                    Ok(())
                }
                Err(err) => self.fail(&step, err.to_string()),
            };
            self.finish(&step, started, result)?;
        }
        Ok(())
    }

    /// Runs every gating check with its retries; the first check that never passes
    /// fails the step with its last output. Monitor-only checks (`gate = false`) are
    /// left to the monitor: they are never a deploy's verdict.
    pub(super) async fn run_checks(&self) -> StepResult {
        for check in self.app.checks.iter().filter(|c| c.gate) {
            let step = format!("check {}", check.name());
            let started = self.start(&step, check.name());
            let attempts = check.retries().max(1);
            let mut last = String::new();
            let mut passed = false;
            for attempt in 1..=attempts {
                let status = checks::run(&self.app, check).await;
                self.job.emit(Kind::Output(StepOutput {
                    step: step.clone(),
                    stream: if status.ok {
                        WireStream::Stdout
                    } else {
                        WireStream::Stderr
                    }
                    .into(),
                    line: self.redact(&format!(
                        "attempt {attempt}/{attempts}: {} ({} ms): {}",
                        if status.ok { "ok" } else { "failing" },
                        status.duration_ms,
                        status.output.trim()
                    )),
                    continued: false,
                }));
                if status.ok {
                    passed = true;
                    break;
                }
                last = status.output;
                if attempt < attempts {
                    tokio::time::sleep(check.interval()).await;
                }
            }
            let result = if passed {
                Ok(())
            } else {
                self.fail(
                    &step,
                    format!(
                        "check {} failed {attempts} time(s): {}",
                        check.name(),
                        last.trim()
                    ),
                )
            };
            self.finish(&step, started, result)?;
        }
        Ok(())
    }

    /// Records in the journal's history that `id` now serves, after `was`.
    pub(super) async fn note_current(&self, id: &str, was: &str) {
        let change = Change::Current {
            id: id.into(),
            was: was.into(),
        };
        self.journal.record(change, "the release history").await;
    }

    /// Records how release `id` fared (`ok`, `failed`, `rolled_back`).
    pub(super) async fn note_outcome(&self, id: &str, outcome: &str) {
        let change = Change::Outcome {
            release: id.into(),
            outcome: outcome.into(),
        };
        self.journal.record(change, "the release's outcome").await;
    }

    /// The command strategy's switch: `activate` (e.g. `helm upgrade --install ... --wait`)
    /// from the release, after `current` points at it.
    pub(super) async fn activate(&self, dir: &Path) -> StepResult {
        if self.app.strategy == config::Strategy::Command {
            self.maybe_hook("activate", self.app.activate.as_ref(), dir)
                .await?;
        }
        Ok(())
    }

    pub(super) fn set_release_vars(&mut self, id: &str, commit: &str, r#ref: &str) {
        self.vars.insert("HOIST_RELEASE".into(), id.into());
        self.vars.insert(
            "HOIST_RELEASE_DIR".into(),
            self.layout.release(id).display().to_string(),
        );
        self.vars.insert("HOIST_COMMIT".into(), commit.into());
        self.vars.insert("HOIST_REF".into(), r#ref.into());
    }
}

/// The secrets of `shared/.env` ([`Secrets`]), read beneath `shared/` (never through a
/// link).
pub(super) fn secrets_of(app: &App, layout: &Layout) -> Secrets {
    Secrets::read(app, layout.shared_dir().ok().as_ref())
}
