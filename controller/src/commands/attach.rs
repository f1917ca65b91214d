//! `hoist attach JOB [--host NAME]`: follow a job (running or finished) from its first
//! event, on the host that knows it.

use std::time::Duration;

use clap::Args;

use crate::commands::{Ctx, Failure, Global, JOB_CONNECT_TIMEOUT, check, parse_duration};

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

/// `hoist attach`.
pub async fn run(global: &Global, args: AttachArgs) -> Result<(), Failure> {
    let mut ctx = match &args.host {
        Some(host) => Ctx::load_hosts(global, std::slice::from_ref(host))?,
        None => Ctx::load(global)?,
    };
    let (hosts, mut session) = ctx.session(args.timeout, 1);
    let report = session
        .attach(&hosts, &args.job)
        .await
        .map_err(Failure::failed)?;
    check(&report)
}
