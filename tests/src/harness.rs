//! Starts real `hoistd` processes for tests: certificates made with the real `hoist ca`
//! commands, configs written to a temp dir, listeners on ports the agent picks
//! (`127.0.0.1:0`), readiness read from the agent's `state_dir/listen` file.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use hoist_proto::v1::agent_client::AgentClient;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tempfile::TempDir;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Directory holding the workspace's built binaries (`hoistd`, `hoist`).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HOIST_BIN_DIR") {
        return dir.into();
    }
    // Test executables live in target/<profile>/deps; the binaries one level up.
    let exe = std::env::current_exe().expect("current_exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of a workspace binary; panics with the fix when it is not built.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is not built; run `cargo build --workspace --bins` (or `cargo test --workspace`, which builds it)",
        path.display()
    );
    path
}

/// Runs the real `hoist` CLI and returns (status, stdout, stderr).
pub fn hoist(args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(bin("hoist"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run hoist");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs the real `hoist` CLI like [`hoist`], but kills it when it has not ended
/// within `deadline` (so a hang fails the test instead of hanging CI); `None` then.
/// Its output is read as it comes, so a lot of it does not block the CLI.
pub fn hoist_within(deadline: Duration, args: &[&str]) -> Option<(ExitStatus, String, String)> {
    use std::io::Read as _;
    let mut child = Command::new(bin("hoist"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hoist");
    let read = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let out = read(Box::new(child.stdout.take().expect("stdout")));
    let err = read(Box::new(child.stderr.take().expect("stderr")));
    let end = Instant::now() + deadline;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    status.map(|status| (status, out, err))
}

/// `text` cut to its first and last 2,000 characters (for messages about big output).
pub fn shorten(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= 4000 {
        return text.to_string();
    }
    let head: String = chars[..2000].iter().collect();
    let tail: String = chars[chars.len() - 2000..].iter().collect();
    format!("{head}\n[… {} characters …]\n{tail}", chars.len() - 4000)
}

fn hoist_ok(args: &[&str]) {
    let (status, out, err) = hoist(args);
    assert!(status.success(), "hoist {args:?} failed: {out}{err}");
}

/// Who a test connects as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// No client certificate at all.
    Anonymous,
    /// A deployer certificate from a CA the agent does not trust.
    Foreign,
    Viewer,
    Deployer,
    /// A certificate from the right CA without any role (an agent's own cert).
    NoRole,
}

/// A fleet CA with an agent certificate for 127.0.0.1 and one user per role, plus a
/// second, foreign CA — all made by `hoist ca`.
pub struct Pki {
    pub dir: TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca");
        let foreign = dir.path().join("foreign");
        let (ca_s, foreign_s) = (ca.to_str().unwrap(), foreign.to_str().unwrap());
        hoist_ok(&["ca", "init", ca_s]);
        hoist_ok(&[
            "ca",
            "issue",
            "--ca",
            ca_s,
            "--agent",
            "agent",
            "--san",
            "127.0.0.1",
            "localhost",
        ]);
        hoist_ok(&[
            "ca", "issue", "--ca", ca_s, "--user", "vera", "--role", "viewer",
        ]);
        hoist_ok(&[
            "ca", "issue", "--ca", ca_s, "--user", "dana", "--role", "deployer",
        ]);
        hoist_ok(&["ca", "init", foreign_s]);
        hoist_ok(&[
            "ca", "issue", "--ca", foreign_s, "--user", "mallory", "--role", "deployer",
        ]);
        Pki { dir }
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    /// Issues `NAME.pem`/`NAME.key`, an agent certificate for `sans`, in [`Pki::ca_dir`].
    pub fn issue_agent(&self, name: &str, sans: &[&str]) {
        let ca = self.ca_dir();
        let mut args = vec![
            "ca",
            "issue",
            "--ca",
            ca.to_str().unwrap(),
            "--agent",
            name,
            "--san",
        ];
        args.extend(sans);
        hoist_ok(&args);
    }

    /// (cert, key) paths for `who`, or None for an anonymous caller.
    pub fn identity(&self, who: Who) -> Option<(PathBuf, PathBuf)> {
        let (dir, name) = match who {
            Who::Anonymous => return None,
            Who::Foreign => (self.dir.path().join("foreign"), "mallory"),
            Who::Viewer => (self.ca_dir(), "vera"),
            Who::Deployer => (self.ca_dir(), "dana"),
            Who::NoRole => (self.ca_dir(), "agent"),
        };
        Some((
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        ))
    }

    /// A `[tls]` section for a fleet file as `who`.
    pub fn fleet_tls(&self, who: Who) -> String {
        let (cert, key) = self.identity(who).expect("fleet files need an identity");
        format!(
            "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            self.ca_dir().join("ca.pem").display(),
            cert.display(),
            key.display()
        )
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds an agent config and starts `hoistd` with it.
pub struct AgentBuilder<'a> {
    pki: &'a Pki,
    health_interval: String,
    apps: String,
    extra_agent: String,
    env: Vec<(String, String)>,
}

impl<'a> AgentBuilder<'a> {
    pub fn new(pki: &'a Pki) -> Self {
        AgentBuilder {
            pki,
            health_interval: "1s".into(),
            apps: String::new(),
            extra_agent: String::new(),
            env: Vec::new(),
        }
    }

    pub fn health_interval(mut self, interval: &str) -> Self {
        self.health_interval = interval.into();
        self
    }

    /// Appends raw TOML (`[[app]]` tables) to the config.
    pub fn apps(mut self, toml: &str) -> Self {
        self.apps.push_str(toml);
        self.apps.push('\n');
        self
    }

    /// Extra keys for the `[agent]` table.
    pub fn agent_keys(mut self, toml: &str) -> Self {
        self.extra_agent.push_str(toml);
        self.extra_agent.push('\n');
        self
    }

    /// An extra environment variable for the spawned `hoistd` (kept across
    /// [`Agent::restart`]); its tools (`docker`, `supervisorctl`, ...) inherit it.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn config_text(&self, dir: &Path) -> String {
        let ca = self.pki.ca_dir();
        format!(
            "[agent]\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\nhealth_interval = \"{}\"\n{}\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\n{}",
            dir.join("state").display(),
            self.health_interval,
            self.extra_agent,
            ca.join("ca.pem").display(),
            ca.join("agent.pem").display(),
            ca.join("agent.key").display(),
            self.apps,
        )
    }

    pub async fn start(self) -> Agent {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("agent.toml");
        std::fs::write(&config, self.config_text(dir.path())).expect("write config");
        Agent::start(dir, config, self.env)
            .await
            .expect("start hoistd")
    }
}

/// A running `hoistd`; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Agent {
    pub dir: TempDir,
    pub config: PathBuf,
    pub grpc: String,
    pub metrics: Option<String>,
    pub log: PathBuf,
    child: Option<Child>,
    env: Vec<(String, String)>,
}

impl Agent {
    async fn start(
        dir: TempDir,
        config: PathBuf,
        env: Vec<(String, String)>,
    ) -> anyhow::Result<Agent> {
        let log = dir.path().join("hoistd.log");
        let child = Command::new(bin("hoistd"))
            .arg("--config")
            .arg(&config)
            .env("HOIST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("spawn hoistd")?;
        let mut agent = Agent {
            grpc: String::new(),
            metrics: None,
            log,
            config,
            child: Some(child),
            dir,
            env,
        };
        let listen = agent.dir.path().join("state/listen");
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&listen)
                && let Some(grpc) = text.lines().find_map(|l| l.strip_prefix("grpc="))
            {
                agent.grpc = grpc.to_string();
                agent.metrics = text
                    .lines()
                    .find_map(|l| l.strip_prefix("metrics="))
                    .map(String::from);
                return Ok(agent);
            }
            if let Some(Ok(Some(status))) = agent.child.as_mut().map(|c| c.try_wait()) {
                bail!(
                    "hoistd exited with {status} before ready:\n{}",
                    agent.log_text()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "hoistd not ready within {READY_TIMEOUT:?}:\n{}",
                    agent.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts a new hoistd on the same config and state (after `stop` or a kill).
    pub async fn restart(mut self) -> Agent {
        self.stop();
        let _ = std::fs::remove_file(self.dir.path().join("state/listen"));
        let old_log = self.log_text();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        let env = std::mem::take(&mut self.env);
        let agent = Agent::start(dir, self.config.clone(), env)
            .await
            .expect("restart hoistd");
        let _ = std::fs::write(agent.dir.path().join("hoistd.previous.log"), old_log);
        agent
    }

    /// Sends SIGHUP and waits until the agent logs the reload; panics with the log if it
    /// refused the new config.
    pub async fn reload(&self) {
        let before = self.log_text().matches("config reloaded").count();
        let refused_before = self.log_text().matches("reload refused").count();
        self.signal(Signal::SIGHUP);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let log = self.log_text();
            if log.matches("config reloaded").count() > before {
                return;
            }
            assert!(
                log.matches("reload refused").count() == refused_before,
                "hoistd refused the new config:\n{log}"
            );
            assert!(
                Instant::now() < deadline,
                "no reload within {READY_TIMEOUT:?}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    /// The agent's resident memory now and its peak so far, in KiB (VmRSS and VmHWM
    /// from /proc/PID/status).
    pub fn memory_kib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("signal hoistd");
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return None;
                }
            }
        }
    }

    /// Connects as `who`; returns the transport error as text when refused.
    pub async fn connect(&self, pki: &Pki, who: Who) -> Result<AgentClient<Channel>, String> {
        connect(&self.grpc, pki, who).await
    }

    /// GET /metrics over plain HTTP.
    pub async fn scrape(&self) -> anyhow::Result<String> {
        let addr = self.metrics.as_ref().context("metrics disabled")?;
        http_get(addr, "/metrics").await
    }

    /// A fleet file (as `who`) naming this agent `name`.
    pub fn fleet_entry(&self, name: &str) -> String {
        format!(
            "\n[[host]]\nname = \"{name}\"\naddress = \"{}\"\n",
            self.grpc
        )
    }

    /// Writes `dir/fleet.toml`: `[tls]` as `who` and this agent as `web-1`; returns its
    /// path.
    pub fn one_host_fleet(&self, pki: &Pki, who: Who, dir: &Path) -> String {
        let fleet = dir.join("fleet.toml");
        std::fs::write(
            &fleet,
            format!("{}{}", pki.fleet_tls(who), self.fleet_entry("web-1")),
        )
        .expect("write fleet.toml");
        fleet.display().to_string()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Opens an mTLS client to `addr` as `who`.
pub async fn connect(addr: &str, pki: &Pki, who: Who) -> Result<AgentClient<Channel>, String> {
    channel(addr, pki, who).await.map(AgentClient::new)
}

/// Opens an mTLS channel to `addr` as `who`.
pub async fn channel(addr: &str, pki: &Pki, who: Who) -> Result<Channel, String> {
    channel_with(addr, pki, pki.identity(who)).await
}

/// Opens an mTLS client to `addr` with the certificate and key in `identity` (e.g. one
/// issued by a test into the fleet CA's directory).
pub async fn connect_with(
    addr: &str,
    pki: &Pki,
    identity: Option<(PathBuf, PathBuf)>,
) -> Result<AgentClient<Channel>, String> {
    channel_with(addr, pki, identity)
        .await
        .map(AgentClient::new)
}

async fn channel_with(
    addr: &str,
    pki: &Pki,
    identity: Option<(PathBuf, PathBuf)>,
) -> Result<Channel, String> {
    let ca = std::fs::read(pki.ca_dir().join("ca.pem")).map_err(|e| e.to_string())?;
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("127.0.0.1");
    if let Some((cert, key)) = identity {
        let cert = std::fs::read(cert).map_err(|e| e.to_string())?;
        let key = std::fs::read(key).map_err(|e| e.to_string())?;
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| error_chain(&e))
}

pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A minimal HTTP/1.0 GET for plain-text endpoints.
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await??;
    let text = String::from_utf8(buf)?;
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("GET {path}: {head}");
    }
    Ok(body.to_string())
}

/// The `user`/`group` lines of an `[[app]]` whose hooks and tasks run as `nobody` when
/// the tests run as root (as an agent's apps would), and nothing otherwise.
pub fn app_user_lines() -> &'static str {
    if nix::unistd::Uid::effective().is_root() {
        "user = \"nobody\"\ngroup = \"nogroup\"\n"
    } else {
        ""
    }
}

/// A `deploy_to` that a release was switched to (`releases/1`, `current` → it), for
/// tests of background checks, which the agent runs only once an app is deployed.
pub fn deployed_dir() -> TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("releases/1")).expect("releases/1");
    std::os::unix::fs::symlink("releases/1", dir.path().join("current")).expect("current");
    dir
}
