//! `hoist demo`: the whole job on this machine with no setup. Makes a CA, a sample git
//! repo and three local agents on loopback ports they pick; deploys v1 everywhere, rolls
//! v2 out host by host, shows v3 failing its checks and being rolled back, prints
//! status and the deployment log, and stops everything it started.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::{agents::client, ca, commands::status, fleet, output::table};

const HOSTS: [&str; 3] = ["web-1", "web-2", "web-3"];
const START_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the demo started; stopped on drop, whatever happened.
struct Processes {
    agents: Vec<(String, Child)>,
    workers: Vec<Child>,
}

impl Drop for Processes {
    fn drop(&mut self) {
        for (_, agent) in &self.agents {
            let _ = kill(Pid::from_raw(agent.id() as i32), Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        for (name, agent) in &mut self.agents {
            loop {
                match agent.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() > deadline => {
                        eprintln!(
                            "hoist demo: {name} did not stop in {STOP_TIMEOUT:?}; killing it"
                        );
                        let _ = agent.kill();
                        let _ = agent.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
        for worker in &mut self.workers {
            let _ = worker.kill();
            let _ = worker.wait();
        }
    }
}

/// `hoistd` next to this `hoist` binary, else the one on PATH.
pub fn hoistd_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("hoistd")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("hoistd"))
}

fn agent_config(dir: &Path, certs: &Path, repo: &Path, worker_pidfile: &Path) -> String {
    format!(
        r#"# Written by `hoist demo`.
[agent]
listen = "127.0.0.1:0"
metrics_listen = "127.0.0.1:0"
state_dir = "{state}"
health_interval = "2s"

[tls]
ca = "{certs}/ca.pem"
cert = "{certs}/demo-agent.pem"
key = "{certs}/demo-agent.key"

[[app]]
name = "shop"
repo = "{repo}"
deploy_to = "{dir}/shop"
keep_releases = 5
shared_dirs = ["storage"]

[app.steps]
build = ["echo building version $(cat VERSION) of $HOIST_REF", "date > storage/last-build"]
after_switch = "echo now serving version $(cat VERSION)"

[[app.services]]
kind = "signal"
name = "shop-worker"
pidfile = "{pidfile}"
signal = "SIGHUP"
timeout = "10s"

[[app.checks]]
kind = "command"
name = "status"
command = 'test "$(cat STATUS)" = healthy || (echo "STATUS says $(cat STATUS)"; exit 1)'
retries = 2
interval = "200ms"
"#,
        state = dir.join("state").display(),
        certs = certs.display(),
        dir = dir.display(),
        repo = repo.display(),
        pidfile = worker_pidfile.display(),
    )
}

/// A sample app repository: v1 and v2 are healthy, v3 reports itself broken.
fn sample_repo(root: &Path) -> anyhow::Result<PathBuf> {
    let bare = root.join("shop.git");
    let work = root.join("shop-src");
    std::fs::create_dir_all(&work)?;
    let git = |dir: &Path, args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", root)
            .env("GIT_AUTHOR_NAME", "hoist demo")
            .env("GIT_AUTHOR_EMAIL", "demo@hoist.invalid")
            .env("GIT_COMMITTER_NAME", "hoist demo")
            .env("GIT_COMMITTER_EMAIL", "demo@hoist.invalid")
            .stdin(Stdio::null())
            .output()
            .context("cannot run git; the demo needs git installed")?;
        if !out.status.success() {
            bail!(
                "git {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    let bare_s = bare.display().to_string();
    git(
        root,
        &[
            "init",
            "--quiet",
            "--bare",
            "--initial-branch=main",
            &bare_s,
        ],
    )?;
    git(&work, &["init", "--quiet", "--initial-branch=main"])?;
    for (version, status) in [("1", "healthy"), ("2", "healthy"), ("3", "broken")] {
        std::fs::write(work.join("VERSION"), format!("{version}\n"))?;
        std::fs::write(work.join("STATUS"), format!("{status}\n"))?;
        std::fs::write(
            work.join("index.html"),
            format!("<h1>shop version {version}</h1>\n"),
        )?;
        git(&work, &["add", "-A"])?;
        git(
            &work,
            &["commit", "--quiet", "-m", &format!("shop v{version}")],
        )?;
        git(&work, &["tag", &format!("v{version}")])?;
    }
    git(&work, &["push", "--quiet", "--tags", &bare_s, "main"])?;
    Ok(bare)
}

/// Runs this same `hoist` binary with `args`, output straight to the terminal.
fn hoist(args: &[&str]) -> anyhow::Result<bool> {
    let exe = std::env::current_exe().context("cannot find the hoist binary")?;
    println!("\n$ hoist {}", args.join(" "));
    let status = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .status()
        .context("cannot run hoist")?;
    Ok(status.success())
}

fn current_of(dir: &Path) -> String {
    std::fs::read_link(dir.join("shop/current"))
        .ok()
        .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
}

fn wait_for_listen(state: &Path, agent: &mut Child, log: &Path) -> anyhow::Result<String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let file = state.join("listen");
    loop {
        if let Ok(text) = std::fs::read_to_string(&file)
            && let Some(addr) = text.lines().find_map(|l| l.strip_prefix("grpc="))
        {
            return Ok(addr.to_string());
        }
        if let Ok(Some(exit)) = agent.try_wait() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            bail!("hoistd exited ({exit}) before it was ready:\n{log}");
        }
        if Instant::now() > deadline {
            bail!(
                "hoistd was not ready within {START_TIMEOUT:?}; see {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub async fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let root = tempfile::Builder::new()
        .prefix("hoist-demo-")
        .tempdir()
        .context("cannot make a temporary directory")?
        .keep();
    let certs = root.join("certs");
    println!("==> hoist demo in {}", root.display());

    println!("==> making a fleet CA and certificates (hoist ca init / hoist ca issue)");
    ca::init(&certs, false)?;
    ca::issue_agent(
        &certs,
        "demo-agent",
        &["127.0.0.1".into(), "localhost".into()],
        30,
        false,
    )?;
    ca::issue_user(&certs, "demo-operator", ca::Role::Deployer, 30, false)?;
    println!("==> a sample app in git: v1 and v2 are healthy, v3 reports itself broken");
    let repo = sample_repo(&root)?;

    let hoistd = hoistd_binary();
    let mut procs = Processes {
        agents: Vec::new(),
        workers: Vec::new(),
    };
    let mut fleet_toml = format!(
        "[tls]\nca = \"{c}/ca.pem\"\ncert = \"{c}/demo-operator.pem\"\nkey = \"{c}/demo-operator.key\"\n\n\
         [deploy]\nstrategy = \"rolling\"\nbatch = 1\nbake = \"1s\"\nmax_unhealthy = 0\nmigrate_on = \"none\"\n",
        c = certs.display()
    );
    println!(
        "==> starting three agents ({}) on loopback",
        hoistd.display()
    );
    for name in HOSTS {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("state"))?;
        // The app's queue worker: a process that survives SIGHUP, like a daemon
        // reopening its logs.
        let pidfile = dir.join("worker.pid");
        let worker = Command::new("sh")
            .args(["-c", "trap '' HUP; while :; do sleep 1; done"])
            .stdin(Stdio::null())
            .spawn()
            .context("cannot start the demo worker (sh)")?;
        std::fs::write(&pidfile, format!("{}\n", worker.id()))?;
        procs.workers.push(worker);
        let config = dir.join("agent.toml");
        std::fs::write(&config, agent_config(&dir, &certs, &repo, &pidfile))?;
        let log = dir.join("hoistd.log");
        let agent = Command::new(&hoistd)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {}; build it with `cargo build --release` (it sits next to `hoist`)",
                    hoistd.display()
                )
            })?;
        procs.agents.push((name.to_string(), agent));
        let (_, agent) = procs.agents.last_mut().expect("just pushed");
        let addr = wait_for_listen(&dir.join("state"), agent, &log)?;
        println!("    {name}: hoistd pid {} on {addr}", agent.id());
        let _ = write!(
            fleet_toml,
            "\n[[host]]\nname = \"{name}\"\naddress = \"{addr}\"\ngroups = [\"web\"]\n"
        );
    }
    let fleet_path = root.join("fleet.toml");
    std::fs::write(&fleet_path, &fleet_toml)?;
    let fleet_s = fleet_path.display().to_string();
    let f = fleet_s.as_str();

    println!("\n==> 1. deploy v1 to every host at once");
    if !hoist(&[
        "deploy",
        "shop",
        "--ref",
        "v1",
        "--strategy",
        "all",
        "--fleet",
        f,
    ])? {
        bail!("deploying v1 failed; see the output above");
    }
    println!("\n==> 2. rolling deploy of v2, one host per batch, 1s bake after each");
    if !hoist(&["deploy", "shop", "--ref", "v2", "--fleet", f])? {
        bail!("deploying v2 failed; see the output above");
    }
    let v2: Vec<String> = HOSTS.iter().map(|h| current_of(&root.join(h))).collect();
    println!("\n==> 3. v3 fails its checks: the first host rolls back, the rollout stops");
    if hoist(&["deploy", "shop", "--ref", "v3", "--fleet", f])? {
        bail!("v3 was expected to fail its checks, but the deploy succeeded");
    }
    let now: Vec<String> = HOSTS.iter().map(|h| current_of(&root.join(h))).collect();
    if now != v2 {
        bail!("after v3 the hosts should serve v2 again; they serve {now:?}");
    }
    println!("\n==> every host serves v2 again");

    println!("\n==> 4. where things stand");
    let fleet = fleet::load(&fleet_path)?;
    let creds = client::Credentials::load(&fleet.tls)?;
    let hosts = fleet.select(&[], None)?;
    let reports = status::fetch(&hosts, &creds, "", Duration::from_secs(5), 8).await;
    println!("\n$ hoist status");
    print!("{}", status::render(&reports, table::use_colour()));
    if let Some(bad) = reports.iter().find_map(|r| r.result.as_ref().err()) {
        bail!("an agent did not answer: {bad}");
    }
    hoist(&[
        "log", "shop", "--hosts", "web-1", "--limit", "5", "--fleet", f,
    ])?;
    let mut client = client::connect(&hosts[0].address, &creds, Duration::from_secs(5))
        .await
        .map_err(|e| anyhow::anyhow!("web-1: {e}"))?;
    let jobs = client
        .job_log(hoist_proto::v1::JobLogRequest {
            app: "shop".into(),
            job_id: String::new(),
            limit: 1,
            ..Default::default()
        })
        .await
        .map_err(|s| anyhow::anyhow!("web-1: {}", client::status_error(&s)))?
        .into_inner()
        .jobs;
    if let Some(last) = jobs.first() {
        hoist(&[
            "log",
            "shop",
            "--job",
            &last.job_id,
            "--hosts",
            "web-1",
            "--fleet",
            f,
        ])?;
    }

    println!("\n==> where everything is");
    println!("    fleet file:   {}", fleet_path.display());
    println!("    certificates: {}", certs.display());
    println!("    app repo:     {}", repo.display());
    for name in HOSTS {
        println!(
            "    {name}: config {0}/agent.toml, log {0}/hoistd.log, releases {0}/shop/releases",
            root.join(name).display()
        );
    }
    println!("==> stopping the agents");
    drop(procs);
    println!(
        "==> done in {:.1}s; remove {} when you are finished looking",
        started.elapsed().as_secs_f64(),
        root.display()
    );
    Ok(())
}
