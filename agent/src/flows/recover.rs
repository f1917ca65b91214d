//! Recovery at startup, after hoistd died while a job ran.

use std::path::Path;

use hoist_proto::v1::JobResult;

use crate::{
    config::App,
    flows::events::{self, Registry},
    state::{
        journal::{self, JobRecord},
        release::Layout,
        running::Running,
    },
};

/// Called at startup by the app's owner task: a job that was running when the agent
/// died gets a final `interrupted` event; a release it was building is removed;
/// `current` is left as it is. Returns the job's journal record, for the owner to write
/// before it clears the running marker ([`Running::clear`]).
pub fn recover(state_dir: &Path, app: &App, registry: &Registry) -> Option<JobRecord> {
    let path = Running::path(state_dir, &app.name);
    let running: Running = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    let layout = Layout::new(&app.deploy_to);
    let mut note = format!("hoistd stopped during this {} job", running.kind);
    if !running.switched && !running.release.is_empty() {
        if let Ok(releases) = layout.releases_dir() {
            if layout.current().as_deref() != Some(running.release.as_str()) {
                let _ = releases.remove(&running.release);
            }
            let _ = releases.remove(&format!("{}.tmp", running.release));
        }
        note.push_str(&format!(
            "; the half-built release {} was removed; current is {}",
            running.release,
            layout.current().unwrap_or_else(|| "not set".into())
        ));
    } else if running.switched {
        note.push_str(&format!(
            "; current points at {} (switched before the stop): check `hoist status`",
            running.release
        ));
    }
    events::mark_interrupted(registry, &app.name, &running.job_id, &note);
    tracing::warn!(app = %app.name, job = %running.job_id, "{note}");
    Some(JobRecord {
        job_id: running.job_id.clone(),
        kind: running.kind.clone(),
        r#ref: running.r#ref.clone(),
        release: running.release.clone(),
        who: running.who.clone(),
        started_at_ms: running.started_at_ms,
        result: journal::result_name(JobResult::Interrupted).into(),
        error: note,
        ..Default::default()
    })
}
