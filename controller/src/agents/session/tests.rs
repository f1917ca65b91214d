use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use hoist_proto::v1::JobResult;
use tokio::sync::Semaphore;
use tonic::Code;

use super::*;
use crate::{
    commands::check,
    testing::{Pki, Script, events, fake, finished, job, pki, serve},
};

fn run(host: &str, outcome: JobOutcome) -> HostRun {
    HostRun {
        host: host.into(),
        job_id: format!("deploy-x-{host}"),
        outcome,
    }
}

#[test]
fn reports_name_the_host_and_why() {
    let report = RunReport {
        title: "deploy of carbex main".into(),
        runs: vec![
            run(
                "web-1",
                JobOutcome::Finished(finished(JobResult::Succeeded, "")),
            ),
            run(
                "web-2",
                JobOutcome::Finished(finished(
                    JobResult::RolledBack,
                    "check http failed: 500\nbody: down",
                )),
            ),
            run("web-3", JobOutcome::NotStarted),
        ],
    };
    assert!(!report.ok());
    assert_eq!(
        report.failure().unwrap(),
        "deploy of carbex main stopped at web-2: rolled back: check http failed: 500; not started: web-3"
    );
    assert_eq!(check(&report).unwrap_err().code, crate::EXIT_FAILED);
    assert_eq!(
        report.summary_text(false),
        "HOST   RESULT       RELEASE                   DURATION  JOB\n\
         web-1  succeeded    20261122T101500Z-abc1234  12.3s     deploy-x-web-1\n\
         web-2  rolled back  -                         12.3s     deploy-x-web-2\n\
         web-3  not started  -                         -         -\n"
    );
    let json = report.summary_json();
    assert_eq!(json["kind"], "summary");
    assert_eq!(json["ok"], false);
    assert_eq!(json["hosts"][1]["result"], "rolled_back");
    assert_eq!(json["hosts"][2]["result"], "not_started");
    assert_eq!(json["hosts"][2]["release"], Value::Null);

    let lost = RunReport {
        title: "restart of carbex".into(),
        runs: vec![run("web-1", JobOutcome::Lost("Unavailable: reset".into()))],
    };
    assert_eq!(
        lost.failure().unwrap(),
        "restart of carbex failed on web-1: lost: Unavailable: reset; the job may still be \
         running: `hoist attach deploy-x-web-1 --host web-1` follows it"
    );
    let detached = RunReport {
        title: "deploy of slow main".into(),
        runs: vec![run("web-1", JobOutcome::Detached)],
    };
    assert_eq!(
        detached.failure().unwrap(),
        "deploy of slow main: detached from web-1: the job keeps running on the agent; \
         `hoist attach deploy-x-web-1 --host web-1` re-attaches"
    );
    let ok = RunReport {
        title: "x".into(),
        runs: vec![run(
            "web-1",
            JobOutcome::Finished(finished(JobResult::Succeeded, "")),
        )],
    };
    assert!(ok.ok() && ok.failure().is_none() && check(&ok).is_ok());
    let interrupted = RunReport {
        title: "deploy of carbex main".into(),
        runs: vec![
            run(
                "web-1",
                JobOutcome::Finished(finished(JobResult::Succeeded, "")),
            ),
            run("web-2", JobOutcome::NotStarted),
        ],
    };
    assert_eq!(
        interrupted.failure().unwrap(),
        "deploy of carbex main interrupted; not started: web-2"
    );
}

fn deploy_options() -> crate::rollout::operation::DeployOptions {
    crate::rollout::operation::DeployOptions {
        app: "carbex".into(),
        git_ref: "main".into(),
        migrate_on: crate::fleet::MigrateOn::First,
        allow_missing_env: false,
        force: false,
        reason: None,
        release_id: None,
    }
}

/// Runs a deploy of carbex main to `hosts`, with its text output.
async fn deploy_to(pki: &Pki, hosts: &[&Host], interrupt: &mut Interrupt) -> (RunReport, String) {
    let mut buf = Vec::new();
    let mut out = Output::new(&mut buf, false, false);
    let mut session = Session {
        creds: &pki.creds,
        timeout: Duration::from_secs(5),
        out: &mut out,
        interrupt,
        detach_after: 2,
    };
    let options = deploy_options();
    let report = session
        .run_in_order(
            "deploy of carbex main",
            options.requests(hosts, "deploy-20261122T101500Z-a1b2c3", |i| i == 0),
        )
        .await;
    (report, String::from_utf8(buf).unwrap())
}

#[tokio::test]
async fn stops_at_the_first_host_that_fails() {
    let pki = pki();
    let calls = Arc::default();
    let web1 = serve(
        pki.dir.path(),
        fake("web-1", events(JobResult::Succeeded), &calls),
    )
    .await;
    let web2 = serve(
        pki.dir.path(),
        fake("web-2", events(JobResult::RolledBack), &calls),
    )
    .await;
    let web3 = serve(
        pki.dir.path(),
        fake("web-3", events(JobResult::Succeeded), &calls),
    )
    .await;
    let (report, text) = deploy_to(&pki, &[&web1, &web2, &web3], &mut Interrupt::manual().1).await;

    let outcomes: Vec<&str> = report.runs.iter().map(|r| r.outcome.key()).collect();
    assert_eq!(outcomes, ["succeeded", "rolled_back", "not_started"]);
    let calls = calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert!(
        calls[0].starts_with("web-1 deploy deploy-") && calls[0].ends_with("-web-1 migrate=true")
    );
    assert!(
        calls[1].starts_with("web-2 deploy deploy-") && calls[1].ends_with("-web-2 migrate=false")
    );
    assert!(
        text.starts_with("==> web-1: deploy carbex main (abc1234) as op\n  job deploy-"),
        "{text}"
    );
    assert!(
        text.contains("(follow it from elsewhere: hoist attach deploy-"),
        "{text}"
    );
    assert!(text.contains("  ▶ build  make\n  ✓ build  0.1s\n==> web-1: succeeded: release 20261122T101500Z-abc1234"), "{text}");
    assert!(text.contains("\n\n==> web-2: deploy carbex main"), "{text}");
    assert!(
        text.contains("==> web-2: rolled back after 12.3s"),
        "{text}"
    );
    assert!(!text.contains("==> web-3"), "{text}");
    let why = report.failure().unwrap();
    assert!(
        why.starts_with("deploy of carbex main stopped at web-2: rolled back: check http failed")
            && why.ends_with("; not started: web-3"),
        "{why}"
    );
}

#[tokio::test]
async fn refused_and_unreachable_hosts_stop_the_deploy() {
    let pki = pki();
    let calls = Arc::default();
    let held = Script::Refuse(
        Code::FailedPrecondition,
        "carbex is locked by dana since 2026-11-22 10:00:00 UTC",
    );
    let web1 = serve(pki.dir.path(), fake("web-1", held, &calls)).await;
    let (report, text) = deploy_to(&pki, &[&web1], &mut Interrupt::manual().1).await;
    assert_eq!(
        report.runs[0].outcome,
        JobOutcome::Refused(
            "FailedPrecondition: carbex is locked by dana since 2026-11-22 10:00:00 UTC".into()
        )
    );
    assert_eq!(
        text,
        "==> web-1: refused: FailedPrecondition: carbex is locked by dana since 2026-11-22 10:00:00 UTC\n"
    );

    // A port nobody listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = closed.local_addr().unwrap().to_string();
    drop(closed);
    let gone = Host {
        name: "web-9".into(),
        address,
        groups: vec![],
        metrics: None,
    };
    let (report, text) = deploy_to(&pki, &[&gone, &web1], &mut Interrupt::manual().1).await;
    assert!(
        matches!(report.runs[0].outcome, JobOutcome::Unreachable(_)),
        "{report:?}"
    );
    assert_eq!(report.runs[1].outcome, JobOutcome::NotStarted);
    assert!(text.starts_with("==> web-9: unreachable: "), "{text}");
    assert!(
        report
            .failure()
            .unwrap()
            .contains("stopped at web-9: unreachable")
    );
}

#[tokio::test]
async fn reattaches_when_the_stream_breaks() {
    let pki = pki();
    let calls = Arc::default();
    let whole = job("x", JobResult::Succeeded);
    let mut broken = fake(
        "web-1",
        Script::Events {
            first: whole[..2].to_vec(),
            gate: None,
            rest: vec![],
        },
        &calls,
    );
    broken.attach = whole;
    let web1 = serve(pki.dir.path(), broken).await;
    let (report, text) = deploy_to(&pki, &[&web1], &mut Interrupt::manual().1).await;
    assert!(report.ok(), "{report:?}\n{text}");
    assert_eq!(text.matches("▶ build").count(), 1, "{text}");
    assert_eq!(text.matches("==> web-1: deploy").count(), 1, "{text}");
    assert!(
        text.contains("  ! connection lost (the agent closed the stream before the job finished); re-attaching to deploy-"),
        "{text}"
    );
    let calls = calls.lock().unwrap().clone();
    assert!(calls[1].starts_with("web-1 attach deploy-"), "{calls:?}");

    // The agent forgot the job and the stream broke before any event: nothing started.
    let calls = Arc::default();
    let silent = fake(
        "web-2",
        Script::Events {
            first: vec![],
            gate: None,
            rest: vec![],
        },
        &calls,
    );
    let web2 = serve(pki.dir.path(), silent).await;
    let (report, _) = deploy_to(&pki, &[&web2], &mut Interrupt::manual().1).await;
    let JobOutcome::Refused(why) = &report.runs[0].outcome else {
        panic!("{report:?}")
    };
    assert!(why.contains("did not start"), "{why}");
}

#[tokio::test]
async fn reattaching_stops_at_its_limit_and_never_retries_a_permanent_error() {
    let pki = pki();
    let whole = job("x", JobResult::Succeeded);

    // Every attach replays the same events and breaks again: three tries, then lost.
    let calls = Arc::default();
    let mut looping = fake(
        "web-1",
        Script::Events {
            first: whole[..2].to_vec(),
            gate: None,
            rest: vec![],
        },
        &calls,
    );
    looping.attach = whole[..2].to_vec();
    let web1 = serve(pki.dir.path(), looping).await;
    let (report, text) = deploy_to(&pki, &[&web1], &mut Interrupt::manual().1).await;
    let JobOutcome::Lost(why) = &report.runs[0].outcome else {
        panic!("{report:?}\n{text}")
    };
    assert!(why.contains("gave up after 3 re-attach attempts"), "{why}");
    let attaches = calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.contains(" attach "))
        .count();
    assert_eq!(attaches, 3, "{text}");
    assert!(text.contains("(3/3)") && !text.contains("(4/3)"), "{text}");

    // A message too large (or any error another try would meet again): not retried.
    let calls = Arc::default();
    let mut too_big = fake(
        "web-2",
        Script::Events {
            first: whole[..2].to_vec(),
            gate: None,
            rest: vec![],
        },
        &calls,
    );
    too_big.attach = whole.clone();
    too_big.deploy_error = Some((
        Code::OutOfRange,
        "Error, decoded message length too large: found 50000073 bytes",
    ));
    let web2 = serve(pki.dir.path(), too_big).await;
    let (report, text) = deploy_to(&pki, &[&web2], &mut Interrupt::manual().1).await;
    let JobOutcome::Lost(why) = &report.runs[0].outcome else {
        panic!("{report:?}\n{text}")
    };
    assert!(
        why.contains("OutOfRange") && why.contains("not retried"),
        "{why}"
    );
    let calls = calls.lock().unwrap().clone();
    assert!(!calls.iter().any(|c| c.contains(" attach ")), "{calls:?}");
    assert!(!text.contains("re-attaching"), "{text}");
}

#[tokio::test]
async fn ctrl_c_finishes_the_current_host_then_stops() {
    let pki = pki();
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let gate = Arc::new(Semaphore::new(0));
    let whole = job("x", JobResult::Succeeded);
    let slow = Script::Events {
        first: whole[..2].to_vec(),
        gate: Some(gate.clone()),
        rest: whole[2..].to_vec(),
    };
    let web1 = serve(pki.dir.path(), fake("web-1", slow, &calls)).await;
    let web2 = serve(
        pki.dir.path(),
        fake("web-2", events(JobResult::Succeeded), &calls),
    )
    .await;
    let (presses, mut interrupt) = Interrupt::manual();
    let operator = async {
        while calls.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        presses.send_modify(|n| *n += 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        gate.add_permits(1);
    };
    let hosts = [&web1, &web2];
    let ((report, text), ()) = tokio::join!(deploy_to(&pki, &hosts, &mut interrupt), operator);
    assert!(report.runs[0].outcome.ok(), "{report:?}");
    assert_eq!(report.runs[1].outcome, JobOutcome::NotStarted);
    assert!(text.contains("  ! interrupted: deploy-"), "{text}");
    assert!(
        text.contains("no further host will start; Ctrl-C again to detach"),
        "{text}"
    );
    assert!(text.contains("==> web-1: succeeded"), "{text}");
    assert_eq!(calls.lock().unwrap().len(), 1);

    // Twice: detach at once; the job keeps running on the agent.
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let gate = Arc::new(Semaphore::new(0));
    let slow = Script::Events {
        first: whole[..2].to_vec(),
        gate: Some(gate.clone()),
        rest: whole[2..].to_vec(),
    };
    let web3 = serve(pki.dir.path(), fake("web-3", slow, &calls)).await;
    let (presses, mut interrupt) = Interrupt::manual();
    let operator = async {
        while calls.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        presses.send_modify(|n| *n += 2);
    };
    let hosts = [&web3, &web2];
    let ((report, text), ()) = tokio::join!(deploy_to(&pki, &hosts, &mut interrupt), operator);
    gate.add_permits(1);
    assert_eq!(report.runs[0].outcome, JobOutcome::Detached);
    assert_eq!(report.runs[1].outcome, JobOutcome::NotStarted);
    assert!(text.contains("  ! detached: deploy-"), "{text}");
    assert!(text.contains("--host web-3` re-attaches"), "{text}");
    let why = report.failure().unwrap();
    assert!(
        why.contains("stopped at web-3: detached: the job keeps running"),
        "{why}"
    );
}

#[tokio::test]
async fn attach_follows_the_host_that_knows_the_job() {
    let pki = pki();
    let calls = Arc::default();
    let mut knows = fake("web-2", events(JobResult::Succeeded), &calls);
    knows.attach = job("deploy-x-web-2", JobResult::Succeeded);
    let web1 = serve(
        pki.dir.path(),
        fake("web-1", events(JobResult::Succeeded), &calls),
    )
    .await;
    let web2 = serve(pki.dir.path(), knows).await;
    let mut buf = Vec::new();
    let mut out = Output::new(&mut buf, false, true);
    let (_presses, mut interrupt) = Interrupt::manual();
    let mut session = Session {
        creds: &pki.creds,
        timeout: Duration::from_secs(5),
        out: &mut out,
        interrupt: &mut interrupt,
        detach_after: 1,
    };
    let report = session
        .attach(&[&web1, &web2], "deploy-x-web-2")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.runs[0].host, "web-2");
    let text = String::from_utf8(buf).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines
            .iter()
            .all(|l| l["host"] == "web-2" && l["job_id"] == "deploy-x-web-2")
    );
    assert_eq!(lines[3]["kind"], "finished");

    let mut buf = Vec::new();
    let mut out = Output::new(&mut buf, false, false);
    let mut session = Session {
        creds: &pki.creds,
        timeout: Duration::from_secs(5),
        out: &mut out,
        interrupt: &mut interrupt,
        detach_after: 1,
    };
    // `hoist attach` fails with exit code 1 when no host knows the job.
    let err = crate::Failure::failed(
        session
            .attach(&[&web1], "deploy-x-web-9")
            .await
            .unwrap_err(),
    );
    assert_eq!(err.code, crate::EXIT_FAILED);
    assert_eq!(
        err.error.to_string(),
        "no selected host knows job deploy-x-web-9 (asked: web-1)"
    );
}
