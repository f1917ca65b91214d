//! `hoist deploy`, `hoist rollback` and `hoist restart`: the commands that change
//! what a host runs. Deploys and rollbacks go through the fleet rollout
//! ([`crate::rollout`]); restarts go host by host, and the first host that does not
//! succeed stops the command.

use std::time::Duration;

use clap::Args;

use crate::{
    agents::ids,
    commands::{Ctx, Failure, Global, JOB_CONNECT_TIMEOUT, finish, parse_duration, usage},
    fleet::{Amount, DeployDefaults, MigrateOn, Strategy, ValueError, parse_concurrency},
    rollout::{
        self, Rollout, RolloutError,
        operation::{DeployOptions, Operation, RestartOptions, RollbackOptions},
        plan::Shape,
        progress,
    },
};

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// The app, as named in the agents' config.
    pub app: String,
    /// Branch, tag or commit to deploy.
    #[arg(long = "ref", value_name = "REF")]
    pub git_ref: String,
    /// Who runs the app's migrations: first (the first host, before any other switches),
    /// all, or none. Default: `migrate_on` in [deploy] of the fleet file.
    #[arg(long, value_name = "first|all|none", value_parser = parse_migrate_on)]
    pub migrate_on: Option<MigrateOn>,
    /// Deploy even though keys of the release's .env.example are missing from .env.
    #[arg(long)]
    pub allow_missing_env: bool,
    /// Override a deploy window; needs --reason, and both are recorded in the journal.
    #[arg(long)]
    pub force: bool,
    /// Why this deploy (required with --force); recorded in every host's journal.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Watch window after the canary and after each batch: checks stay green, gates
    /// hold. Default: `bake` in [deploy].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub bake: Option<Duration>,
    #[command(flatten)]
    pub rollout: RolloutFlags,
    /// Limit for connecting to each agent; the deploy itself takes as long as it needs.
    #[arg(long, default_value = JOB_CONNECT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// The app, as named in the agents' config.
    pub app: String,
    /// Release id to return to (`hoist releases APP` lists them); default: the previous.
    #[arg(long = "to", value_name = "RELEASE")]
    pub to_release: Option<String>,
    /// Also reverse the migrations of the releases left, each from its own release (the
    /// app's migrate_rollback), with a backup first and maintenance around. When a
    /// release after the current one still has its migrations applied (it was rolled
    /// back automatically), only those are reversed and the current release stays.
    #[arg(long)]
    pub migrate: bool,
    /// With --migrate: reverse only this release's migrations (from its directory) and
    /// keep the current release.
    #[arg(long = "of", value_name = "RELEASE", requires = "migrate")]
    pub of_release: Option<String>,
    /// Also restore the database from the release's backup (loses writes since; needs --yes).
    #[arg(long)]
    pub restore_db: bool,
    /// Confirm --restore-db.
    #[arg(long)]
    pub yes: bool,
    /// Why; recorded in every host's journal.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    #[command(flatten)]
    pub rollout: RolloutFlags,
    /// Limit for connecting to each agent.
    #[arg(long, default_value = JOB_CONNECT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Args, Debug)]
pub struct RestartArgs {
    /// The app, as named in the agents' config.
    pub app: String,
    /// Only this service (as named in [[app.services]], or a service of the app's
    /// compose project).
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
    /// Limit for connecting to each agent.
    #[arg(long, default_value = JOB_CONNECT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Rollout flags shared by `hoist deploy` and `hoist rollback`; unset flags take the
/// fleet file's `[deploy]` values.
#[derive(Args, Debug, Clone, Default, PartialEq)]
pub struct RolloutFlags {
    /// all (every host at once), rolling (batches, a bake after each) or canary (the
    /// canary hosts and a bake first). Default: `strategy` in [deploy].
    #[arg(long, value_name = "all|rolling|canary", value_parser = parse_strategy)]
    pub strategy: Option<Strategy>,
    /// Hosts per batch, a number or a percentage of the selected hosts.
    #[arg(long, value_name = "N|N%", value_parser = parse_positive)]
    pub batch: Option<Amount>,
    /// Canary hosts (strategy canary), a number or a percentage.
    #[arg(long, value_name = "N|N%", value_parser = parse_positive)]
    pub canary: Option<Amount>,
    /// Fleet-wide failure budget: failures tolerated before the rollout stops and rolls
    /// back what it switched.
    #[arg(long, value_name = "N|N%", value_parser = parse_amount)]
    pub max_unhealthy: Option<Amount>,
    /// Hosts whose jobs run at once within a phase and when rolling back (1 to 1024).
    /// Default: `concurrency` in [deploy] (64).
    #[arg(long, value_name = "N", value_parser = parse_concurrency)]
    pub concurrency: Option<usize>,
    /// Wait up to this long for locks held by someone else (default: fail at once).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub lock_wait: Option<Duration>,
    /// Print the plan (batches, who migrates, gates, window) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

fn parse_strategy(s: &str) -> Result<Strategy, ValueError> {
    s.parse()
}

fn parse_amount(s: &str) -> Result<Amount, ValueError> {
    s.parse()
}

fn parse_positive(s: &str) -> Result<Amount, ValueError> {
    match s.parse()? {
        Amount::Count(0) | Amount::Percent(0) => Err(ValueError(format!(
            "{s} hosts would never deploy; use at least 1, e.g. 1 or 10%"
        ))),
        amount => Ok(amount),
    }
}

impl RolloutFlags {
    /// The rollout's shape: these flags over the fleet's `[deploy]`.
    pub fn shape(
        &self,
        defaults: &DeployDefaults,
        bake: Option<Duration>,
        migrate_on: MigrateOn,
    ) -> Shape {
        Shape {
            strategy: self.strategy.unwrap_or(defaults.strategy),
            batch: self.batch.unwrap_or(defaults.batch),
            canary: self.canary.unwrap_or(defaults.canary),
            bake: bake.unwrap_or(defaults.bake),
            max_unhealthy: self.max_unhealthy.unwrap_or(defaults.max_unhealthy),
            migrate_on,
            concurrency: self.concurrency.unwrap_or(defaults.concurrency),
        }
    }
}

fn parse_migrate_on(s: &str) -> Result<MigrateOn, ValueError> {
    s.parse()
}

/// `hoist deploy APP --ref REF ...`.
pub async fn deploy(global: &Global, args: DeployArgs) -> Result<(), Failure> {
    let mut options = DeployOptions::new(
        args.app,
        args.git_ref,
        args.migrate_on.unwrap_or_default(),
        args.allow_missing_env,
        args.force,
        args.reason,
    )
    .map_err(usage)?;
    let mut ctx = Ctx::load(global)?;
    options.migrate_on = args.migrate_on.unwrap_or(ctx.fleet.deploy.migrate_on);
    let shape = args
        .rollout
        .shape(&ctx.fleet.deploy, args.bake, options.migrate_on);
    run(
        &mut ctx,
        global,
        &args.rollout,
        shape,
        args.timeout,
        Operation::Deploy(options),
    )
    .await
}

/// `hoist rollback APP [--to RELEASE] ...`.
pub async fn rollback(global: &Global, args: RollbackArgs) -> Result<(), Failure> {
    let options = RollbackOptions::new(
        args.app,
        args.to_release,
        args.migrate,
        args.restore_db,
        args.yes,
        args.reason,
    )
    .and_then(|o| o.of(args.of_release))
    .map_err(usage)?;
    let mut ctx = Ctx::load(global)?;
    let options = schema_ahead(&ctx, options, args.timeout).await;
    if options.restore_db {
        any_backup(&ctx, &options.app, args.timeout).await?;
    }
    let shape = args
        .rollout
        .shape(&ctx.fleet.deploy, Some(Duration::ZERO), MigrateOn::None);
    run(
        &mut ctx,
        global,
        &args.rollout,
        shape,
        args.timeout,
        Operation::Rollback(options),
    )
    .await
}

/// A plain `rollback --migrate` first asks every host for releases after the current
/// one whose migrations are still applied (a release rolled back automatically): when
/// any host has one, the whole fleet stays on its release and only those migrations
/// are reversed (`ahead_only`), so no host moves back a release for another's schema.
async fn schema_ahead(
    ctx: &Ctx,
    mut options: RollbackOptions,
    timeout: Duration,
) -> RollbackOptions {
    if !options.asks_for_ahead() {
        return options;
    }
    let request = options.releases_request();
    let hosts: Vec<_> = ctx.hosts.iter().collect();
    let answers = crate::agents::fanout::ask_all(&hosts, &ctx.creds, timeout, |mut client| {
        let request = request.clone();
        async move {
            client
                .list_releases(request)
                .await
                .map(|r| r.into_inner().releases)
        }
    })
    .await;
    options.ahead_only = answers
        .iter()
        .filter_map(|a| a.result.as_ref().ok())
        .flatten()
        .any(|r| r.schema_ahead);
    options
}

/// `--restore-db` restores on the host that holds the backup (the one that migrated);
/// the others switch code only. So at least one selected host must hold a backup, or
/// nothing would be restored anywhere.
async fn any_backup(ctx: &Ctx, app: &str, timeout: Duration) -> Result<(), Failure> {
    let request = crate::rollout::operation::BackupOptions {
        app: app.to_string(),
    }
    .list_request();
    let hosts: Vec<_> = ctx.hosts.iter().collect();
    let answers = crate::agents::fanout::ask_all(&hosts, &ctx.creds, timeout, |mut client| {
        let request = request.clone();
        async move {
            client
                .list_backups(request)
                .await
                .map(|r| r.into_inner().backups)
        }
    })
    .await;
    let answered = answers.iter().any(|a| a.result.is_ok());
    let any = answers
        .iter()
        .filter_map(|a| a.result.as_ref().ok())
        .any(|b| !b.is_empty());
    if answered && !any {
        return Err(Failure::failed(anyhow::anyhow!(
            "no selected host holds a backup of {app}: --restore-db would restore nothing; \
             `hoist backups {app}` lists them"
        )));
    }
    Ok(())
}

async fn run(
    ctx: &mut Ctx,
    global: &Global,
    flags: &RolloutFlags,
    shape: Shape,
    timeout: Duration,
    op: Operation,
) -> Result<(), Failure> {
    let plan = Rollout {
        fleet: &ctx.fleet,
        hosts: ctx.hosts.iter().collect(),
        creds: &ctx.creds,
        timeout,
        shape,
        lock_wait: flags.lock_wait.unwrap_or(Duration::ZERO),
        dry_run: flags.dry_run,
        live: progress::live_possible(global.json),
    };
    rollout::run(plan, op, &mut ctx.out, &mut ctx.interrupt)
        .await
        .map_err(|err| match err {
            RolloutError::Gate(_) | RolloutError::Window(_) => usage(err),
            _ => Failure::failed_with(err),
        })
}

/// `hoist restart APP [--service NAME]`: host by host.
pub async fn restart(global: &Global, args: RestartArgs) -> Result<(), Failure> {
    let options = RestartOptions {
        app: args.app,
        service: args.service,
    };
    let mut ctx = Ctx::load(global)?;
    let base = ids::new_job_id("restart").map_err(Failure::failed)?;
    let (hosts, mut session) = ctx.session(args.timeout, 2);
    let report = session
        .run_in_order(&options.title(), options.requests(&hosts, &base))
        .await;
    finish(&report, &mut ctx.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_fleet_defaults() {
        let defaults = DeployDefaults::default();
        let flags = RolloutFlags {
            strategy: Some(Strategy::Canary),
            max_unhealthy: Some(Amount::Percent(10)),
            ..Default::default()
        };
        let shape = flags.shape(&defaults, Some(Duration::from_secs(30)), MigrateOn::All);
        assert_eq!(shape.strategy, Strategy::Canary);
        assert_eq!(shape.batch, defaults.batch);
        assert_eq!(shape.canary, defaults.canary);
        assert_eq!(shape.bake, Duration::from_secs(30));
        assert_eq!(shape.max_unhealthy, Amount::Percent(10));
        assert_eq!(shape.migrate_on, MigrateOn::All);
        assert_eq!(
            flags.shape(&defaults, None, MigrateOn::None).bake,
            defaults.bake
        );
        assert!(
            parse_positive("0")
                .unwrap_err()
                .to_string()
                .contains("never deploy")
        );
        assert_eq!(parse_positive("2"), Ok(Amount::Count(2)));
    }
}
