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

    /// Loads the journal; an unreadable file is moved aside and reported, never
    /// silently replaced.
    pub fn load(path: &Path) -> Journal {
        match std::fs::read(path) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => Journal::default(),
            Err(err) => {
                tracing::error!(path = %path.display(), error = %err, "cannot read the journal; starting a new one");
                Journal::default()
            }
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                let aside = path.with_extension(format!("corrupt-{}", now_ms()));
                tracing::error!(path = %path.display(), moved_to = %aside.display(), error = %err,
                    "journal is unreadable; moved aside, starting a new one");
                let _ = std::fs::rename(path, &aside);
                Journal::default()
            }),
        }
    }

    pub fn save(&self, path: &Path) -> io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        atomic::write_file(path, &bytes)
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

    pub fn release_mut(&mut self, id: &str) -> Option<&mut ReleaseRecord> {
        self.releases.iter_mut().find(|r| r.id == id)
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

fn kind_from_name(name: &str) -> JobKind {
    [
        JobKind::Deploy,
        JobKind::Rollback,
        JobKind::Restart,
        JobKind::Env,
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
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corrupt_file_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = Journal::path(dir.path(), "web");
        let mut j = Journal::default();
        j.releases.push(ReleaseRecord {
            id: "20261122T101500Z-abc1234".into(),
            commit: "abc1234".into(),
            ..Default::default()
        });
        j.record_job(JobRecord {
            job_id: "d-1".into(),
            kind: "deploy".into(),
            result: "rolled_back".into(),
            ..Default::default()
        });
        j.save(&path).unwrap();
        let back = Journal::load(&path);
        assert_eq!(back.releases, j.releases);
        let s = back.summaries("web", 10);
        assert_eq!(s[0].result(), JobResult::RolledBack);
        assert_eq!(s[0].kind(), JobKind::Deploy);

        std::fs::write(&path, b"{not json").unwrap();
        let fresh = Journal::load(&path);
        assert!(fresh.jobs.is_empty());
        let aside = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains("corrupt"));
        assert!(aside, "the unreadable journal is kept for a human");
    }
}
