//! Job ids: `<kind>-<UTC yyyymmddThhmmssZ>-<6 hex>-<host>`, e.g.
//! `deploy-20261122T101500Z-a1b2c3-web-1`: one id per host. The shared prefix groups
//! the hosts of one command; the suffix makes `hoist attach JOB` and
//! `hoist log APP --job JOB` name exactly one job, and a retried call to one host
//! (same id: the agent returns the existing job) can never be mistaken for another
//! host's job.

use std::{
    io::Read as _,
    time::{SystemTime, UNIX_EPOCH},
};

/// No randomness for a job id.
#[derive(Debug, thiserror::Error)]
#[error("cannot read /dev/urandom for a job id: {0}")]
pub struct IdError(#[from] std::io::Error);

/// `<kind>-<yyyymmddThhmmssZ>-<6 hex>` for the UTC second `unix_seconds`.
pub fn format_job_id(kind: &str, unix_seconds: i64, random: [u8; 3]) -> String {
    let t = jiff::Timestamp::from_second(unix_seconds).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    format!(
        "{kind}-{}-{:02x}{:02x}{:02x}",
        t.strftime("%Y%m%dT%H%M%SZ"),
        random[0],
        random[1],
        random[2]
    )
}

/// A fresh id for a job of `kind` (deploy, rollback, restart, env, lock) made now.
pub fn new_job_id(kind: &str) -> Result<String, IdError> {
    let mut random = [0u8; 3];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(format_job_id(
        kind,
        i64::try_from(now).unwrap_or(i64::MAX),
        random,
    ))
}

/// The id of the job on `host` for a command whose id is `base`.
pub fn host_job_id(base: &str, host: &str) -> String {
    format!("{base}-{host}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::render::tests::T0;

    #[test]
    fn job_ids() {
        assert_eq!(
            format_job_id("deploy", T0, [0xa1, 0xb2, 0xc3]),
            "deploy-20261122T101500Z-a1b2c3"
        );
        assert_eq!(
            host_job_id("deploy-20261122T101500Z-a1b2c3", "web-1"),
            "deploy-20261122T101500Z-a1b2c3-web-1"
        );
        let id = new_job_id("rollback").unwrap();
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(parts.len(), 3, "{id}");
        assert_eq!(parts[0], "rollback");
        assert_eq!(parts[1].len(), 16, "{id}");
        assert!(
            parts[1].starts_with("20") && parts[1].ends_with('Z'),
            "{id}"
        );
        assert_eq!(parts[1].as_bytes()[8], b'T', "{id}");
        assert!(
            parts[2].len() == 6 && parts[2].chars().all(|c| c.is_ascii_hexdigit()),
            "{id}"
        );
        // What the agent accepts as a job id: letters, digits, '-', '_', '.'; at most 128.
        let full = host_job_id(&id, "web-1_eu");
        assert!(full.len() <= 128);
        assert!(
            full.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        );
    }
}
