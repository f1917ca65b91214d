//! `hoistd`'s command line (clap), in the library so the man page and the reference
//! are generated from the same definitions the binary parses.

use std::{path::PathBuf, time::Duration};

use clap::{Parser, Subcommand, ValueEnum};

use crate::config;

pub const DEFAULT_CONFIG: &str = "/etc/hoist/agent.toml";

#[derive(Parser, Debug)]
#[command(name = "hoistd", version, about = "The hoist deployment agent")]
pub struct Cli {
    /// Agent config file.
    #[arg(long, short, default_value = DEFAULT_CONFIG, global = true)]
    pub config: PathBuf,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Validate a config file, print every error with file:line:column, and exit.
    CheckConfig {
        /// Config file (default: --config).
        path: Option<PathBuf>,
    },
    /// Ask the running agent to reload its config (SIGHUP) and wait for the outcome:
    /// exit 0 when it was applied, 1 when the agent kept its old config. The unit's
    /// `ExecReload`, so `systemctl reload hoistd` fails when the new config was refused.
    Reload {
        /// The agent's pid (default: $MAINPID, which systemd sets for ExecReload).
        #[arg(long, env = "MAINPID")]
        pid: Option<u32>,
        /// How long to wait for the agent's answer.
        #[arg(long, default_value = "30s", value_parser = config::parse_duration)]
        timeout: Duration,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}
