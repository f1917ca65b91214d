//! The single-host deploy engine against a real hoistd, real git and a real supervisord:
//! releases, shared files, hooks as the app's user, checks, automatic rollback, locks,
//! idempotent job ids, attach, and the failure paths (timeouts, bad refs, missing .env
//! keys, an agent killed mid-build).

use std::{os::unix::fs::PermissionsExt as _, path::Path, time::Duration};

use hoist_proto::v1::{
    AttachRequest, DeployRequest, JobEvent, JobKind, JobLogRequest, JobResult, ListReleasesRequest,
    LockRequest, RecordRefusalRequest, RestartRequest, RollbackRequest, StatusRequest,
    UnlockRequest, agent_client::AgentClient, job_event::Kind,
};
use hoist_tests::{
    e2e,
    harness::{Agent, AgentBuilder, Pki, Who},
    jobs::{collect, output, result, steps},
    services::{
        git::AppRepo,
        supervisor::{Program, Supervisord},
    },
};
use tonic::transport::Channel;

/// A deploy_to under a world-traversable temp dir (hooks may run as `nobody`).
fn deploy_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A directory hooks running as `nobody` can write markers into.
fn scratch(root: &tempfile::TempDir) -> std::path::PathBuf {
    let dir = root.path().join("scratch");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    dir
}

/// `user`/`group` lines: hooks run as nobody when the tests run as root.
fn run_as() -> &'static str {
    if nix::unistd::Uid::effective().is_root() {
        "user = \"nobody\"\ngroup = \"nogroup\"\n"
    } else {
        ""
    }
}

fn app_toml(repo: &AppRepo, deploy_to: &Path, extra: &str) -> String {
    format!(
        r#"
[[app]]
name = "web"
repo = "{repo}"
deploy_to = "{deploy_to}"
{run_as}keep_releases = 3
shared_files = [".env"]
shared_dirs = ["storage"]
step_timeout = "20s"
env = {{ APP_ENV = "production" }}

[app.steps]
build = ["id -un > built-by", "echo building $HOIST_RELEASE at $HOIST_COMMIT for $HOIST_APP in $APP_ENV", "echo log > storage/build.log"]
after_switch = "echo switched to $HOIST_RELEASE"

[[app.checks]]
kind = "command"
name = "not-broken"
command = "test ! -e BROKEN || (echo this release is BROKEN; exit 1)"
retries = 2
interval = "100ms"
{extra}
"#,
        repo = repo.url(),
        deploy_to = deploy_to.display(),
        run_as = run_as(),
    )
}

async fn deploy(
    client: &mut AgentClient<Channel>,
    id: &str,
    r#ref: &str,
) -> Result<Vec<JobEvent>, tonic::Status> {
    let stream = client
        .deploy(DeployRequest {
            app: "web".into(),
            r#ref: r#ref.into(),
            deploy_id: id.into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(collect(stream).await)
}

fn current(deploy_to: &Path) -> String {
    std::fs::read_link(deploy_to.join("current"))
        .unwrap()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

#[tokio::test]
async fn deploy_releases_checks_and_automatic_rollback() {
    let Some(_) = e2e::require(
        "supervisord",
        "supervisor",
        "deploy_releases_checks_and_automatic_rollback",
    ) else {
        return;
    };
    let supervisor = Supervisord::start(&[Program {
        name: "worker".into(),
        command: "sleep 1000".into(),
        autostart: true,
        numprocs: 1,
        group: None,
    }])
    .unwrap();
    let repo = AppRepo::new_static(&[("index.html", "hello\n")]);
    let v1 = repo.commit_version("1", &[]);
    let root = deploy_root();
    let deploy_to = root.path().join("web");
    let services = format!(
        "[[app.services]]\nkind = \"supervisor\"\nname = \"worker\"\nserverurl = \"{}\"\n",
        supervisor.serverurl()
    );
    let pki = Pki::new();
    let agent = AgentBuilder::new(&pki)
        .apps(&app_toml(&repo, &deploy_to, &services))
        .start()
        .await;
    let mut client = agent.connect(&pki, Who::Deployer).await.unwrap();

    // v1
    let events = deploy(&mut client, "deploy-v1", "main").await.unwrap();
    let (res, rel1, err) = result(&events);
    assert_eq!(res, JobResult::Succeeded, "{err}\n{}", output(&events));
    assert_eq!(current(&deploy_to), rel1);
    assert!(rel1.ends_with(&v1[..7]), "{rel1}");
    let release_dir = deploy_to.join("releases").join(&rel1);
    assert_eq!(
        std::fs::read_to_string(release_dir.join("REVISION"))
            .unwrap()
            .trim(),
        v1
    );
    assert_eq!(
        steps(&events),
        [
            "fetch",
            "materialise",
            "shared",
            "build",
            "switch",
            "after_switch",
            "restart worker",
            "check not-broken"
        ]
    );
    let out = output(&events);
    assert!(
        out.contains(&format!("building {rel1} at {v1} for web in production")),
        "{out}"
    );
    let built_by = std::fs::read_to_string(release_dir.join("built-by")).unwrap();
    let expected_user = if nix::unistd::Uid::effective().is_root() {
        "nobody".to_string()
    } else {
        std::env::var("USER").unwrap_or_default()
    };
    if !expected_user.is_empty() {
        assert_eq!(built_by.trim(), expected_user);
    }
    // Shared paths are links into shared/.
    assert!(
        std::fs::symlink_metadata(release_dir.join("storage"))
            .unwrap()
            .is_symlink()
    );
    assert!(deploy_to.join("shared/storage/build.log").is_file());

    // v2: the worker is restarted (new pid).
    let pid_before = supervisor.pid_of("worker").unwrap();
    repo.commit_version("2", &[]);
    let events = deploy(&mut client, "deploy-v2", "main").await.unwrap();
    let (res, rel2, err) = result(&events);
    assert_eq!(res, JobResult::Succeeded, "{err}\n{}", output(&events));
    assert_eq!(current(&deploy_to), rel2);
    let pid_after = supervisor.pid_of("worker").unwrap();
    assert_ne!(pid_before, pid_after, "the worker was restarted");

    // v3 is broken: checks fail, the agent switches back to v2 by itself.
    repo.commit_version("3", &[("BROKEN", "yes")]);
    let events = deploy(&mut client, "deploy-v3", "main").await.unwrap();
    let (res, rel3, err) = result(&events);
    assert_eq!(res, JobResult::RolledBack, "{err}\n{}", output(&events));
    assert_eq!(current(&deploy_to), rel2, "v2 serves again");
    assert!(
        err.contains("this release is BROKEN"),
        "the failing check's output: {err}"
    );
    assert!(steps(&events).contains(&"rollback".to_string()));
    assert_ne!(rel3, rel2);

    // The same deploy id again replays the same job, it does not deploy again.
    let again = deploy(&mut client, "deploy-v3", "main").await.unwrap();
    assert_eq!(again.len(), events.len());
    assert_eq!(result(&again).0, JobResult::RolledBack);
    // Attach replays from the first event.
    let attached = collect(
        client
            .attach(AttachRequest {
                job_id: "deploy-v2".into(),
            })
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert_eq!(result(&attached).1, rel2);

    // The journal and the release list.
    let log = client
        .job_log(JobLogRequest {
            app: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = log.jobs.iter().map(|j| j.job_id.as_str()).collect();
    assert_eq!(ids, ["deploy-v3", "deploy-v2", "deploy-v1"]);
    assert_eq!(log.jobs[0].result(), JobResult::RolledBack);
    assert_eq!(log.jobs[1].who, "dana");
    let releases = client
        .list_releases(ListReleasesRequest { app: "web".into() })
        .await
        .unwrap()
        .into_inner()
        .releases;
    let current_rel: Vec<&str> = releases
        .iter()
        .filter(|r| r.current)
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(current_rel, [rel2.as_str()]);
    assert!(releases.iter().any(|r| r.previous && r.id == rel1));

    // Explicit rollback to v1, then restart of one service.
    let events = collect(
        client
            .rollback(RollbackRequest {
                app: "web".into(),
                job_id: "rb-1".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert_eq!(
        result(&events).0,
        JobResult::Succeeded,
        "{}",
        output(&events)
    );
    assert_eq!(current(&deploy_to), rel1);
    let events = collect(
        client
            .restart(RestartRequest {
                app: "web".into(),
                service: "worker".into(),
                job_id: "rs-1".into(),
            })
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert_eq!(
        result(&events).0,
        JobResult::Succeeded,
        "{}",
        output(&events)
    );
    let err = client
        .restart(RestartRequest {
            app: "web".into(),
            service: "nope".into(),
            job_id: "rs-2".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    // The deploy metrics count what happened, and pass promtool.
    let metrics = agent.scrape().await.unwrap();
    for line in [
        "hoist_deploys_total{app=\"web\",result=\"succeeded\"} 2",
        "hoist_deploys_total{app=\"web\",result=\"rolled_back\"} 1",
        "hoist_deploy_duration_seconds_count{app=\"web\"} 3",
        "hoist_app_release_info{app=\"web\"",
    ] {
        assert!(metrics.contains(line), "missing {line} in:\n{metrics}");
    }
    if e2e::require("promtool", "prometheus", "deploy metrics").is_some() {
        hoist_tests::services::promtool::check_metrics(&metrics).unwrap();
    }

    // Status shows the release.
    let status = client
        .status(StatusRequest { app: "web".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.apps[0].current_release, rel1);
    assert_eq!(status.apps[0].current_commit, v1);
}

#[tokio::test]
async fn failure_paths_change_nothing() {
    let repo = AppRepo::new_static(&[(".env.example", "APP_KEY=\nDB_HOST=\n")]);
    repo.commit_version("1", &[]);
    let root = deploy_root();
    let deploy_to = root.path().join("web");
    let pki = Pki::new();
    let agent = AgentBuilder::new(&pki)
        .apps(&app_toml(&repo, &deploy_to, ""))
        .start()
        .await;
    let mut client = agent.connect(&pki, Who::Deployer).await.unwrap();

    // Refs that are options or garbage: refused before anything runs.
    for bad in ["-x", "--upload-pack=touch /tmp/pwned", "a..b", "main lol"] {
        let err = deploy(&mut client, "bad-ref", bad).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}");
    }
    // A ref that does not exist: the job fails at fetch, naming the refs there are.
    let events = deploy(&mut client, "no-such-ref", "nope").await.unwrap();
    let (res, _, err) = result(&events);
    assert_eq!(res, JobResult::Failed);
    assert!(
        err.contains("\"nope\" is not a branch, tag or commit") && err.contains("main"),
        "{err}"
    );
    assert!(!deploy_to.join("current").exists());

    // .env.example lists keys that shared/.env lacks: fails before any change.
    std::fs::create_dir_all(deploy_to.join("shared")).unwrap();
    std::fs::write(
        deploy_to.join("shared/.env"),
        "APP_KEY=base64:secretsecret\n",
    )
    .unwrap();
    let events = deploy(&mut client, "missing-env", "main").await.unwrap();
    let (res, rel, err) = result(&events);
    assert_eq!(res, JobResult::Failed);
    assert!(
        err.contains("DB_HOST") && err.contains("--allow-missing-env"),
        "{err}"
    );
    assert!(
        !deploy_to.join("releases").join(&rel).exists(),
        "the half-built release is removed"
    );
    assert!(!deploy_to.join("current").exists());
    // --allow-missing-env goes on.
    let events = client
        .deploy(DeployRequest {
            app: "web".into(),
            r#ref: "main".into(),
            deploy_id: "allow-env".into(),
            allow_missing_env: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let events = collect(events).await;
    let (res, good, err) = result(&events);
    assert_eq!(res, JobResult::Succeeded, "{err}\n{}", output(&events));
    // Secrets from shared/.env never show in events.
    assert!(!format!("{events:?}").contains("secretsecret"));

    // A held lock: a clear refusal naming the holder.
    client
        .lock(LockRequest {
            app: "web".into(),
            reason: "db maintenance".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let err = deploy(&mut client, "while-locked", "main")
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("locked by dana") && err.message().contains("db maintenance"),
        "{}",
        err.message()
    );
    client
        .unlock(UnlockRequest {
            app: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    // A step that hangs: killed at step_timeout with its whole process group.
    let text = std::fs::read_to_string(&agent.config).unwrap();
    std::fs::write(
        deploy_to.join("shared/.env"),
        "APP_KEY=base64:secretsecret\nDB_HOST=127.0.0.1\n",
    )
    .unwrap();
    let marker = scratch(&root).join("grandchild.pid");
    let hang = text
        .replace("step_timeout = \"20s\"", "step_timeout = \"1s\"")
        .replace(
            "build = [",
            &format!(
                "build = [\"sh -c 'echo $$ > {}; exec sleep 300' & sleep 300\", ",
                marker.display()
            ),
        );
    std::fs::write(&agent.config, hang).unwrap();
    agent.reload().await;
    let events = deploy(&mut client, "hangs", "main").await.unwrap();
    let (res, _, err) = result(&events);
    assert_eq!(res, JobResult::Failed);
    assert!(err.contains("timed out after 1s"), "{err}");
    let timed_out = events
        .iter()
        .any(|e| matches!(&e.kind, Some(Kind::StepFinished(f)) if f.timed_out));
    assert!(timed_out);
    let pid: i32 = std::fs::read_to_string(&marker)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    e2e::eventually("grandchild gone", Duration::from_secs(5), || async {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        (stat.is_empty() || stat.contains(") Z")).then_some(())
    })
    .await;
    assert_eq!(current(&deploy_to), good, "current untouched");

    // The controller goes away right after starting a job: the job runs to its end.
    let text = std::fs::read_to_string(&agent.config).unwrap();
    let calm = text
        .replace("step_timeout = \"1s\"", "step_timeout = \"20s\"")
        .replace(
            &format!(
                "\"sh -c 'echo $$ > {}; exec sleep 300' & sleep 300\", ",
                marker.display()
            ),
            "\"sleep 1\", ",
        );
    std::fs::write(&agent.config, calm).unwrap();
    agent.reload().await;
    let stream = client
        .deploy(DeployRequest {
            app: "web".into(),
            r#ref: "main".into(),
            deploy_id: "detached".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    drop(stream);
    drop(client);
    let mut client = agent.connect(&pki, Who::Deployer).await.unwrap();
    let events = collect(
        client
            .attach(AttachRequest {
                job_id: "detached".into(),
            })
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    let (res, detached, err) = result(&events);
    assert_eq!(res, JobResult::Succeeded, "{err}\n{}", output(&events));
    assert_eq!(current(&deploy_to), detached);
    let good = detached;

    // A refusal by the controller (deploy window) is recorded in the journal.
    client
        .record_refusal(RecordRefusalRequest {
            app: "web".into(),
            job_id: "refused-1".into(),
            kind: JobKind::Deploy.into(),
            r#ref: "main".into(),
            reason: "outside the deploy window Tue-Thu 10:00-16:00".into(),
        })
        .await
        .unwrap();
    let log = client
        .job_log(JobLogRequest {
            app: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(log.jobs[0].job_id, "refused-1");
    assert_eq!(log.jobs[0].result(), JobResult::Refused);
    assert!(log.jobs[0].error.contains("deploy window"));
    assert_eq!(current(&deploy_to), good);
}

#[tokio::test]
async fn killed_agent_leaves_current_and_marks_the_job_interrupted() {
    let repo = AppRepo::new_static(&[("index.html", "hi\n")]);
    repo.commit_version("1", &[]);
    let root = deploy_root();
    let deploy_to = root.path().join("web");
    let pki = Pki::new();
    let marker = scratch(&root).join("building");
    let extra = String::new();
    let toml = app_toml(&repo, &deploy_to, &extra);
    let mut agent = AgentBuilder::new(&pki).apps(&toml).start().await;
    let mut client = agent.connect(&pki, Who::Deployer).await.unwrap();
    let events = deploy(&mut client, "first", "main").await.unwrap();
    let (_, good, _) = result(&events);

    // v2's build blocks; kill -9 the agent while it is building.
    let text = std::fs::read_to_string(&agent.config).unwrap();
    let slow = text.replace(
        "build = [",
        &format!("build = [\"touch {}; sleep 300\", ", marker.display()),
    );
    std::fs::write(&agent.config, &slow).unwrap();
    agent.reload().await;
    repo.commit_version("2", &[]);
    let stream = client
        .deploy(DeployRequest {
            app: "web".into(),
            r#ref: "main".into(),
            deploy_id: "killed".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    e2e::eventually("build started", Duration::from_secs(20), || async {
        marker.exists().then_some(())
    })
    .await;
    agent.signal(nix::sys::signal::Signal::SIGKILL);
    drop(stream);
    let _ = agent.stop();

    // Restart on the same state: the job is interrupted, the half-built release gone.
    let restarted: Agent = agent.restart().await;
    let mut client = restarted.connect(&pki, Who::Deployer).await.unwrap();
    assert_eq!(current(&deploy_to), good);
    let releases: Vec<String> = std::fs::read_dir(deploy_to.join("releases"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        releases,
        std::slice::from_ref(&good),
        "only the good release is left"
    );
    let events = collect(
        client
            .attach(AttachRequest {
                job_id: "killed".into(),
            })
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    let (res, _, err) = result(&events);
    assert_eq!(res, JobResult::Interrupted);
    assert!(err.contains("half-built release"), "{err}");
    let log = client
        .job_log(JobLogRequest {
            app: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(log.jobs[0].job_id, "killed");
    assert_eq!(log.jobs[0].result(), JobResult::Interrupted);
    // And the lock the dead job held is gone: a new deploy goes through.
    std::fs::write(&restarted.config, &text).unwrap();
    restarted.reload().await;
    let events = deploy(&mut client, "after-crash", "main").await.unwrap();
    assert_eq!(
        result(&events).0,
        JobResult::Succeeded,
        "{}",
        output(&events)
    );
}

#[tokio::test]
async fn command_strategy_activates_and_deactivates() {
    let repo = AppRepo::new_static(&[("index.html", "hi\n")]);
    repo.commit_version("1", &[]);
    let root = deploy_root();
    let deploy_to = root.path().join("web");
    let marks = scratch(&root);
    let toml = format!(
        r#"
[[app]]
name = "web"
repo = "{repo}"
deploy_to = "{deploy_to}"
strategy = "command"
activate = "echo activate $(cat VERSION) >> {marks}/platform.log"
deactivate = "echo deactivate $(cat VERSION) >> {marks}/platform.log"

[[app.checks]]
kind = "command"
name = "not-broken"
command = "test ! -e BROKEN"
retries = 1
"#,
        repo = repo.url(),
        deploy_to = deploy_to.display(),
        marks = marks.display(),
    );
    let pki = Pki::new();
    let agent = AgentBuilder::new(&pki).apps(&toml).start().await;
    let mut client = agent.connect(&pki, Who::Deployer).await.unwrap();
    let events = deploy(&mut client, "cmd-1", "main").await.unwrap();
    assert_eq!(
        result(&events).0,
        JobResult::Succeeded,
        "{}",
        output(&events)
    );
    repo.commit_version("2", &[("BROKEN", "1")]);
    let events = deploy(&mut client, "cmd-2", "main").await.unwrap();
    assert_eq!(
        result(&events).0,
        JobResult::RolledBack,
        "{}",
        output(&events)
    );
    let log = std::fs::read_to_string(marks.join("platform.log")).unwrap();
    assert_eq!(log, "activate 1\nactivate 2\ndeactivate 2\n");
}
