//! Fleet rollouts through the real `hoist` CLI against real agents on loopback: canary
//! promotion, a failing canary rolled back with later batches untouched, the budget
//! counted across batches, unreachable hosts, Prometheus gates fed by a real
//! Prometheus, deploy windows and `--force --reason`, lock contention between two
//! rollouts, webhooks, `--dry-run` and the fleet rollback.
//!
//! Every agent's app has a command check that fails while the file `sick-<host>` (or
//! `sick-<host>-v<VERSION>`, for one release only) exists in the test's flag
//! directory: created before a deploy, that host's deploy fails its checks (its agent
//! rolls it back); created once the host's deploy succeeded, the host turns unhealthy
//! during the bake.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use hoist_tests::{
    e2e,
    harness::{Agent, AgentBuilder, Pki, Who, bin, hoist},
    services::{git::AppRepo, http_health::HealthServer, promtool::Prometheus, webhook::Receiver},
};
use serde_json::Value;

struct Fleet {
    root: tempfile::TempDir,
    _agents: Vec<Agent>,
    hosts: String,
    tls: String,
    deploy_tos: Vec<PathBuf>,
}

impl Fleet {
    async fn start(pki: &Pki, repo: &AppRepo, count: usize) -> Fleet {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("flags")).unwrap();
        let mut agents = Vec::new();
        let mut hosts = String::new();
        let mut deploy_tos = Vec::new();
        for i in 1..=count {
            let name = format!("web-{i}");
            let deploy_to = root.path().join(&name);
            let app = format!(
                r#"
[[app]]
name = "web"
repo = "{}"
deploy_to = "{}"

[app.steps]
build = "echo building $HOIST_RELEASE"
migrate = "echo migrating"

[[app.checks]]
kind = "command"
name = "not-sick"
command = "test ! -e {flags}/sick-{name} && test ! -e {flags}/sick-{name}-v$(cat VERSION) || (echo {name} is sick; exit 1)"
retries = 1
"#,
                repo.url(),
                deploy_to.display(),
                flags = root.path().join("flags").display(),
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

    /// Writes a fleet file with the hosts, `extra` TOML after them, and returns its path.
    fn file(&self, name: &str, extra: &str) -> String {
        let path = self.root.path().join(name);
        std::fs::write(&path, format!("{}{}\n{extra}", self.tls, self.hosts)).unwrap();
        path.display().to_string()
    }

    /// Makes `host`'s check fail (or pass again): `sick-web-1` for any release,
    /// `sick-web-1-v3` only while a release of version 3 is current.
    fn sick(&self, flag: &str, sick: bool) {
        let flag = self.root.path().join("flags").join(format!("sick-{flag}"));
        if sick {
            std::fs::write(flag, "").unwrap();
        } else {
            let _ = std::fs::remove_file(flag);
        }
    }

    /// The commit of the release `current` points at on host `i` (0-based).
    fn current(&self, i: usize) -> Option<String> {
        current(&self.deploy_tos[i])
    }

    fn currents(&self) -> Vec<Option<String>> {
        (0..self.deploy_tos.len())
            .map(|i| self.current(i))
            .collect()
    }
}

/// The commit part of the release `current` points at (release ids are
/// `<UTC time>-<commit>[-<n>]`, made by each host at its own time).
fn current(deploy_to: &Path) -> Option<String> {
    std::fs::read_link(deploy_to.join("current")).ok().map(|t| {
        let release = t.file_name().unwrap().to_string_lossy().into_owned();
        release.split('-').nth(1).unwrap_or(&release).to_string()
    })
}

/// Runs `hoist` and fails with its output unless it exits with `code`.
fn hoist_expect(code: i32, args: &[&str]) -> (String, String) {
    let (status, out, err) = hoist(args);
    assert_eq!(
        status.code(),
        Some(code),
        "hoist {args:?}\n--- stdout\n{out}\n--- stderr\n{err}"
    );
    (out, err)
}

/// Runs `hoist`, calling `on_line` with every stdout line as it comes; returns the exit
/// code, stdout and stderr.
fn hoist_streaming(args: &[&str], mut on_line: impl FnMut(&str)) -> (i32, String, String) {
    let mut child = Command::new(bin("hoist"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hoist");
    let stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let mut out = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap_or_default();
        on_line(&line);
        out.push_str(&line);
        out.push('\n');
    }
    let status = child.wait().unwrap();
    (status.code().unwrap_or(-1), out, err.join().unwrap())
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The jobs in `host`'s journal for app web, newest first, as `hoist log --json` shows.
fn journal(fleet: &str, host: &str) -> Vec<Value> {
    let (out, _) = hoist_expect(
        0,
        &["log", "web", "--json", "--fleet", fleet, "--hosts", host],
    );
    let json: Value = serde_json::from_str(&out).unwrap();
    let entry = json["hosts"]
        .as_array()
        .and_then(|hosts| hosts.iter().find(|h| h["host"] == host))
        .unwrap_or_else(|| panic!("no {host} in {json}"))
        .clone();
    entry["jobs"].as_array().cloned().unwrap_or_default()
}

// === webhooks ===

fn dead_url() -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    format!("http://{addr}/hook")
}

// === tests ===

#[tokio::test]
async fn canary_promotion_dry_run_webhooks_and_fleet_rollback() {
    let pki = Pki::new();
    let repo = AppRepo::new_static(&[("index.html", "v\n")]);
    repo.commit_version("1", &[]);
    let f = Fleet::start(&pki, &repo, 4).await;
    let hooks = Receiver::start();
    let fl = f.file(
        "fleet.toml",
        &format!(
            "[deploy]\nstrategy = \"canary\"\ncanary = 1\nbatch = 2\nbake = \"1s\"\n\n\
             [notify]\nwebhooks = [\"{}\", \"{}\"]\n",
            dead_url(),
            hooks.url()
        ),
    );

    // v1 everywhere, all at once.
    hoist_expect(
        0,
        &[
            "deploy",
            "web",
            "--ref",
            "main",
            "--fleet",
            &fl,
            "--strategy",
            "all",
        ],
    );
    let v1 = f.current(0).unwrap();
    assert!(f.currents().iter().all(|c| c.as_deref() == Some(&v1)));
    // A dead webhook did not fail the deploy; the live one heard start and success.
    assert_eq!(hooks.events(), ["start", "success"], "{:?}", hooks.texts());

    // --dry-run prints the plan and changes nothing, not even a lock.
    repo.commit_version("2", &[]);
    let (out, _) = hoist_expect(
        0,
        &[
            "deploy",
            "web",
            "--ref",
            "main",
            "--fleet",
            &fl,
            "--dry-run",
        ],
    );
    assert!(
        out.contains("canary 1 then batches of 2; bake 1.0s after each"),
        "{out}"
    );
    assert!(
        out.contains("canary     web-1 (migrates first, alone)"),
        "{out}"
    );
    assert!(out.contains("batch 1/2  web-2, web-3"), "{out}");
    assert!(out.contains("batch 2/2  web-4"), "{out}");
    assert!(
        out.contains("nothing was changed and no lock was taken"),
        "{out}"
    );
    // It asked every host: each says what it serves now.
    let serving = std::fs::read_link(f.deploy_tos[0].join("current")).unwrap();
    let serving = serving.file_name().unwrap().to_string_lossy();
    assert!(
        out.contains(&format!("  web-1: ok, serving {serving}")),
        "{out}"
    );
    assert!(f.currents().iter().all(|c| c.as_deref() == Some(&v1)));
    assert_eq!(journal(&fl, "web-1").len(), 1, "dry run left no job");
    let (out, _) = hoist_expect(0, &["status", "web", "--json", "--fleet", &fl]);
    assert!(!out.contains("\"holder\""), "dry run left a lock: {out}");
    assert_eq!(hooks.events().len(), 2, "dry run notifies nobody");

    // A dry run tells the truth about what the real deploy would meet: an unknown app
    // on every host, or a lock someone holds, is a refusal (exit 1), with the reason.
    let (out, err) = hoist_expect(
        1,
        &[
            "deploy",
            "nosuchapp",
            "--ref",
            "main",
            "--fleet",
            &fl,
            "--dry-run",
        ],
    );
    assert!(
        out.contains("web-1: would not deploy: app nosuchapp is not configured here"),
        "{out}"
    );
    assert!(
        err.contains("would be refused") && err.contains("would fail"),
        "{err}"
    );
    hoist_expect(
        0,
        &["lock", "web", "--reason", "db maintenance", "--fleet", &fl],
    );
    let (out, err) = hoist_expect(
        1,
        &[
            "deploy",
            "web",
            "--ref",
            "main",
            "--fleet",
            &fl,
            "--dry-run",
        ],
    );
    hoist_expect(0, &["unlock", "web", "--fleet", &fl]);
    assert!(
        out.contains("would not deploy: locked by dana: db maintenance"),
        "{out}"
    );
    assert!(err.contains("--lock-wait"), "{err}");
    assert_eq!(journal(&fl, "web-1").len(), 1, "dry runs left no job");

    // The canary deploy: canary, bake, batches, each with a bake; web-1 migrates alone.
    let (out, _) = hoist_expect(
        0,
        &["deploy", "web", "--ref", "main", "--fleet", &fl, "--json"],
    );
    let events = json_lines(&out);
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .filter(|k| {
            [
                "plan",
                "locked",
                "batch_started",
                "bake_started",
                "bake_finished",
                "unlocked",
                "summary",
            ]
            .contains(k)
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "plan",
            "locked",
            "batch_started",
            "bake_started",
            "bake_finished",
            "batch_started",
            "bake_started",
            "bake_finished",
            "batch_started",
            "bake_started",
            "bake_finished",
            "unlocked",
            "summary"
        ],
        "{out}"
    );
    let batches: Vec<&Value> = events
        .iter()
        .filter(|e| e["kind"] == "batch_started")
        .collect();
    assert_eq!(batches[0]["phase"], "canary");
    assert_eq!(batches[0]["hosts"], serde_json::json!(["web-1"]));
    assert_eq!(batches[1]["hosts"], serde_json::json!(["web-2", "web-3"]));
    // The canary finished before any batch host started.
    let position = |pred: &dyn Fn(&Value) -> bool| events.iter().position(pred).unwrap();
    let canary_done = position(&|e| e["kind"] == "host_result" && e["host"] == "web-1");
    let batch_start = position(&|e| e["kind"] == "started" && e["host"] == "web-2");
    assert!(canary_done < batch_start, "{out}");
    let migrating: Vec<&str> = events
        .iter()
        .filter(|e| e["kind"] == "started" && e["migrate"] == true)
        .map(|e| e["host"].as_str().unwrap())
        .collect();
    assert_eq!(migrating, ["web-1"], "only the first host migrates");
    let summary = events.last().unwrap();
    assert_eq!(summary["kind"], "summary");
    assert_eq!(summary["ok"], true);
    let v2 = f.current(0).unwrap();
    assert_ne!(v2, v1);
    assert!(f.currents().iter().all(|c| c.as_deref() == Some(&v2)));
    assert_eq!(hooks.events(), ["start", "success", "start", "success"]);

    // The fleet rollback, batch by batch: back to v1 everywhere.
    let (out, _) = hoist_expect(
        0,
        &[
            "rollback",
            "web",
            "--fleet",
            &fl,
            "--strategy",
            "rolling",
            "--batch",
            "2",
        ],
    );
    assert!(out.contains("-- batch 1/2: web-1, web-2"), "{out}");
    assert!(out.contains("-- batch 2/2: web-3, web-4"), "{out}");
    assert!(
        f.currents().iter().all(|c| c.as_deref() == Some(&v1)),
        "{out}"
    );
    assert!(
        out.contains("rollback of web succeeded on web-1, web-2, web-3, web-4"),
        "{out}"
    );
}

#[tokio::test]
async fn failing_canary_rolls_everything_back_and_never_touches_later_batches() {
    let pki = Pki::new();
    let repo = AppRepo::new_static(&[("index.html", "v\n")]);
    repo.commit_version("1", &[]);
    let f = Fleet::start(&pki, &repo, 4).await;
    let hooks = Receiver::start();
    let fl = f.file(
        "fleet.toml",
        &format!(
            "[deploy]\nstrategy = \"canary\"\ncanary = 2\nbatch = 1\nbake = \"1500ms\"\n\
             max_unhealthy = 0\n\n[notify]\nwebhooks = [\"{}\"]\n",
            hooks.url()
        ),
    );
    hoist_expect(
        0,
        &[
            "deploy",
            "web",
            "--ref",
            "main",
            "--fleet",
            &fl,
            "--strategy",
            "all",
        ],
    );
    let v1 = f.current(0).unwrap();

    // v2: the canary is web-1 (migrates alone, succeeds) and web-2 (its checks fail).
    repo.commit_version("2", &[]);
    f.sick("web-2", true);
    let (out, err) = hoist_expect(1, &["deploy", "web", "--ref", "main", "--fleet", &fl]);
    f.sick("web-2", false);
    assert!(
        f.currents().iter().all(|c| c.as_deref() == Some(&v1)),
        "{out}"
    );
    assert!(
        out.contains("-- rolling back web-1 (switched by this deploy)"),
        "{out}"
    );
    assert!(
        !out.contains("-- batch 1/2"),
        "later batches never start: {out}"
    );
    assert!(
        err.contains("stopped: 1 failure(s), 0 tolerated (web-2: rolled back")
            && err.contains("rolled back web-1 to their previous releases")
            && err.contains("not started: web-3, web-4"),
        "{err}"
    );
    for host in ["web-3", "web-4"] {
        assert_eq!(journal(&fl, host).len(), 1, "{host} was never touched");
    }
    let web1 = journal(&fl, "web-1");
    assert_eq!(web1[0]["kind"], "rollback", "{web1:?}");
    assert_eq!(web1[0]["result"], "succeeded");
    // The rollback and failure messages go out together: either may arrive first.
    let mut events = hooks.events();
    events[3..].sort();
    assert_eq!(events, ["start", "success", "start", "failure", "rollback"]);
    assert!(
        hooks
            .texts()
            .iter()
            .any(|t| t.contains("rolled back web-1")),
        "{:?}",
        hooks.texts()
    );
    // The rollback message names who, the ref and what failed first, in its text.
    let rollback = hooks
        .texts()
        .into_iter()
        .find(|t| t.contains("rolled back web-1"))
        .unwrap();
    for part in [
        "by dana",
        "ref main → ",
        "failed: web-2: rolled back",
        "took ",
    ] {
        assert!(rollback.contains(part), "{part:?} not in {rollback}");
    }

    // A canary that deploys fine but turns unhealthy during the bake: rolled back too.
    repo.commit_version("3", &[]);
    let args = [
        "deploy", "web", "--ref", "main", "--fleet", &fl, "--canary", "1",
    ];
    let (code, out, err) = hoist_streaming(&args, |line| {
        if line.starts_with("==> web-1: succeeded") {
            f.sick("web-1-v3", true);
        }
    });
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("check not-sick failed during the bake: exit 1; output: web-1 is sick"),
        "{out}"
    );
    assert!(
        f.currents().iter().all(|c| c.as_deref() == Some(&v1)),
        "{out}"
    );
    assert!(!out.contains("==> web-2"), "{out}");
    assert!(err.contains("rolled back web-1"), "{err}");
}

#[tokio::test]
async fn the_budget_is_fleet_wide_and_unreachable_hosts_count() {
    let pki = Pki::new();
    let repo = AppRepo::new_static(&[("index.html", "v\n")]);
    repo.commit_version("1", &[]);
    let f = Fleet::start(&pki, &repo, 6).await;
    let dead = dead_url();
    let dead_addr = dead.trim_start_matches("http://").trim_end_matches("/hook");
    let fl = f.file(
        "fleet.toml",
        &format!(
            "[[host]]\nname = \"web-9\"\naddress = \"{dead_addr}\"\n\n\
             [deploy]\nstrategy = \"rolling\"\nbatch = 2\nmax_unhealthy = 1\n"
        ),
    );
    let six = "web-1,web-2,web-3,web-4,web-5,web-6";
    hoist_expect(
        0,
        &[
            "deploy",
            "web",
            "--ref",
            "main",
            "--fleet",
            &fl,
            "--hosts",
            six,
            "--strategy",
            "all",
        ],
    );
    let v1 = f.current(0).unwrap();

    // One failure per batch: within the budget after the first, over it after the second.
    repo.commit_version("2", &[]);
    f.sick("web-2", true);
    f.sick("web-4", true);
    let (out, err) = hoist_expect(
        1,
        &[
            "deploy", "web", "--ref", "main", "--fleet", &fl, "--hosts", six,
        ],
    );
    f.sick("web-2", false);
    f.sick("web-4", false);
    assert!(
        out.contains("budget: 1 failure(s) of 1 tolerated — web-2"),
        "{out}"
    );
    assert!(
        out.contains("budget: 2 failure(s) of 1 tolerated — web-4"),
        "{out}"
    );
    assert!(!out.contains("-- batch 3/3"), "{out}");
    assert!(
        f.currents().iter().all(|c| c.as_deref() == Some(&v1)),
        "{out}"
    );
    assert!(
        err.contains("stopped: 2 failure(s), 1 tolerated")
            && err.contains("rolled back web-1, web-3")
            && err.contains("not started: web-5, web-6"),
        "{err}"
    );
    for host in ["web-5", "web-6"] {
        assert_eq!(journal(&fl, host).len(), 1, "{host} was never touched");
    }

    // The host that runs the migrations fails: whatever the budget, no other host
    // starts (they would run against a schema that was never migrated).
    f.sick("web-1", true);
    let (out, err) = hoist_expect(
        1,
        &[
            "deploy", "web", "--ref", "main", "--fleet", &fl, "--hosts", six,
        ],
    );
    f.sick("web-1", false);
    assert!(
        err.contains("web-1 ran the migrations, then failed at step `")
            && err.contains("so no other host started"),
        "{err}"
    );
    assert!(!out.contains("==> web-2"), "{out}");
    assert!(
        f.currents().iter().all(|c| c.as_deref() == Some(&v1)),
        "{out}"
    );

    // A ref that does not exist: refused before any host starts (every host is asked
    // what the ref is first), naming the fetch, never blamed on migrations.
    let (out, err) = hoist_expect(
        1,
        &[
            "deploy",
            "web",
            "--ref",
            "no-such-ref",
            "--fleet",
            &fl,
            "--hosts",
            six,
        ],
    );
    assert!(
        err.contains("no-such-ref cannot be deployed on every host (web-1, web-2, web-3, web-4, web-5, web-6: fetch: ref \"no-such-ref\" is not a branch, tag or commit"),
        "{err}\n{out}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(!err.contains("migrations"), "{err}");

    // An unreachable host counts: within a budget of 1 the others deploy (exit 0)...
    let (out, _) = hoist_expect(
        0,
        &[
            "deploy",
            "web",
            "--ref",
            "main",
            "--fleet",
            &fl,
            "--hosts",
            "web-1,web-2,web-9",
        ],
    );
    assert!(
        out.contains("budget: 1 failure(s) of 1 tolerated — web-9: unreachable"),
        "{out}"
    );
    assert!(
        out.contains("completed with 1 failure(s) within the budget of 1: web-9: unreachable"),
        "{out}"
    );
    let v2 = f.current(0).unwrap();
    assert_ne!(v2, v1);
    assert_eq!(f.current(1), Some(v2.clone()));
    // ... and with no budget nothing changes at all.
    repo.commit_version("3", &[]);
    let (_, err) = hoist_expect(
        1,
        &[
            "deploy",
            "web",
            "--ref",
            "main",
            "--fleet",
            &fl,
            "--hosts",
            "web-1,web-9",
            "--max-unhealthy",
            "0",
        ],
    );
    assert!(err.contains("web-9: unreachable"), "{err}");
    assert_eq!(f.current(0), Some(v2));
}

#[tokio::test]
async fn gates_hold_or_stop_the_rollout_with_a_real_prometheus() {
    if e2e::require(
        "prometheus",
        "prometheus",
        "gates_hold_or_stop_the_rollout_with_a_real_prometheus",
    )
    .is_none()
    {
        return;
    }
    let pki = Pki::new();
    let repo = AppRepo::new_static(&[("index.html", "v\n")]);
    repo.commit_version("1", &[]);
    let f = Fleet::start(&pki, &repo, 2).await;
    let target = HealthServer::start().await;
    let metrics = |ratio: &str| {
        format!(
            "# HELP app_error_ratio Share of failed requests.\n# TYPE app_error_ratio gauge\napp_error_ratio {ratio}\n"
        )
    };
    target.set_metrics(&metrics("0.001"));
    let prometheus = Prometheus::start(&[target.addr().to_string()]).unwrap();
    let scraped = |want: &'static str| {
        let prometheus = &prometheus;
        async move {
            e2e::eventually(
                &format!("Prometheus to scrape {want}"),
                Duration::from_secs(30),
                || async move {
                    let result = prometheus.query("app_error_ratio")?;
                    match result[0]["value"][1].as_str() {
                        Some(v) if v == want => Ok(()),
                        other => Err(anyhow::anyhow!("not yet: {other:?}")),
                    }
                },
            )
            .await
        }
    };
    scraped("0.001").await;
    let fleet_with = |name: &str, query: &str| {
        f.file(
            name,
            &format!(
                "[deploy]\nstrategy = \"rolling\"\nbatch = 1\nbake = \"1s\"\n\n\
                 [[gate]]\nprometheus = \"{}\"\nquery = '{query}'\nmax = 0.01\n",
                prometheus.url()
            ),
        )
    };
    let fl = fleet_with("fleet.toml", "max(app_error_ratio{job=\"hoist\"})");

    // The gate holds: every batch passes its bake.
    let (out, _) = hoist_expect(
        0,
        &["deploy", "web", "--ref", "main", "--fleet", &fl, "--json"],
    );
    let gates: Vec<Value> = json_lines(&out)
        .into_iter()
        .filter(|e| e["kind"] == "gate")
        .collect();
    assert!(gates.len() >= 4, "start and end of two bakes: {out}");
    assert!(
        gates.iter().all(|g| g["ok"] == true && g["value"] == 0.001),
        "{gates:?}"
    );
    let v1 = f.current(0).unwrap();

    // The error ratio climbs: the first batch's bake fails, web-1 is rolled back, web-2
    // is never touched.
    target.set_metrics(&metrics("0.5"));
    scraped("0.5").await;
    repo.commit_version("2", &[]);
    let (out, err) = hoist_expect(1, &["deploy", "web", "--ref", "main", "--fleet", &fl]);
    assert!(
        out.contains("gate max(app_error_ratio{job=\"hoist\"}) <= 0.01: 0.5, over the max"),
        "{out}"
    );
    assert!(
        err.contains("gate max(app_error_ratio{job=\"hoist\"}) <= 0.01: 0.5, over the max"),
        "{err}"
    );
    assert_eq!(f.currents(), [Some(v1.clone()), Some(v1.clone())], "{out}");
    assert!(!out.contains("==> web-2"), "{out}");

    // A gate that cannot be evaluated (no such series) is a failure, not a pass.
    target.set_metrics(&metrics("0.001"));
    scraped("0.001").await;
    let fl = fleet_with("empty.toml", "app_error_ratio_that_does_not_exist");
    let (_, err) = hoist_expect(1, &["deploy", "web", "--ref", "main", "--fleet", &fl]);
    assert!(err.contains("the query returned no data"), "{err}");
    assert!(
        err.contains("append `or vector(0)` to the query, or set on_empty = \"pass\""),
        "{err}"
    );
    assert_eq!(f.current(0), Some(v1.clone()));

    // The runbook's error ratio before the first 5xx: empty. A named gate with
    // on_empty = "pass" holds, and the bake shows the name, not the PromQL (which the
    // plan and the JSON keep).
    let ratio = "sum(rate(app_http_5xx_total[5m])) / sum(rate(app_http_total[5m]))";
    let named = f.file(
        "named.toml",
        &format!(
            "[deploy]\nstrategy = \"rolling\"\nbatch = 1\nbake = \"1s\"\n\n\
             [[gate]]\nname = \"Error rate < 1%\"\nprometheus = \"{}\"\nquery = '{ratio}'\n\
             max = 0.01\non_empty = \"pass\"\n",
            prometheus.url()
        ),
    );
    let (out, err) = hoist_expect(0, &["deploy", "web", "--ref", "main", "--fleet", &named]);
    assert!(
        out.contains("gate Error rate < 1%: no data (ok: on_empty = \"pass\")"),
        "{out}{err}"
    );
    assert!(
        out.lines()
            .filter(|l| l.contains("gate Error rate < 1%"))
            .all(|l| !l.contains("app_http_5xx_total")),
        "bake lines name the gate, not its query:\n{out}"
    );
    assert_ne!(f.current(0), Some(v1));
    repo.commit_version("3", &[]);
    let (out, _) = hoist_expect(
        0,
        &[
            "deploy", "web", "--ref", "main", "--fleet", &named, "--json",
        ],
    );
    let gates: Vec<Value> = json_lines(&out)
        .into_iter()
        .filter(|e| e["kind"] == "gate")
        .collect();
    assert!(
        !gates.is_empty()
            && gates.iter().all(|g| g["name"] == "Error rate < 1%"
                && g["query"] == ratio
                && g["ok"] == true
                && g["value"].is_null()),
        "{gates:?}"
    );

    // The same ratio `or vector(0)`: a value, 0, without on_empty.
    let zero = fleet_with("zero.toml", &format!("({ratio}) or vector(0)"));
    repo.commit_version("4", &[]);
    let (out, _) = hoist_expect(
        0,
        &["deploy", "web", "--ref", "main", "--fleet", &zero, "--json"],
    );
    assert!(
        json_lines(&out)
            .iter()
            .filter(|e| e["kind"] == "gate")
            .all(|g| g["ok"] == true && g["value"] == 0.0),
        "{out}"
    );
}

#[tokio::test]
async fn windows_refuse_and_force_with_a_reason_is_recorded() {
    let pki = Pki::new();
    let repo = AppRepo::new_static(&[("index.html", "v\n")]);
    repo.commit_version("1", &[]);
    let f = Fleet::start(&pki, &repo, 2).await;
    let hooks = Receiver::start();
    // Yesterday, today and tomorrow (UTC) are blackout days: closed whatever the hour.
    let day = |offset: i64| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let out = Command::new("date")
            .args([
                "-u",
                "-d",
                &format!("@{}", now + offset * 86_400),
                "+%Y-%m-%d",
            ])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let fl = f.file(
        "fleet.toml",
        &format!(
            "[window]\nallow = [\"Mon-Sun 00:00-24:00\"]\ntimezone = \"Asia/Dhaka\"\n\
             blackout = [\"{}\", \"{}\", \"{}\", \"{}\"]\n\n[notify]\nwebhooks = [\"{}\"]\n",
            day(-1),
            day(0),
            day(1),
            day(2),
            hooks.url()
        ),
    );
    let (out, err) = hoist_expect(1, &["deploy", "web", "--ref", "main", "--fleet", &fl]);
    assert!(
        err.contains("refused: outside the deploy window: closed:"),
        "{err}"
    );
    assert!(err.contains("is a blackout day"), "{err}");
    assert!(err.contains("the next window opens"), "{err}");
    assert!(
        out.contains("window: closed:"),
        "the plan shows the verdict: {out}"
    );
    assert_eq!(f.currents(), [None, None]);
    for host in ["web-1", "web-2"] {
        let jobs = journal(&fl, host);
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        assert_eq!(jobs[0]["result"], "refused");
        assert!(
            jobs[0]["error"]
                .as_str()
                .unwrap()
                .contains("outside the deploy window")
        );
    }
    assert_eq!(hooks.events(), ["refusal"]);

    // --force needs --reason (a usage error, before anything is sent).
    hoist_expect(
        2,
        &["deploy", "web", "--ref", "main", "--fleet", &fl, "--force"],
    );
    let (out, _) = hoist_expect(
        0,
        &[
            "deploy",
            "web",
            "--ref",
            "main",
            "--fleet",
            &fl,
            "--force",
            "--reason",
            "hotfix 42",
        ],
    );
    assert!(out.contains("overridden by --force"), "{out}");
    assert!(f.currents().iter().all(Option::is_some));
    for host in ["web-1", "web-2"] {
        let jobs = journal(&fl, host);
        assert_eq!(jobs[0]["kind"], "deploy");
        assert_eq!(jobs[0]["forced"], true, "{jobs:?}");
        assert_eq!(jobs[0]["reason"], "hotfix 42", "{jobs:?}");
    }
    let (out, _) = hoist_expect(0, &["log", "web", "--fleet", &fl, "--hosts", "web-1"]);
    assert!(out.contains("forced: hotfix 42"), "{out}");
    assert_eq!(hooks.events(), ["refusal", "start", "success"]);
}

#[tokio::test]
async fn two_rollouts_at_once_one_wins_and_the_other_fails_clean() {
    let pki = Pki::new();
    let repo = AppRepo::new_static(&[("index.html", "v\n")]);
    repo.commit_version("1", &[]);
    let f = Fleet::start(&pki, &repo, 3).await;
    let fl = f.file(
        "fleet.toml",
        "[deploy]\nstrategy = \"rolling\"\nbatch = 1\nbake = \"1s\"\n",
    );
    hoist_expect(
        0,
        &[
            "deploy",
            "web",
            "--ref",
            "main",
            "--fleet",
            &fl,
            "--strategy",
            "all",
            "--bake",
            "0s",
        ],
    );
    repo.commit_version("2", &[]);

    // The first rollout holds every lock for its whole run (three bakes of 1s)...
    let (fl2, fl3) = (fl.clone(), fl.clone());
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let first = std::thread::spawn(move || {
        hoist_streaming(
            &["deploy", "web", "--ref", "main", "--fleet", &fl2],
            |line| {
                if line.starts_with("locked web on") {
                    let _ = locked_tx.send(());
                }
            },
        )
    });
    locked_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the first rollout locks");
    // ... a rollout that may wait for the locks gets them once the first is done...
    let third = std::thread::spawn(move || {
        hoist_streaming(
            &[
                "deploy",
                "web",
                "--ref",
                "main",
                "--fleet",
                &fl3,
                "--lock-wait",
                "60s",
                "--bake",
                "0s",
            ],
            |_| {},
        )
    });
    // ... and one that may not fails at once and changes nothing.
    let (second, out, err) = hoist_streaming(
        &["deploy", "web", "--ref", "main", "--fleet", &fl, "--json"],
        |_| {},
    );
    assert_eq!(second, 1, "{out}{err}");
    assert!(err.contains("cannot lock web on web-1:"), "{err}");
    assert!(err.contains("locked by dana"), "{err}");
    assert!(
        err.contains("nothing was changed and no lock is left behind"),
        "{err}"
    );
    assert!(
        !json_lines(&out).iter().any(|e| e["kind"] == "started"),
        "{out}"
    );
    let (code, out, err) = first.join().unwrap();
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = third.join().unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        err.contains("waiting up to 1m00s for the lock on web-1 (")
            && err.contains("locked by dana"),
        "{err}"
    );
    assert_eq!(
        err.matches("for the lock on web-1").count(),
        1,
        "said once, not once per retry: {err}"
    );
    let v3 = f.current(0).unwrap();
    assert!(f.currents().iter().all(|c| c.as_deref() == Some(&v3)));
    // The loser's job ids appear in no journal.
    for host in ["web-1", "web-2", "web-3"] {
        let jobs = journal(&fl, host);
        assert_eq!(jobs.len(), 3, "v1, the winner and the waiter: {jobs:?}");
    }
}
