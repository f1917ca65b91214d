//! `hoist ca init|issue|revoke`: the fleet CA and its certificates (the work is in [`crate::ca`]).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use serde_json::{Value, json};

use crate::{
    ca,
    commands::{Failure, Global},
    output::render,
};

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

/// `hoist ca init`, `hoist ca issue` and `hoist ca revoke`; with `--json`, one
/// document (`ca_init`, `ca_issue`, `ca_revoke`) instead of the sentence.
pub fn run(global: &Global, command: CaCommand) -> Result<(), Failure> {
    let print = |text: String, kind: &str, fields: Value| {
        if global.json {
            let mut doc = json!({ "kind": kind, "v": render::JSON_VERSION });
            if let (Some(doc), Value::Object(fields)) = (doc.as_object_mut(), fields) {
                doc.extend(fields);
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&doc).unwrap_or_else(|_| doc.to_string())
            );
        } else {
            println!("{text}");
        }
    };
    let until = |t: time::OffsetDateTime| {
        jiff::Timestamp::from_second(t.unix_timestamp())
            .map_or(Value::Null, |t| json!(t.to_string()))
    };
    match command {
        CaCommand::Init { dir, force } => {
            let paths = ca::init(&dir, force).map_err(Failure::usage)?;
            let fields = json!({
                "cert": paths.cert, "key": paths.key, "not_after": until(paths.not_after),
            });
            print(paths.to_string(), "ca_init", fields);
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
            let (name, role) = match (&args.agent, &args.user, args.role) {
                (Some(agent), _, _) => (agent.clone(), "agent".to_string()),
                (_, Some(user), Some(role)) => (user.clone(), role.as_str().to_string()),
                _ => unreachable!("clap requires --agent or --user with --role"),
            };
            let fields = json!({
                "name": name, "role": role, "cert": issued.cert, "key": issued.key,
                "not_after": until(issued.not_after),
            });
            print(issued.to_string(), "ca_issue", fields);
        }
        CaCommand::Revoke { ca_dir, which } => {
            let revoked = ca::revoke(&ca_dir, &which).map_err(Failure::usage)?;
            let fields = json!({
                "serial": revoked.serial, "already": revoked.already, "crl": revoked.crl,
                "revoked_count": revoked.count,
            });
            print(revoked.to_string(), "ca_revoke", fields);
        }
    }
    Ok(())
}
