//! Certificate lifetime and revocation against a real hoistd: `hoist ca revoke` writes a
//! CRL the agent applies on SIGHUP without a restart; lifetimes fit their use; the
//! agent's certificate expiry is a metric; the CLI names the certificate file and the
//! fix when its certificate is expired, from another CA, or revoked.

use std::path::PathBuf;

use hoist_proto::v1::GetInfoRequest;
use hoist_tests::{
    harness::{AgentBuilder, Pki, Who, connect_with, hoist},
    services::tls,
};

fn pair(pki: &Pki, name: &str) -> Option<(PathBuf, PathBuf)> {
    let dir = pki.ca_dir();
    Some((
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    ))
}

fn hoist_ok(args: &[&str]) -> String {
    let (status, out, err) = hoist(args);
    assert!(status.success(), "hoist {args:?} failed: {out}{err}");
    out
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_after_sighup_and_others_still_work() {
    let pki = Pki::new();
    let ca = pki.ca_dir();
    let ca_s = ca.to_str().unwrap();
    hoist_ok(&[
        "ca", "issue", "--ca", ca_s, "--user", "leaky", "--role", "deployer",
    ]);
    let agent = AgentBuilder::new(&pki).start().await;

    let mut leaky = connect_with(&agent.grpc, &pki, pair(&pki, "leaky"))
        .await
        .expect("connect before revocation");
    leaky.get_info(GetInfoRequest {}).await.expect("allowed");

    let out = hoist_ok(&["ca", "revoke", "--ca", ca_s, "leaky"]);
    assert!(
        out.contains("crl.pem") && out.contains("1 revoked"),
        "{out}"
    );
    // Idempotent, and the same certificate by its serial.
    let again = hoist_ok(&["ca", "revoke", "--ca", ca_s, "leaky"]);
    assert!(again.contains("already revoked"), "{again}");
    let serial = out
        .split_whitespace()
        .nth(1)
        .expect("serial in output")
        .to_string();
    let by_serial = hoist_ok(&["ca", "revoke", "--ca", ca_s, &serial]);
    assert!(by_serial.contains("already revoked"), "{by_serial}");
    let (status, _, err) = hoist(&["ca", "revoke", "--ca", ca_s, "nobody"]);
    assert!(!status.success());
    assert!(err.contains("names no certificate"), "{err}");

    // Before the reload the running agent still accepts it; after SIGHUP (no restart)
    // the handshake is refused.
    let pid = agent.pid();
    agent.reload().await;
    assert_eq!(agent.pid(), pid);
    let refused = match connect_with(&agent.grpc, &pki, pair(&pki, "leaky")).await {
        Err(err) => Some(err),
        Ok(mut client) => client
            .get_info(GetInfoRequest {})
            .await
            .err()
            .map(|s| format!("{}: {}", s.message(), hoist_tests::harness::error_chain(&s))),
    };
    let refused = refused.expect("a revoked certificate must be refused at the handshake");
    assert!(!refused.is_empty());
    assert!(
        agent.log_text().contains("TLS handshake refused"),
        "{}",
        agent.log_text()
    );

    // Everyone else is unaffected.
    for who in [Who::Deployer, Who::Viewer] {
        let mut client = agent.connect(&pki, who).await.unwrap();
        client
            .get_info(GetInfoRequest {})
            .await
            .expect("still allowed");
    }
    // A configured CRL that cannot be read: the reload is refused and the running TLS
    // config (with the CRL) stays.
    let config = std::fs::read_to_string(&agent.config).unwrap();
    let key_line = config.lines().find(|l| l.starts_with("key = ")).unwrap();
    std::fs::write(
        &agent.config,
        config.replace(
            key_line,
            &format!("{key_line}\ncrl = \"{}\"", ca.join("missing.pem").display()),
        ),
    )
    .unwrap();
    let refused_before = agent.log_text().matches("reload refused").count();
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while agent.log_text().matches("reload refused").count() == refused_before {
        assert!(std::time::Instant::now() < deadline, "{}", agent.log_text());
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        agent.log_text().contains("missing.pem"),
        "{}",
        agent.log_text()
    );
    let mut viewer = agent.connect(&pki, Who::Viewer).await.unwrap();
    viewer
        .get_info(GetInfoRequest {})
        .await
        .expect("still serving");
    let still_refused = match connect_with(&agent.grpc, &pki, pair(&pki, "leaky")).await {
        Err(_) => true,
        Ok(mut client) => client.get_info(GetInfoRequest {}).await.is_err(),
    };
    assert!(still_refused, "the running CRL stays in force");
    std::fs::write(&agent.config, config).unwrap();
    // The CLI names the reason and the fix.
    let fleet = tempfile::tempdir().unwrap();
    let fleet_toml = fleet.path().join("fleet.toml");
    let tls = pki
        .fleet_tls(Who::Deployer)
        .replace("dana.pem", "leaky.pem")
        .replace("dana.key", "leaky.key");
    std::fs::write(&fleet_toml, format!("{tls}{}", agent.fleet_entry("web-1"))).unwrap();
    let (status, out, err) = hoist(&["--fleet", fleet_toml.to_str().unwrap(), "status"]);
    assert!(!status.success(), "{out}{err}");
    let text = format!("{out}{err}");
    assert!(text.contains("revoked"), "{text}");
    assert!(text.contains("leaky.pem"), "{text}");
    assert!(text.contains("hoist ca issue"), "{text}");

    // Without the CRL at hand (the fleet's CA file elsewhere), the agent's refusal is
    // still explained rather than a bare "broken pipe".
    let lone_ca = fleet.path().join("ca.pem");
    std::fs::copy(ca.join("ca.pem"), &lone_ca).unwrap();
    let tls = tls.replace(
        &ca.join("ca.pem").display().to_string(),
        &lone_ca.display().to_string(),
    );
    std::fs::write(&fleet_toml, format!("{tls}{}", agent.fleet_entry("web-1"))).unwrap();
    let (status, out, err) = hoist(&["--fleet", fleet_toml.to_str().unwrap(), "status"]);
    assert!(!status.success(), "{out}{err}");
    let text = format!("{out}{err}");
    assert!(
        text.contains("the agent refused your certificate")
            && text.contains("leaky.pem: it is revoked"),
        "{text}"
    );
}

/// A user certificate signed by the CA in `ca_dir` valid from `from` to `until` days
/// from now (negative: in the past), written as NAME.pem/NAME.key into `dir`.
fn issue_window(
    ca_dir: &std::path::Path,
    dir: &std::path::Path,
    name: &str,
    from: i64,
    until: i64,
) {
    tls::issue_window(ca_dir, dir, name, from, until, false)
}

#[tokio::test]
async fn expired_foreign_and_expiring_certificates_are_named_with_the_fix() {
    let pki = Pki::new();
    let ca = pki.ca_dir();
    let agent = AgentBuilder::new(&pki).start().await;
    let dir = tempfile::tempdir().unwrap();
    issue_window(&ca, dir.path(), "old", -30, -2);
    issue_window(&ca, dir.path(), "soon", -1, 3);
    let fleet_toml = dir.path().join("fleet.toml");
    let run = |cert: &std::path::Path, key: &std::path::Path| {
        let tls = format!(
            "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            ca.join("ca.pem").display(),
            cert.display(),
            key.display()
        );
        std::fs::write(&fleet_toml, format!("{tls}{}", agent.fleet_entry("web-1"))).unwrap();
        hoist(&["--fleet", fleet_toml.to_str().unwrap(), "status"])
    };

    let (status, out, err) = run(&dir.path().join("old.pem"), &dir.path().join("old.key"));
    assert!(!status.success(), "{out}{err}");
    let expired_on = (time::OffsetDateTime::now_utc() - time::Duration::days(2)).date();
    assert!(
        err.contains(&format!("old.pem expired on {expired_on}")),
        "{err}"
    );
    assert!(err.contains("hoist ca issue"), "{err}");

    let (foreign_cert, foreign_key) = pki.identity(Who::Foreign).unwrap();
    let (status, out, err) = run(&foreign_cert, &foreign_key);
    assert!(!status.success(), "{out}{err}");
    assert!(err.contains("mallory.pem is signed by another CA"), "{err}");

    let (status, out, err) = run(&dir.path().join("soon.pem"), &dir.path().join("soon.key"));
    assert!(status.success(), "{out}{err}");
    assert!(
        err.contains("soon.pem expires on") && err.contains("day(s)"),
        "{err}"
    );
    // A fresh 90-day certificate gets no warning.
    let (viewer_cert, viewer_key) = pki.identity(Who::Viewer).unwrap();
    let (status, out, err) = run(&viewer_cert, &viewer_key);
    assert!(status.success(), "{out}{err}");
    assert!(!err.contains("warning"), "{err}");
}

#[tokio::test]
async fn lifetimes_fit_their_use_and_the_agent_exposes_its_expiry() {
    let pki = Pki::new();
    let ca = pki.ca_dir();
    let ca_s = ca.to_str().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let days = |out: &str| {
        let date = out
            .rsplit("valid until ")
            .next()
            .unwrap()
            .trim_end_matches([')', '\n']);
        date.to_string()
    };
    let user = hoist_ok(&[
        "ca", "issue", "--ca", ca_s, "--user", "ops", "--role", "viewer",
    ]);
    let agent_out = hoist_ok(&[
        "ca", "issue", "--ca", ca_s, "--agent", "web-9", "--san", "10.0.0.9",
    ]);
    let short = hoist_ok(&[
        "ca", "issue", "--ca", ca_s, "--user", "tmp", "--role", "viewer", "--days", "7",
    ]);
    let date_in = |d: i64| {
        let (y, m, dd) = civil(now + d * 86400);
        format!("{y:04}-{m:02}-{dd:02}")
    };
    assert_eq!(days(&user), date_in(90), "{user}");
    assert_eq!(days(&agent_out), date_in(365), "{agent_out}");
    assert_eq!(days(&short), date_in(7), "{short}");

    let agent = AgentBuilder::new(&pki).start().await;
    let metrics = agent.scrape().await.unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("hoist_agent_certificate_expiry_timestamp_seconds "))
        .unwrap_or_else(|| panic!("no expiry metric:\n{metrics}"));
    let value: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let value = value as i64;
    assert!(
        (value - (now + 365 * 86400)).abs() < 3600,
        "{line} vs now {now}"
    );
}

/// (year, month, day) of a Unix time, UTC (Howard Hinnant's civil_from_days).
fn civil(secs: i64) -> (i64, u32, u32) {
    let z = secs.div_euclid(86400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[tokio::test]
async fn an_agent_certificate_from_another_ca_is_named() {
    let ours = Pki::new();
    let theirs = Pki::new();
    let agent = AgentBuilder::new(&theirs).start().await;
    let dir = tempfile::tempdir().unwrap();
    let fleet_toml = dir.path().join("fleet.toml");
    std::fs::write(
        &fleet_toml,
        format!(
            "{}{}",
            ours.fleet_tls(Who::Deployer),
            agent.fleet_entry("web-1")
        ),
    )
    .unwrap();
    let (status, out, err) = hoist(&["--fleet", fleet_toml.to_str().unwrap(), "status"]);
    assert!(!status.success(), "{out}{err}");
    let text = format!("{out}{err}");
    assert!(
        text.contains("the agent's certificate is not signed by the fleet CA"),
        "{text}"
    );
}

#[tokio::test]
async fn an_expired_agent_certificate_is_named() {
    let pki = Pki::new();
    let ca = pki.ca_dir();
    // The agent starts with a certificate that expired yesterday.
    tls::issue_window(&ca, &ca, "agent", -30, -1, true);
    let agent = AgentBuilder::new(&pki).start().await;
    let dir = tempfile::tempdir().unwrap();
    let fleet_toml = dir.path().join("fleet.toml");
    std::fs::write(
        &fleet_toml,
        format!(
            "{}{}",
            pki.fleet_tls(Who::Viewer),
            agent.fleet_entry("web-1")
        ),
    )
    .unwrap();
    let (status, out, err) = hoist(&["--fleet", fleet_toml.to_str().unwrap(), "status"]);
    assert!(!status.success(), "{out}{err}");
    let text = format!("{out}{err}");
    assert!(
        text.contains("the agent's certificate has expired; renew it with `hoist ca issue --agent"),
        "{text}"
    );
    // Its own metric says so too.
    let metrics = agent.scrape().await.unwrap();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("hoist_agent_certificate_expiry_timestamp_seconds "))
        .unwrap();
    let value: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(value < now, "{line}");
}
