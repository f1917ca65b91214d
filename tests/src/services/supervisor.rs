//! A real `supervisord` in a temp dir, talking on a unix socket in that dir, with the
//! programs a test declares. Stopped (`supervisorctl shutdown`, then SIGKILL) on drop.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use nix::{
    sys::signal::{Signal, kill},
    unistd::{Pid, Uid, User},
};
use tempfile::TempDir;

use crate::e2e;

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const CTL_TIMEOUT: Duration = Duration::from_secs(20);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);
/// `sockaddr_un.sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 100;

/// One `[program:x]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    pub name: String,
    /// Run by supervisord (split shell-like, no shell); use `sh -c '...'` for a shell.
    pub command: String,
    pub autostart: bool,
    /// More than 1 names the processes `<name>_00`, `<name>_01`, ...
    pub numprocs: u32,
    /// A `[group:x]` the program belongs to; programs may share one.
    pub group: Option<String>,
}

impl Program {
    /// An autostarted single-process program outside any group.
    pub fn new(name: &str, command: &str) -> Self {
        Program {
            name: name.into(),
            command: command.into(),
            autostart: true,
            numprocs: 1,
            group: None,
        }
    }

    /// The names supervisorctl shows for this program's processes, e.g. `mailer`,
    /// `worker:worker_00` or `web:php_01`.
    pub fn process_names(&self) -> Vec<String> {
        let group = self.group.as_deref().unwrap_or(&self.name);
        if self.numprocs > 1 {
            (0..self.numprocs)
                .map(|n| format!("{group}:{}_{n:02}", self.name))
                .collect()
        } else if self.group.is_some() {
            vec![format!("{group}:{}", self.name)]
        } else {
            vec![self.name.clone()]
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        let names = std::iter::once(("program", &self.name))
            .chain(self.group.as_ref().map(|g| ("group", g)));
        for (what, name) in names {
            ensure!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
                "{what} name {name:?} must be non-empty ASCII letters, digits, '-', '_' or '.'"
            );
        }
        ensure!(
            !self.command.trim().is_empty() && !self.command.contains(['\n', '\r']),
            "program {}: command must be one non-empty line, got {:?}",
            self.name,
            self.command
        );
        ensure!(
            self.numprocs >= 1,
            "program {}: numprocs must be at least 1",
            self.name
        );
        Ok(())
    }
}

/// A running `supervisord -c <dir>/supervisord.conf` (not daemonized).
pub struct Supervisord {
    dir: TempDir,
    conf: PathBuf,
    socket: PathBuf,
    child: Option<Child>,
}

impl Supervisord {
    /// Writes the config, starts supervisord and waits until `supervisorctl status`
    /// answers and every autostarted process has settled (RUNNING, EXITED or FATAL).
    pub fn start(programs: &[Program]) -> anyhow::Result<Self> {
        let supervisord = e2e::find_tool("supervisord")
            .context("supervisord not found (apt-get install supervisor)")?;
        e2e::find_tool("supervisorctl")
            .context("supervisorctl not found (apt-get install supervisor)")?;
        for program in programs {
            program.validate()?;
        }

        let mut dir = tempfile::Builder::new().prefix("hoist-sv").tempdir()?;
        if dir.path().join("supervisor.sock").as_os_str().len() > MAX_SOCKET_PATH {
            dir = tempfile::Builder::new()
                .prefix("hoist-sv")
                .tempdir_in("/tmp")?;
        }
        let conf = dir.path().join("supervisord.conf");
        let socket = dir.path().join("supervisor.sock");
        std::fs::write(&conf, config_text(dir.path(), &socket, programs)?)
            .context("write supervisord.conf")?;

        let out = std::fs::File::create(dir.path().join("supervisord.out"))?;
        let child = Command::new(supervisord)
            .arg("-c")
            .arg(&conf)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .context("spawn supervisord")?;
        let mut supervisor = Supervisord {
            dir,
            conf,
            socket,
            child: Some(child),
        };
        let expected: Vec<String> = programs
            .iter()
            .filter(|p| p.autostart)
            .flat_map(Program::process_names)
            .collect();
        supervisor.wait_settled(&expected)?;
        Ok(supervisor)
    }

    fn wait_settled(&mut self, autostarted: &[String]) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut delay = Duration::from_millis(20);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                bail!(
                    "supervisord exited with {status} before ready:\n{}",
                    self.log_text()
                );
            }
            let last = match self.run_ctl(&["status"]) {
                Ok(out) if matches!(out.status.code(), Some(0 | 3)) => {
                    let text = output_text(&out);
                    let states = parse_status(&text);
                    let settled = autostarted.iter().all(|name| {
                        states
                            .get(name)
                            .is_some_and(|s| matches!(s.as_str(), "RUNNING" | "EXITED" | "FATAL"))
                    });
                    if settled {
                        return Ok(());
                    }
                    text
                }
                Ok(out) => output_text(&out),
                Err(err) => format!("{err:#}"),
            };
            if Instant::now() > deadline {
                bail!(
                    "supervisord not ready within {READY_TIMEOUT:?}; last status:\n{last}\nlog:\n{}",
                    self.log_text()
                );
            }
            thread::sleep(delay);
            delay = (delay * 3 / 2).min(Duration::from_millis(100));
        }
    }

    /// The `serverurl` for supervisorctl and hoist configs, e.g.
    /// `unix:///tmp/hoist-svAbC/supervisor.sock`.
    pub fn serverurl(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub fn conf_path(&self) -> &Path {
        &self.conf
    }

    /// The temp dir holding the config, socket, logs and pidfile.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// supervisord's own log and captured output, for failure messages.
    pub fn log_text(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("supervisord.log"), read("supervisord.out"))
    }

    fn run_ctl(&self, args: &[&str]) -> anyhow::Result<Output> {
        let ctl = e2e::find_tool("supervisorctl")
            .context("supervisorctl not found (apt-get install supervisor)")?;
        e2e::run_with_timeout(
            Command::new(ctl).arg("-c").arg(&self.conf).args(args),
            None,
            CTL_TIMEOUT,
        )
    }

    /// Runs `supervisorctl -c <conf> ARGS...` and returns its output (stdout then
    /// stderr). A non-zero exit is an error carrying the output, except exit 3 from
    /// `status`, which only says that not every process is running.
    pub fn ctl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.run_ctl(args)?;
        let text = output_text(&out);
        let status_ok = args.first() == Some(&"status") && out.status.code() == Some(3);
        if !out.status.success() && !status_ok {
            bail!(
                "supervisorctl {} failed ({}): {text}",
                args.join(" "),
                out.status
            );
        }
        Ok(text)
    }

    /// Every process's state by its full name, e.g. `"worker:worker_00" => "RUNNING"`.
    pub fn status(&self) -> anyhow::Result<BTreeMap<String, String>> {
        Ok(parse_status(&self.ctl(&["status"])?))
    }

    /// The pid of a running process (`mailer`, `worker:worker_00`); None when it is not
    /// running or unknown.
    pub fn pid_of(&self, name: &str) -> Option<u32> {
        let out = self.run_ctl(&["pid", name]).ok()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|&pid| pid > 0)
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        // Remembered in case supervisord cannot stop its programs itself.
        let pids: Vec<u32> = self
            .run_ctl(&["pid", "all"])
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|l| l.trim().parse::<u32>().ok())
                    .filter(|&p| p > 0)
                    .collect()
            })
            .unwrap_or_default();
        let clean = self
            .run_ctl(&["shutdown"])
            .is_ok_and(|o| o.status.success())
            && e2e::wait_bounded(&mut child, SHUTDOWN_TIMEOUT).is_some();
        if clean {
            return;
        }
        e2e::terminate_group(&mut child, Duration::from_secs(5));
        // supervisord puts every program in its own process group (pgid = pid).
        for pid in pids.into_iter().filter_map(|p| i32::try_from(p).ok()) {
            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
        }
    }
}

impl Drop for Supervisord {
    fn drop(&mut self) {
        self.stop();
    }
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Parses `supervisorctl status` lines (`name   STATE   description`).
fn parse_status(text: &str) -> BTreeMap<String, String> {
    const STATES: [&str; 8] = [
        "STOPPED", "STARTING", "RUNNING", "BACKOFF", "STOPPING", "EXITED", "FATAL", "UNKNOWN",
    ];
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (name, state) = (words.next()?, words.next()?);
            STATES
                .contains(&state)
                .then(|| (name.to_string(), state.to_string()))
        })
        .collect()
}

fn config_text(dir: &Path, socket: &Path, programs: &[Program]) -> anyhow::Result<String> {
    // Values go through ConfigParser interpolation: a literal '%' is written '%%'.
    let esc = |p: &Path| p.display().to_string().replace('%', "%%");
    let mut text = String::new();
    writeln!(
        text,
        "[unix_http_server]\nfile={sock}\nchmod=0700\n\n\
         [supervisord]\nnodaemon=true\npidfile={pid}\nlogfile={log}\nchildlogdir={dir}\n\
         loglevel=info",
        sock = esc(socket),
        pid = esc(&dir.join("supervisord.pid")),
        log = esc(&dir.join("supervisord.log")),
        dir = esc(dir),
    )?;
    if !Uid::current().is_root() {
        let user =
            User::from_uid(Uid::current())?.context("the current user has no passwd entry")?;
        writeln!(text, "user={}", user.name)?;
    }
    writeln!(
        text,
        "\n[rpcinterface:supervisor]\n\
         supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
         [supervisorctl]\nserverurl=unix://{}\n",
        esc(socket)
    )?;

    let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for program in programs {
        writeln!(
            text,
            "[program:{name}]\ncommand={command}\nautostart={autostart}\nautorestart=unexpected\n\
             startsecs=1\nnumprocs={numprocs}\nstopasgroup=true\nkillasgroup=true\n\
             stopwaitsecs=5\ndirectory={dir}",
            name = program.name,
            command = program.command.replace('%', "%%"),
            autostart = program.autostart,
            numprocs = program.numprocs,
            dir = esc(dir),
        )?;
        if program.numprocs > 1 {
            writeln!(text, "process_name=%(program_name)s_%(process_num)02d")?;
        }
        text.push('\n');
        if let Some(group) = &program.group {
            groups.entry(group).or_default().push(&program.name);
        }
    }
    for (group, members) in groups {
        writeln!(text, "[group:{group}]\nprograms={}\n", members.join(","))?;
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supervisord_or_skip(test: &str) -> bool {
        e2e::require("supervisord", "supervisor", test).is_some()
            && e2e::require("supervisorctl", "supervisor", test).is_some()
    }

    #[test]
    fn process_names_follow_supervisor() {
        let mut p = Program::new("worker", "sleep 1");
        assert_eq!(p.process_names(), ["worker"]);
        p.numprocs = 2;
        assert_eq!(p.process_names(), ["worker:worker_00", "worker:worker_01"]);
        p.group = Some("app".into());
        assert_eq!(p.process_names(), ["app:worker_00", "app:worker_01"]);
        p.numprocs = 1;
        assert_eq!(p.process_names(), ["app:worker"]);
    }

    #[test]
    fn bad_names_are_refused_before_anything_starts() {
        let err = Supervisord::start(&[Program::new("a b", "sleep 1")])
            .err()
            .unwrap();
        assert!(err.to_string().contains("\"a b\""), "{err}");
        let err = Supervisord::start(&[Program::new("a", "sleep 1\n[x]")])
            .err()
            .unwrap();
        assert!(err.to_string().contains("one non-empty line"), "{err}");
    }

    #[test]
    fn running_and_stopped_programs() {
        if !supervisord_or_skip("running_and_stopped_programs") {
            return;
        }
        let supervisor = Supervisord::start(&[
            Program {
                numprocs: 2,
                group: Some("app".into()),
                ..Program::new("worker", "sleep 1000")
            },
            Program::new("single", "sleep 1000"),
            Program {
                autostart: false,
                ..Program::new("mailer", "sleep 1000")
            },
        ])
        .unwrap();
        assert!(supervisor.serverurl().starts_with("unix:///"));
        assert!(supervisor.conf_path().is_file());

        let text = supervisor.ctl(&["status"]).unwrap();
        let line = |name: &str| {
            text.lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
                .to_string()
        };
        assert!(line("app:worker_00").contains("RUNNING"), "{text}");
        assert!(line("app:worker_01").contains("RUNNING"), "{text}");
        assert!(line("single").contains("RUNNING"), "{text}");
        assert!(line("mailer").contains("STOPPED"), "{text}");

        let pid = supervisor.pid_of("single").expect("single runs");
        let pid = Pid::from_raw(i32::try_from(pid).unwrap());
        assert!(kill(pid, None).is_ok(), "pid {pid} is alive");
        assert_eq!(supervisor.pid_of("mailer"), None);
        assert_eq!(supervisor.pid_of("nope"), None);

        // Errors carry supervisorctl's words.
        let err = supervisor.ctl(&["start", "nope"]).unwrap_err();
        assert!(err.to_string().contains("no such process"), "{err}");

        supervisor.ctl(&["start", "mailer"]).unwrap();
        supervisor.ctl(&["stop", "app:*"]).unwrap();
        let states = supervisor.status().unwrap();
        assert_eq!(states["mailer"], "RUNNING");
        assert_eq!(states["app:worker_00"], "STOPPED");
        assert_eq!(states["app:worker_01"], "STOPPED");

        // Drop shuts everything down: supervisord and its programs are gone.
        let dir = supervisor.dir().to_path_buf();
        let master: i32 = std::fs::read_to_string(dir.join("supervisord.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        drop(supervisor);
        assert!(
            kill(pid, None).is_err(),
            "program {pid} still alive after drop"
        );
        assert!(
            kill(Pid::from_raw(master), None).is_err(),
            "supervisord still alive"
        );
        assert!(!dir.exists());
    }
}
