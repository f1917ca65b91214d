//! The restart flow: restart the app's services (or one), then run its checks.

use hoist_proto::v1::JobResult;

use super::*;

pub(super) async fn restart(ctx: &Ctx, service: &str) -> Outcome {
    let current = ctx.layout.current().unwrap_or_default();
    let dir = if current.is_empty() {
        ctx.app.deploy_to.clone()
    } else {
        ctx.layout.release(&current)
    };
    let result = async {
        ctx.restart_services(&dir, service).await?;
        ctx.run_checks().await
    }
    .await;
    match result {
        Ok(()) => Outcome {
            result: JobResult::Succeeded,
            release: current.clone(),
            previous: String::new(),
            commit: String::new(),
            error: String::new(),
        },
        Err(f) => failed(f, &current, "", ""),
    }
}

/// The stop and start flows: stop the app's services (or one), or start them and run
/// the checks.
pub(super) async fn toggle(
    ctx: &Ctx,
    service: &str,
    toggle: crate::host::services::Toggle,
) -> Outcome {
    let current = ctx.layout.current().unwrap_or_default();
    let dir = if current.is_empty() {
        ctx.app.deploy_to.clone()
    } else {
        ctx.layout.release(&current)
    };
    let result = async {
        ctx.toggle_services(&dir, service, toggle).await?;
        if toggle == crate::host::services::Toggle::Start {
            ctx.run_checks().await?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Outcome {
            result: JobResult::Succeeded,
            release: current.clone(),
            previous: String::new(),
            commit: String::new(),
            error: String::new(),
        },
        Err(f) => failed(f, &current, "", ""),
    }
}
