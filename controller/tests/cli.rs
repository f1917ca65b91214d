//! The `hoist` binary's command line: usage errors exit 2 with a clear message, and
//! the CA commands refuse to overwrite.

use std::process::Command;

fn hoist(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hoist"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run hoist");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_the_commands() {
    let (code, out, _) = hoist(&["--help"]);
    assert_eq!(code, Some(0));
    for cmd in [
        "ca", "status", "deploy", "rollback", "restart", "releases", "log", "attach", "env",
        "lock", "unlock", "targets", "demo", "--fleet", "--hosts", "--group", "--json",
    ] {
        assert!(out.contains(cmd), "missing {cmd}:\n{out}");
    }
}

/// `hoist ARGS --help` exits 0 and names every one of `expected`.
fn help_names(args: &[&str], expected: &[&str]) -> String {
    let mut all = args.to_vec();
    all.push("--help");
    let (code, out, err) = hoist(&all);
    assert_eq!(code, Some(0), "{err}");
    for word in expected {
        assert!(
            out.contains(word),
            "`hoist {}` help lacks {word}:\n{out}",
            args.join(" ")
        );
    }
    out
}

#[test]
fn help_of_the_job_commands() {
    help_names(
        &["deploy"],
        &[
            "<APP>",
            "--ref <REF>",
            "--migrate-on <first|all|none>",
            "--allow-missing-env",
            "--force",
            "--reason <TEXT>",
            "--strategy <all|rolling|canary>",
            "--batch <N|N%>",
            "--canary <N|N%>",
            "--bake <DURATION>",
            "--max-unhealthy <N|N%>",
            "--lock-wait <DURATION>",
            "--dry-run",
            "--timeout",
            "--hosts",
            "--json",
        ],
    );
    help_names(
        &["rollback"],
        &[
            "<APP>",
            "--to <RELEASE>",
            "--migrate",
            "--restore-db",
            "--yes",
            "--reason",
            "--strategy",
            "--batch",
            "--max-unhealthy",
            "--lock-wait",
            "--dry-run",
        ],
    );
    help_names(&["restart"], &["<APP>", "--service <NAME>"]);
    help_names(&["releases"], &["<APP>", "--timeout"]);
    help_names(&["log"], &["<APP>", "--job <ID>", "--limit <N>"]);
    help_names(&["attach"], &["<JOB>", "--host <NAME>"]);
    help_names(&["env"], &["<APP>", "list", "get", "set", "unset"]);
    help_names(&["env", "carbex", "list"], &["--show"]);
    help_names(&["env", "carbex", "get"], &["<KEY>", "--show"]);
    help_names(&["env", "carbex", "set"], &["<KEY=VALUE>...", "--restart"]);
    help_names(&["env", "carbex", "unset"], &["<KEY>...", "--restart"]);
    help_names(&["lock"], &["<APP>", "--reason <TEXT>"]);
    help_names(&["unlock"], &["<APP>", "--force"]);
}

#[test]
fn bad_job_flags_are_usage_errors() {
    let fleet = ["--fleet", "/nonexistent/fleet.toml"];
    let cases: [(&[&str], &str); 6] = [
        (&["rollback", "carbex", "--restore-db"], "--yes"),
        (
            &["deploy", "carbex", "--ref", "main", "--force"],
            "--reason",
        ),
        (&["deploy", "carbex"], "--ref"),
        (&["env", "carbex", "set", "APP_DEBUG"], "APP_DEBUG=VALUE"),
        (&["env", "carbex", "set", "1X=2"], "invalid key"),
        (&["lock", "carbex"], "--reason"),
    ];
    for (args, needle) in cases {
        let mut all = fleet.to_vec();
        all.extend_from_slice(args);
        let (code, _, err) = hoist(&all);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let (code, _, err) = hoist(&["rollback", "carbex", "--restore-db"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("restores the database from the release's backup"),
        "{err}"
    );
    // Valid flags reach the fleet file, whose absence is a usage error too.
    let (code, _, err) = hoist(&[
        "deploy",
        "carbex",
        "--ref",
        "main",
        "--fleet",
        "/nonexistent/fleet.toml",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/nonexistent/fleet.toml"), "{err}");
}

#[test]
fn missing_fleet_file_is_a_usage_error() {
    let (code, _, err) = hoist(&["status", "--fleet", "/nonexistent/fleet.toml"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("/nonexistent/fleet.toml"), "{err}");
}

#[test]
fn ca_refuses_to_overwrite_and_checks_roles() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().to_str().unwrap();
    assert_eq!(hoist(&["ca", "init", ca]).0, Some(0));
    let (code, _, err) = hoist(&["ca", "init", ca]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--force"), "{err}");
    assert_eq!(hoist(&["ca", "init", ca, "--force"]).0, Some(0));

    let (code, _, err) = hoist(&[
        "ca", "issue", "--ca", ca, "--user", "bob", "--role", "admin",
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("viewer") && err.contains("deployer"), "{err}");

    let (code, _, err) = hoist(&[
        "ca", "issue", "--ca", ca, "--user", "../bob", "--role", "viewer",
    ]);
    assert_eq!(code, Some(2), "{err}");

    assert_eq!(
        hoist(&[
            "ca", "issue", "--ca", ca, "--user", "bob", "--role", "viewer"
        ])
        .0,
        Some(0)
    );
    let (code, _, err) = hoist(&[
        "ca", "issue", "--ca", ca, "--user", "bob", "--role", "viewer",
    ]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--force"), "{err}");
    let mode = std::fs::metadata(dir.path().join("bob.key")).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(mode.permissions().mode() & 0o777, 0o600);
}
