//! Recovery at startup, after hoistd died while a job ran.

use hoist_proto::v1::{JobFinished, JobResult, job_event::Kind};

use crate::{
    config::App,
    flows::events::{self, Registry},
    host::process,
    state::{
        beneath::Kind as EntryKind,
        journal::{self, JobRecord, Journal},
        release::Layout,
    },
};

/// Kills the processes job `id` of `app` left when its agent died (its hooks and git
/// outlive the agent outside systemd). Called first, before what they write to is
/// swept or removed.
pub fn stop_orphans(app: &str, id: &str) {
    let orphans = process::kill_orphans_of(id);
    if !orphans.is_empty() {
        tracing::warn!(app = %app, job = %id, pids = ?orphans, "killed processes the dead job left running");
    }
}

/// Ends `running`, a job the journal records as running when the agent starts (so it
/// died with the previous agent). Called by the app's owner task, which writes the
/// record returned.
///
/// A job whose event log already ends (it finished, and the agent died before the
/// journal heard of it) keeps its result. Any other is `interrupted`: the release it was
/// building is removed unless `current` points at it or the journal records it
/// (switched to before the stop), `current` is left as it is, and its event log gets a
/// final `interrupted` event, so `hoist log` and `hoist attach` tell the same.
pub fn recover(
    app: &App,
    registry: &Registry,
    running: &JobRecord,
    journal: &Journal,
    now_ms: u64,
) -> JobRecord {
    let id = &running.job_id;
    let log = events::read_log(&registry.log_path(&app.name, id)).unwrap_or_default();
    if let Some(done) = events::finished_of(&log) {
        let interrupted = done.result() == JobResult::Interrupted;
        return JobRecord {
            // (Interrupted: a recovery that was itself cut short after ending the log.)
            interrupted_at_ms: if interrupted { now_ms } else { 0 },
            result: journal::result_name(done.result()).into(),
            release: done.release.clone(),
            previous_release: done.previous_release.clone(),
            duration_ms: done.duration_ms,
            error: done.error.clone(),
            ..running.clone()
        };
    }
    let layout = Layout::new(&app.deploy_to);
    let current = layout.current();
    let current_text = current.clone().unwrap_or_else(|| "not set".into());
    let last_seen_ms = log
        .last()
        .and_then(|e| e.at.as_ref())
        .map(|t| (t.seconds.max(0) as u64) * 1000 + (t.nanos.max(0) as u64) / 1_000_000)
        .filter(|ms| *ms >= running.started_at_ms)
        .unwrap_or(running.started_at_ms);
    let mut note = format!(
        "hoistd stopped during this {} job (its last event at {})",
        running.kind,
        journal::utc_text(last_seen_ms)
    );
    let release = running.release.as_str();
    if release.is_empty() {
        note.push_str(&format!("; current is {current_text}"));
    } else if current.as_deref() == Some(release) {
        note.push_str(&format!(
            "; current points at {release} (switched before the stop): check `hoist status {}`",
            app.name
        ));
    } else if journal.release(release).is_some() {
        note.push_str(&format!(
            "; release {release} stays on disk; current is {current_text}"
        ));
    } else {
        // Beneath deploy_to, never through a link the release planted.
        if let Ok(releases) = layout.releases_dir() {
            let _ = releases.remove(release);
            let _ = releases.remove(&format!("{release}.tmp"));
        }
        note.push_str(&format!(
            "; the half-built release {release} was removed; current is {current_text}"
        ));
        // A backup its migration step was taking (none recorded: it never completed).
        let partial = format!(".before-{release}.backup");
        let recorded = |path: &std::path::Path| {
            let path = path.display().to_string();
            journal
                .releases
                .iter()
                .any(|r| r.backup_file.as_deref() == Some(path.as_str()))
        };
        if let Ok(backups) = layout.backups_dir() {
            for (name, kind) in backups.entries().unwrap_or_default() {
                let name = name.to_string_lossy().into_owned();
                let path = layout.backups().join(&name);
                if name.ends_with(&partial)
                    && kind == EntryKind::File
                    && !recorded(&path)
                    && backups.remove(&name).is_ok()
                {
                    note.push_str(&format!(" (and its unfinished backup {})", path.display()));
                }
            }
        }
    }
    // A dump `hoist backup` or a `--migrate` rollback was taking (named after the time
    // it started, never recorded: it never completed).
    if let Ok(backups) = layout.backups_dir() {
        for (name, kind) in backups.entries().unwrap_or_default() {
            let name = name.to_string_lossy().into_owned();
            let started_ms = name
                .strip_suffix(".backup")
                .and_then(|stem| {
                    stem.rsplit_once(".manual-")
                        .or_else(|| stem.rsplit_once(".rollback-"))
                })
                .and_then(|(_, ms)| ms.parse::<u64>().ok());
            let stem = name.trim_end_matches(".backup");
            if started_ms.is_some_and(|ms| ms >= running.started_at_ms)
                && kind == EntryKind::File
                && !journal.backups.iter().any(|b| b.id == stem)
                && backups.remove(&name).is_ok()
            {
                note.push_str(&format!(
                    " (its unfinished backup {} was removed)",
                    layout.backups().join(&name).display()
                ));
            }
        }
    }
    if maintenance_left_on(&log) {
        note.push_str(&format!(
            "; maintenance_on ran and maintenance_off did not: app {} may still be in maintenance",
            app.name
        ));
    }
    events::end_log(
        registry,
        &app.name,
        id,
        JobFinished {
            result: JobResult::Interrupted.into(),
            release: running.release.clone(),
            duration_ms: last_seen_ms - running.started_at_ms,
            error: note.clone(),
            ..Default::default()
        },
    );
    tracing::warn!(app = %app.name, job = %id, "job interrupted by an agent restart: {note}");
    JobRecord {
        result: journal::result_name(JobResult::Interrupted).into(),
        duration_ms: last_seen_ms - running.started_at_ms,
        error: note,
        interrupted_at_ms: now_ms,
        ..running.clone()
    }
}

/// Whether the log shows `maintenance_on` starting with no `maintenance_off` after it.
fn maintenance_left_on(log: &[hoist_proto::v1::JobEvent]) -> bool {
    let mut on = false;
    for event in log {
        if let Some(Kind::StepStarted(step)) = &event.kind {
            match step.step.as_str() {
                "maintenance_on" => on = true,
                "maintenance_off" => on = false,
                _ => {}
            }
        }
    }
    on
}

/// Ends job `id` of `app`, known by its event log only (its journal record is lost):
/// its log's `started` event gives what the record needs, and [`recover`] does the
/// rest. `None` if the log has no `started` event.
pub fn recover_unrecorded(
    app: &App,
    registry: &Registry,
    id: &str,
    now_ms: u64,
) -> Option<JobRecord> {
    stop_orphans(&app.name, id);
    let log = events::read_log(&registry.log_path(&app.name, id)).ok()?;
    let first = log.first()?;
    let Some(Kind::Started(started)) = &first.kind else {
        return None;
    };
    let at = first.at.as_ref();
    let running = JobRecord {
        job_id: id.into(),
        kind: journal::kind_name(started.kind()).into(),
        r#ref: started.r#ref.clone(),
        who: started.who.clone(),
        started_at_ms: at.map_or(now_ms, |t| {
            (t.seconds.max(0) as u64) * 1000 + (t.nanos.max(0) as u64) / 1_000_000
        }),
        result: journal::result_name(JobResult::Running).into(),
        forced: started.forced,
        reason: started.reason.clone(),
        ..Default::default()
    };
    Some(recover(
        app,
        registry,
        &running,
        &Journal::default(),
        now_ms,
    ))
}

/// What the next job of the app tells its client about `job`, interrupted by a
/// restart: "previous job d-7 (deploy of main, started …) was interrupted by an agent
/// restart at …: hoistd stopped during …".
pub fn told(job: &JobRecord) -> String {
    let what = if job.r#ref.is_empty() {
        job.kind.clone()
    } else {
        format!("{} of {}", job.kind, job.r#ref)
    };
    format!(
        "previous job {} ({what}, started {}) was interrupted by an agent restart at {}: {}",
        job.job_id,
        journal::utc_text(job.started_at_ms),
        journal::utc_text(job.interrupted_at_ms.max(job.started_at_ms)),
        job.error
    )
}

#[cfg(test)]
mod tests {
    use hoist_proto::v1::{JobEvent, StepStarted};

    use super::*;

    fn started(step: &str) -> JobEvent {
        JobEvent {
            kind: Some(Kind::StepStarted(StepStarted {
                step: step.into(),
                description: String::new(),
            })),
            ..Default::default()
        }
    }

    #[test]
    fn maintenance_left_on_is_told() {
        assert!(!maintenance_left_on(&[
            started("backup"),
            started("restore")
        ]));
        assert!(maintenance_left_on(&[
            started("maintenance_on"),
            started("restore")
        ]));
        assert!(!maintenance_left_on(&[
            started("maintenance_on"),
            started("restore"),
            started("maintenance_off"),
        ]));
    }
}
