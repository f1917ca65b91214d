//! Running the real `hoist` CLI under a deadline: to its end ([`hoist_within`]), or in
//! the background while the test does something else ([`Background`]). Either way a
//! `hoist` that does not finish in time is killed with its process group and reported,
//! never waited for; output is kept in files, so a command printing megabytes costs no
//! pipe back-pressure, and messages quote only its tail.

use std::{
    fs::File,
    io::{Read as _, Seek as _, SeekFrom},
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use tempfile::TempDir;

use crate::{e2e, harness::bin};

/// How much of a command's output an assertion message quotes.
pub const TAIL: usize = 3000;
const POLL: Duration = Duration::from_millis(50);

/// What a bounded `hoist` run did.
#[derive(Debug)]
pub struct Ran {
    pub args: Vec<String>,
    /// `None`: killed at the deadline (or by the abort predicate).
    pub status: Option<ExitStatus>,
    /// Why it was killed before the deadline, if it was.
    pub aborted: Option<String>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Ran {
    /// Finished in time with exit status 0.
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// The exit code, if it exited.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// One paragraph for an assertion message: the command, how it ended, and the tail
    /// of its stdout and stderr.
    pub fn describe(&self) -> String {
        let ended = match (&self.status, &self.aborted) {
            (Some(status), _) => format!("{status} after {:.1?}", self.elapsed),
            (None, Some(why)) => format!("killed after {:.1?}: {why}", self.elapsed),
            (None, None) => format!("killed: still running after {:.1?}", self.elapsed),
        };
        format!(
            "`hoist {}` {ended}\n--- stdout ({} bytes), tail:\n{}\n--- stderr ({} bytes), tail:\n{}",
            self.args.join(" "),
            self.stdout.len(),
            tail(&self.stdout, TAIL),
            self.stderr.len(),
            tail(&self.stderr, TAIL)
        )
    }
}

/// The last `max` bytes of `text` (on a char boundary), marked when cut.
pub fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("[... {start} bytes before ...]{}", &text[start..])
}

/// Runs `hoist ARGS` until it exits or `timeout` passes (then its process group is
/// killed).
pub fn hoist_within(args: &[&str], timeout: Duration) -> Ran {
    let mut running = Background::start(args);
    running.finish(timeout, |_| None)
}

/// Like [`hoist_within`], but also kills it early when `abort` (shown the last
/// [`TAIL`] bytes of stdout and of stderr, every 50 ms) names a reason.
pub fn hoist_watched(
    args: &[&str],
    timeout: Duration,
    abort: impl FnMut(&str) -> Option<String>,
) -> Ran {
    let mut running = Background::start(args);
    running.finish(timeout, abort)
}

/// A `hoist` running in its own process group, its output going to files; killed with
/// its group when dropped.
pub struct Background {
    args: Vec<String>,
    child: Child,
    dir: TempDir,
    started: Instant,
}

impl Background {
    pub fn start(args: &[&str]) -> Background {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = File::create(dir.path().join("stdout")).expect("stdout file");
        let err = File::create(dir.path().join("stderr")).expect("stderr file");
        let child = Command::new(bin("hoist"))
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .expect("spawn hoist");
        Background {
            args: args.iter().map(|a| a.to_string()).collect(),
            child,
            dir,
            started: Instant::now(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Everything it printed to stdout so far.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.path("stdout")).unwrap_or_default())
            .into_owned()
    }

    /// Everything it printed to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.path("stderr")).unwrap_or_default())
            .into_owned()
    }

    /// The last `max` bytes of stdout then of stderr, read without loading the files.
    pub fn recent(&self, max: usize) -> String {
        let mut text = read_tail(&self.path("stdout"), max);
        text.push('\n');
        text.push_str(&read_tail(&self.path("stderr"), max));
        text
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits until it exits, `timeout` passes or `abort` names a reason; kills its
    /// group unless it exited.
    pub fn finish(
        &mut self,
        timeout: Duration,
        mut abort: impl FnMut(&str) -> Option<String>,
    ) -> Ran {
        let deadline = Instant::now() + timeout;
        let mut aborted = None;
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                break None;
            }
            if let Some(why) = abort(&self.recent(TAIL)) {
                aborted = Some(why);
                break None;
            }
            std::thread::sleep(POLL);
        };
        if status.is_none() {
            e2e::kill_group(&mut self.child);
        }
        Ran {
            args: self.args.clone(),
            status,
            aborted,
            stdout: self.stdout(),
            stderr: self.stderr(),
            elapsed: self.started.elapsed(),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if !self.exited() {
            e2e::kill_group(&mut self.child);
        }
    }
}

fn read_tail(path: &std::path::Path, max: usize) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(max as u64);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(from)).is_ok() {
        let _ = file.read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A retry counter past its own limit in `text`: the first "(N/M)" after
/// "re-attaching" with N > M, as "(N/M)".
pub fn retries_past_limit(text: &str) -> Option<String> {
    text.match_indices("re-attaching").find_map(|(at, _)| {
        let rest = &text[at..];
        let open = rest.find('(')?;
        let close = open + rest[open..].find(')')?;
        let (n, m) = rest[open + 1..close].split_once('/')?;
        let (n, m): (u32, u32) = (n.trim().parse().ok()?, m.trim().parse().ok()?);
        (n > m).then(|| format!("({n}/{m})"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_and_retry_counters() {
        assert_eq!(tail("abc", 5), "abc");
        assert_eq!(tail("abcdef", 2), "[... 4 bytes before ...]ef");
        assert_eq!(tail("aé", 1), "[... 3 bytes before ...]");
        let note = "connection lost (x); re-attaching to d-1 (2/3)\n";
        assert_eq!(retries_past_limit(note), None);
        let past = format!("{note}connection lost (y); re-attaching to d-1 (10/3)\n");
        assert_eq!(retries_past_limit(&past).as_deref(), Some("(10/3)"));
    }
}
