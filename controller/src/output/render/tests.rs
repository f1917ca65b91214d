use hoist_proto::v1::{Notice, StepStarted};

use super::*;

pub(crate) fn at(seconds: i64, millis: i32) -> Option<Timestamp> {
    Some(Timestamp {
        seconds,
        nanos: millis * 1_000_000,
    })
}

/// 2026-11-22 10:15:00 UTC.
pub(crate) const T0: i64 = 1_795_342_500;

fn event(seq: u64, offset_ms: i64, kind: Kind) -> JobEvent {
    JobEvent {
        job_id: "deploy-20261122T101500Z-a1b2c3-web-1".into(),
        seq,
        at: at(T0 + offset_ms / 1000, (offset_ms % 1000) as i32),
        kind: Some(kind),
    }
}

/// A deploy whose migration step fails after a successful build.
pub(crate) fn failed_deploy() -> Vec<JobEvent> {
    let out = |seq, ms, stream: OutputStream, line: &str| {
        event(
            seq,
            ms,
            Kind::Output(StepOutput {
                step: if seq < 5 { "build" } else { "migrate" }.into(),
                stream: stream as i32,
                line: line.into(),
                continued: false,
            }),
        )
    };
    vec![
        event(
            0,
            0,
            Kind::Started(JobStarted {
                kind: JobKind::Deploy as i32,
                app: "carbex".into(),
                r#ref: "main".into(),
                commit: "abc1234def5678".into(),
                release: "20261122T101500Z-abc1234".into(),
                who: "dana".into(),
                migrate: true,
                forced: true,
                reason: "hotfix #42".into(),
            }),
        ),
        event(
            1,
            100,
            Kind::StepStarted(StepStarted {
                step: "build".into(),
                description: "composer install --no-dev".into(),
            }),
        ),
        out(2, 200, OutputStream::Stdout, "Installing dependencies\n"),
        out(3, 300, OutputStream::Stderr, "npm WARN deprecated"),
        event(
            4,
            3300,
            Kind::StepFinished(StepFinished {
                step: "build".into(),
                ok: true,
                exit_code: 0,
                duration_ms: 3200,
                ..Default::default()
            }),
        ),
        event(
            5,
            3400,
            Kind::StepStarted(StepStarted {
                step: "migrate".into(),
                description: "php artisan migrate --force".into(),
            }),
        ),
        out(
            6,
            3500,
            OutputStream::Stderr,
            "SQLSTATE[42P01]: no such table",
        ),
        event(
            7,
            3800,
            Kind::StepFinished(StepFinished {
                step: "migrate".into(),
                ok: false,
                exit_code: 1,
                duration_ms: 400,
                error: "php artisan migrate --force exited with 1".into(),
                timed_out: false,
            }),
        ),
        event(
            8,
            3900,
            Kind::Notice(Notice {
                message: "current still points at 20261121T090000Z-0f0f0f0".into(),
            }),
        ),
        event(
            9,
            4100,
            Kind::Finished(JobFinished {
                result: JobResult::Failed as i32,
                release: String::new(),
                previous_release: "20261121T090000Z-0f0f0f0".into(),
                duration_ms: 4100,
                error: "step migrate failed".into(),
                commit: String::new(),
            }),
        ),
    ]
}

#[test]
fn live_text_of_a_failed_deploy() {
    let text: String = failed_deploy()
        .iter()
        .map(|e| event_text("web-1", e, false))
        .collect();
    assert_eq!(
            text,
            "==> web-1: deploy carbex main (abc1234) as dana, with migrations, forced (reason: hotfix #42)
  job deploy-20261122T101500Z-a1b2c3-web-1 (follow it from elsewhere: hoist attach deploy-20261122T101500Z-a1b2c3-web-1)
  ▶ build  composer install --no-dev
    │ Installing dependencies
    ! npm WARN deprecated
  ✓ build  3.2s
  ▶ migrate  php artisan migrate --force
    ! SQLSTATE[42P01]: no such table
  ✗ migrate  exit 1 after 0.4s: php artisan migrate --force exited with 1
  ! current still points at 20261121T090000Z-0f0f0f0
==> web-1: failed after 4.1s: step migrate failed
"
        );
}

#[test]
fn colour_only_when_asked() {
    let events = failed_deploy();
    let plain: String = events.iter().map(|e| event_text("w", e, false)).collect();
    assert!(!plain.contains('\x1b'));
    let coloured = event_text("w", &events[7], true);
    assert!(
        coloured.contains("\x1b[1;31m✗\x1b[0m migrate"),
        "{coloured}"
    );
    let ok = event_text("w", &events[4], true);
    assert!(ok.contains("\x1b[32m✓\x1b[0m build"), "{ok}");
}

#[test]
fn finished_lines() {
    let line = |result: JobResult, error: &str| {
        finished_line(
            "web-1",
            &JobFinished {
                result: result as i32,
                release: "20261122T101500Z-abc1234".into(),
                previous_release: "20261121T090000Z-0f0f0f0".into(),
                duration_ms: 12_300,
                error: error.into(),
                commit: String::new(),
            },
            false,
        )
    };
    assert_eq!(
        line(JobResult::Succeeded, ""),
        "==> web-1: succeeded: release 20261122T101500Z-abc1234 (was 20261121T090000Z-0f0f0f0) in 12.3s\n"
    );
    assert_eq!(
        line(
            JobResult::RolledBack,
            "check http http://127.0.0.1/health: 500\nbody: oops"
        ),
        "==> web-1: rolled back after 12.3s: release 20261122T101500Z-abc1234 failed its checks; \
             20261121T090000Z-0f0f0f0 serves again\n    check http http://127.0.0.1/health: 500\n    body: oops\n"
    );
    assert_eq!(
        line(JobResult::Interrupted, "hoistd restarted"),
        "==> web-1: interrupted after 12.3s: hoistd restarted\n"
    );
}

#[test]
fn step_failures_say_how() {
    let text = |exit_code, timed_out| {
        step_finished_text(
            &StepFinished {
                step: "build".into(),
                ok: false,
                exit_code,
                duration_ms: 600_000,
                error: String::new(),
                timed_out,
            },
            false,
        )
    };
    assert_eq!(text(-1, true), "  ✗ build  timed out after 10m00s\n");
    assert_eq!(text(-1, false), "  ✗ build  failed after 10m00s\n");
    assert_eq!(text(2, false), "  ✗ build  exit 2 after 10m00s\n");
}

#[test]
fn other_job_headers() {
    let started = |kind: JobKind, release: &str| JobStarted {
        kind: kind as i32,
        app: "carbex".into(),
        release: release.into(),
        who: "dana".into(),
        ..Default::default()
    };
    assert_eq!(
        started_line(
            "web-2",
            &started(JobKind::Rollback, "20261121T090000Z-0f0f0f0")
        ),
        "==> web-2: rollback carbex to 20261121T090000Z-0f0f0f0 as dana"
    );
    assert_eq!(
        started_line("web-2", &started(JobKind::Restart, "")),
        "==> web-2: restart carbex as dana"
    );
}

#[test]
fn json_per_event() {
    let events = failed_deploy();
    let lines: Vec<Value> = events.iter().map(|e| event_to_json("web-1", e)).collect();
    assert_eq!(
        lines[0],
        json!({
            "host": "web-1",
            "job_id": "deploy-20261122T101500Z-a1b2c3-web-1",
            "seq": 0,
            "at": "2026-11-22T10:15:00Z",
            "kind": "started",
            "job_kind": "deploy",
            "app": "carbex",
            "ref": "main",
            "commit": "abc1234def5678",
            "release": "20261122T101500Z-abc1234",
            "who": "dana",
            "migrate": true,
            "forced": true,
            "reason": "hotfix #42",
        })
    );
    assert_eq!(lines[3]["stream"], "stderr");
    assert_eq!(lines[3]["line"], "npm WARN deprecated");
    assert_eq!(lines[3]["at"], "2026-11-22T10:15:00.300Z");
    assert_eq!(lines[7]["kind"], "step_finished");
    assert_eq!(lines[7]["exit_code"], 1);
    assert_eq!(lines[7]["ok"], false);
    assert_eq!(lines[8]["message"], events_notice(&events[8]));
    assert_eq!(
        lines[9],
        json!({
            "host": "web-1",
            "job_id": "deploy-20261122T101500Z-a1b2c3-web-1",
            "seq": 9,
            "at": "2026-11-22T10:15:04.100Z",
            "kind": "finished",
            "result": "failed",
            "release": "",
            "previous_release": "20261121T090000Z-0f0f0f0",
            "duration_ms": 4100,
            "error": "step migrate failed",
        })
    );

    let mut buf = Vec::new();
    let mut out = Output::new(&mut buf, false, true);
    for e in &events {
        out.event("web-1", e);
    }
    let text = String::from_utf8(buf).unwrap();
    assert_eq!(text.lines().count(), events.len());
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["host"], "web-1");
    }
}

fn events_notice(event: &JobEvent) -> String {
    match &event.kind {
        Some(Kind::Notice(n)) => n.message.clone(),
        _ => panic!("not a notice"),
    }
}

#[test]
fn durations_and_times() {
    assert_eq!(human_duration(0), "0.0s");
    assert_eq!(human_duration(449), "0.4s");
    assert_eq!(human_duration(59_949), "59.9s");
    assert_eq!(human_duration(59_950), "1m00s");
    assert_eq!(human_duration(125_000), "2m05s");
    assert_eq!(human_duration(3_780_000), "1h03m");
    assert_eq!(utc_time(at(T0, 0).as_ref()), "2026-11-22 10:15:00 UTC");
    assert_eq!(utc_clock(at(T0 + 3, 999).as_ref()), "10:15:03");
    assert_eq!(utc_time(None), "-");
    assert_eq!(
        millis_between(at(T0, 900).as_ref(), at(T0 + 1, 100).as_ref()),
        Some(200)
    );
    assert_eq!(short_commit("abc1234def"), "abc1234");
    assert_eq!(short_commit("abc"), "abc");
}

#[test]
fn pieces_of_a_long_line_are_joined_and_omissions_said() {
    let piece = |line: &str, stream: OutputStream, continued: bool| StepOutput {
        step: "build".into(),
        stream: stream as i32,
        line: line.into(),
        continued,
    };
    let mut buf = Vec::new();
    {
        let mut out = Output::new(&mut buf, false, false);
        for p in [
            piece("aaa", OutputStream::Stdout, true),
            piece("bbb", OutputStream::Stdout, true),
            piece("ccc", OutputStream::Stdout, false),
            piece("half", OutputStream::Stderr, true),
        ] {
            out.event("w", &event(0, 0, Kind::Output(p)));
        }
        let omitted = OutputOmitted {
            events: 12,
            bytes: 3 << 20,
            first_seq: 4,
            last_seq: 15,
        };
        out.event("w", &event(16, 0, Kind::Omitted(omitted)));
        out.event(
            "w",
            &event(
                17,
                0,
                Kind::Output(piece("next", OutputStream::Stdout, false)),
            ),
        );
    }
    let text = String::from_utf8(buf).unwrap();
    assert_eq!(
        text,
        "    │ aaabbbccc\n    ! half\n  ! 12 output event(s) (3.0 MiB) left out here: the agent keeps the first and the last 8 MiB of a job's output\n    │ next\n"
    );
    // Shown on its own (the rollout view), a piece says that its line goes on.
    let alone = output_text(&piece("aaa", OutputStream::Stdout, true), false);
    assert_eq!(alone, "    │ aaa…\n");
    let json = event_to_json(
        "w",
        &event(1, 0, Kind::Output(piece("a", OutputStream::Stdout, true))),
    );
    assert_eq!(json["continued"], true);
}

#[test]
fn text_from_agents_and_hooks_is_shown_not_interpreted() {
    let evil = "x\u{1b}[2J\u{1b}]0;t\u{7}\u{9b}1m";
    let shown = "x\\e[2J\\e]0;t\\x07\\u{9b}1m";
    let started = JobStarted {
        app: "web".into(),
        r#ref: evil.into(),
        who: evil.into(),
        reason: evil.into(),
        ..Default::default()
    };
    let line = started_line("web-1", &started);
    assert!(
        !line.contains('\u{1b}') && line.matches(shown).count() == 3,
        "{line}"
    );
    for colour in [false, true] {
        let out = output_text(
            &StepOutput {
                step: "build".into(),
                stream: OutputStream::Stdout as i32,
                line: evil.into(),
                continued: false,
            },
            colour,
        );
        assert!(out.contains(shown), "{out:?}");
        let finished = step_finished_text(
            &StepFinished {
                step: evil.into(),
                error: format!("{evil}\nsecond {evil}"),
                exit_code: 1,
                ..Default::default()
            },
            colour,
        );
        assert_eq!(finished.matches(shown).count(), 3, "{finished:?}");
        let notice = notice_text(evil, colour);
        assert!(notice.contains(shown), "{notice:?}");
        // Only our own colour codes remain.
        for text in [&out, &finished, &notice] {
            let stripped = text.replace("\u{1b}[2m", "").replace("\u{1b}[0m", "");
            let stripped = stripped
                .replace("\u{1b}[1;31m", "")
                .replace("\u{1b}[33m", "");
            assert!(!stripped.contains('\u{1b}'), "{text:?}");
        }
    }
}
