//! The `hoist` CLI against real agents: deploy to hosts in order, stop at the first
//! failure, releases, the deployment log, rollback, locks, env, and the JSON stream.

use std::os::unix::fs::PermissionsExt as _;

use hoist_tests::{
    harness::{Agent, AgentBuilder, Pki, Who, hoist},
    services::git::AppRepo,
};

fn app(repo: &AppRepo, deploy_to: &std::path::Path) -> String {
    format!(
        r#"
[[app]]
name = "web"
repo = "{}"
deploy_to = "{}"
shared_files = [".env"]

[app.steps]
build = "echo building $HOIST_RELEASE"

[[app.checks]]
kind = "command"
name = "not-broken"
command = "test ! -e BROKEN || (echo this release is BROKEN; exit 1)"
retries = 1
"#,
        repo.url(),
        deploy_to.display()
    )
}

struct Fleet {
    _root: tempfile::TempDir,
    _agents: Vec<Agent>,
    deployer: String,
    viewer: String,
    deploy_tos: Vec<std::path::PathBuf>,
}

async fn fleet(pki: &Pki, repo: &AppRepo) -> Fleet {
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut agents = Vec::new();
    let mut hosts = String::new();
    let mut deploy_tos = Vec::new();
    for name in ["web-1", "web-2"] {
        let deploy_to = root.path().join(name);
        let agent = AgentBuilder::new(pki)
            .apps(&app(repo, &deploy_to))
            .start()
            .await;
        hosts.push_str(&agent.fleet_entry(name));
        agents.push(agent);
        deploy_tos.push(deploy_to);
    }
    let deployer = root.path().join("fleet.toml");
    std::fs::write(
        &deployer,
        format!("{}{hosts}", pki.fleet_tls(Who::Deployer)),
    )
    .unwrap();
    let viewer = root.path().join("viewer.toml");
    std::fs::write(&viewer, format!("{}{hosts}", pki.fleet_tls(Who::Viewer))).unwrap();
    Fleet {
        deployer: deployer.display().to_string(),
        viewer: viewer.display().to_string(),
        _root: root,
        _agents: agents,
        deploy_tos,
    }
}

fn current(deploy_to: &std::path::Path) -> Option<String> {
    std::fs::read_link(deploy_to.join("current"))
        .ok()
        .map(|t| t.file_name().unwrap().to_string_lossy().into_owned())
}

#[tokio::test]
async fn deploy_log_releases_rollback_through_the_cli() {
    let pki = Pki::new();
    let repo = AppRepo::new_static(&[("index.html", "v\n")]);
    repo.commit_version("1", &[]);
    let f = fleet(&pki, &repo).await;
    let fl = f.deployer.as_str();

    // v1 everywhere, in order.
    let (status, out, err) = hoist(&["deploy", "web", "--ref", "main", "--fleet", fl]);
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("web-1") && out.contains("web-2"), "{out}");
    assert!(
        out.find("==> web-1").unwrap() < out.find("==> web-2").unwrap(),
        "{out}"
    );
    assert!(
        out.contains("build") && out.contains("building"),
        "live step output: {out}"
    );
    // Release ids carry the second each host built them in, so compare per host.
    let rel1s: Vec<Option<String>> = f.deploy_tos.iter().map(|d| current(d)).collect();
    let rel1 = rel1s[0].clone().unwrap();
    assert!(
        rel1s
            .iter()
            .all(|r| r.as_ref().is_some_and(|r| r.ends_with(&rel1[17..])))
    );

    // v2 with --json: one JSON object per line, the last ones say succeeded.
    repo.commit_version("2", &[]);
    let (status, out, err) = hoist(&["deploy", "web", "--ref", "main", "--fleet", fl, "--json"]);
    assert!(status.success(), "{out}{err}");
    let events: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "step_started" && e["step"] == "switch")
    );
    let job = events
        .iter()
        .find(|e| e["host"] == "web-1")
        .map(|e| e["job_id"].as_str().unwrap().to_string())
        .unwrap();
    let rel2s: Vec<Option<String>> = f.deploy_tos.iter().map(|d| current(d)).collect();
    let rel2 = rel2s[0].clone().unwrap();

    // The deployment log of that job.
    let (status, out, err) = hoist(&[
        "log", "web", "--job", &job, "--fleet", fl, "--hosts", "web-1",
    ]);
    assert!(status.success(), "{out}{err}");
    for needle in [
        "dana",
        &job,
        &rel2,
        "fetch",
        "materialise",
        "switch",
        "check not-broken",
        "succeeded",
    ] {
        assert!(out.contains(needle), "missing {needle} in the log:\n{out}");
    }
    let (status, out, _) = hoist(&["log", "web", "--fleet", fl]);
    assert!(status.success());
    assert!(out.contains(&job), "{out}");

    // Releases: both, side by side, v2 current on every host.
    let (status, out, _) = hoist(&["releases", "web", "--fleet", fl]);
    assert!(status.success());
    assert!(out.contains(&rel1) && out.contains("CURRENT"), "{out}");
    let v2_row = out
        .lines()
        .find(|l| l.starts_with(&rel2))
        .unwrap_or_default();
    assert!(
        v2_row.contains(" ok ") && v2_row.contains("all  all"),
        "{out}"
    );

    // v3 is broken: web-1 rolls back by itself and web-2 is never touched.
    repo.commit_version("3", &[("BROKEN", "1")]);
    let (status, out, err) = hoist(&["deploy", "web", "--ref", "main", "--fleet", fl]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(
        out.contains("rolled back") || err.contains("rolled back"),
        "{out}{err}"
    );
    assert!(
        format!("{out}{err}").contains("this release is BROKEN"),
        "{out}{err}"
    );
    let now: Vec<Option<String>> = f.deploy_tos.iter().map(|d| current(d)).collect();
    assert_eq!(now, rel2s, "v2 still serves everywhere");

    // Roll back everywhere to v1.
    let (status, out, err) = hoist(&["rollback", "web", "--fleet", fl]);
    assert!(status.success(), "{out}{err}");
    let now: Vec<Option<String>> = f.deploy_tos.iter().map(|d| current(d)).collect();
    assert_eq!(now, rel1s, "v1 serves everywhere again");
    let (status, _, err) = hoist(&["rollback", "web", "--restore-db", "--fleet", fl]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("--yes"), "{err}");

    // A viewer cannot deploy.
    let (status, out, err) = hoist(&["deploy", "web", "--ref", "main", "--fleet", &f.viewer]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(
        format!("{out}{err}").contains("needs role deployer"),
        "{out}{err}"
    );

    // A lock stops deploys with the holder's name; unlock frees it.
    let (status, _, err) = hoist(&["lock", "web", "--reason", "db maintenance", "--fleet", fl]);
    assert!(status.success(), "{err}");
    let (status, out, err) = hoist(&["deploy", "web", "--ref", "main", "--fleet", fl]);
    assert_eq!(status.code(), Some(1));
    assert!(
        format!("{out}{err}").contains("locked by dana"),
        "{out}{err}"
    );
    let (status, _, err) = hoist(&["unlock", "web", "--fleet", fl]);
    assert!(status.success(), "{err}");

    // Env: values hidden unless --show.
    let (status, _, err) = hoist(&["env", "web", "set", "API_TOKEN=s3cr3t-token", "--fleet", fl]);
    assert!(status.success(), "{err}");
    let (status, out, _) = hoist(&["env", "web", "list", "--fleet", fl]);
    assert!(status.success());
    assert!(
        out.contains("API_TOKEN") && !out.contains("s3cr3t-token"),
        "{out}"
    );
    let (_, out, _) = hoist(&["env", "web", "get", "API_TOKEN", "--show", "--fleet", fl]);
    assert!(out.contains("s3cr3t-token"), "{out}");
    let (status, _, _) = hoist(&["env", "web", "set", "not valid", "--fleet", fl]);
    assert_eq!(status.code(), Some(2));
}
