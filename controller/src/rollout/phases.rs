//! The phases of a rollout in order: the migrating host alone first, then each
//! phase's hosts at once (bounded), each phase followed by its bake.

use std::{
    collections::{BTreeSet, VecDeque},
    time::Instant,
};

use futures_util::{StreamExt as _, stream::FuturesUnordered};
use serde_json::json;
use tokio::sync::mpsc;

use crate::{
    agents::{
        follow::{self, JobOutcome, JobRequest, Update},
        session,
    },
    fleet::MigrateOn,
    rollout::{
        bake, join_or_none,
        state::{Setup, State, Stop},
    },
};

/// Every phase in order, each followed by its bake, until the end or a stop.
pub(crate) async fn run(setup: &Setup<'_>, state: &mut State<'_, '_, '_>) {
    let migrate_on = setup.op.migrate_on();
    // The plan's migrator, unless the hosts said the app declares no migrate step.
    let mut migrator = setup
        .plan
        .migrator(|i| state.records[i].skipped.is_none())
        .filter(|_| migrate_on == MigrateOn::First);
    for phase in &setup.plan.phases {
        if state.stop.is_some() {
            break;
        }
        let members: Vec<usize> = phase
            .hosts
            .iter()
            .copied()
            .filter(|&i| state.records[i].skipped.is_none())
            .collect();
        if members.is_empty() {
            continue;
        }
        let names: Vec<&str> = members
            .iter()
            .map(|&i| state.records[i].host.as_str())
            .collect();
        state.view.say(
            &format!("-- {}: {}", phase.name, names.join(", ")),
            Some(json!({"kind": "batch_started", "phase": phase.name, "hosts": names})),
        );
        let mut rest = members.clone();
        if let Some(m) = migrator.filter(|m| members.contains(m)) {
            migrator = None;
            state.migrator = Some(m);
            rest.retain(|&i| i != m);
            let first = setup.op.request(
                &state.records[m].host,
                state.records[m].job_id.clone(),
                true,
            );
            run_jobs(setup, state, vec![(m, first)], false).await;
            if !state.records[m].switched() {
                if !matches!(state.stop, Some(Stop::Detached)) {
                    state.stop = Some(Stop::MigrationFailed(state.records[m].host.clone()));
                }
                break;
            }
        }
        if state.stop.is_none() {
            let jobs = rest
                .iter()
                .map(|&i| {
                    let id = state.records[i].job_id.clone();
                    let host = &state.records[i].host;
                    (i, setup.op.request(host, id, migrate_on == MigrateOn::All))
                })
                .collect();
            run_jobs(setup, state, jobs, false).await;
        }
        if state.stop.is_some() {
            break;
        }
        bake::bake_phase(setup, state, &phase.name).await;
    }
}

/// Runs `jobs` at once (at most the shape's `concurrency` at a time) and follows them to their
/// ends. Forward jobs stop starting when the rollout stops; `undo` jobs (rollbacks of
/// switched hosts) always start.
pub(crate) async fn run_jobs(
    setup: &Setup<'_>,
    state: &mut State<'_, '_, '_>,
    jobs: Vec<(usize, JobRequest)>,
    undo: bool,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, Update)>();
    let mut queue: VecDeque<(usize, JobRequest)> = jobs.into();
    let mut running = FuturesUnordered::new();
    let mut in_flight = BTreeSet::new();
    loop {
        while running.len() < setup.plan.shape.concurrency.max(1) && (undo || state.stop.is_none())
        {
            let Some((i, request)) = queue.pop_front() else {
                break;
            };
            state.records[i].started = Some(Instant::now());
            state
                .view
                .started(i, if undo { "rolling back" } else { "connecting" });
            in_flight.insert(i);
            running.push(run_job(setup, i, request, tx.clone()));
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            Some((i, update)) = rx.recv() => state.on_update(i, update, undo),
            Some((i, outcome)) = running.next() => {
                while let Ok((j, update)) = rx.try_recv() {
                    state.on_update(j, update, undo);
                }
                in_flight.remove(&i);
                state.on_outcome(i, outcome, undo);
            }
            presses = state.interrupt.pressed() => {
                while let Ok((j, update)) = rx.try_recv() {
                    state.on_update(j, update, undo);
                }
                let names: Vec<String> = in_flight.iter().map(|&i| state.records[i].host.clone()).collect();
                if presses >= 2 {
                    state.view.say(
                        &session::detached_from(&names),
                        Some(json!({"kind": "detached", "hosts": names})),
                    );
                    for &i in &in_flight {
                        state.on_outcome(i, JobOutcome::Detached, undo);
                    }
                    state.stop = Some(Stop::Detached);
                    return;
                }
                if state.stop.is_none() {
                    state.stop = Some(Stop::Interrupted);
                }
                state.view.say(
                    &session::interrupted_rollout(&join_or_none(&names)),
                    Some(json!({"kind": "interrupted", "running": names})),
                );
            }
        }
    }
}

async fn run_job(
    setup: &Setup<'_>,
    i: usize,
    request: JobRequest,
    tx: mpsc::UnboundedSender<(usize, Update)>,
) -> (usize, JobOutcome) {
    let send = move |update| {
        let _ = tx.send((i, update));
    };
    let host = setup.plan.hosts[i];
    let outcome = follow::run_job(host, setup.creds, setup.timeout, request, || true, &send).await;
    (i, outcome)
}
