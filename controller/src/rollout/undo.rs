//! Undoing a stopped deploy: every host it switched goes back to the release it had
//! before, its lease handed over to the rollback job.

use futures_util::future::join_all;
use serde_json::json;

use crate::{
    agents::{follow::JobOutcome, ids},
    rollout::{
        lease::Leases,
        operation::RollbackOptions,
        paint_bad, phases,
        state::{Setup, State, Stop},
    },
};

/// Rolls back every host this deploy switched to the release it had before, at once
/// (bounded); returns the hosts rolled back.
pub(crate) async fn run(
    setup: &Setup<'_>,
    state: &mut State<'_, '_, '_>,
    leases: &Leases,
) -> Vec<String> {
    let switched: Vec<usize> = (0..state.records.len())
        .filter(|&i| state.records[i].switched())
        .collect();
    if switched.is_empty() {
        return Vec::new();
    }
    let names: Vec<String> = switched
        .iter()
        .map(|&i| state.records[i].host.clone())
        .collect();
    let why = match &state.stop {
        Some(Stop::MigrationFailed(host)) => format!("{host} failed to migrate"),
        _ => "over the failure budget".to_string(),
    };
    state.view.say(
        &paint_bad(
            &format!(
                "-- rolling back {} (switched by this deploy): {why}",
                names.join(", ")
            ),
            state.view.colour(),
        ),
        Some(json!({"kind": "rollback_started", "hosts": names, "why": why})),
    );
    let base = match ids::new_job_id("rollback") {
        Ok(base) => base,
        Err(err) => {
            for &i in &switched {
                state.records[i].undo = Some(JobOutcome::Refused(err.to_string()));
            }
            return Vec::new();
        }
    };
    let reason = format!("{}: {why}", setup.op.title());
    let mut prepared = Vec::new();
    for &i in &switched {
        let record = &mut state.records[i];
        let id = ids::host_job_id(&base, &record.host);
        record.undo_id = Some(id.clone());
        let to = record
            .before
            .clone()
            .or_else(|| record.finished().map(|f| f.previous_release.clone()))
            .filter(|r| !r.is_empty());
        prepared.push((i, id, to));
    }
    let handovers = prepared.iter().map(|(i, id, to)| {
        let host = state.records[*i].host.clone();
        async move {
            let to = to.clone().ok_or_else(|| {
                "no earlier release to return to (this was the app's first deploy there)"
                    .to_string()
            })?;
            leases
                .hand_over(&host, id)
                .await
                .map(|()| to)
                .map_err(|e| e.to_string())
        }
    });
    let handed = join_all(handovers).await;
    let mut jobs = Vec::new();
    for ((i, id, _), handed) in prepared.into_iter().zip(handed) {
        match handed {
            Ok(to) => jobs.push((
                i,
                RollbackOptions::undo(setup.op.app(), to, reason.clone())
                    .request(&state.records[i].host, id),
            )),
            Err(why) => state.on_outcome(i, JobOutcome::Refused(why), true),
        }
    }
    phases::run_jobs(setup, state, jobs, true).await;
    if let Some(m) = state.migrator.filter(|m| switched.contains(m)) {
        let host = state.records[m].host.clone();
        state.view.print(&format!(
            "  ! the migrations {host} ran are not reversed; `hoist rollback {} --migrate \
             --hosts {host}` reverses them if the old release needs the old schema",
            setup.op.app()
        ));
    }
    switched
        .into_iter()
        .filter(|&i| state.records[i].undo.as_ref().is_some_and(JobOutcome::ok))
        .map(|i| state.records[i].host.clone())
        .collect()
}
