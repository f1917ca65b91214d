//! The app's journal: every release (commit, ref, who, when, its backup) and every job
//! (kind, result, timings, who, forced/reason), kept as one JSON file per app under
//! `state_dir/apps/APP/journal.json`, rewritten atomically after every change.

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
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Journal {
    pub releases: Vec<ReleaseRecord>,
    pub jobs: Vec<JobRecord>,
    /// Deploys ever finished, by result: never pruned, so it is a true counter.
    #[serde(default)]
    pub deploys: std::collections::BTreeMap<String, u64>,
    /// Release ids in the order they became current (a deploy that succeeded, a
    /// rollback), oldest first. "Previous" is read from here, not from id order.
    #[serde(default)]
    pub history: Vec<String>,
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
        self.jobs.iter().rev().find(|j| j.kind == "deploy")
    }

    pub fn release(&self, id: &str) -> Option<&ReleaseRecord> {
        self.releases.iter().find(|r| r.id == id)
    }

    /// Records a job (replacing an earlier record of the same id), newest last.
    pub fn record_job(&mut self, record: JobRecord) {
        let known = self.jobs.iter().any(|j| j.job_id == record.job_id);
        if record.kind == "deploy" && !known {
            *self.deploys.entry(record.result.clone()).or_default() += 1;
        }
        self.jobs.retain(|j| j.job_id != record.job_id);
        self.jobs.push(record);
        if self.jobs.len() > KEEP_JOBS {
            let excess = self.jobs.len() - KEEP_JOBS;
            self.jobs.drain(..excess);
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
    /// A job ended (or was refused, or interrupted).
    Job(JobRecord),
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

    /// Applies `change` and writes the journal.
    pub fn apply(&mut self, change: Change) -> Result<(), JournalError> {
        let journal = &mut self.journal;
        match change {
            Change::Job(record) => journal.record_job(record),
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
        self.save()
    }

    fn save(&self) -> Result<(), JournalError> {
        let write = || {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let bytes = serde_json::to_vec_pretty(&self.journal).map_err(io::Error::other)?;
            atomic::write_file(&self.path, &bytes)
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

fn result_from_name(name: &str) -> JobResult {
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
}
