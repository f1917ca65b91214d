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

use hoist_proto::v1::{JobKind, JobResult, JobSummary, Release, ReleaseOutcome};
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
    /// Whether this release ran migrations on this host, and whether they were
    /// reversed since ([`Migrations`]).
    #[serde(default)]
    pub migrations: Migrations,
    /// How it fared: [`OUTCOME_OK`], [`OUTCOME_FAILED`], [`OUTCOME_ROLLED_BACK`];
    /// empty while its deploy runs, and for releases recorded before outcomes were.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub outcome: String,
}

/// What a release did to the schema on this host: the bookkeeping `rollback --migrate`
/// reads to reverse the migrations of the releases it leaves, from the release that
/// introduced them.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Migrations {
    /// Recorded before hoist kept this bookkeeping: leaving the release with
    /// `--migrate` runs its `migrate_rollback`, as hoist did then.
    #[default]
    Unknown,
    /// It ran no migrations here (another host migrated, nothing was pending, or the
    /// deploy did not ask).
    None,
    /// Its migrations ran here and are still applied; `backup` is the dump taken just
    /// before them.
    Applied { backup: Option<String>, at_ms: u64 },
    /// Its migrations were reversed (`rollback --migrate`) or undone by a restore of a
    /// backup taken before them.
    Reversed { at_ms: u64 },
}

impl Migrations {
    pub fn applied(&self) -> bool {
        matches!(self, Migrations::Applied { .. })
    }

    /// `applied`, `reversed`, `none` or `unknown`: how `hoist releases` shows it.
    pub fn name(&self) -> &'static str {
        match self {
            Migrations::Unknown => "unknown",
            Migrations::None => "none",
            Migrations::Applied { .. } => "applied",
            Migrations::Reversed { .. } => "reversed",
        }
    }
}

/// A database dump in `backups/`, as the agent took it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct BackupRecord {
    /// The file name without `.backup`: what `hoist restore --backup ID` names.
    pub id: String,
    pub file: String,
    pub size: u64,
    pub taken_at_ms: u64,
    /// The release serving when it was taken (empty: none yet).
    pub release: String,
    /// Why: `deploy` (before `before` migrated), `rollback` (before a `--migrate`
    /// rollback reversed migrations) or `manual` (`hoist backup`).
    pub reason: String,
    /// The release whose migrations it was taken before (deploys only).
    #[serde(default)]
    pub before: String,
    pub job_id: String,
}

/// Backup records kept in the journal (the files themselves follow `keep_backups`).
pub const KEEP_BACKUP_RECORDS: usize = 200;

/// The deploy (or a rollback to the release) succeeded.
pub const OUTCOME_OK: &str = "ok";
/// Its deploy failed after the switch and it stayed (nothing to roll back to).
pub const OUTCOME_FAILED: &str = "failed";
/// It was rolled back: by its agent after failed checks, or by `hoist rollback`.
pub const OUTCOME_ROLLED_BACK: &str = "rolled_back";

/// Why a rollback target (`hoist rollback --to X`) names no single release here.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(
        "no release on this host matches {to:?} (a release id, a ref that was deployed, or a \
         commit or its prefix); releases here: {known}"
    )]
    NotFound { to: String, known: String },
    #[error(
        "{to:?} matches more than one release on this host: {candidates}; pass one of \
         these release ids (or a longer commit prefix)"
    )]
    Ambiguous { to: String, candidates: String },
}

/// The shortest commit prefix `--to` accepts.
pub const MIN_COMMIT_PREFIX: usize = 4;

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
    /// Backups taken by this agent, oldest first ([`BackupRecord`]).
    #[serde(default)]
    pub backups: Vec<BackupRecord>,
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
        JobKind::Backup => "backup",
        JobKind::Restore => "restore",
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

    /// Releases deployed after `release` whose migrations are still applied here,
    /// newest first: the schema changes a return to `release` leaves behind unless
    /// they are reversed. A release the journal does not know counts as the oldest.
    pub fn applied_after(&self, release: &str) -> Vec<&ReleaseRecord> {
        let since = self.release(release).map_or(0, |r| r.deployed_at_ms);
        let mut after: Vec<&ReleaseRecord> = self
            .releases
            .iter()
            .filter(|r| r.id != release && r.migrations.applied())
            .filter(|r| (r.deployed_at_ms, r.id.as_str()) > (since, release))
            .collect();
        after.sort_by(|a, b| (b.deployed_at_ms, &b.id).cmp(&(a.deployed_at_ms, &a.id)));
        after
    }

    /// The release ids whose directories must stay on disk: those deployed after the
    /// serving release whose migrations are still applied (their `migrate_rollback` is
    /// the only one that knows how to reverse them). A condition of its own in the prune
    /// eligibility, next to "never current, never previous".
    pub fn schema_ahead(&self, current: &str) -> Vec<String> {
        self.applied_after(current)
            .into_iter()
            .map(|r| r.id.clone())
            .collect()
    }

    /// The backup `hoist restore` restores when no `--backup` is named: the one taken
    /// just before the newest release deployed after the serving one (a release that
    /// failed and was rolled back, whose migrations ran), else the newest backup.
    /// Only backups whose file is in `on_disk` (names in `backups/`) count.
    pub fn default_backup(&self, current: &str, on_disk: &[String]) -> Option<&BackupRecord> {
        let present = |b: &&BackupRecord| on_disk.iter().any(|n| *n == format!("{}.backup", b.id));
        let since = self.release(current).map_or(0, |r| r.deployed_at_ms);
        let mut left: Vec<&ReleaseRecord> = self
            .releases
            .iter()
            .filter(|r| r.id != current && r.deployed_at_ms > since)
            .collect();
        left.sort_by_key(|r| std::cmp::Reverse(r.deployed_at_ms));
        left.iter()
            .find_map(|r| {
                self.backups
                    .iter()
                    .rev()
                    .filter(present)
                    .find(|b| b.reason == "deploy" && b.before == r.id)
            })
            .or_else(|| self.backups.iter().rev().find(present))
    }

    /// A release that counts toward `keep_releases`: not failed, not rolled back
    /// (releases recorded before outcomes were count as good).
    pub fn good(&self, id: &str) -> bool {
        self.release(id)
            .is_none_or(|r| r.outcome != OUTCOME_FAILED && r.outcome != OUTCOME_ROLLED_BACK)
    }

    /// Whether pruning must leave release `id` alone, whatever `keep_releases` says:
    /// the one serving (`current`), the one a plain rollback returns to (`previous`),
    /// and one whose migrations are still applied past the serving one (its
    /// `migrate_rollback` is the only one that can reverse them,
    /// [`Journal::schema_ahead`]). The one place a release is protected from pruning.
    pub fn never_prune(&self, id: &str, current: &str, previous: &str) -> bool {
        id == current || id == previous || self.schema_ahead(current).iter().any(|a| a == id)
    }

    /// The release `to` names among `on_disk` (oldest first): a release id; else the
    /// releases deployed from ref `to`; else those whose commit starts with `to`.
    /// Several releases of one commit resolve to the newest; of several commits, to an
    /// error listing them. `commit_of` gives a release's commit when the journal has
    /// none (its `REVISION`).
    pub fn resolve_target(
        &self,
        to: &str,
        on_disk: &[String],
        commit_of: impl Fn(&str) -> String,
    ) -> Result<String, TargetError> {
        if on_disk.iter().any(|id| id == to) {
            return Ok(to.to_string());
        }
        let commit = |id: &str| {
            self.release(id)
                .map(|r| r.commit.clone())
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| commit_of(id))
        };
        let by_ref: Vec<&String> = on_disk
            .iter()
            .filter(|id| self.release(id).is_some_and(|r| r.r#ref == to))
            .collect();
        let lower = to.to_ascii_lowercase();
        let by_commit: Vec<&String> =
            if to.len() >= MIN_COMMIT_PREFIX && to.bytes().all(|b| b.is_ascii_hexdigit()) {
                on_disk
                    .iter()
                    .filter(|id| commit(id).starts_with(&lower))
                    .collect()
            } else {
                Vec::new()
            };
        let matches = if by_ref.is_empty() { by_commit } else { by_ref };
        let Some(newest) = matches.last() else {
            return Err(TargetError::NotFound {
                to: to.to_string(),
                known: if on_disk.is_empty() {
                    "none".into()
                } else {
                    on_disk.join(", ")
                },
            });
        };
        let commits: std::collections::BTreeSet<String> =
            matches.iter().map(|id| commit(id)).collect();
        if commits.len() > 1 {
            let candidates: Vec<String> = matches
                .iter()
                .map(|id| format!("{id} ({})", &commit(id)[..commit(id).len().min(12)]))
                .collect();
            return Err(TargetError::Ambiguous {
                to: to.to_string(),
                candidates: candidates.join(", "),
            });
        }
        Ok(newest.to_string())
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
                    migrations: rec.migrations.name().into(),
                    schema_ahead: id != current
                        && rec.migrations.applied()
                        && self
                            .release(current)
                            .is_none_or(|c| rec.deployed_at_ms > c.deployed_at_ms),
                    outcome: match rec.outcome.as_str() {
                        OUTCOME_OK => ReleaseOutcome::Ok,
                        OUTCOME_FAILED => ReleaseOutcome::Failed,
                        OUTCOME_ROLLED_BACK => ReleaseOutcome::RolledBack,
                        _ => ReleaseOutcome::Unspecified,
                    }
                    .into(),
                }
            })
            .collect()
    }
}

impl Journal {
    /// The dumps in `backups/` (`files`: name and size), newest first, with what the
    /// journal knows of each; `is_default` marks what `hoist restore` picks.
    pub fn list_backups(
        &self,
        files: &[(String, u64)],
        current: &str,
    ) -> Vec<hoist_proto::v1::Backup> {
        let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
        let default = self.default_backup(current, &names).map(|b| b.id.clone());
        let mut list: Vec<hoist_proto::v1::Backup> = files
            .iter()
            .map(|(name, size)| {
                let id = name.trim_end_matches(".backup").to_string();
                let rec = self.backups.iter().rev().find(|b| b.id == id);
                hoist_proto::v1::Backup {
                    size_bytes: *size,
                    taken_at: rec.map(|r| timestamp(r.taken_at_ms)),
                    release: rec.map_or_else(
                        || id.split('.').next().unwrap_or_default().to_string(),
                        |r| r.release.clone(),
                    ),
                    reason: rec.map_or("unknown".into(), |r| r.reason.clone()),
                    before: rec.map(|r| r.before.clone()).unwrap_or_default(),
                    is_default: default.as_deref() == Some(id.as_str()),
                    id,
                }
            })
            .collect();
        let taken = |b: &hoist_proto::v1::Backup| {
            b.taken_at.as_ref().map_or((0, 0), |t| (t.seconds, t.nanos))
        };
        list.sort_by(|a, b| taken(b).cmp(&taken(a)).then(b.id.cmp(&a.id)));
        list
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
    /// A backup was taken while `record.release` was current (before `record.before`
    /// migrated, for a deploy's).
    Backup(BackupRecord),
    /// `release` ran its migrations here (they ended at `at_ms`); `backup` was taken
    /// just before.
    Migrated {
        release: String,
        backup: Option<String>,
        at_ms: u64,
    },
    /// The migrations of `release` were reversed.
    Reversed { release: String },
    /// A backup taken at `taken_at_ms` was restored: the migrations run after it are
    /// gone from the database.
    Restored { taken_at_ms: u64 },
    /// How `release` fared ([`OUTCOME_OK`] and the like).
    Outcome { release: String, outcome: String },
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
            // A release's outcome is followed by its job's end, too.
            Change::Progress { .. } | Change::Current { .. } | Change::Outcome { .. } => {
                atomic::Durability::Ordered
            }
            Change::Job(_)
            | Change::Release { .. }
            | Change::Backup { .. }
            | Change::Migrated { .. }
            | Change::Reversed { .. }
            | Change::Restored { .. } => atomic::Durability::Durable,
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
            Change::Backup(record) => {
                if record.reason == "deploy" && !record.release.is_empty() {
                    let (release, file) = (record.release.clone(), record.file.clone());
                    match journal.releases.iter_mut().find(|r| r.id == release) {
                        Some(r) => r.backup_file = Some(file),
                        None => journal.releases.push(ReleaseRecord {
                            id: release,
                            backup_file: Some(file),
                            ..Default::default()
                        }),
                    }
                }
                journal.backups.retain(|b| b.id != record.id);
                journal.backups.push(record);
                let excess = journal.backups.len().saturating_sub(KEEP_BACKUP_RECORDS);
                journal.backups.drain(..excess);
            }
            Change::Migrated {
                release,
                backup,
                at_ms,
            } => {
                if let Some(r) = journal.releases.iter_mut().find(|r| r.id == release) {
                    r.migrations = Migrations::Applied { backup, at_ms };
                }
            }
            Change::Reversed { release } => {
                if let Some(r) = journal.releases.iter_mut().find(|r| r.id == release) {
                    r.migrations = Migrations::Reversed { at_ms: now_ms() };
                }
            }
            Change::Restored { taken_at_ms } => {
                for r in &mut journal.releases {
                    if let Migrations::Applied { at_ms, .. } = r.migrations
                        && at_ms > taken_at_ms
                    {
                        r.migrations = Migrations::Reversed { at_ms: now_ms() };
                    }
                }
            }
            Change::Outcome { release, outcome } => {
                if let Some(r) = journal.releases.iter_mut().find(|r| r.id == release) {
                    r.outcome = outcome;
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
        JobKind::Backup,
        JobKind::Restore,
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
    fn migrations_ahead_of_the_serving_release_and_the_default_backup() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = JournalFile::open(dir.path(), "web");
        let ids = ["r1", "r2", "r3"];
        let on_disk: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        for (i, id) in ids.iter().enumerate() {
            j.apply(Change::Release {
                record: ReleaseRecord {
                    id: id.to_string(),
                    deployed_at_ms: 1000 * (i as u64 + 1),
                    migrations: Migrations::None,
                    ..Default::default()
                },
                on_disk: on_disk.clone(),
            })
            .unwrap();
        }
        let backup = |id: &str, release: &str, before: &str, at: u64| {
            Change::Backup(BackupRecord {
                id: id.into(),
                file: format!("/b/{id}.backup"),
                size: 10,
                taken_at_ms: at,
                release: release.into(),
                reason: if before.is_empty() {
                    "manual"
                } else {
                    "deploy"
                }
                .into(),
                before: before.into(),
                job_id: "j".into(),
            })
        };
        j.apply(backup("r1.before-r2", "r1", "r2", 1500)).unwrap();
        j.apply(backup("r2.before-r3", "r2", "r3", 2500)).unwrap();
        j.apply(backup("r2.manual-1", "r2", "", 2600)).unwrap();
        assert_eq!(
            j.get().release("r1").unwrap().backup_file.as_deref(),
            Some("/b/r1.before-r2.backup"),
            "a deploy's backup belongs to the release it was taken under"
        );
        for (id, at_ms) in [("r2", 2000), ("r3", 3000)] {
            j.apply(Change::Migrated {
                release: id.into(),
                backup: Some(format!("/b/{id}")),
                at_ms,
            })
            .unwrap();
        }
        // r3 failed and r2 serves again: r3's migrations are ahead; r2's are not.
        assert_eq!(j.get().schema_ahead("r2"), ["r3"]);
        assert_eq!(j.get().schema_ahead("r1"), ["r3", "r2"], "newest first");
        assert!(j.get().schema_ahead("r3").is_empty());
        let files: Vec<String> = ["r1.before-r2", "r2.before-r3", "r2.manual-1"]
            .iter()
            .map(|n| format!("{n}.backup"))
            .collect();
        let listed = j.get().list(&on_disk, "r2", "r1");
        assert!(
            listed
                .iter()
                .any(|r| r.id == "r3" && r.schema_ahead && r.migrations == "applied")
        );
        assert!(listed.iter().any(|r| r.id == "r2" && !r.schema_ahead));
        // The restore default: the backup taken before the release that was left.
        let default = j.get().default_backup("r2", &files).unwrap();
        assert_eq!(default.id, "r2.before-r3");
        // Without a release after the serving one: the newest backup.
        assert_eq!(
            j.get().default_backup("r3", &files).unwrap().id,
            "r2.manual-1"
        );
        // A recorded backup whose file is gone is never the default.
        assert_eq!(
            j.get().default_backup("r2", &files[2..]).unwrap().id,
            "r2.manual-1"
        );
        let listing = j.get().list_backups(
            &files.iter().map(|n| (n.clone(), 10)).collect::<Vec<_>>(),
            "r2",
        );
        assert_eq!(listing[0].id, "r2.manual-1", "newest first");
        assert!(
            listing
                .iter()
                .filter(|b| b.is_default)
                .all(|b| b.id == "r2.before-r3")
        );

        // Restoring the backup taken before r3 undoes r3's migrations, not r2's.
        j.apply(Change::Restored { taken_at_ms: 2500 }).unwrap();
        let get = |j: &JournalFile, id: &str| j.get().release(id).unwrap().migrations.clone();
        assert!(matches!(get(&j, "r3"), Migrations::Reversed { .. }));
        assert!(get(&j, "r2").applied(), "migrated before the backup");
        assert!(j.get().schema_ahead("r2").is_empty());
        j.apply(Change::Reversed {
            release: "r2".into(),
        })
        .unwrap();
        assert_eq!(get(&j, "r2").name(), "reversed");
        // A journal written before the bookkeeping reads as `unknown`.
        let old: ReleaseRecord = serde_json::from_str(r#"{"id":"r0","commit":"","ref":"","who":"","deployed_at_ms":1,"job_id":"","backup_file":null}"#).unwrap();
        assert_eq!(old.migrations, Migrations::Unknown);
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
