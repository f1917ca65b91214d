//! The command line: clap definitions and dispatch to each command's module.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::{
    Failure, ca, client, demo,
    deploy::{self, RestartOptions},
    env,
    fleet::{self, Host, MigrateOn},
    joblog,
    jobs::{Interrupt, Report, Session},
    lock, releases,
    render::Output,
    status, table, targets,
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

#[derive(Args, Debug, Clone)]
pub struct Global {
    /// Fleet file: hosts, TLS, deploy defaults.
    #[arg(long, global = true, default_value = "fleet.toml", env = "HOIST_FLEET")]
    pub fleet: PathBuf,
    /// Only these hosts (comma-separated names from the fleet file).
    #[arg(long, global = true, value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Only hosts in this group.
    #[arg(long, global = true)]
    pub group: Option<String>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Make the fleet CA and issue agent and user certificates.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Health, release and resources of every host.
    Status(StatusArgs),
    /// Roll a ref of an app out to the selected hosts: locks first, canary and batches
    /// with a bake after each, a fleet-wide failure budget, rollback of what it switched.
    Deploy(DeployArgs),
    /// Return an app to an earlier release (the previous one unless --to names one),
    /// batch by batch.
    Rollback(RollbackArgs),
    /// Restart or reload an app's services (all of them unless --service names one).
    Restart(RestartArgs),
    /// An app's releases on each host: current, previous, backups.
    Releases(ReleasesArgs),
    /// An app's recent jobs, or one job's full deployment log (--job).
    Log(LogArgs),
    /// Follow a job (running or finished) from its first event.
    Attach(AttachArgs),
    /// Show or change an app's .env (values hidden unless --show).
    Env(EnvArgs),
    /// Stop deploys of an app until `hoist unlock`.
    Lock(LockArgs),
    /// Release an app's manual lock (any lock with --force).
    Unlock(UnlockArgs),
    /// Live full-screen view of the fleet's health and resources (`--once`: one frame).
    Top(crate::top::TopArgs),
    /// Prometheus file_sd JSON for the fleet's metrics endpoints.
    Targets,
    /// Run the whole job on this machine: a CA, three local agents, status.
    Demo,
}

#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Create a new CA (ca.pem, ca.key) in DIR.
    Init {
        /// Directory for the CA files.
        #[arg(default_value = "certs")]
        dir: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Issue a certificate signed by the CA: `--agent NAME --san IP_OR_DNS...` for an
    /// agent, or `--user NAME --role deployer|viewer` for an operator.
    Issue(IssueArgs),
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["agent", "user"])))]
pub struct IssueArgs {
    /// Directory holding ca.pem and ca.key; the new NAME.pem and NAME.key go there.
    #[arg(long = "ca", default_value = "certs")]
    pub ca_dir: PathBuf,
    /// Issue an agent (server) certificate for this host name.
    #[arg(long, requires = "san")]
    pub agent: Option<String>,
    /// IP addresses or DNS names the agent is reached at.
    #[arg(long, num_args = 1.., requires = "agent")]
    pub san: Vec<String>,
    /// Issue an operator (client) certificate for this user.
    #[arg(long, requires = "role")]
    pub user: Option<String>,
    /// The user's role.
    #[arg(long, requires = "user")]
    pub role: Option<ca::Role>,
    /// Validity in days.
    #[arg(long, default_value_t = 825)]
    pub days: u32,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Only this app.
    pub app: Option<String>,
    /// Per-host limit for connecting and answering.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Hosts asked at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

/// Limit for connecting to each agent (a job itself may run as long as it needs).
const JOB_CONNECT_TIMEOUT: &str = "10s";
/// Per-host limit for connecting and answering a question.
const QUERY_TIMEOUT: &str = "5s";

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
    pub rollout: crate::rollout::RolloutFlags,
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
    /// Also reverse the migrations of the release rolled back (the app's migrate_rollback).
    #[arg(long)]
    pub migrate: bool,
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
    pub rollout: crate::rollout::RolloutFlags,
    /// Limit for connecting to each agent.
    #[arg(long, default_value = JOB_CONNECT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Args, Debug)]
pub struct RestartArgs {
    /// The app, as named in the agents' config.
    pub app: String,
    /// Only this service (as named in the app's [[app.services]]).
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
    /// Limit for connecting to each agent.
    #[arg(long, default_value = JOB_CONNECT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Args, Debug)]
pub struct ReleasesArgs {
    /// The app, as named in the agents' config.
    pub app: String,
    /// Per-host limit for connecting and answering.
    #[arg(long, default_value = QUERY_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Args, Debug)]
pub struct LogArgs {
    /// The app, as named in the agents' config.
    pub app: String,
    /// Show this job's full log: each step's times, exit code and output.
    #[arg(long, value_name = "ID")]
    pub job: Option<String>,
    /// How many recent jobs per host.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub limit: u32,
    /// Per-host limit for connecting and answering.
    #[arg(long, default_value = QUERY_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// The job id, as printed by deploy, rollback, restart, env or `hoist log`.
    pub job: String,
    /// Ask only this host (default: every selected host; the one that knows the job answers).
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// Limit for connecting to each agent.
    #[arg(long, default_value = JOB_CONNECT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Args, Debug)]
pub struct EnvArgs {
    /// The app, as named in the agents' config.
    pub app: String,
    #[command(subcommand)]
    pub action: EnvAction,
    /// Limit for connecting to each agent (and for list/get, for answering).
    #[arg(long, global = true, default_value = JOB_CONNECT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Subcommand, Debug)]
pub enum EnvAction {
    /// The keys of the app's .env on each host.
    List {
        /// Show the values (needs the deployer role).
        #[arg(long)]
        show: bool,
    },
    /// One key on each host.
    Get {
        key: String,
        /// Show the value (needs the deployer role).
        #[arg(long)]
        show: bool,
    },
    /// Set keys in the app's .env on each host, one host after another.
    Set {
        #[arg(required = true, value_name = "KEY=VALUE")]
        vars: Vec<String>,
        /// Restart the app's services afterwards so they read the new values.
        #[arg(long)]
        restart: bool,
    },
    /// Remove keys from the app's .env on each host, one host after another.
    Unset {
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
        /// Restart the app's services afterwards.
        #[arg(long)]
        restart: bool,
    },
}

#[derive(Args, Debug)]
pub struct LockArgs {
    /// The app, as named in the agents' config.
    pub app: String,
    /// Why deploys must wait; shown to whoever tries one.
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
    /// Per-host limit for connecting and answering.
    #[arg(long, default_value = QUERY_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// The app, as named in the agents' config.
    pub app: String,
    /// Also release a running job's lock or another operator's manual lock.
    #[arg(long)]
    pub force: bool,
    /// Per-host limit for connecting and answering.
    #[arg(long, default_value = QUERY_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    fleet::parse_duration(s)
}

fn parse_migrate_on(s: &str) -> Result<MigrateOn, String> {
    s.parse()
}

pub(crate) fn load_fleet(global: &Global) -> Result<fleet::Fleet, Failure> {
    fleet::load(&global.fleet).map_err(Failure::usage)
}

pub(crate) fn select<'f>(
    fleet: &'f fleet::Fleet,
    global: &Global,
) -> Result<Vec<&'f Host>, Failure> {
    fleet
        .select(&global.hosts, global.group.as_deref())
        .map_err(Failure::usage)
}

pub(crate) fn credentials(fleet: &fleet::Fleet) -> Result<client::Credentials, Failure> {
    client::Credentials::load(&fleet.tls).map_err(Failure::usage)
}

fn usage(message: String) -> Failure {
    Failure::usage(anyhow::anyhow!(message))
}

/// The summary of a job command, and its exit code.
fn finish(report: &Report, out: &mut Output<'_>) -> Result<(), Failure> {
    report.print_summary(out);
    report.check()
}

pub async fn run(cli: Cli) -> Result<(), Failure> {
    let global = cli.global;
    match cli.command {
        Command::Ca(CaCommand::Init { dir, force }) => {
            let paths = ca::init(&dir, force).map_err(Failure::usage)?;
            println!("{paths}");
            Ok(())
        }
        Command::Ca(CaCommand::Issue(args)) => {
            let issued = match (&args.agent, &args.user, args.role) {
                (Some(agent), _, _) => {
                    ca::issue_agent(&args.ca_dir, agent, &args.san, args.days, args.force)
                }
                (None, Some(user), Some(role)) => {
                    ca::issue_user(&args.ca_dir, user, role, args.days, args.force)
                }
                _ => unreachable!("clap requires --agent or --user with --role"),
            }
            .map_err(Failure::usage)?;
            println!("{issued}");
            Ok(())
        }
        Command::Status(args) => {
            let fleet = load_fleet(&global)?;
            let hosts = fleet
                .select(&global.hosts, global.group.as_deref())
                .map_err(Failure::usage)?;
            let creds = client::Credentials::load(&fleet.tls).map_err(Failure::usage)?;
            let app = args.app.unwrap_or_default();
            let reports = status::fetch(&hosts, &creds, &app, args.timeout, args.concurrency).await;
            if global.json {
                let text = serde_json::to_string_pretty(&status::to_json(&reports))
                    .context("encoding JSON")
                    .map_err(Failure::failed)?;
                println!("{text}");
            } else {
                print!("{}", status::render(&reports, table::use_colour()));
            }
            let down = reports.iter().filter(|r| r.result.is_err()).count();
            if down > 0 {
                return Err(Failure::failed(anyhow::anyhow!(
                    "{down} of {} host(s) unreachable",
                    reports.len()
                )));
            }
            Ok(())
        }
        Command::Deploy(args) => crate::rollout::deploy_command(&global, args).await,
        Command::Rollback(args) => crate::rollout::rollback_command(&global, args).await,
        Command::Restart(args) => {
            let options = RestartOptions {
                app: args.app,
                service: args.service,
            };
            let fleet = load_fleet(&global)?;
            let hosts = select(&fleet, &global)?;
            let creds = credentials(&fleet)?;
            let mut stdout = std::io::stdout();
            let mut out = Output::new(&mut stdout, table::use_colour(), global.json);
            let mut interrupt = Interrupt::ctrl_c();
            let mut session = Session {
                creds: &creds,
                timeout: args.timeout,
                out: &mut out,
                interrupt: &mut interrupt,
                detach_after: 2,
            };
            let report = deploy::restart(&mut session, &hosts, &options).await?;
            finish(&report, &mut out)
        }
        Command::Releases(args) => {
            let fleet = load_fleet(&global)?;
            let hosts = select(&fleet, &global)?;
            let creds = credentials(&fleet)?;
            let mut stdout = std::io::stdout();
            let mut out = Output::new(&mut stdout, table::use_colour(), global.json);
            releases::releases(&hosts, &creds, args.timeout, &args.app, &mut out).await
        }
        Command::Log(args) => {
            let fleet = load_fleet(&global)?;
            let hosts = select(&fleet, &global)?;
            let creds = credentials(&fleet)?;
            let mut stdout = std::io::stdout();
            let mut out = Output::new(&mut stdout, table::use_colour(), global.json);
            match &args.job {
                Some(job) => {
                    joblog::job(&hosts, &creds, args.timeout, &args.app, job, &mut out).await
                }
                None => {
                    joblog::recent(
                        &hosts,
                        &creds,
                        args.timeout,
                        &args.app,
                        args.limit,
                        &mut out,
                    )
                    .await
                }
            }
        }
        Command::Attach(args) => {
            let fleet = load_fleet(&global)?;
            let hosts = match &args.host {
                Some(host) => fleet
                    .select(std::slice::from_ref(host), global.group.as_deref())
                    .map_err(Failure::usage)?,
                None => select(&fleet, &global)?,
            };
            let creds = credentials(&fleet)?;
            let mut stdout = std::io::stdout();
            let mut out = Output::new(&mut stdout, table::use_colour(), global.json);
            let mut interrupt = Interrupt::ctrl_c();
            let mut session = Session {
                creds: &creds,
                timeout: args.timeout,
                out: &mut out,
                interrupt: &mut interrupt,
                detach_after: 1,
            };
            let report = session.attach(&hosts, &args.job).await?;
            report.check()
        }
        Command::Env(args) => run_env(&global, args).await,
        Command::Lock(args) => {
            let fleet = load_fleet(&global)?;
            let hosts = select(&fleet, &global)?;
            let creds = credentials(&fleet)?;
            let mut stdout = std::io::stdout();
            let mut out = Output::new(&mut stdout, table::use_colour(), global.json);
            lock::lock(
                &hosts,
                &creds,
                args.timeout,
                &args.app,
                &args.reason,
                &mut out,
            )
            .await
        }
        Command::Unlock(args) => {
            let fleet = load_fleet(&global)?;
            let hosts = select(&fleet, &global)?;
            let creds = credentials(&fleet)?;
            let mut stdout = std::io::stdout();
            let mut out = Output::new(&mut stdout, table::use_colour(), global.json);
            lock::unlock(
                &hosts,
                &creds,
                args.timeout,
                &args.app,
                args.force,
                &mut out,
            )
            .await
        }
        Command::Top(args) => crate::top::run(&global, args).await,
        Command::Targets => {
            let fleet = load_fleet(&global)?;
            let hosts = fleet
                .select(&global.hosts, global.group.as_deref())
                .map_err(Failure::usage)?;
            let text = serde_json::to_string_pretty(&targets::file_sd(&hosts))
                .context("encoding JSON")
                .map_err(Failure::failed)?;
            println!("{text}");
            Ok(())
        }
        Command::Demo => demo::run().await.map_err(Failure::failed),
    }
}

/// `hoist env APP list|get|set|unset`.
async fn run_env(global: &Global, args: EnvArgs) -> Result<(), Failure> {
    // Bad arguments are usage errors before anything is loaded or sent.
    let change = match &args.action {
        EnvAction::Set { vars, restart } => Some((
            env::parse_assignments(vars).map_err(usage)?,
            Vec::new(),
            *restart,
        )),
        EnvAction::Unset { keys, restart } => {
            Some((Vec::new(), env::parse_keys(keys).map_err(usage)?, *restart))
        }
        EnvAction::Get { key, .. } => {
            env::validate_key(key).map_err(usage)?;
            None
        }
        EnvAction::List { .. } => None,
    };
    let fleet = load_fleet(global)?;
    let hosts = select(&fleet, global)?;
    let creds = credentials(&fleet)?;
    let mut stdout = std::io::stdout();
    let mut out = Output::new(&mut stdout, table::use_colour(), global.json);
    let (vars, keys, restart) = match (change, args.action) {
        (None, EnvAction::List { show }) => {
            return env::list(&hosts, &creds, args.timeout, &args.app, show, &mut out).await;
        }
        (None, EnvAction::Get { key, show }) => {
            return env::get(
                &hosts,
                &creds,
                args.timeout,
                &args.app,
                &key,
                show,
                &mut out,
            )
            .await;
        }
        (Some(change), _) => change,
        (None, _) => unreachable!("set and unset always parse into a change"),
    };
    let mut interrupt = Interrupt::ctrl_c();
    let mut session = Session {
        creds: &creds,
        timeout: args.timeout,
        out: &mut out,
        interrupt: &mut interrupt,
        detach_after: 2,
    };
    let report = if keys.is_empty() {
        env::set(&mut session, &hosts, &args.app, vars, restart).await?
    } else {
        env::unset(&mut session, &hosts, &args.app, keys, restart).await?
    };
    finish(&report, &mut out)
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::*;

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
