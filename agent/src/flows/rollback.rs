//! Rollbacks: the one asked for (`hoist rollback`), and the automatic one after a
//! deploy fails past its switch.

use hoist_proto::v1::JobResult;

use crate::{
    config,
    state::{
        journal::{self, Change, Journal, Migrations, TargetError},
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
            "the migrations of {id} are still applied ({previous} serves again); reverse them from {id} with `hoist rollback {app} --migrate --of {id}` ({previous} stays current), or restore the backup taken before them with `hoist restore {app} --yes`",
            app = ctx.app.name
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
    // As [`rollback`] runs them: the releases being left reverse their own
    // migrations, newest first, after a backup and inside maintenance.
    let mut reverse = Vec::new();
    if migrate {
        if app.steps.migrate_rollback.is_none() {
            return Err(RollbackRefusal::NoMigrateRollback);
        }
        reverse = journal.schema_ahead(&target);
        let legacy = journal
            .release(&current)
            .is_none_or(|r| r.migrations == Migrations::Unknown);
        if legacy && !current.is_empty() && !reverse.contains(&current) {
            reverse.push(current.clone());
        }
    }
    if restore_db && app.steps.restore.is_none() {
        return Err(RollbackRefusal::NoRestore);
    }
    let maintenance = (!reverse.is_empty() || restore_db) && app.steps.maintenance_on.is_some();
    if !reverse.is_empty() && app.steps.backup.is_some() {
        steps.push("backup".into());
    }
    if maintenance {
        steps.push("maintenance_on".into());
    }
    for id in &reverse {
        steps.push(format!("migrate_rollback (from {id})"));
    }
    if restore_db {
        // A host that took no backup (it did not migrate) switches code only; the
        // controller refuses when no selected host holds one.
        steps.push(match &record.backup_file {
            Some(file) => format!("restore ({file})"),
            None => "restore: no backup recorded here (code only)".into(),
        });
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
    if maintenance {
        steps.push("maintenance_off".into());
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

/// What `hoist rollback` asked for.
pub(super) struct Ask<'a> {
    /// Release to return to; empty: the previous one.
    pub to: &'a str,
    pub migrate: bool,
    pub restore_db: bool,
    /// Reverse only this release's migrations; `current` stays.
    pub of: &'a str,
    /// Reverse the migrations still applied by releases after the current one; stay.
    pub ahead_only: bool,
}

/// The releases whose migrations `--of`/`ahead_only` reverse here, newest first.
fn schema_only(
    ctx: &Ctx,
    journal: &Journal,
    current: &str,
    ask: &Ask<'_>,
) -> Result<Vec<String>, String> {
    if ask.of.is_empty() {
        let ahead = journal.schema_ahead(current);
        if ahead.is_empty() {
            ctx.notice(format!(
                "no release after {current} has migrations applied on this host; nothing to reverse here"
            ));
        }
        return Ok(ahead);
    }
    let of = ask.of;
    if of == current {
        return Err(format!(
            "release {of} is current; to leave it and reverse its migrations run `hoist rollback {} --migrate`",
            ctx.app.name
        ));
    }
    let Some(record) = journal.release(of) else {
        if ctx.layout.has_release(of) {
            ctx.notice(format!(
                "release {of} has no migrations recorded on this host; nothing to reverse here"
            ));
            return Ok(Vec::new());
        }
        return Err(format!(
            "release {of} is not on this host; see `hoist releases {}`",
            ctx.app.name
        ));
    };
    match &record.migrations {
        Migrations::Applied { .. } => Ok(vec![of.to_string()]),
        Migrations::Unknown => {
            ctx.notice(format!(
                "release {of} predates hoist's migration bookkeeping; running its migrate_rollback"
            ));
            Ok(vec![of.to_string()])
        }
        Migrations::None => {
            ctx.notice(format!(
                "release {of} ran no migrations on this host; nothing to reverse here"
            ));
            Ok(Vec::new())
        }
        Migrations::Reversed { .. } => {
            ctx.notice(format!(
                "the migrations of {of} were already reversed on this host; nothing to reverse"
            ));
            Ok(Vec::new())
        }
    }
}

pub(super) async fn rollback(ctx: &mut Ctx, ask: Ask<'_>) -> Outcome {
    let current = ctx.layout.current().unwrap_or_default();
    let journal = ctx.journal.snapshot().await;
    let stay = ask.migrate && (!ask.of.is_empty() || ask.ahead_only);
    let target = if stay {
        current.clone()
    } else if ask.to.is_empty() {
        ctx.layout.previous(&journal).unwrap_or_default()
    } else {
        match journal.resolve_target(ask.to, &ctx.layout.list(), |id| ctx.layout.revision(id)) {
            Ok(id) => id,
            Err(e) => {
                let f = Failed {
                    step: "rollback".into(),
                    error: format!("{e}; see `hoist releases {}`", ctx.app.name),
                };
                return failed(f, ask.to, &current, "");
            }
        }
    };
    let fail = |step: &str, error: String| {
        failed(
            Failed {
                step: step.into(),
                error,
            },
            &target,
            &current,
            "",
        )
    };
    let to_reverse: Vec<String> = if stay {
        if ask.restore_db {
            return fail(
                "rollback",
                format!(
                    "--of reverses migrations only; restore a backup with `hoist restore {}`",
                    ctx.app.name
                ),
            );
        }
        match schema_only(ctx, &journal, &current, &ask) {
            Ok(ids) => ids,
            Err(e) => return fail("rollback", e),
        }
    } else {
        if target.is_empty() {
            return fail(
                "rollback",
                "there is no previous release to roll back to".into(),
            );
        }
        if !ctx.layout.has_release(&target) {
            return fail(
                "rollback",
                format!(
                    "release {target} is not on this host; see `hoist releases {}`",
                    ctx.app.name
                ),
            );
        }
        if target == current {
            return fail("rollback", format!("release {target} is already current"));
        }
        let mut ids: Vec<String> = Vec::new();
        if ask.migrate {
            // The releases being left, newest first: each reverses its own migrations.
            ids = journal.schema_ahead(&target);
            let legacy = journal
                .release(&current)
                .is_none_or(|r| r.migrations == Migrations::Unknown);
            if legacy && !current.is_empty() && !ids.contains(&current) {
                ids.push(current.clone());
            }
            if ids.is_empty() {
                ctx.notice(format!(
                    "no release after {target} has migrations applied on this host; nothing to reverse here"
                ));
            }
        }
        ids
    };
    if !to_reverse.is_empty() && ctx.app.steps.migrate_rollback.is_none() {
        return fail(
            "migrate_rollback",
            "this app declares no migrate_rollback step".into(),
        );
    }
    if let Some(gone) = to_reverse.iter().find(|id| !ctx.layout.has_release(id)) {
        return fail(
            "migrate_rollback",
            format!(
                "release {gone} is no longer on disk; its migrations cannot be reversed from it"
            ),
        );
    }
    let record = journal.release(&target).cloned().unwrap_or_default();
    ctx.set_release_vars(&target, &record.commit, &record.r#ref);
    if stay {
        if !to_reverse.is_empty() {
            ctx.notice(format!(
                "reversing the migrations of {} on this host; {current} stays current",
                to_reverse.join(", ")
            ));
        }
    } else {
        ctx.notice(format!("rolling back from {current} to {target}"));
    }
    let cur_dir = if current.is_empty() {
        ctx.app.deploy_to.clone()
    } else {
        ctx.layout.release(&current)
    };
    let target_dir = ctx.layout.release(&target);
    let needs_maintenance = !to_reverse.is_empty() || ask.restore_db;
    let mut maintenance = false;
    let mut switched = false;
    let result: StepResult = async {
        if !to_reverse.is_empty() {
            if ctx.app.steps.backup.is_none() {
                ctx.notice(
                    "this app declares no backup step; reversing migrations without a backup",
                );
            }
            super::backup::backup(ctx, &cur_dir, super::backup::BackupWhy::Rollback).await?;
        }
        if needs_maintenance && let Some(cmd) = &ctx.app.steps.maintenance_on {
            maintenance = true;
            ctx.hook("maintenance_on", cmd, &cur_dir).await?;
        }
        if let Some(cmd) = ctx.app.steps.migrate_rollback.clone() {
            for id in &to_reverse {
                let rec = journal.release(id).cloned().unwrap_or_default();
                ctx.set_release_vars(id, &rec.commit, &rec.r#ref);
                ctx.notice(format!(
                    "reversing the migrations of {id}, from releases/{id}"
                ));
                ctx.hook("migrate_rollback", &cmd, &ctx.layout.release(id))
                    .await?;
                ctx.journal
                    .record(
                        Change::Reversed {
                            release: id.clone(),
                        },
                        "the reversed migrations",
                    )
                    .await;
            }
            ctx.set_release_vars(&target, &record.commit, &record.r#ref);
        }
        if stay {
            return Ok(());
        }
        let backup_file = match record.backup_file.clone() {
            Some(file) if ask.restore_db => Some(file),
            // A host that never took a backup does not hold the database's dumps (it did
            // not migrate): the host that did restores; this one only switches.
            None if ask.restore_db && journal.backups.is_empty() => {
                ctx.notice(format!(
                    "this host took no backups (another host migrated): the database is restored where the backup of {target} is; switching code only here"
                ));
                None
            }
            None if ask.restore_db => {
                return ctx.fail(
                    "restore",
                    format!("no backup is recorded for release {target}; nothing to restore"),
                );
            }
            _ => None,
        };
        if let Some(file) = backup_file {
            let Some(cmd) = ctx.app.steps.restore.clone() else {
                return ctx.fail("restore", "this app declares no restore step");
            };
            ctx.vars.insert("HOIST_BACKUP_FILE".into(), file.clone());
            ctx.hook("restore", &cmd, &target_dir).await?;
            // The migrations run after that backup are gone from the database now.
            if let Some(b) = journal.backups.iter().rev().find(|b| b.file == file) {
                let change = Change::Restored {
                    taken_at_ms: b.taken_at_ms,
                };
                ctx.journal
                    .record(change, "the restore in the journal")
                    .await;
            }
        }
        let started = ctx.start("switch", format!("current -> releases/{target}"));
        let r = ctx
            .layout
            .switch(&target)
            .or_else(|e| ctx.fail("switch", format!("cannot switch: {e}")));
        ctx.finish("switch", started, r)?;
        switched = true;
        ctx.note_current(&target, &current).await;
        ctx.activate(&target_dir).await?;
        ctx.maybe_hook(
            "after_switch",
            ctx.app.steps.after_switch.as_ref(),
            &target_dir,
        )
        .await?;
        ctx.restart_services(&target_dir, "").await?;
        if maintenance {
            maintenance = false;
            ctx.maybe_hook(
                "maintenance_off",
                ctx.app.steps.maintenance_off.as_ref(),
                &target_dir,
            )
            .await?;
        }
        ctx.run_checks().await
    }
    .await;
    let off = if maintenance {
        let dir = if switched { &target_dir } else { &cur_dir };
        ctx.maybe_hook(
            "maintenance_off",
            ctx.app.steps.maintenance_off.as_ref(),
            dir,
        )
        .await
    } else {
        Ok(())
    };
    let result = result.and(off);
    if result.is_ok() && !stay {
        ctx.note_outcome(&current, journal::OUTCOME_ROLLED_BACK)
            .await;
        ctx.note_outcome(&target, journal::OUTCOME_OK).await;
    }
    match result {
        Ok(()) => Outcome {
            result: JobResult::Succeeded,
            release: target,
            previous: if stay { String::new() } else { current },
            commit: record.commit,
            error: String::new(),
        },
        Err(f) => failed(f, &target, &current, &record.commit),
    }
}
