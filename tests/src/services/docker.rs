//! A real, private Docker engine for the end-to-end tests: our own `dockerd` (with the
//! `containerd` it starts) in a temp dir under `/tmp`, on its own unix socket, never the
//! system service. There is no registry and no network: images are made locally from
//! a busybox rootfs with `docker import`, and there is no bridge network, so containers
//! run with `network_mode: none` or `host`.
//!
//! Dropping a [`Docker`] removes its containers, stops the daemon (SIGTERM, a bounded
//! wait, then SIGKILL), unmounts whatever it left mounted under its dir and removes it.

use std::{
    os::unix::{fs::PermissionsExt as _, process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use nix::{
    sys::signal::{Signal, kill},
    unistd::{Pid, Uid},
};
use tempfile::TempDir;

use crate::e2e;

/// How long the daemon may take to answer `docker info`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one `docker` CLI run may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the daemon may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// `sockaddr_un.sun_path` holds 108 bytes including the terminating NUL; containerd's
/// socket lives deeper in the dir than the daemon's.
const MAX_SOCKET_PATH: usize = 100;
/// Storage drivers tried in order: overlay2 is fast; vfs (plain copies) works on any
/// file system, e.g. where overlay mounts are not allowed.
const STORAGE_DRIVERS: [&str; 2] = ["overlay2", "vfs"];
/// The CMD an image gets from [`Docker::import_image`].
pub const DEFAULT_CMD: &str = "exec sleep 3600";

/// A running private `dockerd`.
pub struct Docker {
    dir: TempDir,
    socket: PathBuf,
    cli: PathBuf,
    storage_driver: &'static str,
    child: Option<Child>,
}

impl Docker {
    /// Starts a private `dockerd` (overlay2, falling back to vfs) and waits until
    /// `docker info` answers. Needs root, `dockerd` and `docker` (apt-get install
    /// docker.io).
    pub fn start() -> anyhow::Result<Docker> {
        let dockerd =
            e2e::find_tool("dockerd").context("dockerd not found (apt-get install docker.io)")?;
        let cli =
            e2e::find_tool("docker").context("docker not found (apt-get install docker.io)")?;
        ensure!(
            Uid::effective().is_root(),
            "a private dockerd needs root (running as uid {})",
            Uid::effective()
        );
        let dir = tempfile::Builder::new()
            .prefix("hd-")
            .tempdir_in("/tmp")
            .context("create a dir under /tmp")?;
        let socket = dir.path().join("docker.sock");
        ensure!(
            dir.path()
                .join("exec/containerd/containerd.sock")
                .as_os_str()
                .len()
                <= MAX_SOCKET_PATH,
            "{} is too long a path for unix sockets",
            dir.path().display()
        );
        std::fs::create_dir_all(dir.path().join("cli"))?;
        // The daemon reads no /etc/docker/daemon.json: only the flags below count.
        std::fs::write(dir.path().join("daemon.json"), "{}\n")?;

        let mut docker = Docker {
            dir,
            socket,
            cli,
            storage_driver: STORAGE_DRIVERS[0],
            child: None,
        };
        let mut failures = Vec::new();
        for driver in STORAGE_DRIVERS {
            docker.storage_driver = driver;
            match docker
                .spawn_daemon(&dockerd)
                .and_then(|()| docker.wait_ready())
            {
                Ok(()) => return Ok(docker),
                Err(err) => {
                    failures.push(format!("with --storage-driver={driver}: {err:#}"));
                    docker.stop_daemon();
                    docker.unmount_all();
                }
            }
        }
        bail!("dockerd did not start:\n{}", failures.join("\n"))
    }

    fn spawn_daemon(&mut self, dockerd: &Path) -> anyhow::Result<()> {
        let dir = self.dir.path();
        let driver = self.storage_driver;
        // A namespace of our own in case dockerd finds a system containerd to use.
        let namespace = format!(
            "hoist-{}",
            dir.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("hd")
                .replace(|c: char| !c.is_ascii_alphanumeric(), "")
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(dockerd)
            .arg("--config-file")
            .arg(dir.join("daemon.json"))
            .arg("--data-root")
            .arg(dir.join(format!("data-{driver}")))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("--host")
            .arg(self.host())
            .args([
                "--storage-driver",
                driver,
                "--iptables=false",
                "--ip6tables=false",
                "--ip-masq=false",
                "--bridge=none",
                "--exec-opt",
                "native.cgroupdriver=cgroupfs",
                "--shutdown-timeout",
                "5",
                "--containerd-namespace",
                &namespace,
                "--containerd-plugins-namespace",
                &format!("{namespace}-plugins"),
            ])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("spawn dockerd")?;
        self.child = Some(child);
        Ok(())
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut delay = Duration::from_millis(50);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                bail!(
                    "dockerd exited with {status} before ready:\n{}",
                    self.log_tail()
                );
            }
            let last = match self.docker(&["info", "--format", "{{.ServerVersion}}"]) {
                Ok(_) => return Ok(()),
                Err(err) => format!("{err:#}"),
            };
            if Instant::now() > deadline {
                bail!(
                    "dockerd not ready within {READY_TIMEOUT:?}; last `docker info`: {last}\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(delay);
            delay = (delay * 3 / 2).min(Duration::from_millis(250));
        }
    }

    /// The `DOCKER_HOST` value for this engine, e.g. `unix:///tmp/hd-AbC123/docker.sock`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The storage driver the daemon runs with (`overlay2` or `vfs`).
    pub fn storage_driver(&self) -> &str {
        self.storage_driver
    }

    /// The dir holding the daemon's data, state, socket and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("dockerd.log")
    }

    /// The daemon's log (both containerd's and dockerd's lines).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// A `docker` CLI command against this engine (and no user CLI config).
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.cli);
        cmd.env("DOCKER_HOST", self.host())
            .env("DOCKER_CONFIG", self.dir.path().join("cli"))
            .env_remove("DOCKER_CONTEXT")
            .env_remove("DOCKER_TLS_VERIFY")
            .env_remove("DOCKER_CERT_PATH");
        cmd
    }

    /// Runs `docker ARGS...` against this engine; its stdout, or an error with the
    /// command and both outputs when it fails.
    pub fn docker(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = e2e::run_with_timeout(self.command().args(args), None, CLI_TIMEOUT)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        ensure!(
            out.status.success(),
            "docker {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(stdout)
    }

    /// Imports a busybox image tagged `tag` whose CMD is [`DEFAULT_CMD`]; see
    /// [`Docker::import_image_with_cmd`].
    pub fn import_image(&self, tag: &str, files: &[(&str, &str)]) -> anyhow::Result<()> {
        self.import_image_with_cmd(tag, files, DEFAULT_CMD)
    }

    /// Builds a rootfs of the host's static busybox (`/bin/busybox` with a symlink per
    /// applet in `/bin`: `sh`, `sleep`, `httpd`, ...), `/etc/passwd` and `/etc/group`
    /// (root, nobody), `/tmp` and the `files` (path relative to `/`, content; a content
    /// starting with `#!` is made executable), and `docker import`s it as `tag` with
    /// `CMD ["/bin/sh", "-c", cmd]`.
    pub fn import_image_with_cmd(
        &self,
        tag: &str,
        files: &[(&str, &str)],
        cmd: &str,
    ) -> anyhow::Result<()> {
        let busybox = static_busybox()?;
        let build = tempfile::Builder::new()
            .prefix("image")
            .tempdir_in(self.dir.path())?;
        let root = build.path().join("rootfs");
        for sub in ["bin", "etc", "tmp", "proc", "sys", "dev", "root"] {
            std::fs::create_dir_all(root.join(sub))?;
        }
        std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
        std::fs::copy(&busybox, root.join("bin/busybox")).context("copy busybox")?;
        std::fs::set_permissions(
            root.join("bin/busybox"),
            std::fs::Permissions::from_mode(0o755),
        )?;
        let list = e2e::run_with_timeout(Command::new(&busybox).arg("--list"), None, CLI_TIMEOUT)?;
        ensure!(list.status.success(), "busybox --list failed");
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            let applet = applet.trim();
            if !applet.is_empty() && applet != "busybox" && !applet.contains('/') {
                std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
            }
        }
        let base = [
            (
                "etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
            ),
            ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ];
        for (path, content) in base.iter().chain(files) {
            ensure!(
                !Path::new(path).is_absolute() && !path.split('/').any(|p| p == ".."),
                "{path:?} must be a relative path inside the image"
            );
            let file = root.join(path);
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&file, content).with_context(|| format!("write {path}"))?;
            let mode = if content.starts_with("#!") {
                0o755
            } else {
                0o644
            };
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))?;
        }
        let tar = build.path().join("rootfs.tar");
        let out = e2e::run_with_timeout(
            Command::new("tar")
                .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
                .arg(&root)
                .arg("-cf")
                .arg(&tar)
                .arg("."),
            None,
            CLI_TIMEOUT,
        )?;
        ensure!(
            out.status.success(),
            "tar failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cmd = serde_json::to_string(&["/bin/sh", "-c", cmd])?;
        let tar = tar.to_str().context("non-UTF-8 temp path")?;
        self.docker(&["import", "--change", &format!("CMD {cmd}"), tar, tag])?;
        Ok(())
    }

    /// The full id of the one running container of compose `project`'s `service`
    /// (by compose's labels); `None` when none or more than one is running.
    pub fn container_id(&self, project: &str, service: &str) -> Option<String> {
        let ids = self.compose_containers(project, service, false).ok()?;
        match ids.as_slice() {
            [id] => Some(id.clone()),
            _ => None,
        }
    }

    /// Full ids of compose `project`'s `service` containers (not one-off `compose run`
    /// containers): running ones, or all with `all`.
    pub fn compose_containers(
        &self,
        project: &str,
        service: &str,
        all: bool,
    ) -> anyhow::Result<Vec<String>> {
        let project = format!("label=com.docker.compose.project={project}");
        let service = format!("label=com.docker.compose.service={service}");
        let mut args = vec!["ps", "--no-trunc", "--quiet"];
        if all {
            args.push("--all");
        }
        args.extend([
            "--filter",
            &project,
            "--filter",
            &service,
            "--filter",
            "label=com.docker.compose.oneoff=False",
        ]);
        Ok(self
            .docker(&args)?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect())
    }

    /// `docker inspect --format FORMAT ID`, trimmed.
    pub fn inspect(&self, id: &str, format: &str) -> anyhow::Result<String> {
        Ok(self
            .docker(&["inspect", "--format", format, id])?
            .trim()
            .to_string())
    }

    /// The image (as named when the container was made, e.g. `hoist-test/app:v1`) a
    /// container runs.
    pub fn container_image(&self, id: &str) -> anyhow::Result<String> {
        self.inspect(id, "{{.Config.Image}}")
    }

    /// Removes every container, running or not.
    pub fn remove_all_containers(&self) -> anyhow::Result<()> {
        let ids = self.docker(&["ps", "--all", "--quiet", "--no-trunc"])?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "--force", "--volumes"];
            args.extend(ids);
            self.docker(&args)?;
        }
        Ok(())
    }

    /// SIGTERM to dockerd, a bounded wait, then SIGKILL to its process group and to
    /// the containerd it started (which runs in a session of its own).
    fn stop_daemon(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let containerd = self.containerd_pid();
        e2e::terminate_group(&mut child, STOP_TIMEOUT);
        if let Some(pid) = containerd
            && self.is_ours(pid)
        {
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.is_ours(pid) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(50));
            }
            if self.is_ours(pid) {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
    }

    fn containerd_pid(&self) -> Option<Pid> {
        let text =
            std::fs::read_to_string(self.dir.path().join("exec/containerd/containerd.pid")).ok()?;
        text.trim().parse().ok().map(Pid::from_raw)
    }

    /// Whether `pid` is alive and was started for this engine (its command line names
    /// this engine's dir).
    fn is_ours(&self, pid: Pid) -> bool {
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        let dir = self.dir.path().as_os_str().as_encoded_bytes();
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // A zombie is already gone for our purposes.
        let zombie = state
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        !zombie && cmdline.windows(dir.len()).any(|w| w == dir)
    }

    /// Lazily unmounts everything mounted under this engine's dir (overlay rootfs
    /// mounts, the data root's bind mount, network namespace files), deepest first.
    fn unmount_all(&self) {
        for mount in mounts_under(self.dir.path()) {
            let _ = e2e::run_with_timeout(
                Command::new("umount").arg("--lazy").arg(&mount),
                None,
                Duration::from_secs(10),
            );
        }
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        if self.child.is_some()
            && let Err(err) = self.remove_all_containers()
        {
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("warning: removing the test containers: {err:#}\n").as_bytes(),
            );
        }
        self.stop_daemon();
        self.unmount_all();
    }
}

/// Mount points at or under `dir` in this process's mount namespace, deepest first.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|path| path.starts_with(dir))
        .collect();
    mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    mounts.dedup();
    mounts
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(code) = bytes
                .get(i + 1..i + 4)
                .and_then(|d| std::str::from_utf8(d).ok())
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        {
            out.push(code);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The host's busybox, when it is a static binary (busybox-static) that runs in an
/// image without a libc.
fn static_busybox() -> anyhow::Result<PathBuf> {
    let busybox =
        e2e::find_tool("busybox").context("busybox not found (apt-get install busybox-static)")?;
    let elf = std::fs::read(&busybox).with_context(|| format!("read {}", busybox.display()))?;
    ensure!(
        !has_interpreter(&elf)?,
        "{} is dynamically linked and cannot run in an image without a libc \
         (apt-get install busybox-static)",
        busybox.display()
    );
    Ok(busybox)
}

/// Whether a 64-bit little-endian ELF file has a `PT_INTERP` program header (a dynamic
/// loader).
fn has_interpreter(elf: &[u8]) -> anyhow::Result<bool> {
    const PT_INTERP: u32 = 3;
    ensure!(
        elf.len() >= 64 && elf.starts_with(b"\x7fELF") && elf[4] == 2 && elf[5] == 1,
        "not a 64-bit little-endian ELF file"
    );
    let u16_at = |at: usize| u16::from_le_bytes([elf[at], elf[at + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into()?) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    for n in 0..phnum {
        let at = phoff + n * phentsize;
        let header = elf.get(at..at + 4).context("truncated program headers")?;
        if u32::from_le_bytes(header.try_into()?) == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mountinfo(r"/tmp/plain"), "/tmp/plain");
        assert_eq!(unescape_mountinfo(r"/tmp/end\"), r"/tmp/end\");
    }

    #[test]
    fn elf_interpreter() {
        let sh = std::fs::read(e2e::find_tool("sh").unwrap()).unwrap();
        // /bin/sh (dash or bash) is dynamically linked on every Debian.
        assert!(has_interpreter(&sh).unwrap());
        assert!(has_interpreter(b"#!/bin/sh\n").is_err());
    }
}
