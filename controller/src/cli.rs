//! The command line: the clap definitions of `hoist` and dispatch to each command's
//! module in [`crate::commands`]. Nothing here decides anything.

use clap::{CommandFactory as _, Parser, Subcommand};

use crate::commands::{
    Failure, Global, attach, backup, ca, completions, demo, deploy, env, lock, log, logs, releases,
    run, services, status, targets, top,
};

#[derive(Parser, Debug)]
#[command(
    name = "hoist",
    version,
    about = "Deploy web applications to a fleet of hoistd agents over mutual TLS",
    after_help = "Start with `hoist demo`: it runs the whole job on this machine with no setup."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Make the fleet CA and issue agent and user certificates.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Health, release and resources of every host.
    Status(status::StatusArgs),
    /// Roll a ref of an app out to the selected hosts: locks first, canary and batches
    /// with a bake after each, a fleet-wide failure budget, rollback of what it switched.
    Deploy(deploy::DeployArgs),
    /// Return an app to an earlier release (the previous one unless --to names one),
    /// batch by batch.
    Rollback(deploy::RollbackArgs),
    /// Restart or reload an app's services (all of them unless --service names one).
    Restart(deploy::RestartArgs),
    /// Stop an app's services (all of them unless --service names one).
    Stop(services::ToggleArgs),
    /// Start an app's services (all of them unless --service names one), then run its
    /// checks.
    Start(services::ToggleArgs),
    /// Run one of an app's declared tasks ([app.tasks]) in its current release.
    Run(run::RunArgs),
    /// An app's releases on each host: current, previous, backups.
    Releases(releases::ReleasesArgs),
    /// Take a database backup now with the app's backup step (on the first selected
    /// host).
    Backup(backup::BackupArgs),
    /// An app's database backups on each host: id, size, age, release, why.
    Backups(backup::BackupsArgs),
    /// Restore the database from a backup (default: the one taken before the release
    /// that was rolled back), inside maintenance_on/off; code stays. Needs --yes.
    Restore(backup::RestoreArgs),
    /// An app's recent jobs, or one job's full deployment log (--job).
    Log(log::LogArgs),
    /// Follow a job (running or finished) from its first event.
    Attach(attach::AttachArgs),
    /// The last lines of an app's declared log sources ([[app.logs]]) on each host;
    /// -f follows new ones.
    Logs(logs::LogsArgs),
    /// Show or change an app's .env (values hidden unless --show).
    Env(env::EnvArgs),
    /// Stop deploys of an app until `hoist unlock`.
    Lock(lock::LockArgs),
    /// Release an app's manual lock (any lock with --force).
    Unlock(lock::UnlockArgs),
    /// Live full-screen view of the fleet's health and resources (`--once`: one frame).
    Top(top::TopArgs),
    /// Prometheus file_sd JSON for the fleet's metrics endpoints.
    Targets,
    /// Run the whole job on this machine: a CA, three local agents, status.
    Demo,
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell.
    Completions(completions::CompletionsArgs),
}

/// Runs the command `cli` names.
pub async fn run(cli: Cli) -> Result<(), Failure> {
    let global = cli.global;
    match cli.command {
        Command::Ca(command) => ca::run(&global, command),
        Command::Status(args) => status::run(&global, args).await,
        Command::Deploy(args) => deploy::deploy(&global, args).await,
        Command::Rollback(args) => deploy::rollback(&global, args).await,
        Command::Restart(args) => deploy::restart(&global, args).await,
        Command::Stop(args) => services::run(&global, args, false).await,
        Command::Start(args) => services::run(&global, args, true).await,
        Command::Run(args) => run::run(&global, args).await,
        Command::Logs(args) => logs::run(&global, args).await,
        Command::Releases(args) => releases::run(&global, args).await,
        Command::Backup(args) => backup::backup(&global, args).await,
        Command::Backups(args) => backup::backups(&global, args).await,
        Command::Restore(args) => backup::restore(&global, args).await,
        Command::Log(args) => log::run(&global, args).await,
        Command::Attach(args) => attach::run(&global, args).await,
        Command::Env(args) => env::run(&global, args).await,
        Command::Lock(args) => lock::lock_command(&global, args).await,
        Command::Unlock(args) => lock::unlock_command(&global, args).await,
        Command::Top(args) => top::run(&global, args).await,
        Command::Targets => targets::run(&global),
        Command::Demo => demo::run().await.map_err(Failure::failed),
        Command::Completions(args) => completions::run(args, Cli::command()),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use std::time::Duration;

    use super::*;
    use crate::{
        commands::env::{EnvAction, EnvArgs},
        fleet::{self, MigrateOn},
    };

    #[test]
    fn cli_is_consistent() {
        super::Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("hoist").chain(args.iter().copied()))
    }

    #[test]
    fn deploy_flags() {
        let cli = parse(&[
            "deploy",
            "carbex",
            "--ref",
            "main",
            "--migrate-on",
            "all",
            "--force",
            "--reason",
            "incident 7",
            "--hosts",
            "web-1,web-2",
        ])
        .unwrap();
        let Command::Deploy(args) = cli.command else {
            panic!("not deploy")
        };
        assert_eq!(args.git_ref, "main");
        assert_eq!(args.migrate_on, Some(MigrateOn::All));
        assert!(args.force && !args.allow_missing_env);
        assert_eq!(args.reason.as_deref(), Some("incident 7"));
        assert_eq!(args.timeout, Duration::from_secs(10));
        assert_eq!(cli.global.hosts, ["web-1", "web-2"]);

        let err = parse(&["deploy", "carbex"]).unwrap_err();
        assert!(err.to_string().contains("--ref"), "{err}");
        let err = parse(&["deploy", "carbex", "--ref", "x", "--migrate-on", "some"]).unwrap_err();
        assert!(err.to_string().contains("first, all or none"), "{err}");
        let cli = parse(&[
            "deploy",
            "carbex",
            "--ref",
            "v2",
            "--strategy",
            "canary",
            "--canary",
            "10%",
            "--batch",
            "3",
            "--bake",
            "90s",
            "--max-unhealthy",
            "1",
            "--lock-wait",
            "2m",
            "--dry-run",
        ])
        .unwrap();
        let Command::Deploy(args) = cli.command else {
            panic!("not deploy")
        };
        assert_eq!(args.bake, Some(Duration::from_secs(90)));
        let flags = &args.rollout;
        assert_eq!(flags.strategy, Some(fleet::Strategy::Canary));
        assert_eq!(flags.canary, Some(fleet::Amount::Percent(10)));
        assert_eq!(flags.batch, Some(fleet::Amount::Count(3)));
        assert_eq!(flags.max_unhealthy, Some(fleet::Amount::Count(1)));
        assert_eq!(flags.lock_wait, Some(Duration::from_secs(120)));
        assert!(flags.dry_run);
        for bad in [
            &["--strategy", "blue-green"][..],
            &["--batch", "0"],
            &["--canary", "0%"],
            &["--max-unhealthy", "101%"],
            &["--bake", "soon"],
        ] {
            let mut args = vec!["deploy", "carbex", "--ref", "x"];
            args.extend_from_slice(bad);
            assert!(parse(&args).is_err(), "{bad:?}");
        }
        let cli = parse(&["rollback", "carbex", "--batch", "50%", "--dry-run"]).unwrap();
        let Command::Rollback(args) = cli.command else {
            panic!("not rollback")
        };
        assert_eq!(args.rollout.batch, Some(fleet::Amount::Percent(50)));
        assert!(parse(&["rollback", "carbex", "--bake", "1s"]).is_err());
    }

    #[test]
    fn env_actions() {
        let cli = parse(&["env", "carbex", "set", "A=1", "B=x=y", "--restart"]).unwrap();
        let Command::Env(EnvArgs {
            app,
            action: EnvAction::Set { vars, restart },
            ..
        }) = cli.command
        else {
            panic!("not env set")
        };
        assert_eq!((app.as_str(), restart), ("carbex", true));
        assert_eq!(vars, ["A=1", "B=x=y"]);
        assert!(parse(&["env", "carbex", "set"]).is_err());
        let cli = parse(&[
            "env",
            "carbex",
            "get",
            "APP_KEY",
            "--show",
            "--timeout",
            "3s",
        ])
        .unwrap();
        let Command::Env(args) = cli.command else {
            panic!("not env")
        };
        assert_eq!(args.timeout, Duration::from_secs(3));
        assert!(matches!(args.action, EnvAction::Get { show: true, .. }));
    }

    #[test]
    fn other_commands_parse() {
        for args in [
            &[
                "rollback",
                "carbex",
                "--to",
                "20261121T090000Z-0f0f0f0",
                "--migrate",
            ][..],
            &["rollback", "carbex", "--restore-db", "--yes"],
            &["restart", "carbex", "--service", "php8.2-fpm"],
            &["stop", "carbex", "--service", "worker:*"],
            &["start", "carbex"],
            &["run", "carbex", "migrate_status", "--hosts", "web-1"],
            &["releases", "carbex", "--json"],
            &["log", "carbex", "--limit", "5"],
            &[
                "log",
                "carbex",
                "--job",
                "deploy-20261122T101500Z-a1b2c3-web-1",
            ],
            &[
                "attach",
                "deploy-20261122T101500Z-a1b2c3-web-1",
                "--host",
                "web-1",
            ],
            &["env", "carbex", "list", "--show"],
            &["env", "carbex", "unset", "A", "B"],
            &["lock", "carbex", "--reason", "db maintenance"],
            &["unlock", "carbex", "--force"],
        ] {
            parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
        assert!(parse(&["lock", "carbex"]).is_err(), "lock without --reason");
    }

    #[tokio::test]
    async fn usage_errors_come_before_the_fleet_file() {
        let run_args = |args: &[&str]| {
            let mut all = vec!["--fleet", "/nonexistent/fleet.toml"];
            all.extend_from_slice(args);
            run(parse(&all).unwrap())
        };
        let err = run_args(&["rollback", "carbex", "--restore-db"])
            .await
            .unwrap_err();
        assert_eq!(err.code, crate::EXIT_USAGE);
        assert!(
            format!("{:#}", err.error).contains("--yes"),
            "{:#}",
            err.error
        );
        let err = run_args(&["deploy", "carbex", "--ref", "main", "--force"])
            .await
            .unwrap_err();
        assert_eq!(err.code, crate::EXIT_USAGE);
        assert!(format!("{:#}", err.error).contains("--reason"));
        let err = run_args(&["env", "carbex", "set", "NOEQUALS"])
            .await
            .unwrap_err();
        assert_eq!(err.code, crate::EXIT_USAGE);
        assert!(format!("{:#}", err.error).contains("NOEQUALS=VALUE"));
        let err = run_args(&["env", "carbex", "unset", "1BAD"])
            .await
            .unwrap_err();
        assert_eq!(err.code, crate::EXIT_USAGE);
    }
}
