//! Watching hosts during a bake: each switched host's WatchStatus stream, until one of
//! its app's checks fails or the host stops answering.
//!
//! Only check results that started after the host's deploy finished count (the
//! agent's `last_run` against the time of the job's last event, both on the agent's
//! clock): a result from before the switch says nothing about the new release. Checks
//! run every `health_interval` on the agent, so a bake shorter than that interval may
//! see no fresh result at all.

use std::time::Duration;

use futures_util::StreamExt as _;
use hoist_proto::v1::{StatusResponse, WatchStatusRequest};
use prost_types::Timestamp;

use crate::{client::Credentials, fleet::Host, jobs};

/// Attempts at (re)connecting a host's status stream before it counts as unreachable.
const CONNECT_ATTEMPTS: u32 = 3;

/// The first failing check in `status` for `app` whose run started at or after
/// `since`: `check NAME failed: OUTPUT`.
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
        .find(|c| c.has_run && !c.ok && fresh(c.last_run.as_ref()))
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
        let mut client = match jobs::connect(host, creds, timeout).await {
            Ok(client) => client,
            Err(why) => {
                failures += 1;
                last = why;
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
                last = crate::client::status_error(&status);
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
                    last = crate::client::status_error(&status);
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
    }
}
