//! What is pending on this host, for `--dry-run`: the app's `migrate_status` (its
//! output, for the operator) and `migrate_pending` (its exit status: 0 pending, 1
//! nothing pending, anything else an error), run in the current release as the app's
//! user, outside any job: they only read.

use hoist_proto::v1::PendingMigrationsResponse;
use tokio::sync::mpsc;

use crate::{
    config::{App, Command},
    host::process::{self, RunAs},
    state::release::Layout,
};

/// Lines of `migrate_status` output kept for the answer.
pub const MAX_STATUS_LINES: usize = 200;

pub async fn check(app: &App) -> PendingMigrationsResponse {
    let layout = Layout::new(&app.deploy_to);
    let Some(current) = layout.current() else {
        return PendingMigrationsResponse {
            state: "unknown".into(),
            error: "nothing deployed yet: every migration of the first deploy is pending".into(),
            ..Default::default()
        };
    };
    let run_as = match &app.user {
        Some(user) => match RunAs::resolve(user, app.group.as_deref()) {
            Ok(r) => Some(r),
            Err(e) => {
                return PendingMigrationsResponse {
                    state: "unknown".into(),
                    error: e.to_string(),
                    release: current,
                    ..Default::default()
                };
            }
        },
        None => None,
    };
    let secrets = super::step::secrets_of(app, &layout);
    let redact = |line: &str| secrets.mask(line);
    let dir = layout.release(&current);
    let mut env = app.env.clone();
    env.insert("HOIST_APP".into(), app.name.clone());
    env.insert("HOIST_RELEASE".into(), current.clone());
    env.insert("HOIST_RELEASE_DIR".into(), dir.display().to_string());
    env.insert("HOIST_COMMIT".into(), layout.revision(&current));
    let run = |command: &Command| {
        let (dir, env, run_as) = (dir.clone(), env.clone(), run_as.clone());
        let command = command.clone();
        async move {
            let mut lines = Vec::new();
            let mut code = Some(0);
            for shell in command.0 {
                let spec = process::Spec {
                    shell,
                    cwd: dir.clone(),
                    env: env.clone(),
                    run_as: run_as.clone(),
                    timeout: app.step_timeout,
                };
                let (tx, mut rx) = mpsc::channel::<process::Piece>(process::PIECES_IN_FLIGHT);
                let collect = async {
                    let mut out = Vec::new();
                    while let Some(piece) = rx.recv().await {
                        if out.len() < MAX_STATUS_LINES {
                            out.push(process::tail(&piece.text, 300).to_string());
                        }
                    }
                    out
                };
                let (exit, out) = tokio::join!(process::run(&spec, tx), collect);
                lines.extend(out);
                code = match exit {
                    Ok(e) if e.timed_out => None,
                    Ok(e) => e.code,
                    Err(_) => None,
                };
                if code != Some(0) {
                    break;
                }
            }
            (code, lines)
        }
    };
    let mut answer = PendingMigrationsResponse {
        release: current.clone(),
        state: "unknown".into(),
        ..Default::default()
    };
    if let Some(cmd) = &app.steps.migrate_status {
        let (code, lines) = run(cmd).await;
        answer.status = lines
            .iter()
            .map(|l| redact(l))
            .take(MAX_STATUS_LINES)
            .collect();
        if code != Some(0) {
            answer.error = format!(
                "migrate_status exited with {}",
                code.map_or("a signal or timeout".into(), |c| c.to_string())
            );
        }
    }
    match &app.steps.migrate_pending {
        None => {
            if answer.error.is_empty() {
                answer.error = "no migrate_pending step declared".into();
            }
        }
        Some(cmd) => match run(cmd).await.0 {
            Some(0) => answer.state = "pending".into(),
            Some(1) => answer.state = "none".into(),
            code => {
                answer.error = format!(
                    "migrate_pending exited with {} (0 means pending, 1 nothing pending)",
                    code.map_or("a signal or timeout".into(), |c| c.to_string())
                )
            }
        },
    }
    answer
}
