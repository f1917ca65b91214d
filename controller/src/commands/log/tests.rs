use hoist_proto::v1::{Notice, StepStarted, Stream as OutputStream};

use hoist_proto::v1::{
    JobEvent, JobFinished, JobKind, JobStarted, StepFinished, StepOutput, job_event::Kind,
};

use super::*;
use crate::{
    agents::fanout::CallError,
    output::render::tests::{T0, at, failed_deploy},
};

fn event(seq: u64, offset_ms: i64, kind: Kind) -> JobEvent {
    JobEvent {
        job_id: "deploy-20261122T101500Z-a1b2c3-web-1".into(),
        seq,
        at: at(T0 + offset_ms / 1000, (offset_ms % 1000) as i32),
        kind: Some(kind),
    }
}

fn step(
    seq: &mut u64,
    ms: &mut i64,
    name: &str,
    ok: bool,
    took: u64,
    output: &[&str],
) -> Vec<JobEvent> {
    let mut events = vec![event(
        *seq,
        *ms,
        Kind::StepStarted(StepStarted {
            step: name.into(),
            description: String::new(),
        }),
    )];
    *seq += 1;
    for line in output {
        events.push(event(
            *seq,
            *ms,
            Kind::Output(StepOutput {
                step: name.into(),
                stream: OutputStream::Stdout as i32,
                line: line.to_string(),
                continued: false,
            }),
        ));
        *seq += 1;
    }
    *ms += took as i64;
    events.push(event(
            *seq,
            *ms,
            Kind::StepFinished(StepFinished {
                step: name.into(),
                ok,
                exit_code: if ok { 0 } else { -1 },
                duration_ms: took,
                error: if ok {
                    String::new()
                } else {
                    "GET http://127.0.0.1/health: 500 Internal Server Error\nbody: {\"status\":\"down\"}".into()
                },
                timed_out: false,
            }),
        ));
    *seq += 1;
    events
}

/// A deploy whose check fails after the switch, rolled back automatically.
fn rolled_back_deploy() -> Vec<JobEvent> {
    let (mut seq, mut ms) = (1, 0);
    let mut events = vec![event(
        0,
        0,
        Kind::Started(JobStarted {
            kind: JobKind::Deploy as i32,
            app: "carbex".into(),
            r#ref: "v3".into(),
            commit: "c0ffee0123456789".into(),
            release: "20261122T101500Z-c0ffee0".into(),
            who: "dana".into(),
            migrate: false,
            forced: false,
            reason: String::new(),
        }),
    )];
    events.extend(step(&mut seq, &mut ms, "build", true, 1200, &["built"]));
    events.extend(step(&mut seq, &mut ms, "switch", true, 10, &[]));
    events.extend(step(&mut seq, &mut ms, "check:http", false, 10_000, &[]));
    events.push(event(
        seq,
        ms,
        Kind::Notice(Notice {
            message: "checks failed; rolling back to 20261121T090000Z-0f0f0f0".into(),
        }),
    ));
    seq += 1;
    events.extend(step(&mut seq, &mut ms, "switch", true, 10, &[]));
    events.extend(step(&mut seq, &mut ms, "restart", true, 300, &[]));
    events.push(event(
        seq,
        ms,
        Kind::Notice(Notice {
            message:
                "migrations are not reversed automatically; `hoist rollback --migrate` does it"
                    .into(),
        }),
    ));
    seq += 1;
    events.push(event(
        seq,
        ms,
        Kind::Finished(JobFinished {
            result: JobResult::RolledBack as i32,
            release: "20261122T101500Z-c0ffee0".into(),
            previous_release: "20261121T090000Z-0f0f0f0".into(),
            duration_ms: ms as u64,
            error: "check http failed: GET http://127.0.0.1/health: 500".into(),
            commit: String::new(),
        }),
    ));
    events
}

#[test]
fn deployment_log_of_a_failed_deploy() {
    let text = render_job(
        "web-1",
        "carbex",
        "deploy-20261122T101500Z-a1b2c3-web-1",
        &failed_deploy(),
        None,
        false,
    );
    assert_eq!(
        text,
        "Deployment log: carbex on web-1
  job        deploy-20261122T101500Z-a1b2c3-web-1
  who        dana
  started    2026-11-22 10:15:00 UTC
  ended      2026-11-22 10:15:04 UTC (4.1s)
  ref        main → abc1234def5678
  release    20261122T101500Z-abc1234
  previous   20261121T090000Z-0f0f0f0
  migrate    yes
  forced     yes: hotfix #42

Steps
  build    10:15:00 → 10:15:03    3.2s  exit 0     ok
    composer install --no-dev
    │ Installing dependencies
    ! npm WARN deprecated
  migrate  10:15:03 → 10:15:03    0.4s  exit 1     FAILED: php artisan migrate --force exited with 1
    php artisan migrate --force
    ! SQLSTATE[42P01]: no such table
  ! current still points at 20261121T090000Z-0f0f0f0

Result: failed after 4.1s: step migrate failed
"
    );
}

#[test]
fn deployment_log_of_a_rollback() {
    let text = render_job(
        "web-2",
        "carbex",
        "deploy-x-web-2",
        &rolled_back_deploy(),
        None,
        false,
    );
    let expected_tail = "
Steps
  build       10:15:00 → 10:15:01    1.2s  exit 0     ok
    │ built
  switch      10:15:01 → 10:15:01    0.0s  exit 0     ok

Verification
  check:http  10:15:01 → 10:15:11   10.0s  exit -     FAILED: GET http://127.0.0.1/health: 500 Internal Server Error
      body: {\"status\":\"down\"}

Rollback
  ! checks failed; rolling back to 20261121T090000Z-0f0f0f0
  switch      10:15:11 → 10:15:11    0.0s  exit 0     ok
  restart     10:15:11 → 10:15:11    0.3s  exit 0     ok
  ! migrations are not reversed automatically; `hoist rollback --migrate` does it

Result: rolled back after 11.5s: check http failed: GET http://127.0.0.1/health: 500
";
    assert!(text.ends_with(expected_tail), "{text}");
    assert!(
        text.contains("  ref        v3 → c0ffee0123456789\n"),
        "{text}"
    );
    assert!(
        text.contains("  previous   20261121T090000Z-0f0f0f0\n"),
        "{text}"
    );
    assert!(text.contains("  migrate    no\n"), "{text}");
    assert!(!text.contains("forced"), "{text}");
}

#[test]
fn late_output_and_the_journal_entry() {
    // The agent sends a step's last output after its end, and no commit at the start.
    let mut events = failed_deploy();
    if let Some(Kind::Started(s)) = &mut events[0].kind {
        s.commit.clear();
    }
    let late = event(
        5,
        3300,
        Kind::Output(StepOutput {
            step: "build".into(),
            stream: OutputStream::Stdout as i32,
            line: "main → abc1234def5678".into(),
            continued: false,
        }),
    );
    events.insert(5, late);
    let summary = JobSummary {
        job_id: "j".into(),
        commit: "abc1234def5678".into(),
        ..Default::default()
    };
    let text = render_job("web-1", "carbex", "j", &events, Some(&summary), false);
    assert!(
        text.contains("  ref        main → abc1234def5678\n"),
        "{text}"
    );
    assert!(
        text.contains("    ! npm WARN deprecated\n    │ main → abc1234def5678\n  migrate"),
        "{text}"
    );
    assert!(!text.contains("did not finish"), "{text}");
    let without = render_job("web-1", "carbex", "j", &events, None, false);
    assert!(without.contains("  ref        main\n"), "{without}");
}

#[test]
fn unfinished_job() {
    let events = &failed_deploy()[..5];
    let text = render_job("web-1", "carbex", "j", events, None, false);
    assert!(
        text.ends_with(
            "Result: not finished (the log ends here; `hoist attach` follows a running job)\n"
        ),
        "{text}"
    );
    let events = &failed_deploy()[..3];
    let text = render_job("web-1", "carbex", "j", events, None, false);
    assert!(
        text.contains("  build  10:15:00 → …         did not finish\n"),
        "{text}"
    );
}

#[test]
fn recent_jobs_table() {
    let summary = |id: &str, result: JobResult, error: &str, forced| JobSummary {
        job_id: id.into(),
        kind: JobKind::Deploy as i32,
        app: "carbex".into(),
        r#ref: "main".into(),
        commit: "abc1234def".into(),
        release: "20261122T101500Z-abc1234".into(),
        who: "dana".into(),
        started_at: at(T0, 0),
        duration_ms: 12_300,
        result: result as i32,
        error: error.into(),
        forced,
        reason: if forced {
            "incident 7".into()
        } else {
            String::new()
        },
    };
    let answers = vec![
        Answer {
            host: "web-1".into(),
            address: "10.0.0.11:7443".into(),
            elapsed: std::time::Duration::ZERO,
            result: Ok(vec![
                summary(
                    "deploy-b-web-1",
                    JobResult::RolledBack,
                    "check http failed",
                    false,
                ),
                summary("deploy-a-web-1", JobResult::Succeeded, "", true),
            ]),
        },
        Answer {
            host: "web-2".into(),
            address: "10.0.0.12:7443".into(),
            elapsed: std::time::Duration::ZERO,
            result: Err(CallError::Unreachable("connection refused".into())),
        },
    ];
    assert_eq!(
            render_recent(&answers, false),
            "web-1 (10.0.0.11:7443)
  JOB             KIND    RESULT       REF   COMMIT   RELEASE                   WHO   STARTED                  DURATION
  deploy-b-web-1  deploy  rolled back  main  abc1234  20261122T101500Z-abc1234  dana  2026-11-22 10:15:00 UTC  12.3s
  deploy-a-web-1  deploy  succeeded    main  abc1234  20261122T101500Z-abc1234  dana  2026-11-22 10:15:00 UTC  12.3s
  ! deploy-b-web-1: check http failed
  ! deploy-a-web-1: forced: incident 7

web-2 (10.0.0.12:7443)
  unreachable: connection refused
"
        );
    let json = recent_json(&answers);
    assert_eq!(json[0]["jobs"][0]["result"], "rolled_back");
    assert_eq!(json[0]["jobs"][1]["started_at"], "2026-11-22T10:15:00Z");
    assert_eq!(json[1]["error"], "unreachable: connection refused");
}
