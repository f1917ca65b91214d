//! The app's journal: every release (commit, ref, who, when, its backup) and every job
//! (kind, result, timings, who, forced/reason), kept as one JSON file per app under
//! `state_dir/apps/APP/journal.json`, rewritten atomically after every change.
//!
//! The journal is the one record of which job runs: a job is written here with result
//! `running` before it does any work, and its final result replaces that record when it
//! ends. A lease whose deploy id names a job holds only while that job runs (see
//! [`crate::state::lock`]), so after a crash recovery needs nothing else: every
//! `running` record becomes `interrupted`, and the leases of jobs go with them.

use std::{
    io,
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use hoist_proto::v1::{JobKind, JobResult, JobSummary, Release};
use serde::{Deserialize, Serialize};

use crate::state::atomic;

/// Jobs remembered per app (older ones and their event logs are pruned).
pub const KEEP_JOBS: usize = 200;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ReleaseRecord {
    pub id: String,
    pub commit: String,
    pub r#ref: String,
    pub who: String,
    pub deployed_at_ms: u64,
    pub job_id: String,
    /// A database backup taken while this release was current (before the next
    /// release migrated): what `rollback --restore-db` to this release restores.
    pub backup_file: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct JobRecord {
    pub job_id: String,
    pub kind: String,
    pub r#ref: String,
    pub commit: String,
    pub release: String,
    pub previous_release: String,
    pub who: String,
    pub started_at_ms: u64,
    pub duration_ms: u64,
    pub result: String,
    pub error: String,
    pub forced: bool,
    pub reason: String,
    /// When the agent that restarted after this job's agent died recorded it
    /// `interrupted` (0 for any other result).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interrupted_at_ms: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl JobRecord {
    /// Still running (as far as the journal knows).
    pub fn running(&self) -> bool {
        self.result == result_name(JobResult::Running)
    }
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Journal {
    pub releases: Vec<ReleaseRecord>,
    pub jobs: Vec<JobRecord>,
    /// Deploys ever finished, by result: never pruned, so it is a true counter.
    #[serde(default)]
    pub deploys: std::collections::BTreeMap<String, u64>,
    /// Durations of the deploys that ran (refusals aside), never pruned: the
    /// `hoist_deploy_duration_seconds` histogram.
    #[serde(default)]
    pub deploy_durations: Histogram,
    /// Release ids in the order they became current (a deploy that succeeded, a
    /// rollback), oldest first. "Previous" is read from here, not from id order.
    #[serde(default)]
    pub history: Vec<String>,
}

/// Upper bounds (seconds) of the deploy-duration buckets, `+Inf` aside.
pub const DURATION_BUCKETS: [f64; 10] = [
    5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
];

/// A cumulative-by-rendering histogram: how many observations fell into each bucket of
/// [`DURATION_BUCKETS`] (the last slot is over the largest bound), their sum and count.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Per bucket, not cumulative; `DURATION_BUCKETS.len() + 1` slots once observed.
    pub buckets: Vec<u64>,
    pub sum_ms: u64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, ms: u64) {
        self.buckets.resize(DURATION_BUCKETS.len() + 1, 0);
        let seconds = ms as f64 / 1000.0;
        let slot = DURATION_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(DURATION_BUCKETS.len());
        self.buckets[slot] += 1;
        self.sum_ms = self.sum_ms.saturating_add(ms);
        self.count += 1;
    }

    /// `(le, cumulative count)` for every bound, `+Inf` last.
    pub fn cumulative(&self) -> Vec<(String, u64)> {
        let mut total = 0;
        let mut out = Vec::with_capacity(DURATION_BUCKETS.len() + 1);
        for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
            total += self.buckets.get(i).copied().unwrap_or(0);
            out.push((bound.to_string(), total));
        }
        out.push(("+Inf".to_string(), self.count));
        out
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

pub fn timestamp(ms: u64) -> prost_types::Timestamp {
    (UNIX_EPOCH + Duration::from_millis(ms)).into()
}

/// "2026-11-22 10:15:00 UTC" for a unix time in milliseconds.
pub fn utc_text(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(
            || format!("{ms} ms after the epoch"),
            |t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

pub fn kind_name(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Deploy => "deploy",
        JobKind::Rollback => "rollback",
        JobKind::Restart => "restart",
        JobKind::Env => "env",
        JobKind::Task => "task",
        JobKind::Stop => "stop",
        JobKind::Start => "start",
        JobKind::Unspecified => "unknown",
    }
}

pub fn result_name(result: JobResult) -> &'static str {
    match result {
        JobResult::Running => "running",
        JobResult::Succeeded => "succeeded",
        JobResult::Failed => "failed",
        JobResult::RolledBack => "rolled_back",
        JobResult::Interrupted => "interrupted",
        JobResult::Refused => "refused",
        JobResult::Unspecified => "unknown",
    }
}

impl Journal {
    pub fn path(state_dir: &Path, app: &str) -> PathBuf {
        state_dir.join("apps").join(app).join("journal.json")
    }

    /// Reads the journal without changing anything: a missing or unreadable file reads
    /// as empty. For readers outside the app's owner task (the metrics endpoint).
    pub fn read(path: &Path) -> Journal {
        std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    /// Records that `id` is now serving.
    pub fn note_current(&mut self, id: &str) {
        self.history.retain(|h| h != id);
        self.history.push(id.to_string());
    }

    /// The release that served before `current`, among those still on disk.
    pub fn previous(&self, current: &str, on_disk: &[String]) -> Option<String> {
        self.history
            .iter()
            .rev()
            .find(|id| *id != current && on_disk.contains(id))
            .cloned()
    }

    /// The most recent finished deploy.
    pub fn last_deploy(&self) -> Option<&JobRecord> {
        self.jobs
            .iter()
            .rev()
            .find(|j| j.kind == "deploy" && !j.running())
    }

    /// Jobs recorded as running: at start-up, the ones a dead agent left.
    pub fn running(&self) -> impl Iterator<Item = &JobRecord> {
        self.jobs.iter().filter(|j| j.running())
    }

    pub fn job(&self, id: &str) -> Option<&JobRecord> {
        self.jobs.iter().find(|j| j.job_id == id)
    }

    /// The jobs interrupted by an agent restart since the last job that ran to its end
    /// (refusals skipped), oldest first: what the next job tells its client.
    pub fn untold_interrupted(&self) -> Vec<&JobRecord> {
        let interrupted = result_name(JobResult::Interrupted);
        let refused = result_name(JobResult::Refused);
        let mut told: Vec<&JobRecord> = self
            .jobs
            .iter()
            .rev()
            .filter(|j| j.result != refused)
            .take_while(|j| j.result == interrupted)
            .collect();
        told.reverse();
        told
    }

    pub fn release(&self, id: &str) -> Option<&ReleaseRecord> {
        self.releases.iter().find(|r| r.id == id)
    }

    /// Records a job (replacing an earlier record of the same id, e.g. its `running`
    /// one), newest last. A deploy counts once, when it first gets a final result.
    pub fn record_job(&mut self, record: JobRecord) {
        let counted = self
            .jobs
            .iter()
            .any(|j| j.job_id == record.job_id && !j.running());
        if record.kind == "deploy" && !counted && !record.running() {
            *self.deploys.entry(record.result.clone()).or_default() += 1;
            if record.result != result_name(JobResult::Refused) {
                self.deploy_durations.observe(record.duration_ms);
            }
        }
        self.jobs.retain(|j| j.job_id != record.job_id);
        self.jobs.push(record);
        // The oldest go first, never a running job's record: it is what a restart
        // recovers from, however many refusals came in meanwhile.
        while self.jobs.len() > KEEP_JOBS {
            match self.jobs.iter().position(|j| !j.running()) {
                Some(oldest) => self.jobs.remove(oldest),
                None => break,
            };
        }
    }

    pub fn summaries(&self, app: &str, limit: usize) -> Vec<JobSummary> {
        self.jobs
            .iter()
            .rev()
            .take(limit)
            .map(|j| JobSummary {
                job_id: j.job_id.clone(),
                kind: kind_from_name(&j.kind).into(),
                app: app.to_string(),
                r#ref: j.r#ref.clone(),
                commit: j.commit.clone(),
                release: j.release.clone(),
                who: j.who.clone(),
                started_at: Some(timestamp(j.started_at_ms)),
                duration_ms: j.duration_ms,
                result: result_from_name(&j.result).into(),
                error: j.error.clone(),
                forced: j.forced,
                reason: j.reason.clone(),
            })
            .collect()
    }

    /// Releases present on disk, newest first, with what the journal knows of them.
    pub fn list(&self, on_disk: &[String], current: &str, previous: &str) -> Vec<Release> {
        let mut ids: Vec<&String> = on_disk.iter().collect();
        ids.sort();
        ids.reverse();
        ids.into_iter()
            .map(|id| {
                let rec = self.release(id).cloned().unwrap_or_default();
                Release {
                    id: id.clone(),
                    commit: rec.commit,
                    r#ref: rec.r#ref,
                    who: rec.who,
                    deployed_at: (rec.deployed_at_ms > 0).then(|| timestamp(rec.deployed_at_ms)),
                    current: id == current,
                    previous: id == previous,
                    has_backup: rec.backup_file.is_some(),
                }
            })
            .collect()
    }
}

/// A change to the journal, as flows and the RecordRefusal handler send it to the app's
/// owner task.
#[derive(Clone, Debug)]
pub enum Change {
    /// A job started (result `running`), ended, was refused or was interrupted.
    Job(JobRecord),
    /// A running job chose its release (and the commit it builds).
    Progress {
        job_id: String,
        release: String,
        commit: String,
    },
    /// `id` now serves, after `was` (empty when nothing served before).
    Current { id: String, was: String },
    /// A release was switched to; releases no longer on disk are forgotten.
    Release {
        record: ReleaseRecord,
        on_disk: Vec<String>,
    },
    /// A backup was taken while `release` was current.
    Backup { release: String, file: String },
}

#[derive(Debug, thiserror::Error)]
#[error("cannot write the journal: {source}")]
pub struct JournalError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// The journal as the app's owner task holds it: in memory, and written through
/// atomically on every change. Only the owner task ([`crate::apps`]) opens one, so
/// there is one writer per app and no change is lost between two writers.
pub struct JournalFile {
    path: PathBuf,
    journal: Journal,
}

impl JournalFile {
    /// Loads the journal; an unreadable file is moved aside and reported, never
    /// silently replaced.
    pub fn open(state_dir: &Path, app: &str) -> JournalFile {
        let path = Journal::path(state_dir, app);
        let journal = match std::fs::read(&path) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => Journal::default(),
            Err(err) => {
                tracing::error!(path = %path.display(), error = %err, "cannot read the journal; starting a new one");
                Journal::default()
            }
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                let aside = path.with_extension(format!("corrupt-{}", now_ms()));
                tracing::error!(path = %path.display(), moved_to = %aside.display(), error = %err,
                    "journal is unreadable; moved aside, starting a new one");
                let _ = std::fs::rename(&path, &aside);
                Journal::default()
            }),
        };
        JournalFile { path, journal }
    }

    pub fn get(&self) -> &Journal {
        &self.journal
    }

    /// Applies `change` and writes the journal; if the write fails, the journal in
    /// memory is left as it was (as on disk). For a job's start, which is refused then.
    pub fn apply_or_undo(&mut self, change: Change) -> Result<(), JournalError> {
        let before = self.journal.clone();
        self.apply(change).inspect_err(|_| self.journal = before)
    }

    /// Applies `change` and writes the journal.
    pub fn apply(&mut self, change: Change) -> Result<(), JournalError> {
        // A running job's release and the new current are always followed by another
        // write of the journal in the same job (the release record, the job's end),
        // which makes them durable; a job's records and releases are durable at once.
        let durability = match change {
            Change::Progress { .. } | Change::Current { .. } => atomic::Durability::Ordered,
            Change::Job(_) | Change::Release { .. } | Change::Backup { .. } => {
                atomic::Durability::Durable
            }
        };
        let journal = &mut self.journal;
        match change {
            Change::Job(record) => journal.record_job(record),
            Change::Progress {
                job_id,
                release,
                commit,
            } => {
                if let Some(job) = journal
                    .jobs
                    .iter_mut()
                    .find(|j| j.job_id == job_id && j.running())
                {
                    job.release = release;
                    job.commit = commit;
                }
            }
            Change::Current { id, was } => {
                if !was.is_empty() && !journal.history.contains(&was) {
                    journal.note_current(&was);
                }
                journal.note_current(&id);
            }
            Change::Release { record, on_disk } => {
                journal.releases.retain(|r| r.id != record.id);
                journal.releases.push(record);
                journal.releases.retain(|r| on_disk.contains(&r.id));
            }
            Change::Backup { release, file } => {
                match journal.releases.iter_mut().find(|r| r.id == release) {
                    Some(r) => r.backup_file = Some(file),
                    None => journal.releases.push(ReleaseRecord {
                        id: release,
                        backup_file: Some(file),
                        ..Default::default()
                    }),
                }
            }
        }
        self.save(durability)
    }

    fn save(&self, durability: atomic::Durability) -> Result<(), JournalError> {
        let write = || {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let bytes = serde_json::to_vec_pretty(&self.journal).map_err(io::Error::other)?;
            atomic::replace_file(&self.path, &bytes, durability)
        };
        write().map_err(|source| JournalError {
            path: self.path.clone(),
            source,
        })
    }
}

fn kind_from_name(name: &str) -> JobKind {
    [
        JobKind::Deploy,
        JobKind::Rollback,
        JobKind::Restart,
        JobKind::Env,
        JobKind::Task,
        JobKind::Stop,
        JobKind::Start,
    ]
    .into_iter()
    .find(|k| kind_name(*k) == name)
    .unwrap_or(JobKind::Unspecified)
}

pub fn result_from_name(name: &str) -> JobResult {
    [
        JobResult::Running,
        JobResult::Succeeded,
        JobResult::Failed,
        JobResult::RolledBack,
        JobResult::Interrupted,
        JobResult::Refused,
    ]
    .into_iter()
    .find(|r| result_name(*r) == name)
    .unwrap_or(JobResult::Unspecified)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the tests are the owner of the journal here
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corrupt_file_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = Journal::path(dir.path(), "web");
        let mut j = JournalFile::open(dir.path(), "web");
        let id = "20261122T101500Z-abc1234".to_string();
        j.apply(Change::Release {
            record: ReleaseRecord {
                id: id.clone(),
                commit: "abc1234".into(),
                ..Default::default()
            },
            on_disk: vec![id.clone()],
        })
        .unwrap();
        j.apply(Change::Job(JobRecord {
            job_id: "d-1".into(),
            kind: "deploy".into(),
            result: "rolled_back".into(),
            ..Default::default()
        }))
        .unwrap();
        let back = JournalFile::open(dir.path(), "web");
        assert_eq!(back.get().releases, j.get().releases);
        let back = Journal::read(&path);
        let s = back.summaries("web", 10);
        assert_eq!(s[0].result(), JobResult::RolledBack);
        assert_eq!(s[0].kind(), JobKind::Deploy);

        std::fs::write(&path, b"{not json").unwrap();
        assert!(Journal::read(&path).jobs.is_empty());
        assert!(path.exists(), "a reader changes nothing");
        let fresh = JournalFile::open(dir.path(), "web");
        assert!(fresh.get().jobs.is_empty());
        let aside = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains("corrupt"));
        assert!(aside, "the unreadable journal is kept for a human");
    }

    #[test]
    fn a_running_record_is_replaced_and_counted_once() {
        let mut journal = Journal::default();
        let job = |id: &str, result: &str| JobRecord {
            job_id: id.into(),
            kind: "deploy".into(),
            result: result.into(),
            ..Default::default()
        };
        journal.record_job(job("d-1", "running"));
        assert!(
            journal.deploys.is_empty(),
            "a running deploy is not counted"
        );
        assert_eq!(journal.running().count(), 1);
        assert!(journal.last_deploy().is_none(), "nor is it the last deploy");
        journal.record_job(job("d-1", "succeeded"));
        journal.record_job(job("d-1", "succeeded"));
        assert_eq!(journal.deploys.get("succeeded"), Some(&1));
        assert_eq!(journal.jobs.len(), 1);
        assert_eq!(journal.running().count(), 0);

        // Interrupted jobs since the last that ran to its end, refusals aside.
        assert!(journal.untold_interrupted().is_empty());
        journal.record_job(job("d-2", "interrupted"));
        journal.record_job(job("d-3", "refused"));
        journal.record_job(job("d-4", "interrupted"));
        let told: Vec<&str> = journal
            .untold_interrupted()
            .iter()
            .map(|j| j.job_id.as_str())
            .collect();
        assert_eq!(told, ["d-2", "d-4"]);
        journal.record_job(job("d-5", "running"));
        assert!(journal.untold_interrupted().is_empty(), "told once");
        for i in 0..KEEP_JOBS {
            journal.record_job(job(&format!("r-{i}"), "refused"));
        }
        assert_eq!(journal.jobs.len(), KEEP_JOBS);
        assert!(
            journal.job("d-5").is_some(),
            "a running record is never pruned"
        );
        assert_eq!(journal.deploys.get("interrupted"), Some(&2));
        // Every deploy that ran is in the duration histogram, once; refusals are not.
        assert_eq!(journal.deploy_durations.count, 3);
        assert_eq!(journal.deploy_durations.cumulative().last().unwrap().1, 3);
    }

    #[test]
    fn duration_buckets_are_cumulative() {
        let mut h = Histogram::default();
        for ms in [1_000, 5_000, 5_001, 4_000_000] {
            h.observe(ms);
        }
        let c = h.cumulative();
        assert_eq!(c[0], ("5".to_string(), 2));
        assert_eq!(c[1], ("10".to_string(), 3));
        assert_eq!(c[DURATION_BUCKETS.len() - 1], ("3600".to_string(), 3));
        assert_eq!(c[DURATION_BUCKETS.len()], ("+Inf".to_string(), 4));
        assert_eq!(h.sum_ms, 4_011_001);
    }

    #[test]
    fn a_failed_write_leaves_the_journal_as_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = JournalFile::open(dir.path(), "web");
        std::fs::create_dir_all(Journal::path(dir.path(), "web")).unwrap();
        let record = JobRecord {
            job_id: "d-1".into(),
            result: "running".into(),
            ..Default::default()
        };
        assert!(j.apply_or_undo(Change::Job(record)).is_err());
        assert!(j.get().jobs.is_empty());
    }
}
