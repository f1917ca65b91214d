//! Reading job event streams in tests: collect a stream to its end, and pull out the
//! result, the steps and a readable transcript.

use std::time::Duration;

use hoist_proto::v1::{JobEvent, JobResult, job_event::Kind};
use tokio_stream::StreamExt as _;

/// Longest a test waits for one job's stream to end.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(180);

/// Every event of a job's stream, until the job finishes.
pub async fn collect(stream: tonic::Streaming<JobEvent>) -> Vec<JobEvent> {
    tokio::time::timeout(JOB_TIMEOUT, stream.map(|e| e.expect("event")).collect())
        .await
        .expect("job finished in time")
}

/// (result, release, error) from the job's final event.
pub fn result(events: &[JobEvent]) -> (JobResult, String, String) {
    events
        .iter()
        .find_map(|e| match &e.kind {
            Some(Kind::Finished(f)) => Some((f.result(), f.release.clone(), f.error.clone())),
            _ => None,
        })
        .expect("a finished event")
}

/// Output lines, notices and failures, one per line, for assertion messages.
pub fn output(events: &[JobEvent]) -> String {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::Output(o)) => Some(format!("{}: {}", o.step, o.line)),
            Some(Kind::Notice(n)) => Some(format!("notice: {}", n.message)),
            Some(Kind::StepFinished(f)) if !f.ok => Some(format!("FAILED {}: {}", f.step, f.error)),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The names of the steps, in the order they started.
pub fn steps(events: &[JobEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::StepStarted(s)) => Some(s.step.clone()),
            _ => None,
        })
        .collect()
}
