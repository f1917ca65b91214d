//! The env flow: edit `shared/.env` (values never appear in events), then maybe re-run
//! the app's `on_env_change` steps (default `after_switch`) and restart.

use std::path::Path;

use hoist_proto::v1::{JobResult, StepOutput, Stream as WireStream, job_event::Kind};

use super::*;

pub(super) fn env_summary(set: &[(String, String)], unset: &[String]) -> String {
    let mut parts: Vec<String> = set.iter().map(|(k, _)| format!("set {k}")).collect();
    parts.extend(unset.iter().map(|k| format!("unset {k}")));
    parts.join(", ")
}

/// Mode of a `shared/` the env flow creates: the app's user reads and writes, its group
/// reads, nobody else.
const SHARED_DIR_MODE: u32 = 0o750;

pub(super) async fn env_change(
    ctx: &mut Ctx,
    set: &[(String, String)],
    unset: &[String],
    restart_services: bool,
) -> Outcome {
    let step = "env";
    let path = ctx.layout.shared().join(".env");
    let started = ctx.start(step, format!("edit {}", path.display()));
    let result = prepare_shared(ctx, &path).and_then(|is_new| {
        let lines = crate::state::envfile::edit(&path, set, unset)
            .or_else(|e| ctx.fail(step, e.to_string()))?;
        if is_new {
            give_to_app_user(ctx, &path)?;
        }
        Ok(lines)
    });
    if let Ok(lines) = &result {
        for line in lines {
            ctx.job.emit(Kind::Output(StepOutput {
                step: step.into(),
                stream: WireStream::Stdout.into(),
                line: line.clone(),
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
            let commit = std::fs::read_to_string(dir.join("REVISION"))
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
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

/// Makes sure `shared/` exists (a fresh host has had no deploy yet): created 0750 and
/// given to the app's user. Returns whether `.env` is new.
fn prepare_shared(ctx: &Ctx, env: &Path) -> StepResult<bool> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let step = "env";
    let shared = ctx.layout.shared();
    match std::fs::symlink_metadata(&shared) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return ctx.fail(
                step,
                format!(
                    "{} is not a directory; move it away and retry",
                    shared.display()
                ),
            );
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(&ctx.app.deploy_to).or_else(|e| {
                ctx.fail(
                    step,
                    format!("cannot create {}: {e}", ctx.app.deploy_to.display()),
                )
            })?;
            std::fs::DirBuilder::new()
                .mode(SHARED_DIR_MODE)
                .create(&shared)
                .or_else(|e| ctx.fail(step, format!("cannot create {}: {e}", shared.display())))?;
            // The umask may have narrowed the mode.
            std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(SHARED_DIR_MODE))
                .or_else(|e| ctx.fail(step, format!("cannot chmod {}: {e}", shared.display())))?;
            give_to_app_user(ctx, &shared)?;
        }
        Err(err) => return ctx.fail(step, format!("cannot stat {}: {err}", shared.display())),
    }
    Ok(matches!(std::fs::symlink_metadata(env), Err(e) if e.kind() == std::io::ErrorKind::NotFound))
}

/// Gives `path` (not following a symlink) to the app's user and group, when the agent
/// runs as root and the app has a user.
fn give_to_app_user(ctx: &Ctx, path: &Path) -> StepResult {
    let Some(run_as) = &ctx.run_as else {
        return Ok(());
    };
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(());
    }
    std::os::unix::fs::lchown(
        path,
        Some(run_as.uid().as_raw()),
        Some(run_as.gid().as_raw()),
    )
    .or_else(|e| {
        ctx.fail(
            "env",
            format!("cannot give {} to the app's user: {e}", path.display()),
        )
    })
}
