//! Jobs and their events. Every job (deploy, rollback, restart, env) has an id chosen by
//! the controller and an append-only event log under `state_dir/jobs/APP/ID.events`
//! (length-delimited protobuf). Any number of clients can follow a job: Attach replays
//! from the first event and then follows live, reading the log file at its own pace,
//! so the agent holds a few events per follower, never a job's output. A log keeps its
//! first [`LOG_HEAD`] bytes and (at least) its last [`LOG_TAIL`] bytes, with an
//! [`OutputOmitted`] event in place of the output between, so a runaway hook cannot
//! fill the disk.

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io::{self, BufRead, BufReader, BufWriter, Read as _, Write as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use hoist_proto::v1::{JobEvent, JobFinished, JobResult, OutputOmitted, job_event::Kind};
use prost::Message as _;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;

/// A job id that cannot name a job (nor its log file).
#[derive(Debug, thiserror::Error)]
#[error(
    "job id {0:?} is not valid: use 1-128 letters, digits, '-', '_' or '.', not starting with '-' or '.'"
)]
pub struct InvalidJobId(pub String);

/// Job ids are chosen by the controller; they name files, so they are checked.
pub fn validate_id(id: &str) -> Result<(), InvalidJobId> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with(['-', '.'])
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !id.contains("..");
    if ok {
        Ok(())
    } else {
        Err(InvalidJobId(id.to_string()))
    }
}

/// Bytes a job's stored log keeps from its start ([`LogLimits::head`]).
pub const LOG_HEAD: u64 = 8 << 20;
/// Bytes a job's stored log keeps from its end, at least ([`LogLimits::tail`]).
pub const LOG_TAIL: u64 = 8 << 20;
/// The most bytes of events in one page of a job's log (JobLog).
pub const MAX_PAGE_BYTES: usize = 1 << 20;
/// A record longer than this is not one the agent wrote: the log ends there.
const MAX_RECORD: usize = 1 << 20;
/// Events in flight to one follower: what a slow client can make the agent hold.
const FOLLOW_BUFFER: usize = 16;

/// How much of its output a job's stored log keeps: its first `head` bytes and its last
/// `tail` to `2 × tail` bytes; in between, output events are replaced by one
/// [`OutputOmitted`] event. Every other event (steps starting and ending, notices) is
/// kept. So a log never grows much beyond `head + 2 × tail`.
#[derive(Clone, Copy, Debug)]
pub struct LogLimits {
    pub head: u64,
    pub tail: u64,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            head: LOG_HEAD,
            tail: LOG_TAIL,
        }
    }
}

/// Where a job's log stands, for followers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Progress {
    /// The seq the next event gets.
    next_seq: u64,
    /// Bytes of whole records in the log file.
    bytes: u64,
    /// Bumped each time the log file is rewritten (output cut to its head and tail):
    /// followers reopen it then.
    generation: u64,
    done: bool,
}

/// One job. Its events live in its log file only: the agent holds none in memory, and
/// followers read the file (so a slow one costs a few events, never the whole log).
pub struct Job {
    pub id: String,
    pub app: String,
    path: PathBuf,
    /// The open log of a job that runs in this agent; `None` for one read back.
    writer: Mutex<Option<Writer>>,
    result: Mutex<Option<JobResult>>,
    progress: watch::Sender<Progress>,
}

/// The appending end of a job's log, and what it knows to cap the log's output.
struct Writer {
    file: File,
    limits: LogLimits,
    /// Where the log's head ends (the first record boundary past `limits.head`), once
    /// the log is that long.
    head_end: Option<u64>,
}

/// One page of a job's events.
#[derive(Debug, Default)]
pub struct Page {
    pub events: Vec<JobEvent>,
    /// Where the next page starts.
    pub next_seq: u64,
    /// More events follow.
    pub more: bool,
    /// Where the next page starts in the log file: `g<generation>o<offset>`.
    pub next_token: String,
}

/// A page token's offset, when it is for this version of the log.
fn token_offset(token: &str, generation: u64, bytes: u64) -> Option<u64> {
    let (g, o) = token.strip_prefix('g')?.split_once('o')?;
    let offset: u64 = o.parse().ok()?;
    (g.parse::<u64>().ok()? == generation && offset <= bytes).then_some(offset)
}

/// The seq of the last event `event` stands for: an [`OutputOmitted`] stands for every
/// output event it left out.
pub fn last_seq(event: &JobEvent) -> u64 {
    match &event.kind {
        Some(Kind::Omitted(m)) => m.last_seq.max(event.seq),
        _ => event.seq,
    }
}

impl Job {
    fn new(id: String, app: String, path: PathBuf, writer: Option<Writer>) -> Arc<Job> {
        Arc::new(Job {
            id,
            app,
            path,
            writer: Mutex::new(writer),
            result: Mutex::new(None),
            progress: watch::channel(Progress::default()).0,
        })
    }

    /// A job whose events go nowhere: for the agent's own questions that run a step
    /// outside any job (the fetch of `PlanDeploy`).
    pub fn scratch(id: &str, app: &str) -> Arc<Job> {
        Job::new(id.to_string(), app.to_string(), PathBuf::new(), None)
    }

    /// Appends an event: numbered, stamped, written to the log file, shown to followers.
    pub fn emit(&self, kind: Kind) {
        let finished = match &kind {
            Kind::Finished(f) => Some(f.result()),
            _ => None,
        };
        let mut writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut progress = *self.progress.borrow();
        // Stored without its job id (the file's name): readers put it back.
        let event = JobEvent {
            job_id: String::new(),
            seq: progress.next_seq,
            at: Some(SystemTime::now().into()),
            kind: Some(kind),
        };
        if let Some(w) = writer.as_mut() {
            let bytes = event.encode_length_delimited_to_vec();
            let written = w.file.write_all(&bytes).and_then(|()| {
                if finished.is_some() {
                    w.file.sync_all()
                } else {
                    Ok(())
                }
            });
            match written {
                Ok(()) => progress.bytes += bytes.len() as u64,
                Err(err) => {
                    tracing::warn!(job = %self.id, error = %err, "cannot append to the job's event log");
                    // No torn record in the middle of the log: the next one starts clean.
                    let _ = w.file.set_len(progress.bytes);
                }
            }
            if w.head_end.is_none() && progress.bytes >= w.limits.head {
                w.head_end = Some(progress.bytes);
            }
            if let Some(head_end) = w.head_end
                && progress.bytes - head_end > 2 * w.limits.tail
            {
                match compact(&self.path, head_end, progress.bytes, w.limits.tail) {
                    Ok((file, len)) => {
                        w.file = file;
                        progress.bytes = len;
                        progress.generation += 1;
                    }
                    Err(err) => {
                        tracing::warn!(job = %self.id, error = %err, "cannot cut the job's event log to its head and tail");
                    }
                }
            }
        }
        if let Some(result) = finished {
            *self.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        }
        progress.next_seq += 1;
        progress.done = finished.is_some();
        self.progress.send_replace(progress);
        drop(writer);
    }

    pub fn finished(&self) -> bool {
        self.progress.borrow().done
    }

    /// The job's final result, once finished (read from the log of a job read back).
    pub fn result(&self) -> Option<JobResult> {
        let known = *self.result.lock().unwrap_or_else(|e| e.into_inner());
        known.or_else(|| {
            let unwritten = self
                .writer
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none();
            unwritten.then(|| scan(&self.path).ok()?.result).flatten()
        })
    }

    /// The events from seq `from_seq` on, at most `max_bytes` of them (encoded; at least
    /// one event), read from the log file: from where `token` (a previous page's
    /// `next_token`) says, or else from the start.
    pub fn page(&self, from_seq: u64, token: &str, max_bytes: usize) -> io::Result<Page> {
        let progress = *self.progress.borrow();
        let mut reader = LogReader::open(&self.path)?;
        if let Some(offset) = token_offset(token, progress.generation, progress.bytes) {
            reader.seek(offset)?;
        }
        let mut page = Page {
            next_seq: from_seq,
            ..Page::default()
        };
        let mut size = 0usize;
        loop {
            let at = reader.offset;
            let Some(event) = reader.next(progress.bytes) else {
                page.next_token = format!("g{}o{}", progress.generation, reader.offset);
                break;
            };
            if event.seq < from_seq {
                continue;
            }
            let len = event.encoded_len();
            if !page.events.is_empty() && size + len > max_bytes {
                page.more = true;
                page.next_token = format!("g{}o{at}", progress.generation);
                break;
            }
            size += len;
            page.next_seq = event.seq + 1;
            page.events.push(event);
        }
        Ok(page)
    }

    /// Every event from the first, then live ones until the job finishes. Read from
    /// the log file at the follower's pace: a follower that falls behind is not sent
    /// anything it has not asked for, and one behind a cut of the log gets the
    /// [`OutputOmitted`] event in place of what was left out.
    pub fn follow(self: &Arc<Self>) -> ReceiverStream<JobEvent> {
        let job = self.clone();
        let mut progress = self.progress.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(FOLLOW_BUFFER);
        tokio::spawn(async move {
            let mut next_seq = 0u64;
            let mut reader: Option<(u64, LogReader)> = None;
            loop {
                let now = *progress.borrow_and_update();
                if reader.as_ref().is_none_or(|(g, _)| *g != now.generation) {
                    match LogReader::open(&job.path) {
                        Ok(r) => reader = Some((now.generation, r)),
                        Err(_) => return, // the log is gone (pruned)
                    }
                }
                let Some((_, log)) = reader.as_mut() else {
                    return;
                };
                while let Some(event) = log.next(now.bytes) {
                    if last_seq(&event) < next_seq {
                        continue;
                    }
                    // An omission marker does not move on: events it skipped over that
                    // were kept (a step's end) still follow it.
                    if !matches!(event.kind, Some(Kind::Omitted(_))) {
                        next_seq = event.seq + 1;
                    }
                    if tx.send(event).await.is_err() {
                        return; // the client went away; the job goes on
                    }
                }
                if now.done {
                    return;
                }
                if progress.changed().await.is_err() {
                    return;
                }
            }
        });
        ReceiverStream::new(rx)
    }
}

/// Rewrites the log at `path` (of `len` bytes) to its head (up to `head_end`), one
/// [`OutputOmitted`] event for the output events from there to the last `tail` bytes,
/// the other events of that stretch, and the last `tail` bytes. Returns the new file,
/// open for appending, and its length.
fn compact(path: &Path, head_end: u64, len: u64, tail: u64) -> io::Result<(File, u64)> {
    let tmp = compact_path(path);
    let _ = std::fs::remove_file(&tmp);
    let out = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(&tmp)?;
    let result = (|| {
        let mut src = BufReader::new(File::open(path)?);
        let mut dst = BufWriter::new(out);
        io::copy(&mut (&mut src).take(head_end), &mut dst)?;
        let cut = len.saturating_sub(tail);
        let mut offset = head_end;
        let mut omitted: Option<(u64, OutputOmitted)> = None;
        // Events kept from the cut stretch after its first omitted one.
        let mut kept_after = Vec::new();
        while offset < cut {
            let Some((raw, event)) = read_record(&mut src)? else {
                break;
            };
            offset += raw.len() as u64;
            let merge = match &event.kind {
                Some(Kind::Output(o)) => Some(OutputOmitted {
                    events: 1,
                    bytes: o.line.len() as u64,
                    first_seq: event.seq,
                    last_seq: event.seq,
                }),
                Some(Kind::Omitted(m)) => Some(*m),
                _ => None,
            };
            match (merge, omitted.as_mut()) {
                (Some(m), None) => omitted = Some((event.seq, m)),
                (Some(m), Some((_, o))) => {
                    o.events += m.events;
                    o.bytes += m.bytes;
                    o.last_seq = o.last_seq.max(m.last_seq);
                }
                (None, None) => dst.write_all(&raw)?,
                (None, Some(_)) => kept_after.push(raw),
            }
        }
        if let Some((seq, m)) = omitted {
            let marker = JobEvent {
                job_id: String::new(),
                seq,
                at: Some(SystemTime::now().into()),
                kind: Some(Kind::Omitted(m)),
            };
            dst.write_all(&marker.encode_length_delimited_to_vec())?;
        }
        for raw in kept_after {
            dst.write_all(&raw)?;
        }
        io::copy(&mut src.take(len - offset), &mut dst)?;
        let file = dst.into_inner().map_err(io::IntoInnerError::into_error)?;
        // Whole on disk before it replaces the log (a crash leaves one or the other).
        file.sync_data()?;
        let new_len = file.metadata()?.len();
        std::fs::rename(&tmp, path)?;
        Ok((file, new_len))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Where [`compact`] writes a log's new version before renaming it over the log.
fn compact_path(log: &Path) -> PathBuf {
    let mut name = log.file_name().unwrap_or_default().to_os_string();
    name.push(".compact");
    log.with_file_name(name)
}

/// The next record of a log: its bytes (length prefix included) and its event.
/// `None` at the end, and at a torn or corrupt record (a crash mid-write): the log
/// ends with the last whole record.
fn read_record(src: &mut impl BufRead) -> io::Result<Option<(Vec<u8>, JobEvent)>> {
    let mut raw = Vec::new();
    let mut len: u64 = 0;
    for shift in (0..64).step_by(7) {
        let mut byte = [0u8];
        if src.read(&mut byte)? == 0 {
            return Ok(None);
        }
        raw.push(byte[0]);
        len |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    let Ok(len) = usize::try_from(len) else {
        return Ok(None);
    };
    if len > MAX_RECORD {
        return Ok(None);
    }
    let start = raw.len();
    raw.resize(start + len, 0);
    if src.read_exact(&mut raw[start..]).is_err() {
        return Ok(None);
    }
    match JobEvent::decode(&raw[start..]) {
        Ok(event) => Ok(Some((raw, event))),
        Err(_) => Ok(None),
    }
}

/// Reads a log's records in order, through a small buffer.
struct LogReader {
    src: BufReader<File>,
    offset: u64,
    /// The job's id, from the log's name (`ID.events`): records are stored without it.
    job_id: String,
}

impl LogReader {
    fn open(path: &Path) -> io::Result<LogReader> {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        Ok(LogReader {
            src: BufReader::new(File::open(path)?),
            offset: 0,
            job_id: name.strip_suffix(".events").unwrap_or(&name).to_string(),
        })
    }

    /// Goes on from byte `offset` (a record boundary this reader handed out before).
    fn seek(&mut self, offset: u64) -> io::Result<()> {
        use std::io::Seek as _;
        self.src.seek(io::SeekFrom::Start(offset))?;
        self.offset = offset;
        Ok(())
    }

    /// The next event that ends within the first `limit` bytes of the log.
    fn next(&mut self, limit: u64) -> Option<JobEvent> {
        if self.offset >= limit {
            return None;
        }
        let (raw, mut event) = read_record(&mut self.src).ok()??;
        self.offset += raw.len() as u64;
        if event.job_id.is_empty() {
            event.job_id.clone_from(&self.job_id);
        }
        Some(event)
    }
}

/// What reading a log through once tells.
#[derive(Debug, Default)]
struct Scan {
    app: String,
    next_seq: u64,
    /// Bytes of whole records.
    bytes: u64,
    result: Option<JobResult>,
}

fn scan(path: &Path) -> io::Result<Scan> {
    let mut src = BufReader::new(File::open(path)?);
    let mut scan = Scan::default();
    while let Some((raw, event)) = read_record(&mut src)? {
        scan.bytes += raw.len() as u64;
        scan.next_seq = scan.next_seq.max(last_seq(&event) + 1);
        match event.kind {
            Some(Kind::Started(s)) if scan.app.is_empty() => scan.app = s.app,
            Some(Kind::Finished(f)) => scan.result = Some(f.result()),
            _ => {}
        }
    }
    Ok(scan)
}

/// Reads a job's whole event log (for tests and small logs: it holds every event).
pub fn read_log(path: &Path) -> io::Result<Vec<JobEvent>> {
    let mut reader = LogReader::open(path)?;
    let mut events = Vec::new();
    while let Some(event) = reader.next(u64::MAX) {
        events.push(event);
    }
    Ok(events)
}

/// All jobs this agent knows: running ones in memory, finished ones on disk.
pub struct Registry {
    dir: PathBuf,
    limits: LogLimits,
    running: Mutex<HashMap<String, Arc<Job>>>,
}

impl Registry {
    pub fn new(state_dir: &Path) -> io::Result<Registry> {
        Registry::with_limits(state_dir, LogLimits::default())
    }

    /// A registry whose jobs' logs keep the output `limits` say.
    pub fn with_limits(state_dir: &Path, limits: LogLimits) -> io::Result<Registry> {
        let dir = state_dir.join("jobs");
        std::fs::create_dir_all(&dir)?;
        Ok(Registry {
            dir,
            limits,
            running: Mutex::new(HashMap::new()),
        })
    }

    /// `jobs/APP/ID.events`.
    pub fn log_path(&self, app: &str, id: &str) -> PathBuf {
        self.dir.join(app).join(format!("{id}.events"))
    }

    /// Whether job `id` has a log (running, finished or left by a dead agent).
    pub fn knows(&self, id: &str) -> bool {
        self.find_log(id).is_some()
    }

    /// The log of job `id`, whichever app it belongs to.
    fn find_log(&self, id: &str) -> Option<PathBuf> {
        std::fs::read_dir(&self.dir)
            .ok()?
            .flatten()
            .map(|e| e.path().join(format!("{id}.events")))
            .find(|p| p.is_file())
    }

    /// A job by id: the running one, or a finished one found on disk (its first event
    /// read for its app; its events stay on disk).
    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        if let Some(job) = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
        {
            return Some(job.clone());
        }
        let path = self.find_log(id)?;
        let app = match LogReader::open(&path).ok()?.next(u64::MAX) {
            Some(JobEvent {
                kind: Some(Kind::Started(s)),
                ..
            }) => s.app,
            _ => String::new(),
        };
        let job = Job::new(id.to_string(), app, path, None);
        // No writer: the log is read to its last whole record. A log without an end
        // belongs to a job that died with a previous agent: done all the same.
        job.progress.send_replace(Progress {
            bytes: u64::MAX,
            done: true,
            ..Progress::default()
        });
        Some(job)
    }

    /// Creates a new job with an empty log; fails if the id exists.
    pub fn create(&self, id: &str, app: &str) -> io::Result<Arc<Job>> {
        if self.find_log(id).is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("job {id} exists"),
            ));
        }
        let path = self.log_path(app, id);
        std::fs::create_dir_all(path.parent().unwrap_or(&self.dir))?;
        let _ = std::fs::remove_file(compact_path(&path));
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)?;
        let writer = Writer {
            file,
            limits: self.limits,
            head_end: None,
        };
        let job = Job::new(id.to_string(), app.to_string(), path, Some(writer));
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.to_string(), job.clone());
        Ok(job)
    }

    /// Undoes [`Registry::create`] for a job that could not start: forgotten, log gone.
    pub fn discard(&self, app: &str, id: &str) {
        self.retire(id);
        let _ = std::fs::remove_file(self.log_path(app, id));
    }

    /// Forgets a finished job from memory (its log stays on disk).
    pub fn retire(&self, id: &str) {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Deletes the app's event logs of jobs not in `keep` (and leftovers of cutting a
    /// log that a crash interrupted).
    pub fn prune(&self, app: &str, keep: &dyn Fn(&str) -> bool) {
        let Ok(entries) = std::fs::read_dir(self.dir.join(app)) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let running = |id: &str| {
                self.running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains_key(id)
            };
            if let Some(id) = name.strip_suffix(".events.compact")
                && !running(id)
            {
                let _ = std::fs::remove_file(entry.path());
            } else if let Some(id) = name.strip_suffix(".events")
                && !keep(id)
                && !running(id)
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Ends the log of a job a dead agent left: appends `finished` unless the log already
/// has one (creating the log if it is missing), after its last whole record (a torn one,
/// from a kill mid-append, is cut off). Returns the log's events before, for the caller
/// to read what the job did (e.g. its last event's time); the log is capped on disk, so
/// this is bounded.
pub fn end_log(registry: &Registry, app: &str, id: &str, finished: JobFinished) -> Vec<JobEvent> {
    let path = registry.log_path(app, id);
    let events = read_log(&path).unwrap_or_default();
    if finished_of(&events).is_some() {
        return events;
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let scan = scan(&path).unwrap_or_default();
    let file = OpenOptions::new().create(true).append(true).open(&path);
    let Ok(file) = file else {
        tracing::warn!(path = %path.display(), "cannot open the job's event log to end it");
        return events;
    };
    let _ = file.set_len(scan.bytes);
    let writer = Writer {
        file,
        limits: registry.limits,
        head_end: None,
    };
    let owner = if scan.app.is_empty() {
        app.to_string()
    } else {
        scan.app
    };
    let job = Job::new(id.to_string(), owner, path, Some(writer));
    job.progress.send_replace(Progress {
        next_seq: scan.next_seq,
        bytes: scan.bytes,
        ..Progress::default()
    });
    job.emit(Kind::Finished(finished));
    events
}

/// The first Finished event of `events`.
pub fn finished_of(events: &[JobEvent]) -> Option<&JobFinished> {
    events.iter().find_map(|e| match &e.kind {
        Some(Kind::Finished(f)) => Some(f),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoist_proto::v1::Notice;
    use tokio_stream::StreamExt as _;

    fn notice(text: &str) -> Kind {
        Kind::Notice(Notice {
            message: text.into(),
        })
    }

    #[tokio::test]
    async fn followers_see_everything_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path()).unwrap();
        let job = registry.create("d-1", "web").unwrap();
        job.emit(notice("one"));
        let mut early = job.follow();
        job.emit(notice("two"));
        let late_job = job.clone();
        let writer = tokio::spawn(async move {
            late_job.emit(notice("three"));
            late_job.emit(Kind::Finished(JobFinished {
                result: JobResult::Succeeded.into(),
                ..Default::default()
            }));
        });
        writer.await.unwrap();
        let mut seen = Vec::new();
        while let Some(e) = early.next().await {
            seen.push(e.seq);
        }
        assert_eq!(seen, vec![0, 1, 2, 3]);

        registry.retire("d-1");
        let again = registry.get("d-1").expect("read back from disk");
        assert_eq!(again.result(), Some(JobResult::Succeeded));
        assert_eq!(again.follow().collect::<Vec<_>>().await.len(), 4);
        assert!(registry.create("d-1", "web").is_err(), "ids are unique");
    }

    #[test]
    fn interrupted_logs_get_an_end() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::new(dir.path()).unwrap();
        let job = registry.create("d-2", "web").unwrap();
        job.emit(notice("building"));
        drop(job);
        registry.retire("d-2");
        // A kill mid-append left a torn record: the end follows the whole ones.
        let path = registry.log_path("web", "d-2");
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[0x40, 1, 2]).unwrap();
        drop(file);
        end_log(
            &registry,
            "web",
            "d-2",
            JobFinished {
                result: JobResult::Interrupted.into(),
                error: "hoistd stopped".into(),
                ..Default::default()
            },
        );
        let events = read_log(&path).unwrap();
        assert_eq!(events.len(), 2);
        let again = end_log(&registry, "web", "d-2", JobFinished::default());
        assert_eq!(again.len(), 2, "a log that ends is left as it is");
        assert_eq!(read_log(&path).unwrap().len(), 2);
        assert!(
            matches!(&events[1].kind, Some(Kind::Finished(f)) if f.result() == JobResult::Interrupted)
        );
    }

    fn output(line: &str) -> Kind {
        Kind::Output(hoist_proto::v1::StepOutput {
            step: "build".into(),
            line: line.into(),
            ..Default::default()
        })
    }

    fn finish(job: &Job) {
        job.emit(Kind::Finished(JobFinished {
            result: JobResult::Succeeded.into(),
            ..Default::default()
        }));
    }

    /// A job that printed 2,000 lines of 100 bytes around a step's start and end,
    /// in a registry keeping 20 KB of head and 20-40 KB of tail.
    fn capped() -> (tempfile::TempDir, Registry, Arc<Job>) {
        let dir = tempfile::tempdir().unwrap();
        let limits = LogLimits {
            head: 20_000,
            tail: 20_000,
        };
        let registry = Registry::with_limits(dir.path(), limits).unwrap();
        let job = registry.create("d-cap", "web").unwrap();
        job.emit(notice("start"));
        for i in 0..2000 {
            if i == 1000 {
                job.emit(notice("half way"));
            }
            job.emit(output(&format!("{i:>5} {}", "x".repeat(94))));
        }
        finish(&job);
        (dir, registry, job)
    }

    #[test]
    fn logs_keep_their_head_and_tail_and_every_other_event() {
        let (_dir, registry, _job) = capped();
        let path = registry.log_path("web", "d-cap");
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len < 20_000 + 2 * 20_000 + 1_000, "{len} bytes");
        let events = read_log(&path).unwrap();
        let lines: Vec<&str> = events
            .iter()
            .filter_map(|e| match &e.kind {
                Some(Kind::Output(o)) => Some(o.line.as_str()),
                _ => None,
            })
            .collect();
        assert!(lines[0].starts_with("    0 "), "the head is kept");
        assert!(
            lines.last().unwrap().starts_with(" 1999 "),
            "the tail is kept"
        );
        let notices: Vec<&str> = events
            .iter()
            .filter_map(|e| match &e.kind {
                Some(Kind::Notice(n)) => Some(n.message.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(notices, ["start", "half way"], "other events are all kept");
        let omitted: Vec<&OutputOmitted> = events
            .iter()
            .filter_map(|e| match &e.kind {
                Some(Kind::Omitted(m)) => Some(m),
                _ => None,
            })
            .collect();
        assert_eq!(
            omitted.len(),
            1,
            "one marker, however often the log was cut"
        );
        let m = omitted[0];
        assert_eq!(
            m.events as usize + lines.len(),
            2000,
            "every line is kept or counted"
        );
        assert_eq!(m.bytes, m.events * 100);
        assert!(m.first_seq < m.last_seq);
        // In seq order, every event once, the job id put back.
        assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
        assert!(events.iter().all(|e| e.job_id == "d-cap"));
        assert!(matches!(
            events.last().unwrap().kind,
            Some(Kind::Finished(_))
        ));
    }

    #[test]
    fn pages_cover_the_log_once_in_order() {
        let (_dir, registry, job) = capped();
        let whole = read_log(&registry.log_path("web", "d-cap")).unwrap();
        registry.retire("d-cap");
        for job in [job, registry.get("d-cap").unwrap()] {
            let (mut from, mut token, mut seen, mut pages) = (0, String::new(), Vec::new(), 0);
            loop {
                let page = job.page(from, &token, 4096).unwrap();
                assert!(!page.events.is_empty());
                let size: usize = page.events.iter().map(|e| e.encoded_len()).sum();
                assert!(size <= 4096 || page.events.len() == 1);
                seen.extend(page.events);
                pages += 1;
                if !page.more {
                    break;
                }
                (from, token) = (page.next_seq, page.next_token);
            }
            assert!(pages > 10);
            assert_eq!(seen, whole);
            // Without a token (or with a stale one) the page still starts at from_seq.
            let page = job.page(whole[5].seq, "g9o1", 1).unwrap();
            assert_eq!(page.events, whole[5..6]);
        }
        assert_eq!(
            registry.get("d-cap").unwrap().result(),
            Some(JobResult::Succeeded)
        );
    }

    #[tokio::test]
    async fn a_follower_that_lags_behind_a_cut_gets_the_marker_and_every_kept_event() {
        let dir = tempfile::tempdir().unwrap();
        let limits = LogLimits {
            head: 5_000,
            tail: 5_000,
        };
        let registry = Registry::with_limits(dir.path(), limits).unwrap();
        let job = registry.create("d-lag", "web").unwrap();
        let mut follower = job.follow();
        // The follower takes its first events, then the job runs on without it.
        job.emit(notice("start"));
        let first = follower.next().await.unwrap();
        assert_eq!(first.seq, 0);
        for i in 0..1000 {
            if i == 500 {
                job.emit(notice("half way"));
            }
            job.emit(output(&format!("{i:>5} {}", "x".repeat(94))));
        }
        finish(&job);
        let mut seen = vec![first];
        while let Some(e) = follower.next().await {
            seen.push(e);
        }
        assert!(
            seen.iter()
                .any(|e| matches!(e.kind, Some(Kind::Omitted(_))))
        );
        assert!(
            seen.iter()
                .any(|e| matches!(&e.kind, Some(Kind::Notice(n)) if n.message == "half way"))
        );
        assert!(matches!(seen.last().unwrap().kind, Some(Kind::Finished(_))));
        let outputs = seen
            .iter()
            .filter(|e| matches!(e.kind, Some(Kind::Output(_))))
            .count();
        assert!(outputs < 1000, "what was cut is not sent: {outputs}");
    }

    #[test]
    fn ids_are_checked() {
        assert!(validate_id("deploy-20261122T101500Z-a1b2c3").is_ok());
        for bad in ["", "../x", "-rf", "a/b", "a b", ".hidden"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }
}
