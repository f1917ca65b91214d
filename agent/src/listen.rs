//! Accepting connections without spinning: when `accept` fails (EMFILE: out of file
//! descriptors, ENOBUFS, ...) the listener waits before trying again, longer each time
//! up to a second, and says so in the log once per streak, not once per try.

use std::time::Duration;

/// First wait after a failed accept.
const FIRST_WAIT: Duration = Duration::from_millis(10);
/// Longest wait between tries.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// The state of one accept loop.
#[derive(Debug, Default)]
pub struct Backoff {
    /// Failures in a row.
    failures: u32,
}

impl Backoff {
    /// An accept succeeded: the next failure starts a new streak.
    pub fn succeeded(&mut self, what: &str) {
        if self.failures > 0 {
            tracing::info!(
                listener = what,
                failures = self.failures,
                "accepting connections again"
            );
        }
        self.failures = 0;
    }

    /// An accept failed: logs the first failure of a streak (and every 100th), then
    /// waits before the next try.
    pub async fn failed(&mut self, what: &str, err: &std::io::Error) {
        self.failures = self.failures.saturating_add(1);
        if self.failures == 1 || self.failures.is_multiple_of(100) {
            tracing::warn!(listener = what, error = %err, failures = self.failures, "accept failed; backing off");
        }
        tokio::time::sleep(self.wait()).await;
    }

    /// How long to wait after the current streak of failures.
    pub fn wait(&self) -> Duration {
        let doublings = self.failures.saturating_sub(1).min(16);
        FIRST_WAIT.saturating_mul(1 << doublings).min(MAX_WAIT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_a_second() {
        let mut backoff = Backoff::default();
        let mut waits = Vec::new();
        for _ in 0..10 {
            backoff.failures += 1;
            waits.push(backoff.wait().as_millis());
        }
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        backoff.succeeded("test");
        backoff.failures += 1;
        assert_eq!(backoff.wait(), FIRST_WAIT);
    }
}
