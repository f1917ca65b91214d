//! The command line: clap definitions and dispatch to each command's module.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::{Failure, ca, client, demo, fleet, status, table, targets};

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

fn parse_duration(s: &str) -> Result<Duration, String> {
    fleet::parse_duration(s)
}

fn load_fleet(global: &Global) -> Result<fleet::Fleet, Failure> {
    fleet::load(&global.fleet).map_err(Failure::usage)
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
