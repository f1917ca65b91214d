//! `hoist ca init|issue|revoke`: the fleet CA and its certificates (the work is in [`crate::ca`]).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::{ca, commands::Failure};

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
    /// Revoke a certificate (by NAME, its NAME.pem in the CA dir, or by hex SERIAL) and
    /// rewrite DIR/crl.pem, which agents load beside their CA and reload on SIGHUP.
    Revoke {
        /// Directory holding ca.pem and ca.key; crl.pem is written there.
        #[arg(long = "ca", default_value = "certs")]
        ca_dir: PathBuf,
        /// NAME (a certificate issued into the CA dir) or SERIAL (hex).
        which: String,
    },
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
    /// Validity in days [default: 365 for an agent, 90 for a user].
    #[arg(long)]
    pub days: Option<u32>,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}

/// `hoist ca init`, `hoist ca issue` and `hoist ca revoke`.
pub fn run(command: CaCommand) -> Result<(), Failure> {
    match command {
        CaCommand::Init { dir, force } => {
            let paths = ca::init(&dir, force).map_err(Failure::usage)?;
            println!("{paths}");
        }
        CaCommand::Issue(args) => {
            let issued = match (&args.agent, &args.user, args.role) {
                (Some(agent), _, _) => ca::issue_agent(
                    &args.ca_dir,
                    agent,
                    &args.san,
                    args.days.unwrap_or(ca::AGENT_DAYS),
                    args.force,
                ),
                (None, Some(user), Some(role)) => ca::issue_user(
                    &args.ca_dir,
                    user,
                    role,
                    args.days.unwrap_or(ca::USER_DAYS),
                    args.force,
                ),
                _ => unreachable!("clap requires --agent or --user with --role"),
            }
            .map_err(Failure::usage)?;
            println!("{issued}");
        }
        CaCommand::Revoke { ca_dir, which } => {
            let revoked = ca::revoke(&ca_dir, &which).map_err(Failure::usage)?;
            println!("{revoked}");
        }
    }
    Ok(())
}
