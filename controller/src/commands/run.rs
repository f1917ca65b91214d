//! `hoist run APP TASK`: one of the app's declared tasks (`[app.tasks]` in the agents'
//! config) on the selected hosts, host by host, streamed and logged as a job. hoist
//! has no remote shell: only declared tasks run, as the app's user, in the current
//! release; the agent checks the task's role against the caller's.

use std::time::Duration;

use clap::Args;

use crate::{
    agents::ids,
    commands::{Ctx, Failure, Global, JOB_CONNECT_TIMEOUT, finish, parse_duration},
    rollout::operation::TaskOptions,
};

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The app, as named in the agents' config.
    pub app: String,
    /// A task declared under [app.tasks] in the agents' config.
    pub task: String,
    /// Limit for connecting to each agent; the task itself may run up to the app's
    /// step_timeout.
    #[arg(long, default_value = JOB_CONNECT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `hoist run APP TASK [--hosts ...]`.
pub async fn run(global: &Global, args: RunArgs) -> Result<(), Failure> {
    let options = TaskOptions {
        app: args.app,
        task: args.task,
    };
    let mut ctx = Ctx::load(global)?;
    let base = ids::new_job_id("task").map_err(Failure::failed)?;
    let (hosts, mut session) = ctx.session(args.timeout, 2);
    let report = session
        .run_in_order(&options.title(), options.requests(&hosts, &base))
        .await;
    finish(&report, &mut ctx.out)
}
