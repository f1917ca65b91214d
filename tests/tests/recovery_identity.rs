//! Issue 10, the recovery path's identity and truth, through the real `hoist` CLI
//! against three real agents on loopback and a real PostgreSQL:
//!
//! - one release id per fleet deploy: every host gets the same id, and the migrating
//!   host's `migrate` (psql) records that id in the database (#5);
//! - `hoist rollback --to` a release id, a tag, a commit prefix, resolved per host, and
//!   refused before any change when some host lacks it or it is ambiguous (#5);
//! - `hoist releases` side by side, with outcome marks; `keep_releases` counts good
//!   releases only (#8);
//! - `--dry-run` validates app, ref, reachability and shows each host's release and
//!   steps; `rollback --dry-run` says where each host would go (#6);
//! - the failure summary names the step that failed: `shared` (missing .env key),
//!   `fetch` (bad ref), `materialise` (a full disk) (#7).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use hoist_tests::{
    harness::{Agent, AgentBuilder, Pki, Who, hoist},
    services::{
        git::AppRepo,
        postgres::{Postgres, pg_bin, require_postgres},
    },
};
use serde_json::Value;

const DB: &str = "shop";

struct Fleet {
    root: tempfile::TempDir,
    _agents: Vec<Agent>,
    hosts: String,
    tls: String,
    deploy_tos: Vec<PathBuf>,
}

/// The app on every host: `migrate` records `$HOIST_RELEASE` in PostgreSQL; its check
/// fails while `flags/sick-v<VERSION>` exists. `extra_app` is TOML appended after
/// the app (more apps); `mounts` are host indexes whose `deploy_to` is a small tmpfs.
async fn fleet(pki: &Pki, repo: &AppRepo, pg: &Postgres, count: usize, extra_app: &str) -> Fleet {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("flags")).unwrap();
    let psql = pg_bin("psql").unwrap();
    let mut agents = Vec::new();
    let mut hosts = String::new();
    let mut deploy_tos = Vec::new();
    for i in 1..=count {
        let name = format!("web-{i}");
        let deploy_to = root.path().join(&name);
        let env: String = pg
            .pg_env(DB)
            .into_iter()
            .map(|(k, v)| format!("{k} = \"{v}\"\n"))
            .collect();
        let app = format!(
            r#"
[[app]]
name = "web"
repo = "{repo}"
deploy_to = "{deploy_to}"
keep_releases = 3

[app.env]
{env}
[app.steps]
build = "echo building $HOIST_RELEASE"
migrate = "{psql} -X -q -v ON_ERROR_STOP=1 -c \"INSERT INTO migrated VALUES ('$HOIST_RELEASE', '{name}')\""

[[app.checks]]
kind = "command"
name = "not-sick"
command = "test ! -e {flags}/sick-v$(cat VERSION) || (echo this release is sick; exit 1)"
retries = 1
{extra}
"#,
            repo = repo.url(),
            deploy_to = deploy_to.display(),
            psql = psql.display(),
            flags = root.path().join("flags").display(),
            extra = extra_app
                .replace("{name}", &name)
                .replace("{root}", &root.path().display().to_string()),
        );
        let agent = AgentBuilder::new(pki)
            .health_interval("300ms")
            .apps(&app)
            .start()
            .await;
        hosts.push_str(&agent.fleet_entry(&name));
        agents.push(agent);
        deploy_tos.push(deploy_to);
    }
    Fleet {
        tls: pki.fleet_tls(Who::Deployer),
        root,
        _agents: agents,
        hosts,
        deploy_tos,
    }
}

impl Fleet {
    fn file(&self, extra: &str) -> String {
        let path = self.root.path().join("fleet.toml");
        std::fs::write(&path, format!("{}{}\n{extra}", self.tls, self.hosts)).unwrap();
        path.display().to_string()
    }

    fn sick(&self, version: &str, sick: bool) {
        let flag = self
            .root
            .path()
            .join("flags")
            .join(format!("sick-v{version}"));
        if sick {
            std::fs::write(flag, "").unwrap();
        } else {
            let _ = std::fs::remove_file(flag);
        }
    }

    /// The release `current` points at on every host.
    fn currents(&self) -> Vec<String> {
        self.deploy_tos.iter().map(|d| current(d)).collect()
    }

    fn on_disk(&self, i: usize) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.deploy_tos[i].join("releases"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        ids.sort();
        ids
    }
}

fn current(deploy_to: &Path) -> String {
    std::fs::read_link(deploy_to.join("current"))
        .map(|t| t.file_name().unwrap().to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn hoist_expect(code: i32, args: &[&str]) -> (String, String) {
    let (status, out, err) = hoist(args);
    assert_eq!(
        status.code(),
        Some(code),
        "hoist {args:?}\n--- stdout\n{out}\n--- stderr\n{err}"
    );
    (out, err)
}

fn deploy(fl: &str, r#ref: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["deploy", "web", "--ref", r#ref, "--fleet", fl];
    args.extend_from_slice(extra);
    hoist_expect(0, &args)
}

fn releases_json(fl: &str) -> Value {
    let (out, _) = hoist_expect(0, &["releases", "web", "--json", "--fleet", fl]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn release_row<'a>(json: &'a Value, id: &str) -> &'a Value {
    json["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("no release {id} in {json}"))
}

/// `hoist deploy web --ref nosuchref` exits 1 before any host starts, naming the fetch
/// that failed, never migrations.
fn bad_ref_is_refused_naming_the_fetch(fl: &str) {
    let (_, err) = hoist_expect(1, &["deploy", "web", "--ref", "nosuchref", "--fleet", fl]);
    assert!(
        err.contains("nosuchref cannot be deployed on every host"),
        "{err}"
    );
    assert!(
        err.contains("fetch: ref \"nosuchref\" is not a branch, tag or commit"),
        "names the step: {err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(!err.contains("migrations"), "{err}");
}

fn start_pg(test: &str) -> Option<Postgres> {
    if !require_postgres(test) {
        return None;
    }
    let pg = Postgres::start().unwrap();
    pg.create_database(DB).unwrap();
    // Made here, not by the hosts' migrate steps: two hosts migrating at once
    // (`migrate_on = "all"`) would race on CREATE TABLE.
    pg.psql(
        DB,
        "CREATE TABLE migrated (release text NOT NULL, host text NOT NULL)",
    )
    .unwrap();
    Some(pg)
}

#[tokio::test]
async fn one_release_id_for_the_fleet_and_rollback_to_an_id_a_tag_or_a_commit() {
    let Some(pg) = start_pg("one_release_id_for_the_fleet") else {
        return;
    };
    let pki = Pki::new();
    let repo = AppRepo::new_static(&[("index.html", "v\n")]);
    let v1 = repo.commit_version("1", &[]);
    repo.tag("v1");
    let f = fleet(&pki, &repo, &pg, 3, "").await;
    let fl = f.file("[deploy]\nstrategy = \"all\"\nmigrate_on = \"first\"\n");

    // v1: one id on all three hosts, with the commit in it; web-1 migrated with it.
    let (out, _) = deploy(&fl, "v1", &[]);
    let r1 = f.currents()[0].clone();
    assert_eq!(
        f.currents(),
        [r1.as_str(), r1.as_str(), r1.as_str()],
        "{out}"
    );
    assert!(r1.ends_with(&format!("-{}", &v1[..7])), "{r1}");
    assert!(
        out.contains(&format!("release {r1} on every host")),
        "{out}"
    );
    let migrated = pg
        .psql(DB, "SELECT release || ' ' || host FROM migrated")
        .unwrap();
    assert_eq!(migrated.trim(), format!("{r1} web-1"));

    let v2 = repo.commit_version("2", &[]);
    repo.tag("v2");
    deploy(&fl, "v2", &[]);
    let r2 = f.currents()[0].clone();
    let v3 = repo.commit_version("3", &[]);
    deploy(&fl, "main", &[]);
    let r3 = f.currents()[0].clone();
    assert_eq!(f.currents(), [r3.as_str(), r3.as_str(), r3.as_str()]);
    assert!(r2.contains(&v2[..7]) && r3.contains(&v3[..7]), "{r2} {r3}");
    assert_ne!(r2, r3);

    // Side by side: one row per release, on all three hosts.
    let (out, _) = hoist_expect(0, &["releases", "web", "--fleet", &fl]);
    assert!(out.starts_with("3 hosts: web-1, web-2, web-3\n"), "{out}");
    for id in [r1.as_str(), r2.as_str(), r3.as_str()] {
        assert_eq!(out.matches(id).count(), 1, "one row for {id}:\n{out}");
    }
    let json = releases_json(&fl);
    assert_eq!(json["releases"].as_array().unwrap().len(), 3, "{json}");
    let row = release_row(&json, &r3);
    assert_eq!(row["on"], serde_json::json!(["web-1", "web-2", "web-3"]));
    assert_eq!(
        row["current_on"],
        serde_json::json!(["web-1", "web-2", "web-3"])
    );
    assert_eq!(row["outcome"], "ok");
    assert_eq!(
        release_row(&json, &r2)["previous_on"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // --to a release id, a tag, a commit prefix: the same release on every host.
    let (out, _) = hoist_expect(0, &["rollback", "web", "--to", &r1, "--fleet", &fl]);
    assert!(
        out.contains(&format!("rolling back to {r1} on every host")),
        "{out}"
    );
    assert_eq!(f.currents(), [r1.as_str(), r1.as_str(), r1.as_str()]);
    hoist_expect(0, &["rollback", "web", "--to", "v2", "--fleet", &fl]);
    assert_eq!(f.currents(), [r2.as_str(), r2.as_str(), r2.as_str()]);
    hoist_expect(0, &["rollback", "web", "--to", &v3[..9], "--fleet", &fl]);
    assert_eq!(f.currents(), [r3.as_str(), r3.as_str(), r3.as_str()]);
    let json = releases_json(&fl);
    assert_eq!(release_row(&json, &r2)["outcome"], "rolled_back", "{json}");
    assert_eq!(release_row(&json, &r3)["outcome"], "ok", "{json}");

    // Resolved per host: web-3 alone gets v1 again (a second release of v1 there, with
    // an id of its own); --to v1 still names one release on each host.
    hoist_expect(
        0,
        &[
            "deploy", "web", "--ref", "v1", "--fleet", &fl, "--hosts", "web-3",
        ],
    );
    let r1b = f.currents()[2].clone();
    assert_ne!(r1b, r1);
    hoist_expect(
        0,
        &[
            "rollback", "web", "--to", &r3, "--fleet", &fl, "--hosts", "web-3",
        ],
    );
    let (out, _) = hoist_expect(0, &["rollback", "web", "--to", "v1", "--fleet", &fl]);
    assert!(
        out.contains(&format!(
            "rolling back to web-1: {r1}, web-2: {r1}, web-3: {r1b}"
        )),
        "{out}"
    );
    assert_eq!(
        f.currents(),
        [r1.as_str(), r1.as_str(), r1b.as_str()],
        "web-3 goes to its newest v1"
    );

    // Not on some hosts: refused before any host changes, naming them.
    let v4 = repo.commit_version("4", &[]);
    hoist_expect(
        0,
        &[
            "deploy", "web", "--ref", "main", "--fleet", &fl, "--hosts", "web-1",
        ],
    );
    let r4 = f.currents()[0].clone();
    assert!(r4.contains(&v4[..7]));
    hoist_expect(
        0,
        &[
            "rollback", "web", "--to", &r1, "--fleet", &fl, "--hosts", "web-1",
        ],
    );
    let before = f.currents();
    let (_, err) = hoist_expect(1, &["rollback", "web", "--to", &r4, "--fleet", &fl]);
    assert!(
        err.contains(&format!(
            "--to {r4} cannot be rolled back to on web-2, web-3"
        )),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(f.currents(), before, "no host changed");

    // Ambiguous: on web-1, main was deployed at v3 and at v4.
    let (_, err) = hoist_expect(
        1,
        &[
            "rollback", "web", "--to", "main", "--fleet", &fl, "--hosts", "web-1",
        ],
    );
    assert!(err.contains("matches more than one release"), "{err}");
    assert!(err.contains(&r3) && err.contains(&r4), "{err}");
    assert_eq!(f.currents(), before);

    // The agent refuses a release id it cannot use: a bad shape, a clash, a commit the
    // ref does not resolve to (asked directly, as an older or a buggy controller could).
    let agent = &f._agents[0];
    let mut client = agent.connect(&pki, Who::Deployer).await.unwrap();
    for (n, (release_id, needle)) in [
        ("../../etc", "release_id contains '.'"),
        (r1.as_str(), "already exists on this host"),
        ("20261202T171500Z-0000000", "the hosts do not agree"),
    ]
    .into_iter()
    .enumerate()
    {
        let request = hoist_proto::v1::DeployRequest {
            app: "web".into(),
            r#ref: "v1".into(),
            deploy_id: format!("deploy-direct-{n}"),
            release_id: release_id.into(),
            ..Default::default()
        };
        let text = match client.deploy(request).await {
            Err(status) => status.message().to_string(),
            Ok(stream) => {
                let mut stream = stream.into_inner();
                let mut text = String::new();
                while let Some(Ok(event)) = tokio_stream::StreamExt::next(&mut stream).await {
                    if let Some(hoist_proto::v1::job_event::Kind::Finished(done)) = event.kind {
                        assert_eq!(done.result(), hoist_proto::v1::JobResult::Failed);
                        text = done.error;
                    }
                }
                text
            }
        };
        assert!(text.contains(needle), "{release_id}: {text}");
    }
    assert_eq!(f.currents(), before, "no refused id changed anything");
}

#[tokio::test]
async fn keep_releases_counts_good_releases_only() {
    let Some(pg) = start_pg("keep_releases_counts_good_releases_only") else {
        return;
    };
    let pki = Pki::new();
    let repo = AppRepo::new_static(&[("index.html", "v\n")]);
    repo.commit_version("1", &[]);
    let f = fleet(&pki, &repo, &pg, 2, "").await;
    let fl = f.file("[deploy]\nstrategy = \"all\"\nmax_unhealthy = 2\nmigrate_on = \"all\"\n");
    let mut ids = Vec::new();
    for v in ["1", "2", "3", "4"] {
        if v != "1" {
            repo.commit_version(v, &[]);
        }
        f.sick("3", v == "3");
        let (status, out, err) = hoist(&["deploy", "web", "--ref", "main", "--fleet", &fl]);
        if v == "3" {
            // Its checks fail: each agent rolls it back.
            assert_eq!(status.code(), Some(1), "{out}{err}");
            ids.push(f.on_disk(0).last().unwrap().clone());
        } else {
            assert!(status.success(), "{out}{err}");
            let now = f.currents();
            assert!(
                !now[0].is_empty() && now[0] == now[1],
                "{now:?}\n{out}{err}"
            );
            ids.push(now[0].clone());
        }
    }
    f.sick("3", false);
    // keep_releases = 3: the rolled-back v3 does not count; v1 is still there.
    let sorted = |mut ids: Vec<String>| {
        ids.sort();
        ids
    };
    for host in 0..2 {
        assert_eq!(f.on_disk(host), sorted(ids.clone()), "host {host}");
    }
    let json = releases_json(&fl);
    assert_eq!(
        release_row(&json, &ids[2])["outcome"],
        "rolled_back",
        "{json}"
    );
    assert_eq!(release_row(&json, &ids[3])["outcome"], "ok", "{json}");
    let (out, _) = hoist_expect(0, &["releases", "web", "--fleet", &fl]);
    let v3_line = out.lines().find(|l| l.starts_with(&ids[2])).unwrap();
    assert!(v3_line.contains("rolled back"), "{out}");

    // v5: three good releases are v5, v4, v2; v1 goes, the rolled-back v3 is still one
    // of the three newest.
    repo.commit_version("5", &[]);
    deploy(&fl, "main", &[]);
    let r5 = f.currents()[0].clone();
    let expected = vec![ids[1].clone(), ids[2].clone(), ids[3].clone(), r5.clone()];
    assert_eq!(f.on_disk(0), sorted(expected));

    // `hoist rollback` marks the release it leaves.
    hoist_expect(0, &["rollback", "web", "--fleet", &fl]);
    assert_eq!(f.currents(), [ids[3].as_str(), ids[3].as_str()]);
    let json = releases_json(&fl);
    assert_eq!(release_row(&json, &r5)["outcome"], "rolled_back", "{json}");
}

#[tokio::test]
async fn dry_run_validates_and_shows_each_hosts_release_and_steps() {
    let Some(pg) = start_pg("dry_run_validates") else {
        return;
    };
    let pki = Pki::new();
    let repo = AppRepo::new_static(&[("index.html", "v\n")]);
    let v1 = repo.commit_version("1", &[]);
    // A second app with no migrate step.
    let plain = r#"
[[app]]
name = "plain"
repo = "REPO"
deploy_to = "{root}/{name}-plain"

[app.steps]
build = "true"
"#
    .replace("REPO", &repo.url());
    let f = fleet(&pki, &repo, &pg, 3, &plain).await;
    let fl = f.file("[deploy]\nstrategy = \"canary\"\ncanary = 1\nmigrate_on = \"first\"\n");

    // The truth: each host's release (one id, the commit in it) and steps in order.
    let (out, _) = hoist_expect(
        0,
        &[
            "deploy",
            "web",
            "--ref",
            "main",
            "--dry-run",
            "--fleet",
            &fl,
        ],
    );
    let would = format!("(commit {v1})");
    assert_eq!(out.matches(&would).count(), 3, "{out}");
    let id_of = |line: &str| {
        line.split("would get release ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .map(str::to_string)
    };
    let ids: Vec<String> = out.lines().filter_map(id_of).collect();
    assert_eq!(ids.len(), 3, "{out}");
    assert!(
        ids.iter().all(|id| *id == ids[0] && id.ends_with(&v1[..7])),
        "{ids:?}"
    );
    assert!(
        out.contains("steps: fetch, materialise, shared, build, migrate, switch, check not-sick"),
        "web-1 migrates: {out}"
    );
    assert_eq!(
        out.matches("steps: fetch, materialise, shared, build, switch, check not-sick")
            .count(),
        2,
        "the others do not: {out}"
    );
    assert!(out.contains("web-1 (migrates first, alone)"), "{out}");
    assert!(
        f.currents().iter().all(String::is_empty),
        "nothing deployed"
    );

    // An app without a migrate step is never said to migrate.
    let (out, _) = hoist_expect(
        0,
        &[
            "deploy",
            "plain",
            "--ref",
            "main",
            "--dry-run",
            "--fleet",
            &fl,
        ],
    );
    assert!(!out.contains("migrates first"), "{out}");
    assert!(out.contains("the app declares no migrate step"), "{out}");
    assert!(!out.contains("migrate,"), "{out}");

    // Refused, exit 1, with the reason: an unknown app, a ref no host has, a host down.
    let (out, err) = hoist_expect(
        1,
        &[
            "deploy",
            "nosuchapp",
            "--ref",
            "main",
            "--dry-run",
            "--fleet",
            &fl,
        ],
    );
    assert!(format!("{out}{err}").contains("nosuchapp"), "{out}{err}");
    let (out, err) = hoist_expect(
        1,
        &[
            "deploy",
            "web",
            "--ref",
            "nosuchref",
            "--dry-run",
            "--fleet",
            &fl,
        ],
    );
    assert!(err.contains("would be refused"), "{err}");
    assert!(
        format!("{out}{err}").contains("ref \"nosuchref\" is not a branch, tag or commit"),
        "{out}{err}"
    );
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let down = f.root.path().join("down.toml");
    std::fs::write(
        &down,
        format!(
            "{}{}\n[[host]]\nname = \"web-9\"\naddress = \"{dead_addr}\"\n",
            f.tls, f.hosts
        ),
    )
    .unwrap();
    let down = down.display().to_string();
    let (out, err) = hoist_expect(
        1,
        &[
            "deploy",
            "web",
            "--ref",
            "main",
            "--dry-run",
            "--fleet",
            &down,
            "--timeout",
            "2s",
        ],
    );
    assert!(
        out.contains("web-9: would not deploy: unreachable"),
        "{out}"
    );
    assert!(err.contains("web-9"), "{err}");

    // The real refusal says the same, before any change.
    bad_ref_is_refused_naming_the_fetch(&fl);
    assert!(f.currents().iter().all(String::is_empty));

    // Rollback dry runs: where each host would go, and how.
    deploy(&fl, "main", &[]);
    let r1 = f.currents()[0].clone();
    let v2 = repo.commit_version("2", &[]);
    deploy(&fl, "main", &[]);
    let (out, _) = hoist_expect(0, &["rollback", "web", "--dry-run", "--fleet", &fl]);
    let line =
        format!("would roll back to {r1} (commit {v1}), code only, no migration down, no restore");
    assert_eq!(out.matches(&line).count(), 3, "{out}");
    assert!(out.contains("steps: switch, check not-sick"), "{out}");
    let (out, err) = hoist_expect(
        1,
        &["rollback", "web", "--migrate", "--dry-run", "--fleet", &fl],
    );
    assert!(
        format!("{out}{err}").contains("this app declares no migrate_rollback step"),
        "{out}{err}"
    );
    let (out, err) = hoist_expect(
        1,
        &[
            "rollback",
            "web",
            "--restore-db",
            "--yes",
            "--dry-run",
            "--fleet",
            &fl,
        ],
    );
    // Refused either way: no host holds a backup, and the app declares no restore.
    let text = format!("{out}{err}");
    assert!(
        text.contains("no restore step") || text.contains("no selected host holds a backup"),
        "{text}"
    );
    let (_, err) = hoist_expect(
        1,
        &[
            "rollback",
            "web",
            "--to",
            "nosuch",
            "--dry-run",
            "--fleet",
            &fl,
        ],
    );
    assert!(
        err.contains("no release on this host matches \"nosuch\""),
        "{err}"
    );
    assert!(
        f.currents()[0].contains(&v2[..7]),
        "dry runs changed nothing"
    );
}

#[tokio::test]
async fn the_summary_names_the_step_that_failed() {
    let Some(pg) = start_pg("the_summary_names_the_step_that_failed") else {
        return;
    };
    let pki = Pki::new();
    let repo = AppRepo::new_static(&[("index.html", "v\n"), (".env.example", "APP_KEY=\n")]);
    repo.commit_version("1", &[]);
    // web-1's deploy_to is a small file system: too little room for a release.
    let root = tempfile::tempdir().unwrap();
    let small = root.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&small)
        .status()
        .is_ok_and(|s| s.success());
    struct Unmount(PathBuf, bool);
    impl Drop for Unmount {
        fn drop(&mut self) {
            if self.1 {
                let _ = Command::new("umount").arg(&self.0).status();
            }
        }
    }
    let _unmount = Unmount(small.clone(), mounted);
    let full = format!(
        r#"
[[app]]
name = "full"
repo = "{}"
deploy_to = "{}/full"
"#,
        repo.url(),
        small.display()
    );
    let f = fleet(&pki, &repo, &pg, 1, &full).await;
    let fl = f.file("[deploy]\nmigrate_on = \"first\"\n");
    std::fs::create_dir_all(f.deploy_tos[0].join("shared")).unwrap();
    std::fs::write(f.deploy_tos[0].join("shared/.env"), "OTHER=1\n").unwrap();
    // `web` declares no shared_files: its `shared` step still compares the release's
    // .env.example with shared/.env, and APP_KEY is missing there.
    let (_, err) = hoist_expect(1, &["deploy", "web", "--ref", "main", "--fleet", &fl]);
    assert!(
        err.contains("failed at step `shared` before migrating"),
        "{err}"
    );
    assert!(
        err.contains("shared/.env lacks keys that .env.example lists: APP_KEY"),
        "{err}"
    );
    assert!(!err.contains("ran the migrations"), "{err}");
    assert_eq!(
        pg.psql(DB, "SELECT count(*) FROM migrated").unwrap().trim(),
        "0",
        "nothing migrated"
    );

    // A bad ref: refused before any host starts, naming the fetch.
    bad_ref_is_refused_naming_the_fetch(&fl);

    // A full disk: the materialise step says so.
    if mounted {
        let (_, err) = hoist_expect(1, &["deploy", "full", "--ref", "main", "--fleet", &fl]);
        assert!(
            err.contains("failed at step `materialise`") || err.contains("materialise"),
            "{err}"
        );
        assert!(err.contains("MiB free under"), "{err}");
        assert!(!err.contains("ran the migrations"), "{err}");
    } else {
        assert!(
            std::env::var("HOIST_E2E").is_err(),
            "cannot mount a tmpfs for the full-disk case"
        );
    }
}
