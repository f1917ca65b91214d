//! A docker compose app deployed by a real hoistd against a real, private Docker engine:
//! the release's `docker-compose.yml` is brought up with `up -d --force-recreate`, an
//! upgrade recreates the container on the new image, and a rollback recreates it from
//! the previous release's compose file. Images are made locally (`docker import` of a
//! busybox rootfs); the container serves its image's version with busybox httpd on the
//! host network, which the app's HTTP check gates.

use std::{path::Path, process::Command, time::Duration};

use hoist_proto::v1::{
    AppStatus, DeployRequest, JobEvent, JobResult, RollbackRequest, ServiceState, StatusRequest,
};
use hoist_tests::{
    e2e,
    harness::{Agent, AgentBuilder, Pki, Who, http_get},
    jobs::{collect, output, result},
    services::{docker::Docker, git::AppRepo},
};

const TEST: &str = "compose_app_deploys_upgrades_and_rolls_back";
const PROJECT: &str = "shop";
const SERVICE: &str = "web";
const V1: &str = "hoist-test/app:v1";
const V2: &str = "hoist-test/app:v2";

/// The tools this test needs, or `None` (after a SKIPPED line) when one is missing.
fn require_tools() -> Option<()> {
    e2e::require("dockerd", "docker.io", TEST)?;
    e2e::require("docker", "docker.io", TEST)?;
    e2e::require("docker-compose", "docker-compose", TEST)?;
    e2e::require("busybox", "busybox-static", TEST)?;
    if nix::unistd::Uid::effective().is_root() {
        return Some(());
    }
    let message = format!("{TEST}: a private dockerd needs root");
    assert!(
        !e2e::strict(),
        "{message}; HOIST_E2E=1 makes this a failure"
    );
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!("SKIPPED {message}\n").as_bytes(),
    );
    None
}

/// The app's compose file: one `web` service on `image`, serving `/www` on the host's
/// loopback `port`; `init` makes it stop at once on SIGTERM.
fn compose_file(image: &str, port: u16) -> String {
    format!(
        r#"services:
  web:
    image: {image}
    network_mode: host
    init: true
    command: ["httpd", "-f", "-p", "127.0.0.1:{port}", "-h", "/www"]
"#
    )
}

fn app_toml(repo: &AppRepo, deploy_to: &Path, port: u16) -> String {
    format!(
        r#"
[[app]]
name = "shop"
repo = "{repo}"
deploy_to = "{deploy_to}"
keep_releases = 3
step_timeout = "90s"
# The compose strategy: each release's compose file brings the project up, recreated.
strategy = "compose"
project = "{PROJECT}"
compose_file = "docker-compose.yml"

[[app.checks]]
kind = "http"
name = "web"
url = "http://127.0.0.1:{port}/version"
expect_status = 200
timeout = "2s"
retries = 40
interval = "250ms"
"#,
        repo = repo.url(),
        deploy_to = deploy_to.display(),
    )
}

/// Asserts a finished deploy or rollback succeeded (showing both daemons' logs when
/// not); returns its release and output.
fn succeeded(agent: &Agent, docker: &Docker, events: Vec<JobEvent>) -> (String, String) {
    let (res, release, err) = result(&events);
    let out = output(&events);
    assert_eq!(
        res,
        JobResult::Succeeded,
        "{err}\n{out}\n--- hoistd log:\n{}\n--- dockerd log (tail):\n{}",
        agent.log_text(),
        tail(&docker.log_text(), 40)
    );
    (release, out)
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

async fn deploy(agent: &Agent, pki: &Pki, docker: &Docker, id: &str, r#ref: &str) -> String {
    let mut client = agent.connect(pki, Who::Deployer).await.unwrap();
    let stream = client
        .deploy(DeployRequest {
            app: "shop".into(),
            r#ref: r#ref.into(),
            deploy_id: id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (release, out) = succeeded(agent, docker, collect(stream).await);
    assert!(
        out.contains(&format!("{PROJECT} recreated: {SERVICE}: Up")),
        "the restart step reports the recreated service:\n{out}"
    );
    release
}

/// The one running `shop/web` container: its id, image and the dir compose ran in.
struct Running {
    id: String,
    image: String,
    working_dir: String,
}

fn running(docker: &Docker) -> Running {
    let all = docker.compose_containers(PROJECT, SERVICE, true).unwrap();
    let id = docker
        .container_id(PROJECT, SERVICE)
        .unwrap_or_else(|| panic!("exactly one running {PROJECT}/{SERVICE} container: {all:?}"));
    assert_eq!(
        all,
        std::slice::from_ref(&id),
        "no other {PROJECT}/{SERVICE} container"
    );
    Running {
        image: docker.container_image(&id).unwrap(),
        working_dir: docker
            .inspect(
                &id,
                "{{index .Config.Labels \"com.docker.compose.project.working_dir\"}}",
            )
            .unwrap(),
        id,
    }
}

/// `docker-compose -p shop run --no-deps web ARGS...` in `dir` against `docker`.
fn compose_run(docker: &Docker, dir: &Path, args: &[&str]) -> std::process::Output {
    let compose = e2e::find_tool("docker-compose").expect("docker-compose");
    e2e::run_with_timeout(
        Command::new(compose)
            .args(["-p", PROJECT, "run", "--no-deps", SERVICE])
            .args(args)
            .current_dir(dir)
            .env("DOCKER_HOST", docker.host()),
        None,
        Duration::from_secs(60),
    )
    .expect("run docker-compose")
}

async fn served(port: u16) -> String {
    http_get(&format!("127.0.0.1:{port}"), "/version")
        .await
        .unwrap()
}

async fn app_status(agent: &Agent, pki: &Pki) -> AppStatus {
    let mut client = agent.connect(pki, Who::Viewer).await.unwrap();
    let status = client
        .status(StatusRequest { app: "shop".into() })
        .await
        .unwrap()
        .into_inner();
    status.apps.into_iter().next().expect("the shop app")
}

/// Waits until the status RPC reports the compose service running.
async fn compose_running(agent: &Agent, pki: &Pki) -> String {
    e2e::eventually(
        "status reports compose shop running",
        Duration::from_secs(20),
        || async {
            let app = app_status(agent, pki).await;
            let service = app
                .services
                .iter()
                .find(|s| s.kind == "compose" && s.name == PROJECT)
                .ok_or_else(|| format!("no compose service in {:?}", app.services))?;
            if service.state() == ServiceState::Running {
                Ok(service.detail.clone())
            } else {
                Err(format!("{:?}: {}", service.state(), service.detail))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_app_deploys_upgrades_and_rolls_back() {
    let Some(()) = require_tools() else {
        return;
    };
    let started = std::time::Instant::now();
    let docker = Docker::start().expect("start a private dockerd");
    let engine_ready = started.elapsed();
    docker
        .import_image(V1, &[("www/version", "v1\n")])
        .expect("import v1");
    docker
        .import_image(V2, &[("www/version", "v2\n")])
        .expect("import v2");

    let port = e2e::free_port();
    let repo = AppRepo::new_static(&[("docker-compose.yml", &compose_file(V1, port))]);
    let v1_commit = repo.head();
    let deploy_root = tempfile::tempdir().unwrap();
    let deploy_to = deploy_root.path().join("shop");
    let pki = Pki::new();
    let agent = AgentBuilder::new(&pki)
        .env("DOCKER_HOST", &docker.host())
        .apps(&app_toml(&repo, &deploy_to, port))
        .start()
        .await;

    // A one-off container of the service (`compose run`, e.g. a migration) that exited
    // and was left behind: it is not the service, so it must not read as the service
    // being down.
    let one_off = compose_run(&docker, &repo.work_dir(), &["true"]);
    assert!(one_off.status.success(), "compose run: {one_off:?}");

    // v1: compose brings the service up on image v1 from the release dir.
    let r1 = deploy(&agent, &pki, &docker, "compose-v1", &v1_commit).await;
    let v1 = running(&docker);
    assert_eq!(v1.image, V1);
    assert_eq!(
        Path::new(&v1.working_dir),
        deploy_to.join("releases").join(&r1),
        "compose ran in the v1 release"
    );
    assert_eq!(served(port).await, "v1\n");
    let detail = compose_running(&agent, &pki).await;
    assert!(detail.starts_with("web: Up"), "{detail}");
    assert!(
        !detail.contains("Exited"),
        "the one-off is not reported: {detail}"
    );

    // v2: the compose file names image v2; the container is recreated on it.
    let v2_commit = repo.commit_version("2", &[("docker-compose.yml", &compose_file(V2, port))]);
    let r2 = deploy(&agent, &pki, &docker, "compose-v2", &v2_commit).await;
    assert_ne!(r1, r2);
    let v2 = running(&docker);
    assert_ne!(v2.id, v1.id, "a new container for v2");
    assert_eq!(v2.image, V2);
    assert_eq!(
        Path::new(&v2.working_dir),
        deploy_to.join("releases").join(&r2)
    );
    assert_eq!(served(port).await, "v2\n");
    compose_running(&agent, &pki).await;

    // Rollback: back on v1's release and compose file, in a fresh container on v1.
    let mut client = agent.connect(&pki, Who::Deployer).await.unwrap();
    let stream = client
        .rollback(RollbackRequest {
            app: "shop".into(),
            job_id: "compose-rb".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (back, out) = succeeded(&agent, &docker, collect(stream).await);
    assert_eq!(back, r1, "rolled back to the v1 release");
    assert!(out.contains(&format!("{PROJECT} recreated")), "{out}");
    let rolled = running(&docker);
    assert_ne!(rolled.id, v2.id, "the v2 container is replaced");
    assert_ne!(rolled.id, v1.id, "a new container, not the old v1 one");
    assert_eq!(rolled.image, V1);
    assert_eq!(
        Path::new(&rolled.working_dir),
        deploy_to.join("releases").join(&r1),
        "compose ran with v1's compose file"
    );
    assert_eq!(served(port).await, "v1\n");
    let app = app_status(&agent, &pki).await;
    assert_eq!(app.current_release, r1);
    compose_running(&agent, &pki).await;

    eprintln!(
        "{TEST}: dockerd ({}) ready in {engine_ready:?}, whole test {:?}",
        docker.storage_driver(),
        started.elapsed()
    );
}

/// Two services in one compose project, each serving its name on its own port.
fn two_services(image: &str, api: u16, worker: u16) -> String {
    let service = |name: &str, port: u16| {
        format!(
            "  {name}:\n    image: {image}\n    network_mode: host\n    init: true\n    command: [\"httpd\", \"-f\", \"-p\", \"127.0.0.1:{port}\", \"-h\", \"/www\"]\n"
        )
    };
    format!(
        "services:\n{}{}",
        service("api", api),
        service("worker", worker)
    )
}

/// A private engine with image v1, and an agent deploying `compose` (the app's compose
/// file) with `extra` appended to its `[[app]]`, checked on `port`; a fleet file for
/// `who` naming it web-1.
async fn compose_agent(compose: &str, port: u16, extra: &str, who: Who) -> Composed {
    let docker = Docker::start().expect("start a private dockerd");
    docker
        .import_image(V1, &[("www/version", "v1\n")])
        .expect("import v1");
    let repo = AppRepo::new_static(&[("docker-compose.yml", compose)]);
    let deploy_root = tempfile::tempdir().unwrap();
    let deploy_to = deploy_root.path().join("shop");
    let pki = Pki::new();
    let toml = format!("{}{extra}", app_toml(&repo, &deploy_to, port));
    let agent = AgentBuilder::new(&pki)
        .env("DOCKER_HOST", &docker.host())
        .apps(&toml)
        .start()
        .await;
    Composed {
        fleet: agent.one_host_fleet(&pki, who, deploy_root.path()),
        docker,
        agent,
        pki,
        _repo: repo,
        _root: deploy_root,
    }
}

/// What [`compose_agent`] made.
struct Composed {
    docker: Docker,
    agent: Agent,
    pki: Pki,
    _repo: AppRepo,
    _root: tempfile::TempDir,
    fleet: String,
}

/// `hoist restart APP --service api` names a service of the app's compose project:
/// only that one is recreated; `hoist stop`/`start --service` act on one too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_compose_service_by_its_own_name() {
    let Some(()) = require_tools() else {
        return;
    };
    let (api, worker) = (e2e::free_port(), e2e::free_port());
    let c = compose_agent(&two_services(V1, api, worker), api, "", Who::Deployer).await;
    let (docker, agent, fl) = (&c.docker, &c.agent, c.fleet.as_str());
    let hoist = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--fleet", fl]);
        hoist_tests::harness::hoist(&all)
    };

    let (status, out, err) = hoist(&["deploy", "shop", "--ref", "main"]);
    assert!(status.success(), "{out}{err}\n{}", agent.log_text());
    let id = |service| {
        docker
            .container_id(PROJECT, service)
            .unwrap_or_else(|| panic!("one running {service} container"))
    };
    let (api_before, worker_before) = (id("api"), id("worker"));

    let (status, out, err) = hoist(&["restart", "shop", "--service", "api"]);
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("restart shop/api"), "{out}");
    assert_ne!(id("api"), api_before, "api recreated");
    assert_eq!(id("worker"), worker_before, "worker untouched");

    let (status, out, err) = hoist(&["restart", "shop", "--service", "nope"]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    let text = format!("{out}{err}");
    assert!(
        text.contains("app shop has no service \"nope\"")
            && text.contains("api (compose)")
            && text.contains("worker (compose)"),
        "{text}"
    );

    let (status, out, err) = hoist(&["stop", "shop", "--service", "worker"]);
    assert!(status.success(), "{out}{err}");
    assert!(
        docker.container_id(PROJECT, "worker").is_none(),
        "worker stopped"
    );
    assert!(
        docker.container_id(PROJECT, "api").is_some(),
        "api still up"
    );
    let (status, out, err) = hoist(&["start", "shop", "--service", "worker"]);
    assert!(status.success(), "{out}{err}");
    assert!(
        docker.container_id(PROJECT, "worker").is_some(),
        "worker up again"
    );
    assert_eq!(served(worker).await, "v1\n");
}

/// `hoist logs` of a compose service (`compose_service`): `docker logs` of its
/// container through the private engine, masked, `--lines` and `--grep` applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_a_compose_service() {
    let Some(()) = require_tools() else {
        return;
    };
    let port = e2e::free_port();
    let compose = format!(
        r#"services:
  web:
    image: {V1}
    network_mode: host
    init: true
    command: ["sh", "-c", "echo web starting with redis://app:Sekr3tPw@127.0.0.1:6379/0; echo web ready; exec httpd -f -p 127.0.0.1:{port} -h /www"]
"#
    );
    let logs = format!("\n[[app.logs]]\nname = \"web\"\ncompose_service = \"{SERVICE}\"\n");
    let c = compose_agent(&compose, port, &logs, Who::Viewer).await;
    let (docker, agent, pki, fl) = (&c.docker, &c.agent, &c.pki, c.fleet.as_str());
    deploy(agent, pki, docker, "d-logs", "main").await;

    let (status, out, err) =
        hoist_tests::harness::hoist(&["logs", "shop", "--source", "web", "--fleet", fl]);
    assert!(status.success(), "{out}{err}\n{}", agent.log_text());
    assert!(
        out.contains("web-1 | web starting with redis://app:••••@127.0.0.1:6379/0"),
        "{out}"
    );
    assert!(out.contains("web-1 | web ready"), "{out}");
    assert!(!out.contains("Sekr3tPw"), "{out}");
    let (_, out, _) = hoist_tests::harness::hoist(&[
        "logs", "shop", "--source", "web", "--lines", "1", "--fleet", fl,
    ]);
    let lines: Vec<&str> = out.lines().filter(|l| l.contains(" | ")).collect();
    assert_eq!(lines, ["web-1 | web ready"], "{out}");
    let (_, out, _) =
        hoist_tests::harness::hoist(&["logs", "shop", "--grep", "start", "--fleet", fl]);
    let lines: Vec<&str> = out.lines().filter(|l| l.contains(" | ")).collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(lines[0].starts_with("web-1 web | web starting"), "{out}");
}
