//! The running-job marker of earlier agents, `state_dir/apps/APP/running.json`. The
//! journal records running jobs now (a `running` record written before the job does
//! any work); a marker an older agent left is read once at start-up, turned into such a
//! record, and removed.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::state::journal::JobRecord;

/// What an older agent wrote when a job started.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct LegacyRunning {
    pub job_id: String,
    #[serde(default)]
    pub release: String,
    #[serde(default)]
    pub started_at_ms: u64,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub who: String,
    #[serde(default)]
    pub r#ref: String,
}

pub fn path(state_dir: &Path, app: &str) -> PathBuf {
    state_dir.join("apps").join(app).join("running.json")
}

/// Removes the marker, returning the job it named as a `running` record.
pub fn take_legacy(state_dir: &Path, app: &str) -> Option<JobRecord> {
    let path = path(state_dir, app);
    let bytes = std::fs::read(&path).ok()?;
    let _ = std::fs::remove_file(&path);
    let old: LegacyRunning = serde_json::from_slice(&bytes).ok()?;
    Some(JobRecord {
        job_id: old.job_id,
        kind: old.kind,
        r#ref: old.r#ref,
        release: old.release,
        who: old.who,
        started_at_ms: old.started_at_ms,
        result: "running".into(),
        ..Default::default()
    })
}
