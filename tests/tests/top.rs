//! `hoist top` against real agents: `--once` frames and JSON (two agents and a dead
//! address), the refusal without a terminal, and the live full-screen view run for
//! real under tmux: hosts appear, a resize redraws, `q` quits and the terminal is
//! back on the shell's normal screen.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use hoist_tests::{
    e2e::{self, eventually},
    harness::{Agent, AgentBuilder, Pki, Who, bin, deployed_dir, hoist},
};

/// A healthy app: its one check passes.
const WEB: &str = r#"
[[app]]
name = "web"
repo = "/nonexistent.git"
deploy_to = "/var/www/web"

[[app.checks]]
kind = "command"
name = "true"
command = "true"
"#;

/// An app whose check fails: its host is unhealthy.
const API: &str = r#"
[[app]]
name = "api"
repo = "/nonexistent.git"
deploy_to = "/var/www/api"

[[app.checks]]
kind = "command"
name = "always-fails"
command = "false"
"#;

/// Two agents (web-1 healthy, web-2 with a failing check) and web-3 at an address
/// nothing listens on, in a fleet file in a temp dir.
struct Fleet {
    _pki: Pki,
    _deployed: [tempfile::TempDir; 2],
    _agents: [Agent; 2],
    dir: tempfile::TempDir,
    path: PathBuf,
    dead: String,
}

async fn fleet() -> Fleet {
    let pki = Pki::new();
    let deployed = [deployed_dir(), deployed_dir()];
    let at = |app: &str| {
        app.replace("/var/www/web", &deployed[0].path().display().to_string())
            .replace("/var/www/api", &deployed[1].path().display().to_string())
    };
    let a = AgentBuilder::new(&pki).apps(&at(WEB)).start().await;
    let b = AgentBuilder::new(&pki)
        .apps(&at(WEB))
        .apps(&at(API))
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fleet.toml");
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap().to_string();
    drop(dead);
    let mut text = pki.fleet_tls(Who::Viewer);
    text.push_str(&a.fleet_entry("web-1"));
    text.push_str(&b.fleet_entry("web-2"));
    text.push_str(&format!(
        "\n[[host]]\nname = \"web-3\"\naddress = \"{dead_addr}\"\n"
    ));
    std::fs::write(&path, text).unwrap();
    Fleet {
        _pki: pki,
        _deployed: deployed,
        _agents: [a, b],
        dir,
        path,
        dead: dead_addr,
    }
}

/// The table row of `host` in a frame.
fn row<'a>(frame: &'a str, host: &str) -> &'a str {
    frame
        .lines()
        .find(|l| l.starts_with(&format!("{host} ")))
        .unwrap_or_else(|| panic!("no row for {host}:\n{frame}"))
}

#[tokio::test]
async fn top_once_shows_hosts_resources_and_the_unreachable_host() {
    let fleet = fleet().await;
    let f = fleet.path.to_str().unwrap();

    // Checks run in the background; wait for web-2's failing one to be seen.
    let (status, frame, err) = eventually(
        "a frame with web-2 unhealthy",
        Duration::from_secs(30),
        || async {
            let (status, out, err) = hoist(&["top", "--once", "--fleet", f, "--timeout", "3s"]);
            if out.contains("1 unhealthy") {
                Ok((status, out, err))
            } else {
                Err(format!("{out}{err}"))
            }
        },
    )
    .await;
    eprintln!("hoist top --once:\n{frame}");
    assert_eq!(status.code(), Some(1), "{frame}{err}");
    assert!(err.contains("1 of 3 host(s) unreachable"), "{err}");

    let header = frame.lines().next().unwrap();
    assert!(header.starts_with("hoist top · "), "{header}");
    assert!(header.contains(f), "{header}");
    assert!(
        header.contains("3 hosts: 1 healthy, 1 unhealthy, 1 unreachable"),
        "{header}"
    );
    assert!(header.contains("updated "), "{header}");
    assert!(!frame.contains('\x1b'), "no colours when not a terminal");
    assert!(!frame.contains("q quit"), "no footer in --once");

    let columns = frame
        .lines()
        .find(|l| l.starts_with("HOST "))
        .unwrap_or_else(|| panic!("no table header:\n{frame}"));
    for column in [
        "UP", "VERSION", "CPU", "MEM", "DISK", "LOAD", "APP", "RELEASE", "SERVICES", "CHECKS",
    ] {
        assert!(columns.contains(column), "{columns}");
    }
    for host in ["web-1", "web-2"] {
        let line = row(&frame, host);
        let cells: Vec<&str> = line.split("  ").filter(|c| !c.is_empty()).collect();
        assert_eq!(cells[1].trim(), "yes", "{line}");
        assert_eq!(cells[2].trim(), env!("CARGO_PKG_VERSION"), "{line}");
        // CPU, memory ("41% of 15.6GiB"), the fullest disk ("37% /"), load.
        assert!(cells[3].trim().ends_with('%'), "{line}");
        assert!(
            cells[4].contains("% of ") && cells[4].contains("iB"),
            "{line}"
        );
        assert!(cells[5].contains("% /"), "{line}");
        assert!(cells[6].trim().parse::<f64>().is_ok(), "{line}");
        assert!(line.contains("web"), "{line}");
    }
    assert!(row(&frame, "web-1").contains("1/1 ok"), "{frame}");
    assert!(
        frame.contains("0/1 ok (failing: always-fails)"),
        "web-2's api app:\n{frame}"
    );
    assert!(
        frame.contains("web-2 api: check always-fails failing"),
        "{frame}"
    );
    let dead = row(&frame, "web-3");
    assert!(dead.starts_with("web-3  no "), "{dead}");
    assert!(
        frame.contains(&format!("web-3 ({}) unreachable: ", fleet.dead)),
        "{frame}"
    );

    // One app only.
    let (_, out, err) = hoist(&[
        "top",
        "--once",
        "--fleet",
        f,
        "--hosts",
        "web-2",
        "api",
        "--timeout",
        "3s",
    ]);
    assert!(out.contains("· app api ·"), "{out}{err}");
    assert!(row(&out, "web-2").contains("api"), "{out}");
    assert!(!out.contains(" web "), "{out}");

    // The same snapshot as JSON (the shape of `hoist status --json`).
    let (status, out, err) = hoist(&["top", "--once", "--json", "--fleet", f, "--timeout", "3s"]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((&json["kind"], &json["v"]), (&"status".into(), &1.into()));
    let hosts = json["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 3);
    for (i, name) in ["web-1", "web-2"].into_iter().enumerate() {
        assert_eq!(hosts[i]["host"], name);
        assert_eq!(hosts[i]["reachable"], true);
        assert!(
            hosts[i]["resources"]["memory_total_bytes"]
                .as_u64()
                .unwrap()
                > 0
        );
    }
    assert_eq!(hosts[2]["reachable"], false);
    assert!(hosts[2]["error"].as_str().unwrap().len() > 3);

    // An app no agent has: each agent's answer, exit 1.
    let (status, out, err) = hoist(&[
        "top",
        "--once",
        "--fleet",
        f,
        "--hosts",
        "web-1",
        "nope",
        "--timeout",
        "3s",
    ]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(row(&out, "web-1").starts_with("web-1  error"), "{out}");
    assert!(out.contains("unknown app \"nope\""), "{out}");
    assert!(err.contains("1 host(s) answered with an error"), "{err}");

    // Without a terminal and without --once: refused, exit 2.
    let (status, _, err) = hoist(&["top", "--fleet", f]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("not a terminal") && err.contains("--once"),
        "{err}"
    );
    let (status, _, err) = hoist(&["top", "--once", "--fleet", f, "--interval", "10ms"]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("--interval"), "{err}");
}

/// A tmux server of the test's own (its own socket, no user config).
struct Tmux {
    tmux: PathBuf,
    socket: PathBuf,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> Output {
        let out = e2e::run_with_timeout(
            Command::new(&self.tmux)
                .arg("-S")
                .arg(&self.socket)
                .args(args),
            None,
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The visible screen of the session's pane, one line per row.
    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned()
    }

    fn pane(&self, format: &str) -> String {
        let out = self.run(&["display-message", "-p", "-t", "top", format]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new(&self.tmux)
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn quote(path: &Path) -> String {
    let text = path.to_str().unwrap();
    assert!(!text.contains('\''), "{text}");
    format!("'{text}'")
}

#[tokio::test]
async fn top_live_under_tmux_shows_hosts_and_quits_cleanly() {
    let Some(tmux) = e2e::require(
        "tmux",
        "tmux",
        "top_live_under_tmux_shows_hosts_and_quits_cleanly",
    ) else {
        return;
    };
    let fleet = fleet().await;
    // No user tmux config.
    let config = fleet.dir.path().join("tmux.conf");
    std::fs::write(&config, "").unwrap();
    let tmux = Tmux {
        tmux,
        socket: fleet.dir.path().join("tmux.sock"),
    };
    // The shell stays after hoist exits, so its normal screen can be read.
    let script = format!(
        "echo 'shell screen before top'; {} top --fleet {} --interval 500ms; \
         echo \"hoist exited with $?\"; exec sleep 120",
        quote(&bin("hoist")),
        quote(&fleet.path)
    );
    tmux.run(&[
        "-f",
        config.to_str().unwrap(),
        "new-session",
        "-d",
        "-x",
        "160",
        "-y",
        "40",
        "-s",
        "top",
        "sh",
        "-c",
        &script,
    ]);

    let frame = eventually(
        "both agents on the screen",
        Duration::from_secs(30),
        || async {
            let screen = tmux.screen();
            let up = |host: &str| {
                screen
                    .lines()
                    .any(|l| l.starts_with(&format!("{host}  yes ")))
            };
            if up("web-1") && up("web-2") && screen.contains("1 unreachable") {
                Ok(screen)
            } else {
                Err(screen)
            }
        },
    )
    .await;
    eprintln!("hoist top in tmux (160x40):\n{frame}");
    assert_eq!(
        tmux.pane("#{alternate_on}"),
        "1",
        "top uses the alternate screen"
    );
    let lines: Vec<&str> = frame.lines().collect();
    assert!(lines[0].starts_with("hoist top · "), "{frame}");
    assert!(lines[0].contains("3 hosts: "), "{frame}");
    assert!(lines.iter().any(|l| l.starts_with("web-3  no ")), "{frame}");
    assert!(frame.contains("unreachable: "), "{frame}");
    assert!(frame.contains("retrying"), "{frame}");
    assert_eq!(lines.len(), 40, "{frame}");
    assert_eq!(
        lines[39].trim_end(),
        "q quit",
        "the footer is on the last row"
    );
    assert!(lines.iter().all(|l| l.chars().count() <= 160));

    // A smaller window: redrawn to fit, rows cut at the new width.
    tmux.run(&["resize-window", "-t", "top", "-x", "70", "-y", "12"]);
    let small = eventually("a redraw at 70x12", Duration::from_secs(10), || async {
        let screen = tmux.screen();
        let lines: Vec<&str> = screen.lines().collect();
        if lines.len() == 12
            && lines[11].trim_end() == "q quit"
            && lines.iter().any(|l| l.starts_with("web-1  yes"))
        {
            Ok(screen)
        } else {
            Err(screen)
        }
    })
    .await;
    eprintln!("after resizing to 70x12:\n{small}");
    assert!(small.lines().all(|l| l.chars().count() <= 70), "{small}");

    tmux.run(&["send-keys", "-t", "top", "q"]);
    let screen = eventually("hoist top to exit", Duration::from_secs(10), || async {
        let screen = tmux.screen();
        if screen.contains("hoist exited with") {
            Ok(screen)
        } else {
            Err(screen)
        }
    })
    .await;
    eprintln!("after q:\n{screen}");
    assert!(screen.contains("hoist exited with 0"), "{screen}");
    assert_eq!(tmux.pane("#{pane_current_command}"), "sleep", "{screen}");
    assert_eq!(
        tmux.pane("#{alternate_on}"),
        "0",
        "the alternate screen was left"
    );
    // The shell's normal screen is back, with its line from before and none of top's
    // frame, and the cursor is shown again.
    let lines: Vec<&str> = screen.lines().collect();
    assert_eq!(lines[0], "shell screen before top", "{screen}");
    assert_eq!(lines[1], "hoist exited with 0", "{screen}");
    assert!(!screen.contains("q quit"), "{screen}");
    assert!(!screen.contains("HOST "), "{screen}");
    assert_eq!(tmux.pane("#{cursor_flag}"), "1", "the cursor is visible");
}
