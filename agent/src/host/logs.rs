//! `hoist logs`: the lines of an app's declared log sources — files (read as root only
//! through [`state::beneath`](crate::state::beneath): no link is followed, a hard-linked
//! file is refused), the journal of a systemd unit (`journalctl`), the containers of a
//! compose service (`docker logs`). First the last lines of each source, then, when
//! following, new lines as they come: files are polled (a file replaced under its name
//! is read from its start, a truncated one from its new end), tools are run with their
//! own follow flag. Every line is cut at [`MAX_LINE`], masked ([`Secrets`]) and only
//! then matched against `--grep`, so a pattern never finds what is masked.

use std::{
    collections::{BTreeMap, VecDeque},
    fs::File,
    os::unix::fs::FileExt as _,
    time::Duration,
};

use hoist_config::Pattern;
use hoist_proto::v1::LogLine;
use tokio::{sync::mpsc, time::Instant};

use crate::{
    config::{App, LogKind, LogRoot, LogSource, glob},
    host::{
        process::{self, Piece},
        services::{COMPOSE_NOT_ONEOFF, compose_filter},
    },
    state::{
        beneath::{BeneathError, Dir, Kind, Stat},
        release::Layout,
        secrets::Secrets,
    },
};

/// The longest line sent; longer ones are cut there and marked `truncated`.
pub const MAX_LINE: usize = 8 * 1024;
/// How much of a file source's files is read back to find its last lines.
const MAX_TAIL_BYTES: u64 = 16 << 20;
/// How many lines of a tool's output are scanned for the last matching ones.
const MAX_TOOL_SCAN: usize = 10_000;
/// How often followed files are looked at.
const POLL: Duration = Duration::from_millis(500);
/// The most of one file read in one poll (the rest comes in the next).
const MAX_POLL_BYTES: u64 = 1 << 20;
/// How long a tool may take to print a source's last lines.
const TOOL_TAIL_TIMEOUT: Duration = Duration::from_secs(30);
/// The most files of one source read (and held open while following): the newest.
const MAX_FILES: usize = 64;
/// Bytes read back at a time.
const BLOCK: u64 = 64 * 1024;

/// What to send of each source.
#[derive(Clone, Debug)]
pub struct Options {
    /// Last lines of each source (matching `grep`, when given).
    pub lines: usize,
    /// Follow new lines for this long.
    pub follow: Option<Duration>,
    pub grep: Option<Pattern>,
}

/// Sends the lines of `sources` of `app` to `tx`, sources one after another for the
/// last lines, then all at once while following. Returns when done, or when `tx`'s
/// receiver went away.
pub async fn read(app: &App, sources: &[LogSource], opts: &Options, tx: mpsc::Sender<LogLine>) {
    let layout = Layout::new(&app.deploy_to);
    let secrets = Secrets::read(app, layout.shared_dir().ok().as_ref());
    let out = Out {
        tx,
        secrets,
        grep: opts.grep.clone(),
    };
    let deadline = opts.follow.map(|d| Instant::now() + d);
    let follows = sources.iter().map(|source| {
        let (out, layout) = (&out, &layout);
        async move {
            match &source.kind {
                LogKind::Files { root, dir, pattern } => {
                    let files = Files {
                        app,
                        layout,
                        source: &source.name,
                        root,
                        dir,
                        pattern,
                    };
                    files.run(out, opts.lines, deadline).await;
                }
                LogKind::Journal { unit } => {
                    journal(out, &source.name, unit, opts.lines, deadline).await;
                }
                LogKind::Compose { project, service } => {
                    compose(out, &source.name, project, service, opts.lines, deadline).await;
                }
            }
        }
    });
    // Without following, each source prints its last lines and ends: in order.
    if deadline.is_none() {
        for f in follows {
            f.await;
        }
    } else {
        futures_util::future::join_all(follows).await;
    }
}

/// Where lines go: masked, matched, cut.
#[derive(Clone)]
struct Out {
    tx: mpsc::Sender<LogLine>,
    secrets: Secrets,
    grep: Option<Pattern>,
}

impl Out {
    /// The line as sent, or `None` when `--grep` leaves it out.
    fn line(&self, source: &str, file: &str, raw: &[u8]) -> Option<LogLine> {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let truncated = raw.len() > MAX_LINE;
        let text = String::from_utf8_lossy(&raw[..raw.len().min(MAX_LINE)]);
        let mut line = self.secrets.mask(&text);
        if let Some(grep) = &self.grep
            && !grep.is_match(&line)
        {
            return None;
        }
        if line.len() > MAX_LINE {
            let mut cut = MAX_LINE;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        Some(LogLine {
            source: source.into(),
            file: file.into(),
            line,
            truncated,
            notice: String::new(),
        })
    }

    /// Sends `line`; false when the client went away.
    async fn send(&self, line: LogLine) -> bool {
        self.tx.send(line).await.is_ok()
    }

    async fn notice(&self, source: &str, file: &str, notice: String) -> bool {
        self.send(LogLine {
            source: source.into(),
            file: file.into(),
            notice: self.secrets.mask(&notice),
            ..Default::default()
        })
        .await
    }

    fn closed(&self) -> bool {
        self.tx.is_closed()
    }
}

// === files ===

/// One file source.
struct Files<'a> {
    app: &'a App,
    layout: &'a Layout,
    source: &'a str,
    root: &'a LogRoot,
    dir: &'a str,
    pattern: &'a str,
}

/// The files matching a source's pattern (name and stat, oldest first), and why
/// other matching names were refused.
type Listing = (Vec<(String, Stat)>, Vec<String>);

/// A file being followed.
struct Followed {
    file: File,
    dev: u64,
    ino: u64,
    offset: u64,
    /// The start of a line not finished yet.
    partial: Vec<u8>,
}

impl Followed {
    /// `file` (whose stat is `st`), to be read on from `offset`.
    fn new(file: File, st: &Stat, offset: u64) -> Followed {
        Followed {
            file,
            dev: st.dev,
            ino: st.ino,
            offset,
            partial: Vec::new(),
        }
    }
}

impl Files<'_> {
    /// The source's directory, opened now (the `current` release may have changed).
    fn open(&self) -> Result<Dir, BeneathError> {
        let (base, rel) = match self.root {
            LogRoot::Absolute(path) => return Dir::open_trusted(path),
            LogRoot::Shared => (self.layout.shared_dir()?, self.dir),
            LogRoot::DeployTo => (self.layout.root_dir()?, self.dir),
            LogRoot::Current => {
                // A path under a shared dir is where the release's link leads: shared/.
                let shared = self.app.shared_dirs.iter().any(|d| {
                    self.dir == d.as_str()
                        || self
                            .dir
                            .strip_prefix(d.as_str())
                            .is_some_and(|r| r.starts_with('/'))
                });
                if shared {
                    (self.layout.shared_dir()?, self.dir)
                } else {
                    let Some(id) = self.layout.current() else {
                        return Err(BeneathError::Io {
                            op: "read",
                            name: "the current release".into(),
                            source: std::io::Error::new(
                                std::io::ErrorKind::NotFound,
                                "nothing is deployed on this host yet",
                            ),
                        });
                    };
                    (self.layout.release_dir(&id)?, self.dir)
                }
            }
        };
        if rel.is_empty() {
            Ok(base)
        } else {
            base.open_dir(rel)
        }
    }

    /// The files matching the pattern, oldest first (by modification time, then name;
    /// the newest [`MAX_FILES`] only), and refusals for matching names that are links or not regular files.
    fn matching(&self, dir: &Dir) -> Result<Listing, BeneathError> {
        let mut files = Vec::new();
        let mut refused = Vec::new();
        for (name, kind) in dir.entries()? {
            let Some(name) = name.to_str().map(str::to_string) else {
                continue;
            };
            if !glob(self.pattern, &name) {
                continue;
            }
            match kind {
                Kind::File => match dir.lstat(&name) {
                    Ok(Some(st)) => files.push((name, st)),
                    Ok(None) => {}
                    Err(e) => refused.push(e.to_string()),
                },
                Kind::Dir => {}
                Kind::Link => refused.push(dir.link_error(&name).to_string()),
                Kind::Other => refused.push(format!("{} is not a regular file", dir.name(&name))),
            }
        }
        files.sort_by(|(a, sa), (b, sb)| sa.mtime.cmp(&sb.mtime).then_with(|| a.cmp(b)));
        if files.len() > MAX_FILES {
            files.drain(..files.len() - MAX_FILES);
        }
        Ok((files, refused))
    }

    async fn run(&self, out: &Out, lines: usize, deadline: Option<Instant>) {
        let mut followed: BTreeMap<String, Followed> = BTreeMap::new();
        let mut last_problem = String::new();
        // The last lines, newest file first, read back until enough are found.
        let mut tail: VecDeque<LogLine> = VecDeque::new();
        match self.open().and_then(|dir| Ok((self.matching(&dir)?, dir))) {
            Err(e) => {
                last_problem = e.to_string();
                if !out.notice(self.source, "", last_problem.clone()).await {
                    return;
                }
            }
            Ok(((files, refused), dir)) => {
                for problem in refused {
                    if !out.notice(self.source, "", problem).await {
                        return;
                    }
                }
                if files.is_empty() {
                    let shown = dir.name(self.pattern);
                    if !out
                        .notice(self.source, "", format!("no file matches {shown}"))
                        .await
                    {
                        return;
                    }
                }
                let mut budget = MAX_TAIL_BYTES;
                for (name, _) in files.iter().rev() {
                    match dir.open_read(name) {
                        Ok(Some((file, st))) => {
                            if tail.len() < lines && budget > 0 {
                                let want = lines - tail.len();
                                // Reading back may take a while: off the agent's one thread.
                                let Ok(reader) = file.try_clone() else {
                                    continue;
                                };
                                let (out, source, file_name) =
                                    (out.clone(), self.source.to_string(), name.clone());
                                let (len, mut left) = (st.len, budget);
                                let read = tokio::task::spawn_blocking(move || {
                                    let found = tail_of(&reader, len, want, &mut left, |raw| {
                                        out.line(&source, &file_name, raw)
                                    });
                                    (found, left)
                                })
                                .await;
                                let Ok((found, left)) = read else { continue };
                                budget = left;
                                // (Newest first: each older one goes before it.)
                                for line in found {
                                    tail.push_front(line);
                                }
                            }
                            followed.insert(name.clone(), Followed::new(file, &st, st.len));
                        }
                        Ok(None) => {}
                        Err(e) => {
                            if !out.notice(self.source, name, e.to_string()).await {
                                return;
                            }
                        }
                    }
                }
            }
        }
        for line in tail {
            if !out.send(line).await {
                return;
            }
        }
        let Some(deadline) = deadline else { return };
        // Following: what changed since the last look, every POLL.
        let mut refused_seen: Vec<String> = Vec::new();
        loop {
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = out.tx.closed() => return,
            }
            if Instant::now() >= deadline {
                return;
            }
            let listing = self.open().and_then(|dir| Ok((self.matching(&dir)?, dir)));
            let ((files, refused), dir) = match listing {
                Ok(l) => l,
                Err(e) => {
                    let problem = e.to_string();
                    if problem != last_problem {
                        last_problem = problem.clone();
                        if !out.notice(self.source, "", problem).await {
                            return;
                        }
                    }
                    continue;
                }
            };
            last_problem.clear();
            for problem in refused {
                if !refused_seen.contains(&problem) {
                    refused_seen.push(problem.clone());
                    if !out.notice(self.source, "", problem).await {
                        return;
                    }
                }
            }
            for (name, st) in &files {
                let changed = match followed.get(name) {
                    None => true,
                    Some(f) => f.dev != st.dev || f.ino != st.ino,
                };
                if changed {
                    // A new file, or another file under a followed name (rotated): what
                    // is left of the old one first, then the new one from its start.
                    let replaced = match followed.remove(name) {
                        Some(mut old) => {
                            if !self.drain(out, name, &mut old, u64::MAX).await {
                                return;
                            }
                            true
                        }
                        None => false,
                    };
                    match dir.open_read(name) {
                        Ok(Some((file, st))) => {
                            if replaced
                                && !out
                                    .notice(
                                        self.source,
                                        name,
                                        format!("{name} was replaced (rotated); reading the new file from its start"),
                                    )
                                    .await
                            {
                                return;
                            }
                            followed.insert(name.clone(), Followed::new(file, &st, 0));
                        }
                        Ok(None) => continue,
                        Err(e) => {
                            let problem = e.to_string();
                            if !refused_seen.contains(&problem) {
                                refused_seen.push(problem.clone());
                                if !out.notice(self.source, name, problem).await {
                                    return;
                                }
                            }
                            continue;
                        }
                    }
                }
                let Some(f) = followed.get_mut(name) else {
                    continue;
                };
                if !self.drain(out, name, f, MAX_POLL_BYTES).await {
                    return;
                }
            }
            // Names gone from the directory: their last lines, then they are dropped.
            let gone: Vec<String> = followed
                .keys()
                .filter(|n| !files.iter().any(|(f, _)| f == *n))
                .cloned()
                .collect();
            for name in gone {
                if let Some(mut f) = followed.remove(&name)
                    && !self.drain(out, &name, &mut f, MAX_POLL_BYTES).await
                {
                    return;
                }
            }
        }
    }

    /// Sends the complete lines added to `f` since its offset (at most `max` bytes
    /// read); a file shorter than the offset was truncated and is read from its start.
    async fn drain(&self, out: &Out, name: &str, f: &mut Followed, max: u64) -> bool {
        let len = match f.file.metadata() {
            Ok(m) => m.len(),
            Err(_) => return true,
        };
        if len < f.offset {
            f.offset = 0;
            f.partial.clear();
            if !out
                .notice(
                    self.source,
                    name,
                    format!("{name} was truncated; reading it from its start"),
                )
                .await
            {
                return false;
            }
        }
        let end = len.min(f.offset.saturating_add(max));
        let mut buf = vec![0u8; BLOCK as usize];
        while f.offset < end {
            let want = (end - f.offset).min(BLOCK) as usize;
            let n = match f.file.read_at(&mut buf[..want], f.offset) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            f.offset += n as u64;
            let mut chunk = &buf[..n];
            while let Some(nl) = chunk.iter().position(|b| *b == b'\n') {
                let line = if f.partial.is_empty() {
                    &chunk[..nl]
                } else {
                    f.partial.extend_from_slice(&chunk[..nl]);
                    &f.partial[..]
                };
                let sent = match out.line(self.source, name, line) {
                    Some(l) => out.send(l).await,
                    None => !out.closed(),
                };
                f.partial.clear();
                if !sent {
                    return false;
                }
                chunk = &chunk[nl + 1..];
            }
            // A line goes on past the read; past MAX_LINE only its length matters.
            if f.partial.len() < MAX_LINE + 1 {
                let room = (MAX_LINE + 1 - f.partial.len()).min(chunk.len());
                f.partial.extend_from_slice(&chunk[..room]);
            }
        }
        true
    }
}

/// The last `want` lines of `file` (of length `len`) that `keep` turns into lines,
/// newest first, reading back at most `budget` bytes (taken from it).
fn tail_of(
    file: &File,
    len: u64,
    want: usize,
    budget: &mut u64,
    keep: impl Fn(&[u8]) -> Option<LogLine>,
) -> Vec<LogLine> {
    let mut found = Vec::new();
    let mut pos = len;
    // The bytes after `pos` up to the first line break after it (a line not yet whole).
    let mut carry: Vec<u8> = Vec::new();
    let mut at_end = true;
    while pos > 0 && found.len() < want && *budget > 0 {
        let size = BLOCK.min(pos).min(*budget);
        pos -= size;
        *budget -= size;
        let mut block = vec![0u8; size as usize];
        if file.read_exact_at(&mut block, pos).is_err() {
            break;
        }
        block.extend_from_slice(&carry);
        let mut end = block.len();
        if at_end && block.last() == Some(&b'\n') {
            end -= 1;
        }
        at_end = false;
        let mut rest = &block[..end];
        while let Some(nl) = rest.iter().rposition(|b| *b == b'\n') {
            if let Some(line) = keep(&rest[nl + 1..]) {
                found.push(line);
                if found.len() == want {
                    return found;
                }
            }
            rest = &rest[..nl];
        }
        // A line longer than a block: keep its start only up to what is sent.
        carry = rest.to_vec();
        if carry.len() > 4 * MAX_LINE {
            carry.truncate(4 * MAX_LINE);
        }
    }
    if pos == 0
        && found.len() < want
        && !carry.is_empty()
        && let Some(line) = keep(&carry)
    {
        found.push(line);
    }
    found
}

// === tools ===

/// `journalctl` arguments for the last `lines` of `unit` (ending with the cursor), and
/// for following it after `cursor`.
fn journal_argv(unit: &str, lines: usize, follow_after: Option<Option<&str>>) -> Vec<String> {
    let mut argv: Vec<String> = [
        "journalctl",
        "--unit",
        unit,
        "--no-pager",
        "--output",
        "short-iso",
        "--quiet",
    ]
    .map(String::from)
    .to_vec();
    match follow_after {
        None => {
            argv.extend(["--lines".into(), lines.to_string(), "--show-cursor".into()]);
        }
        Some(Some(cursor)) => {
            argv.extend(["--follow".into(), "--lines".into(), "all".into()]);
            argv.push(format!("--after-cursor={cursor}"));
        }
        Some(None) => argv.extend(["--follow".into(), "--lines".into(), "0".into()]),
    }
    argv
}

async fn journal(out: &Out, source: &str, unit: &str, lines: usize, deadline: Option<Instant>) {
    let scan = if out.grep.is_some() {
        MAX_TOOL_SCAN
    } else {
        lines
    };
    let argv = journal_argv(unit, scan, None);
    let Some(tail) = tool_tail(out, source, "", &argv, lines).await else {
        return;
    };
    let cursor = tail.cursor.clone();
    if !send_all(out, tail.lines).await {
        return;
    }
    if let Some(deadline) = deadline {
        let argv = journal_argv(unit, 0, Some(cursor.as_deref()));
        tool_follow(out, source, "", &argv, deadline).await;
    }
}

/// `docker ps` arguments naming the containers of `service` of compose `project`.
fn compose_ps_argv(project: &str, service: &str) -> Vec<String> {
    vec![
        "docker".into(),
        "ps".into(),
        "--all".into(),
        "--filter".into(),
        compose_filter(project),
        "--filter".into(),
        format!("label=com.docker.compose.service={service}"),
        "--filter".into(),
        COMPOSE_NOT_ONEOFF.into(),
        "--format".into(),
        "{{.Names}}".into(),
    ]
}

/// `docker logs` arguments: the last `lines` up to `at` (seconds since the epoch), or
/// (following) from `at` on.
fn docker_logs_argv(container: &str, lines: usize, at: &str, follow: bool) -> Vec<String> {
    let mut argv = vec!["docker".into(), "logs".into()];
    if follow {
        argv.extend(["--follow".into(), "--since".into(), at.into()]);
    } else {
        argv.extend([
            "--tail".into(),
            lines.to_string(),
            "--until".into(),
            at.into(),
        ]);
    }
    argv.push(container.into());
    argv
}

async fn compose(
    out: &Out,
    source: &str,
    project: &str,
    service: &str,
    lines: usize,
    deadline: Option<Instant>,
) {
    let ps = compose_ps_argv(project, service);
    let argv: Vec<&str> = ps.iter().map(String::as_str).collect();
    let mut names = String::new();
    let result = process::run_tool(&argv, None, Instant::now() + TOOL_TAIL_TIMEOUT, |_, l| {
        names.push_str(&l);
        names.push('\n');
    })
    .await;
    let containers: Vec<String> = match result {
        Ok(exit) if exit.success() => names
            .lines()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(String::from)
            .collect(),
        Ok(exit) => {
            out.notice(
                source,
                "",
                format!("docker ps {}: {}", exit.describe(), names.trim()),
            )
            .await;
            return;
        }
        Err(e) => {
            out.notice(source, "", e.to_string()).await;
            return;
        }
    };
    if containers.is_empty() {
        out.notice(
            source,
            "",
            format!("compose project {project} has no container of service {service}"),
        )
        .await;
        return;
    }
    // One instant splits the last lines from the followed ones, so none is sent twice.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let at = format!("{}.{:09}", now.as_secs(), now.subsec_nanos());
    let scan = if out.grep.is_some() {
        MAX_TOOL_SCAN
    } else {
        lines
    };
    let several = containers.len() > 1;
    for container in &containers {
        let file = if several { container.as_str() } else { "" };
        let argv = docker_logs_argv(container, scan, &at, false);
        let Some(tail) = tool_tail(out, source, file, &argv, lines).await else {
            return;
        };
        if !send_all(out, tail.lines).await {
            return;
        }
    }
    if let Some(deadline) = deadline {
        let follows = containers.iter().map(|container| {
            let argv = docker_logs_argv(container, 0, &at, true);
            let file = if several {
                container.clone()
            } else {
                String::new()
            };
            async move { tool_follow(out, source, &file, &argv, deadline).await }
        });
        futures_util::future::join_all(follows).await;
    }
}

/// What a tool printed of a source's last lines.
struct ToolTail {
    lines: VecDeque<LogLine>,
    /// `journalctl --show-cursor`'s cursor.
    cursor: Option<String>,
}

/// Runs a tool printing a source's last lines, keeps the last `want` that pass (`None`
/// when the tool failed: a notice says so).
async fn tool_tail(
    out: &Out,
    source: &str,
    file: &str,
    argv: &[String],
    want: usize,
) -> Option<ToolTail> {
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut lines: VecDeque<LogLine> = VecDeque::new();
    let mut cursor = None;
    let mut errors = String::new();
    let result = process::run_tool(
        &argv,
        None,
        Instant::now() + TOOL_TAIL_TIMEOUT,
        |stream, text| {
            if let Some(c) = text.strip_prefix("-- cursor: ") {
                cursor = Some(c.trim().to_string());
                return;
            }
            if stream == process::Stream::Stderr && errors.len() < 4096 && argv[0] == "journalctl" {
                errors.push_str(&text);
                errors.push('\n');
                return;
            }
            if let Some(line) = out.line(source, file, text.as_bytes()) {
                lines.push_back(line);
                if lines.len() > want {
                    lines.pop_front();
                }
            }
        },
    )
    .await;
    match result {
        Ok(exit) if exit.success() => Some(ToolTail { lines, cursor }),
        Ok(exit) => {
            let why = if errors.trim().is_empty() {
                lines.back().map(|l| l.line.clone()).unwrap_or_default()
            } else {
                errors.trim().to_string()
            };
            out.notice(
                source,
                file,
                format!("{} {}: {why}", argv[0], exit.describe()),
            )
            .await;
            None
        }
        Err(e) => {
            out.notice(source, file, e.to_string()).await;
            None
        }
    }
}

/// Runs a tool following a source until `deadline`, sending the lines that pass.
async fn tool_follow(out: &Out, source: &str, file: &str, argv: &[String], deadline: Instant) {
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let (tx, mut rx) = mpsc::channel::<Piece>(process::PIECES_IN_FLIGHT);
    let run = process::stream_tool(&argv, deadline, tx);
    let forward = async {
        // A piece of a line longer than 64 KiB: only the first piece is sent.
        let mut continuing = false;
        while let Some(piece) = rx.recv().await {
            let first = !continuing;
            continuing = piece.continued;
            if !first {
                continue;
            }
            if let Some(line) = out.line(source, file, piece.text.as_bytes())
                && !out.send(line).await
            {
                return;
            }
        }
    };
    tokio::select! {
        (result, ()) = async { tokio::join!(run, forward) } => {
            if let Err(e) = result {
                out.notice(source, file, e.to_string()).await;
            }
        }
        () = out.tx.closed() => {}
    }
}

async fn send_all(out: &Out, lines: VecDeque<LogLine>) -> bool {
    for line in lines {
        if !out.send(line).await {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_argv_tails_then_follows_after_the_cursor() {
        assert_eq!(
            journal_argv("shop.service", 50, None).join(" "),
            "journalctl --unit shop.service --no-pager --output short-iso --quiet --lines 50 --show-cursor"
        );
        assert_eq!(
            journal_argv("shop.service", 0, Some(Some("s=abc;i=1"))).join(" "),
            "journalctl --unit shop.service --no-pager --output short-iso --quiet --follow --lines all --after-cursor=s=abc;i=1"
        );
        assert_eq!(
            journal_argv("shop.service", 0, Some(None)).join(" "),
            "journalctl --unit shop.service --no-pager --output short-iso --quiet --follow --lines 0"
        );
    }

    #[test]
    fn docker_argv_splits_tail_and_follow_at_one_instant() {
        assert_eq!(
            docker_logs_argv("shop-api-1", 100, "17.5", false).join(" "),
            "docker logs --tail 100 --until 17.5 shop-api-1"
        );
        assert_eq!(
            docker_logs_argv("shop-api-1", 0, "17.5", true).join(" "),
            "docker logs --follow --since 17.5 shop-api-1"
        );
        assert_eq!(
            compose_ps_argv("shop", "api").join(" "),
            "docker ps --all --filter label=com.docker.compose.project=shop --filter \
             label=com.docker.compose.service=api --filter label=com.docker.compose.oneoff=False \
             --format {{.Names}}"
        );
    }

    fn lines_of(text: &[u8], want: usize, budget: u64) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        std::fs::write(&path, text).unwrap();
        let file = File::open(&path).unwrap();
        let mut budget = budget;
        let mut got: Vec<String> = tail_of(&file, text.len() as u64, want, &mut budget, |raw| {
            Some(LogLine {
                line: String::from_utf8_lossy(raw).into(),
                ..Default::default()
            })
        })
        .into_iter()
        .map(|l| l.line)
        .collect();
        got.reverse();
        got
    }

    #[test]
    fn tail_reads_back_whole_lines() {
        assert_eq!(lines_of(b"a\nb\nc\n", 2, 1 << 20), ["b", "c"]);
        assert_eq!(lines_of(b"a\nb\nc", 5, 1 << 20), ["a", "b", "c"]);
        assert_eq!(lines_of(b"", 5, 1 << 20), Vec::<String>::new());
        // Across blocks.
        let mut big = Vec::new();
        for i in 0..50_000 {
            big.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        assert_eq!(
            lines_of(&big, 3, 1 << 30),
            ["line 49997", "line 49998", "line 49999"]
        );
        // Bounded by the budget: only what it reaches.
        assert!(lines_of(&big, 50_000, 128 * 1024).len() < 50_000);
    }
}
