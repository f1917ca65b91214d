//! One release identity for the whole fleet. Before a deploy changes anything, every
//! target host is asked what the ref is there (`PlanDeploy`: fetched and resolved to a
//! commit); they must all agree, and the rollout chooses one release id,
//! `YYYYMMDDTHHMMSSZ-<commit prefix>[-N]` (the time taken once, here), that no host
//! has yet. Before a rollback, every target host resolves `--to` (a release id, a ref
//! that was deployed, a commit or its prefix; or the previous release) against its own
//! releases (`PlanRollback`), so each is sent the release id it has. A host that cannot
//! (a ref that does not resolve, a release it does not have, an ambiguous prefix)
//! refuses the whole operation before any host changes. The dry run asks the same
//! questions ([`crate::rollout::dry_run`]).

use std::{collections::BTreeSet, time::Duration};

use hoist_proto::v1::{
    PlanDeployRequest, PlanDeployResponse, PlanRollbackRequest, PlanRollbackResponse,
};

use crate::{
    agents::{
        client::Credentials,
        fanout::{self, Answer, CallError},
    },
    fleet::{Host, MigrateOn},
    rollout::operation::{DeployOptions, Operation, RollbackOptions},
};

/// The longest a host may take to fetch the ref for `PlanDeploy` (a first clone of a
/// big repository), whatever the rollout's connect timeout.
pub const PLAN_TIMEOUT: Duration = Duration::from_secs(600);

/// What one host said.
#[derive(Clone, Debug)]
pub enum HostPlan {
    Deploy(PlanDeployResponse),
    Rollback(PlanRollbackResponse),
}

/// Asks every host in `hosts` where `op` would take it; `migrates(host)` says whether
/// that host would run the migrations (for the steps it lists).
pub async fn ask(
    hosts: &[&Host],
    creds: &Credentials,
    timeout: Duration,
    concurrency: usize,
    op: &Operation,
    migrates: impl Fn(&str) -> bool,
) -> Vec<Answer<HostPlan>> {
    let timeout = timeout.max(PLAN_TIMEOUT);
    let mut answers = Vec::new();
    // One call per host, each with its own `migrate`: hosts are asked in groups by it.
    for migrate in [false, true] {
        let group: Vec<&Host> = hosts
            .iter()
            .copied()
            .filter(|h| migrates(&h.name) == migrate)
            .collect();
        if group.is_empty() {
            continue;
        }
        let got = fanout::ask_all_bounded(&group, creds, timeout, concurrency, |mut client| {
            let op = op.clone();
            async move {
                match &op {
                    Operation::Deploy(o) => client
                        .plan_deploy(PlanDeployRequest {
                            app: o.app.clone(),
                            r#ref: o.git_ref.clone(),
                            migrate,
                        })
                        .await
                        .map(|r| HostPlan::Deploy(r.into_inner())),
                    Operation::Rollback(o) => client
                        .plan_rollback(PlanRollbackRequest {
                            app: o.app.clone(),
                            to: o.to_release.clone().unwrap_or_default(),
                            migrate: o.migrate,
                            restore_db: o.restore_db,
                        })
                        .await
                        .map(|r| HostPlan::Rollback(r.into_inner())),
                }
            }
        })
        .await;
        answers.extend(got);
    }
    answers.sort_by_key(|a| hosts.iter().position(|h| h.name == a.host));
    answers
}

/// What a host said instead of a plan: the agent's own message, or why it gave none.
pub fn why(err: &CallError) -> String {
    match err {
        CallError::Status(status) => crate::output::escape::one_line(status.message()).into_owned(),
        CallError::Unreachable(_) => err.to_string(),
    }
}

/// `(host, why)` pairs as `web-1, web-2: why; web-3: other`: hosts that say the same
/// are named together.
fn grouped(failed: &[(String, String)]) -> String {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for (host, why) in failed {
        match groups.iter_mut().find(|(w, _)| w == why) {
            Some((_, hosts)) => hosts.push(host),
            None => groups.push((why, vec![host])),
        }
    }
    groups
        .iter()
        .map(|(why, hosts)| format!("{}: {why}", hosts.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// An agent older than `PlanDeploy`/`PlanRollback`.
pub fn predates(err: &CallError) -> bool {
    matches!(err, CallError::Status(s) if s.code() == tonic::Code::Unimplemented)
}

/// The release id for `commit`, made at `unix_seconds`, that none of `taken` is:
/// `YYYYMMDDTHHMMSSZ-<7 hex>`, then `-2`, `-3`… (as an agent names its own).
pub fn release_id(unix_seconds: i64, commit: &str, taken: &BTreeSet<String>) -> String {
    let t = jiff::Timestamp::from_second(unix_seconds).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let base = format!(
        "{}-{}",
        t.strftime("%Y%m%dT%H%M%SZ"),
        &commit[..commit.len().min(7)]
    );
    let mut id = base.clone();
    let mut n = 2;
    while taken.contains(&id) {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

/// The one commit every answering host resolved the ref to, and the release ids they
/// already have; `Err` names the hosts that could not resolve it or disagree. `Ok(None)`
/// when some agent predates `PlanDeploy` (each host then picks its own id).
pub fn one_commit(
    git_ref: &str,
    answers: &[Answer<HostPlan>],
) -> Result<Option<(String, BTreeSet<String>)>, String> {
    let mut failed: Vec<(String, String)> = Vec::new();
    let mut commits: Vec<(String, String)> = Vec::new();
    let mut taken = BTreeSet::new();
    let mut old = false;
    for answer in answers {
        match &answer.result {
            Ok(HostPlan::Deploy(plan)) => {
                commits.push((answer.host.clone(), plan.commit.clone()));
                taken.extend(plan.releases.iter().cloned());
            }
            Ok(HostPlan::Rollback(_)) => {}
            Err(err) if predates(err) => old = true,
            // The app is not configured there: that host's deploy fails on its own
            // (and counts against the failure budget).
            Err(err) if err.is_not_found() => {}
            Err(err) => failed.push((answer.host.clone(), why(err))),
        }
    }
    if !failed.is_empty() {
        return Err(format!(
            "{git_ref} cannot be deployed on every host ({})",
            grouped(&failed)
        ));
    }
    let distinct: BTreeSet<&str> = commits.iter().map(|(_, c)| c.as_str()).collect();
    if distinct.len() > 1 {
        let each: Vec<String> = commits
            .iter()
            .map(|(h, c)| format!("{h}: {}", &c[..c.len().min(12)]))
            .collect();
        return Err(format!(
            "the hosts resolve {git_ref} to different commits ({}); one release must be the same \
             commit everywhere: deploy a commit sha, or fix the hosts' repo URLs",
            each.join(", ")
        ));
    }
    match distinct.into_iter().next() {
        Some(commit) if !old => Ok(Some((commit.to_string(), taken))),
        _ => Ok(None),
    }
}

/// Every host answered, and none declares a migrate step.
pub fn declares_no_migrate(answers: &[Answer<HostPlan>]) -> bool {
    !answers.is_empty()
        && answers
            .iter()
            .all(|a| matches!(&a.result, Ok(HostPlan::Deploy(p)) if !p.declares_migrate))
}

/// Where each host goes in a rollback: `(host, release id, commit)`; `Err` names the
/// hosts that cannot roll back as asked. Hosts whose agent predates `PlanRollback` are
/// left out (they are sent `--to` as given).
pub fn targets(
    options: &RollbackOptions,
    answers: &[Answer<HostPlan>],
) -> Result<Vec<(String, PlanRollbackResponse)>, String> {
    let mut failed: Vec<(String, String)> = Vec::new();
    let mut found = Vec::new();
    for answer in answers {
        match &answer.result {
            Ok(HostPlan::Rollback(plan)) => found.push((answer.host.clone(), plan.clone())),
            Ok(HostPlan::Deploy(_)) => {}
            Err(err) if predates(err) => {}
            // The app is not configured there: that host's job fails on its own.
            Err(err) if err.is_not_found() => {}
            Err(err) => failed.push((answer.host.clone(), why(err))),
        }
    }
    if failed.is_empty() {
        return Ok(found);
    }
    let what = match &options.to_release {
        Some(to) => format!("--to {to}"),
        None => "the previous release".to_string(),
    };
    let hosts: Vec<&str> = failed.iter().map(|(h, _)| h.as_str()).collect();
    Err(format!(
        "{what} cannot be rolled back to on {} ({})",
        hosts.join(", "),
        grouped(&failed)
    ))
}

/// `op` with what the hosts said put in: the deploy's one release id, the rollback's
/// release per host. `Err` says why the operation is refused.
pub async fn resolve(
    hosts: &[&Host],
    creds: &Credentials,
    timeout: Duration,
    concurrency: usize,
    op: &Operation,
) -> Result<Operation, String> {
    // Reversing migrations where they are (`--of`, or releases left ahead by an
    // automatic rollback): every host stays on its current release.
    if let Operation::Rollback(o) = op
        && (o.of_release.is_some() || o.ahead_only)
    {
        return Ok(op.clone());
    }
    let answers = ask(hosts, creds, timeout, concurrency, op, |_| false).await;
    Ok(match op {
        Operation::Deploy(o) => {
            let release_id = one_commit(&o.git_ref, &answers)?.map(|(commit, taken)| {
                release_id(jiff::Timestamp::now().as_second(), &commit, &taken)
            });
            // No host goes first to migrate when the app declares no migrate step.
            let migrate_on = if declares_no_migrate(&answers) {
                MigrateOn::None
            } else {
                o.migrate_on
            };
            Operation::Deploy(DeployOptions {
                release_id,
                migrate_on,
                ..o.clone()
            })
        }
        Operation::Rollback(o) => {
            let found = targets(o, &answers)?;
            Operation::Rollback(RollbackOptions {
                targets: found
                    .into_iter()
                    .map(|(host, plan)| (host, plan.release))
                    .collect(),
                ..o.clone()
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::render::tests::T0;

    fn answer(host: &str, result: Result<HostPlan, CallError>) -> Answer<HostPlan> {
        Answer {
            host: host.into(),
            address: "127.0.0.1:1".into(),
            elapsed: Duration::ZERO,
            result,
        }
    }

    fn deploy(commit: &str, releases: &[&str]) -> Result<HostPlan, CallError> {
        Ok(HostPlan::Deploy(PlanDeployResponse {
            commit: commit.into(),
            releases: releases.iter().map(|r| r.to_string()).collect(),
            ..Default::default()
        }))
    }

    #[test]
    fn one_id_for_the_fleet_that_no_host_has() {
        let sha = "abc1234def5678abc1234def5678abc1234def56";
        let answers = vec![
            answer("web-1", deploy(sha, &["20261122T101500Z-abc1234"])),
            answer("web-2", deploy(sha, &["20261122T101500Z-abc1234-2"])),
        ];
        let (commit, taken) = one_commit("v1", &answers).unwrap().unwrap();
        assert_eq!(commit, sha);
        assert_eq!(
            release_id(T0, &commit, &taken),
            "20261122T101500Z-abc1234-3"
        );
        assert_eq!(
            release_id(T0, &commit, &BTreeSet::new()),
            "20261122T101500Z-abc1234"
        );

        let split = vec![
            answer("web-1", deploy(sha, &[])),
            answer("web-2", deploy("0f0f0f0f0f0f0f0f", &[])),
        ];
        let err = one_commit("main", &split).unwrap_err();
        assert!(err.contains("different commits"), "{err}");
        assert!(err.contains("web-2: 0f0f0f0f0f0f"), "{err}");

        let bad = vec![
            answer("web-1", deploy(sha, &[])),
            answer(
                "web-2",
                Err(CallError::Status(tonic::Status::failed_precondition(
                    "fetch: ref \"nosuchref\" is not a branch, tag or commit",
                ))),
            ),
        ];
        let err = one_commit("nosuchref", &bad).unwrap_err();
        assert!(err.contains("web-2: fetch: ref"), "{err}");

        let old = vec![
            answer("web-1", deploy(sha, &[])),
            answer(
                "web-2",
                Err(CallError::Status(tonic::Status::unimplemented(
                    "PlanDeploy",
                ))),
            ),
        ];
        assert!(one_commit("v1", &old).unwrap().is_none());
    }

    #[test]
    fn a_rollback_target_missing_on_a_host_names_it() {
        let options = RollbackOptions {
            app: "web".into(),
            to_release: Some("v2".into()),
            ..Default::default()
        };
        let answers = vec![
            answer(
                "web-1",
                Ok(HostPlan::Rollback(PlanRollbackResponse {
                    release: "20261122T101500Z-abc1234".into(),
                    ..Default::default()
                })),
            ),
            answer(
                "web-3",
                Err(CallError::Status(tonic::Status::failed_precondition(
                    "no release on this host matches \"v2\"",
                ))),
            ),
        ];
        let err = targets(&options, &answers).unwrap_err();
        assert!(
            err.starts_with("--to v2 cannot be rolled back to on web-3 ("),
            "{err}"
        );
    }
}
