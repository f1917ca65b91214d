//! `hoist stop APP` and `hoist start APP`: the app's declared services (or one), host
//! by host, as jobs (refused while another job runs or someone else holds the lock).

use std::time::Duration;

use clap::Args;

use crate::{
    agents::ids,
    commands::{Ctx, Failure, Global, JOB_CONNECT_TIMEOUT, finish, parse_duration},
    rollout::operation::ToggleOptions,
};

#[derive(Args, Debug)]
pub struct ToggleArgs {
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

/// `hoist stop APP` (`start` false) or `hoist start APP`.
pub async fn run(global: &Global, args: ToggleArgs, start: bool) -> Result<(), Failure> {
    let options = ToggleOptions {
        app: args.app,
        service: args.service,
        start,
    };
    let mut ctx = Ctx::load(global)?;
    let base = ids::new_job_id(options.verb()).map_err(Failure::failed)?;
    let (hosts, mut session) = ctx.session(args.timeout, 2);
    let report = session
        .run_in_order(&options.title(), options.requests(&hosts, &base))
        .await;
    finish(&report, &mut ctx.out)
}
