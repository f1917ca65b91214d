//! The env flow: edit `shared/.env` (values never appear in events), then maybe re-run
//! the app's `on_env_change` steps (default `after_switch`) and restart.

use hoist_proto::v1::{JobResult, StepOutput, Stream as WireStream, job_event::Kind};

use super::*;

pub(super) fn env_summary(set: &[(String, String)], unset: &[String]) -> String {
    let mut parts: Vec<String> = set.iter().map(|(k, _)| format!("set {k}")).collect();
    parts.extend(unset.iter().map(|k| format!("unset {k}")));
    parts.join(", ")
}

pub(super) async fn env_change(
    ctx: &mut Ctx,
    set: &[(String, String)],
    unset: &[String],
    restart_services: bool,
) -> Outcome {
    let step = "env";
    let path = ctx.layout.shared().join(".env");
    let started = ctx.start(step, format!("edit {}", path.display()));
    let group = ctx
        .run_as
        .as_ref()
        .filter(|_| nix::unistd::Uid::effective().is_root())
        .map(|r| r.gid());
    let owner = ctx
        .run_as
        .as_ref()
        .filter(|_| nix::unistd::Uid::effective().is_root())
        .map(|r| (r.uid(), r.gid()));
    // A fresh host has had no deploy yet: `shared/` is made for the app's user.
    let result = ctx
        .layout
        .ensure(owner)
        .and_then(|()| ctx.layout.shared_dir())
        .map_err(crate::state::envfile::EnvFileError::from)
        .and_then(|shared| crate::state::envfile::edit(&shared, ".env", set, unset, group))
        .or_else(|e| ctx.fail(step, e.to_string()));
    if let Ok(lines) = &result {
        for line in lines {
            ctx.job.emit(Kind::Output(StepOutput {
                step: step.into(),
                stream: WireStream::Stdout.into(),
                line: line.clone(),
                continued: false,
            }));
        }
    }
    if let Err(f) = ctx.finish(step, started, result) {
        return failed(f, "", "", "");
    }
    // New values are secrets too from here on.
    ctx.reload_secrets();
    let current = ctx.layout.current().unwrap_or_default();
    if restart_services {
        if !current.is_empty() {
            let dir = ctx.layout.release(&current);
            let commit = ctx.layout.revision(&current);
            ctx.set_release_vars(&current, &commit, "");
            let steps = &ctx.app.steps;
            let command = steps
                .on_env_change
                .as_ref()
                .or(steps.after_switch.as_ref())
                .cloned();
            if let Err(f) = ctx
                .maybe_hook("on_env_change", command.as_ref(), &dir)
                .await
            {
                return failed(f, &current, "", "");
            }
        }
        return super::restart::restart(ctx, "").await;
    }
    Outcome {
        result: JobResult::Succeeded,
        release: current,
        previous: String::new(),
        commit: String::new(),
        error: String::new(),
    }
}
