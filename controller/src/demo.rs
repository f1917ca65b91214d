//! `hoist demo`: the whole job on this machine with no setup. Makes a CA, starts three
//! local agents on loopback ports they pick, shows `hoist status`, and stops them.

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

use crate::{ca, client, fleet, status, table};

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

fn agent_config(dir: &Path, certs: &Path, worker_pidfile: &Path) -> String {
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
repo = "{dir}/repo.git"
deploy_to = "{dir}/shop"

[[app.services]]
kind = "signal"
name = "shop-worker"
pidfile = "{pidfile}"
signal = "SIGHUP"

[[app.checks]]
kind = "command"
name = "disk-writable"
command = "test -w {dir}"
"#,
        state = dir.join("state").display(),
        certs = certs.display(),
        dir = dir.display(),
        pidfile = worker_pidfile.display(),
    )
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

    let hoistd = hoistd_binary();
    let mut procs = Processes {
        agents: Vec::new(),
        workers: Vec::new(),
    };
    let mut fleet_toml = format!(
        "[tls]\nca = \"{c}/ca.pem\"\ncert = \"{c}/demo-operator.pem\"\nkey = \"{c}/demo-operator.key\"\n",
        c = certs.display()
    );
    println!(
        "==> starting three agents ({}) on loopback",
        hoistd.display()
    );
    for (i, name) in HOSTS.iter().enumerate() {
        let dir = root.join(name);
        std::fs::create_dir_all(dir.join("state"))?;
        let pidfile = dir.join("worker.pid");
        // web-3's worker is never started, so status has something to point at.
        if i < 2 {
            let worker = Command::new("sleep")
                .arg("3600")
                .stdin(Stdio::null())
                .spawn()
                .context("cannot start the demo worker (sleep)")?;
            std::fs::write(&pidfile, format!("{}\n", worker.id()))?;
            procs.workers.push(worker);
        }
        let config = dir.join("agent.toml");
        std::fs::write(&config, agent_config(&dir, &certs, &pidfile))?;
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
    let fleet = fleet::load(&fleet_path)?;
    let creds = client::Credentials::load(&fleet.tls)?;
    let hosts = fleet.select(&[], None)?;

    // Wait (bounded) until every agent has run its checks once, so the table is real.
    println!("==> hoist status --fleet {}", fleet_path.display());
    let deadline = Instant::now() + START_TIMEOUT;
    let reports = loop {
        let reports = status::fetch(&hosts, &creds, "", Duration::from_secs(5), 8).await;
        let settled = reports.iter().all(|r| {
            r.result
                .as_ref()
                .is_ok_and(|s| s.apps.iter().all(|a| a.checks.iter().all(|c| c.has_run)))
        });
        if settled || Instant::now() > deadline {
            break reports;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!();
    print!("{}", status::render(&reports, table::use_colour()));
    println!();
    if let Some(bad) = reports.iter().find_map(|r| r.result.as_ref().err()) {
        bail!("an agent did not answer: {bad}");
    }
    println!("==> where everything is");
    println!("    fleet file:   {}", fleet_path.display());
    println!("    certificates: {}", certs.display());
    for name in HOSTS {
        println!(
            "    {name}: config {0}/agent.toml, log {0}/hoistd.log",
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
