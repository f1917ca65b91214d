//! The `hoistd` binary's command line: the shipped example config validates, and
//! `--help` names the commands.

// This test runs the built binary, from outside the agent.
#![allow(clippy::disallowed_methods)]

use std::process::Command;

fn hoistd(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hoistd"))
        .args(args)
        .output()
        .expect("run hoistd")
}

/// The shipped example parses and validates; what check-config still refuses on a
/// machine without certificates is only the TLS files it names (the e2e test
/// `shipped_example_config_passes_with_its_certificates` gives it real ones).
#[test]
fn shipped_example_config_is_valid_but_for_its_certificates() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/agent.toml");
    let out = hoistd(&["check-config", example]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        return; // this machine has /etc/hoist certificates
    }
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    let problems: Vec<&str> = stderr.lines().filter(|l| !l.contains("warning:")).collect();
    assert!(!problems.is_empty(), "{stderr}");
    for line in problems {
        assert!(
            line.contains("/etc/hoist/"),
            "not about the certificates: {line}\n{stderr}"
        );
    }
}

#[test]
fn missing_config_is_a_config_error() {
    let out = hoistd(&["check-config", "/nonexistent/agent.toml"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/agent.toml"));
}

#[test]
fn help_names_the_commands() {
    let out = hoistd(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("check-config"), "{text}");
    assert!(text.contains("--log-format"), "{text}");
}
