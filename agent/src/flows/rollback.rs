//! Rollbacks: the one asked for (`hoist rollback`), and the automatic one after a
//! deploy fails past its switch.

use hoist_proto::v1::JobResult;

use crate::{
    config,
    state::{
        journal::{self, Journal, TargetError},
        release::Layout,
    },
};

use super::*;

/// After-switch failure: put the previous release back and restart services.
pub(super) async fn auto_rollback(
    ctx: &Ctx,
    f: Failed,
    id: &str,
    previous: &str,
    commit: &str,
    migrated: bool,
    maintenance: bool,
) -> Outcome {
    let reason = format!("{}: {}", f.step, f.error);
    if previous.is_empty() {
        ctx.notice("no previous release to return to; the new release stays current");
        return failed(f, id, previous, commit);
    }
    ctx.notice(format!("{reason}; rolling back to {previous}"));
    let prev_dir = ctx.layout.release(previous);
    if ctx.app.strategy == config::Strategy::Command {
        // The platform's own rollback (e.g. `helm rollback`), run from the failed release.
        let _ = ctx
            .maybe_hook(
                "deactivate",
                ctx.app.deactivate.as_ref(),
                &ctx.layout.release(id),
            )
            .await;
    }
    let started = ctx.start("rollback", format!("current -> releases/{previous}"));
    let r = ctx
        .layout
        .switch(previous)
        .or_else(|e| ctx.fail("rollback", format!("cannot switch back: {e}")));
    if let Err(e) = ctx.finish("rollback", started, r) {
        return failed(e, id, previous, commit);
    }
    let restarted = ctx.restart_services(&prev_dir, "").await;
    if maintenance {
        let _ = ctx
            .maybe_hook(
                "maintenance_off",
                ctx.app.steps.maintenance_off.as_ref(),
                &prev_dir,
            )
            .await;
    }
    if migrated {
        ctx.notice(format!(
            "migrations of {id} are not reversed automatically; run `hoist rollback {} --migrate` if the previous release needs the old schema",
            ctx.app.name
        ));
    }
    let mut error = format!("rolled back to {previous}: {reason}");
    if let Err(e) = restarted {
        error.push_str(&format!(
            "; restarting services after the rollback failed too: {}",
            e.error
        ));
    }
    Outcome {
        result: JobResult::RolledBack,
        release: id.into(),
        previous: previous.into(),
        commit: commit.into(),
        error,
    }
}

/// Where a rollback goes on a host, and what it runs there.
#[derive(Clone, Debug)]
pub struct RollbackPlan {
    pub target: String,
    pub commit: String,
    pub current: String,
    pub steps: Vec<String>,
}

/// Why a rollback would not start on a host.
#[derive(Debug, thiserror::Error)]
pub enum RollbackRefusal {
    #[error("there is no previous release to roll back to")]
    NoPrevious,
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("release {0} is already current")]
    AlreadyCurrent(String),
    #[error("--migrate: this app declares no migrate_rollback step")]
    NoMigrateRollback,
    #[error("--restore-db: this app declares no restore step")]
    NoRestore,
    #[error("--restore-db: no backup is recorded for release {0}; nothing to restore")]
    NoBackup(String),
}

/// Where a rollback to `to` (empty: the previous release; else a release id, a ref
/// that was deployed, or a commit or its prefix) goes on this host, and its steps in
/// order: what `hoist rollback` does and `--dry-run` shows.
pub fn plan(
    app: &config::App,
    layout: &Layout,
    journal: &Journal,
    to: &str,
    migrate: bool,
    restore_db: bool,
) -> Result<RollbackPlan, RollbackRefusal> {
    let current = layout.current().unwrap_or_default();
    let target = if to.is_empty() {
        layout
            .previous(journal)
            .ok_or(RollbackRefusal::NoPrevious)?
    } else {
        journal.resolve_target(to, &layout.list(), |id| layout.revision(id))?
    };
    if target == current {
        return Err(RollbackRefusal::AlreadyCurrent(target));
    }
    let record = journal.release(&target).cloned().unwrap_or_default();
    let mut steps = Vec::new();
    if migrate {
        if app.steps.migrate_rollback.is_none() {
            return Err(RollbackRefusal::NoMigrateRollback);
        }
        steps.push(format!("migrate_rollback (from {current})"));
    }
    if restore_db {
        if app.steps.restore.is_none() {
            return Err(RollbackRefusal::NoRestore);
        }
        let Some(file) = &record.backup_file else {
            return Err(RollbackRefusal::NoBackup(target));
        };
        steps.push(format!("restore ({file})"));
    }
    steps.push("switch".into());
    if app.strategy == config::Strategy::Command && app.activate.is_some() {
        steps.push("activate".into());
    }
    if app.steps.after_switch.is_some() {
        steps.push("after_switch".into());
    }
    for service in app.all_services() {
        steps.push(format!("restart {}", service.display_name()));
    }
    for check in &app.checks {
        steps.push(format!("check {}", check.name()));
    }
    let commit = if record.commit.is_empty() {
        layout.revision(&target)
    } else {
        record.commit
    };
    Ok(RollbackPlan {
        target,
        commit,
        current,
        steps,
    })
}

pub(super) async fn rollback(ctx: &mut Ctx, to: &str, migrate: bool, restore_db: bool) -> Outcome {
    let journal = ctx.journal.snapshot().await;
    let current = ctx.layout.current().unwrap_or_default();
    let target = match plan(&ctx.app, &ctx.layout, &journal, to, migrate, restore_db) {
        Ok(plan) => plan.target,
        Err(refusal) => {
            let f = Failed {
                step: "rollback".into(),
                error: format!("{refusal}; see `hoist releases {}`", ctx.app.name),
            };
            return failed(f, to, &current, "");
        }
    };
    let record = journal.release(&target).cloned().unwrap_or_default();
    ctx.set_release_vars(&target, &record.commit, &record.r#ref);
    ctx.notice(format!("rolling back from {current} to {target}"));
    let cur_dir = ctx.layout.release(&current);
    let target_dir = ctx.layout.release(&target);
    let result: StepResult = async {
        if migrate {
            // The release being left holds the migrations to reverse.
            match &ctx.app.steps.migrate_rollback {
                Some(cmd) => ctx.hook("migrate_rollback", cmd, &cur_dir).await?,
                None => {
                    return ctx.fail(
                        "migrate_rollback",
                        "this app declares no migrate_rollback step",
                    );
                }
            }
        }
        if restore_db {
            let Some(file) = record.backup_file.clone() else {
                return ctx.fail(
                    "restore",
                    format!("no backup is recorded for release {target}; nothing to restore"),
                );
            };
            let Some(cmd) = ctx.app.steps.restore.clone() else {
                return ctx.fail("restore", "this app declares no restore step");
            };
            ctx.vars.insert("HOIST_BACKUP_FILE".into(), file);
            ctx.hook("restore", &cmd, &target_dir).await?;
        }
        let started = ctx.start("switch", format!("current -> releases/{target}"));
        let r = ctx
            .layout
            .switch(&target)
            .or_else(|e| ctx.fail("switch", format!("cannot switch: {e}")));
        ctx.finish("switch", started, r)?;
        ctx.note_current(&target, &current).await;
        ctx.activate(&target_dir).await?;
        ctx.maybe_hook(
            "after_switch",
            ctx.app.steps.after_switch.as_ref(),
            &target_dir,
        )
        .await?;
        ctx.restart_services(&target_dir, "").await?;
        ctx.run_checks().await
    }
    .await;
    if result.is_ok() {
        ctx.note_outcome(&current, journal::OUTCOME_ROLLED_BACK)
            .await;
        ctx.note_outcome(&target, journal::OUTCOME_OK).await;
    }
    match result {
        Ok(()) => Outcome {
            result: JobResult::Succeeded,
            release: target,
            previous: current,
            commit: record.commit,
            error: String::new(),
        },
        Err(f) => failed(f, &target, &current, &record.commit),
    }
}
