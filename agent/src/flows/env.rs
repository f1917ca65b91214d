//! The env flow: edit `shared/.env` (values never appear in events), then maybe restart.

use hoist_proto::v1::{JobResult, StepOutput, Stream as WireStream, job_event::Kind};

use super::*;

pub(super) fn env_summary(set: &[(String, String)], unset: &[String]) -> String {
    let mut parts: Vec<String> = set.iter().map(|(k, _)| format!("set {k}")).collect();
    parts.extend(unset.iter().map(|k| format!("unset {k}")));
    parts.join(", ")
}

pub(super) async fn env_change(
    ctx: &Ctx,
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
    let result = ctx
        .layout
        .ensure()
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
    if restart_services {
        return super::restart::restart(ctx, "").await;
    }
    Outcome {
        result: JobResult::Succeeded,
        release: ctx.layout.current().unwrap_or_default(),
        previous: String::new(),
        commit: String::new(),
        error: String::new(),
    }
}
