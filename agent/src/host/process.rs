//! The one place the agent starts processes: hooks (by `/bin/sh -c`, as the app's user,
//! umask 027), the agent's own tools (git, by argv) and the host's service tools
//! (systemctl, supervisorctl, docker, by argv). Every child gets a clean, declared
//! environment, its own process group, a deadline after which it is killed, and its
//! output streamed line by line, in pieces of at most [`MAX_PIECE`] bytes (a longer
//! line comes as several pieces, each but the last marked `continued`), read through a
//! bounded buffer: no line, however long, is ever held whole. `clippy.toml` forbids
//! `Command::new` everywhere else.
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

/// The most bytes of output in one piece: a longer line is split into pieces.
pub const MAX_PIECE: usize = 64 * 1024;
/// Bytes read from a child's pipe at once (the pipe's own capacity): fewer reads for
/// output that comes fast, freed when the child ends.
const READ_BUFFER: usize = 64 * 1024;
/// Pieces a hook may have in flight to the job's log before its pipe is left unread
/// (so a hook that prints faster than its output is stored waits, and the agent's
/// memory stays bounded).
pub const PIECES_IN_FLIGHT: usize = 16;

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

/// A line of output, or a piece of a line longer than [`MAX_PIECE`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    pub stream: Stream,
    /// Lossy UTF-8, without the line ending.
    pub text: String,
    /// The line goes on in the next piece of the same stream.
    pub continued: bool,
}

/// Where a child's output pieces go: a bounded channel, so a child that prints faster
/// than the pieces are taken waits on its pipe.
pub type Pieces = mpsc::Sender<Piece>;

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

/// The environment variable naming the job every child of a job carries (hooks, and
/// the agent's git), so the processes of a job whose agent died can be found.
pub const JOB_ENV: &str = "HOIST_DEPLOY_ID";

/// Kills what is left of job `job_id`'s children after its agent died (outside
/// systemd, whose cgroup kill does it first, they live on as orphans and would write
/// into a release being removed, or hold the git mirror): every process whose
/// environment names the job ([`JOB_ENV`]), with its process group. Returns their pids.
pub fn kill_orphans_of(job_id: &str) -> Vec<i32> {
    let wanted = format!("{JOB_ENV}={job_id}");
    let me = std::process::id();
    let my_group = nix::unistd::getpgrp();
    let mut killed = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return killed;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|p| *p != me)
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if !environ
            .split(|b| *b == 0)
            .any(|var| var == wanted.as_bytes())
        {
            continue;
        }
        let Ok(raw) = i32::try_from(pid) else {
            continue;
        };
        let pid = Pid::from_raw(raw);
        match nix::unistd::getpgid(Some(pid)) {
            Ok(group) if group != my_group && group.as_raw() > 1 => {
                let _ = killpg(group, Signal::SIGKILL);
            }
            _ => {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            }
        }
        killed.push(raw);
    }
    // Gone (or a zombie) before the caller removes what they wrote to: bounded.
    let deadline = std::time::Instant::now() + KILL_GRACE;
    while std::time::Instant::now() < deadline
        && killed.iter().any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(") ")
                    .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
            })
        })
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    killed
}

/// Runs `spec`, sending every output piece to `pieces` as it arrives (waiting while the
/// channel is full).
pub async fn run(spec: &Spec, pieces: Pieces) -> Result<Exit, ProcessError> {
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
    execute(child, Instant::now() + spec.timeout, to_channel(pieces)).await
}

/// Runs a program with arguments (never through a shell: arguments may come from a
/// request, like a git ref) as the agent itself, with the same clean environment,
/// timeout and process-group kill as hooks.
pub async fn run_argv(
    argv: &[&str],
    cwd: &Path,
    env: &BTreeMap<String, String>,
    timeout: Duration,
    pieces: Pieces,
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
    execute(child, Instant::now() + timeout, to_channel(pieces)).await
}

/// Runs one of the host's service tools (systemctl, supervisorctl, docker) by argv, as
/// the agent, until `deadline`, feeding its output lines to `sink` (a line longer than
/// [`MAX_PIECE`] as several). Its environment is clean but for [`TOOL_ENV`]; without
/// `cwd` it runs in the agent's own directory.
pub async fn run_tool(
    argv: &[&str],
    cwd: Option<&Path>,
    deadline: Instant,
    mut sink: impl FnMut(Stream, String),
) -> Result<Exit, ProcessError> {
    let sink = move |piece: Piece| {
        sink(piece.stream, piece.text);
        std::future::ready(())
    };
    execute_tool(argv, cwd, deadline, sink).await
}

/// Like [`run_tool`], but each output piece goes to `pieces` (waiting while the channel
/// is full): for tools that run long and print much, like `journalctl -f`. Dropping the
/// future kills the tool.
pub async fn stream_tool(
    argv: &[&str],
    deadline: Instant,
    pieces: Pieces,
) -> Result<Exit, ProcessError> {
    execute_tool(argv, None, deadline, to_channel(pieces)).await
}

/// A service tool, as the agent, with [`tool_env`].
async fn execute_tool<F: std::future::Future<Output = ()>>(
    argv: &[&str],
    cwd: Option<&Path>,
    deadline: Instant,
    sink: impl FnMut(Piece) -> F,
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

fn to_channel(pieces: Pieces) -> impl FnMut(Piece) -> BoxedSend {
    move |piece| {
        let pieces = pieces.clone();
        Box::pin(async move {
            // A receiver that went away takes no more output; the child runs on.
            let _ = pieces.send(piece).await;
        })
    }
}

type BoxedSend = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

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
/// stdout and stderr pieces to `sink` as they come (not reading on while `sink`'s
/// future is pending). At `deadline` the group and every descendant get SIGTERM, then
/// SIGKILL after [`KILL_GRACE`]. When the child has exited, every process left of the
/// step is killed ([`Step::end`]), and output still open [`PIPE_GRACE`] later is
/// abandoned.
async fn execute<F: std::future::Future<Output = ()>>(
    child: Spawn<'_>,
    deadline: Instant,
    mut sink: impl FnMut(Piece) -> F,
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
    let mut stdout = proc
        .stdout
        .take()
        .map(|p| BufReader::with_capacity(READ_BUFFER, p));
    let mut stderr = proc
        .stderr
        .take()
        .map(|p| BufReader::with_capacity(READ_BUFFER, p));
    // Each holds at most one piece ([`MAX_PIECE`]) between reads.
    let (mut out_buf, mut err_buf) = (Vec::new(), Vec::new());
    let mut status: Option<ExitStatus> = None;
    let mut timed_out = false;
    let mut emptied = false;
    // After the exit: how long the pipes may stay open without output, and how long
    // output still coming is taken.
    let mut grace = deadline;
    let mut drain_until = deadline;
    loop {
        tokio::select! {
            piece = next_piece(stdout.as_mut(), &mut out_buf), if stdout.is_some() => match piece {
                Some((text, continued)) => {
                    sink(Piece { stream: Stream::Stdout, text, continued }).await;
                    grace = drained(status.is_some(), grace, drain_until);
                }
                None => stdout = None,
            },
            piece = next_piece(stderr.as_mut(), &mut err_buf), if stderr.is_some() => match piece {
                Some((text, continued)) => {
                    sink(Piece { stream: Stream::Stderr, text, continued }).await;
                    grace = drained(status.is_some(), grace, drain_until);
                }
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
                emptied = step.end(None, Signal::SIGKILL).await;
                grace = Instant::now() + PIPE_GRACE;
                drain_until = deadline.max(grace);
            },
            () = tokio::time::sleep_until(grace), if status.is_some() => break,
            () = tokio::time::sleep_until(deadline), if status.is_none() => {
                timed_out = true;
                status = Some(stop(&mut proc, pgid, &step).await);
                grace = Instant::now() + PIPE_GRACE;
                drain_until = grace;
            },
        }
        if stdout.is_none() && stderr.is_none() && status.is_some() {
            break;
        }
    }
    // A descendant forked while the output drained (not when the step was seen empty:
    // nothing is left that could fork).
    if !emptied {
        step.end(None, Signal::SIGKILL).await;
    }
    let status = status.as_ref();
    Ok(Exit {
        code: status.and_then(ExitStatus::code),
        signal: status.and_then(ExitStatus::signal),
        timed_out,
        duration: started.elapsed(),
    })
}

/// After the child exited, output still coming counts as the child's (it was written
/// before the exit and is being drained at the pace it is stored): the grace starts
/// again with each piece, but not past `until` (the deadline, or the grace after a
/// timeout).
fn drained(exited: bool, grace: Instant, until: Instant) -> Instant {
    if exited {
        (Instant::now() + PIPE_GRACE).min(until).max(grace)
    } else {
        grace
    }
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
    /// [`KILL_ROUNDS`] rounds. True when the step was seen with no process left (none
    /// can appear after that: only a step's own processes fork into it).
    async fn end(&self, root: Option<i32>, signal: Signal) -> bool {
        for _ in 0..KILL_ROUNDS {
            if root.is_none() && no_children() {
                // A subreaper keeps every descendant in its tree: no child, no process
                // of the step anywhere (and no zombie to reap). Saves reading /proc.
                return true;
            }
            let all = processes();
            let found = step_processes(&all, root, &self.token);
            reap_orphans(&all);
            if found.is_empty() {
                return true;
            }
            for pid in found {
                let _ = kill(Pid::from_raw(pid), signal);
            }
            tokio::time::sleep(KILL_ROUND_PAUSE).await;
        }
        reap_orphans(&processes());
        false
    }

    /// Signals the step's processes once (no waiting).
    fn signal_all(&self, root: Option<i32>, signal: Signal) {
        for pid in step_processes(&processes(), root, &self.token) {
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

/// The live processes of the step with `token` in the snapshot `all`: the ones below
/// `root` (while it lives), the ones carrying the token, orphans re-parented to hoistd
/// (as a subreaper) that belong to no running step, and everything below those.
///
/// As a subreaper hoistd keeps every descendant in its own tree (an orphan is
/// re-parented to it, never out of it), so only its descendants' environments are read;
/// a library user (the tests) reads every process's.
fn step_processes(all: &[ProcEntry], root: Option<i32>, token: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let spawned = SPAWNED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let live = LIVE_STEPS.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for p in all {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let below = |from: Vec<i32>| {
        let mut found = BTreeSet::new();
        let mut seeds = from;
        while let Some(pid) = seeds.pop() {
            if pid == me || !found.insert(pid) {
                continue;
            }
            seeds.extend(children.get(&pid).into_iter().flatten().copied());
        }
        found
    };
    let mine = is_subreaper().then(|| below(children.get(&me).cloned().unwrap_or_default()));
    let mut seeds: Vec<i32> = root.into_iter().collect();
    for p in all.iter().filter(|p| !p.zombie && p.pid != me) {
        if spawned.contains(&p.pid) && Some(p.pid) != root {
            continue;
        }
        if mine.as_ref().is_some_and(|mine| !mine.contains(&p.pid)) {
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
    below(seeds)
        .into_iter()
        .filter(|p| !zombies.contains(p))
        .collect()
}

/// Whether hoistd, as a subreaper, has no child process at all (running or exited).
fn no_children() -> bool {
    use nix::sys::wait::{Id, waitid};
    is_subreaper()
        && matches!(
            waitid(
                Id::All,
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT
            ),
            Err(nix::errno::Errno::ECHILD)
        )
}

/// Reaps hoistd's exited children that tokio does not wait for (orphans re-parented to
/// it as a subreaper), so no zombie stays.
fn reap_orphans(all: &[ProcEntry]) {
    if !is_subreaper() {
        // Orphans go to another reaper; our own children are tokio's (or the caller's).
        return;
    }
    let me = std::process::id() as i32;
    let spawned = SPAWNED.lock().unwrap_or_else(|e| e.into_inner());
    for p in all {
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

/// The next piece of output from `reader`: a whole line (lossy UTF-8, without its line
/// ending) and `false`, or, for a line longer than [`MAX_PIECE`], its next
/// [`MAX_PIECE`] bytes (cut at a character boundary) and `true`; `None` at the end.
/// Reads through the reader's own buffer, so `buf` never holds more than one piece;
/// a partial piece survives cancellation in `buf`, so this may be used in `select!`.
async fn next_piece<R: AsyncBufRead + Unpin>(
    reader: Option<&mut R>,
    buf: &mut Vec<u8>,
) -> Option<(String, bool)> {
    let reader = reader?;
    loop {
        // A read error ends the stream like the end of file does.
        let available = reader.fill_buf().await.unwrap_or_default();
        if available.is_empty() {
            if buf.is_empty() {
                return None;
            }
            return Some((take_line(buf), false));
        }
        let room = MAX_PIECE.saturating_sub(buf.len());
        let window = &available[..available.len().min(room)];
        if let Some(end) = window.iter().position(|b| *b == b'\n') {
            buf.extend_from_slice(&window[..end]);
            reader.consume(end + 1);
            return Some((take_line(buf), false));
        }
        let taken = window.len();
        buf.extend_from_slice(window);
        reader.consume(taken);
        if buf.len() >= MAX_PIECE {
            return Some((take_piece(buf), true));
        }
    }
}

/// The whole of `buf` as a line, without a trailing carriage return.
fn take_line(buf: &mut Vec<u8>) -> String {
    while buf.last().is_some_and(|b| *b == b'\r') {
        buf.pop();
    }
    let line = String::from_utf8_lossy(buf).into_owned();
    buf.clear();
    line
}

/// A full piece from `buf`, leaving in it the start of a character cut in two.
fn take_piece(buf: &mut Vec<u8>) -> String {
    let cut = char_boundary_before_end(buf);
    let rest = buf.split_off(cut);
    let piece = String::from_utf8_lossy(buf).into_owned();
    *buf = rest;
    piece
}

/// Where the last (possibly incomplete) UTF-8 character of `bytes` starts, when it is
/// incomplete; otherwise the end.
fn char_boundary_before_end(bytes: &[u8]) -> usize {
    let len = bytes.len();
    // The lead byte of the last character is at most 3 bytes back.
    for back in 1..=len.min(4) {
        let b = bytes[len - back];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // a continuation byte
        }
        let need = match b {
            0x00..=0x7f => 1,
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => return len, // not UTF-8 anyway
        };
        return if need > back { len - back } else { len };
    }
    len
}

/// Runs `spec` and collects its output (both streams, interleaved), keeping the last
/// `keep` bytes.
pub async fn run_captured(spec: &Spec, keep: usize) -> Result<(Exit, String), ProcessError> {
    let (tx, mut rx) = mpsc::channel::<Piece>(PIECES_IN_FLIGHT);
    let collect = async {
        let mut text = String::new();
        while let Some(piece) = rx.recv().await {
            text.push_str(&piece.text);
            if !piece.continued {
                text.push('\n');
            }
            if text.len() > keep * 2 {
                text = tail(&text, keep).to_string();
            }
        }
        text
    };
    let (outcome, text) = tokio::join!(run(spec, tx), collect);
    Ok((outcome?, tail(&text, keep).to_string()))
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

    /// A dead job's orphan (a hook's `sh`, and its group) is found by its environment
    /// and killed; another job's process is left alone.
    #[test]
    fn orphans_of_a_dead_job_are_killed() {
        use std::os::unix::process::CommandExt as _;
        let job = format!("crash-orphan-{}", std::process::id());
        let start = |id: &str| {
            #[allow(clippy::disallowed_methods)] // the test plays the dead agent
            std::process::Command::new("/bin/sh")
                .args(["-c", "sleep 30 & wait"])
                .env_clear()
                .env(JOB_ENV, id)
                .process_group(0)
                .spawn()
                .unwrap()
        };
        let mut orphan = start(&job);
        let mut other = start(&format!("{job}-other"));
        std::thread::sleep(Duration::from_millis(100));
        let killed = kill_orphans_of(&job);
        assert!(killed.contains(&(orphan.id() as i32)), "{killed:?}");
        assert_eq!(orphan.wait().unwrap().signal(), Some(9));
        assert!(
            other.try_wait().unwrap().is_none(),
            "another job's process lives"
        );
        let _ = killpg(Pid::from_raw(other.id() as i32), Signal::SIGKILL);
        let _ = other.wait();
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

    #[tokio::test]
    async fn long_lines_come_in_bounded_pieces_and_nothing_is_lost() {
        // One line of 200,000 'é' (400,000 bytes, cut only between characters), then
        // 20,000 short lines, printed faster than a slow reader takes them.
        let shell = "head -c 200000 /dev/zero | tr '\\000' x | sed 's/x/é/g'; echo; seq 1 20000";
        let (tx, mut rx) = mpsc::channel::<Piece>(2);
        let spec = spec(shell, Duration::from_secs(30));
        let run = run(&spec, tx);
        let collect = async {
            let mut pieces = Vec::new();
            while let Some(piece) = rx.recv().await {
                if pieces.len() % 1000 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                pieces.push(piece);
            }
            pieces
        };
        let (exit, pieces) = tokio::join!(run, collect);
        assert!(exit.unwrap().success());
        assert!(pieces.iter().all(|p| p.text.len() <= MAX_PIECE));
        let long: Vec<&Piece> = pieces.iter().take_while(|p| p.continued).collect();
        assert!(long.len() >= 6, "{} pieces", long.len());
        let mut line: String = long.iter().map(|p| p.text.as_str()).collect();
        line.push_str(&pieces[long.len()].text);
        assert_eq!(line.chars().count(), 200_000);
        assert!(line.chars().all(|c| c == 'é'), "no character cut in two");
        let short: Vec<&str> = pieces[long.len() + 1..]
            .iter()
            .map(|p| p.text.as_str())
            .collect();
        assert_eq!(short.len(), 20_000, "every line after the exit is drained");
        assert_eq!(short.last(), Some(&"20000"));
    }

    #[test]
    fn pieces_end_before_a_cut_character() {
        assert_eq!(char_boundary_before_end("abé".as_bytes()), 4);
        assert_eq!(char_boundary_before_end(&"abé".as_bytes()[..3]), 2);
        assert_eq!(char_boundary_before_end(&"a€".as_bytes()[..3]), 1);
        assert_eq!(char_boundary_before_end(b"abc"), 3);
    }

    #[test]
    fn tail_respects_char_boundaries() {
        assert_eq!(tail("héllo", 4), "llo");
        assert_eq!(tail("abc", 10), "abc");
    }
}
