//! Running declared commands: as the app's user, with a clean environment, a timeout,
//! and the whole process group killed when the timeout fires.

use std::{
    collections::BTreeMap,
    ffi::CString,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::{Gid, Group, Pid, Uid, User},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::Command,
    sync::mpsc,
};

/// Grace between SIGTERM and SIGKILL for a timed-out process group.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// PATH given to commands: the environment is otherwise clean.
const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

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

/// How a command ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub timed_out: bool,
    pub duration: Duration,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.code == Some(0) && !self.timed_out
    }
}

/// Runs `spec`, sending every output line to `lines` as it arrives.
pub async fn run(
    spec: &Spec,
    lines: mpsc::UnboundedSender<(Stream, String)>,
) -> Result<Outcome, ProcessError> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c").arg(&spec.shell);
    prepare(&mut cmd, &spec.cwd, &spec.env);
    if let Some(run_as) = &spec.run_as {
        let home = User::from_uid(run_as.uid)
            .ok()
            .flatten()
            .map(|u| u.dir)
            .unwrap_or_else(|| "/".into());
        cmd.env("HOME", home)
            .env("USER", run_as.name.to_string_lossy().as_ref());
        if !Uid::effective().is_root() && Uid::effective() == run_as.uid {
            // Already that user (tests, unprivileged agents): nothing to drop.
        } else {
            set_identity(&mut cmd, run_as.clone());
        }
    }
    execute(cmd, &spec.shell, spec.timeout, lines).await
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
) -> Result<Outcome, ProcessError> {
    let (program, args) = argv.split_first().ok_or_else(|| ProcessError::Spawn {
        command: String::new(),
        source: std::io::Error::other("empty command"),
    })?;
    let mut cmd = Command::new(program);
    cmd.args(args);
    prepare(&mut cmd, cwd, env);
    execute(cmd, &argv.join(" "), timeout, lines).await
}

fn prepare(cmd: &mut Command, cwd: &Path, env: &BTreeMap<String, String>) {
    cmd.current_dir(cwd)
        .env_clear()
        .env("PATH", SAFE_PATH)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .process_group(0);
}

async fn execute(
    mut cmd: Command,
    label: &str,
    timeout: Duration,
    lines: mpsc::UnboundedSender<(Stream, String)>,
) -> Result<Outcome, ProcessError> {
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|source| ProcessError::Spawn {
        command: label.to_string(),
        source,
    })?;
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    let out = child
        .stdout
        .take()
        .map(|s| pump(s, Stream::Stdout, lines.clone()));
    let err = child.stderr.take().map(|s| pump(s, Stream::Stderr, lines));

    let (status, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => (status.ok(), false),
        Err(_) => {
            if let Some(pgid) = pgid {
                let _ = killpg(pgid, Signal::SIGTERM);
                if tokio::time::timeout(KILL_GRACE, child.wait())
                    .await
                    .is_err()
                {
                    let _ = killpg(pgid, Signal::SIGKILL);
                }
            }
            (child.wait().await.ok(), true)
        }
    };
    // The group may have children that outlived the shell and hold the pipes.
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, Signal::SIGKILL);
    }
    for task in [out, err].into_iter().flatten() {
        let _ = tokio::time::timeout(KILL_GRACE, task).await;
    }
    Ok(Outcome {
        code: status.as_ref().and_then(ExitStatus::code),
        timed_out,
        duration: started.elapsed(),
    })
}

/// Runs `spec` and collects its output (both streams, interleaved), keeping the last
/// `keep` bytes.
pub async fn run_captured(spec: &Spec, keep: usize) -> Result<(Outcome, String), ProcessError> {
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

fn pump(
    reader: impl AsyncRead + Unpin + Send + 'static,
    stream: Stream,
    lines: mpsc::UnboundedSender<(Stream, String)>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut reader = BufReader::new(reader);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        buf.pop();
                    }
                    let _ = lines.send((stream, String::from_utf8_lossy(&buf).into_owned()));
                }
            }
        }
    })
}

#[allow(unsafe_code)]
fn set_identity(cmd: &mut Command, run_as: RunAs) {
    // SAFETY: the closure runs in the forked child before exec and only calls
    // async-signal-safe syscalls (setgroups via initgroups, setgid, setuid) on data
    // prepared before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::initgroups(&run_as.name, run_as.gid)?;
            nix::unistd::setgid(run_as.gid)?;
            nix::unistd::setuid(run_as.uid)?;
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

    #[test]
    fn tail_respects_char_boundaries() {
        assert_eq!(tail("héllo", 4), "llo");
        assert_eq!(tail("abc", 10), "abc");
    }
}
