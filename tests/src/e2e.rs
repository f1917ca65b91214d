//! Helpers shared by the end-to-end tests: finding the external tools a test needs (and
//! skipping or failing when one is missing), bounded polling, free loopback ports and
//! running a command with a deadline.

use std::{
    collections::HashSet,
    fmt::Display,
    io::{Read, Write as _},
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// Directories searched after `PATH`: daemons such as supervisord and php-fpm live in
/// sbin directories that are often not on a normal user's `PATH`.
const EXTRA_DIRS: [&str; 4] = ["/usr/sbin", "/usr/bin", "/sbin", "/usr/local/bin"];

/// Set to `1` (as `.ci/run` does) to turn a missing tool into a failure.
const E2E_ENV: &str = "HOIST_E2E";

/// Where `tool` is installed: the first executable file of that name in `PATH`, then in
/// `/usr/sbin`, `/usr/bin`, `/sbin` and `/usr/local/bin`.
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether missing tools are failures (`HOIST_E2E=1`) rather than skips.
pub fn strict() -> bool {
    std::env::var_os(E2E_ENV).is_some_and(|v| v == "1")
}

/// The path of `tool`, needed by `test`. When it is missing: with `HOIST_E2E=1` this
/// panics naming the apt package to install; otherwise it prints
/// `SKIPPED <test>: <tool> not found (apt-get install <package>)` to stderr and returns
/// `None`, and the test should return early.
pub fn require(tool: &str, package: &str, test: &str) -> Option<PathBuf> {
    if let Some(path) = find_tool(tool) {
        return Some(path);
    }
    let message = format!("{test}: {tool} not found (apt-get install {package})");
    assert!(
        !strict(),
        "{message}; {E2E_ENV}=1 makes a missing tool a failure"
    );
    // Written to the real stderr, not through eprintln!, which the test harness
    // captures and hides for passing tests.
    let _ = writeln!(std::io::stderr(), "SKIPPED {message}");
    None
}

/// `python3` with every module in `modules` importable, needed by `test`. When one is
/// missing: with `HOIST_E2E=1` this panics naming the pip packages to install (`.ci/run`
/// installs them); otherwise it prints a `SKIPPED` line and returns `None`.
pub fn require_python(modules: &[&str], pip: &str, test: &str) -> Option<PathBuf> {
    let python = require("python3", "python3", test)?;
    let imports = format!("import {}", modules.join(", "));
    let found = Command::new(&python)
        .args(["-c", &imports])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some(python);
    }
    let message = format!(
        "{test}: python modules {} not found (python3 -m pip install {pip})",
        modules.join(", ")
    );
    assert!(
        !strict(),
        "{message}; {E2E_ENV}=1 makes a missing tool a failure"
    );
    let _ = writeln!(std::io::stderr(), "SKIPPED {message}");
    None
}

/// What one attempt of [`eventually`] produced: a value, or why not yet.
pub trait Attempt {
    type Output;
    fn into_result(self) -> Result<Self::Output, String>;
}

impl<T> Attempt for Option<T> {
    type Output = T;
    fn into_result(self) -> Result<T, String> {
        self.ok_or_else(|| "condition not met".to_string())
    }
}

impl<T, E: Display> Attempt for Result<T, E> {
    type Output = T;
    fn into_result(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

const POLL_FIRST: Duration = Duration::from_millis(20);
const POLL_MAX: Duration = Duration::from_millis(100);
/// How long a finished command's output pipes may stay open.
const READER_GRACE: Duration = Duration::from_secs(2);

/// Polls `f` until it returns `Some`/`Ok`, starting every 20 ms and backing off to every
/// 100 ms. Panics naming `what` and the last error (or "condition not met") when
/// `timeout` passes, including when a single attempt is still running at the deadline.
pub async fn eventually<F, Fut, T>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Attempt<Output = T>,
{
    let start = tokio::time::Instant::now();
    let deadline = start + timeout;
    let mut delay = POLL_FIRST;
    let mut attempts = 0u32;
    // Bounded by time; the attempt count is only reported.
    loop {
        attempts += 1;
        let last = match tokio::time::timeout_at(deadline, f()).await {
            Ok(outcome) => match outcome.into_result() {
                Ok(value) => return value,
                Err(err) => err,
            },
            Err(_) => format!("attempt {attempts} still running at the deadline"),
        };
        let now = tokio::time::Instant::now();
        if now >= deadline {
            panic!(
                "timed out after {:?} ({attempts} attempts) waiting for {what}: {last}",
                now - start
            );
        }
        tokio::time::sleep(delay.min(deadline - now)).await;
        delay = (delay * 3 / 2).min(POLL_MAX);
    }
}

/// Ports handed out by [`free_port`] in this process, never handed out twice.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback TCP port that was free a moment ago (the kernel picked it for a bind to
/// `127.0.0.1:0`). Never returns the same port twice within one test process. Prefer
/// binding `127.0.0.1:0` directly when the service can report its port.
pub fn free_port() -> u16 {
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let handed = handed.get_or_insert_with(HashSet::new);
    for _ in 0..100 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        if handed.insert(port) {
            return port;
        }
    }
    panic!("no fresh loopback port after 100 binds");
}

/// Runs `cmd` in its own process group with `stdin` fed to it, collecting stdout and
/// stderr. Past `timeout` the whole group is killed and an error returned.
pub fn run_with_timeout(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> anyhow::Result<Output> {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("spawn {cmd:?}"))?;
    let writer = child.stdin.take().zip(stdin).map(|(mut pipe, data)| {
        let data = data.to_vec();
        // A write error means the program closed stdin early; its exit status says more.
        thread::spawn(move || {
            let _ = pipe.write_all(&data);
        })
    });
    let stdout = reader(child.stdout.take());
    let stderr = reader(child.stderr.take());
    let status = wait_bounded(&mut child, timeout);
    if status.is_none() {
        kill_group(&mut child);
    }
    // A background process left in the group can hold the pipes open; the group still
    // exists while it lives, so killing it is safe and lets the readers finish.
    let deadline = Instant::now() + READER_GRACE;
    while !(stdout.is_finished() && stderr.is_finished()) && Instant::now() < deadline {
        thread::sleep(POLL_FIRST);
    }
    if !(stdout.is_finished() && stderr.is_finished())
        && let Ok(pid) = i32::try_from(child.id())
    {
        let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
    }
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let Some(status) = status else {
        bail!(
            "{cmd:?} did not finish within {timeout:?}; output so far:\n{}{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        );
    };
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        buf
    })
}

/// Waits for `child` to exit, polling for at most `timeout`.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    let mut delay = POLL_FIRST;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                thread::sleep(delay);
                delay = (delay * 3 / 2).min(POLL_MAX);
            }
            _ => return None,
        }
    }
}

/// SIGKILLs the process group led by `child` (spawned with `process_group(0)`) and
/// reaps the child.
pub fn kill_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Stops a process group leader: SIGTERM to the group, a bounded wait of `grace`, then
/// SIGKILL to the group. Returns whether it exited within the grace period.
pub fn terminate_group(child: &mut Child, grace: Duration) -> bool {
    if let Ok(Some(_)) = child.try_wait() {
        return true;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(-pid), Signal::SIGTERM);
    }
    if wait_bounded(child, grace).is_some() {
        return true;
    }
    kill_group(child);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_and_not_nonsense() {
        assert!(find_tool("sh").is_some());
        assert!(find_tool("no-such-tool-hoist").is_none());
    }

    #[test]
    fn require_skips_or_fails_on_a_missing_tool() {
        let got = std::panic::catch_unwind(|| require("no-such-tool-hoist", "hoist-pkg", "t"));
        if strict() {
            let panic = got.unwrap_err();
            let message = panic
                .downcast_ref::<String>()
                .expect("a formatted panic message");
            assert!(
                message.contains("t: no-such-tool-hoist not found (apt-get install hoist-pkg)"),
                "{message}"
            );
        } else {
            assert_eq!(got.unwrap(), None);
        }
        assert_eq!(
            require("sh", "dash", "t").as_deref(),
            find_tool("sh").as_deref()
        );
    }

    #[test]
    fn free_ports_are_distinct() {
        let ports: HashSet<u16> = (0..20).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 20);
    }

    #[tokio::test]
    async fn eventually_returns_the_first_success() {
        let mut n = 0;
        let got = eventually("third try", Duration::from_secs(5), || {
            n += 1;
            let n = n;
            async move {
                if n >= 3 {
                    Ok(n)
                } else {
                    Err(format!("only {n}"))
                }
            }
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "waiting for never: condition not met")]
    async fn eventually_panics_with_what_on_timeout() {
        eventually("never", Duration::from_millis(150), || async { None::<()> }).await;
    }

    #[test]
    fn run_with_timeout_feeds_stdin_and_kills_on_timeout() {
        let out = run_with_timeout(
            Command::new("sh").args(["-c", "cat; echo err >&2"]),
            Some(b"hello"),
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, b"hello");
        assert_eq!(out.stderr, b"err\n");

        let started = Instant::now();
        let err = run_with_timeout(
            Command::new("sh").args(["-c", "sleep 30 & wait"]),
            None,
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(err.to_string().contains("did not finish"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
