//! `hoist logs` against a real agent: a PHP worker under supervisord writing the app's
//! Laravel-style log in `shared/storage/logs` (a file glob), lines read by a viewer,
//! `--lines`, `--grep`, `-f` receiving lines appended (and a rotated, then a truncated
//! file's) after it started, secrets masked in the lines, and links planted by the
//! repo or hard links in `shared/` refused without a byte of what they point at.

use std::{
    io::{BufRead as _, BufReader},
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use hoist_tests::{
    e2e,
    harness::{AgentBuilder, Pki, Who, app_user_lines, bin, hoist},
    services::{
        git::AppRepo,
        supervisor::{Program, Supervisord},
    },
};

const SECRET: &str = "hunter2-very-secret";
const SHADOW_MARK: &str = "root:$6$";

/// The worker: logs one line with the database URL it connects to, then waits.
const WORKER: &str = r#"<?php
$env = [];
foreach (file(__DIR__ . '/.env', FILE_IGNORE_NEW_LINES) as $l) {
    [$k, $v] = explode('=', $l, 2);
    $env[$k] = $v;
}
file_put_contents(
    __DIR__ . '/storage/logs/laravel.log',
    "[2026-12-02 10:00:00] production.INFO: worker started, connecting to mysql://app:{$env['DB_PASSWORD']}@{$env['DB_HOST']}:3306/shop APP_ENV={$env['APP_ENV']}\n",
    FILE_APPEND
);
sleep(3600);
"#;

fn append(path: &Path, text: &str) {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Lines `hoist logs` printed for host web-1 (`web-1 SOURCE | ...` or with --source
/// `web-1 | ...`).
fn log_lines(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.contains(" | ")).collect()
}

#[tokio::test]
async fn logs_of_a_php_app_under_supervisor() {
    let test = "logs_of_a_php_app_under_supervisor";
    if e2e::require("supervisord", "supervisor", test).is_none()
        || e2e::require("php", "php-cli", test).is_none()
    {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let deploy_to = root.path().join("shop");
    let logs_dir = deploy_to.join("shared/storage/logs");
    std::fs::create_dir_all(&logs_dir).unwrap();
    std::fs::set_permissions(
        deploy_to.join("shared"),
        std::fs::Permissions::from_mode(0o777),
    )
    .unwrap();
    std::fs::write(
        deploy_to.join("shared/.env"),
        format!("APP_NAME=shop\nAPP_ENV=production\nDB_HOST=127.0.0.1\nDB_PASSWORD={SECRET}\n"),
    )
    .unwrap();

    let supervisor = Supervisord::start(&[Program {
        autostart: false,
        ..Program::new(
            "worker",
            &format!("php {}", deploy_to.join("current/worker.php").display()),
        )
    }])
    .unwrap();
    let repo = AppRepo::new_static(&[
        ("worker.php", WORKER),
        ("logs/app.log", "from the release\n"),
    ]);
    // The repo plants a link to a file only root may read.
    repo.symlink("logs/shadow.log", Path::new("/etc/shadow"));
    repo.commit_version("1", &[]);

    let pki = Pki::new();
    let run_as = app_user_lines();
    let app = format!(
        r#"[[app]]
name = "shop"
repo = "{}"
deploy_to = "{}"
{run_as}step_timeout = "30s"
shared_files = [".env"]
shared_dirs = ["storage"]

[[app.services]]
kind = "supervisor"
name = "worker"
serverurl = "{}"
timeout = "20s"

[[app.logs]]
name = "laravel"
path = "storage/logs/*.log"

[[app.logs]]
name = "release"
path = "logs/*.log"
"#,
        repo.url(),
        deploy_to.display(),
        supervisor.serverurl()
    );
    let agent = AgentBuilder::new(&pki).apps(&app).start().await;
    let fleet = |who, dir: &str| {
        let dir = root.path().join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        agent.one_host_fleet(&pki, who, &dir)
    };
    let (fl, vw) = (
        fleet(Who::Deployer, "deployer"),
        fleet(Who::Viewer, "viewer"),
    );

    let (status, out, err) = hoist(&["deploy", "shop", "--ref", "main", "--fleet", &fl]);
    assert!(status.success(), "{out}{err}");
    let laravel = logs_dir.join("laravel.log");
    let mut started = false;
    for _ in 0..200 {
        if std::fs::read_to_string(&laravel).is_ok_and(|t| t.contains("worker started")) {
            started = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        started,
        "the worker wrote its log: {}",
        supervisor.log_text()
    );
    // A hard link in shared/ to a file outside the app.
    let outside = root.path().join("outside.txt");
    std::fs::write(&outside, "OUTSIDE-CONTENT\n").unwrap();
    std::fs::hard_link(&outside, logs_dir.join("leak.log")).unwrap();

    // Every source, read by a viewer: host- and source-prefixed, secrets masked,
    // ordinary values readable, planted links and hard links refused by name.
    let (status, out, err) = hoist(&["logs", "shop", "--fleet", &vw]);
    assert!(status.success(), "{out}{err}");
    assert!(
        out.contains("web-1 laravel | [2026-12-02 10:00:00] production.INFO: worker started, connecting to mysql://app:••••@127.0.0.1:3306/shop APP_ENV=production"),
        "{out}"
    );
    assert!(out.contains("web-1 release | from the release"), "{out}");
    assert!(!out.contains(SECRET), "{out}");
    assert!(
        !out.contains(SHADOW_MARK) && !out.contains("OUTSIDE-CONTENT"),
        "{out}"
    );
    assert!(
        out.contains("web-1 release ! `logs/shadow.log` in the release is a symbolic link"),
        "{out}"
    );
    assert!(
        out.contains("`shared/storage/logs/leak.log` has 2 hard links"),
        "{out}"
    );

    // --lines counts the last lines; --grep only matching ones (and --lines counts those).
    for i in 1..=5 {
        let level = if i % 2 == 0 { "ERROR" } else { "INFO" };
        append(
            &laravel,
            &format!("[2026-12-02 10:00:0{i}] production.{level}: line {i}\n"),
        );
    }
    let (status, out, err) = hoist(&[
        "logs", "shop", "--source", "laravel", "--lines", "2", "--fleet", &vw,
    ]);
    assert!(status.success(), "{out}{err}");
    let lines = log_lines(&out);
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("web-1 | ") && lines[0].ends_with("line 4"),
        "{out}"
    );
    assert!(lines[1].ends_with("line 5"), "{out}");
    let (status, out, err) = hoist(&[
        "logs",
        "shop",
        "--source",
        "laravel",
        "--grep",
        "ERROR|CRITICAL",
        "--fleet",
        &vw,
    ]);
    assert!(status.success(), "{out}{err}");
    let lines = log_lines(&out);
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines.iter().all(|l| l.contains(".ERROR:")), "{out}");
    let (_, out, _) = hoist(&[
        "logs", "shop", "--source", "laravel", "--grep", "ERROR", "--lines", "1", "--fleet", &vw,
    ]);
    assert_eq!(
        log_lines(&out),
        ["web-1 | [2026-12-02 10:00:04] production.ERROR: line 4"]
    );
    // A pattern never finds what is masked.
    let (_, out, _) = hoist(&["logs", "shop", "--grep", "hunter2", "--fleet", &vw]);
    assert!(log_lines(&out).is_empty(), "{out}");

    // Log content is untrusted: control characters are shown, not obeyed; --json
    // gives one object per line.
    append(
        &laravel,
        "[2026-12-02 10:00:06] production.INFO: \u{1b}[2J\u{1b}]0;pwned\u{7}cleared\n",
    );
    let (_, out, _) = hoist(&[
        "logs", "shop", "--source", "laravel", "--lines", "1", "--fleet", &vw,
    ]);
    assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");
    assert!(
        out.contains("production.INFO: \\e[2J\\e]0;pwned\\x07cleared"),
        "{out}"
    );
    let (_, out, _) = hoist(&[
        "logs", "shop", "--source", "laravel", "--lines", "2", "--json", "--fleet", &vw,
    ]);
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["kind"] != "log_notice")
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0]["kind"], "log_line");
    assert_eq!(lines[0]["host"], "web-1");
    assert_eq!(lines[0]["source"], "laravel");
    assert_eq!(lines[0]["file"], "laravel.log");
    assert_eq!(
        lines[0]["line"],
        "[2026-12-02 10:00:05] production.INFO: line 5"
    );
    assert_eq!(lines[0]["truncated"], false);

    // Bad input: clear errors, nothing read.
    let (status, out, err) = hoist(&["logs", "shop", "--source", "nginx", "--fleet", &vw]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    assert!(
        format!("{out}{err}").contains(
            "app shop declares no log source \"nginx\"; its log sources: laravel, release"
        ),
        "{out}{err}"
    );
    let (status, out, err) = hoist(&["logs", "shop", "--grep", "(a|b)", "--fleet", &vw]);
    assert_eq!(status.code(), Some(2), "{out}{err}");
    assert!(err.contains("not supported by --grep"), "{err}");

    // -f: the tail, then a line appended after it started, then the rotated file's.
    let mut child = Command::new(bin("hoist"))
        .args([
            "logs", "shop", "--source", "laravel", "-f", "--lines", "1", "--fleet", &vw,
        ])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let mut wait_for = |needle: &str| {
        while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
            seen.push(line.clone());
            if line.contains(needle) {
                return true;
            }
        }
        false
    };
    assert!(wait_for("cleared"), "the tail first");
    append(
        &laravel,
        "[2026-12-02 10:01:00] production.INFO: appended after start\n",
    );
    assert!(wait_for("appended after start"), "a followed line");
    std::fs::rename(&laravel, logs_dir.join("laravel.log.1")).unwrap();
    append(
        &laravel,
        "[2026-12-02 10:02:00] production.INFO: after rotation\n",
    );
    assert!(wait_for("after rotation"), "the new file after a rotation");
    // Truncated in place (copytruncate) and written again: read from its start.
    std::fs::write(&laravel, "[t] after truncation\n").unwrap();
    assert!(
        wait_for("after truncation"),
        "the truncated file's new line"
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        seen.iter()
            .filter(|l| l.contains("appended after start"))
            .count(),
        1,
        "{seen:?}"
    );
    drop(agent);
    drop(supervisor);
}
