//! What a job does on a host, validated once where it is built, and the only place a
//! job's proto request is built: `hoist deploy`, `hoist rollback` (and the undo of a
//! stopped deploy), `hoist restart`, `hoist env set|unset`.
//!
//! Who migrates is decided by the controller, never by the agents: the rollout picks
//! the host ([`crate::rollout::plan::Plan::migrator`]) and sets `migrate` in that
//! host's request only.

use hoist_proto::v1::{
    BackupRequest, DeployRequest, EnvSetRequest, EnvUnsetRequest, EnvVar, JobKind,
    ListBackupsRequest, ListReleasesRequest, LogsRequest, PendingMigrationsRequest,
    RecordRefusalRequest, RestartRequest, RestoreRequest, RollbackRequest, RunTaskRequest,
    StartRequest, StopRequest,
};

use crate::{
    agents::{follow::JobRequest, ids},
    fleet::{Host, MigrateOn},
};

/// Options that cannot go to any agent: a usage error.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    #[error(
        "--force needs --reason TEXT: the reason is recorded in every host's journal with \
         the override"
    )]
    ForceWithoutReason,
    #[error("--ref is empty; name a branch, tag or commit")]
    EmptyRef,
    #[error("ref {0:?} starts with '-'; name a branch, tag or commit")]
    RefLooksLikeAFlag(String),
    #[error(
        "--restore-db restores the database from the release's backup, losing every write \
         made since that backup was taken; add --yes to confirm"
    )]
    RestoreWithoutYes,
    #[error("--to {release:?} is not a release id; `hoist releases {app}` lists them")]
    NotAReleaseId { release: String, app: String },
    #[error(
        "--of RELEASE reverses that release's migrations: add --migrate (`hoist rollback {app} \
         --migrate --of RELEASE`)"
    )]
    OfWithoutMigrate { app: String },
    #[error(
        "--of RELEASE keeps the current release and only reverses RELEASE's migrations; it \
         does not go with --to or --restore-db (restore a backup with `hoist restore {app}`)"
    )]
    OfWithTo { app: String },
    #[error(
        "a restore replaces the database with the backup, losing every write made since it \
         was taken; add --yes to confirm (`hoist backups {app}` lists the backups)"
    )]
    RestoreNeedsYes { app: String },
}

fn blank(reason: &Option<String>) -> bool {
    reason.as_deref().is_none_or(|r| r.trim().is_empty())
}

/// One request per host, job ids `<base>-<host>`.
fn per_host<'h>(
    hosts: &[&'h Host],
    base: &str,
    mut request: impl FnMut(usize, String) -> JobRequest,
) -> Vec<(&'h Host, JobRequest)> {
    hosts
        .iter()
        .enumerate()
        .map(|(i, host)| (*host, request(i, ids::host_job_id(base, &host.name))))
        .collect()
}

// === deploy ===

/// `hoist deploy APP --ref REF ...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeployOptions {
    pub app: String,
    pub git_ref: String,
    pub migrate_on: MigrateOn,
    pub allow_missing_env: bool,
    /// Override a deploy window; needs a reason, recorded in the journal.
    pub force: bool,
    pub reason: Option<String>,
    /// The release id of this deploy on every host, chosen once by the rollout
    /// ([`crate::rollout::identity`]); `None`: each agent picks its own (older agents).
    pub release_id: Option<String>,
}

impl DeployOptions {
    /// Validated options (usage errors, before anything is loaded or sent).
    pub fn new(
        app: String,
        git_ref: String,
        migrate_on: MigrateOn,
        allow_missing_env: bool,
        force: bool,
        reason: Option<String>,
    ) -> Result<DeployOptions, OptionsError> {
        let options = DeployOptions {
            app,
            git_ref,
            migrate_on,
            allow_missing_env,
            force,
            reason,
            release_id: None,
        };
        options.validate()?;
        Ok(options)
    }

    fn validate(&self) -> Result<(), OptionsError> {
        if self.force && blank(&self.reason) {
            return Err(OptionsError::ForceWithoutReason);
        }
        if self.git_ref.trim().is_empty() {
            return Err(OptionsError::EmptyRef);
        }
        if self.git_ref.starts_with('-') {
            return Err(OptionsError::RefLooksLikeAFlag(self.git_ref.clone()));
        }
        Ok(())
    }

    /// The reason recorded with a forced deploy.
    pub fn forced_reason(&self) -> Option<&str> {
        self.reason.as_deref().filter(|_| self.force)
    }

    /// The request for one host: its job id, and whether it runs the migrations.
    pub fn request(&self, job_id: String, migrate: bool) -> JobRequest {
        JobRequest::Deploy(DeployRequest {
            app: self.app.clone(),
            r#ref: self.git_ref.clone(),
            deploy_id: job_id,
            migrate,
            allow_missing_env: self.allow_missing_env,
            forced: self.force,
            reason: self.reason.clone().unwrap_or_default(),
            release_id: self.release_id.clone().unwrap_or_default(),
        })
    }

    /// What a host records when this deploy is refused before it starts (the window).
    pub fn refusal(&self, job_id: String, why: &str) -> RecordRefusalRequest {
        RecordRefusalRequest {
            app: self.app.clone(),
            job_id,
            kind: JobKind::Deploy as i32,
            r#ref: self.git_ref.clone(),
            reason: why.to_string(),
        }
    }

    /// One request per host; host `i` migrates when `migrates(i)`.
    pub fn requests<'h>(
        &self,
        hosts: &[&'h Host],
        base: &str,
        migrates: impl Fn(usize) -> bool,
    ) -> Vec<(&'h Host, JobRequest)> {
        per_host(hosts, base, |i, id| self.request(id, migrates(i)))
    }
}

// === rollback ===

/// `hoist rollback APP [--to RELEASE] [--migrate] [--restore-db --yes]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RollbackOptions {
    pub app: String,
    /// Empty: the previous release.
    pub to_release: Option<String>,
    /// Reverse the migrations the rolled-back release ran (the app's `migrate_rollback`).
    pub migrate: bool,
    /// Restore the database from the target release's backup.
    pub restore_db: bool,
    /// The operator confirmed the data loss of `restore_db`.
    pub yes: bool,
    pub reason: Option<String>,
    /// `--of RELEASE`: reverse only that release's migrations; `current` stays.
    pub of_release: Option<String>,
    /// Reverse the migrations of releases after the current one and stay: set by the
    /// controller when some host has such a release (`schema_ahead`).
    pub ahead_only: bool,
    /// `(host, release id)`: where `to_release` (or the previous release) is on each
    /// host, as its agent resolved it before the rollback changed anything
    /// ([`crate::rollout::identity`]). A host not listed is sent `to_release` as is.
    pub targets: Vec<(String, String)>,
}

impl RollbackOptions {
    /// Validated options (usage errors, before anything is loaded or sent).
    pub fn new(
        app: String,
        to_release: Option<String>,
        migrate: bool,
        restore_db: bool,
        yes: bool,
        reason: Option<String>,
    ) -> Result<RollbackOptions, OptionsError> {
        let options = RollbackOptions {
            app,
            to_release,
            migrate,
            restore_db,
            yes,
            reason,
            ..Default::default()
        };
        options.validate()?;
        Ok(options)
    }

    /// The rollback that undoes a stopped deploy on one host: back to `to`, code only.
    pub fn undo(app: &str, to: String, reason: String) -> RollbackOptions {
        RollbackOptions {
            app: app.to_string(),
            to_release: Some(to),
            reason: Some(reason),
            ..Default::default()
        }
    }

    /// `--of RELEASE`, checked against the rest.
    pub fn of(mut self, of_release: Option<String>) -> Result<RollbackOptions, OptionsError> {
        self.of_release = of_release;
        self.validate()?;
        Ok(self)
    }

    /// A plain `rollback --migrate` (no --to, no --of) asks the hosts first.
    pub fn asks_for_ahead(&self) -> bool {
        self.migrate && self.to_release.is_none() && self.of_release.is_none()
    }

    /// What `rollback --migrate` asks every host before deciding to stay (ahead_only).
    pub fn releases_request(&self) -> ListReleasesRequest {
        ListReleasesRequest {
            app: self.app.clone(),
        }
    }

    fn validate(&self) -> Result<(), OptionsError> {
        if self.restore_db && !self.yes {
            return Err(OptionsError::RestoreWithoutYes);
        }
        if let Some(of) = &self.of_release {
            if !self.migrate {
                return Err(OptionsError::OfWithoutMigrate {
                    app: self.app.clone(),
                });
            }
            if self.to_release.is_some() || self.restore_db {
                return Err(OptionsError::OfWithTo {
                    app: self.app.clone(),
                });
            }
            if of.trim().is_empty() || of.starts_with('-') {
                return Err(OptionsError::NotAReleaseId {
                    release: of.clone(),
                    app: self.app.clone(),
                });
            }
        }
        if let Some(release) = &self.to_release
            && (release.trim().is_empty() || release.starts_with('-'))
        {
            return Err(OptionsError::NotAReleaseId {
                release: release.clone(),
                app: self.app.clone(),
            });
        }
        Ok(())
    }

    /// The request for `host`: to the release its agent resolved, if it did.
    pub fn request(&self, host: &str, job_id: String) -> JobRequest {
        let resolved = self.targets.iter().find(|(h, _)| h == host);
        // `--of` and `ahead_only` keep every host on its current release.
        let stays = self.of_release.is_some() || self.ahead_only;
        JobRequest::Rollback(RollbackRequest {
            app: self.app.clone(),
            to_release: resolved
                .map(|(_, release)| release.clone())
                .or_else(|| self.to_release.clone())
                .filter(|_| !stays)
                .unwrap_or_default(),
            job_id,
            migrate: self.migrate,
            restore_db: self.restore_db,
            confirm_restore: self.restore_db && self.yes,
            reason: self.reason.clone().unwrap_or_default(),
            of_release: self.of_release.clone().unwrap_or_default(),
            ahead_only: self.ahead_only,
        })
    }

    pub fn requests<'h>(&self, hosts: &[&'h Host], base: &str) -> Vec<(&'h Host, JobRequest)> {
        per_host(hosts, base, |i, id| self.request(&hosts[i].name, id))
    }
}

// === backups ===

/// `hoist backup APP`, `hoist backups APP`, `hoist restore APP [--backup ID] --yes`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupOptions {
    pub app: String,
}

impl BackupOptions {
    pub fn title(&self) -> String {
        format!("backup of {}", self.app)
    }

    pub fn requests<'h>(&self, hosts: &[&'h Host], base: &str) -> Vec<(&'h Host, JobRequest)> {
        per_host(hosts, base, |_, job_id| {
            JobRequest::Backup(BackupRequest {
                app: self.app.clone(),
                job_id,
            })
        })
    }

    pub fn list_request(&self) -> ListBackupsRequest {
        ListBackupsRequest {
            app: self.app.clone(),
        }
    }

    /// What `--dry-run` asks each host about pending migrations.
    pub fn pending_request(app: &str) -> PendingMigrationsRequest {
        PendingMigrationsRequest {
            app: app.to_string(),
        }
    }
}

/// `hoist restore APP [--backup ID] --yes`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    pub app: String,
    /// Empty: the default backup (chosen by the controller from the hosts' lists).
    pub backup: Option<String>,
}

impl RestoreOptions {
    /// Validated: a restore needs `--yes`.
    pub fn new(
        app: String,
        backup: Option<String>,
        yes: bool,
    ) -> Result<RestoreOptions, OptionsError> {
        if !yes {
            return Err(OptionsError::RestoreNeedsYes { app });
        }
        if let Some(id) = &backup
            && (id.trim().is_empty() || id.starts_with('-'))
        {
            return Err(OptionsError::NotAReleaseId {
                release: id.clone(),
                app,
            });
        }
        Ok(RestoreOptions { app, backup })
    }

    pub fn title(&self) -> String {
        format!("restore of {}", self.app)
    }

    /// The restore of `backup_id` on `host`, confirmed.
    pub fn request<'h>(
        &self,
        host: &'h Host,
        backup_id: &str,
        base: &str,
    ) -> Vec<(&'h Host, JobRequest)> {
        per_host(&[host], base, |_, job_id| {
            JobRequest::Restore(RestoreRequest {
                app: self.app.clone(),
                backup_id: backup_id.to_string(),
                job_id,
                confirm: true,
            })
        })
    }
}

// === restart ===

/// `hoist restart APP [--service NAME]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestartOptions {
    pub app: String,
    /// Empty: every service of the app.
    pub service: Option<String>,
}

impl RestartOptions {
    /// `restart of APP [SERVICE]`.
    pub fn title(&self) -> String {
        match &self.service {
            Some(service) => format!("restart of {} {service}", self.app),
            None => format!("restart of {}", self.app),
        }
    }

    pub fn requests<'h>(&self, hosts: &[&'h Host], base: &str) -> Vec<(&'h Host, JobRequest)> {
        per_host(hosts, base, |_, job_id| {
            JobRequest::Restart(RestartRequest {
                app: self.app.clone(),
                service: self.service.clone().unwrap_or_default(),
                job_id,
            })
        })
    }
}

// === stop / start ===

/// `hoist stop APP [--service NAME]` or `hoist start APP [--service NAME]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToggleOptions {
    pub app: String,
    /// Empty: every service of the app.
    pub service: Option<String>,
    /// `stop` or `start`.
    pub start: bool,
}

impl ToggleOptions {
    pub fn verb(&self) -> &'static str {
        if self.start { "start" } else { "stop" }
    }

    /// `stop of APP [SERVICE]`.
    pub fn title(&self) -> String {
        match &self.service {
            Some(service) => format!("{} of {} {service}", self.verb(), self.app),
            None => format!("{} of {}", self.verb(), self.app),
        }
    }

    pub fn requests<'h>(&self, hosts: &[&'h Host], base: &str) -> Vec<(&'h Host, JobRequest)> {
        per_host(hosts, base, |_, job_id| {
            let (app, service) = (self.app.clone(), self.service.clone().unwrap_or_default());
            if self.start {
                JobRequest::Start(StartRequest {
                    app,
                    service,
                    job_id,
                })
            } else {
                JobRequest::Stop(StopRequest {
                    app,
                    service,
                    job_id,
                })
            }
        })
    }
}

// === tasks ===

/// `hoist run APP TASK`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskOptions {
    pub app: String,
    pub task: String,
}

impl TaskOptions {
    /// `task TASK of APP`.
    pub fn title(&self) -> String {
        format!("task {} of {}", self.task, self.app)
    }

    pub fn requests<'h>(&self, hosts: &[&'h Host], base: &str) -> Vec<(&'h Host, JobRequest)> {
        per_host(hosts, base, |_, job_id| {
            JobRequest::RunTask(RunTaskRequest {
                app: self.app.clone(),
                task: self.task.clone(),
                job_id,
            })
        })
    }
}

// === logs ===

/// The most lines `hoist logs --lines` asks of each source (the agents' limit).
pub const MAX_LOG_LINES: u32 = 10_000;
/// The longest `hoist logs -f --for` (the agents' limit).
pub const MAX_LOG_FOLLOW: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// `hoist logs APP [--source NAME] [--lines N] [-f [--for D]] [--grep PATTERN]`,
/// checked where it is built.
#[derive(Clone, Debug)]
pub struct LogsOptions {
    pub app: String,
    pub source: Option<String>,
    pub lines: u32,
    pub follow: Option<std::time::Duration>,
    pub grep: Option<String>,
}

/// `hoist logs` options no agent would take: a usage error.
#[derive(Debug, thiserror::Error)]
pub enum LogsOptionsError {
    #[error("--lines {0} is more than {MAX_LOG_LINES}; ask for fewer")]
    TooManyLines(u32),
    #[error("--lines 0 shows nothing; ask for 1 to {MAX_LOG_LINES} lines")]
    NoLines,
    #[error("--for is at most 24h; follow again after that")]
    FollowTooLong,
    #[error("--grep {pattern:?}: {error}")]
    Grep {
        pattern: String,
        error: hoist_config::PatternError,
    },
}

impl LogsOptions {
    pub fn new(
        app: String,
        source: Option<String>,
        lines: u32,
        follow: Option<std::time::Duration>,
        grep: Option<String>,
    ) -> Result<LogsOptions, LogsOptionsError> {
        if lines > MAX_LOG_LINES {
            return Err(LogsOptionsError::TooManyLines(lines));
        }
        if lines == 0 {
            return Err(LogsOptionsError::NoLines);
        }
        if follow.is_some_and(|f| f > MAX_LOG_FOLLOW) {
            return Err(LogsOptionsError::FollowTooLong);
        }
        if let Some(pattern) = &grep
            && let Err(error) = hoist_config::Pattern::parse(pattern)
        {
            let shown: String = pattern.chars().take(40).collect();
            return Err(LogsOptionsError::Grep {
                pattern: shown,
                error,
            });
        }
        Ok(LogsOptions {
            app,
            source,
            lines,
            follow,
            grep,
        })
    }

    pub fn request(&self) -> LogsRequest {
        LogsRequest {
            app: self.app.clone(),
            source: self.source.clone().unwrap_or_default(),
            lines: self.lines,
            follow_ms: self.follow.map_or(0, |f| f.as_millis().max(1) as u64),
            grep: self.grep.clone().unwrap_or_default(),
        }
    }
}

// === env ===

/// `hoist env APP set|unset ... [--restart]`: parsed and checked by `commands::env`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvChange {
    Set(Vec<EnvVar>),
    Unset(Vec<String>),
}

impl EnvChange {
    /// `env set of APP A B`, `env unset of APP A`.
    pub fn title(&self, app: &str) -> String {
        match self {
            EnvChange::Set(vars) => {
                let keys: Vec<&str> = vars.iter().map(|v| v.key.as_str()).collect();
                format!("env set of {app} {}", keys.join(" "))
            }
            EnvChange::Unset(keys) => format!("env unset of {app} {}", keys.join(" ")),
        }
    }

    pub fn requests<'h>(
        &self,
        hosts: &[&'h Host],
        base: &str,
        app: &str,
        restart: bool,
    ) -> Vec<(&'h Host, JobRequest)> {
        per_host(hosts, base, |_, job_id| match self {
            EnvChange::Set(vars) => JobRequest::EnvSet(EnvSetRequest {
                app: app.to_string(),
                vars: vars.clone(),
                restart,
                job_id,
            }),
            EnvChange::Unset(keys) => JobRequest::EnvUnset(EnvUnsetRequest {
                app: app.to_string(),
                keys: keys.clone(),
                restart,
                job_id,
            }),
        })
    }
}

// === the rollout's operation ===

/// What a rollout does on each host.
#[derive(Clone, Debug)]
pub enum Operation {
    Deploy(DeployOptions),
    Rollback(RollbackOptions),
}

impl Operation {
    pub fn app(&self) -> &str {
        match self {
            Operation::Deploy(o) => &o.app,
            Operation::Rollback(o) => &o.app,
        }
    }

    /// The job kind, the first word of its ids.
    pub fn kind(&self) -> &'static str {
        match self {
            Operation::Deploy(_) => "deploy",
            Operation::Rollback(_) => "rollback",
        }
    }

    /// `deploy of web main`, `rollback of web`, `rollback of web to R`.
    pub fn title(&self) -> String {
        match self {
            Operation::Deploy(o) => format!("deploy of {} {}", o.app, o.git_ref),
            Operation::Rollback(o) => match &o.to_release {
                Some(to) => format!("rollback of {} to {to}", o.app),
                None => format!("rollback of {}", o.app),
            },
        }
    }

    pub fn deploy(&self) -> Option<&DeployOptions> {
        match self {
            Operation::Deploy(o) => Some(o),
            Operation::Rollback(_) => None,
        }
    }

    /// Who migrates: `none` for rollbacks (they never migrate forwards).
    pub fn migrate_on(&self) -> MigrateOn {
        self.deploy().map_or(MigrateOn::None, |o| o.migrate_on)
    }

    pub fn migrates(&self) -> bool {
        self.migrate_on() != MigrateOn::None
    }

    /// The request for `host`.
    pub fn request(&self, host: &str, job_id: String, migrate: bool) -> JobRequest {
        match self {
            Operation::Deploy(o) => o.request(job_id, migrate),
            Operation::Rollback(o) => o.request(host, job_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        fleet::{Amount, Strategy},
        rollout::plan::{Plan, Shape},
    };

    fn hosts() -> Vec<Host> {
        ["web-1", "web-2", "web-3"]
            .iter()
            .enumerate()
            .map(|(i, name)| Host {
                name: name.to_string(),
                address: format!("127.0.0.1:{}", 7443 + i),
                groups: vec![],
                metrics: None,
            })
            .collect()
    }

    fn shape(migrate_on: MigrateOn) -> Shape {
        Shape {
            strategy: Strategy::All,
            batch: Amount::Count(1),
            canary: Amount::Count(1),
            bake: std::time::Duration::ZERO,
            max_unhealthy: Amount::Count(0),
            migrate_on,
            concurrency: 16,
        }
    }

    fn options() -> DeployOptions {
        DeployOptions {
            app: "carbex".into(),
            git_ref: "main".into(),
            migrate_on: MigrateOn::First,
            allow_missing_env: false,
            force: false,
            reason: None,
            release_id: None,
        }
    }

    fn migrates(options: &DeployOptions, hosts: &[&Host]) -> Vec<bool> {
        let plan = Plan::new(hosts, shape(options.migrate_on));
        let migrator = plan.migrator(|_| true);
        options
            .requests(hosts, "deploy-x", |i| {
                options.migrate_on == MigrateOn::All || Some(i) == migrator
            })
            .into_iter()
            .map(|(_, r)| match r {
                JobRequest::Deploy(d) => d.migrate,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn migrate_on_picks_who_migrates() {
        let all = hosts();
        let hosts: Vec<&Host> = all.iter().collect();
        let mut options = options();
        assert_eq!(migrates(&options, &hosts), [true, false, false]);
        options.migrate_on = MigrateOn::All;
        assert_eq!(migrates(&options, &hosts), [true, true, true]);
        options.migrate_on = MigrateOn::None;
        assert_eq!(migrates(&options, &hosts), [false, false, false]);
    }

    #[test]
    fn deploy_requests_carry_the_options() {
        let all = hosts();
        let hosts: Vec<&Host> = all.iter().skip(1).collect();
        let mut options = options();
        options.force = true;
        options.reason = Some("hotfix".into());
        options.allow_missing_env = true;
        let requests = options.requests(&hosts, "deploy-20261122T101500Z-a1b2c3", |i| i == 0);
        let JobRequest::Deploy(first) = &requests[0].1 else {
            panic!("not a deploy")
        };
        assert_eq!(requests[0].0.name, "web-2");
        assert_eq!(first.deploy_id, "deploy-20261122T101500Z-a1b2c3-web-2");
        assert_eq!(requests[0].1.job_id(), first.deploy_id);
        assert!(first.migrate && first.forced && first.allow_missing_env);
        assert_eq!(first.reason, "hotfix");
        assert_eq!(first.r#ref, "main");
    }

    #[test]
    fn force_needs_a_reason() {
        let mut options = options();
        options.force = true;
        assert!(
            options
                .validate()
                .unwrap_err()
                .to_string()
                .contains("--reason")
        );
        options.reason = Some("  ".into());
        assert!(
            options
                .validate()
                .unwrap_err()
                .to_string()
                .contains("--reason")
        );
        options.reason = Some("window override for incident 42".into());
        assert!(options.validate().is_ok());
        options.git_ref = "--upload-pack=x".into();
        assert!(
            options
                .validate()
                .unwrap_err()
                .to_string()
                .contains("starts with '-'")
        );
    }

    #[test]
    fn restore_db_needs_yes() {
        let mut options = RollbackOptions {
            app: "carbex".into(),
            restore_db: true,
            ..Default::default()
        };
        let err = options.validate().unwrap_err().to_string();
        assert!(
            err.contains("restores the database from the release's backup"),
            "{err}"
        );
        assert!(err.contains("--yes"), "{err}");
        options.yes = true;
        assert!(options.validate().is_ok());
        let all = hosts();
        let requests = options.requests(&[&all[0]], "rollback-y");
        let JobRequest::Rollback(r) = &requests[0].1 else {
            panic!("not a rollback")
        };
        assert!(r.restore_db && r.confirm_restore);
        assert_eq!(r.to_release, "");
        assert_eq!(r.job_id, "rollback-y-web-1");

        let plain = RollbackOptions {
            app: "carbex".into(),
            yes: true,
            ..Default::default()
        };
        let requests = plain.requests(&[&all[0]], "rollback-y");
        let JobRequest::Rollback(r) = &requests[0].1 else {
            panic!("not a rollback")
        };
        assert!(!r.restore_db && !r.confirm_restore);
        let bad = RollbackOptions {
            app: "carbex".into(),
            to_release: Some("-x".into()),
            ..Default::default()
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("hoist releases carbex")
        );
    }

    #[test]
    fn of_release_reverses_one_release_and_keeps_current() {
        let base = |migrate, to: Option<&str>, restore_db| RollbackOptions {
            app: "carbex".into(),
            to_release: to.map(str::to_string),
            migrate,
            restore_db,
            yes: restore_db,
            ..Default::default()
        };
        let err = base(false, None, false).of(Some("r3".into())).unwrap_err();
        assert!(err.to_string().contains("add --migrate"), "{err}");
        for bad in [base(true, Some("r1"), false), base(true, None, true)] {
            let err = bad.of(Some("r3".into())).unwrap_err().to_string();
            assert!(
                err.contains("does not go with --to or --restore-db"),
                "{err}"
            );
        }
        let err = base(true, None, false).of(Some("-x".into())).unwrap_err();
        assert!(err.to_string().contains("not a release id"), "{err}");
        let options = base(true, None, false).of(Some("r3".into())).unwrap();
        assert!(!options.asks_for_ahead(), "--of names the release itself");
        assert!(base(true, None, false).asks_for_ahead());
        assert!(!base(true, Some("r1"), false).asks_for_ahead());
        let all = hosts();
        let JobRequest::Rollback(r) = &options.requests(&[&all[0]], "rb")[0].1 else {
            panic!("not a rollback")
        };
        assert_eq!(
            (r.of_release.as_str(), r.migrate, r.ahead_only),
            ("r3", true, false)
        );
        assert!(
            RestoreOptions::new("carbex".into(), None, false)
                .unwrap_err()
                .to_string()
                .contains("add --yes")
        );
        let restore = RestoreOptions::new("carbex".into(), None, true).unwrap();
        let JobRequest::Restore(r) = &restore.request(&all[1], "r2.before-r3", "rs")[0].1 else {
            panic!("not a restore")
        };
        assert!(r.confirm && r.backup_id == "r2.before-r3" && r.job_id == "rs-web-2");
    }

    #[test]
    fn restart_requests() {
        let all = hosts();
        let options = RestartOptions {
            app: "carbex".into(),
            service: Some("php8.2-fpm".into()),
        };
        let requests = options.requests(&[&all[2]], "restart-z");
        let JobRequest::Restart(r) = &requests[0].1 else {
            panic!("not a restart")
        };
        assert_eq!(
            (r.app.as_str(), r.service.as_str(), r.job_id.as_str()),
            ("carbex", "php8.2-fpm", "restart-z-web-3")
        );
    }

    #[test]
    fn logs_options_are_checked_where_they_are_built() {
        let opts = |lines, follow: Option<u64>, grep: Option<&str>| {
            LogsOptions::new(
                "shop".into(),
                Some("laravel".into()),
                lines,
                follow.map(std::time::Duration::from_secs),
                grep.map(String::from),
            )
        };
        let request = opts(50, Some(90), Some("ERROR|WARN")).unwrap().request();
        assert_eq!(request.app, "shop");
        assert_eq!(request.source, "laravel");
        assert_eq!(request.lines, 50);
        assert_eq!(request.follow_ms, 90_000);
        assert_eq!(request.grep, "ERROR|WARN");
        assert_eq!(opts(1, None, None).unwrap().request().follow_ms, 0);
        for (bad, says) in [
            (opts(0, None, None), "--lines 0"),
            (opts(10_001, None, None), "more than 10000"),
            (opts(1, Some(24 * 3600 + 1), None), "--for is at most 24h"),
            (opts(1, None, Some("(a|b)")), "not supported by --grep"),
        ] {
            let err = bad.unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
    }
}
