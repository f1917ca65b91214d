//! The end of a rollout: one row per host (result, release serving now, duration,
//! why), the verdict that sets the exit code, and its JSON.

use serde_json::{Value, json};

use crate::{
    agents::follow::JobOutcome,
    output::{
        render,
        table::{self, Cell, Tone},
    },
    rollout::state::{Record, Setup, State, Stop, first_line},
};

/// A host's line in the summary: result, tone, release serving now, duration, why.
pub(crate) fn row(record: &Record) -> (String, Tone, String, String, String) {
    let took = record
        .took_ms
        .map(render::human_duration)
        .unwrap_or_else(|| "-".into());
    let before = record.before.clone().unwrap_or_else(|| "-".into());
    let Some(outcome) = &record.outcome else {
        return ("not started".into(), Tone::Dim, before, took, String::new());
    };
    if let Some(why) = &record.skipped {
        return (
            "unreachable".into(),
            Tone::Bad,
            "-".into(),
            took,
            why.clone(),
        );
    }
    let finished = record.finished();
    if outcome.ok() {
        let release = finished.map(|f| f.release.clone()).unwrap_or_default();
        let health = record.unhealthy.clone();
        return match &record.undo {
            Some(undo) if undo.ok() => {
                let to = match undo {
                    JobOutcome::Finished(f) => f.release.clone(),
                    _ => before,
                };
                let why = health.unwrap_or_else(|| {
                    "switched, then rolled back when the rollout stopped".into()
                });
                ("rolled back".into(), Tone::Warn, to, took, why)
            }
            Some(undo) => (
                "rollback failed".into(),
                Tone::Bad,
                release,
                took,
                format!("{}: {}", undo.label().0, first_line(undo.error())),
            ),
            None => match health {
                Some(why) => ("unhealthy".into(), Tone::Bad, release, took, why),
                None => ("succeeded".into(), Tone::Good, release, took, String::new()),
            },
        };
    }
    let (label, tone) = outcome.label();
    let release = match finished {
        Some(f) if !f.previous_release.is_empty() => f.previous_release.clone(),
        Some(_) => "-".into(),
        None => before,
    };
    (
        label.to_string(),
        tone,
        release,
        took,
        first_line(outcome.error()),
    )
}

/// The summary table (text), its JSON, and the failure that sets the exit code (`None`
/// when the rollout completed with at least one host done).
pub(crate) fn summary(
    setup: &Setup<'_>,
    state: &State<'_, '_, '_>,
) -> (String, Value, Option<String>) {
    let title = setup.op.title();
    let rows: Vec<(String, Tone, String, String, String)> = state.records.iter().map(row).collect();
    let cells: Vec<Vec<Cell>> = state
        .records
        .iter()
        .zip(&rows)
        .map(|(r, (label, tone, release, took, why))| {
            vec![
                Cell::from(r.host.clone()),
                Cell::new(label.clone(), *tone),
                Cell::from(release.clone()),
                Cell::from(took.clone()),
                Cell::new(why.clone(), Tone::Dim),
            ]
        })
        .collect();
    // The WHY column only when some host has a reason to give.
    let header = ["HOST", "RESULT", "RELEASE", "DURATION", "WHY"];
    let columns = if rows.iter().any(|r| !r.4.is_empty()) {
        5
    } else {
        4
    };
    let cells: Vec<Vec<Cell>> = cells
        .into_iter()
        .map(|mut row| {
            row.truncate(columns);
            row
        })
        .collect();
    let mut text = format!(
        "\n{}",
        table::render(&header[..columns], &cells, state.view.colour())
    );
    let failures: Vec<String> = state
        .failures
        .iter()
        .map(|(what, why)| format!("{what}: {why}"))
        .collect();
    let names = |pick: &dyn Fn(&Record, &str) -> bool| -> Vec<String> {
        state
            .records
            .iter()
            .zip(&rows)
            .filter(|(r, (label, ..))| pick(r, label))
            .map(|(r, _)| r.host.clone())
            .collect()
    };
    let not_started = names(&|_, label| label == "not started");
    let rolled_back = names(&|r, _| r.undo.as_ref().is_some_and(JobOutcome::ok));
    let undo_failed = names(&|r, _| r.undo.as_ref().is_some_and(|u| !u.ok()));
    let done = names(&|_, label| label == "succeeded");
    let mut failure = match &state.stop {
        Some(Stop::OverBudget) => Some(format!(
            "{title} stopped: {} failure(s), {} tolerated ({})",
            state.failures.len(),
            state.budget,
            failures.join("; ")
        )),
        Some(Stop::MigrationFailed(host)) => Some(format!(
            "{title} stopped: {}, so no other host started ({})",
            migrator_failure(state, host),
            failures.join("; ")
        )),
        Some(Stop::Interrupted) => Some(format!("{title} interrupted")),
        Some(Stop::Detached) => Some(format!(
            "{title}: detached; the jobs still running keep running on the agents"
        )),
        None if done.is_empty() => Some(format!(
            "{title}: no host succeeded ({})",
            if failures.is_empty() {
                "nothing ran".to_string()
            } else {
                failures.join("; ")
            }
        )),
        None => None,
    };
    if let Some(why) = &mut failure {
        if !rolled_back.is_empty() {
            why.push_str(&format!(
                "; rolled back {} to their previous releases",
                rolled_back.join(", ")
            ));
        }
        if !undo_failed.is_empty() {
            why.push_str(&format!(
                "; could not roll back {} (see above)",
                undo_failed.join(", ")
            ));
        }
        if !not_started.is_empty() {
            why.push_str(&format!("; not started: {}", not_started.join(", ")));
        }
    } else if !failures.is_empty() {
        text.push_str(&format!(
            "{title} completed with {} failure(s) within the budget of {}: {}\n",
            failures.len(),
            state.budget,
            failures.join("; ")
        ));
    } else {
        if done.len() == state.records.len() && done.len() > 4 {
            text.push_str(&format!("{title} succeeded on all {} hosts\n", done.len()));
        } else {
            text.push_str(&format!("{title} succeeded on {}\n", done.join(", ")));
        }
    }
    let json = json!({
        "kind": "summary",
        "title": title,
        "ok": failure.is_none(),
        "stopped": state.stop.as_ref().map(|s| match s {
            Stop::OverBudget => "over_budget",
            Stop::MigrationFailed(_) => "migration_failed",
            Stop::Interrupted => "interrupted",
            Stop::Detached => "detached",
        }),
        "budget": {"used": state.failures.len(), "allowed": state.budget},
        "failures": state.failures.iter().map(|(what, why)| json!({"what": what, "why": why})).collect::<Vec<_>>(),
        "hosts": state.records.iter().zip(&rows).map(|(r, (label, _, release, _, why))| json!({
            "host": r.host,
            "job_id": r.job_id,
            "result": label.replace(' ', "_"),
            "release": release,
            "before": r.before,
            "duration_ms": r.took_ms,
            "rollback_job_id": r.undo_id,
            "error": why,
        })).collect::<Vec<_>>(),
        "error": failure,
    });
    (text, json, failure)
}

/// What the host that goes first (because it migrates) did: failed at a step before
/// the migrations, in them, or after them; or never ran a step.
fn migrator_failure(state: &State<'_, '_, '_>, host: &str) -> String {
    let Some(record) = state.records.iter().find(|r| r.host == host) else {
        return format!("{host}, which migrates first, did not succeed");
    };
    let migrated = |before: &str| {
        record
            .steps
            .iter()
            .take_while(|s| *s != before)
            .any(|s| s == "migrate")
    };
    match record.failed_step.as_deref() {
        Some("migrate") => format!("{host} failed running the migrations"),
        Some(step) if migrated(step) => {
            format!("{host} ran the migrations, then failed at step `{step}`")
        }
        Some(step) => {
            format!("{host}, which migrates first, failed at step `{step}` before migrating")
        }
        None => format!("{host}, which migrates first, did not succeed"),
    }
}

#[cfg(test)]
mod tests {
    use hoist_proto::v1::{JobFinished, JobResult};

    use super::*;

    fn finished(result: JobResult, release: &str, previous: &str, error: &str) -> JobOutcome {
        JobOutcome::Finished(JobFinished {
            result: result as i32,
            release: release.into(),
            previous_release: previous.into(),
            duration_ms: 1200,
            error: error.into(),
            commit: String::new(),
        })
    }

    fn record(outcome: Option<JobOutcome>) -> Record {
        Record {
            host: "web-1".into(),
            job_id: "deploy-x-web-1".into(),
            before: Some("R1".into()),
            took_ms: Some(1200),
            outcome,
            ..Default::default()
        }
    }

    #[test]
    fn summary_rows_say_what_serves_now_and_why() {
        let label = |r: &Record| {
            let (label, _, release, _, why) = row(r);
            (label, release, why)
        };
        assert_eq!(
            label(&record(None)),
            ("not started".into(), "R1".into(), String::new())
        );
        let ok = finished(JobResult::Succeeded, "R2", "R1", "");
        assert_eq!(
            label(&record(Some(ok.clone()))),
            ("succeeded".into(), "R2".into(), String::new())
        );
        let mut undone = record(Some(ok.clone()));
        undone.undo = Some(finished(JobResult::Succeeded, "R1", "R2", ""));
        assert_eq!(
            label(&undone),
            (
                "rolled back".into(),
                "R1".into(),
                "switched, then rolled back when the rollout stopped".into()
            )
        );
        undone.unhealthy = Some("check http failed during the bake: 500".into());
        assert_eq!(label(&undone).2, "check http failed during the bake: 500");
        let mut stuck = record(Some(ok.clone()));
        stuck.undo = Some(JobOutcome::Refused(
            "cannot lock web for the rollback".into(),
        ));
        assert_eq!(
            label(&stuck),
            (
                "rollback failed".into(),
                "R2".into(),
                "refused: cannot lock web for the rollback".into()
            )
        );
        let mut sick = record(Some(ok));
        sick.unhealthy = Some("check x failed during the bake".into());
        assert_eq!(label(&sick).0, "unhealthy");
        let agent_rolled_back = finished(
            JobResult::RolledBack,
            "R2",
            "R1",
            "rolled back to R1: check\nmore",
        );
        assert_eq!(
            label(&record(Some(agent_rolled_back))),
            (
                "rolled back".into(),
                "R1".into(),
                "rolled back to R1: check".into()
            )
        );
        let mut gone = record(Some(JobOutcome::Unreachable("connection refused".into())));
        gone.skipped = Some("connection refused".into());
        assert_eq!(
            label(&gone),
            (
                "unreachable".into(),
                "-".into(),
                "connection refused".into()
            )
        );
    }
}
