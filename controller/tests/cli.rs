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
        "ca", "status", "targets", "demo", "--fleet", "--hosts", "--group", "--json",
    ] {
        assert!(out.contains(cmd), "missing {cmd}:\n{out}");
    }
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
