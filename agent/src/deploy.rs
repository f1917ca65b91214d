//! The job flows: deploy (SPEC §4), rollback, restart. Each step is an event with its
//! start, output lines, exit code and duration; the flow decides what happens when a
//! step fails: before the switch the new release is removed and `current` is untouched;
//! after the switch the previous release is put back automatically.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use hoist_proto::v1::{
    JobFinished, JobKind, JobResult, JobStarted, Notice, StepFinished, StepOutput, StepStarted,
    Stream as WireStream, job_event::Kind,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::{
    atomic, checks,
    config::{self, App},
    jobs::Job,
    journal::{self, JobRecord, Journal, ReleaseRecord},
    process::{self, RunAs, Stream},
    release::{self, Layout},
    services,
};

/// Free space required on top of the expected release size before materialising.
const MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;
/// Shortest secret that is masked in step output (shorter values would mask noise).
const MIN_SECRET_LEN: usize = 6;

/// What a job was asked to do.
#[derive(Clone, Debug)]
pub enum Request {
    Deploy {
        r#ref: String,
        migrate: bool,
        allow_missing_env: bool,
        forced: bool,
        reason: String,
    },
    Rollback {
        to_release: String,
        migrate: bool,
        restore_db: bool,
        reason: String,
    },
    Restart {
        service: String,
    },
    /// Edit `shared/.env` (values never appear in events), then maybe restart.
    Env {
        set: Vec<(String, String)>,
        unset: Vec<String>,
        restart: bool,
    },
}

impl Request {
    pub fn kind(&self) -> JobKind {
        match self {
            Request::Deploy { .. } => JobKind::Deploy,
            Request::Rollback { .. } => JobKind::Rollback,
            Request::Restart { .. } => JobKind::Restart,
            Request::Env { .. } => JobKind::Env,
        }
    }
}

/// Marker of a job in progress, so a restarted agent can clean up after a crash.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Running {
    pub job_id: String,
    pub release: String,
    pub switched: bool,
    pub started_at_ms: u64,
    pub kind: String,
    pub who: String,
    pub r#ref: String,
}

impl Running {
    pub fn path(state_dir: &Path, app: &str) -> PathBuf {
        state_dir.join("apps").join(app).join("running.json")
    }

    fn save(&self, state_dir: &Path, app: &str) {
        let path = Running::path(state_dir, app);
        let result = serde_json::to_vec(self)
            .map_err(std::io::Error::other)
            .and_then(|b| atomic::write_file(&path, &b));
        if let Err(err) = result {
            tracing::warn!(path = %path.display(), error = %err, "cannot record the running job");
        }
    }
}

/// A step that failed: which, and why (with the tool's output tail).
#[derive(Debug)]
struct Failed {
    step: String,
    error: String,
}

type StepResult<T = ()> = Result<T, Failed>;

/// Everything a running job needs.
pub struct Ctx {
    pub state_dir: PathBuf,
    pub app: App,
    pub job: Arc<Job>,
    pub who: String,
    layout: Layout,
    run_as: Option<RunAs>,
    secrets: Vec<String>,
    vars: BTreeMap<String, String>,
}

/// How a job ended.
pub struct Outcome {
    pub result: JobResult,
    pub release: String,
    pub previous: String,
    pub commit: String,
    pub error: String,
}

impl Ctx {
    pub fn new(state_dir: &Path, app: App, job: Arc<Job>, who: String) -> Ctx {
        let layout = Layout::new(&app.deploy_to);
        let secrets = secrets_of(&layout.shared().join(".env"));
        Ctx {
            state_dir: state_dir.to_path_buf(),
            layout,
            run_as: None,
            secrets,
            vars: BTreeMap::new(),
            app,
            job,
            who,
        }
    }

    fn notice(&self, message: impl Into<String>) {
        self.job.emit(Kind::Notice(Notice {
            message: message.into(),
        }));
    }

    fn start(&self, step: &str, description: impl Into<String>) -> Instant {
        self.job.emit(Kind::StepStarted(StepStarted {
            step: step.into(),
            description: description.into(),
        }));
        Instant::now()
    }

    fn finish<T>(&self, step: &str, started: Instant, result: StepResult<T>) -> StepResult<T> {
        self.finish_with(step, started, result, -1, false)
    }

    fn finish_with<T>(
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

    fn fail<T>(&self, step: &str, error: impl Into<String>) -> StepResult<T> {
        Err(Failed {
            step: step.into(),
            error: self.redact(&error.into()),
        })
    }

    /// Masks values of `shared/.env` wherever they appear in output.
    fn redact(&self, line: &str) -> String {
        let mut line = line.to_string();
        for secret in &self.secrets {
            if line.contains(secret.as_str()) {
                line = line.replace(secret.as_str(), "••••");
            }
        }
        line
    }

    /// Runs `f` while forwarding output lines into the job's events under `step`.
    async fn with_output<F, Fut, T>(&self, step: &str, f: F) -> T
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
                }));
            }
        };
        let (result, ()) = tokio::join!(f(tx), forward);
        result
    }

    /// The hook environment: declared env plus the `HOIST_*` variables.
    fn env(&self) -> BTreeMap<String, String> {
        let mut env = self.app.env.clone();
        env.insert("HOIST_APP".into(), self.app.name.clone());
        env.insert("HOIST_DEPLOY_ID".into(), self.job.id.clone());
        env.extend(self.vars.clone());
        env
    }

    /// Runs a declared hook (each line by `/bin/sh -c`, in order, as the app's user, in
    /// `cwd`) as one step.
    async fn hook(&self, step: &str, command: &config::Command, cwd: &Path) -> StepResult {
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
                .with_output(step, |tx| async move { process::run(&spec, tx).await })
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
                Ok(o) if !o.success() => {
                    let code = o.code.unwrap_or(-1);
                    let r = self.fail(step, format!("`{line}` exited with {code}"));
                    return self.finish_with(step, started, r, code, false);
                }
                Ok(o) => last_code = o.code.unwrap_or(0),
            }
        }
        self.finish_with(step, started, Ok(()), last_code, false)
    }

    /// Runs an optional hook; a missing one is skipped silently.
    async fn maybe_hook(
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
    async fn tool(&self, step: &str, argv: &[&str], cwd: &Path) -> StepResult<Vec<String>> {
        let mut env = BTreeMap::new();
        env.insert("GIT_TERMINAL_PROMPT".to_string(), "0".to_string());
        if let Some(home) = std::env::var_os("HOME") {
            env.insert("HOME".into(), home.to_string_lossy().into_owned());
        }
        let mut stdout = Vec::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let timeout = self.app.step_timeout;
        let run = async move { process::run_argv(argv, cwd, &env, timeout, tx).await };
        let collect = async {
            let mut tail = Vec::new();
            while let Some((stream, line)) = rx.recv().await {
                if stream == Stream::Stdout {
                    stdout.push(line);
                } else {
                    self.job.emit(Kind::Output(StepOutput {
                        step: step.into(),
                        stream: WireStream::Stderr.into(),
                        line: self.redact(&line),
                    }));
                    tail.push(line);
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
                    tail.iter()
                        .rev()
                        .take(3)
                        .rev()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(" / ")
                ),
            ),
        }
    }

    /// Restarts the app's services (or the one named), one step each.
    async fn restart_services(&self, release_dir: &Path, only: &str) -> StepResult {
        for service in self
            .app
            .all_services()
            .iter()
            .filter(|s| only.is_empty() || s.display_name() == only)
        {
            let step = format!("restart {}", service.display_name());
            let started = self.start(
                &step,
                format!("{} {}", service.kind(), service.display_name()),
            );
            let result = self
                .with_output(&step, |tx| async move {
                    services::restart(service, release_dir, &tx).await
                })
                .await;
            let result = match result {
                Ok(summary) => {
                    self.job.emit(Kind::Output(StepOutput {
                        step: step.clone(),
                        stream: WireStream::Stdout.into(),
                        line: summary,
                    }));
                    Ok(())
                }
                Err(err) => self.fail(&step, err.to_string()),
            };
            self.finish(&step, started, result)?;
        }
        Ok(())
    }

    /// Runs every check with its retries; the first check that never passes fails the
    /// step with its last output.
    async fn run_checks(&self) -> StepResult {
        for check in &self.app.checks {
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

    fn set_release_vars(&mut self, id: &str, commit: &str, r#ref: &str) {
        self.vars.insert("HOIST_RELEASE".into(), id.into());
        self.vars.insert(
            "HOIST_RELEASE_DIR".into(),
            self.layout.release(id).display().to_string(),
        );
        self.vars.insert("HOIST_COMMIT".into(), commit.into());
        self.vars.insert("HOIST_REF".into(), r#ref.into());
    }

    fn journal_path(&self) -> PathBuf {
        Journal::path(&self.state_dir, &self.app.name)
    }
}

fn secrets_of(env_file: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(env_file) else {
        return Vec::new();
    };
    let mut secrets: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(_, v)| v.trim().trim_matches(['"', '\'']).to_string())
        .filter(|v| v.len() >= MIN_SECRET_LEN)
        .collect();
    // Longest first, so a value containing another is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
}

/// Runs one job to its end and records it. Never panics on a failed step: every way out
/// ends with a `JobFinished` event and a journal record.
pub async fn run(mut ctx: Ctx, request: Request) -> Outcome {
    let started_at_ms = journal::now_ms();
    let clock = Instant::now();
    if let Some(user) = &ctx.app.user {
        match RunAs::resolve(user, ctx.app.group.as_deref()) {
            Ok(r) => ctx.run_as = Some(r),
            Err(err) => {
                let outcome = Outcome {
                    result: JobResult::Failed,
                    release: String::new(),
                    previous: String::new(),
                    commit: String::new(),
                    error: err.to_string(),
                };
                return finish(&ctx, &request, outcome, started_at_ms, clock);
            }
        }
    }
    let (r#ref, migrate, forced, reason) = match &request {
        Request::Deploy {
            r#ref,
            migrate,
            forced,
            reason,
            ..
        } => (r#ref.clone(), *migrate, *forced, reason.clone()),
        Request::Rollback {
            migrate, reason, ..
        } => (String::new(), *migrate, false, reason.clone()),
        _ => (String::new(), false, false, String::new()),
    };
    ctx.job.emit(Kind::Started(JobStarted {
        kind: request.kind().into(),
        app: ctx.app.name.clone(),
        r#ref,
        commit: String::new(),
        release: String::new(),
        who: ctx.who.clone(),
        migrate,
        forced,
        reason,
    }));
    if forced {
        ctx.notice("deploy window overridden with --force");
    }
    let outcome = match &request {
        Request::Deploy {
            r#ref,
            migrate,
            allow_missing_env,
            ..
        } => deploy(&mut ctx, r#ref, *migrate, *allow_missing_env, started_at_ms).await,
        Request::Rollback {
            to_release,
            migrate,
            restore_db,
            ..
        } => rollback(&mut ctx, to_release, *migrate, *restore_db).await,
        Request::Restart { service } => restart(&ctx, service).await,
        Request::Env {
            set,
            unset,
            restart,
        } => env_change(&ctx, set, unset, *restart).await,
    };
    finish(&ctx, &request, outcome, started_at_ms, clock)
}

fn finish(
    ctx: &Ctx,
    request: &Request,
    outcome: Outcome,
    started_at_ms: u64,
    clock: Instant,
) -> Outcome {
    let duration_ms = clock.elapsed().as_millis() as u64;
    let path = ctx.journal_path();
    let mut journal = Journal::load(&path);
    let (r#ref, forced, reason) = match request {
        Request::Deploy {
            r#ref,
            forced,
            reason,
            ..
        } => (r#ref.clone(), *forced, reason.clone()),
        Request::Rollback { reason, .. } => (String::new(), false, reason.clone()),
        Request::Restart { service } => (String::new(), false, service.clone()),
        Request::Env { set, unset, .. } => (String::new(), false, env_summary(set, unset)),
    };
    journal.record_job(JobRecord {
        job_id: ctx.job.id.clone(),
        kind: journal::kind_name(request.kind()).into(),
        r#ref,
        commit: outcome.commit.clone(),
        release: outcome.release.clone(),
        previous_release: outcome.previous.clone(),
        who: ctx.who.clone(),
        started_at_ms,
        duration_ms,
        result: journal::result_name(outcome.result).into(),
        error: outcome.error.clone(),
        forced,
        reason,
    });
    if let Err(err) = journal.save(&path) {
        tracing::error!(app = %ctx.app.name, error = %err, "cannot write the journal");
    }
    let _ = std::fs::remove_file(Running::path(&ctx.state_dir, &ctx.app.name));
    ctx.job.emit(Kind::Finished(JobFinished {
        result: outcome.result.into(),
        release: outcome.release.clone(),
        previous_release: outcome.previous.clone(),
        duration_ms,
        error: outcome.error.clone(),
    }));
    tracing::info!(app = %ctx.app.name, job = %ctx.job.id, result = journal::result_name(outcome.result),
        release = %outcome.release, "job finished");
    outcome
}

fn failed(f: Failed, release: &str, previous: &str, commit: &str) -> Outcome {
    Outcome {
        result: JobResult::Failed,
        release: release.into(),
        previous: previous.into(),
        commit: commit.into(),
        error: format!("{}: {}", f.step, f.error),
    }
}

/// Fetch into the app's bare mirror and resolve `ref` to a commit.
async fn fetch(ctx: &Ctx, r#ref: &str) -> StepResult<String> {
    let step = "fetch";
    let started = ctx.start(step, format!("{} {}", ctx.app.repo, r#ref));
    let result = async {
        let repos = ctx.state_dir.join("repos");
        std::fs::create_dir_all(&repos).or_else(|e| ctx.fail(step, format!("cannot create {}: {e}", repos.display())))?;
        let mirror = repos.join(format!("{}.git", ctx.app.name));
        let mirror_s = mirror.to_string_lossy().into_owned();
        if mirror.join("HEAD").exists() {
            ctx.tool(step, &["git", "--git-dir", &mirror_s, "remote", "set-url", "origin", &ctx.app.repo], &repos).await?;
            ctx.tool(step, &["git", "--git-dir", &mirror_s, "fetch", "--prune", "--force", "--quiet", "origin"], &repos).await?;
        } else {
            let tmp = repos.join(format!("{}.git.tmp", ctx.app.name));
            let _ = std::fs::remove_dir_all(&tmp);
            let tmp_s = tmp.to_string_lossy().into_owned();
            ctx.tool(step, &["git", "clone", "--mirror", "--quiet", "--", &ctx.app.repo, &tmp_s], &repos).await?;
            std::fs::rename(&tmp, &mirror).or_else(|e| ctx.fail(step, format!("cannot move the mirror into place: {e}")))?;
        }
        let spec = format!("{}^{{commit}}", r#ref);
        match ctx
            .tool(step, &["git", "--git-dir", &mirror_s, "rev-parse", "--verify", "--quiet", "--end-of-options", &spec], &repos)
            .await
        {
            Ok(lines) if lines.first().is_some_and(|l| l.len() == 40) => Ok(lines[0].clone()),
            _ => {
                let known = ctx
                    .tool(step, &["git", "--git-dir", &mirror_s, "for-each-ref", "--count=10", "--sort=-committerdate", "--format=%(refname:short)", "refs/heads", "refs/tags"], &repos)
                    .await
                    .unwrap_or_default();
                ctx.fail(
                    step,
                    format!(
                        "ref {ref:?} is not a branch, tag or commit of {repo}; recent refs: {known}",
                        ref = r#ref,
                        repo = ctx.app.repo,
                        known = if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ),
                )
            }
        }
    }
    .await;
    if let Ok(commit) = &result {
        ctx.job.emit(Kind::Output(StepOutput {
            step: step.into(),
            stream: WireStream::Stdout.into(),
            line: format!("{} → {commit}", r#ref),
        }));
    }
    ctx.finish(step, started, result)
}

/// Materialise `commit` into `releases/ID.tmp`, then rename to `releases/ID`.
async fn materialise(ctx: &Ctx, commit: &str, id: &str) -> StepResult {
    let step = "materialise";
    let started = ctx.start(step, format!("releases/{id}"));
    let result = async {
        let releases = ctx.layout.releases();
        let free = release::free_bytes(&releases).or_else(|e| ctx.fail(step, format!("cannot stat {}: {e}", releases.display())))?;
        let last = ctx
            .layout
            .current()
            .map(|c| release::tree_size(&ctx.layout.release(&c)))
            .unwrap_or(0);
        let need = last + last / 5 + MIN_FREE_BYTES;
        if free < need {
            return ctx.fail(
                step,
                format!(
                    "only {} MiB free under {}; a release needs about {} MiB (the current one is {} MiB); free space and deploy again",
                    free >> 20,
                    releases.display(),
                    need >> 20,
                    last >> 20
                ),
            );
        }
        let tmp = releases.join(format!("{id}.tmp"));
        std::fs::create_dir_all(&tmp).or_else(|e| ctx.fail(step, format!("cannot create {}: {e}", tmp.display())))?;
        let mirror = ctx.state_dir.join("repos").join(format!("{}.git", ctx.app.name));
        let index = releases.join(format!(".{id}.index"));
        let mut env = BTreeMap::new();
        env.insert("GIT_INDEX_FILE".to_string(), index.display().to_string());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let argv = [
            "git".to_string(),
            "--git-dir".into(),
            mirror.display().to_string(),
            "--work-tree".into(),
            tmp.display().to_string(),
            "checkout".into(),
            "--force".into(),
            commit.into(),
            "--".into(),
            ".".into(),
        ];
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let outcome = process::run_argv(&argv, &releases, &env, ctx.app.step_timeout, tx).await;
        let _ = std::fs::remove_file(&index);
        let mut output = Vec::new();
        while let Ok((_, line)) = rx.try_recv() {
            output.push(line);
        }
        match outcome {
            Ok(o) if o.success() => {}
            Ok(o) => return ctx.fail(step, format!("git checkout exited {:?}: {}", o.code, output.join(" / "))),
            Err(e) => return ctx.fail(step, e.to_string()),
        }
        std::fs::write(tmp.join("REVISION"), format!("{commit}\n"))
            .or_else(|e| ctx.fail(step, format!("cannot write REVISION: {e}")))?;
        if let Some(run_as) = &ctx.run_as
            && nix::unistd::Uid::effective().is_root()
        {
            release::chown_tree(&tmp, run_as.uid(), run_as.gid())
                .or_else(|e| ctx.fail(step, format!("cannot give the release to {}: {e}", ctx.app.user.as_deref().unwrap_or("?"))))?;
        }
        std::fs::rename(&tmp, releases.join(id)).or_else(|e| ctx.fail(step, format!("cannot rename the release into place: {e}")))
    }
    .await;
    ctx.finish(step, started, result)
}

/// Links shared paths and compares `.env.example` with `shared/.env`.
fn link_shared(ctx: &Ctx, id: &str, allow_missing_env: bool) -> StepResult {
    let step = "shared";
    let started = ctx.start(step, "link shared files and dirs, check .env");
    let result = (|| {
        let dir = ctx.layout.release(id);
        let linked = ctx
            .layout
            .link_shared(
                &dir,
                &ctx.app.shared_files,
                &ctx.app.shared_dirs,
                ctx.run_as
                    .as_ref()
                    .filter(|_| nix::unistd::Uid::effective().is_root())
                    .map(|r| (r.uid(), r.gid())),
            )
            .or_else(|e| ctx.fail(step, format!("cannot link shared paths: {e}")))?;
        for l in linked {
            ctx.job.emit(Kind::Output(StepOutput {
                step: step.into(),
                stream: WireStream::Stdout.into(),
                line: l,
            }));
        }
        let example = dir.join(".env.example");
        let actual = ctx.layout.shared().join(".env");
        if example.is_file() {
            let missing = crate::envfile::missing_keys_in_files(&example, &actual)
                .or_else(|e| ctx.fail(step, e))?;
            if !missing.is_empty() {
                let text = format!(
                    "shared/.env lacks keys that .env.example lists: {}",
                    missing.join(", ")
                );
                if allow_missing_env {
                    ctx.notice(format!("{text} (continuing: --allow-missing-env)"));
                } else {
                    return ctx.fail(
                        step,
                        format!(
                            "{text}; set them with `hoist env {} set KEY=VALUE`, or deploy with --allow-missing-env",
                            ctx.app.name
                        ),
                    );
                }
            }
        }
        Ok(())
    })();
    ctx.finish(step, started, result)
}

/// Backup before migrating: the file is recorded on the release that is current now.
async fn backup(ctx: &mut Ctx, new_id: &str) -> StepResult<Option<String>> {
    let Some(cmd) = ctx.app.steps.backup.clone() else {
        return Ok(None);
    };
    let current = ctx.layout.current().unwrap_or_else(|| "initial".into());
    let file = ctx
        .layout
        .backups()
        .join(format!("{current}.before-{new_id}.backup"));
    ctx.vars
        .insert("HOIST_BACKUP_FILE".into(), file.display().to_string());
    if let Some(run_as) = &ctx.run_as
        && nix::unistd::Uid::effective().is_root()
    {
        let _ = nix::unistd::chown(
            &ctx.layout.backups(),
            Some(run_as.uid()),
            Some(run_as.gid()),
        );
    }
    ctx.hook("backup", &cmd, &ctx.layout.release(new_id))
        .await?;
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    if size == 0 {
        let started = ctx.start("backup check", file.display().to_string());
        let r = ctx.fail(
            "backup check",
            format!(
                "the backup step left {} missing or empty; refusing to migrate without a backup",
                file.display()
            ),
        );
        return ctx.finish("backup check", started, r);
    }
    let marker = format!(
        "{}\n{}\n{}\n",
        file.display(),
        release::utc_stamp(journal::now_ms() / 1000),
        size
    );
    let _ = atomic::write_file(
        &ctx.layout.backups().join("LAST_SUCCESS"),
        marker.as_bytes(),
    );
    ctx.notice(format!("backup {} ({} bytes)", file.display(), size));
    if ctx.layout.current().is_some() {
        let path = ctx.journal_path();
        let mut journal = Journal::load(&path);
        let entry = journal.release_mut(&current);
        match entry {
            Some(r) => r.backup_file = Some(file.display().to_string()),
            None => journal.releases.push(ReleaseRecord {
                id: current.clone(),
                backup_file: Some(file.display().to_string()),
                ..Default::default()
            }),
        }
        let _ = journal.save(&path);
    }
    Ok(Some(file.display().to_string()))
}

/// Keeps backups recorded on releases still on disk, the newest `keep` of the rest.
fn prune_backups(ctx: &Ctx) {
    let journal = Journal::load(&ctx.journal_path());
    let on_disk = ctx.layout.list();
    let keep: Vec<String> = journal
        .releases
        .iter()
        .filter(|r| on_disk.contains(&r.id))
        .filter_map(|r| r.backup_file.clone())
        .collect();
    let mut others: Vec<PathBuf> = std::fs::read_dir(ctx.layout.backups())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "backup"))
        .filter(|p| !keep.contains(&p.display().to_string()))
        .collect();
    others.sort();
    let excess = others.len().saturating_sub(ctx.app.keep_releases as usize);
    for p in others.into_iter().take(excess) {
        let _ = std::fs::remove_file(p);
    }
}

async fn deploy(
    ctx: &mut Ctx,
    r#ref: &str,
    migrate: bool,
    allow_missing_env: bool,
    started_at_ms: u64,
) -> Outcome {
    if let Err(e) = ctx.layout.ensure() {
        return failed(
            Failed {
                step: "prepare".into(),
                error: format!("cannot create {}: {e}", ctx.app.deploy_to.display()),
            },
            "",
            "",
            "",
        );
    }
    let previous = ctx.layout.current().unwrap_or_default();
    let commit = match fetch(ctx, r#ref).await {
        Ok(c) => c,
        Err(f) => return failed(f, "", &previous, ""),
    };
    let id = release::new_id(&commit, &ctx.layout.releases());
    ctx.set_release_vars(&id, &commit, r#ref);
    ctx.notice(format!("release {id} ({}) from {}", &commit[..7], r#ref));
    let mut running = Running {
        job_id: ctx.job.id.clone(),
        release: id.clone(),
        switched: false,
        started_at_ms,
        kind: "deploy".into(),
        who: ctx.who.clone(),
        r#ref: r#ref.into(),
    };
    running.save(&ctx.state_dir, &ctx.app.name);

    let dir = ctx.layout.release(&id);
    let mut maintenance = false;
    let before_switch: StepResult = async {
        materialise(ctx, &commit, &id).await?;
        link_shared(ctx, &id, allow_missing_env)?;
        ctx.maybe_hook("build", ctx.app.steps.build.as_ref(), &dir)
            .await?;
        if migrate {
            backup(ctx, &id).await?;
        }
        if let Some(cmd) = &ctx.app.steps.maintenance_on {
            maintenance = true;
            ctx.hook("maintenance_on", cmd, &dir).await?;
        }
        if migrate {
            match &ctx.app.steps.migrate {
                Some(cmd) => ctx.hook("migrate", cmd, &dir).await?,
                None => ctx.notice("migrations requested, but this app declares no migrate step"),
            }
        }
        Ok(())
    }
    .await;
    if let Err(f) = before_switch {
        if maintenance {
            let _ = ctx
                .maybe_hook(
                    "maintenance_off",
                    ctx.app.steps.maintenance_off.as_ref(),
                    &dir,
                )
                .await;
        }
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(ctx.layout.releases().join(format!("{id}.tmp")));
        ctx.notice(format!(
            "release {id} removed; current is untouched ({})",
            if previous.is_empty() {
                "no release yet"
            } else {
                &previous
            }
        ));
        return failed(f, &id, &previous, &commit);
    }

    // The switch.
    let started = ctx.start("switch", format!("current -> releases/{id}"));
    let switched = ctx
        .layout
        .switch(&id)
        .or_else(|e| ctx.fail("switch", format!("cannot switch current: {e}")));
    if let Err(f) = ctx.finish("switch", started, switched) {
        let _ = std::fs::remove_dir_all(&dir);
        return failed(f, &id, &previous, &commit);
    }
    running.switched = true;
    running.save(&ctx.state_dir, &ctx.app.name);
    record_release(ctx, &id, &commit, r#ref);

    let after: StepResult = async {
        activate(ctx, &dir).await?;
        ctx.maybe_hook("after_switch", ctx.app.steps.after_switch.as_ref(), &dir)
            .await?;
        ctx.restart_services(&dir, "").await?;
        if maintenance {
            maintenance = false;
            ctx.maybe_hook(
                "maintenance_off",
                ctx.app.steps.maintenance_off.as_ref(),
                &dir,
            )
            .await?;
        }
        ctx.run_checks().await
    }
    .await;
    let outcome = match after {
        Ok(()) => Outcome {
            result: JobResult::Succeeded,
            release: id.clone(),
            previous: previous.clone(),
            commit: commit.clone(),
            error: String::new(),
        },
        Err(f) => {
            let migrated = migrate && ctx.app.steps.migrate.is_some();
            auto_rollback(ctx, f, &id, &previous, &commit, migrated, maintenance).await
        }
    };
    if outcome.result == JobResult::Succeeded {
        note_current(ctx, &id, &previous);
    }
    let protect: Vec<String> = ctx
        .layout
        .previous(&Journal::load(&ctx.journal_path()))
        .into_iter()
        .collect();
    let removed = ctx.layout.prune(ctx.app.keep_releases as usize, &protect);
    if !removed.is_empty() {
        ctx.notice(format!("pruned old releases: {}", removed.join(", ")));
    }
    prune_backups(ctx);
    outcome
}

/// Records in the journal's history that `id` now serves, after `was`.
fn note_current(ctx: &Ctx, id: &str, was: &str) {
    let path = ctx.journal_path();
    let mut journal = Journal::load(&path);
    if !was.is_empty() && !journal.history.iter().any(|h| h == was) {
        journal.note_current(was);
    }
    journal.note_current(id);
    if let Err(err) = journal.save(&path) {
        tracing::error!(error = %err, "cannot record the release history");
    }
}

/// The command strategy's switch: `activate` (e.g. `helm upgrade --install ... --wait`)
/// from the release, after `current` points at it.
async fn activate(ctx: &Ctx, dir: &Path) -> StepResult {
    if ctx.app.strategy == config::Strategy::Command {
        ctx.maybe_hook("activate", ctx.app.activate.as_ref(), dir)
            .await?;
    }
    Ok(())
}

fn record_release(ctx: &Ctx, id: &str, commit: &str, r#ref: &str) {
    let path = ctx.journal_path();
    let mut journal = Journal::load(&path);
    journal.releases.retain(|r| r.id != id);
    journal.releases.push(ReleaseRecord {
        id: id.into(),
        commit: commit.into(),
        r#ref: r#ref.into(),
        who: ctx.who.clone(),
        deployed_at_ms: journal::now_ms(),
        job_id: ctx.job.id.clone(),
        backup_file: None,
    });
    let on_disk = ctx.layout.list();
    journal.releases.retain(|r| on_disk.contains(&r.id));
    if let Err(err) = journal.save(&path) {
        tracing::error!(error = %err, "cannot record the release in the journal");
    }
}

/// After-switch failure: put the previous release back and restart services.
async fn auto_rollback(
    ctx: &Ctx,
    f: Failed,
    id: &str,
    previous: &str,
    commit: &str,
    migrated: bool,
    maintenance: bool,
) -> Outcome {
    let reason = format!("{}: {}", f.step, f.error);
    if previous.is_empty() {
        ctx.notice("no previous release to return to; the new release stays current");
        return failed(f, id, previous, commit);
    }
    ctx.notice(format!("{reason}; rolling back to {previous}"));
    let prev_dir = ctx.layout.release(previous);
    if ctx.app.strategy == config::Strategy::Command {
        // The platform's own rollback (e.g. `helm rollback`), run from the failed release.
        let _ = ctx
            .maybe_hook(
                "deactivate",
                ctx.app.deactivate.as_ref(),
                &ctx.layout.release(id),
            )
            .await;
    }
    let started = ctx.start("rollback", format!("current -> releases/{previous}"));
    let r = ctx
        .layout
        .switch(previous)
        .or_else(|e| ctx.fail("rollback", format!("cannot switch back: {e}")));
    if let Err(e) = ctx.finish("rollback", started, r) {
        return failed(e, id, previous, commit);
    }
    let restarted = ctx.restart_services(&prev_dir, "").await;
    if maintenance {
        let _ = ctx
            .maybe_hook(
                "maintenance_off",
                ctx.app.steps.maintenance_off.as_ref(),
                &prev_dir,
            )
            .await;
    }
    if migrated {
        ctx.notice(format!(
            "migrations of {id} are not reversed automatically; run `hoist rollback {} --migrate` if the previous release needs the old schema",
            ctx.app.name
        ));
    }
    let mut error = format!("rolled back to {previous}: {reason}");
    if let Err(e) = restarted {
        error.push_str(&format!(
            "; restarting services after the rollback failed too: {}",
            e.error
        ));
    }
    Outcome {
        result: JobResult::RolledBack,
        release: id.into(),
        previous: previous.into(),
        commit: commit.into(),
        error,
    }
}

async fn rollback(ctx: &mut Ctx, to: &str, migrate: bool, restore_db: bool) -> Outcome {
    let current = ctx.layout.current().unwrap_or_default();
    let target = if to.is_empty() {
        ctx.layout
            .previous(&Journal::load(&ctx.journal_path()))
            .unwrap_or_default()
    } else {
        to.to_string()
    };
    let fail = |step: &str, error: String| {
        failed(
            Failed {
                step: step.into(),
                error,
            },
            &target,
            &current,
            "",
        )
    };
    if target.is_empty() {
        return fail(
            "rollback",
            "there is no previous release to roll back to".into(),
        );
    }
    if !ctx.layout.release(&target).is_dir() {
        return fail(
            "rollback",
            format!(
                "release {target} is not on this host; see `hoist releases {}`",
                ctx.app.name
            ),
        );
    }
    if target == current {
        return fail("rollback", format!("release {target} is already current"));
    }
    let journal = Journal::load(&ctx.journal_path());
    let record = journal.release(&target).cloned().unwrap_or_default();
    ctx.set_release_vars(&target, &record.commit, &record.r#ref);
    ctx.notice(format!("rolling back from {current} to {target}"));
    let cur_dir = ctx.layout.release(&current);
    let target_dir = ctx.layout.release(&target);
    let result: StepResult = async {
        if migrate {
            // The release being left holds the migrations to reverse.
            match &ctx.app.steps.migrate_rollback {
                Some(cmd) => ctx.hook("migrate_rollback", cmd, &cur_dir).await?,
                None => {
                    return ctx.fail(
                        "migrate_rollback",
                        "this app declares no migrate_rollback step",
                    );
                }
            }
        }
        if restore_db {
            let Some(file) = record.backup_file.clone() else {
                return ctx.fail(
                    "restore",
                    format!("no backup is recorded for release {target}; nothing to restore"),
                );
            };
            let Some(cmd) = ctx.app.steps.restore.clone() else {
                return ctx.fail("restore", "this app declares no restore step");
            };
            ctx.vars.insert("HOIST_BACKUP_FILE".into(), file);
            ctx.hook("restore", &cmd, &target_dir).await?;
        }
        let started = ctx.start("switch", format!("current -> releases/{target}"));
        let r = ctx
            .layout
            .switch(&target)
            .or_else(|e| ctx.fail("switch", format!("cannot switch: {e}")));
        ctx.finish("switch", started, r)?;
        note_current(ctx, &target, &current);
        activate(ctx, &target_dir).await?;
        ctx.maybe_hook(
            "after_switch",
            ctx.app.steps.after_switch.as_ref(),
            &target_dir,
        )
        .await?;
        ctx.restart_services(&target_dir, "").await?;
        ctx.run_checks().await
    }
    .await;
    match result {
        Ok(()) => Outcome {
            result: JobResult::Succeeded,
            release: target,
            previous: current,
            commit: record.commit,
            error: String::new(),
        },
        Err(f) => failed(f, &target, &current, &record.commit),
    }
}

async fn restart(ctx: &Ctx, service: &str) -> Outcome {
    let current = ctx.layout.current().unwrap_or_default();
    let dir = if current.is_empty() {
        ctx.app.deploy_to.clone()
    } else {
        ctx.layout.release(&current)
    };
    let result = async {
        ctx.restart_services(&dir, service).await?;
        ctx.run_checks().await
    }
    .await;
    match result {
        Ok(()) => Outcome {
            result: JobResult::Succeeded,
            release: current.clone(),
            previous: String::new(),
            commit: String::new(),
            error: String::new(),
        },
        Err(f) => failed(f, &current, "", ""),
    }
}

fn env_summary(set: &[(String, String)], unset: &[String]) -> String {
    let mut parts: Vec<String> = set.iter().map(|(k, _)| format!("set {k}")).collect();
    parts.extend(unset.iter().map(|k| format!("unset {k}")));
    parts.join(", ")
}

async fn env_change(
    ctx: &Ctx,
    set: &[(String, String)],
    unset: &[String],
    restart_services: bool,
) -> Outcome {
    let step = "env";
    let path = ctx.layout.shared().join(".env");
    let started = ctx.start(step, format!("edit {}", path.display()));
    let result = crate::envfile::edit(&path, set, unset).or_else(|e| ctx.fail(step, e));
    if let Ok(lines) = &result {
        for line in lines {
            ctx.job.emit(Kind::Output(StepOutput {
                step: step.into(),
                stream: WireStream::Stdout.into(),
                line: line.clone(),
            }));
        }
    }
    if let Err(f) = ctx.finish(step, started, result) {
        return failed(f, "", "", "");
    }
    if restart_services {
        return restart(ctx, "").await;
    }
    Outcome {
        result: JobResult::Succeeded,
        release: ctx.layout.current().unwrap_or_default(),
        previous: String::new(),
        commit: String::new(),
        error: String::new(),
    }
}

/// Called at startup: a job that was running when the agent died is marked
/// `interrupted`; a release it was building is removed; `current` is left as it is.
pub fn recover(state_dir: &Path, app: &App, registry: &crate::jobs::Registry) -> Option<String> {
    let path = Running::path(state_dir, &app.name);
    let running: Running = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    let layout = Layout::new(&app.deploy_to);
    let mut note = format!("hoistd stopped during this {} job", running.kind);
    if !running.switched && !running.release.is_empty() {
        if layout.current().as_deref() != Some(running.release.as_str()) {
            let _ = std::fs::remove_dir_all(layout.release(&running.release));
        }
        let _ = std::fs::remove_dir_all(layout.releases().join(format!("{}.tmp", running.release)));
        note.push_str(&format!(
            "; the half-built release {} was removed; current is {}",
            running.release,
            layout.current().unwrap_or_else(|| "not set".into())
        ));
    } else if running.switched {
        note.push_str(&format!(
            "; current points at {} (switched before the stop): check `hoist status`",
            running.release
        ));
    }
    crate::jobs::mark_interrupted(registry, &app.name, &running.job_id, &note);
    let jpath = Journal::path(state_dir, &app.name);
    let mut journal = Journal::load(&jpath);
    journal.record_job(JobRecord {
        job_id: running.job_id.clone(),
        kind: running.kind.clone(),
        r#ref: running.r#ref.clone(),
        release: running.release.clone(),
        who: running.who.clone(),
        started_at_ms: running.started_at_ms,
        result: journal::result_name(JobResult::Interrupted).into(),
        error: note.clone(),
        ..Default::default()
    });
    let _ = journal.save(&jpath);
    let _ = std::fs::remove_file(&path);
    tracing::warn!(app = %app.name, job = %running.job_id, "{note}");
    Some(running.job_id)
}

/// How long a deploy lease lasts without renewal (the job itself holds it while it
/// runs; this bounds a lock left by a crashed agent).
pub const JOB_LEASE: Duration = Duration::from_secs(3600);
