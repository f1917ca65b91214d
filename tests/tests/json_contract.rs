//! The `--json` contract (docs/REFERENCE.md, "JSON output") for every command that
//! takes it, against a real agent and a real deploy: query commands print one
//! document `{"kind", "v": 1, ...}`; job commands print JSON lines, each an object with
//! a `kind` and `"v": 1`.

use std::os::unix::fs::PermissionsExt as _;

use hoist_tests::{
    harness::{AgentBuilder, Pki, Who, hoist},
    services::git::AppRepo,
};
use serde_json::Value;

/// How a command's stdout is shaped.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    /// One pretty-printed document of this kind.
    Document(&'static str),
    /// JSON lines.
    Lines,
}

/// Runs `hoist ARGS --json`, asserts the exit code and the shape, returns the values.
fn json(args: &[&str], code: i32, shape: Shape) -> Vec<Value> {
    let mut all = args.to_vec();
    all.push("--json");
    let (status, out, err) = hoist(&all);
    assert_eq!(status.code(), Some(code), "{all:?}:\n{out}{err}");
    let values: Vec<Value> = match shape {
        Shape::Document(kind) => {
            let doc: Value = serde_json::from_str(&out)
                .unwrap_or_else(|e| panic!("{all:?}: not one document ({e}):\n{out}"));
            assert_eq!(doc["kind"], kind, "{all:?}:\n{out}");
            vec![doc]
        }
        Shape::Lines => out
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("{all:?}: line is not JSON ({e}): {l}\n{out}"))
            })
            .collect(),
    };
    assert!(!values.is_empty(), "{all:?}: no output\n{err}");
    for v in &values {
        assert!(
            v["kind"].as_str().is_some_and(|k| !k.is_empty()),
            "{all:?}: no kind: {v}"
        );
        assert_eq!(v["v"], 1, "{all:?}: no version: {v}");
    }
    values
}

#[tokio::test]
async fn every_json_command_prints_versioned_kinds() {
    let pki = Pki::new();
    let repo = AppRepo::new_static(&[("VERSION", "1\n")]);
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let agent = AgentBuilder::new(&pki)
        .apps(&format!(
            "[[app]]\nname = \"web\"\nrepo = \"{}\"\ndeploy_to = \"{}\"\n\
             shared_files = [\".env\"]\n\n[app.tasks]\nhello = \"echo hello\"\n\n\
             [[app.logs]]\nname = \"version\"\npath = \"VERSION\"\n",
            repo.url(),
            root.path().join("web").display()
        ))
        .start()
        .await;
    let fleet = agent.one_host_fleet(&pki, Who::Deployer, root.path());
    let fl = fleet.as_str();
    use Shape::*;

    // Jobs: JSON lines.
    let deploy = json(&["deploy", "web", "--ref", "main", "--fleet", fl], 0, Lines);
    let job = deploy
        .iter()
        .find_map(|v| v["job_id"].as_str().filter(|j| !j.is_empty()))
        .expect("a job id")
        .to_string();
    assert!(deploy.iter().any(|v| v["kind"] == "summary"), "{deploy:?}");
    repo.commit_version("2", &[]);
    json(&["deploy", "web", "--ref", "main", "--fleet", fl], 0, Lines);
    json(&["rollback", "web", "--fleet", fl], 0, Lines);
    json(&["restart", "web", "--fleet", fl], 0, Lines);
    json(&["stop", "web", "--fleet", fl], 0, Lines);
    json(&["start", "web", "--fleet", fl], 0, Lines);
    json(&["run", "web", "hello", "--fleet", fl], 0, Lines);
    let lines = json(&["logs", "web", "--fleet", fl], 0, Lines);
    assert_eq!(lines[0]["kind"], "log_line", "{lines:?}");
    assert_eq!(lines[0]["line"], "1", "{lines:?}");
    json(
        &["env", "web", "set", "GREETING=hi", "--fleet", fl],
        0,
        Lines,
    );
    json(
        &["env", "web", "unset", "GREETING", "--fleet", fl],
        0,
        Lines,
    );
    json(&["attach", &job, "--fleet", fl], 0, Lines);
    // A refusal is a line too.
    json(
        &["lock", "web", "--reason", "freeze", "--fleet", fl],
        0,
        Document("lock"),
    );
    let refused = json(&["deploy", "web", "--ref", "main", "--fleet", fl], 1, Lines);
    assert!(
        refused.iter().any(|v| v["kind"] == "refused"),
        "{refused:?}"
    );
    json(&["unlock", "web", "--fleet", fl], 0, Document("unlock"));

    // Queries: one document each, per host under "hosts".
    let status = json(&["status", "--fleet", fl], 0, Document("status"));
    assert_eq!(status[0]["hosts"][0]["host"], "web-1", "{status:?}");
    json(&["top", "--once", "--fleet", fl], 0, Document("status"));
    json(&["releases", "web", "--fleet", fl], 0, Document("releases"));
    json(&["backups", "web", "--fleet", fl], 0, Document("backups"));
    // No backup step declared: the job fails, still as JSON lines.
    json(&["backup", "web", "--fleet", fl], 1, Lines);
    json(&["log", "web", "--fleet", fl], 0, Document("log"));
    json(
        &["log", "web", "--job", &job, "--fleet", fl],
        0,
        Document("job_log"),
    );
    json(
        &["env", "web", "list", "--fleet", fl],
        0,
        Document("env_list"),
    );
    json(
        &["env", "web", "get", "GREETING", "--fleet", fl],
        1,
        Document("env_get"),
    );

    // The CA: one document each.
    let ca = root.path().join("ca");
    let ca_s = ca.to_str().unwrap();
    let init = json(&["ca", "init", ca_s], 0, Document("ca_init"));
    assert_eq!(
        init[0]["cert"],
        ca.join("ca.pem").to_str().unwrap(),
        "{init:?}"
    );
    let issued = json(
        &[
            "ca", "issue", "--ca", ca_s, "--user", "olga", "--role", "viewer",
        ],
        0,
        Document("ca_issue"),
    );
    assert_eq!(
        (&issued[0]["name"], &issued[0]["role"]),
        (&"olga".into(), &"viewer".into()),
        "{issued:?}"
    );
    assert!(issued[0]["not_after"].as_str().is_some(), "{issued:?}");
    json(
        &[
            "ca",
            "issue",
            "--ca",
            ca_s,
            "--agent",
            "web-9",
            "--san",
            "127.0.0.1",
        ],
        0,
        Document("ca_issue"),
    );
    let revoked = json(
        &["ca", "revoke", "--ca", ca_s, "olga"],
        0,
        Document("ca_revoke"),
    );
    assert_eq!(revoked[0]["revoked_count"], 1, "{revoked:?}");
}
