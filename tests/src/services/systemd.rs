//! A real systemd: a minimal Debian 12 root made once with `debootstrap` and cached
//! under [`CACHE`], copied per run and booted with
//! `systemd-nspawn --boot --register=no --keep-unit` (no private network, so loopback
//! is shared with the host). Commands run inside through
//! `nsenter --target <init> --mount --pid`. On drop the container is powered off
//! (SIGKILL to its init if it does not stop in time) and the copy removed.

use std::{
    fs,
    os::unix::fs::{PermissionsExt as _, symlink},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tempfile::TempDir;

use crate::{e2e, harness::Pki};

/// The cached Debian root; built (into a temp dir, renamed when complete) when missing.
pub const CACHE: &str = "/var/cache/hoist-tests/bookworm-systemd-git";
const MIRROR: &str = "http://deb.debian.org/debian";
const DEBOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(900);
const BOOT_TIMEOUT: Duration = Duration::from_secs(60);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(20);
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
const AGENT_TIMEOUT: Duration = Duration::from_secs(20);
const AGENT_STATE: &str = "/var/lib/hoist";
/// Where the agent package is copied in the container before `apt-get install`.
const AGENT_DEB: &str = "/root/hoist-agent.deb";
const INSTALL_TIMEOUT: Duration = Duration::from_secs(120);
/// The agent config inside the container.
pub const AGENT_CONFIG: &str = "/etc/hoist/agent.toml";

/// A file written into the container's root before it boots.
#[derive(Clone, Debug)]
pub struct RootFile {
    /// Absolute path inside the container.
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
}

impl RootFile {
    pub fn new(path: &str, contents: impl Into<Vec<u8>>) -> Self {
        RootFile {
            path: path.into(),
            contents: contents.into(),
            mode: 0o644,
        }
    }

    pub fn executable(path: &str, contents: impl Into<Vec<u8>>) -> Self {
        RootFile {
            mode: 0o755,
            ..RootFile::new(path, contents)
        }
    }
}

/// What a [`Container`] boots with.
#[derive(Clone, Debug, Default)]
pub struct Setup {
    pub files: Vec<RootFile>,
    /// Units enabled (linked into `multi-user.target.wants`) before boot.
    pub enable: Vec<String>,
    /// Read-only binds, `(host path, path inside)`.
    pub bind_ro: Vec<(PathBuf, String)>,
    /// A network namespace to boot in (default: the host's network, loopback shared).
    pub netns: Option<PathBuf>,
}

/// A network namespace of the test's own with a veth pair to the host: the host side
/// is `10.213.N.1/30`, the namespace side `10.213.N.2/30`, so a container booted in it
/// is a separate host reachable at [`Netns::addr`]. Removed on drop.
pub struct Netns {
    name: String,
    host_if: String,
    index: u8,
}

impl Netns {
    pub fn create(index: u8) -> anyhow::Result<Netns> {
        let pid = std::process::id();
        let netns = Netns {
            name: format!("hoist-t{pid}-{index}"),
            host_if: format!("vh{}x{index}", pid % 100_000),
            index,
        };
        let peer = format!("vc{}x{index}", pid % 100_000);
        let host_ip = format!("10.213.{index}.1/30");
        let ns_ip = format!("10.213.{index}.2/30");
        let name = netns.name.as_str();
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", name],
            vec![
                "link",
                "add",
                &netns.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
            ],
            vec!["link", "set", &peer, "netns", name],
            vec!["addr", "add", &host_ip, "dev", &netns.host_if],
            vec!["link", "set", &netns.host_if, "up"],
            vec!["-n", name, "addr", "add", &ns_ip, "dev", &peer],
            vec!["-n", name, "link", "set", &peer, "up"],
            vec!["-n", name, "link", "set", "lo", "up"],
        ];
        for args in steps {
            let out = e2e::run_with_timeout(Command::new("ip").args(&args), None, COMMAND_TIMEOUT)?;
            ensure!(
                out.status.success(),
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(netns)
    }

    /// The namespace's address, as the host reaches it.
    pub fn addr(&self) -> String {
        format!("10.213.{}.2", self.index)
    }

    /// `/run/netns/NAME`, for `systemd-nspawn --network-namespace-path`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// The tools a systemd test needs: `Some` when present; otherwise `None` after
/// printing SKIPPED (or a panic under `HOIST_E2E=1`), as [`e2e::require`] does. Also
/// needs root, which `systemd-nspawn` and writing [`CACHE`] require.
pub fn require(test: &str) -> Option<()> {
    e2e::require("systemd-nspawn", "systemd-container", test)?;
    e2e::require("debootstrap", "debootstrap", test)?;
    e2e::require("nsenter", "util-linux", test)?;
    if nix::unistd::Uid::effective().is_root() {
        return Some(());
    }
    let message = format!("{test}: systemd-nspawn needs root");
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

/// Whether `root` is a complete root with systemd.
fn complete(root: &Path) -> bool {
    root.join("etc/os-release").is_file()
        && root.join("usr/lib/systemd/systemd").is_file()
        && root.join("usr/bin/git").is_file()
}

/// The cached Debian 12 root with systemd, made with debootstrap when missing. A build
/// goes to a temp dir renamed into place when complete, so a killed build leaves no
/// half root behind; a concurrent build that finished first wins.
pub fn cached_root() -> anyhow::Result<PathBuf> {
    let cache = PathBuf::from(CACHE);
    if complete(&cache) {
        return Ok(cache);
    }
    let parent = cache.parent().context("cache has a parent")?;
    fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    let build = tempfile::Builder::new()
        .prefix("bookworm-systemd.build-")
        .tempdir_in(parent)
        .context("temp dir for debootstrap")?;
    let target = build.path().join("root");
    let started = Instant::now();
    let out = e2e::run_with_timeout(
        Command::new(e2e::find_tool("debootstrap").context("debootstrap not found")?)
            .args([
                "--variant=minbase",
                // git: hoist-agent depends on it, and `apt-get install ./hoist-agent.deb`
                // in the container must not need the network.
                "--include=systemd,systemd-sysv,dbus,git",
                "bookworm",
            ])
            .arg(&target)
            .arg(MIRROR),
        None,
        DEBOOTSTRAP_TIMEOUT,
    )?;
    ensure!(
        out.status.success() && complete(&target),
        "debootstrap {} failed ({}):\n{}{}",
        target.display(),
        out.status,
        tail(&String::from_utf8_lossy(&out.stdout), 30),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        format!(
            "built {CACHE} with debootstrap in {:?}\n",
            started.elapsed()
        )
        .as_bytes(),
    );
    if let Err(err) = fs::rename(&target, &cache) {
        // Another run finished first: use its root, drop ours with the temp dir.
        ensure!(complete(&cache), "rename to {CACHE}: {err}");
    }
    Ok(cache)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A booted systemd container; powered off and removed on drop.
pub struct Container {
    dir: TempDir,
    machine: String,
    nspawn: Option<Child>,
    /// The container's init (its systemd), as the host sees it.
    init: i32,
}

impl Container {
    /// Copies the cached root, writes `setup`'s files, boots it and waits until
    /// `systemctl is-system-running --wait` answers `running` or `degraded`.
    pub fn boot(setup: &Setup) -> anyhow::Result<Container> {
        let cache = cached_root()?;
        let dir = tempfile::Builder::new()
            .prefix("hoist-systemd-")
            .tempdir()
            .context("tempdir")?;
        let root = dir.path().join("root");
        let out = e2e::run_with_timeout(
            Command::new("cp")
                .args(["-a", "--reflink=auto"])
                .arg(&cache)
                .arg(&root),
            None,
            Duration::from_secs(120),
        )?;
        ensure!(
            out.status.success(),
            "copy {CACHE}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for file in &setup.files {
            let path = inside(&root, &file.path);
            fs::create_dir_all(path.parent().context("file has a parent")?)?;
            fs::write(&path, &file.contents).with_context(|| format!("write {}", file.path))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(file.mode))?;
        }
        let wants = root.join("etc/systemd/system/multi-user.target.wants");
        fs::create_dir_all(&wants)?;
        for unit in &setup.enable {
            symlink(format!("/etc/systemd/system/{unit}"), wants.join(unit))
                .with_context(|| format!("enable {unit}"))?;
        }

        static BOOTED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let machine = format!(
            "hoist-test-{}-{}",
            std::process::id(),
            BOOTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let log = fs::File::create(dir.path().join("nspawn.log"))?;
        let mut cmd = Command::new(e2e::find_tool("systemd-nspawn").context("no nspawn")?);
        cmd.args([
            "--boot",
            "--register=no",
            "--keep-unit",
            "--console=read-only",
        ])
        .arg(format!("--directory={}", root.display()))
        .arg(format!("--machine={machine}"));
        if let Some(netns) = &setup.netns {
            cmd.arg(format!("--network-namespace-path={}", netns.display()));
        }
        for (host, path) in &setup.bind_ro {
            cmd.arg(format!("--bind-ro={}:{path}", host.display()));
        }
        let nspawn = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawn systemd-nspawn")?;
        let mut container = Container {
            dir,
            machine,
            nspawn: Some(nspawn),
            init: 0,
        };
        container.wait_booted()?;
        Ok(container)
    }

    fn wait_booted(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + BOOT_TIMEOUT;
        let nspawn_pid = self.nspawn.as_ref().context("nspawn running")?.id();
        let mut last = String::new();
        loop {
            if let Some(Ok(Some(status))) = self.nspawn.as_mut().map(Child::try_wait) {
                bail!(
                    "systemd-nspawn exited with {status} while booting:\n{}",
                    self.log_text()
                );
            }
            if self.init == 0 {
                self.init = init_child(nspawn_pid).unwrap_or(0);
            }
            if self.init != 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.exec_timeout(&["systemctl", "is-system-running", "--wait"], left) {
                    Ok(out) => {
                        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
                        if state == "running" || state == "degraded" {
                            return Ok(());
                        }
                        last = format!("{state}{}", String::from_utf8_lossy(&out.stderr));
                    }
                    Err(err) => last = err.to_string(),
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not booted within {BOOT_TIMEOUT:?} (last: {last}):\n{}",
                    self.machine,
                    self.log_text()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn machine(&self) -> &str {
        &self.machine
    }

    /// The container's root as the host sees it.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// A path inside the container, as the host sees it.
    pub fn path(&self, inside_path: &str) -> PathBuf {
        inside(&self.root(), inside_path)
    }

    /// The console output of the boot (systemd-nspawn's stdout and stderr).
    pub fn log_text(&self) -> String {
        fs::read_to_string(self.dir.path().join("nspawn.log")).unwrap_or_default()
    }

    /// Runs `argv` inside the container (its mount and pid namespaces).
    pub fn exec(&self, argv: &[&str]) -> anyhow::Result<Output> {
        self.exec_timeout(argv, COMMAND_TIMEOUT)
    }

    pub fn exec_timeout(&self, argv: &[&str], timeout: Duration) -> anyhow::Result<Output> {
        ensure!(self.init != 0, "{} has no init yet", self.machine);
        e2e::run_with_timeout(
            Command::new("nsenter")
                .arg(format!("--target={}", self.init))
                .args(["--mount", "--pid", "--"])
                .args(argv),
            None,
            timeout,
        )
    }

    /// `systemctl ARGS` inside the container; its stdout, or an error with its output.
    pub fn systemctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut argv = vec!["systemctl", "--no-pager"];
        argv.extend(args);
        let out = self.exec(&argv)?;
        ensure!(
            out.status.success(),
            "systemctl {args:?} in {}: {}: {}{}",
            self.machine,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// One property of `unit` (`systemctl show --value -p PROP`).
    pub fn property(&self, unit: &str, prop: &str) -> anyhow::Result<String> {
        Ok(self
            .systemctl(&["show", "--value", "-p", prop, "--", unit])?
            .trim()
            .to_string())
    }

    /// The unit's `MainPID`; 0 when it has none.
    pub fn main_pid(&self, unit: &str) -> anyhow::Result<u32> {
        let pid = self.property(unit, "MainPID")?;
        pid.parse().with_context(|| format!("MainPID {pid:?}"))
    }

    fn poweroff(&mut self) {
        let Some(mut nspawn) = self.nspawn.take() else {
            return;
        };
        if self.init != 0
            && matches!(nspawn.try_wait(), Ok(None))
            && self
                .exec_timeout(&["systemctl", "poweroff"], KILL_TIMEOUT)
                .is_ok()
            && e2e::wait_bounded(&mut nspawn, POWEROFF_TIMEOUT).is_some()
        {
            return;
        }
        // Killing a pid namespace's init kills everything in it.
        if self.init != 0 {
            let _ = kill(Pid::from_raw(self.init), Signal::SIGKILL);
        }
        if e2e::wait_bounded(&mut nspawn, KILL_TIMEOUT).is_none() {
            let _ = nspawn.kill();
            let _ = e2e::wait_bounded(&mut nspawn, KILL_TIMEOUT);
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        self.poweroff();
    }
}

fn inside(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

/// The child of `parent` that is the container's systemd.
fn init_child(parent: u32) -> Option<i32> {
    fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        let stat = fs::read_to_string(entry.path().join("stat")).ok()?;
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let (comm, rest) = stat.rsplit_once(')')?;
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == parent && comm.ends_with("(systemd")).then_some(pid)
    })
}

/// A `hoistd` running inside a [`Container`] as the unit `hoistd.service`, with the
/// agent certificate of `pki`, listening on `127.0.0.1:0` (loopback is shared).
pub struct ContainerAgent {
    pub container: Container,
    pub grpc: String,
}

impl ContainerAgent {
    /// Boots a container with `setup` plus hoistd (bind-mounted from the workspace's
    /// build), its config (`apps` appended to it) and certificates, starts
    /// `hoistd.service` and waits for its `listen` file.
    pub fn start(pki: &Pki, apps: &str, setup: Setup) -> anyhow::Result<ContainerAgent> {
        Self::start_as(pki, "agent", "127.0.0.1:0", apps, setup)
    }

    /// [`ContainerAgent::start`] with the agent certificate `NAME.pem` of `pki`'s CA
    /// (see [`Pki::issue_agent`]) and `listen` as the gRPC address.
    pub fn start_as(
        pki: &Pki,
        name: &str,
        listen: &str,
        apps: &str,
        mut setup: Setup,
    ) -> anyhow::Result<ContainerAgent> {
        let ca = pki.ca_dir();
        for (from, to) in [
            ("ca.pem".to_string(), "ca.pem"),
            (format!("{name}.pem"), "agent.pem"),
            (format!("{name}.key"), "agent.key"),
        ] {
            let contents = fs::read(ca.join(&from)).with_context(|| format!("read {from}"))?;
            setup
                .files
                .push(RootFile::new(&format!("/etc/hoist/{to}"), contents));
        }
        setup
            .files
            .push(RootFile::new(AGENT_CONFIG, agent_config_on(listen, apps)));
        let deb = agent_deb()?;
        setup.files.push(RootFile::new(
            AGENT_DEB,
            fs::read(&deb).context("read the agent package")?,
        ));
        let container = Container::boot(&setup)?;
        // As an operator installs it: the package's own unit, postinst and conffile
        // handling (the config written above is kept, as config management would).
        let out = container.exec_timeout(
            &[
                "env",
                "DEBIAN_FRONTEND=noninteractive",
                "apt-get",
                "install",
                "-y",
                "-o",
                "Dpkg::Options::=--force-confold",
                AGENT_DEB,
            ],
            INSTALL_TIMEOUT,
        )?;
        ensure!(
            out.status.success(),
            "apt-get install {AGENT_DEB} in {}: {}\n{}{}",
            container.machine(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // postinst started it (config and certificates are in place); make sure.
        container.systemctl(&["start", "hoistd.service"])?;
        let listen = container.path(&format!("{AGENT_STATE}/listen"));
        let deadline = Instant::now() + AGENT_TIMEOUT;
        loop {
            if let Ok(text) = fs::read_to_string(&listen)
                && let Some(grpc) = text.lines().find_map(|l| l.strip_prefix("grpc="))
            {
                return Ok(ContainerAgent {
                    grpc: grpc.to_string(),
                    container,
                });
            }
            let state = container.property("hoistd.service", "ActiveState")?;
            if Instant::now() > deadline || state == "failed" || state == "inactive" {
                bail!(
                    "hoistd in {} not ready (hoistd.service {state}):\n{}",
                    container.machine(),
                    journal(&container)
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The agent's log: its unit's journal, as `journalctl -o cat` prints it.
    pub fn log_text(&self) -> String {
        journal(&self.container)
    }

    /// Replaces the agent's config file (the next start or reload reads it).
    pub fn write_config(&self, text: &str) -> anyhow::Result<()> {
        let path = self.container.path(AGENT_CONFIG);
        fs::write(&path, text).with_context(|| format!("write {}", path.display()))
    }

    /// The `grpc=` address the running agent recorded, if it did.
    pub fn listen(&self) -> Option<String> {
        let text =
            fs::read_to_string(self.container.path(&format!("{AGENT_STATE}/listen"))).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("grpc="))
            .map(String::from)
    }
}

/// The `hoist-agent` package built from the workspace's binaries by
/// `packaging/build-debs --debug --no-build` (once per test process), or the one
/// `HOIST_AGENT_DEB` names (CI's release package).
pub fn agent_deb() -> anyhow::Result<PathBuf> {
    static DEB: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    DEB.get_or_init(|| build_agent_deb().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_agent_deb() -> anyhow::Result<PathBuf> {
    if let Some(deb) = std::env::var_os("HOIST_AGENT_DEB") {
        return Ok(deb.into());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/build-debs");
    let out_dir = std::env::temp_dir().join(format!("hoist-debs-{}", std::process::id()));
    let out = e2e::run_with_timeout(
        Command::new(&script)
            .args(["--debug", "--no-build", "--no-lintian", "--bin-dir"])
            .arg(crate::harness::bin_dir())
            .arg("--out")
            .arg(&out_dir),
        None,
        INSTALL_TIMEOUT,
    )?;
    ensure!(
        out.status.success(),
        "{} failed ({}):\n{}{}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    fs::read_dir(&out_dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("hoist-agent_"))
        })
        .with_context(|| format!("no hoist-agent_*.deb in {}", out_dir.display()))
}

/// The agent config the container runs with: loopback on port 0, the fleet
/// certificates under `/etc/hoist`, and `apps`.
pub fn agent_config(apps: &str) -> String {
    agent_config_on("127.0.0.1:0", apps)
}

/// [`agent_config`] listening on `listen`.
pub fn agent_config_on(listen: &str, apps: &str) -> String {
    format!(
        "[agent]\nlisten = \"{listen}\"\nmetrics_listen = \"127.0.0.1:0\"\nstate_dir = \"{AGENT_STATE}\"\nhealth_interval = \"1s\"\n\n[tls]\nca = \"/etc/hoist/ca.pem\"\ncert = \"/etc/hoist/agent.pem\"\nkey = \"/etc/hoist/agent.key\"\n\n{apps}\n"
    )
}

/// `journalctl -u hoistd.service -o cat` inside the container.
fn journal(container: &Container) -> String {
    match container.exec(&[
        "journalctl",
        "--no-pager",
        "-o",
        "cat",
        "-u",
        "hoistd.service",
    ]) {
        Ok(out) => format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(err) => format!("(no journal: {err})"),
    }
}
