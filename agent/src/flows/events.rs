//! Jobs and their events. Every job (deploy, rollback, restart, env) has an id chosen by
//! the controller, an append-only event log under `state_dir/jobs/ID.events`
//! (length-delimited protobuf), and in memory while it runs, so any number of clients
//! can follow it: Attach replays from the first event and then follows live.

use std::{
    collections::HashMap,
    fs::{File, OpenOptions},
    io::{self, Read as _, Write as _},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use hoist_proto::v1::{JobEvent, JobFinished, JobResult, job_event::Kind};
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

/// One job: its events so far, and a signal for followers.
pub struct Job {
    pub id: String,
    pub app: String,
    events: Mutex<Vec<JobEvent>>,
    file: Mutex<Option<File>>,
    /// Number of events, bumped on every append; `done` once finished.
    progress: watch::Sender<(usize, bool)>,
}

impl Job {
    fn new(id: String, app: String, file: Option<File>) -> Arc<Job> {
        Arc::new(Job {
            id,
            app,
            events: Mutex::new(Vec::new()),
            file: Mutex::new(file),
            progress: watch::channel((0, false)).0,
        })
    }

    /// Appends an event: numbered, stamped, written to the log file, shown to followers.
    pub fn emit(&self, kind: Kind) {
        let finished = matches!(kind, Kind::Finished(_));
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        let event = JobEvent {
            job_id: self.id.clone(),
            seq: events.len() as u64,
            at: Some(SystemTime::now().into()),
            kind: Some(kind),
        };
        if let Some(file) = self.file.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            let bytes = event.encode_length_delimited_to_vec();
            if let Err(err) = file
                .write_all(&bytes)
                .and_then(|()| if finished { file.sync_all() } else { Ok(()) })
            {
                tracing::warn!(job = %self.id, error = %err, "cannot append to the job's event log");
            }
        }
        events.push(event);
        let count = events.len();
        drop(events);
        self.progress.send_replace((count, finished));
    }

    pub fn finished(&self) -> bool {
        self.progress.borrow().1
    }

    /// The job's final result, once finished.
    pub fn result(&self) -> Option<JobResult> {
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        events.iter().rev().find_map(|e| match &e.kind {
            Some(Kind::Finished(f)) => Some(f.result()),
            _ => None,
        })
    }

    pub fn events(&self) -> Vec<JobEvent> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every event from the first, then live ones until the job finishes.
    pub fn follow(self: &Arc<Self>) -> ReceiverStream<JobEvent> {
        let job = self.clone();
        let mut progress = self.progress.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut next = 0usize;
            loop {
                let batch: Vec<JobEvent> = {
                    let events = job.events.lock().unwrap_or_else(|e| e.into_inner());
                    events[next.min(events.len())..].to_vec()
                };
                next += batch.len();
                for event in batch {
                    if tx.send(event).await.is_err() {
                        return; // the client went away; the job goes on
                    }
                }
                let (count, done) = *progress.borrow_and_update();
                if done && next >= count {
                    return;
                }
                if next < count {
                    continue;
                }
                if progress.changed().await.is_err() {
                    return;
                }
            }
        });
        ReceiverStream::new(rx)
    }
}

/// Reads a finished job's event log.
pub fn read_log(path: &Path) -> io::Result<Vec<JobEvent>> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut buf = bytes.as_slice();
    let mut events = Vec::new();
    while !buf.is_empty() {
        match JobEvent::decode_length_delimited(&mut buf) {
            Ok(e) => events.push(e),
            // A torn last record (crash mid-write): keep what was whole.
            Err(_) => break,
        }
    }
    Ok(events)
}

/// All jobs this agent knows: running ones in memory, finished ones on disk.
pub struct Registry {
    dir: PathBuf,
    running: Mutex<HashMap<String, Arc<Job>>>,
}

impl Registry {
    pub fn new(state_dir: &Path) -> io::Result<Registry> {
        let dir = state_dir.join("jobs");
        std::fs::create_dir_all(&dir)?;
        Ok(Registry {
            dir,
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

    /// A job by id: the running one, or a finished one read back from its log.
    pub fn get(&self, id: &str) -> Option<Arc<Job>> {
        if let Some(job) = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
        {
            return Some(job.clone());
        }
        let events = read_log(&self.find_log(id)?).ok()?;
        let app = events
            .iter()
            .find_map(|e| match &e.kind {
                Some(Kind::Started(s)) => Some(s.app.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let job = Job::new(id.to_string(), app, None);
        let finished = events
            .iter()
            .any(|e| matches!(e.kind, Some(Kind::Finished(_))));
        let count = events.len();
        *job.events.lock().unwrap_or_else(|e| e.into_inner()) = events;
        job.progress.send_replace((count, finished));
        if !finished {
            // A log without an end belongs to a job that died with a previous agent.
            job.progress.send_replace((count, true));
        }
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
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(path)?;
        let job = Job::new(id.to_string(), app.to_string(), Some(file));
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

    /// Deletes the app's event logs of jobs not in `keep`.
    pub fn prune(&self, app: &str, keep: &dyn Fn(&str) -> bool) {
        let Ok(entries) = std::fs::read_dir(self.dir.join(app)) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".events")
                && !keep(id)
                && !self
                    .running
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains_key(id)
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Ends the log of a job a dead agent left: appends `finished` unless the log already
/// has one (creating the log if it is missing). Returns the log's events before, for
/// the caller to read what the job did (e.g. its last event's time).
pub fn end_log(registry: &Registry, app: &str, id: &str, finished: JobFinished) -> Vec<JobEvent> {
    let path = registry.log_path(app, id);
    let events = read_log(&path).unwrap_or_default();
    if events
        .iter()
        .any(|e| matches!(e.kind, Some(Kind::Finished(_))))
    {
        return events;
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // A torn last record (a kill mid-append) is cut off first, so the end follows
    // whole records.
    let whole: usize = events
        .iter()
        .map(|e| e.encoded_len())
        .map(|n| n + prost::length_delimiter_len(n))
        .sum();
    let file = OpenOptions::new().create(true).append(true).open(&path);
    let Ok(file) = file else {
        tracing::warn!(path = %path.display(), "cannot open the job's event log to end it");
        return events;
    };
    if file.metadata().is_ok_and(|m| m.len() > whole as u64) {
        let _ = file.set_len(whole as u64);
    }
    let job = Job::new(id.to_string(), app.to_string(), Some(file));
    *job.events.lock().unwrap_or_else(|e| e.into_inner()) = events.clone();
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

    #[test]
    fn ids_are_checked() {
        assert!(validate_id("deploy-20261122T101500Z-a1b2c3").is_ok());
        for bad in ["", "../x", "-rf", "a/b", "a b", ".hidden"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }
}
