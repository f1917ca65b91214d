//! Everyday operations through the CLI against a real agent: declared tasks (`hoist
//! run`) with their role rule, stop/start of a real supervisord program, `env set` on a
//! fresh host, and `env set --restart` re-running `after_switch`.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use hoist_tests::{
    e2e,
    harness::{Agent, AgentBuilder, Pki, Who, hoist},
    services::{
        git::AppRepo,
        supervisor::{Program, Supervisord},
    },
};

/// `user`/`group` lines: tasks and hooks run as nobody when the tests run as root.
fn run_as() -> &'static str {
    if nix::unistd::Uid::effective().is_root() {
        "user = \"nobody\"\ngroup = \"nogroup\"\n"
    } else {
        ""
    }
}

struct One {
    root: tempfile::TempDir,
    _agent: Agent,
    deployer: String,
    viewer: String,
    deploy_to: PathBuf,
}

/// One agent `web-1` with app `web` (`extra` appended to its `[[app]]`), and fleet
/// files for a deployer and a viewer.
async fn one(pki: &Pki, repo: &AppRepo, extra: &str) -> One {
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let deploy_to = root.path().join("web");
    let app = format!(
        "[[app]]\nname = \"web\"\nrepo = \"{}\"\ndeploy_to = \"{}\"\n{}step_timeout = \"30s\"\n{extra}",
        repo.url(),
        deploy_to.display(),
        run_as(),
    );
    let agent = AgentBuilder::new(pki).apps(&app).start().await;
    let hosts = agent.fleet_entry("web-1");
    let deployer = root.path().join("fleet.toml");
    std::fs::write(
        &deployer,
        format!("{}{hosts}", pki.fleet_tls(Who::Deployer)),
    )
    .unwrap();
    let viewer = root.path().join("viewer.toml");
    std::fs::write(&viewer, format!("{}{hosts}", pki.fleet_tls(Who::Viewer))).unwrap();
    One {
        deployer: deployer.display().to_string(),
        viewer: viewer.display().to_string(),
        _agent: agent,
        root,
        deploy_to,
    }
}

fn current_dir(deploy_to: &Path) -> PathBuf {
    let target = std::fs::read_link(deploy_to.join("current")).expect("a current release");
    deploy_to.join("releases").join(target.file_name().unwrap())
}

#[tokio::test]
async fn declared_tasks_run_in_the_current_release_with_their_role() {
    let pki = Pki::new();
    let repo = AppRepo::new_static(&[("index.html", "v\n")]);
    repo.commit_version("1", &[]);
    let tasks = r#"
[app.tasks]
whoami = { command = "echo task-as-$(id -un) in $(pwd) for $HOIST_APP release $HOIST_RELEASE", role = "viewer" }
cache_clear = ["echo clearing the cache", "echo cache cleared >&2; exit 3"]
"#;
    let f = one(&pki, &repo, tasks).await;
    let (fl, viewer) = (f.deployer.as_str(), f.viewer.as_str());

    // Nothing deployed yet: a clear error, and nothing ran.
    let (status, out, err) = hoist(&["run", "web", "whoami", "--fleet", fl]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(
        format!("{out}{err}").contains("nothing deployed"),
        "{out}{err}"
    );

    let (status, out, err) = hoist(&["deploy", "web", "--ref", "main", "--fleet", fl]);
    assert!(status.success(), "{out}{err}");
    let release = current_dir(&f.deploy_to);

    // A viewer-safe task, run by a viewer: streamed, in the current release, as the
    // app's user, with the hook environment.
    let (status, out, err) = hoist(&["run", "web", "whoami", "--fleet", viewer]);
    assert!(status.success(), "{out}{err}");
    let user = if run_as().is_empty() {
        String::from_utf8(
            std::process::Command::new("id")
                .arg("-un")
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .to_string()
    } else {
        "nobody".into()
    };
    let id = release.file_name().unwrap().to_string_lossy().into_owned();
    let expected = format!(
        "task-as-{user} in {} for web release {id}",
        release.display()
    );
    assert!(
        out.contains(&expected),
        "expected {expected:?} in:\n{out}{err}"
    );

    // A deployer task is refused to a viewer, by the agent, before anything runs.
    let (status, out, err) = hoist(&["run", "web", "cache_clear", "--fleet", viewer]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    let text = format!("{out}{err}");
    assert!(
        text.contains("task cache_clear of app web needs role deployer"),
        "{text}"
    );
    assert!(!text.contains("clearing the cache"), "{text}");

    // Run by a deployer it runs; its failure is the job's, with the exit code.
    let (status, out, err) = hoist(&["run", "web", "cache_clear", "--fleet", fl]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    let text = format!("{out}{err}");
    assert!(text.contains("clearing the cache"), "{text}");
    assert!(text.contains("cache cleared"), "stderr streamed: {text}");
    assert!(text.contains("exited with 3"), "{text}");

    // An undeclared task names the declared ones.
    let (status, out, err) = hoist(&["run", "web", "rm_rf", "--fleet", fl]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    let text = format!("{out}{err}");
    assert!(
        text.contains("declares no task \"rm_rf\"") && text.contains("cache_clear, whoami"),
        "{text}"
    );

    // Tasks are jobs: in the log, kind task, with their results.
    let (status, out, err) = hoist(&["log", "web", "--fleet", fl, "--json"]);
    assert!(status.success(), "{out}{err}");
    let log: serde_json::Value = serde_json::from_str(&out).unwrap();
    let tasks: Vec<&serde_json::Value> = log["hosts"][0]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "task")
        .collect();
    assert_eq!(tasks.len(), 2, "{out}");
    assert!(tasks.iter().any(|j| j["result"] == "succeeded"), "{out}");
    assert!(tasks.iter().any(|j| j["result"] == "failed"), "{out}");
    drop(f.root);
}

#[tokio::test]
async fn stop_and_start_a_supervisor_program() {
    let test = "stop_and_start_a_supervisor_program";
    if e2e::require("supervisord", "supervisor", test).is_none() {
        return;
    }
    let supervisor = Supervisord::start(&[Program {
        numprocs: 2,
        ..Program::new("worker", "sleep 1000")
    }])
    .unwrap();
    let pki = Pki::new();
    let repo = AppRepo::new_static(&[("index.html", "v\n")]);
    repo.commit_version("1", &[]);
    let services = format!(
        "[[app.services]]\nkind = \"supervisor\"\nname = \"worker:*\"\nserverurl = \"{}\"\ntimeout = \"20s\"\n",
        supervisor.serverurl()
    );
    let f = one(&pki, &repo, &services).await;
    let (fl, viewer) = (f.deployer.as_str(), f.viewer.as_str());
    let names = ["worker:worker_00", "worker:worker_01"];
    let states = || {
        let status = supervisor.status().unwrap();
        names.map(|n| status.get(n).cloned().unwrap_or_default())
    };

    // A viewer may not stop anything.
    let (status, out, err) = hoist(&["stop", "web", "--fleet", viewer]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(format!("{out}{err}").contains("needs role deployer"));
    assert_eq!(states(), ["RUNNING", "RUNNING"]);

    let (status, out, err) = hoist(&["stop", "web", "--fleet", fl]);
    assert!(status.success(), "{out}{err}");
    assert_eq!(states(), ["STOPPED", "STOPPED"], "{out}");
    assert!(out.contains("worker:* stopped"), "{out}");

    // Refused while someone else holds the lock; nothing started.
    let (status, _, err) = hoist(&["lock", "web", "--reason", "db maintenance", "--fleet", fl]);
    assert!(status.success(), "{err}");
    let (status, out, err) = hoist(&["start", "web", "--fleet", fl]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(format!("{out}{err}").contains("locked by"), "{out}{err}");
    assert_eq!(states(), ["STOPPED", "STOPPED"]);
    let (status, _, err) = hoist(&["unlock", "web", "--fleet", fl]);
    assert!(status.success(), "{err}");

    // An unknown service is named as such, with the ones there are.
    let (status, out, err) = hoist(&["start", "web", "--service", "mailer", "--fleet", fl]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(
        format!("{out}{err}").contains("has no service \"mailer\"; its services: worker:*"),
        "{out}{err}"
    );

    let (status, out, err) = hoist(&["start", "web", "--service", "worker:*", "--fleet", fl]);
    assert!(status.success(), "{out}{err}");
    assert_eq!(states(), ["RUNNING", "RUNNING"], "{out}");

    // Both are jobs in the log.
    let (status, out, err) = hoist(&["log", "web", "--fleet", fl]);
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("stop") && out.contains("start"), "{out}");
}

#[tokio::test]
async fn env_set_on_a_fresh_host_then_restart_reruns_after_switch() {
    let pki = Pki::new();
    let repo = AppRepo::new_static(&[("index.html", "v\n")]);
    repo.commit_version("1", &[]);
    // Like `php artisan config:cache`: bakes the .env value into the release.
    let steps = "[app.steps]\nafter_switch = \"sed -n 's/^GREETING=//p' ../../shared/.env > config-cache.txt\"\n";
    let f = one(&pki, &repo, steps).await;
    let fl = f.deployer.as_str();
    assert!(!f.deploy_to.exists());

    // Before any deploy: shared/ is created for the app's user.
    let (status, out, err) = hoist(&["env", "web", "set", "GREETING=hello", "--fleet", fl]);
    assert!(status.success(), "{out}{err}");
    let shared = f.deploy_to.join("shared");
    let env = shared.join(".env");
    assert_eq!(std::fs::read_to_string(&env).unwrap(), "GREETING=hello\n");
    let (dir_meta, env_meta) = (
        std::fs::metadata(&shared).unwrap(),
        std::fs::metadata(&env).unwrap(),
    );
    assert_eq!(dir_meta.mode() & 0o7777, 0o750);
    assert_eq!(env_meta.mode() & 0o7777, 0o640);
    if !run_as().is_empty() {
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap().uid;
        assert_eq!(dir_meta.uid(), nobody.as_raw());
        // `.env` is root's, readable by the app's group (hooks read it, the app
        // user cannot rewrite the secrets in place).
        let group = nix::unistd::User::from_name("nobody").unwrap().unwrap().gid;
        assert_eq!((env_meta.uid(), env_meta.gid()), (0, group.as_raw()));
    }

    let (status, out, err) = hoist(&["deploy", "web", "--ref", "main", "--fleet", fl]);
    assert!(status.success(), "{out}{err}");
    let cache = current_dir(&f.deploy_to).join("config-cache.txt");
    assert_eq!(std::fs::read_to_string(&cache).unwrap(), "hello\n");

    // --restart re-runs after_switch in the current release first.
    let (status, out, err) = hoist(&[
        "env",
        "web",
        "set",
        "GREETING=world",
        "--restart",
        "--fleet",
        fl,
    ]);
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("on_env_change"), "{out}");
    assert_eq!(std::fs::read_to_string(&cache).unwrap(), "world\n");
    // Without --restart nothing re-runs.
    let (status, out, err) = hoist(&["env", "web", "set", "GREETING=again", "--fleet", fl]);
    assert!(status.success(), "{out}{err}");
    assert_eq!(std::fs::read_to_string(&cache).unwrap(), "world\n");
}

#[tokio::test]
async fn a_running_job_can_be_found_and_answers_are_not_unreachable() {
    let pki = Pki::new();
    let repo = AppRepo::new_static(&[("index.html", "v\n")]);
    repo.commit_version("1", &[]);
    let tasks = "[app.tasks]\nslow = \"sleep 4; echo slow done\"\n";
    let f = one(&pki, &repo, tasks).await;
    let fl = f.deployer.clone();

    // Errors from an agent that answered are not "unreachable".
    let (status, out, err) = hoist(&["status", "nosuchapp", "--fleet", &fl]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("app nosuchapp is not configured on web-1 (known: web)"),
        "{err}"
    );
    assert!(!format!("{out}{err}").contains("unreachable"), "{out}{err}");
    let (status, out, err) = hoist(&["env", "web", "list", "--fleet", &fl]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(err.contains("web-1: "), "{err}");
    assert!(!err.contains("no answer"), "{err}");

    // The deploy's text output names each host's job, for `hoist attach`.
    let (status, out, err) = hoist(&["deploy", "web", "--ref", "main", "--fleet", &fl]);
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("  job deploy-") && out.contains("hoist attach deploy-"),
        "{out}"
    );

    // A job running now is in `hoist log` (first, marked running) and in `hoist status`.
    let background = {
        let fl = fl.clone();
        std::thread::spawn(move || hoist(&["run", "web", "slow", "--fleet", &fl]))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let log = loop {
        let (_, out, _) = hoist(&["log", "web", "--fleet", &fl]);
        if out.contains("running") || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let first = log
        .lines()
        .find(|l| l.trim_start().starts_with("task-") || l.trim_start().starts_with("deploy-"))
        .unwrap_or_default();
    assert!(
        first.trim_start().starts_with("task-") && first.contains("running"),
        "{log}"
    );
    let (status, out, err) = hoist(&["status", "web", "--fleet", &fl]);
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("web-1 web: job task-") && out.contains("running"),
        "{out}"
    );
    assert!(out.contains("web-1 web: locked by "), "{out}");
    let (status, out, err) = hoist(&["status", "web", "--json", "--fleet", &fl]);
    assert!(status.success(), "{out}{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let app = &json["hosts"][0]["apps"][0];
    assert!(
        app["running_job"].as_str().unwrap().starts_with("task-"),
        "{app}"
    );
    assert_eq!(app["lock"]["reason"], "task job", "{app}");
    assert!(app["lock"]["since"].is_string(), "{app}");
    assert_eq!(app["lock"]["deploy_id"], app["running_job"], "{app}");

    let (status, out, err) = background.join().unwrap();
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("slow done"), "{out}");
    let (status, out, _) = hoist(&["status", "web", "--json", "--fleet", &fl]);
    assert!(status.success());
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        json["hosts"][0]["apps"][0]["running_job"].is_null(),
        "{out}"
    );
    assert!(json["hosts"][0]["apps"][0]["lock"].is_null(), "{out}");
}

/// A signal service is stopped by SIGTERM to its pidfile's pid; it cannot be started.
#[tokio::test]
async fn a_signal_service_stops_by_sigterm_and_cannot_be_started() {
    use hoist_agent::{
        config::Service,
        host::services::{Toggle, toggle},
    };
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
    let pidfile = dir.path().join("daemon.pid");
    std::fs::write(&pidfile, format!("{}\n", child.id())).unwrap();
    let service = Service::Signal {
        name: Some("daemon".into()),
        pidfile: pidfile.clone(),
        signal: "SIGHUP".into(),
        timeout: std::time::Duration::from_secs(10),
    };
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let summary = toggle(&service, dir.path(), Toggle::Stop, &tx)
        .await
        .unwrap();
    assert!(summary.contains("exited after SIGTERM"), "{summary}");
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(15)
    );
    // Stopping again is not an error.
    let again = toggle(&service, dir.path(), Toggle::Stop, &tx)
        .await
        .unwrap();
    assert!(again.contains("already stopped"), "{again}");
    let err = toggle(&service, dir.path(), Toggle::Start, &tx)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot start a signal service"), "{err}");
}
