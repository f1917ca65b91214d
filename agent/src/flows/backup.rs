//! Backups as an operation of their own: `hoist backup` (a dump now, with the app's
//! `backup` step) and `hoist restore` (the database from one dump, with the app's
//! `restore` step, inside `maintenance_on`/`maintenance_off`; code and `current` are
//! untouched).

use hoist_proto::v1::JobResult;

use crate::state::journal::Change;

use super::{
    deploy::{BackupWhy, backup, prune_backups},
    *,
};

pub(super) async fn on_demand(ctx: &mut Ctx) -> Outcome {
    let current = ctx.layout.current().unwrap_or_default();
    let fail = |step: &str, error: String| {
        failed(
            Failed {
                step: step.into(),
                error,
            },
            &current,
            "",
            "",
        )
    };
    if ctx.app.steps.backup.is_none() {
        return fail(
            "backup",
            "this app declares no backup step ([app.steps] backup)".into(),
        );
    }
    let owner = ctx
        .run_as
        .as_ref()
        .filter(|_| nix::unistd::Uid::effective().is_root())
        .map(|r| (r.uid(), r.gid()));
    if let Err(e) = ctx.layout.ensure(owner) {
        return fail(
            "prepare",
            format!("cannot prepare {}: {e}", ctx.app.deploy_to.display()),
        );
    }
    let cwd = if current.is_empty() {
        ctx.app.deploy_to.clone()
    } else {
        ctx.layout.release(&current)
    };
    if !current.is_empty() {
        let record = ctx
            .journal
            .snapshot()
            .await
            .release(&current)
            .cloned()
            .unwrap_or_default();
        ctx.set_release_vars(&current, &record.commit, &record.r#ref);
    }
    match backup(ctx, &cwd, BackupWhy::Manual).await {
        Ok(_) => {
            prune_backups(ctx, &ctx.journal.snapshot().await);
            Outcome {
                result: JobResult::Succeeded,
                release: current,
                previous: String::new(),
                commit: String::new(),
                error: String::new(),
            }
        }
        Err(f) => failed(f, &current, "", ""),
    }
}

pub(super) async fn restore(ctx: &mut Ctx, backup_id: &str) -> Outcome {
    let current = ctx.layout.current().unwrap_or_default();
    let fail = |step: &str, error: String| {
        failed(
            Failed {
                step: step.into(),
                error,
            },
            &current,
            "",
            "",
        )
    };
    let Some(cmd) = ctx.app.steps.restore.clone() else {
        return fail(
            "restore",
            "this app declares no restore step ([app.steps] restore)".into(),
        );
    };
    let journal = ctx.journal.snapshot().await;
    let files = ctx.layout.backup_files();
    let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    let id = if backup_id.is_empty() {
        // Only a backup the journal recorded as complete is a default; a file it does
        // not know (older than the record, or left by a killed job) is named explicitly.
        match journal.default_backup(&current, &names) {
            Some(b) => b.id.clone(),
            None => {
                return fail(
                    "restore",
                    format!(
                        "no backup is recorded on this host; name one with --backup ID (`hoist backups {app}`), or take one with `hoist backup {app}`",
                        app = ctx.app.name
                    ),
                );
            }
        }
    } else {
        backup_id.to_string()
    };
    // Only a name `backups/` lists is used: the request never makes a path.
    let Some((name, size)) = files.iter().find(|(n, _)| *n == format!("{id}.backup")) else {
        return fail(
            "restore",
            format!(
                "there is no backup {id} on this host; `hoist backups {}` lists them",
                ctx.app.name
            ),
        );
    };
    let file = ctx.layout.backups().join(name);
    let taken_at_ms = journal
        .backups
        .iter()
        .rev()
        .find(|b| b.id == id)
        .map(|b| b.taken_at_ms);
    ctx.notice(format!(
        "restoring the database from backup {id} ({size} bytes); code and current ({}) stay",
        if current.is_empty() { "none" } else { &current }
    ));
    let cwd = if current.is_empty() {
        ctx.app.deploy_to.clone()
    } else {
        ctx.layout.release(&current)
    };
    if !current.is_empty() {
        let record = journal.release(&current).cloned().unwrap_or_default();
        ctx.set_release_vars(&current, &record.commit, &record.r#ref);
    }
    ctx.vars
        .insert("HOIST_BACKUP_FILE".into(), file.display().to_string());
    let mut maintenance = false;
    let result: StepResult = async {
        if let Some(on) = &ctx.app.steps.maintenance_on {
            maintenance = true;
            ctx.hook("maintenance_on", on, &cwd).await?;
        }
        ctx.hook("restore", &cmd, &cwd).await
    }
    .await;
    let off = if maintenance {
        ctx.maybe_hook(
            "maintenance_off",
            ctx.app.steps.maintenance_off.as_ref(),
            &cwd,
        )
        .await
    } else {
        Ok(())
    };
    if result.is_ok()
        && let Some(taken_at_ms) = taken_at_ms
    {
        ctx.journal
            .record(
                Change::Restored { taken_at_ms },
                "the restore in the journal",
            )
            .await;
    }
    match result.and(off) {
        Ok(()) => Outcome {
            result: JobResult::Succeeded,
            release: current,
            previous: String::new(),
            commit: String::new(),
            error: String::new(),
        },
        Err(f) => failed(f, &current, "", ""),
    }
}
