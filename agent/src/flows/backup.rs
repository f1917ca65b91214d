//! Backups: how one is taken (before a deploy migrates, before a `--migrate` rollback,
//! on demand) and kept (`keep_backups`), and the two jobs of their own: `hoist backup`
//! (a dump now, with the app's `backup` step) and `hoist restore` (the database from one
//! dump, with the app's `restore` step, inside `maintenance_on`/`maintenance_off`; code
//! and `current` are untouched).

use hoist_proto::v1::JobResult;

use crate::state::{
    beneath::{self, BeneathError, Dir},
    journal::{self, Change, Journal},
    release,
};

use super::*;

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

/// Why a backup is taken, and so its name in `backups/` (`CURRENT.WHY.backup`).
pub(super) enum BackupWhy<'a> {
    /// Before `.0` migrates (a deploy): `CURRENT.before-NEW`.
    Deploy(&'a str),
    /// Before a `--migrate` rollback reverses migrations: `CURRENT.rollback-MS`.
    Rollback,
    /// `hoist backup`: `CURRENT.manual-MS`.
    Manual,
}

/// Takes a backup with the app's `backup` step, run in `cwd`; `None` when the app
/// declares none. A deploy's is recorded on the release that is current now (what
/// `rollback --restore-db` to it restores); every one is in the journal's backups.
pub(super) async fn backup(
    ctx: &mut Ctx,
    cwd: &std::path::Path,
    why: BackupWhy<'_>,
) -> StepResult<Option<String>> {
    let Some(cmd) = ctx.app.steps.backup.clone() else {
        return Ok(None);
    };
    let serving = ctx.layout.current();
    let current = serving.clone().unwrap_or_else(|| "initial".into());
    let taken_at_ms = journal::now_ms();
    let (reason, before, id) = match why {
        BackupWhy::Deploy(new_id) => ("deploy", new_id, format!("{current}.before-{new_id}")),
        BackupWhy::Rollback => ("rollback", "", format!("{current}.rollback-{taken_at_ms}")),
        BackupWhy::Manual => ("manual", "", format!("{current}.manual-{taken_at_ms}")),
    };
    let name = format!("{id}.backup");
    let file = ctx.layout.backups().join(&name);
    let owner = ctx
        .run_as
        .as_ref()
        .filter(|_| nix::unistd::Uid::effective().is_root())
        .map(|r| (r.uid(), r.gid()));
    // The agent makes the dump's file itself, private to the app's user, before the
    // hook writes into it; and checks LAST_SUCCESS can be replaced, before anything.
    let prepared = (|| {
        let backups = ctx.layout.backups_dir()?;
        backups.set_owner_and_mode(owner, BACKUPS_DIR_MODE)?;
        backups.check_writable(LAST_SUCCESS)?;
        backups.create_new(&name, BACKUP_FILE_MODE, owner)?;
        Ok::<_, BeneathError>(backups)
    })();
    let backups = match prepared {
        Ok(b) => b,
        Err(e) => {
            let started = ctx.start("backup", file.display().to_string());
            let r = ctx.fail("backup", format!("cannot prepare the backup file: {e}"));
            return ctx.finish("backup", started, r).map(|()| None);
        }
    };
    ctx.vars
        .insert("HOIST_BACKUP_FILE".into(), file.display().to_string());
    if let Err(f) = ctx.hook("backup", &cmd, cwd).await {
        // Not a backup: do not leave it looking like one.
        let _ = backups.remove(&name);
        return Err(f);
    }
    // The hook may have replaced the file: it must still be a non-empty regular file
    // of its own (not a link), and private again.
    let checked = backups.lstat(&name).and_then(|st| match st {
        None => Ok(0),
        Some(st) => {
            backups.expect_file(&name, &st)?;
            if st.len > 0 {
                fix_backup_mode(&backups, &name)?;
            }
            Ok(st.len)
        }
    });
    if !matches!(checked, Ok(size) if size > 0) {
        let _ = backups.remove(&name);
    }
    let size = match checked {
        Ok(size) => size,
        Err(e) => {
            let started = ctx.start("backup check", file.display().to_string());
            let r = ctx.fail(
                "backup check",
                format!("{e}; refusing to migrate without a backup"),
            );
            return ctx.finish("backup check", started, r).map(|()| None);
        }
    };
    if size == 0 {
        let started = ctx.start("backup check", file.display().to_string());
        let r = ctx.fail(
            "backup check",
            format!(
                "the backup step left {} missing or empty; refusing to migrate without a backup",
                file.display()
            ),
        );
        return ctx.finish("backup check", started, r);
    }
    let marker = format!(
        "{}\n{}\n{}\n",
        file.display(),
        release::utc_stamp(journal::now_ms() / 1000),
        size
    );
    let written = backups.write_atomic(LAST_SUCCESS, marker.as_bytes(), |f| {
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(f, Some(uid.as_raw()), Some(gid.as_raw()))?;
        }
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(
            LAST_SUCCESS_MODE,
        ))
    });
    if let Err(e) = written {
        ctx.notice(format!(
            "cannot record the backup in backups/{LAST_SUCCESS}: {e}"
        ));
    }
    ctx.notice(format!("backup {id}: {} ({} bytes)", file.display(), size));
    let change = Change::Backup(journal::BackupRecord {
        id,
        file: file.display().to_string(),
        size,
        taken_at_ms,
        release: serving.unwrap_or_default(),
        reason: reason.into(),
        before: before.into(),
        job_id: ctx.job.id.clone(),
    });
    ctx.journal
        .record(change, "the backup in the journal")
        .await;
    Ok(Some(file.display().to_string()))
}

/// The marker naming the last good backup, its size and time.
const LAST_SUCCESS: &str = "LAST_SUCCESS";
/// A database dump: only the app's user reads it.
const BACKUP_FILE_MODE: u32 = 0o600;
/// `LAST_SUCCESS`: the app's group may read it.
const LAST_SUCCESS_MODE: u32 = 0o640;
/// `backups/`: the app's user and group only.
const BACKUPS_DIR_MODE: u32 = release::Layout::APP_DIR_MODE;

/// Makes the dump at `name` 0600 again (a hook may have recreated it under its umask),
/// through a descriptor opened without following links.
fn fix_backup_mode(backups: &Dir, name: &str) -> Result<(), BeneathError> {
    let fd = nix::fcntl::openat(
        backups.as_fd(),
        name,
        nix::fcntl::OFlag::O_RDONLY
            | nix::fcntl::OFlag::O_NOFOLLOW
            | nix::fcntl::OFlag::O_NONBLOCK
            | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| BeneathError::Io {
        op: "open",
        name: backups.name(name),
        source: e.into(),
    })?;
    let st = nix::sys::stat::fstat(&fd).map_err(|e| BeneathError::Io {
        op: "stat",
        name: backups.name(name),
        source: e.into(),
    })?;
    if st.st_nlink != 1 || (st.st_mode & nix::libc::S_IFMT) != nix::libc::S_IFREG {
        return Err(BeneathError::NotFile {
            name: backups.name(name),
        });
    }
    nix::sys::stat::fchmod(
        &fd,
        nix::sys::stat::Mode::from_bits_truncate(BACKUP_FILE_MODE),
    )
    .map_err(|e| BeneathError::Io {
        op: "change the mode of",
        name: backups.name(name),
        source: e.into(),
    })
}

/// Keeps backups recorded on releases still on disk (and the ones taken before their
/// migrations), the newest `keep_backups` of the rest.
pub(super) fn prune_backups(ctx: &Ctx, journal: &Journal) {
    let on_disk = ctx.layout.list();
    let keep: Vec<String> = journal
        .releases
        .iter()
        .filter(|r| on_disk.contains(&r.id))
        .flat_map(|r| {
            let before_migrations = match &r.migrations {
                journal::Migrations::Applied { backup, .. } => backup.clone(),
                _ => None,
            };
            r.backup_file.clone().into_iter().chain(before_migrations)
        })
        .collect();
    let Ok(backups) = ctx.layout.backups_dir() else {
        return;
    };
    let mut others: Vec<String> = backups
        .entries()
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, kind)| *kind != beneath::Kind::Dir)
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| name.ends_with(".backup"))
        .filter(|name| !keep.contains(&ctx.layout.backups().join(name).display().to_string()))
        .collect();
    // Oldest first: by when the journal says each was taken (unknown ones first), then
    // by name (names start with the release id, which sorts by time).
    let taken = |name: &String| {
        let id = name.trim_end_matches(".backup");
        journal
            .backups
            .iter()
            .rev()
            .find(|b| b.id == id)
            .map_or(0, |b| b.taken_at_ms)
    };
    others.sort_by(|a, b| (taken(a), a).cmp(&(taken(b), b)));
    let excess = others.len().saturating_sub(ctx.app.keep_backups as usize);
    for name in others.into_iter().take(excess) {
        let _ = backups.remove(&name);
    }
}
