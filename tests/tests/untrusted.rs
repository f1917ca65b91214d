//! Release content is untrusted (SPEC §2): a repo (or the app's user, in `shared/` and
//! `backups/`) plants links to make the root agent act outside `deploy_to`. Each escape
//! is refused with an error naming the path, and nothing outside changes. Also: dumps
//! are private, hooks run with umask 027, and a step's daemonized processes die with it.

use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use hoist_proto::v1::{
    DeployRequest, EnvListRequest, EnvSetRequest, EnvVar, JobEvent, JobResult, ListReleasesRequest,
    PlanRollbackRequest, RollbackRequest, StatusRequest, agent_client::AgentClient,
};
use hoist_tests::{
    harness::{Agent, AgentBuilder, Pki, Who},
    jobs::{collect, output, result},
    services::git::AppRepo,
};
use tonic::transport::Channel;

/// A deploy_to under a world-traversable temp dir (hooks may run as `nobody`), and an
/// "outside" dir beside it holding the files an attacker aims at.
struct Site {
    root: tempfile::TempDir,
}

impl Site {
    fn new() -> Site {
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let site = Site { root };
        std::fs::create_dir_all(site.outside().join("logs")).unwrap();
        std::fs::write(
            site.outside().join("victim"),
            "ROOT_ONLY_SECRET_KEY=hunter2\n",
        )
        .unwrap();
        std::fs::set_permissions(
            site.outside().join("victim"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::fs::write(site.outside().join("logs/keep"), "keep me\n").unwrap();
        site
    }

    fn deploy_to(&self) -> PathBuf {
        self.root.path().join("web")
    }

    fn outside(&self) -> PathBuf {
        self.root.path().join("outside")
    }

    fn victim(&self) -> PathBuf {
        self.outside().join("victim")
    }

    /// Every path under `outside/` with its content, mode, owner and mtime.
    fn snapshot(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![self.outside()];
        while let Some(p) = stack.pop() {
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let content = if meta.is_file() {
                std::fs::read_to_string(&p).unwrap()
            } else {
                String::new()
            };
            out.push(format!(
                "{} mode={:o} owner={}:{} mtime={}.{} {content:?}",
                p.display(),
                meta.mode(),
                meta.uid(),
                meta.gid(),
                meta.mtime(),
                meta.mtime_nsec()
            ));
            if meta.is_dir() {
                for e in std::fs::read_dir(&p).unwrap() {
                    stack.push(e.unwrap().path());
                }
            }
        }
        out.sort();
        out
    }
}

/// `user`/`group` lines: hooks run as nobody when the tests run as root.
fn run_as() -> &'static str {
    if nix::unistd::Uid::effective().is_root() {
        "user = \"nobody\"\ngroup = \"nogroup\"\n"
    } else {
        ""
    }
}

fn app_toml(repo: &AppRepo, site: &Site, extra: &str) -> String {
    format!(
        r#"
[[app]]
name = "web"
repo = "{repo}"
deploy_to = "{deploy_to}"
{run_as}keep_releases = 3
step_timeout = "20s"
{extra}
"#,
        repo = repo.url(),
        deploy_to = site.deploy_to().display(),
        run_as = run_as(),
    )
}

async fn start(repo: &AppRepo, site: &Site, extra: &str) -> (Pki, Agent, AgentClient<Channel>) {
    let pki = Pki::new();
    let agent = AgentBuilder::new(&pki)
        .apps(&app_toml(repo, site, extra))
        .start()
        .await;
    let client = agent.connect(&pki, Who::Deployer).await.unwrap();
    (pki, agent, client)
}

async fn deploy(client: &mut AgentClient<Channel>, id: &str, migrate: bool) -> Vec<JobEvent> {
    let stream = client
        .deploy(DeployRequest {
            app: "web".into(),
            r#ref: "main".into(),
            deploy_id: id.into(),
            migrate,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    collect(stream).await
}

/// Deploys and expects a failure whose error contains `names`; returns the error.
async fn refused(
    client: &mut AgentClient<Channel>,
    id: &str,
    migrate: bool,
    names: &str,
) -> String {
    let events = deploy(client, id, migrate).await;
    let (res, _, err) = result(&events);
    assert_eq!(res, JobResult::Failed, "{err}\n{}", output(&events));
    assert!(err.contains(names), "error does not name {names}: {err}");
    let transcript = format!("{err}\n{}\n{events:?}", output(&events));
    assert!(
        !transcript.contains("ROOT_ONLY_SECRET_KEY") && !transcript.contains("hunter2"),
        "the outside file's content leaked: {transcript}"
    );
    err
}

fn no_release_serves(site: &Site) {
    assert!(
        std::fs::symlink_metadata(site.deploy_to().join("current")).is_err(),
        "a refused release went live"
    );
    let left: Vec<_> = std::fs::read_dir(site.deploy_to().join("releases"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "the refused release was not removed: {left:?}"
    );
}

#[tokio::test]
async fn a_committed_revision_link_is_refused() {
    let site = Site::new();
    let repo = AppRepo::new_static(&[("index.html", "hi\n")]);
    repo.symlink("REVISION", &site.victim());
    repo.commit_version("1", &[]);
    let before = site.snapshot();
    let (_pki, _agent, mut client) = start(&repo, &site, "").await;
    let err = refused(
        &mut client,
        "rev",
        false,
        "`REVISION` in the release is a symbolic link",
    )
    .await;
    assert!(err.contains("materialise"), "{err}");
    assert_eq!(
        site.snapshot(),
        before,
        "something outside deploy_to changed"
    );
    no_release_serves(&site);
}

#[tokio::test]
async fn a_shared_dir_below_a_committed_link_is_refused() {
    let site = Site::new();
    let repo = AppRepo::new_static(&[("index.html", "hi\n")]);
    repo.symlink("storage", &site.outside());
    repo.commit_version("1", &[]);
    let before = site.snapshot();
    let (_pki, _agent, mut client) =
        start(&repo, &site, "shared_dirs = [\"storage/logs\"]\n").await;
    refused(
        &mut client,
        "nested",
        false,
        "`storage` in the release is a symbolic link",
    )
    .await;
    assert_eq!(
        site.snapshot(),
        before,
        "something outside deploy_to changed"
    );
    assert!(site.outside().join("logs/keep").is_file());
    no_release_serves(&site);
}

#[tokio::test]
async fn a_committed_env_example_link_is_not_read() {
    let site = Site::new();
    let repo = AppRepo::new_static(&[("index.html", "hi\n")]);
    repo.symlink(".env.example", &site.victim());
    repo.commit_version("1", &[]);
    let before = site.snapshot();
    let (_pki, _agent, mut client) = start(&repo, &site, "shared_files = [\".env\"]\n").await;
    refused(
        &mut client,
        "example",
        false,
        "`.env.example` in the release is a symbolic link",
    )
    .await;
    assert_eq!(site.snapshot(), before);
    no_release_serves(&site);
}

#[tokio::test]
async fn links_the_app_user_plants_in_shared_are_refused() {
    let site = Site::new();
    let repo = AppRepo::new_static(&[("index.html", "hi\n"), (".env.example", "APP_KEY=\n")]);
    repo.commit_version("1", &[]);
    let shared = site.deploy_to().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::write(shared.join(".env"), "APP_KEY=base64:x\n").unwrap();
    // A symlinked shared dir: the agent would mkdir, chown and link through it.
    std::os::unix::fs::symlink(site.outside(), shared.join("storage")).unwrap();
    let before = site.snapshot();
    let (_pki, _agent, mut client) = start(
        &repo,
        &site,
        "shared_files = [\".env\"]\nshared_dirs = [\"storage/logs\"]\n",
    )
    .await;
    refused(
        &mut client,
        "shared-dir",
        false,
        "`shared/storage` is a symbolic link",
    )
    .await;
    assert_eq!(site.snapshot(), before);

    // A symlinked shared/.env: not read as root (deploy, env list), not written (env set).
    std::fs::remove_file(shared.join("storage")).unwrap();
    std::fs::remove_file(shared.join(".env")).unwrap();
    std::os::unix::fs::symlink(site.victim(), shared.join(".env")).unwrap();
    refused(
        &mut client,
        "shared-env",
        false,
        "`shared/.env` is a symbolic link",
    )
    .await;
    let err = client
        .env_list(EnvListRequest {
            app: "web".into(),
            show: true,
        })
        .await
        .unwrap_err();
    assert!(
        err.message().contains("`shared/.env` is a symbolic link"),
        "{}",
        err.message()
    );
    assert!(!err.message().contains("ROOT_ONLY"), "{}", err.message());
    let events = env_set(&mut client, "env-link").await;
    let (res, _, err) = result(&events);
    assert_eq!(res, JobResult::Failed, "{err}");
    assert!(err.contains("`shared/.env` is a symbolic link"), "{err}");
    assert_eq!(
        site.snapshot(),
        before,
        "something outside deploy_to changed"
    );
}

async fn env_set(client: &mut AgentClient<Channel>, id: &str) -> Vec<JobEvent> {
    let stream = client
        .env_set(EnvSetRequest {
            app: "web".into(),
            vars: vec![EnvVar {
                key: "APP_KEY".into(),
                value: "base64:planted".into(),
                redacted: false,
            }],
            restart: false,
            job_id: id.into(),
        })
        .await
        .unwrap()
        .into_inner();
    collect(stream).await
}

#[tokio::test]
async fn a_hard_link_to_an_outside_file_is_neither_read_nor_written() {
    let site = Site::new();
    let repo = AppRepo::new_static(&[("index.html", "hi\n"), (".env.example", "APP_KEY=\n")]);
    repo.commit_version("1", &[]);
    let shared = site.deploy_to().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    // As the app's user could where fs.protected_hardlinks is off (or for its own files).
    std::fs::hard_link(site.victim(), shared.join(".env")).unwrap();
    let before = site.snapshot();
    let (_pki, _agent, mut client) = start(&repo, &site, "shared_files = [\".env\"]\n").await;
    let events = env_set(&mut client, "env-hard").await;
    let (res, _, err) = result(&events);
    assert_eq!(res, JobResult::Failed, "{err}");
    assert!(err.contains("`shared/.env` has 2 hard links"), "{err}");
    refused(&mut client, "hard", false, "`shared/.env` has 2 hard links").await;
    let err = client
        .env_list(EnvListRequest {
            app: "web".into(),
            show: true,
        })
        .await
        .unwrap_err();
    assert!(!err.message().contains("hunter2"), "{}", err.message());
    // The outside file keeps its content, mode, owner and mtime (its ctime moved with
    // the link count, which the snapshot does not look at).
    assert_eq!(site.snapshot(), before);
}

#[tokio::test]
async fn status_does_not_read_revision_through_a_link() {
    let site = Site::new();
    let repo = AppRepo::new_static(&[("index.html", "hi\n")]);
    let commit = repo.commit_version("1", &[]);
    // The build (as the app's user, who owns the release) swaps REVISION for a link to
    // a root-only file: `hoist status` (which viewers may run) must not show it.
    let steps = format!(
        "[app.steps]\nbuild = \"ln -sfn {} REVISION\"\n",
        site.victim().display()
    );
    let (_pki, _agent, mut client) = start(&repo, &site, &steps).await;
    let events = deploy(&mut client, "v1", false).await;
    let (res, release, err) = result(&events);
    assert_eq!(res, JobResult::Succeeded, "{err}\n{}", output(&events));
    let status = client
        .status(StatusRequest { app: "web".into() })
        .await
        .unwrap()
        .into_inner();
    let app = &status.apps[0];
    assert_eq!(app.current_release, release);
    assert!(app.current_commit.is_empty(), "{:?}", app.current_commit);
    assert!(!format!("{status:?}").contains("hunter2"));
    // With a real REVISION it shows the commit.
    let revision = site
        .deploy_to()
        .join("releases")
        .join(&release)
        .join("REVISION");
    std::fs::remove_file(&revision).unwrap();
    std::fs::write(&revision, format!("{commit}\n")).unwrap();
    let status = client
        .status(StatusRequest { app: "web".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.apps[0].current_commit, commit);
}

fn backup_steps(marker: &Path) -> String {
    format!(
        "[app.steps]\nbuild = \"touch built-by-hook\"\nbackup = 'echo dump > \"$HOIST_BACKUP_FILE\"'\nmigrate = \"echo migrated > {}\"\n",
        marker.display()
    )
}

#[tokio::test]
async fn links_the_app_user_plants_in_backups_are_refused() {
    let site = Site::new();
    let repo = AppRepo::new_static(&[("index.html", "hi\n")]);
    repo.commit_version("1", &[]);
    let backups = site.deploy_to().join("backups");
    std::fs::create_dir_all(&backups).unwrap();
    std::os::unix::fs::symlink(site.victim(), backups.join("LAST_SUCCESS")).unwrap();
    let marker = site.root.path().join("migrated");
    let before = site.snapshot();
    let (_pki, _agent, mut client) = start(&repo, &site, &backup_steps(&marker)).await;
    refused(
        &mut client,
        "last-success",
        true,
        "`backups/LAST_SUCCESS` is a symbolic link",
    )
    .await;
    assert!(!marker.exists(), "migrated without a backup");
    assert_eq!(site.snapshot(), before);

    // backups/ itself a link (where deploy_to is the app user's).
    std::fs::remove_file(backups.join("LAST_SUCCESS")).unwrap();
    std::fs::remove_dir(&backups).unwrap();
    std::os::unix::fs::symlink(site.outside(), &backups).unwrap();
    refused(&mut client, "backups-link", true, "backups").await;
    assert!(!marker.exists(), "migrated without a backup");
    assert_eq!(site.snapshot(), before);
}

#[tokio::test]
async fn dumps_are_private_and_hooks_run_with_umask_027() {
    let site = Site::new();
    let repo = AppRepo::new_static(&[("index.html", "hi\n")]);
    repo.commit_version("1", &[]);
    let marker = site.root.path().join("migrated");
    // The migrate hook (as nobody) writes its marker into a dir it may write.
    let scratch = site.root.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o777)).unwrap();
    let marker = scratch.join(marker.file_name().unwrap());
    let (_pki, _agent, mut client) = start(&repo, &site, &backup_steps(&marker)).await;
    let events = deploy(&mut client, "v1", false).await;
    let (res, _, err) = result(&events);
    assert_eq!(res, JobResult::Succeeded, "{err}\n{}", output(&events));
    repo.commit_version("2", &[]);
    let events = deploy(&mut client, "v2", true).await;
    let (res, rel2, err) = result(&events);
    assert_eq!(res, JobResult::Succeeded, "{err}\n{}", output(&events));
    assert!(marker.is_file(), "migrate ran");

    let backups = site.deploy_to().join("backups");
    let dumps: Vec<PathBuf> = std::fs::read_dir(&backups)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "backup"))
        .collect();
    assert_eq!(dumps.len(), 1, "{dumps:?}");
    let dump = std::fs::metadata(&dumps[0]).unwrap();
    assert_eq!(dump.mode() & 0o7777, 0o600, "the dump is private");
    assert!(dump.len() > 0);
    let last = std::fs::metadata(backups.join("LAST_SUCCESS")).unwrap();
    assert_eq!(last.mode() & 0o7777, 0o640);
    let dir = std::fs::metadata(&backups).unwrap();
    assert_eq!(dir.mode() & 0o777, 0o750);
    let built = std::fs::metadata(
        site.deploy_to()
            .join("releases")
            .join(&rel2)
            .join("built-by-hook"),
    )
    .unwrap();
    assert_eq!(built.mode() & 0o777, 0o640, "hooks run with umask 027");
    if nix::unistd::Uid::effective().is_root() {
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        assert_eq!(
            dump.uid(),
            nobody.uid.as_raw(),
            "the dump is the app user's"
        );
        assert_eq!(last.uid(), nobody.uid.as_raw());
        assert_eq!(built.uid(), nobody.uid.as_raw());
    }
}

fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z")
}

fn pid_in(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

/// hoistd's exited children nobody reaped.
fn zombies_of(agent: &Agent) -> Vec<i32> {
    let me = agent.pid().as_raw();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                return false;
            };
            let mut f = rest.split_whitespace();
            f.next() == Some("Z") && f.next().and_then(|p| p.parse().ok()) == Some(me)
        })
        .collect()
}

#[tokio::test]
async fn a_hook_that_escapes_its_group_ends_with_its_step() {
    let site = Site::new();
    let repo = AppRepo::new_static(&[("index.html", "hi\n")]);
    repo.commit_version("1", &[]);
    let scratch = site.root.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o777)).unwrap();
    let hung = scratch.join("hung.pid");
    let daemon = scratch.join("daemon.pid");
    // build: a daemon in its own session holding the output pipes, then a hang.
    // after_switch: a daemon left behind by a step that succeeds.
    let steps = format!(
        "step_timeout = \"3s\"\n[app.steps]\nbuild = \"setsid sh -c 'echo $$ > {hung}; exec sleep 40' & sleep 60\"\n",
        hung = hung.display(),
    );
    let text = app_toml(&repo, &site, "").replace("step_timeout = \"20s\"\n", "") + &steps;
    let pki = Pki::new();
    let agent = AgentBuilder::new(&pki).apps(&text).start().await;
    let mut client = agent.connect(&pki, Who::Deployer).await.unwrap();

    let started = Instant::now();
    let events = deploy(&mut client, "escape", false).await;
    let took = started.elapsed();
    let (res, _, err) = result(&events);
    assert_eq!(res, JobResult::Failed, "{err}");
    assert!(err.contains("timed out after 3s"), "{err}");
    // 3 s timeout + 2 s kill grace, and a little for fetch, checkout and the job itself.
    assert!(
        took < Duration::from_secs(3 + 2 + 3),
        "the step ran {took:?}"
    );
    let pid = pid_in(&hung);
    assert!(!alive(pid), "the escaped process {pid} survived its step");

    let ok = std::fs::read_to_string(&agent.config).unwrap().replace(
        &format!(
            "build = \"setsid sh -c 'echo $$ > {}; exec sleep 40' & sleep 60\"",
            hung.display()
        ),
        &format!(
            "after_switch = \"setsid sh -c 'echo $$ > {0}; exec sleep 40' >/dev/null 2>&1 & while [ ! -s {0} ]; do sleep 0.05; done\"",
            daemon.display()
        ),
    );
    std::fs::write(&agent.config, ok).unwrap();
    agent.reload().await;
    let events = deploy(&mut client, "daemon", false).await;
    let (res, _, err) = result(&events);
    assert_eq!(res, JobResult::Succeeded, "{err}\n{}", output(&events));
    let pid = pid_in(&daemon);
    assert!(
        !alive(pid),
        "the daemon {pid} outlived the step that started it"
    );
    assert!(
        zombies_of(&agent).is_empty(),
        "hoistd left zombies: {:?}",
        zombies_of(&agent)
    );
}

#[tokio::test]
async fn a_release_link_planted_in_releases_is_no_release() {
    let site = Site::new();
    let repo = AppRepo::new_static(&[("index.html", "hi\n")]);
    repo.commit_version("1", &[]);
    let steps = "[app.steps]\nmigrate = \"true\"\nmigrate_rollback = \"touch ROLLED_BACK_HERE\"\n";
    let (_pki, _agent, mut client) = start(&repo, &site, steps).await;
    let events = deploy(&mut client, "v1", false).await;
    assert_eq!(
        result(&events).0,
        JobResult::Succeeded,
        "{}",
        output(&events)
    );
    repo.commit_version("2", &[]);
    let events = deploy(&mut client, "v2", false).await;
    let (res, serving, err) = result(&events);
    assert_eq!(res, JobResult::Succeeded, "{err}");
    // Whoever can write releases/ (a hook) plants a "release" that is a link out.
    let fake = "20261201T000000Z-abc1234";
    #[allow(clippy::disallowed_methods)] // the attacker's link
    std::os::unix::fs::symlink(site.outside(), site.deploy_to().join("releases").join(fake))
        .unwrap();
    let before = site.snapshot();

    let listed = client
        .list_releases(ListReleasesRequest { app: "web".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.releases.iter().all(|r| r.id != fake),
        "a link is listed as a release: {listed:?}"
    );
    let plan = client
        .plan_rollback(PlanRollbackRequest {
            app: "web".into(),
            to: fake.into(),
            ..Default::default()
        })
        .await;
    assert!(
        plan.is_err(),
        "a rollback to the link was planned: {plan:?}"
    );
    for (id, to, of) in [("to-link", fake, ""), ("of-link", "", fake)] {
        let stream = client
            .rollback(RollbackRequest {
                app: "web".into(),
                to_release: to.into(),
                of_release: of.into(),
                migrate: !of.is_empty(),
                job_id: id.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let events = collect(stream).await;
        let (res, _, err) = result(&events);
        assert_eq!(res, JobResult::Failed, "{id}: {err}\n{}", output(&events));
        assert!(
            err.contains(fake),
            "{id}: the error names the release: {err}"
        );
    }
    assert_eq!(
        std::fs::read_link(site.deploy_to().join("current")).unwrap(),
        Path::new("releases").join(&serving),
        "current moved"
    );
    assert_eq!(
        site.snapshot(),
        before,
        "something outside deploy_to changed"
    );
}
