//! The commands of the `hoist` CLI, one module per verb with its clap `Args`: each
//! turns its arguments into validated options (usage errors before anything is loaded
//! or sent), builds the [`Ctx`] once, calls the layers below (`rollout`, `agents`) and
//! maps what they return to an exit code ([`Failure`]). The only place that uses
//! `anyhow`.

pub mod attach;
pub mod backup;
pub mod ca;
pub mod completions;
pub mod demo;
pub mod deploy;
pub mod env;
pub mod lock;
pub mod log;
pub mod logs;
pub mod releases;
pub mod run;
pub mod services;
pub mod status;
pub mod targets;
pub mod top;

use std::{fmt::Display, path::PathBuf, time::Duration};

use clap::Args;

use crate::{
    EXIT_FAILED, EXIT_USAGE,
    agents::{
        client::Credentials,
        session::{Interrupt, RunReport, Session},
    },
    fleet::{self, Fleet, Host},
    output::{render::Output, table},
};

/// A command's failure and the exit code it maps to.
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    /// Exit 1: the operation failed (a host unreachable, a deploy failed).
    pub fn failed(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: EXIT_FAILED,
            error: error.into(),
        }
    }

    /// Exit 2: bad usage or a bad config file.
    pub fn usage(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: EXIT_USAGE,
            error: error.into(),
        }
    }

    /// Exit 1 with `message`.
    pub fn failed_with(message: impl Display) -> Failure {
        Failure::failed(anyhow::anyhow!("{message}"))
    }
}

/// The one spelling of "usage error" for messages and error values alike: exit 2.
pub fn usage(error: impl Display) -> Failure {
    Failure::usage(anyhow::anyhow!("{error}"))
}

/// Flags every command takes.
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

/// Limit for connecting to each agent (a job itself may run as long as it needs).
pub const JOB_CONNECT_TIMEOUT: &str = "10s";
/// Per-host limit for connecting and answering a question.
pub const QUERY_TIMEOUT: &str = "5s";

/// What a command that talks to agents starts from, built once: the fleet file, the
/// selected hosts (in fleet order), the operator's credentials, stdout, and Ctrl-C.
pub struct Ctx {
    pub fleet: Fleet,
    pub hosts: Vec<Host>,
    pub creds: Credentials,
    pub out: Output<'static>,
    /// Ctrl-C presses; the handler is installed on first use only, so commands that
    /// follow no job keep the default action (exit).
    pub interrupt: Interrupt,
}

impl Ctx {
    /// Loads the fleet, selects `--hosts`/`--group` and reads the credentials; every
    /// failure is a usage error (exit 2).
    pub fn load(global: &Global) -> Result<Ctx, Failure> {
        Ctx::load_hosts(global, &global.hosts)
    }

    /// [`Ctx::load`] with `hosts` in place of `--hosts`.
    pub fn load_hosts(global: &Global, hosts: &[String]) -> Result<Ctx, Failure> {
        let fleet = load_fleet(global)?;
        let hosts = fleet
            .select(hosts, global.group.as_deref())
            .map_err(Failure::usage)?
            .into_iter()
            .cloned()
            .collect();
        let creds = Credentials::load(&fleet.tls).map_err(Failure::usage)?;
        Ok(Ctx {
            fleet,
            hosts,
            creds,
            out: Output::stdout(table::use_colour(), global.json),
            interrupt: Interrupt::ctrl_c(),
        })
    }

    /// The selected hosts, borrowed.
    pub fn targets(&self) -> Vec<&Host> {
        self.hosts.iter().collect()
    }

    /// A session that follows jobs on the selected hosts; Ctrl-C `detach_after` times
    /// detaches.
    pub fn session(
        &mut self,
        timeout: Duration,
        detach_after: u32,
    ) -> (Vec<&Host>, Session<'_, 'static>) {
        let hosts = self.hosts.iter().collect();
        let session = Session {
            creds: &self.creds,
            timeout,
            out: &mut self.out,
            interrupt: &mut self.interrupt,
            detach_after,
        };
        (hosts, session)
    }
}

/// The fleet file alone (for commands that need no credentials).
pub fn load_fleet(global: &Global) -> Result<Fleet, Failure> {
    fleet::load(&global.fleet).map_err(Failure::usage)
}

/// The selected hosts of `fleet`.
pub fn select<'f>(fleet: &'f Fleet, global: &Global) -> Result<Vec<&'f Host>, Failure> {
    fleet
        .select(&global.hosts, global.group.as_deref())
        .map_err(Failure::usage)
}

/// Exit 1 naming the host and why unless every host succeeded.
pub fn check(report: &RunReport) -> Result<(), Failure> {
    match report.failure() {
        Some(why) => Err(Failure::failed_with(why)),
        None => Ok(()),
    }
}

/// The summary of a job command, and its exit code.
pub fn finish(report: &RunReport, out: &mut Output<'_>) -> Result<(), Failure> {
    report.print_summary(out);
    check(report)
}

/// clap's parser for durations (`90s`, `2m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    fleet::parse_duration(s)
}
