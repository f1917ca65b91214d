//! The task flow: one declared `[app.tasks]` command, run like a hook (as the app's
//! user, with the hook environment) in the current release.

use hoist_proto::v1::JobResult;

use super::*;

pub(super) async fn task(ctx: &mut Ctx, name: &str) -> Outcome {
    let step = format!("task {name}");
    let Some(current) = ctx.layout.current() else {
        let error = format!(
            "{step}: app {} has nothing deployed (no current release); deploy first",
            ctx.app.name
        );
        return Outcome {
            result: JobResult::Failed,
            release: String::new(),
            previous: String::new(),
            commit: String::new(),
            error,
        };
    };
    let Some(task) = ctx.app.tasks.get(name).cloned() else {
        let error = format!(
            "{step}: app {} declares no task {name:?}; its tasks: {}",
            ctx.app.name,
            declared(&ctx.app)
        );
        return failed_outcome(&current, error);
    };
    let dir = ctx.layout.release(&current);
    let commit = ctx.layout.revision(&current);
    ctx.set_release_vars(&current, &commit, "");
    match ctx.hook(&step, &task.command, &dir).await {
        Ok(()) => Outcome {
            result: JobResult::Succeeded,
            release: current,
            previous: String::new(),
            commit,
            error: String::new(),
        },
        Err(f) => failed(f, &current, "", &commit),
    }
}

fn failed_outcome(release: &str, error: String) -> Outcome {
    Outcome {
        result: JobResult::Failed,
        release: release.into(),
        previous: String::new(),
        commit: String::new(),
        error,
    }
}

/// The app's task names, for errors: `a, b` or `none (declare them in [app.tasks])`.
pub fn declared(app: &crate::config::App) -> String {
    if app.tasks.is_empty() {
        "none (declare them under [app.tasks] in the agent config)".into()
    } else {
        app.tasks.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}
