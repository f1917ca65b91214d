//! The one place the agent starts processes: hooks (by `/bin/sh -c`, as the app's user,
//! umask 027), the agent's own tools (git, by argv) and the host's service tools
//! (systemctl, supervisorctl, docker, by argv). Every child gets a clean, declared
//! environment, its own process group, a deadline after which it is killed, and its
//! output streamed line by line. `clippy.toml` forbids `Command::new` everywhere else.
//!
//! A step never outlives itself: when its process ends (or is killed at the deadline),
//! every descendant is killed too — the ones still below it, and the ones that left its
//! process group or session (`setsid cmd &`) and were orphaned. hoistd is a child
//! subreaper ([`become_subreaper`]), so orphans are re-parented to it, not to init; each
//! step's processes carry [`STEP_VAR`] in their environment, which is how an orphan is
//! told to belong to a step. Orphans re-parented to hoistd are reaped here, never the
//! children tokio waits for ([`SPAWNED`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::CString,
    os::unix::process::ExitStatusExt as _,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use nix::{
    sys::{
        signal::{Signal, kill, killpg},
        wait::{WaitPidFlag, waitpid},
    },
    unistd::{Gid, Group, Pid, Uid, User},
};
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
    sync::mpsc,
    time::Instant,
};

/// Grace between SIGTERM and SIGKILL for a timed-out process group.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// The umask hooks run with: what they create is not readable by other users.
pub const HOOK_UMASK: u32 = 0o027;
/// The environment variable marking a step's processes (value: the step's token).
pub const STEP_VAR: &str = "HOIST_STEP";
/// Rounds of "find the step's processes, kill them" at its end (each a few ms).
const KILL_ROUNDS: usize = 50;
/// Pause between kill rounds, for the killed to die and their children to be orphaned.
const KILL_ROUND_PAUSE: Duration = Duration::from_millis(20);

/// Children spawned here that tokio waits for: never reaped by [`reap_orphans`].
static SPAWNED: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());
/// Tokens of the steps running now: an orphan carrying one belongs to that step.
static LIVE_STEPS: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Whether this process is hoistd made a subreaper: then every child not in [`SPAWNED`]
/// is a step's orphan (hoistd starts processes nowhere else). A process using this
/// module as a library (the tests) may have children of its own, left alone.
static SUBREAPER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes hoistd a child subreaper: processes orphaned by a step are re-parented to it
/// (and so killed and reaped when the step ends) rather than to init. Only for a
/// process that starts children nowhere but here.
pub fn become_subreaper() -> Result<(), nix::Error> {
    nix::sys::prctl::set_child_subreaper(true)?;
    SUBREAPER.store(true, Ordering::Relaxed);
    Ok(())
}

fn is_subreaper() -> bool {
    SUBREAPER.load(Ordering::Relaxed)
}

/// PATH given to commands: the environment is otherwise clean.
const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long a child that has exited may keep its output pipes open (through a
/// grandchild that left its group) before its output is taken as complete.
const PIPE_GRACE: Duration = Duration::from_secs(1);
/// What the host's service tools are given of the agent's own environment, and
/// nothing else: where to find the tools (`PATH`, as the agent's unit sets it), and
/// where the Docker engine and its client config are.
const TOOL_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "DOCKER_HOST",
    "DOCKER_CONFIG",
    "DOCKER_CONTEXT",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
];

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("user {0:?} does not exist on this host; create it or fix `user` in the app config")]
    NoUser(String),
    #[error("group {0:?} does not exist on this host; create it or fix `group` in the app config")]
    NoGroup(String),
    #[error("cannot look up user/group: {0}")]
    Lookup(#[from] nix::Error),
    #[error("cannot start {command:?}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("lost track of {command:?}: {source}")]
    Wait {
        command: String,
        source: std::io::Error,
    },
}

impl ProcessError {
    /// The underlying I/O error of a failed start or wait, or this error as one.
    pub fn into_io(self) -> std::io::Error {
        match self {
            ProcessError::Spawn { source, .. } | ProcessError::Wait { source, .. } => source,
            other => std::io::Error::other(other.to_string()),
        }
    }

    /// Whether the program does not exist (not installed, or not on `PATH`).
    pub fn not_found(&self) -> bool {
        matches!(self, ProcessError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// The identity a command runs as.
#[derive(Clone, Debug)]
pub struct RunAs {
    uid: Uid,
    gid: Gid,
    name: CString,
}

impl RunAs {
    pub fn uid(&self) -> Uid {
        self.uid
    }

    pub fn gid(&self) -> Gid {
        self.gid
    }

    /// Resolves `user` and optional `group` (default: the user's primary group).
    pub fn resolve(user: &str, group: Option<&str>) -> Result<RunAs, ProcessError> {
        let u = User::from_name(user)?.ok_or_else(|| ProcessError::NoUser(user.into()))?;
        let gid = match group {
            Some(g) => {
                Group::from_name(g)?
                    .ok_or_else(|| ProcessError::NoGroup(g.into()))?
                    .gid
            }
            None => u.gid,
        };
        let name = CString::new(user).map_err(|_| ProcessError::NoUser(user.into()))?;
        Ok(RunAs {
            uid: u.uid,
            gid,
            name,
        })
    }
}

/// One command to run.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Run by `/bin/sh -c`: the text comes from the agent's root-owned config, never
    /// from a request.
    pub shell: String,
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
    pub run_as: Option<RunAs>,
    pub timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// How a child process ended.
#[derive(Clone, Debug)]
pub struct Exit {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub duration: Duration,
}

impl Exit {
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }

    /// "exited with status 1", "was killed by signal 9".
    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(signal)) => format!("was killed by signal {signal}"),
            (None, None) => "ended abnormally".into(),
        }
    }
}

/// Runs `spec`, sending every output line to `lines` as it arrives.
pub async fn run(
    spec: &Spec,
    lines: mpsc::UnboundedSender<(Stream, String)>,
) -> Result<Exit, ProcessError> {
    let mut env = spec.env.clone();
    if let Some(run_as) = &spec.run_as {
        let home = User::from_uid(run_as.uid)
            .ok()
            .flatten()
            .map(|u| u.dir)
            .unwrap_or_else(|| "/".into());
        env.insert("HOME".into(), home.display().to_string());
        env.insert("USER".into(), run_as.name.to_string_lossy().into_owned());
    }
    let argv = ["/bin/sh", "-c", spec.shell.as_str()];
    let child = Spawn {
        argv: &argv,
        label: &spec.shell,
        cwd: Some(&spec.cwd),
        env: &env,
        run_as: spec.run_as.as_ref(),
        umask: Some(HOOK_UMASK),
    };
    execute(child, Instant::now() + spec.timeout, to_channel(lines)).await
}

/// Runs a program with arguments (never through a shell: arguments may come from a
/// request, like a git ref) as the agent itself, with the same clean environment,
/// timeout and process-group kill as hooks.
pub async fn run_argv(
    argv: &[&str],
    cwd: &Path,
    env: &BTreeMap<String, String>,
    timeout: Duration,
    lines: mpsc::UnboundedSender<(Stream, String)>,
) -> Result<Exit, ProcessError> {
    let label = argv.join(" ");
    let child = Spawn {
        argv,
        label: &label,
        cwd: Some(cwd),
        env,
        run_as: None,
        umask: None,
    };
    execute(child, Instant::now() + timeout, to_channel(lines)).await
}

/// Runs one of the host's service tools (systemctl, supervisorctl, docker) by argv, as
/// the agent, until `deadline`, feeding its output lines to `sink`. Its environment is
/// clean but for [`TOOL_ENV`]; without `cwd` it runs in the agent's own directory.
pub async fn run_tool(
    argv: &[&str],
    cwd: Option<&Path>,
    deadline: Instant,
    sink: impl FnMut(Stream, String),
) -> Result<Exit, ProcessError> {
    let label = argv.join(" ");
    let env = tool_env();
    let child = Spawn {
        argv,
        label: &label,
        cwd,
        env: &env,
        run_as: None,
        umask: None,
    };
    execute(child, deadline, sink).await
}

/// The environment of the host's service tools: [`TOOL_ENV`] as the agent has it.
fn tool_env() -> BTreeMap<String, String> {
    TOOL_ENV
        .iter()
        .filter_map(|key| Some((key.to_string(), std::env::var(key).ok()?)))
        .collect()
}

fn to_channel(lines: mpsc::UnboundedSender<(Stream, String)>) -> impl FnMut(Stream, String) {
    move |stream, line| {
        let _ = lines.send((stream, line));
    }
}

/// One child to start.
struct Spawn<'a> {
    argv: &'a [&'a str],
    /// How errors name it.
    label: &'a str,
    cwd: Option<&'a Path>,
    /// Everything the child's environment holds besides the default `PATH`.
    env: &'a BTreeMap<String, String>,
    run_as: Option<&'a RunAs>,
    /// The child's umask, when not the agent's own.
    umask: Option<u32>,
}

/// Starts `child` in its own process group with a clean environment and feeds its
/// stdout and stderr lines to `sink` as they come. At `deadline` the group and every
/// descendant get SIGTERM, then SIGKILL after [`KILL_GRACE`]. When the child has exited,
/// every process left of the step is killed ([`end_step`]), and output still open
/// [`PIPE_GRACE`] later is abandoned.
async fn execute(
    child: Spawn<'_>,
    deadline: Instant,
    mut sink: impl FnMut(Stream, String),
) -> Result<Exit, ProcessError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let started = Instant::now();
    let (program, args) = child
        .argv
        .split_first()
        .ok_or_else(|| ProcessError::Spawn {
            command: String::new(),
            source: std::io::Error::other("empty command"),
        })?;
    let token = format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    #[allow(clippy::disallowed_methods)] // the one spawner
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", SAFE_PATH)
        .envs(child.env)
        .env(STEP_VAR, &token)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
    if let Some(cwd) = child.cwd {
        cmd.current_dir(cwd);
    }
    let run_as = child
        .run_as
        .filter(|r| Uid::effective().is_root() || Uid::effective() != r.uid)
        .cloned();
    // (Already that user, as in tests and unprivileged agents: nothing to drop.)
    set_identity(&mut cmd, run_as, child.umask);
    let step = Step::start(&token);
    let mut proc = {
        let mut spawned = SPAWNED.lock().unwrap_or_else(|e| e.into_inner());
        let proc = cmd.spawn().map_err(|source| ProcessError::Spawn {
            command: child.label.to_string(),
            source,
        })?;
        if let Some(pid) = proc.id().and_then(|id| i32::try_from(id).ok()) {
            spawned.insert(pid);
        }
        proc
    };
    let pid = proc.id().and_then(|id| i32::try_from(id).ok());
    let _waited = pid.map(Spawned);
    let pgid = pid.map(Pid::from_raw);
    let mut stdout = proc.stdout.take().map(BufReader::new);
    let mut stderr = proc.stderr.take().map(BufReader::new);
    let (mut out_buf, mut err_buf) = (Vec::new(), Vec::new());
    let mut status: Option<ExitStatus> = None;
    let mut timed_out = false;
    // After the exit: how long the pipes may stay open.
    let mut grace = deadline;
    loop {
        tokio::select! {
            line = next_line(stdout.as_mut(), &mut out_buf), if stdout.is_some() => match line {
                Some(line) => sink(Stream::Stdout, line),
                None => stdout = None,
            },
            line = next_line(stderr.as_mut(), &mut err_buf), if stderr.is_some() => match line {
                Some(line) => sink(Stream::Stderr, line),
                None => stderr = None,
            },
            exit = proc.wait(), if status.is_none() => {
                status = Some(exit.map_err(|source| ProcessError::Wait {
                    command: child.label.to_string(),
                    source,
                })?);
                // Whatever the step left behind (in its group, or escaped from it) goes
                // now; that also closes the pipes it held.
                if let Some(pgid) = pgid {
                    let _ = killpg(pgid, Signal::SIGKILL);
                }
                // (The child itself is reaped: its orphans carry the step's token.)
                step.end(None, Signal::SIGKILL).await;
                grace = Instant::now() + PIPE_GRACE;
            },
            () = tokio::time::sleep_until(grace), if status.is_some() => break,
            () = tokio::time::sleep_until(deadline), if status.is_none() => {
                timed_out = true;
                status = Some(stop(&mut proc, pgid, &step).await);
                grace = Instant::now() + PIPE_GRACE;
            },
        }
        if stdout.is_none() && stderr.is_none() && status.is_some() {
            break;
        }
    }
    // A descendant forked while the output drained.
    step.end(None, Signal::SIGKILL).await;
    let status = status.as_ref();
    Ok(Exit {
        code: status.and_then(ExitStatus::code),
        signal: status.and_then(ExitStatus::signal),
        timed_out,
        duration: started.elapsed(),
    })
}

/// Removes a child from [`SPAWNED`] once tokio has waited for it (or given it up).
struct Spawned(i32);

impl Drop for Spawned {
    fn drop(&mut self) {
        SPAWNED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.0);
    }
}

/// One running step: its token is live while it runs.
struct Step {
    token: String,
}

impl Step {
    fn start(token: &str) -> Step {
        LIVE_STEPS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.to_string());
        Step {
            token: token.to_string(),
        }
    }

    /// Sends `signal` to every process of the step (below `root`, or carrying its
    /// token), until none is left, reaping the ones re-parented to hoistd. Bounded:
    /// [`KILL_ROUNDS`] rounds.
    async fn end(&self, root: Option<i32>, signal: Signal) {
        for _ in 0..KILL_ROUNDS {
            let found = step_processes(root, &self.token);
            reap_orphans();
            if found.is_empty() {
                return;
            }
            for pid in found {
                let _ = kill(Pid::from_raw(pid), signal);
            }
            tokio::time::sleep(KILL_ROUND_PAUSE).await;
        }
        reap_orphans();
    }

    /// Signals the step's processes once (no waiting).
    fn signal_all(&self, root: Option<i32>, signal: Signal) {
        for pid in step_processes(root, &self.token) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        LIVE_STEPS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.token);
    }
}

/// One process as `/proc/PID/stat` shows it.
struct ProcEntry {
    pid: i32,
    ppid: i32,
    zombie: bool,
}

fn processes() -> Vec<ProcEntry> {
    #[allow(clippy::disallowed_methods)] // /proc, not app content
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = &stat[stat.rfind(')')? + 1..];
            let mut fields = rest.split_whitespace();
            let state = fields.next()?;
            let ppid = fields.next()?.parse().ok()?;
            Some(ProcEntry {
                pid,
                ppid,
                zombie: state == "Z" || state == "X",
            })
        })
        .collect()
}

/// The value of [`STEP_VAR`] in a process's environment: `Some("")` when it has none,
/// `None` when the environment cannot be read (the process is gone).
fn step_of(pid: i32) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{STEP_VAR}=");
    Some(
        environ
            .split(|b| *b == 0)
            .find_map(|var| var.strip_prefix(prefix.as_bytes()))
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default(),
    )
}

/// The live processes of the step with `token`: the ones below `root` (while it
/// lives), the ones carrying the token anywhere, orphans re-parented to hoistd (as a
/// subreaper) that belong to no running step, and everything below those.
fn step_processes(root: Option<i32>, token: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let all = processes();
    let spawned = SPAWNED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let live = LIVE_STEPS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for p in &all {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut seeds: Vec<i32> = root.into_iter().collect();
    for p in all.iter().filter(|p| !p.zombie && p.pid != me) {
        if spawned.contains(&p.pid) && Some(p.pid) != root {
            continue;
        }
        match step_of(p.pid) {
            Some(t) if t == token => seeds.push(p.pid),
            // An orphan of hoistd no running step claims (its step ended, or it
            // cleared its environment).
            Some(t) if p.ppid == me && is_subreaper() && !live.contains(&t) => seeds.push(p.pid),
            _ => {}
        }
    }
    let zombies: BTreeSet<i32> = all.iter().filter(|p| p.zombie).map(|p| p.pid).collect();
    let mut found = BTreeSet::new();
    while let Some(pid) = seeds.pop() {
        if pid == me || !found.insert(pid) {
            continue;
        }
        seeds.extend(children.get(&pid).into_iter().flatten().copied());
    }
    found.into_iter().filter(|p| !zombies.contains(p)).collect()
}

/// Reaps hoistd's exited children that tokio does not wait for (orphans re-parented to
/// it as a subreaper), so no zombie stays.
fn reap_orphans() {
    if !is_subreaper() {
        // Orphans go to another reaper; our own children are tokio's (or the caller's).
        return;
    }
    let me = std::process::id() as i32;
    let spawned = SPAWNED.lock().unwrap_or_else(|e| e.into_inner());
    for p in processes() {
        if p.ppid == me && p.zombie && !spawned.contains(&p.pid) {
            let _ = waitpid(Pid::from_raw(p.pid), Some(WaitPidFlag::WNOHANG));
        }
    }
}

/// Ends a child past its deadline: SIGTERM to its group and every process of the step,
/// SIGKILL to all of them after [`KILL_GRACE`].
async fn stop(proc: &mut Child, pgid: Option<Pid>, step: &Step) -> ExitStatus {
    let root = pgid.map(Pid::as_raw);
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGTERM);
    } else {
        let _ = proc.start_kill();
    }
    step.signal_all(root, Signal::SIGTERM);
    if tokio::time::timeout(KILL_GRACE, proc.wait()).await.is_err()
        && let Some(pgid) = pgid
    {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    step.signal_all(root, Signal::SIGKILL);
    let status = proc.wait().await;
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    step.end(None, Signal::SIGKILL).await;
    status.unwrap_or_else(|_| ExitStatus::from_raw(Signal::SIGKILL as i32))
}

/// The next line from `reader` (lossy UTF-8, without its line ending), or `None` at the
/// end. Partial lines survive cancellation in `buf`, so this may be used in `select!`.
async fn next_line<R: AsyncBufRead + Unpin>(
    reader: Option<&mut R>,
    buf: &mut Vec<u8>,
) -> Option<String> {
    // A read error ends the stream like the end of file does.
    let _ = reader?.read_until(b'\n', buf).await;
    if buf.is_empty() {
        return None;
    }
    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        buf.pop();
    }
    let line = String::from_utf8_lossy(buf).into_owned();
    buf.clear();
    Some(line)
}

/// Runs `spec` and collects its output (both streams, interleaved), keeping the last
/// `keep` bytes.
pub async fn run_captured(spec: &Spec, keep: usize) -> Result<(Exit, String), ProcessError> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let outcome = run(spec, tx).await?;
    let mut text = String::new();
    while let Ok((_, line)) = rx.try_recv() {
        text.push_str(&line);
        text.push('\n');
        if text.len() > keep * 2 {
            text = tail(&text, keep).to_string();
        }
    }
    Ok((outcome, tail(&text, keep).to_string()))
}

/// The last `max` bytes of `s`, cut at a character boundary.
pub fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[allow(unsafe_code)]
fn set_identity(cmd: &mut Command, run_as: Option<RunAs>, umask: Option<u32>) {
    if run_as.is_none() && umask.is_none() {
        return;
    }
    let umask = umask.map(nix::sys::stat::Mode::from_bits_truncate);
    // SAFETY: the closure runs in the forked child before exec and only calls
    // async-signal-safe syscalls (umask, setgroups via initgroups, setgid, setuid) on
    // data prepared before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(mask) = umask {
                nix::sys::stat::umask(mask);
            }
            if let Some(run_as) = &run_as {
                nix::unistd::initgroups(&run_as.name, run_as.gid)?;
                nix::unistd::setgid(run_as.gid)?;
                nix::unistd::setuid(run_as.uid)?;
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(shell: &str, timeout: Duration) -> Spec {
        Spec {
            shell: shell.into(),
            cwd: std::env::temp_dir(),
            env: BTreeMap::from([("GREETING".into(), "hi".into())]),
            run_as: None,
            timeout,
        }
    }

    #[tokio::test]
    async fn clean_environment_and_output() {
        let (outcome, out) = run_captured(
            &spec(
                "echo $GREETING; echo \"[$HOME]\" >&2; exit 3",
                Duration::from_secs(5),
            ),
            1000,
        )
        .await
        .unwrap();
        assert_eq!(outcome.code, Some(3));
        assert!(out.contains("hi\n"), "{out}");
        assert!(
            out.contains("[]"),
            "HOME leaked into the clean environment: {out}"
        );
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("grandchild.pid");
        let shell = format!(
            "sh -c 'echo $$ > {}; sleep 60' & sleep 60",
            marker.display()
        );
        let (outcome, _) = run_captured(&spec(&shell, Duration::from_millis(300)), 100)
            .await
            .unwrap();
        assert!(outcome.timed_out);
        assert!(!outcome.success());
        let pid: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild was in the group and must be gone (or a zombie being reaped).
        let alive = nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z");
        assert!(!alive, "grandchild {pid} survived the timeout");
    }

    fn alive(pid: i32) -> bool {
        nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok()
            && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z")
    }

    fn pid_in(marker: &Path) -> i32 {
        // The daemon writes its pid as it starts: give it a moment.
        for _ in 0..100 {
            if let Ok(text) = std::fs::read_to_string(marker)
                && let Ok(pid) = text.trim().parse()
            {
                return pid;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{} never written", marker.display());
    }

    #[tokio::test]
    async fn a_process_that_left_the_group_dies_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("escaped.pid");
        let shell = format!(
            "setsid sh -c 'echo $$ > {}; exec sleep 40' & sleep 60",
            marker.display()
        );
        let started = std::time::Instant::now();
        let (outcome, _) = run_captured(&spec(&shell, Duration::from_millis(500)), 100)
            .await
            .unwrap();
        let took = started.elapsed();
        assert!(outcome.timed_out);
        assert!(
            took < Duration::from_millis(500) + KILL_GRACE + Duration::from_secs(1),
            "the step outlived its timeout by {took:?}"
        );
        let pid = pid_in(&marker);
        assert!(!alive(pid), "escaped process {pid} survived the timeout");
    }

    #[tokio::test]
    async fn a_successful_step_leaves_no_daemon_behind() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("daemon.pid");
        let shell = format!(
            "setsid sh -c 'echo $$ > {}; exec sleep 40' >/dev/null 2>&1 & sleep 0.2; echo started",
            marker.display()
        );
        let started = std::time::Instant::now();
        let (outcome, out) = run_captured(&spec(&shell, Duration::from_secs(20)), 100)
            .await
            .unwrap();
        assert!(outcome.success(), "{out}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let pid = pid_in(&marker);
        assert!(!alive(pid), "daemon {pid} outlived its step");
    }

    #[tokio::test]
    async fn hooks_run_with_umask_027() {
        let dir = tempfile::tempdir().unwrap();
        let shell = format!("touch {0}/f; mkdir {0}/d", dir.path().display());
        let (outcome, out) = run_captured(&spec(&shell, Duration::from_secs(5)), 100)
            .await
            .unwrap();
        assert!(outcome.success(), "{out}");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &str| {
            std::fs::metadata(dir.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("f"), 0o640);
        assert_eq!(mode("d"), 0o750);
    }

    #[tokio::test]
    async fn service_tools_get_only_the_declared_environment() {
        let mut names = Vec::new();
        let sink = |_, line: String| names.extend(line.split_once('=').map(|(k, _)| k.to_string()));
        let deadline = Instant::now() + Duration::from_secs(5);
        let exit = run_tool(&["env"], None, deadline, sink).await.unwrap();
        assert!(exit.success());
        // `cargo test` runs with dozens of CARGO_* and RUST_* variables: none leak.
        let stray: Vec<&String> = names
            .iter()
            .filter(|k| !TOOL_ENV.contains(&k.as_str()) && k.as_str() != STEP_VAR)
            .collect();
        assert!(stray.is_empty(), "{stray:?}");
        assert!(names.iter().any(|k| k == "PATH"));
    }

    #[test]
    fn tail_respects_char_boundaries() {
        assert_eq!(tail("héllo", 4), "llo");
        assert_eq!(tail("abc", 10), "abc");
    }
}
