//! What a killed agent leaves half-written, removed when the next one starts (before
//! it serves, so no job of its own can own any of it): the atomic writer's temps
//! (`.NAME.tmp-PID-N`, [`crate::state::atomic`]) beside the journal, lock, `listen`,
//! `LAST_SUCCESS` and `shared/.env`; a release being materialised (`releases/ID.tmp`)
//! and its git index (`releases/.ID.index`, `.ID.index.lock`); the `current` switch's
//! temp link (`.current.ID.tmp`); a first clone (`repos/APP.git.tmp`).
//!
//! Only names the agent itself makes are matched, only directly in the directories it
//! writes them to, and nothing is followed: a symlink with such a name is removed as a
//! link, never its target.

use std::path::{Path, PathBuf};

use crate::state::beneath::Dir;

/// `.NAME.tmp-PID-N`, as [`crate::state::atomic::write_with`] names its temps.
pub fn is_atomic_temp(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let Some((base, suffix)) = rest.rsplit_once(".tmp-") else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    !base.is_empty()
        && suffix
            .split_once('-')
            .is_some_and(|(p, n)| digits(p) && digits(n))
}

/// Removes the leftovers of app `app`: under `state_dir/apps/APP`, `state_dir/repos`
/// and `deploy_to`. Returns what was removed.
pub fn app(state_dir: &Path, app: &str, deploy_to: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    sweep(
        trusted(&state_dir.join("apps").join(app)),
        &mut removed,
        |_| false,
    );
    let clone = format!("{app}.git.tmp");
    sweep(trusted(&state_dir.join("repos")), &mut removed, |n| {
        n == clone
    });
    // deploy_to is the config's; what is beneath it the app user may have planted, so
    // its dirs are opened without following links (a linked `shared` is left alone).
    let root = Dir::open_trusted(deploy_to).ok();
    let beneath = |name: &str| {
        root.as_ref()
            .and_then(|r| r.open_dir(name).ok())
            .map(|d| (d, deploy_to.join(name)))
    };
    sweep(trusted(deploy_to), &mut removed, |n| {
        n.starts_with(".current.") && n.ends_with(".tmp")
    });
    sweep(beneath("releases"), &mut removed, |n| {
        (n.ends_with(".tmp") && !n.starts_with('.'))
            || (n.starts_with('.') && (n.ends_with(".index") || n.ends_with(".index.lock")))
    });
    sweep(beneath("backups"), &mut removed, |_| false);
    sweep(beneath("shared"), &mut removed, |_| false);
    removed
}

/// Removes the atomic writer's temps directly in `dir` (e.g. `state_dir`, for
/// `.listen.tmp-*`). Returns what was removed.
pub fn temps(dir: &Path) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    sweep(trusted(dir), &mut removed, |_| false);
    removed
}

/// A directory the config names, with the path it is shown as.
fn trusted(path: &Path) -> Option<(Dir, PathBuf)> {
    Dir::open_trusted(path)
        .ok()
        .map(|d| (d, path.to_path_buf()))
}

/// Removes the entries of `dir` that are atomic temps or that `also` names (a
/// directory with its contents, never through a link; a link itself).
fn sweep(dir: Option<(Dir, PathBuf)>, removed: &mut Vec<PathBuf>, also: impl Fn(&str) -> bool) {
    let Some((dir, shown)) = dir else {
        return;
    };
    for (name, _) in dir.entries().unwrap_or_default() {
        let name = name.to_string_lossy().into_owned();
        if !is_atomic_temp(&name) && !also(&name) {
            continue;
        }
        let path = shown.join(&name);
        match dir.remove(&name) {
            Ok(()) => removed.push(path),
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "cannot remove a leftover of a previous agent");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // the tests plant the links the sweep must not follow
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn names_of_atomic_temps() {
        assert!(is_atomic_temp(".journal.json.tmp-412-0"));
        assert!(is_atomic_temp("..env.tmp-1-22"));
        for name in [
            "journal.json",
            ".journal.json.tmp-",
            ".journal.json.tmp-12",
            ".journal.json.tmp-a-1",
            ".tmp-1-2",
            "x.tmp-1-2",
        ] {
            assert!(!is_atomic_temp(name), "{name}");
        }
    }

    #[test]
    fn removes_what_a_dead_agent_left_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        let state = root.path().join("state");
        let deploy_to = root.path().join("web");
        let outside = root.path().join("outside");
        for dir in [
            state.join("apps/web"),
            state.join("repos/web.git.tmp/objects"),
            state.join("repos/web.git"),
            deploy_to.join("releases/20261122T101500Z-abc1234"),
            deploy_to.join("releases/20261122T101600Z-def5678.tmp/app"),
            deploy_to.join("backups"),
            deploy_to.join("shared"),
            outside.clone(),
        ] {
            std::fs::create_dir_all(dir).unwrap();
        }
        let write = |p: PathBuf| std::fs::write(p, b"x").unwrap();
        write(state.join("apps/web/journal.json"));
        write(state.join("apps/web/.journal.json.tmp-99-3"));
        write(state.join("apps/web/.lock.json.tmp-99-4"));
        write(state.join(".listen.tmp-99-0"));
        write(deploy_to.join("releases/.20261122T101600Z-def5678.index"));
        write(deploy_to.join("releases/.20261122T101600Z-def5678.index.lock"));
        write(deploy_to.join("backups/.LAST_SUCCESS.tmp-99-1"));
        write(deploy_to.join("backups/LAST_SUCCESS"));
        write(deploy_to.join("shared/..env.tmp-99-2"));
        write(deploy_to.join("shared/.env"));
        write(outside.join("keep"));
        symlink(
            "releases/20261122T101600Z-def5678",
            deploy_to.join(".current.x.tmp"),
        )
        .unwrap();
        // A planted link with a temp's name: the link goes, never what it points at.
        symlink(&outside, deploy_to.join("releases/evil.tmp")).unwrap();

        let mut removed = app(&state, "web", &deploy_to);
        removed.extend(temps(&state));
        assert_eq!(removed.len(), 11, "{removed:?}");
        assert!(state.join("apps/web/journal.json").exists());
        assert!(state.join("repos/web.git").exists());
        assert!(!state.join("repos/web.git.tmp").exists());
        assert!(deploy_to.join("releases/20261122T101500Z-abc1234").exists());
        assert!(deploy_to.join("backups/LAST_SUCCESS").exists());
        assert!(deploy_to.join("shared/.env").exists());
        assert!(outside.join("keep").exists(), "a link is never followed");
        let left: Vec<_> = std::fs::read_dir(deploy_to.join("releases"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["20261122T101500Z-abc1234"]);
    }
}
