//! Releases on disk: `deploy_to/releases/ID`, the `current` symlink and its atomic
//! switch, shared files and dirs, free-space checks, and pruning. Also the checks on
//! names that come from requests (refs, release ids), so every path stays confined.

use std::{
    io,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    time::SystemTime,
};

use nix::unistd::{Gid, Uid};

use crate::state::beneath::{BeneathError, Dir, Kind, Root};

/// A name from a request that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    #[error("ref {name:?} is not valid: {why}; pass a branch, tag or commit sha, e.g. --ref main")]
    Ref { name: String, why: &'static str },
    #[error("release {0:?} is not a release id; see `hoist releases APP` for the ids")]
    Release(String),
    #[error(
        "release id {0:?} is not of the form YYYYMMDDTHHMMSSZ-COMMIT[-N] (a UTC time, 7 to 40 \
         lowercase hex digits of the commit, an optional counter)"
    )]
    ChosenRelease(String),
}

/// The commit prefix in a release id the controller chose:
/// `YYYYMMDDTHHMMSSZ-<7..40 lowercase hex>[-N]` (N: 1 to 4 digits). Anything else
/// (a path, a dot, another shape) is refused, so it can only name a directory right
/// under `releases/`.
pub fn chosen_release_commit(id: &str) -> Result<&str, NameError> {
    let bad = || NameError::ChosenRelease(id.to_string());
    let mut parts = id.split('-');
    let (Some(stamp), Some(commit)) = (parts.next(), parts.next()) else {
        return Err(bad());
    };
    let counter = parts.next();
    let stamp_ok = stamp.len() == 16
        && stamp.bytes().enumerate().all(|(i, b)| match i {
            8 => b == b'T',
            15 => b == b'Z',
            _ => b.is_ascii_digit(),
        });
    let commit_ok = (7..=40).contains(&commit.len())
        && commit
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    let counter_ok =
        counter.is_none_or(|n| (1..=4).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit()));
    if stamp_ok && commit_ok && counter_ok && parts.next().is_none() {
        Ok(commit)
    } else {
        Err(bad())
    }
}

/// Validates a git ref from a request: a branch, tag or (abbreviated) sha. Never starts
/// with `-` (it would be an option), no `..`, no control characters or spaces, no `@{`.
pub fn validate_ref(r: &str) -> Result<(), NameError> {
    let bad = |why: &'static str| {
        Err(NameError::Ref {
            name: r.to_string(),
            why,
        })
    };
    if r.is_empty() {
        return bad("it is empty");
    }
    if r.starts_with('-') {
        return bad("it starts with '-'");
    }
    if r.len() > 255 {
        return bad("it is longer than 255 characters");
    }
    if r.contains("..") || r.contains("@{") || r.contains("//") {
        return bad("it contains '..', '@{' or '//'");
    }
    if r.chars()
        .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c))
    {
        return bad("it contains a space, a control character or one of ~^:?*[\\");
    }
    if r.ends_with('/') || r.ends_with(".lock") || r.ends_with('.') || r.starts_with('/') {
        return bad("it starts or ends with '/', or ends with '.' or '.lock'");
    }
    Ok(())
}

/// Validates a release id from a request (a directory name under `releases/`).
pub fn validate_release_id(id: &str) -> Result<(), NameError> {
    let ok = !id.is_empty()
        && id.len() <= 100
        && !id.starts_with('.')
        && !id.contains("..")
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(NameError::Release(id.to_string()))
    }
}

/// A release id: UTC timestamp + short sha, e.g. `20261122T101500Z-abc1234`.
pub fn new_id(commit: &str, releases: &Path) -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let base = format!("{}-{}", utc_stamp(secs), &commit[..commit.len().min(7)]);
    let mut id = base.clone();
    let mut n = 2;
    while releases.join(&id).exists() || releases.join(format!("{id}.tmp")).exists() {
        id = format!("{base}-{n}");
        n += 1;
    }
    id
}

/// `YYYYMMDDTHHMMSSZ` for a unix time.
pub fn utc_stamp(secs: u64) -> String {
    let t = i64::try_from(secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let d = jiff::tz::TimeZone::UTC.to_datetime(t);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        d.year(),
        d.month(),
        d.day(),
        d.hour(),
        d.minute(),
        d.second()
    )
}

/// The layout of one app under `deploy_to`.
#[derive(Clone, Debug)]
pub struct Layout {
    pub deploy_to: PathBuf,
}

impl Layout {
    pub fn new(deploy_to: &Path) -> Layout {
        Layout {
            deploy_to: deploy_to.to_path_buf(),
        }
    }

    pub fn releases(&self) -> PathBuf {
        self.deploy_to.join("releases")
    }

    pub fn release(&self, id: &str) -> PathBuf {
        self.releases().join(id)
    }

    pub fn shared(&self) -> PathBuf {
        self.deploy_to.join("shared")
    }

    pub fn backups(&self) -> PathBuf {
        self.deploy_to.join("backups")
    }

    pub fn current_link(&self) -> PathBuf {
        self.deploy_to.join("current")
    }

    /// Creates `deploy_to` and its `releases/` (root's, 0755), `shared/` and `backups/`
    /// (the app user's, `owner`, 0750), each only when new; any of them that is a link
    /// is an error.
    pub fn ensure(&self, owner: Option<(Uid, Gid)>) -> Result<(), BeneathError> {
        std::fs::create_dir_all(&self.deploy_to).map_err(|source| BeneathError::Io {
            op: "create",
            name: format!("`{}`", self.deploy_to.display()),
            source,
        })?;
        let root = self.root_dir()?;
        root.mkdir_all("releases", 0o755, None)?;
        for dir in ["shared", "backups"] {
            root.mkdir_all(dir, Self::APP_DIR_MODE, owner)?;
        }
        Ok(())
    }

    /// The commit in release `id`'s `REVISION`, or `""`. The release is the app user's:
    /// the file is read beneath it without following a link, and kept only if it is a
    /// commit id (so nothing else a planted file holds reaches a status or a hook's
    /// environment).
    pub fn revision(&self, id: &str) -> String {
        validate_release_id(id)
            .ok()
            .and_then(|()| self.release_dir(id).ok())
            .and_then(|dir| dir.read("REVISION", 128).ok().flatten())
            .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_string())
            .filter(|c| (7..=64).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_hexdigit()))
            .unwrap_or_default()
    }

    /// The app user's directories under `deploy_to` (`shared/`, `backups/`): its group
    /// reads, nobody else.
    pub const APP_DIR_MODE: u32 = 0o750;

    /// `deploy_to`, opened (the config names it: trusted).
    pub fn root_dir(&self) -> Result<Dir, BeneathError> {
        Dir::open_trusted(&self.deploy_to)
    }

    /// `releases/`, opened beneath `deploy_to`.
    pub fn releases_dir(&self) -> Result<Dir, BeneathError> {
        self.root_dir()?.open_root("releases", Root::Releases)
    }

    /// `releases/ID` (or `ID.tmp`), opened beneath `deploy_to`.
    pub fn release_dir(&self, id: &str) -> Result<Dir, BeneathError> {
        self.releases_dir()?.open_root(id, Root::Release)
    }

    /// Whether `releases/NAME` exists at all (a directory, a link, anything), looked
    /// up beneath `deploy_to` without following links.
    pub fn release_entry_exists(&self, name: &str) -> bool {
        self.releases_dir()
            .ok()
            .and_then(|dir| dir.lstat(name).ok().flatten())
            .is_some()
    }

    /// Whether `releases/ID` is a release directory, opened beneath `deploy_to`
    /// without following a link.
    pub fn has_release(&self, id: &str) -> bool {
        self.release_dir(id).is_ok()
    }

    /// `shared/`, opened beneath `deploy_to`.
    pub fn shared_dir(&self) -> Result<Dir, BeneathError> {
        self.root_dir()?.open_root("shared", Root::Shared)
    }

    /// `backups/`, opened beneath `deploy_to`.
    pub fn backups_dir(&self) -> Result<Dir, BeneathError> {
        self.root_dir()?.open_root("backups", Root::Backups)
    }

    /// The dumps in `backups/` (regular files named `*.backup`, never through a link)
    /// with their sizes, by name.
    pub fn backup_files(&self) -> Vec<(String, u64)> {
        let Ok(dir) = self.backups_dir() else {
            return Vec::new();
        };
        let mut files: Vec<(String, u64)> = dir
            .entries()
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, kind)| *kind == Kind::File)
            .filter_map(|(name, _)| name.into_string().ok())
            .filter(|name| name.ends_with(".backup") && !name.starts_with('.'))
            .filter_map(|name| {
                let st = dir.lstat(&name).ok()??;
                (st.kind == Kind::File).then_some((name, st.len))
            })
            .collect();
        files.sort();
        files
    }

    /// The release `current` points at, if any.
    pub fn current(&self) -> Option<String> {
        let target = std::fs::read_link(self.current_link()).ok()?;
        Some(target.file_name()?.to_string_lossy().into_owned())
    }

    /// Finished releases on disk (no `.tmp`), oldest first.
    pub fn list(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.releases())
            .into_iter()
            .flatten()
            .flatten()
            // A directory itself, never one a link points at (a planted
            // `releases/X -> /etc` is no release).
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".tmp") && !n.starts_with('.'))
            .collect();
        ids.sort();
        ids
    }

    /// The release that served before `current`: from the journal's history when it
    /// knows, else the release before `current` by id order (ids sort by time).
    pub fn previous(&self, journal: &crate::state::journal::Journal) -> Option<String> {
        let current = self.current()?;
        let on_disk = self.list();
        if !journal.history.is_empty() {
            return journal.previous(&current, &on_disk);
        }
        on_disk.into_iter().rev().find(|id| *id < current)
    }

    /// Points `current` at `releases/ID` atomically: a new symlink under a temp name,
    /// then rename(2) over `current`, then fsync of the directory. A reader sees the old
    /// or the new target, never a missing link.
    pub fn switch(&self, id: &str) -> io::Result<()> {
        let tmp = self.deploy_to.join(format!(".current.{id}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        #[allow(clippy::disallowed_methods)] // in deploy_to, which the config names
        symlink(Path::new("releases").join(id), &tmp)?;
        std::fs::rename(&tmp, self.current_link())?;
        std::fs::File::open(&self.deploy_to)?.sync_all()
    }

    /// Links each shared file and dir into the release (replacing what the release
    /// carries at that path). Missing shared dirs are created (0750); missing shared
    /// files are created empty (0640), so a fresh host can deploy before its `.env` is
    /// filled in; both are given to `owner` (the app's user), so its hooks can write
    /// there. Everything is checked before anything changes: a link among the parents
    /// of a path in the release, or anywhere on a path in `shared/`, or a shared path of
    /// the wrong type, is an error naming it.
    pub fn link_shared(
        &self,
        release: &Dir,
        files: &[String],
        dirs: &[String],
        owner: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
    ) -> Result<Vec<String>, BeneathError> {
        let shared = self.shared_dir()?;
        let paths: Vec<(&String, bool)> = dirs
            .iter()
            .map(|d| (d, true))
            .chain(files.iter().map(|f| (f, false)))
            .collect();
        for (rel, is_dir) in &paths {
            match shared.lstat(rel)? {
                None => {}
                Some(st) if st.kind == Kind::Link => return Err(shared.link_error(rel)),
                Some(st) if *is_dir && st.kind != Kind::Dir => {
                    return Err(BeneathError::NotDir {
                        name: shared.name(rel),
                    });
                }
                Some(_) if *is_dir => {}
                Some(_) => {
                    shared.check_writable(rel)?;
                }
            }
            if let Some(parent) = parent_of(rel) {
                match release.lstat(&parent)? {
                    None => {}
                    Some(st) if st.kind == Kind::Dir => {}
                    Some(st) if st.kind == Kind::Link => return Err(release.link_error(&parent)),
                    Some(_) => {
                        return Err(BeneathError::NotDir {
                            name: release.name(&parent),
                        });
                    }
                }
            }
        }
        let mut done = Vec::new();
        for (rel, is_dir) in paths {
            let parent = parent_of(rel);
            if shared.lstat(rel)?.is_none() {
                if let Some(parent) = &parent {
                    shared.mkdir_all(parent, 0o755, None)?;
                }
                if is_dir {
                    shared.mkdir_all(rel, 0o750, owner)?;
                } else {
                    shared.create_new(rel, 0o640, owner)?;
                }
            }
            if let Some(parent) = &parent {
                release.mkdir_all(parent, 0o755, owner)?;
            }
            release.remove(rel)?;
            let target = self.shared().join(rel);
            release.symlink(&target, rel)?;
            done.push(format!("{rel} -> {}", target.display()));
        }
        Ok(done)
    }

    /// Removes the releases [`prunable`] names among `all` (the releases on disk,
    /// oldest first), never `current` nor one `protected` says to keep; returns the
    /// ones removed, oldest first.
    pub fn prune(
        &self,
        all: &[String],
        keep: usize,
        good: impl Fn(&str) -> bool,
        protected: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let current = self.current();
        let doomed = prunable(all, keep, good, |id| {
            Some(id) == current.as_deref() || protected(id)
        });
        doomed
            .into_iter()
            .filter(|id| self.releases_dir().and_then(|d| d.remove(id)).is_ok())
            .collect()
    }
}

/// Which of `all` (release ids, oldest first) pruning removes, oldest first. Counting
/// from the newest: the newest `keep` good releases stay (failed and rolled-back ones
/// do not count toward `keep`); a release that is not good stays only while it is one
/// of the newest `keep` releases of all; a `protected` one always stays.
pub fn prunable(
    all: &[String],
    keep: usize,
    good: impl Fn(&str) -> bool,
    protected: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut good_seen = 0;
    let mut doomed: Vec<String> = Vec::new();
    for (newer, id) in all.iter().rev().enumerate() {
        let stays = if good(id) {
            good_seen += 1;
            good_seen <= keep
        } else {
            newer < keep
        };
        if !stays && !protected(id) {
            doomed.push(id.clone());
        }
    }
    doomed.reverse();
    doomed
}

/// The parent of a relative path, unless it has none.
fn parent_of(rel: &str) -> Option<String> {
    Path::new(rel)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| p.to_string_lossy().into_owned())
}

/// Free bytes on the file system holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    Ok(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

#[cfg(test)]
mod tests {

    #[test]
    #[allow(clippy::disallowed_methods)] // plants the link the agent must not follow
    fn revision_is_read_beneath_the_release_never_through_a_link() {
        let root = tempfile::tempdir().unwrap();
        let layout = Layout::new(&root.path().join("app"));
        let outside = root.path().join("secret");
        // Looks like a commit: only the link must stop it.
        std::fs::write(&outside, "deadbeefcafe1234\n").unwrap();
        let id = "20261202T080000Z-abc1234";
        let release = root.path().join("app/releases").join(id);
        std::fs::create_dir_all(&release).unwrap();
        std::fs::write(release.join("REVISION"), "abc1234def\n").unwrap();
        assert_eq!(layout.revision(id), "abc1234def");
        std::fs::remove_file(release.join("REVISION")).unwrap();
        std::os::unix::fs::symlink(&outside, release.join("REVISION")).unwrap();
        assert_eq!(layout.revision(id), "", "read through a planted link");
        std::fs::remove_file(release.join("REVISION")).unwrap();
        std::fs::write(release.join("REVISION"), "not a commit\n").unwrap();
        assert_eq!(layout.revision(id), "");
        assert_eq!(layout.revision("../../etc"), "");
    }
    use super::*;

    #[test]
    fn refs() {
        for good in ["main", "v1.2.3", "release/2026-11", "abc1234", "feature_x"] {
            assert!(validate_ref(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-rf",
            "--upload-pack=x",
            "a..b",
            "a b",
            "x~1",
            "HEAD@{1}",
            "a:b",
            "/abs",
            "x.lock",
        ] {
            assert!(validate_ref(bad).is_err(), "{bad}");
        }
        assert!(validate_release_id("20261122T101500Z-abc1234").is_ok());
        for bad in ["../x", "a/b", "", ".x"] {
            assert!(validate_release_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn pruning_counts_good_releases_only() {
        let ids: Vec<String> = ["v1", "v2", "v3", "v4"].map(String::from).to_vec();
        // v3 was rolled back: keep 3 keeps v4, v2 and v1 (good) and v3 (among the 3 newest).
        let bad = |id: &str| id != "v3";
        assert!(prunable(&ids, 3, bad, |_| false).is_empty());
        // keep 2: v1 goes; v3 is still one of the 2 newest.
        assert_eq!(prunable(&ids, 2, bad, |_| false), ["v1"]);
        // keep 1: v3 is no longer among the newest; v2 is protected (previous).
        assert_eq!(prunable(&ids, 1, bad, |id| id == "v2"), ["v1", "v3"]);
        // Every release failed but the oldest: it is still the one good release kept.
        assert_eq!(prunable(&ids, 1, |id| id == "v1", |_| false), ["v2", "v3"]);
    }

    #[test]
    fn chosen_release_ids() {
        assert_eq!(
            chosen_release_commit("20261202T171500Z-abc1234").unwrap(),
            "abc1234"
        );
        assert_eq!(
            chosen_release_commit("20261202T171500Z-abc1234def-2").unwrap(),
            "abc1234def"
        );
        for bad in [
            "",
            "../x",
            "20261202T171500Z",
            "20261202T171500Z-ABC1234",
            "20261202T171500Z-abc12",
            "20261202T171500Z-abc1234/..",
            "20261202T171500Z-abc1234-2-3",
            "2026120xT171500Z-abc1234",
            "20261202T171500Z-abc1234-12345",
            ".20261202T171500Z-abc1234",
        ] {
            assert!(chosen_release_commit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stamps() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(1_795_342_500), "20261122T101500Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
    }

    #[test]
    fn switch_prune_and_shared() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path());
        layout.ensure(None).unwrap();
        for id in ["r1", "r2", "r3", "r4"] {
            std::fs::create_dir_all(layout.release(id)).unwrap();
        }
        std::fs::create_dir_all(layout.release("r5.tmp")).unwrap();
        layout.switch("r2").unwrap();
        assert_eq!(layout.current().as_deref(), Some("r2"));
        let journal = crate::state::journal::Journal::default();
        assert_eq!(layout.previous(&journal).as_deref(), Some("r1"));
        assert_eq!(layout.list(), vec!["r1", "r2", "r3", "r4"]);
        // keep 1: r1 is previous (protected) and r2 current; r4 is the newest good one.
        let removed = layout.prune(&layout.list(), 1, |_| true, |id| id == "r1");
        assert_eq!(removed, vec!["r3"]);

        let release = layout.release("r2");
        std::fs::create_dir_all(release.join("storage/logs")).unwrap();
        std::fs::write(release.join(".env"), "FROM_REPO=1").unwrap();
        let dir = layout.release_dir("r2").unwrap();
        layout
            .link_shared(&dir, &[".env".into()], &["storage".into()], None)
            .unwrap();
        assert!(
            std::fs::symlink_metadata(release.join(".env"))
                .unwrap()
                .is_symlink()
        );
        assert!(
            std::fs::symlink_metadata(release.join("storage"))
                .unwrap()
                .is_symlink()
        );
        assert!(layout.shared().join(".env").is_file());
        assert!(free_bytes(layout.deploy_to.as_path()).unwrap() > 0);
    }
}
