//! The deploy flow (SPEC §4): fetch, materialise, link shared, build, backup,
//! maintenance, migrate, switch, restart, check; before the switch a failure removes the
//! new release (unless its migrate step ran: then it stays, recorded with its
//! migrations, for its own migrate_rollback), after it the previous release is put back
//! ([`super::rollback`]).

use std::collections::BTreeMap;

use hoist_proto::v1::{JobResult, StepOutput, Stream as WireStream, job_event::Kind};
use tokio::sync::mpsc;

use crate::{
    config,
    host::process,
    state::{
        envfile,
        journal::{self, Change, ReleaseRecord},
        release,
    },
};

use super::{
    backup::{BackupWhy, backup, prune_backups},
    *,
};

/// Free space required on top of the expected release size before materialising.
pub(super) const MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;

/// Fetch into the app's bare mirror and resolve `ref` to a commit.
pub(super) async fn fetch(ctx: &Ctx, r#ref: &str) -> StepResult<String> {
    let step = "fetch";
    let started = ctx.start(step, format!("{} {}", ctx.app.repo, r#ref));
    let result = async {
        let repos = ctx.state_dir.join("repos");
        std::fs::create_dir_all(&repos).or_else(|e| ctx.fail(step, format!("cannot create {}: {e}", repos.display())))?;
        let mirror = repos.join(format!("{}.git", ctx.app.name));
        let mirror_s = mirror.to_string_lossy().into_owned();
        if mirror.join("HEAD").exists() {
            ctx.tool(step, &["git", "--git-dir", &mirror_s, "remote", "set-url", "origin", &ctx.app.repo], &repos).await?;
            ctx.tool(step, &["git", "--git-dir", &mirror_s, "fetch", "--prune", "--force", "--quiet", "origin"], &repos).await?;
        } else {
            let tmp = repos.join(format!("{}.git.tmp", ctx.app.name));
            #[allow(clippy::disallowed_methods)] // state_dir/repos: root's own
            let _ = std::fs::remove_dir_all(&tmp);
            let tmp_s = tmp.to_string_lossy().into_owned();
            ctx.tool(step, &["git", "clone", "--mirror", "--quiet", "--", &ctx.app.repo, &tmp_s], &repos).await?;
            std::fs::rename(&tmp, &mirror).or_else(|e| ctx.fail(step, format!("cannot move the mirror into place: {e}")))?;
        }
        let spec = format!("{}^{{commit}}", r#ref);
        match ctx
            .tool(step, &["git", "--git-dir", &mirror_s, "rev-parse", "--verify", "--quiet", "--end-of-options", &spec], &repos)
            .await
        {
            Ok(lines) if lines.first().is_some_and(|l| l.len() == 40) => Ok(lines[0].clone()),
            _ => {
                let known = ctx
                    .tool(step, &["git", "--git-dir", &mirror_s, "for-each-ref", "--count=10", "--sort=-committerdate", "--format=%(refname:short)", "refs/heads", "refs/tags"], &repos)
                    .await
                    .unwrap_or_default();
                ctx.fail(
                    step,
                    format!(
                        "ref {ref:?} is not a branch, tag or commit of {repo}; recent refs: {known}",
                        ref = r#ref,
                        repo = ctx.app.repo,
                        known = if known.is_empty() { "none".to_string() } else { known.join(", ") }
                    ),
                )
            }
        }
    }
    .await;
    if let Ok(commit) = &result {
        ctx.job.emit(Kind::Output(StepOutput {
            step: step.into(),
            stream: WireStream::Stdout.into(),
            line: format!("{} → {commit}", r#ref),
            continued: false,
        }));
    }
    ctx.finish(step, started, result)
}

/// Materialise `commit` into `releases/ID.tmp`, then rename to `releases/ID`.
pub(super) async fn materialise(ctx: &Ctx, commit: &str, id: &str) -> StepResult {
    let step = "materialise";
    let started = ctx.start(step, format!("releases/{id}"));
    let result = async {
        let releases = ctx.layout.releases();
        let free = release::free_bytes(&releases).or_else(|e| ctx.fail(step, format!("cannot stat {}: {e}", releases.display())))?;
        let last = ctx
            .layout
            .current()
            .and_then(|c| ctx.layout.release_dir(&c).ok())
            .map(|d| d.tree_size())
            .unwrap_or(0);
        let need = last + last / 5 + MIN_FREE_BYTES;
        if free < need {
            return ctx.fail(
                step,
                format!(
                    "only {} MiB free under {}; a release needs about {} MiB (the current one is {} MiB); free space and deploy again",
                    free >> 20,
                    releases.display(),
                    need >> 20,
                    last >> 20
                ),
            );
        }
        let tmp = releases.join(format!("{id}.tmp"));
        ctx.layout
            .releases_dir()
            .and_then(|d| d.mkdir_all(&format!("{id}.tmp"), 0o755, None))
            .or_else(|e| ctx.fail(step, e.to_string()))?;
        let mirror = ctx.state_dir.join("repos").join(format!("{}.git", ctx.app.name));
        let index = releases.join(format!(".{id}.index"));
        let mut env = BTreeMap::new();
        env.insert("GIT_INDEX_FILE".to_string(), index.display().to_string());
        env.insert(process::JOB_ENV.into(), ctx.job.id.clone());
        let (tx, mut rx) = mpsc::channel(process::PIECES_IN_FLIGHT);
        let argv = [
            "git".to_string(),
            "--git-dir".into(),
            mirror.display().to_string(),
            "--work-tree".into(),
            tmp.display().to_string(),
            "checkout".into(),
            "--force".into(),
            commit.into(),
            "--".into(),
            ".".into(),
        ];
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let run = process::run_argv(&argv, &releases, &env, ctx.app.step_timeout, tx);
        // The last few lines (git names the file it could not write) are the error.
        let collect = async {
            let mut output: Vec<String> = Vec::new();
            while let Some(piece) = rx.recv().await {
                if output.len() == 3 {
                    output.remove(0);
                }
                output.push(process::tail(&piece.text, 300).to_string());
            }
            output
        };
        let (outcome, output) = tokio::join!(run, collect);
        let _ = std::fs::remove_file(&index);
        match outcome {
            Ok(o) if o.success() => {}
            Ok(o) => return ctx.fail(step, format!("git checkout exited {:?}: {}", o.code, output.join(" / "))),
            Err(e) => return ctx.fail(step, e.to_string()),
        }
        // The checkout is repository content: REVISION is replaced, never written
        // through, and a committed link there is refused.
        let tree = ctx.layout.release_dir(&format!("{id}.tmp")).or_else(|e| ctx.fail(step, e.to_string()))?;
        tree.write_atomic("REVISION", format!("{commit}\n").as_bytes(), |file| {
            file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        })
        .or_else(|e| ctx.fail(step, format!("cannot write REVISION: {e}")))?;
        if let Some(run_as) = &ctx.run_as
            && nix::unistd::Uid::effective().is_root()
        {
            tree.chown_tree(run_as.uid(), run_as.gid())
                .or_else(|e| ctx.fail(step, format!("cannot give the release to {}: {e}", ctx.app.user.as_deref().unwrap_or("?"))))?;
        }
        std::fs::rename(&tmp, releases.join(id)).or_else(|e| ctx.fail(step, format!("cannot rename the release into place: {e}")))
    }
    .await;
    ctx.finish(step, started, result)
}

/// Links shared paths and compares `.env.example` with `shared/.env`.
pub(super) fn link_shared(ctx: &Ctx, id: &str, allow_missing_env: bool) -> StepResult {
    let step = "shared";
    let started = ctx.start(step, "link shared files and dirs, check .env");
    let result = (|| {
        let dir = ctx
            .layout
            .release_dir(id)
            .or_else(|e| ctx.fail(step, e.to_string()))?;
        // Read as root: neither file is followed through a link, and their content
        // (key names included) is never quoted in an error.
        let shared = ctx
            .layout
            .shared_dir()
            .or_else(|e| ctx.fail(step, e.to_string()))?;
        let missing = envfile::missing_keys_beneath(&dir, ".env.example", &shared, ".env")
            .or_else(|e| ctx.fail(step, e.to_string()))?;
        {
            if !missing.is_empty() {
                let text = format!(
                    "shared/.env lacks keys that .env.example lists: {}",
                    missing.join(", ")
                );
                if allow_missing_env {
                    ctx.notice(format!("{text} (continuing: --allow-missing-env)"));
                } else {
                    return ctx.fail(
                        step,
                        format!(
                            "{text}; set them with `hoist env {} set KEY=VALUE`, or deploy with --allow-missing-env",
                            ctx.app.name
                        ),
                    );
                }
            }
        }
        let owner = ctx
            .run_as
            .as_ref()
            .filter(|_| nix::unistd::Uid::effective().is_root())
            .map(|r| (r.uid(), r.gid()));
        let linked = ctx
            .layout
            .link_shared(&dir, &ctx.app.shared_files, &ctx.app.shared_dirs, owner)
            .or_else(|e| ctx.fail(step, format!("cannot link shared paths: {e}")))?;
        for l in linked {
            ctx.job.emit(Kind::Output(StepOutput {
                step: step.into(),
                stream: WireStream::Stdout.into(),
                line: l,
                continued: false,
            }));
        }
        Ok(())
    })();
    ctx.finish(step, started, result)
}

/// The steps a deploy of `app` runs, in order, as [`deploy`] runs them (what
/// `--dry-run` shows); `migrate`: this host runs the migrations.
pub fn planned_steps(app: &config::App, migrate: bool) -> Vec<String> {
    let steps = &app.steps;
    let mut plan: Vec<String> = ["fetch", "materialise", "shared"]
        .map(String::from)
        .to_vec();
    let mut declared = |name: &str, on: bool| {
        if on {
            plan.push(name.to_string());
        }
    };
    declared("build", steps.build.is_some());
    declared("backup", migrate && steps.backup.is_some());
    declared("maintenance_on", steps.maintenance_on.is_some());
    declared("migrate", migrate && steps.migrate.is_some());
    declared("switch", true);
    declared(
        "activate",
        app.strategy == config::Strategy::Command && app.activate.is_some(),
    );
    declared("after_switch", steps.after_switch.is_some());
    for service in app.all_services() {
        plan.push(format!("restart {}", service.display_name()));
    }
    if steps.maintenance_on.is_some() {
        plan.push("maintenance_off".into());
    }
    for check in &app.checks {
        plan.push(format!("check {}", check.name()));
    }
    plan
}

/// The fetch of a dry run, or of a controller choosing a release id, failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FetchFailed(String);

/// Fetches `ref` into the app's mirror and resolves it to a commit, as a deploy's
/// `fetch` step does, outside any job (`PlanDeploy`).
pub async fn resolve_ref(
    state_dir: &std::path::Path,
    app: config::App,
    r#ref: &str,
) -> Result<String, FetchFailed> {
    let job = super::events::Job::scratch("plan", &app.name);
    let (tx, _) = mpsc::channel(1);
    let ctx = Ctx::new(
        state_dir,
        app,
        job,
        String::new(),
        super::JournalHandle::new(tx),
    );
    // A full commit id the mirror has already cannot change: no fetch needed.
    let repos = ctx.state_dir.join("repos");
    let mirror = repos.join(format!("{}.git", ctx.app.name));
    if r#ref.len() == 40
        && r#ref.bytes().all(|b| b.is_ascii_hexdigit())
        && mirror.join("HEAD").exists()
    {
        let mirror = mirror.to_string_lossy().into_owned();
        let spec = format!("{}^{{commit}}", r#ref.to_ascii_lowercase());
        let argv = [
            "git",
            "--git-dir",
            &mirror,
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            &spec,
        ];
        if let Ok(lines) = ctx.tool("fetch", &argv, &repos).await
            && lines.first().is_some_and(|l| l.eq_ignore_ascii_case(r#ref))
        {
            return Ok(lines[0].clone());
        }
    }
    fetch(&ctx, r#ref)
        .await
        .map_err(|f| FetchFailed(format!("{}: {}", f.step, f.error)))
}

/// The release id this deploy builds: the controller's (checked against the commit the
/// ref resolved to here, and against the releases already here), or one of its own.
fn choose_release(ctx: &Ctx, chosen: &str, r#ref: &str, commit: &str) -> StepResult<String> {
    if chosen.is_empty() {
        return Ok(release::new_id(commit, &ctx.layout.releases()));
    }
    let step = "release";
    let started = ctx.start(step, format!("release {chosen}"));
    let result = (|| {
        let part =
            release::chosen_release_commit(chosen).or_else(|e| ctx.fail(step, e.to_string()))?;
        if !commit.starts_with(part) {
            return ctx.fail(
                step,
                format!(
                    "{ref} resolved here to {commit}, but the fleet's release id {chosen} names commit {part}: the hosts do not agree on what {ref} is (did it move during the deploy?); deploy again, or deploy the commit itself (--ref {part})",
                    ref = r#ref
                ),
            );
        }
        if ctx.layout.release_entry_exists(chosen)
            || ctx.layout.release_entry_exists(&format!("{chosen}.tmp"))
        {
            let had = ctx.layout.revision(chosen);
            return ctx.fail(
                step,
                format!(
                    "release {chosen} already exists on this host{}; a release id names one deploy: deploy again for a new id",
                    if had.is_empty() { String::new() } else { format!(" (commit {had})") }
                ),
            );
        }
        Ok(chosen.to_string())
    })();
    ctx.finish(step, started, result)
}

/// Removes old releases (`keep_releases` counts good ones only; see
/// [`release::prunable`]) and the backups of releases gone.
pub(super) async fn prune(ctx: &Ctx) {
    let journal = ctx.journal.snapshot().await;
    let current = ctx.layout.current().unwrap_or_default();
    let previous = ctx.layout.previous(&journal).unwrap_or_default();
    // Oldest first: by the time in the id, then (two deploys in one second) by when
    // each went live.
    let mut all = ctx.layout.list();
    all.sort_by_key(|id| {
        let at = journal.release(id).map_or(0, |r| r.deployed_at_ms);
        (id.get(..16).unwrap_or(id).to_string(), at, id.clone())
    });
    let removed = ctx.layout.prune(
        &all,
        ctx.app.keep_releases as usize,
        |id| journal.good(id),
        |id| journal.never_prune(id, &current, &previous),
    );
    if !removed.is_empty() {
        ctx.notice(format!("pruned old releases: {}", removed.join(", ")));
    }
    prune_backups(ctx, &journal);
}

pub(super) async fn deploy(
    ctx: &mut Ctx,
    r#ref: &str,
    release_id: &str,
    migrate: bool,
    allow_missing_env: bool,
) -> Outcome {
    let owner = ctx
        .run_as
        .as_ref()
        .filter(|_| nix::unistd::Uid::effective().is_root())
        .map(|r| (r.uid(), r.gid()));
    if let Err(e) = ctx.layout.ensure(owner) {
        return failed(
            Failed {
                step: "prepare".into(),
                error: format!("cannot prepare {}: {e}", ctx.app.deploy_to.display()),
            },
            "",
            "",
            "",
        );
    }
    let previous = ctx.layout.current().unwrap_or_default();
    let commit = match fetch(ctx, r#ref).await {
        Ok(c) => c,
        Err(f) => return failed(f, "", &previous, ""),
    };
    let id = match choose_release(ctx, release_id, r#ref, &commit) {
        Ok(id) => id,
        Err(f) => return failed(f, "", &previous, &commit),
    };
    ctx.set_release_vars(&id, &commit, r#ref);
    ctx.notice(format!("release {id} ({}) from {}", &commit[..7], r#ref));
    // Before anything is built: the journal's running record names the release, so a
    // restart after a kill removes exactly what this job half-built.
    let progress = Change::Progress {
        job_id: ctx.job.id.clone(),
        release: id.clone(),
        commit: commit.clone(),
    };
    if let Err(err) = ctx.journal.try_record(progress).await {
        let f = Failed {
            step: "prepare".into(),
            error: format!("cannot record the release in the journal: {err}"),
        };
        return failed(f, "", &previous, &commit);
    }

    let dir = ctx.layout.release(&id);
    let mut maintenance = false;
    let mut migrated: Option<(Option<String>, u64)> = None;
    let before_switch: StepResult = async {
        materialise(ctx, &commit, &id).await?;
        link_shared(ctx, &id, allow_missing_env)?;
        ctx.maybe_hook("build", ctx.app.steps.build.as_ref(), &dir)
            .await?;
        let pending = !migrate || pending(ctx, &dir).await?;
        if !pending {
            // Nothing to migrate: no dump, no maintenance window, no migrate step.
            return Ok(());
        }
        let taken = if migrate {
            backup(ctx, &dir, BackupWhy::Deploy(&id)).await?
        } else {
            None
        };
        if let Some(cmd) = &ctx.app.steps.maintenance_on {
            maintenance = true;
            ctx.hook("maintenance_on", cmd, &dir).await?;
        }
        if migrate {
            match &ctx.app.steps.migrate {
                Some(cmd) => {
                    // Set before it runs: a migrate step that fails may have applied
                    // part of its migrations.
                    migrated = Some((taken.clone(), journal::now_ms()));
                    ctx.hook("migrate", cmd, &dir).await?;
                    migrated = Some((taken, journal::now_ms()));
                }
                None => ctx.notice("migrations requested, but this app declares no migrate step"),
            }
        }
        Ok(())
    }
    .await;
    if let Err(f) = before_switch {
        if maintenance {
            let _ = ctx
                .maybe_hook(
                    "maintenance_off",
                    ctx.app.steps.maintenance_off.as_ref(),
                    &dir,
                )
                .await;
        }
        let serving = if previous.is_empty() {
            "no release yet"
        } else {
            &previous
        };
        if let Some((backup, at_ms)) = migrated {
            // Its migrate step failed part way: the release stays (never switched to),
            // recorded with its migrations, so its own migrate_rollback can undo them.
            record_release(ctx, &id, &commit, r#ref).await;
            let change = Change::Migrated {
                release: id.clone(),
                backup,
                at_ms,
            };
            ctx.journal
                .record(change, "the migrations in the journal")
                .await;
            ctx.notice(format!(
                "release {id} stays on disk: its migrate step failed and may have applied some migrations; current is untouched ({serving}); reverse them from {id} with `hoist rollback {app} --migrate --of {id}`, or restore the backup taken before them with `hoist restore {app} --yes`",
                app = ctx.app.name
            ));
            return failed(f, &id, &previous, &commit);
        }
        if let Ok(releases) = ctx.layout.releases_dir() {
            let _ = releases.remove(&id);
            let _ = releases.remove(&format!("{id}.tmp"));
        }
        ctx.notice(format!(
            "release {id} removed; current is untouched ({serving})"
        ));
        return failed(f, &id, &previous, &commit);
    }

    // The switch.
    let started = ctx.start("switch", format!("current -> releases/{id}"));
    let switched = ctx
        .layout
        .switch(&id)
        .or_else(|e| ctx.fail("switch", format!("cannot switch current: {e}")));
    if let Err(f) = ctx.finish("switch", started, switched) {
        if let Ok(releases) = ctx.layout.releases_dir() {
            let _ = releases.remove(&id);
        }
        return failed(f, &id, &previous, &commit);
    }
    record_release(ctx, &id, &commit, r#ref).await;
    if let Some((backup, at_ms)) = migrated.clone() {
        let change = Change::Migrated {
            release: id.clone(),
            backup,
            at_ms,
        };
        ctx.journal
            .record(change, "the migrations in the journal")
            .await;
    }

    let after: StepResult = async {
        ctx.activate(&dir).await?;
        ctx.maybe_hook("after_switch", ctx.app.steps.after_switch.as_ref(), &dir)
            .await?;
        ctx.restart_services(&dir, "").await?;
        if maintenance {
            maintenance = false;
            ctx.maybe_hook(
                "maintenance_off",
                ctx.app.steps.maintenance_off.as_ref(),
                &dir,
            )
            .await?;
        }
        ctx.run_checks().await
    }
    .await;
    let outcome = match after {
        Ok(()) => Outcome {
            result: JobResult::Succeeded,
            release: id.clone(),
            previous: previous.clone(),
            commit: commit.clone(),
            error: String::new(),
        },
        Err(f) => {
            let migrated = migrated.is_some();
            super::rollback::auto_rollback(ctx, f, &id, &previous, &commit, migrated, maintenance)
                .await
        }
    };
    if outcome.result == JobResult::Succeeded {
        ctx.note_current(&id, &previous).await;
    }
    let mark = match outcome.result {
        JobResult::Succeeded => journal::OUTCOME_OK,
        JobResult::RolledBack => journal::OUTCOME_ROLLED_BACK,
        _ => journal::OUTCOME_FAILED,
    };
    ctx.note_outcome(&id, mark).await;
    prune(ctx).await;
    outcome
}

/// Whether this deploy has migrations to run: `migrate_status` (when declared) shows
/// the operator what the schema looks like, then `migrate_pending` (when declared)
/// answers by its exit status: 0 pending, 1 nothing pending, anything else fails the
/// deploy (nothing has changed yet). Without `migrate_pending`, migrations are assumed
/// pending, as before.
async fn pending(ctx: &Ctx, dir: &std::path::Path) -> StepResult<bool> {
    if let Some(cmd) = &ctx.app.steps.migrate_status
        && let Err(f) = ctx.hook("migrate_status", cmd, dir).await
    {
        ctx.notice(format!(
            "migrate_status did not succeed ({}); going on",
            f.error
        ));
    }
    let Some(cmd) = &ctx.app.steps.migrate_pending else {
        return Ok(true);
    };
    match ctx.hook_exit("migrate_pending", cmd, dir, &[1]).await {
        Ok(1) => {
            ctx.notice(
                "nothing to migrate (migrate_pending exited 1): no backup, no maintenance, no migrate",
            );
            Ok(false)
        }
        Ok(_) => Ok(true),
        Err(f) => Err(Failed {
            step: f.step,
            error: format!(
                "{} (exit 0 means migrations are pending, 1 nothing pending; anything else is an error)",
                f.error
            ),
        }),
    }
}

pub(super) async fn record_release(ctx: &Ctx, id: &str, commit: &str, r#ref: &str) {
    let change = Change::Release {
        record: ReleaseRecord {
            id: id.into(),
            commit: commit.into(),
            r#ref: r#ref.into(),
            who: ctx.who.clone(),
            deployed_at_ms: journal::now_ms(),
            job_id: ctx.job.id.clone(),
            backup_file: None,
            migrations: journal::Migrations::None,
            outcome: String::new(),
        },
        on_disk: ctx.layout.list(),
    };
    ctx.journal
        .record(change, "the release in the journal")
        .await;
}
