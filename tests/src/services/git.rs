//! Real git repositories for deploys: a bare repo (the `repo =` an agent fetches from)
//! and a work tree that commits and pushes to it, in a temp dir, made with the `git` CLI
//! under a fixed identity and without the user's git config. Also the `phpapp` fixture
//! (a Laravel-shaped PHP app in `tests/fixtures/phpapp`) and a runner for its `artisan`.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use anyhow::{Context as _, ensure};
use tempfile::TempDir;

use crate::{e2e, services::postgres::Postgres};

const GIT_TIMEOUT: Duration = Duration::from_secs(30);
const ARTISAN_TIMEOUT: Duration = Duration::from_secs(60);
/// The branch every repo starts on and `commit_version` pushes.
pub const MAIN_BRANCH: &str = "main";

/// `tests/fixtures/phpapp`: `artisan`, `public/index.php`, `bootstrap/`, `database/`,
/// `.env.example` (see its README.md). It has no `VERSION`; [`AppRepo::new_php_app`]
/// and tests copying it write one.
pub fn php_fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/phpapp")
}

/// A complete `.env` for the phpapp fixture (every key of its `.env.example`) using
/// database `db` on `pg`, with `APP_ENV=production`.
pub fn php_app_env(pg: &Postgres, db: &str) -> String {
    format!(
        "APP_NAME=phpapp\nAPP_ENV=production\n{}",
        pg.laravel_env(db)
    )
}

/// Copies the directory tree `from` into `to` (created if missing), keeping file modes
/// (so `artisan` stays executable). Symlinks are copied as symlinks.
pub fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("create {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("read {}", from.display()))? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&src, &dst)?;
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)
                .with_context(|| format!("symlink {}", dst.display()))?;
        } else {
            std::fs::copy(&src, &dst)
                .with_context(|| format!("copy {} to {}", src.display(), dst.display()))?;
        }
    }
    Ok(())
}

/// Runs `php artisan ARGS...` in `app_dir` (a release, or a `current` symlink) with a
/// deadline, returning its output whatever the exit status.
pub fn artisan(app_dir: &Path, args: &[&str]) -> anyhow::Result<Output> {
    let php = e2e::find_tool("php").context("php not found (apt-get install php-cli)")?;
    e2e::run_with_timeout(
        Command::new(php)
            .arg("artisan")
            .args(args)
            .current_dir(app_dir),
        None,
        ARTISAN_TIMEOUT,
    )
}

/// Like [`artisan`], but a non-zero exit is an error; returns stdout then stderr.
pub fn artisan_ok(app_dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = artisan(app_dir, args)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "php artisan {} in {} failed ({}): {text}",
        args.join(" "),
        app_dir.display(),
        out.status
    );
    Ok(text)
}

/// A bare repository plus a work tree pushing to it. Panics on git failures: it is test
/// scaffolding, and a failure names the git command and its output.
pub struct AppRepo {
    dir: TempDir,
}

impl AppRepo {
    /// The PHP fixture app committed as release 1 (`VERSION` = `1`) on `main`.
    pub fn new_php_app() -> Self {
        let repo = Self::empty();
        copy_tree(&php_fixture_dir(), &repo.work_dir()).expect("copy the phpapp fixture");
        repo.commit_version("1", &[]);
        repo
    }

    /// A trivial app made of `files` (path, content), committed on `main`.
    pub fn new_static(files: &[(&str, &str)]) -> Self {
        let repo = Self::empty();
        repo.write_files(files);
        repo.commit("initial commit");
        repo
    }

    fn empty() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("hoist-git")
            .tempdir()
            .expect("create a temp dir");
        let repo = AppRepo { dir };
        let (bare, work) = (repo.bare_dir(), repo.work_dir());
        repo.git_in(
            repo.dir.path(),
            [
                OsStr::new("init"),
                OsStr::new("--quiet"),
                OsStr::new("--bare"),
                OsStr::new("--initial-branch"),
                OsStr::new(MAIN_BRANCH),
                bare.as_os_str(),
            ],
        );
        repo.git_in(
            repo.dir.path(),
            [
                OsStr::new("init"),
                OsStr::new("--quiet"),
                OsStr::new("--initial-branch"),
                OsStr::new(MAIN_BRANCH),
                work.as_os_str(),
            ],
        );
        repo.git(["remote", "add", "origin", &repo.url()]);
        repo
    }

    /// Path of the bare repository, usable as `repo =` in an agent config.
    pub fn url(&self) -> String {
        self.bare_dir().display().to_string()
    }

    /// The work tree commits are made in.
    pub fn work_dir(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    fn bare_dir(&self) -> PathBuf {
        self.dir.path().join("app.git")
    }

    /// Writes `VERSION` = `version` and the `extra` files (path relative to the repo,
    /// content; parent dirs created), commits everything (including earlier
    /// [`AppRepo::remove_file`]s) as "release <version>", pushes `main` and returns the
    /// commit's sha.
    pub fn commit_version(&self, version: &str, extra: &[(&str, &str)]) -> String {
        self.write_files(&[("VERSION", &format!("{version}\n"))]);
        self.write_files(extra);
        self.commit(&format!("release {version}"))
    }

    /// An annotated tag `name` on HEAD, pushed (resolving it needs peeling to the commit).
    pub fn tag(&self, name: &str) {
        self.git([
            "tag",
            "--annotate",
            "--message",
            &format!("tag {name}"),
            name,
        ]);
        self.git(["push", "--quiet", "origin", &format!("refs/tags/{name}")]);
    }

    /// A branch `name` at HEAD, pushed.
    pub fn branch(&self, name: &str) {
        self.git([
            "push",
            "--quiet",
            "origin",
            &format!("HEAD:refs/heads/{name}"),
        ]);
    }

    /// Deletes `path` (relative to the repo) from the work tree; the next commit records
    /// it.
    pub fn remove_file(&self, path: &str) {
        let file = self.work_dir().join(path);
        std::fs::remove_file(&file).unwrap_or_else(|e| panic!("remove {}: {e}", file.display()));
    }

    /// Makes `path` (relative to the repo) a symbolic link to `target` in the work tree
    /// (replacing what is there); the next commit records the link as the repo's
    /// content, as an untrusted pusher could.
    pub fn symlink(&self, path: &str, target: &Path) {
        let link = self.work_dir().join(path);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
        }
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link)
            .unwrap_or_else(|e| panic!("link {} -> {}: {e}", link.display(), target.display()));
    }

    /// The sha of `main`'s latest commit.
    pub fn head(&self) -> String {
        self.git(["rev-parse", "HEAD"]).trim().to_string()
    }

    fn write_files(&self, files: &[(&str, &str)]) {
        for (path, content) in files {
            assert!(
                !Path::new(path).is_absolute() && !path.split('/').any(|part| part == ".."),
                "{path:?} must be a relative path inside the repo"
            );
            let file = self.work_dir().join(path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)
                    .unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
            }
            std::fs::write(&file, content)
                .unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
        }
    }

    fn commit(&self, message: &str) -> String {
        self.git(["add", "--all"]);
        self.git(["commit", "--quiet", "--allow-empty", "--message", message]);
        self.git(["push", "--quiet", "origin", MAIN_BRANCH]);
        self.head()
    }

    /// Runs git in the work tree; panics with its output when it fails.
    fn git<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.git_in(&self.work_dir(), args)
    }

    fn git_in<I, S>(&self, dir: &Path, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let git = e2e::find_tool("git").expect("git not found (apt-get install git)");
        let mut cmd = Command::new(git);
        cmd.args(args).current_dir(dir);
        isolate_git(&mut cmd, self.dir.path());
        let described = format!("{cmd:?}");
        let out = e2e::run_with_timeout(&mut cmd, None, GIT_TIMEOUT)
            .unwrap_or_else(|e| panic!("{described}: {e:#}"));
        assert!(
            out.status.success(),
            "{described} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A fixed author and committer, and none of the user's or system's git config (no
/// signing, hooks, templates or default branch surprises).
fn isolate_git(cmd: &mut Command, home: &Path) {
    cmd.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", home)
        .env("GIT_AUTHOR_NAME", "Hoist Tests")
        .env("GIT_AUTHOR_EMAIL", "tests@hoist.invalid")
        .env("GIT_COMMITTER_NAME", "Hoist Tests")
        .env("GIT_COMMITTER_EMAIL", "tests@hoist.invalid")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE");
}

#[cfg(test)]
mod tests {
    use std::{os::unix::process::CommandExt as _, time::Instant};

    use nix::{
        sys::signal::{Signal, kill},
        unistd::Pid,
    };

    use super::*;

    fn git_out(dir: &Path, args: &[&str]) -> String {
        let mut cmd = Command::new(e2e::find_tool("git").unwrap());
        cmd.args(args).current_dir(dir);
        isolate_git(&mut cmd, dir);
        let out = e2e::run_with_timeout(&mut cmd, None, GIT_TIMEOUT).unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[test]
    fn php_app_versions_tags_and_removals_reach_the_bare_repo() {
        let test = "php_app_versions_tags_and_removals_reach_the_bare_repo";
        if e2e::require("git", "git", test).is_none() {
            return;
        }
        let repo = AppRepo::new_php_app();
        let v1 = repo.head();
        assert_eq!(v1.len(), 40, "{v1}");
        repo.tag("v1");
        let v2 = repo.commit_version("2", &[("database/migrations/0002_add.sql", "SELECT 1;")]);
        repo.branch("release-2");
        let v3 = repo.commit_version("3", &[("HEALTH_FAIL", "yes\n")]);
        repo.remove_file("HEALTH_FAIL");
        let v4 = repo.commit_version("4", &[]);
        assert_eq!(repo.head(), v4);
        assert_eq!(
            [&v1, &v2, &v3, &v4]
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len(),
            4
        );

        // A clone of url() sees what was pushed, as an agent's fetch would.
        let clone_parent = tempfile::tempdir().unwrap();
        let clone = clone_parent.path().join("clone");
        git_out(
            clone_parent.path(),
            &["clone", "--quiet", &repo.url(), clone.to_str().unwrap()],
        );
        assert_eq!(git_out(&clone, &["rev-parse", "HEAD"]), v4);
        assert_eq!(git_out(&clone, &["rev-parse", "v1^{commit}"]), v1);
        assert_ne!(
            git_out(&clone, &["rev-parse", "v1"]),
            v1,
            "v1 is an annotated tag"
        );
        assert_eq!(git_out(&clone, &["rev-parse", "origin/release-2"]), v2);
        assert_eq!(git_out(&clone, &["show", "v1:VERSION"]), "1");
        assert_eq!(
            git_out(&clone, &["show", &format!("{v3}:HEALTH_FAIL")]),
            "yes"
        );
        assert!(!clone.join("HEALTH_FAIL").exists());
        assert!(clone.join("public/index.php").is_file());
        assert!(clone.join(".env.example").is_file());
        assert!(!clone.join(".env").exists());
        let mode = git_out(&clone, &["ls-files", "--stage", "artisan"]);
        assert!(mode.starts_with("100755 "), "artisan is executable: {mode}");
        assert_eq!(
            git_out(&clone, &["log", "-1", "--format=%an <%ae>|%s"]),
            "Hoist Tests <tests@hoist.invalid>|release 4"
        );
    }

    #[test]
    fn static_app_has_just_its_files() {
        if e2e::require("git", "git", "static_app_has_just_its_files").is_none() {
            return;
        }
        let repo = AppRepo::new_static(&[("index.html", "hi\n"), ("conf/app.toml", "x = 1\n")]);
        let files = repo.git(["ls-tree", "-r", "--name-only", "HEAD"]);
        assert_eq!(files, "conf/app.toml\nindex.html\n");
        assert!(Path::new(&repo.url()).join("HEAD").is_file());
        let sha = repo.commit_version("2", &[]);
        assert_eq!(
            repo.git(["ls-tree", "-r", "--name-only", &sha]),
            "VERSION\nconf/app.toml\nindex.html\n"
        );
    }

    #[test]
    fn artisan_worker_logs_its_release_and_stops_on_sigterm() {
        let test = "artisan_worker_logs_its_release_and_stops_on_sigterm";
        let Some(php) = e2e::require("php", "php-cli", test) else {
            return;
        };
        let root = tempfile::tempdir().unwrap();
        let release = root.path().join("20250101T000000Z-abc1234");
        copy_tree(&php_fixture_dir(), &release).unwrap();
        let current = root.path().join("current");
        std::os::unix::fs::symlink(&release, &current).unwrap();

        // Commands that need no database.
        let out = artisan_ok(&current, &["config:cache"]).unwrap();
        assert!(out.contains("Configuration cached"), "{out}");
        let cached = std::fs::read_to_string(release.join("bootstrap/cache/config.php")).unwrap();
        assert!(
            cached.contains("'release' => '20250101T000000Z-abc1234'"),
            "{cached}"
        );
        artisan_ok(&current, &["queue:restart"]).unwrap();
        assert!(
            release
                .join("storage/framework/cache/illuminate-queue-restart")
                .is_file()
        );
        let out = artisan(&current, &["nope"]).unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("Command \"nope\" is not defined"));
        let out = artisan(&current, &["migrate:rollback", "--step=x", "--force"]).unwrap();
        assert!(!out.status.success(), "{out:?}");
        // Production without --force is refused before touching the database.
        let out = artisan(&current, &["migrate"]).unwrap();
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Use --force"),
            "{out:?}"
        );

        // The worker runs from the `current` symlink but logs the release it resolved.
        let mut worker = Command::new(php)
            .args(["artisan", "queue:work", "--sleep=3", "--tries=3"])
            .current_dir(&current)
            .stdout(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let log = release.join("storage/logs/worker.log");
        let started = Instant::now();
        let expected = format!(
            "worker {} started release 20250101T000000Z-abc1234",
            worker.id()
        );
        while !std::fs::read_to_string(&log).is_ok_and(|l| l.contains(&expected)) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no {expected:?} in {log:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(e2e::wait_bounded(&mut worker, Duration::from_millis(300)).is_none());
        kill(
            Pid::from_raw(i32::try_from(worker.id()).unwrap()),
            Signal::SIGTERM,
        )
        .unwrap();
        let status = e2e::wait_bounded(&mut worker, Duration::from_secs(10));
        let status = status.unwrap_or_else(|| {
            e2e::kill_group(&mut worker);
            panic!("the worker ignored SIGTERM")
        });
        assert!(status.success(), "{status}");
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            text.contains("stopped release 20250101T000000Z-abc1234 (signal 15)"),
            "{text}"
        );
    }
}
