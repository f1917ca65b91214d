//! The options of the commands that change what a host runs — `hoist deploy`,
//! `hoist rollback` and `hoist restart` — and the job requests they send. Deploys and
//! rollbacks go through the fleet rollout (`rollout`); restarts go host by host, and
//! the first host that does not succeed stops the command.
//!
//! Who migrates is decided by the controller, never by the agents: the rollout picks
//! the host (`migrate_on`) and sets `migrate` in that host's request only.

use hoist_proto::v1::{DeployRequest, RestartRequest, RollbackRequest};

use crate::{
    Failure,
    fleet::{Host, MigrateOn},
    jobs::{self, JobRequest, Report, Session},
};

fn blank(reason: &Option<String>) -> bool {
    reason.as_deref().is_none_or(|r| r.trim().is_empty())
}

pub(crate) fn new_id(kind: &str) -> Result<String, Failure> {
    jobs::new_job_id(kind).map_err(|e| {
        Failure::failed(anyhow::anyhow!(
            "cannot read /dev/urandom for a job id: {e}"
        ))
    })
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
}

impl DeployOptions {
    /// Usage errors, before anything is sent.
    pub fn validate(&self) -> Result<(), String> {
        if self.force && blank(&self.reason) {
            return Err(
                "--force needs --reason TEXT: the reason is recorded in every \
                        host's journal with the override"
                    .into(),
            );
        }
        if self.git_ref.trim().is_empty() {
            return Err("--ref is empty; name a branch, tag or commit".into());
        }
        if self.git_ref.starts_with('-') {
            return Err(format!(
                "ref {:?} starts with '-'; name a branch, tag or commit",
                self.git_ref
            ));
        }
        Ok(())
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
        })
    }

    /// One request per host, ids `<base_id>-<host>`; migrations per `migrate_on`
    /// (`first`: the first of `hosts`).
    pub fn requests<'h>(&self, hosts: &[&'h Host], base_id: &str) -> Vec<(&'h Host, JobRequest)> {
        hosts
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let migrate = match self.migrate_on {
                    MigrateOn::First => i == 0,
                    MigrateOn::All => true,
                    MigrateOn::None => false,
                };
                let job_id = jobs::host_job_id(base_id, &host.name);
                (*host, self.request(job_id, migrate))
            })
            .collect()
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
}

impl RollbackOptions {
    pub fn validate(&self) -> Result<(), String> {
        if self.restore_db && !self.yes {
            return Err(
                "--restore-db restores the database from the release's backup, \
                        losing every write made since that backup was taken; add --yes \
                        to confirm"
                    .into(),
            );
        }
        if let Some(release) = &self.to_release
            && (release.trim().is_empty() || release.starts_with('-'))
        {
            return Err(format!(
                "--to {release:?} is not a release id; `hoist releases {}` lists them",
                self.app
            ));
        }
        Ok(())
    }

    /// The request for one host.
    pub fn request(&self, job_id: String) -> JobRequest {
        JobRequest::Rollback(RollbackRequest {
            app: self.app.clone(),
            to_release: self.to_release.clone().unwrap_or_default(),
            job_id,
            migrate: self.migrate,
            restore_db: self.restore_db,
            confirm_restore: self.restore_db && self.yes,
            reason: self.reason.clone().unwrap_or_default(),
        })
    }

    pub fn requests<'h>(&self, hosts: &[&'h Host], base_id: &str) -> Vec<(&'h Host, JobRequest)> {
        hosts
            .iter()
            .map(|host| (*host, self.request(jobs::host_job_id(base_id, &host.name))))
            .collect()
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
    pub fn requests<'h>(&self, hosts: &[&'h Host], base_id: &str) -> Vec<(&'h Host, JobRequest)> {
        hosts
            .iter()
            .map(|host| {
                let request = RestartRequest {
                    app: self.app.clone(),
                    service: self.service.clone().unwrap_or_default(),
                    job_id: jobs::host_job_id(base_id, &host.name),
                };
                (*host, JobRequest::Restart(request))
            })
            .collect()
    }
}

/// Restarts the app's services on `hosts` one after another.
pub async fn restart(
    session: &mut Session<'_, '_>,
    hosts: &[&Host],
    options: &RestartOptions,
) -> Result<Report, Failure> {
    let base = new_id("restart")?;
    let title = match &options.service {
        Some(service) => format!("restart of {} {service}", options.app),
        None => format!("restart of {}", options.app),
    };
    Ok(session
        .run_in_order(&title, options.requests(hosts, &base))
        .await)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn options() -> DeployOptions {
        DeployOptions {
            app: "carbex".into(),
            git_ref: "main".into(),
            migrate_on: MigrateOn::First,
            allow_missing_env: false,
            force: false,
            reason: None,
        }
    }

    fn migrates(options: &DeployOptions, hosts: &[&Host]) -> Vec<bool> {
        options
            .requests(hosts, "deploy-x")
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
        let requests = options.requests(&hosts, "deploy-20261122T101500Z-a1b2c3");
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
        assert!(options.validate().unwrap_err().contains("--reason"));
        options.reason = Some("  ".into());
        assert!(options.validate().unwrap_err().contains("--reason"));
        options.reason = Some("window override for incident 42".into());
        assert_eq!(options.validate(), Ok(()));
        options.git_ref = "--upload-pack=x".into();
        assert!(options.validate().unwrap_err().contains("starts with '-'"));
    }

    #[test]
    fn restore_db_needs_yes() {
        let mut options = RollbackOptions {
            app: "carbex".into(),
            restore_db: true,
            ..Default::default()
        };
        let err = options.validate().unwrap_err();
        assert!(
            err.contains("restores the database from the release's backup"),
            "{err}"
        );
        assert!(err.contains("--yes"), "{err}");
        options.yes = true;
        assert_eq!(options.validate(), Ok(()));
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
                .contains("hoist releases carbex")
        );
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
}
