//! Watching hosts during a bake: each switched host's WatchStatus stream, until one of
//! its app's checks fails or the host stops answering.
//!
//! Only check results that started after the host's deploy finished count (the
//! agent's `last_run` against the time of the job's last event, both on the agent's
//! clock): a result from before the switch says nothing about the new release. Checks
//! run every `health_interval` on the agent, so a bake shorter than that interval may
//! see no fresh result at all.
//!
//! The bake after a phase ([`bake_phase`]) watches the hosts it switched and evaluates
//! the fleet's gates at the same time.

use std::time::Duration;

use futures_util::{StreamExt as _, future::join_all, stream::FuturesUnordered};
use hoist_proto::v1::{StatusResponse, WatchStatusRequest};
use prost_types::Timestamp;
use serde_json::json;

use crate::{
    agents::{client::Credentials, follow, session},
    fleet::Host,
    output::{
        render,
        table::{self, Tone},
    },
    rollout::{
        GATE_EVERY, WATCH_EVERY, gates, join_or_none, paint_bad, plan,
        state::{Setup, State, Stop},
    },
};

/// Attempts at (re)connecting a host's status stream before it counts as unreachable.
const CONNECT_ATTEMPTS: u32 = 3;

/// The first failing gating check in `status` for `app` whose run started at or after
/// `since`: `check NAME failed: OUTPUT`. Monitor-only checks (`gate = false` in the
/// agent's config) are never a verdict.
pub fn failing_check(
    status: &StatusResponse,
    app: &str,
    since: Option<&Timestamp>,
) -> Option<String> {
    let fresh = |run: Option<&Timestamp>| match (since, run) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(since), Some(run)) => (run.seconds, run.nanos) >= (since.seconds, since.nanos),
    };
    let app = status.apps.iter().find(|a| a.name == app)?;
    app.checks
        .iter()
        .find(|c| c.has_run && !c.ok && !c.monitor_only && fresh(c.last_run.as_ref()))
        .map(|c| {
            let output = c.output.trim();
            let output = output.lines().next().unwrap_or(output);
            if output.is_empty() {
                format!("check {} failed during the bake", c.name)
            } else {
                format!("check {} failed during the bake: {output}", c.name)
            }
        })
}

/// Watches `host` until a fresh check of `app` fails or the host cannot be reached
/// ([`CONNECT_ATTEMPTS`] times in a row); returns why. Never returns while the host
/// stays healthy: callers race it against the end of the bake.
pub async fn watch_host(
    host: &Host,
    creds: &Credentials,
    timeout: Duration,
    app: &str,
    since: Option<Timestamp>,
    interval: Duration,
) -> String {
    let mut failures = 0;
    let mut last = String::new();
    loop {
        if failures >= CONNECT_ATTEMPTS {
            return format!("unreachable during the bake: {last}");
        }
        if failures > 0 {
            tokio::time::sleep(Duration::from_millis(500 * u64::from(failures))).await;
        }
        let mut client = match follow::connect(host, creds, timeout).await {
            Ok(client) => client,
            Err(why) => {
                failures += 1;
                last = why.to_string();
                continue;
            }
        };
        let request = WatchStatusRequest {
            app: app.to_string(),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(1000),
        };
        let mut stream = match client.watch_status(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => {
                failures += 1;
                last = crate::agents::client::status_error(&status);
                continue;
            }
        };
        loop {
            match stream.next().await {
                Some(Ok(status)) => {
                    failures = 0;
                    if let Some(why) = failing_check(&status, app, since.as_ref()) {
                        return why;
                    }
                }
                Some(Err(status)) => {
                    failures += 1;
                    last = crate::agents::client::status_error(&status);
                    break;
                }
                None => {
                    failures += 1;
                    last = "the agent ended the status stream".into();
                    break;
                }
            }
        }
    }
}

// === the bake after a phase ===

/// The bake after a phase: the switched hosts' checks stay green and the gates hold
/// for `setup.bake`. Gates are evaluated at the start, every [`GATE_EVERY`] and at the
/// end (once when the bake is zero); a gate counts once per bake.
pub(crate) async fn bake_phase(setup: &Setup<'_>, state: &mut State<'_, '_, '_>, phase: &str) {
    let watched: Vec<usize> = (0..state.records.len())
        .filter(|&i| state.records[i].switched() && !state.records[i].counted)
        .collect();
    if setup.gates.is_empty() && (setup.bake.is_zero() || watched.is_empty()) {
        return;
    }
    let names: Vec<String> = watched
        .iter()
        .map(|&i| state.records[i].host.clone())
        .collect();
    let took = render::human_duration(plan::millis(setup.bake));
    let watching = match names.len() {
        0..=4 => join_or_none(&names),
        n => format!("{n} hosts"),
    };
    state.view.say(
        &format!(
            "-- bake {took} after {phase}: checks on {watching}{}",
            match setup.gates.len() {
                0 => String::new(),
                1 => ", 1 gate".into(),
                n => format!(", {n} gates"),
            }
        ),
        Some(json!({
            "kind": "bake_started",
            "phase": phase,
            "duration_ms": plan::millis(setup.bake),
            "hosts": names,
            "gates": setup.gates.len(),
        })),
    );
    for &i in &watched {
        state.view.started(i, "baking");
    }
    let failures_before = state.failures.len();
    let mut cut_short = false;
    let mut failed_gates = vec![false; setup.gates.len()];
    evaluate_gates(setup, state, &mut failed_gates, phase).await;
    if !setup.bake.is_zero() && !state.over() {
        let app = setup.op.app();
        let interval = WATCH_EVERY
            .min(setup.bake / 2)
            .max(Duration::from_millis(200));
        let mut watchers: FuturesUnordered<_> = watched
            .iter()
            .map(|&i| {
                let since = state.records[i].finished_at;
                async move {
                    let host = setup.plan.hosts[i];
                    (
                        i,
                        watch_host(host, setup.creds, setup.timeout, app, since, interval).await,
                    )
                }
            })
            .collect();
        let deadline = tokio::time::Instant::now() + setup.bake;
        let mut next_gate = tokio::time::Instant::now() + GATE_EVERY;
        loop {
            let gates_due = !setup.gates.is_empty() && next_gate < deadline;
            tokio::select! {
                biased;
                presses = state.interrupt.pressed() => {
                    if state.stop.is_none() {
                        state.stop = Some(Stop::Interrupted);
                    }
                    state.view.say(
                        &session::interrupted_bake(presses),
                        Some(json!({"kind": "interrupted", "running": []})),
                    );
                    cut_short = true;
                    break;
                }
                Some((i, why)) = watchers.next() => {
                    state.records[i].unhealthy = Some(why.clone());
                    let host = state.records[i].host.clone();
                    state.view.print(&paint_bad(&format!("==> {host}: {why}"), state.view.colour()));
                    let line = paint_bad(&format!("✗ unhealthy: {why}"), state.view.colour());
                    state.view.done(i, &line);
                    state.count(i, &why);
                    if state.over() {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(next_gate), if gates_due => {
                    evaluate_gates(setup, state, &mut failed_gates, phase).await;
                    next_gate += GATE_EVERY;
                    if state.over() {
                        break;
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    evaluate_gates(setup, state, &mut failed_gates, phase).await;
                    break;
                }
            }
        }
    }
    for &i in &watched {
        if state.records[i].unhealthy.is_none() {
            let release = state.records[i]
                .finished()
                .map(|f| f.release.clone())
                .unwrap_or_default();
            let line = table::paint(
                &format!("✓ healthy · {release}"),
                Tone::Good,
                state.view.colour(),
            );
            state.view.done(i, &line);
        }
    }
    let new_failures = state.failures.len() - failures_before;
    let ok = new_failures == 0;
    let text = if ok && cut_short {
        format!("-- bake after {phase}: cut short, healthy so far")
    } else if ok {
        table::paint(
            &format!("-- bake after {phase}: healthy"),
            Tone::Good,
            state.view.colour(),
        )
    } else {
        paint_bad(
            &format!("-- bake after {phase}: {new_failures} failure(s)"),
            state.view.colour(),
        )
    };
    state.view.say(
        &text,
        Some(json!({
            "kind": "bake_finished",
            "phase": phase,
            "ok": ok,
            "failures": new_failures,
            "cut_short": cut_short,
        })),
    );
}

/// Evaluates the gates not failed yet in this bake; counts the ones that fail.
pub(crate) async fn evaluate_gates(
    setup: &Setup<'_>,
    state: &mut State<'_, '_, '_>,
    failed: &mut [bool],
    phase: &str,
) {
    let pending: Vec<usize> = (0..setup.gates.len()).filter(|&g| !failed[g]).collect();
    let verdicts = join_all(pending.iter().map(|&g| gates::evaluate(&setup.gates[g]))).await;
    for (g, verdict) in pending.into_iter().zip(verdicts) {
        let gate = &setup.gates[g];
        let described = gates::describe(gate);
        let text = format!("gate {described}: {verdict}");
        let tone = if verdict.ok() { Tone::Good } else { Tone::Bad };
        state.view.say(
            &table::paint(&text, tone, state.view.colour()),
            Some(json!({
                "kind": "gate",
                "phase": phase,
                "name": described,
                "prometheus": crate::output::redact::userinfo(&gate.prometheus),
                "query": gate.query,
                "max": gate.max,
                "value": verdict.value(),
                "ok": verdict.ok(),
                "error": match &verdict { gates::Verdict::Error(why) => why.as_str(), _ => "" },
            })),
        );
        if !verdict.ok() {
            failed[g] = true;
            state.count_gate(&described, &verdict.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use hoist_proto::v1::{AppStatus, CheckStatus};

    use super::*;

    fn at(seconds: i64) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos: 0 })
    }

    fn status(checks: Vec<CheckStatus>) -> StatusResponse {
        StatusResponse {
            apps: vec![AppStatus {
                name: "web".into(),
                checks,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn check(name: &str, ok: bool, has_run: bool, last_run: i64) -> CheckStatus {
        CheckStatus {
            name: name.into(),
            ok,
            has_run,
            last_run: at(last_run),
            output: if ok {
                "fine".into()
            } else {
                "exit 1: BROKEN\nmore".into()
            },
            ..Default::default()
        }
    }

    #[test]
    fn only_fresh_failures_count() {
        let since = at(100);
        let healthy = status(vec![check("http", true, true, 105)]);
        assert_eq!(failing_check(&healthy, "web", since.as_ref()), None);
        let stale = status(vec![check("http", false, true, 99)]);
        assert_eq!(failing_check(&stale, "web", since.as_ref()), None);
        let not_run = status(vec![check("http", false, false, 105)]);
        assert_eq!(failing_check(&not_run, "web", since.as_ref()), None);
        let fresh = status(vec![
            check("http", true, true, 105),
            check("cmd", false, true, 100),
        ]);
        assert_eq!(
            failing_check(&fresh, "web", since.as_ref()).as_deref(),
            Some("check cmd failed during the bake: exit 1: BROKEN")
        );
        assert_eq!(failing_check(&fresh, "other", since.as_ref()), None);
        assert!(failing_check(&stale, "web", None).is_some());
        let monitored = status(vec![CheckStatus {
            monitor_only: true,
            ..check("tls expiry", false, true, 105)
        }]);
        assert_eq!(failing_check(&monitored, "web", since.as_ref()), None);
    }
}
