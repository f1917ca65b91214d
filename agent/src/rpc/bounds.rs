//! Bounds on every field of every request of `hoist.v1.Agent`, checked before a handler
//! looks at the request. Each request message implements [`Bounded`]; handlers start with
//! [`checked`]. A value out of range is InvalidArgument with a one-line message that
//! names the field and its limit and quotes at most a short prefix of the value, so an
//! oversized field never comes back in the error (nor in logs or the journal).
//!
//! The limits (documented in docs/REFERENCE.md, "Request limits"):
//! - names (app, service) ≤ 64 bytes; refs ≤ 255 (git's own practical limit for a ref
//!   name component path); job/deploy/release ids ≤ 128 (they name files);
//! - env keys ≤ 128, env values ≤ 64 KiB, ≤ 256 variables or keys per request;
//! - reasons ≤ 1 KiB (they are shown in tables and kept in the journal);
//! - lock ttl ≤ 30 days (0 = until unlocked); WatchStatus interval ≤ 1 h (0: the
//!   agent's `health_interval`; below 200 ms the agent sends every 200 ms, as it always
//!   did); JobLog limit ≤ 1000 jobs;
//! - Logs: lines ≤ 10000, follow ≤ 24 h, grep ≤ 256 bytes and one of the patterns
//!   `hoist_config::Pattern` takes.
//!
//! The whole request is also bounded by the server's decoding limit
//! ([`MAX_REQUEST_BYTES`]).

use std::time::Duration;

use hoist_proto::v1 as pb;
use tonic::Request;

/// Largest encoded request the server decodes (tonic's default, stated here so it is
/// one deliberate number): a field over its own limit but under this one gets the
/// field's InvalidArgument; a request over this one is refused by tonic (OutOfRange).
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;
pub const MAX_NAME: usize = 64;
pub const MAX_REF: usize = 255;
pub const MAX_ID: usize = 128;
/// `YYYYMMDDTHHMMSSZ-` (17) + a full sha-1 (40) + `-NNNN` (5), with room to spare.
pub const MAX_RELEASE_ID: usize = 80;
pub const MAX_ENV_KEY: usize = 128;
pub const MAX_ENV_VALUE: usize = 64 * 1024;
pub const MAX_ENV_VARS: usize = 256;
pub const MAX_REASON: usize = 1024;
pub const MAX_LOCK_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
pub const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(200);
pub const MAX_WATCH_INTERVAL: Duration = Duration::from_secs(3600);
pub const MAX_JOB_LOG_LIMIT: u32 = 1000;
pub const MAX_LOG_LINES: u32 = 10_000;
pub const MAX_LOG_FOLLOW: Duration = Duration::from_secs(24 * 3600);
/// How much of an offending value an error message quotes.
const QUOTE_CHARS: usize = 32;

/// A request field outside its bounds.
#[derive(Debug, thiserror::Error)]
#[error("{field} {why}")]
pub struct OutOfBounds {
    pub field: &'static str,
    pub why: String,
}

/// A request whose every field can be checked against its bounds.
pub trait Bounded {
    fn check(&self) -> Result<(), OutOfBounds>;
}

/// The request, once every field is within bounds.
pub fn checked<T: Bounded>(request: Request<T>) -> Result<Request<T>, OutOfBounds> {
    request.get_ref().check()?;
    Ok(request)
}

/// At most [`QUOTE_CHARS`] characters of `value`, Debug-quoted (control characters
/// escaped), with `…` when cut.
pub fn quote(value: &str) -> String {
    let mut chars = value.chars();
    let head: String = chars.by_ref().take(QUOTE_CHARS).collect();
    if chars.next().is_some() {
        format!("{head:?}…")
    } else {
        format!("{head:?}")
    }
}

fn text(field: &'static str, value: &str, max: usize) -> Result<(), OutOfBounds> {
    if value.len() > max {
        return Err(OutOfBounds {
            field,
            why: format!(
                "is {} bytes, longer than the limit of {max} ({}); shorten it",
                value.len(),
                quote(value)
            ),
        });
    }
    if value.contains('\0') {
        return Err(OutOfBounds {
            field,
            why: format!("contains a NUL byte ({})", quote(value)),
        });
    }
    Ok(())
}

fn name(field: &'static str, value: &str) -> Result<(), OutOfBounds> {
    text(field, value, MAX_NAME)
}

fn id(field: &'static str, value: &str) -> Result<(), OutOfBounds> {
    text(field, value, MAX_ID)
}

/// A release id the controller chose: at most [`MAX_RELEASE_ID`] bytes of
/// `[0-9A-Za-z-]` (its exact shape is checked where it is used,
/// `release::chosen_release_commit`): nothing that could name a path outside
/// `releases/`.
fn release(value: &str) -> Result<(), OutOfBounds> {
    text("release_id", value, MAX_RELEASE_ID)?;
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(OutOfBounds {
            field: "release_id",
            why: format!(
                "contains {bad:?} ({}); a release id has letters, digits and '-' only",
                quote(value)
            ),
        });
    }
    Ok(())
}

fn git_ref(field: &'static str, value: &str) -> Result<(), OutOfBounds> {
    text(field, value, MAX_REF)
}

fn reason(field: &'static str, value: &str) -> Result<(), OutOfBounds> {
    text(field, value, MAX_REASON)
}

fn count(field: &'static str, n: usize, max: usize) -> Result<(), OutOfBounds> {
    if n > max {
        return Err(OutOfBounds {
            field,
            why: format!("has {n} entries, more than the limit of {max}; split the change"),
        });
    }
    Ok(())
}

fn env_key(value: &str) -> Result<(), OutOfBounds> {
    text("env key", value, MAX_ENV_KEY)
}

fn kind(value: i32) -> Result<(), OutOfBounds> {
    if pb::JobKind::try_from(value).is_err() {
        return Err(OutOfBounds {
            field: "kind",
            why: format!("{value} is not a job kind"),
        });
    }
    Ok(())
}

impl Bounded for pb::GetInfoRequest {
    fn check(&self) -> Result<(), OutOfBounds> {
        let pb::GetInfoRequest {} = self;
        Ok(())
    }
}

impl Bounded for pb::StatusRequest {
    fn check(&self) -> Result<(), OutOfBounds> {
        let pb::StatusRequest { app } = self;
        name("app", app)
    }
}

impl Bounded for pb::WatchStatusRequest {
    fn check(&self) -> Result<(), OutOfBounds> {
        let pb::WatchStatusRequest { app, interval_ms } = self;
        name("app", app)?;
        if u128::from(*interval_ms) > MAX_WATCH_INTERVAL.as_millis() {
            return Err(OutOfBounds {
                field: "interval_ms",
                why: format!(
                    "{interval_ms} is longer than {} ms (1 h); use 0 for the agent's \
                     health_interval",
                    MAX_WATCH_INTERVAL.as_millis()
                ),
            });
        }
        Ok(())
    }
}

impl Bounded for pb::DeployRequest {
    fn check(&self) -> Result<(), OutOfBounds> {
        let pb::DeployRequest {
            app,
            r#ref,
            deploy_id,
            migrate: _,
            allow_missing_env: _,
            forced: _,
            reason: why,
            release_id,
        } = self;
        name("app", app)?;
        git_ref("ref", r#ref)?;
        id("deploy_id", deploy_id)?;
        release(release_id)?;
        reason("reason", why)
    }
}

impl Bounded for pb::PlanDeployRequest {
    fn check(&self) -> Result<(), OutOfBounds> {
        let pb::PlanDeployRequest {
            app,
            r#ref,
            migrate: _,
        } = self;
        name("app", app)?;
        git_ref("ref", r#ref)
    }
}

impl Bounded for pb::PlanRollbackRequest {
    fn check(&self) -> Result<(), OutOfBounds> {
        let pb::PlanRollbackRequest {
            app,
            to,
            migrate: _,
            restore_db: _,
        } = self;
        name("app", app)?;
        git_ref("to", to)
    }
}

impl Bounded for pb::RollbackRequest {
    fn check(&self) -> Result<(), OutOfBounds> {
        let pb::RollbackRequest {
            app,
            to_release,
            job_id,
            migrate: _,
            restore_db: _,
            confirm_restore: _,
            reason: why,
            of_release,
            ahead_only: _,
        } = self;
        name("app", app)?;
        id("to_release", to_release)?;
        id("of_release", of_release)?;
        id("job_id", job_id)?;
        reason("reason", why)
    }
}

impl Bounded for pb::BackupRequest {
    fn check(&self) -> Result<(), OutOfBounds> {
        let pb::BackupRequest { app, job_id } = self;
        name("app", app)?;
        id("job_id", job_id)
    }
}

impl Bounded for pb::ListBackupsRequest {
    fn check(&self) -> Result<(), OutOfBounds> {
        let pb::ListBackupsRequest { app } = self;
        name("app", app)
    }
}

impl Bounded for pb::RestoreRequest {
    fn check(&self) -> Result<(), OutOfBounds> {
        let pb::RestoreRequest {
            app,
            backup_id,
            job_id,
            confirm: _,
        } = self;
        name("app", app)?;
        id("backup_id", backup_id)?;
        id("job_id", job_id)
    }
}

impl Bounded for pb::PendingMigrationsRequest {
    fn check(&self) -> Result<(), OutOfBounds> {
        let pb::PendingMigrationsRequest { app } = self;
        name("app", app)
    }
}

impl Bounded for pb::RestartRequest {
    fn check(&self) -> Result<(), OutOfBounds> {
        let pb::RestartRequest {
            app,
            service,
            job_id,
        } = self;
        name("app", app)?;
        // Service display names are `kind:name`, e.g. `supervisor:web-worker`.
        text("service", service, MAX_ID)?;
        id("job_id", job_id)
    }
}

impl Bounded for pb::StopRequest {
    fn check(&self) -> Result<(), OutOfBounds> {
        let pb::StopRequest {
            app,
            service,
            job_id,
        } = self;
        name("app", app)?;
        text("service", service, MAX_ID)?;
        id("job_id", job_id)
    }
}

impl Bounded for pb::StartRequest {
    fn check(&self) -> Result<(), OutOfBounds> {
        let pb::StartRequest {
            app,
            service,
            job_id,
        } = self;
        name("app", app)?;
        text("service", service, MAX_ID)?;
        id("job_id", job_id)
    }
}

impl Bounded for pb::RunTaskRequest {
    fn check(&self) -> Result<(), OutOfBounds> {
        let pb::RunTaskRequest { app, task, job_id } = self;
        name("app", app)?;
        name("task", task)?;
        id("job_id", job_id)
    }
}

impl Bounded for pb::AttachRequest {
    fn check(&self) -> Result<(), OutOfBounds> {
        let pb::AttachRequest { job_id } = self;
        id("job_id", job_id)
    }
}

impl Bounded for pb::JobLogRequest {
    fn check(&self) -> Result<(), OutOfBounds> {
        let pb::JobLogRequest {
            app,
            job_id,
            limit,
            // Any seq; a page size the agent clamps to its 1 MiB page.
            from_seq: _,
            max_bytes: _,
            page_token,
        } = self;
        name("app", app)?;
        id("job_id", job_id)?;
        text("page_token", page_token, MAX_ID)?;
        if *limit > MAX_JOB_LOG_LIMIT {
            return Err(OutOfBounds {
                field: "limit",
                why: format!("{limit} is more than {MAX_JOB_LOG_LIMIT} jobs; ask for fewer"),
            });
        }
        Ok(())
    }
}

impl Bounded for pb::LogsRequest {
    fn check(&self) -> Result<(), OutOfBounds> {
        let pb::LogsRequest {
            app,
            source,
            lines,
            follow_ms,
            grep,
        } = self;
        name("app", app)?;
        name("source", source)?;
        if *lines > MAX_LOG_LINES {
            return Err(OutOfBounds {
                field: "lines",
                why: format!("{lines} is more than {MAX_LOG_LINES}; ask for fewer"),
            });
        }
        if Duration::from_millis(*follow_ms) > MAX_LOG_FOLLOW {
            return Err(OutOfBounds {
                field: "follow_ms",
                why: format!("{follow_ms} is more than 24 h; follow again after that"),
            });
        }
        text("grep", grep, hoist_config::MAX_PATTERN)?;
        if !grep.is_empty()
            && let Err(e) = hoist_config::Pattern::parse(grep)
        {
            return Err(OutOfBounds {
                field: "grep",
                why: format!("{}: {e}", quote(grep)),
            });
        }
        Ok(())
    }
}

impl Bounded for pb::ListReleasesRequest {
    fn check(&self) -> Result<(), OutOfBounds> {
        let pb::ListReleasesRequest { app } = self;
        name("app", app)
    }
}

impl Bounded for pb::LockRequest {
    fn check(&self) -> Result<(), OutOfBounds> {
        let pb::LockRequest {
            app,
            reason: why,
            deploy_id,
            ttl_ms,
        } = self;
        name("app", app)?;
        reason("reason", why)?;
        id("deploy_id", deploy_id)?;
        if u128::from(*ttl_ms) > MAX_LOCK_TTL.as_millis() {
            return Err(OutOfBounds {
                field: "ttl_ms",
                why: format!(
                    "{ttl_ms} is longer than {} ms (30 days); use 0 for a lock held until unlocked",
                    MAX_LOCK_TTL.as_millis()
                ),
            });
        }
        Ok(())
    }
}

impl Bounded for pb::UnlockRequest {
    fn check(&self) -> Result<(), OutOfBounds> {
        let pb::UnlockRequest {
            app,
            deploy_id,
            force: _,
        } = self;
        name("app", app)?;
        id("deploy_id", deploy_id)
    }
}

impl Bounded for pb::EnvListRequest {
    fn check(&self) -> Result<(), OutOfBounds> {
        let pb::EnvListRequest { app, show: _ } = self;
        name("app", app)
    }
}

impl Bounded for pb::EnvSetRequest {
    fn check(&self) -> Result<(), OutOfBounds> {
        let pb::EnvSetRequest {
            app,
            vars,
            restart: _,
            job_id,
        } = self;
        name("app", app)?;
        id("job_id", job_id)?;
        count("vars", vars.len(), MAX_ENV_VARS)?;
        for pb::EnvVar {
            key,
            value,
            redacted: _,
        } in vars
        {
            env_key(key)?;
            // The value is a secret: its length is named, never its content.
            if value.len() > MAX_ENV_VALUE {
                return Err(OutOfBounds {
                    field: "env value",
                    why: format!(
                        "of {} is {} bytes, longer than the limit of {MAX_ENV_VALUE}",
                        quote(key),
                        value.len()
                    ),
                });
            }
        }
        Ok(())
    }
}

impl Bounded for pb::EnvUnsetRequest {
    fn check(&self) -> Result<(), OutOfBounds> {
        let pb::EnvUnsetRequest {
            app,
            keys,
            restart: _,
            job_id,
        } = self;
        name("app", app)?;
        id("job_id", job_id)?;
        count("keys", keys.len(), MAX_ENV_VARS)?;
        keys.iter().try_for_each(|k| env_key(k))
    }
}

impl Bounded for pb::RecordRefusalRequest {
    fn check(&self) -> Result<(), OutOfBounds> {
        let pb::RecordRefusalRequest {
            app,
            job_id,
            kind: k,
            r#ref,
            reason: why,
        } = self;
        name("app", app)?;
        id("job_id", job_id)?;
        kind(*k)?;
        git_ref("ref", r#ref)?;
        reason("reason", why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_cuts_and_escapes() {
        assert_eq!(quote("web"), "\"web\"");
        let long = "x".repeat(1_000_000);
        let q = quote(&long);
        assert!(q.len() < 40, "{q}");
        assert!(q.ends_with('…'));
        assert_eq!(quote("\u{1b}[31m"), "\"\\u{1b}[31m\"");
    }

    #[test]
    fn huge_fields_are_refused_briefly() {
        let big = "a".repeat(1 << 20);
        let cases: Vec<Box<dyn Bounded>> = vec![
            Box::new(pb::StatusRequest { app: big.clone() }),
            Box::new(pb::DeployRequest {
                app: "web".into(),
                r#ref: big.clone(),
                ..Default::default()
            }),
            Box::new(pb::AttachRequest {
                job_id: big.clone(),
            }),
            Box::new(pb::EnvSetRequest {
                app: "web".into(),
                vars: vec![pb::EnvVar {
                    key: big.clone(),
                    value: "v".into(),
                    redacted: false,
                }],
                ..Default::default()
            }),
            Box::new(pb::LockRequest {
                app: "web".into(),
                reason: big.clone(),
                ..Default::default()
            }),
            Box::new(pb::RollbackRequest {
                app: "web".into(),
                of_release: big.clone(),
                ..Default::default()
            }),
            Box::new(pb::RestoreRequest {
                app: "web".into(),
                backup_id: big.clone(),
                ..Default::default()
            }),
            Box::new(pb::BackupRequest {
                app: "web".into(),
                job_id: big.clone(),
            }),
            Box::new(pb::ListBackupsRequest { app: big.clone() }),
            Box::new(pb::PendingMigrationsRequest { app: big.clone() }),
            Box::new(pb::PlanDeployRequest {
                app: "web".into(),
                r#ref: big.clone(),
                migrate: false,
            }),
            Box::new(pb::PlanRollbackRequest {
                app: "web".into(),
                to: big.clone(),
                ..Default::default()
            }),
            Box::new(pb::DeployRequest {
                app: "web".into(),
                r#ref: "main".into(),
                release_id: big.clone(),
                ..Default::default()
            }),
        ];
        for case in cases {
            let err = case.check().unwrap_err().to_string();
            assert!(err.len() < 160, "{err}");
        }
    }

    #[test]
    fn durations_and_counts() {
        let lock = |ttl_ms| pb::LockRequest {
            app: "web".into(),
            ttl_ms,
            ..Default::default()
        };
        assert!(lock(u64::MAX).check().is_err());
        assert!(lock(30 * 24 * 3600 * 1000 + 1).check().is_err());
        assert!(lock(0).check().is_ok());
        assert!(lock(60_000).check().is_ok());
        let watch = |interval_ms| pb::WatchStatusRequest {
            app: String::new(),
            interval_ms,
        };
        assert!(watch(0).check().is_ok());
        assert!(watch(1).check().is_ok(), "raised to 200 ms where used");
        assert!(watch(3_600_001).check().is_err());
        assert!(watch(500).check().is_ok());
        assert!(watch(u64::MAX).check().is_err());
        let log = |limit| pb::JobLogRequest {
            app: "web".into(),
            job_id: String::new(),
            limit,
            ..Default::default()
        };
        assert!(log(500).check().is_ok());
        assert!(log(u32::MAX).check().is_err());
        let value = pb::EnvSetRequest {
            app: "web".into(),
            vars: vec![pb::EnvVar {
                key: "K".into(),
                value: "s".repeat(MAX_ENV_VALUE + 1),
                redacted: false,
            }],
            ..Default::default()
        };
        let err = value.check().unwrap_err().to_string();
        assert!(!err.contains("sss"), "{err}");
        let deploy = |release_id: &str| pb::DeployRequest {
            app: "web".into(),
            r#ref: "main".into(),
            release_id: release_id.into(),
            ..Default::default()
        };
        assert!(deploy("").check().is_ok(), "an older controller's request");
        assert!(deploy("20261202T171500Z-abc1234").check().is_ok());
        for bad in ["../../etc", "a/b", "x.tmp", "a\0b"] {
            let err = deploy(bad).check().unwrap_err().to_string();
            assert!(err.starts_with("release_id"), "{err}");
        }
        let err = deploy(&"a".repeat(MAX_RELEASE_ID + 1))
            .check()
            .unwrap_err()
            .to_string();
        assert!(err.contains("limit of 80"), "{err}");
        let refusal = pb::RecordRefusalRequest {
            app: "web".into(),
            job_id: "d-1".into(),
            kind: 99,
            ..Default::default()
        };
        assert!(refusal.check().is_err());
        let logs = |lines, follow_ms, grep: &str| pb::LogsRequest {
            app: "web".into(),
            source: String::new(),
            lines,
            follow_ms,
            grep: grep.into(),
        };
        assert!(logs(10_000, 24 * 3600 * 1000, "ERROR|WARN").check().is_ok());
        assert!(logs(10_001, 0, "").check().is_err());
        assert!(logs(1, 24 * 3600 * 1000 + 1, "").check().is_err());
        assert!(logs(1, 0, &"x".repeat(257)).check().is_err());
        assert!(logs(1, 0, "(a|b)").check().is_err());
    }
}
