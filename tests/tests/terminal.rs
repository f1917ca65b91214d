//! Text from requests and agents reaches the operator's terminal with its control
//! characters shown, never interpreted: a lock reason with ANSI escapes, through the
//! real agent and the real CLI.

use hoist_proto::v1::LockRequest;
use hoist_tests::harness::{AgentBuilder, Pki, Who, hoist};

const EVIL: &str = "maint \u{1b}[2J\u{1b}]0;pwned\u{7} \u{9b}31m done";

#[tokio::test]
async fn a_lock_reason_with_escapes_is_printed_visibly() {
    let root = tempfile::tempdir().unwrap();
    let deploy_to = root.path().join("shop");
    std::fs::create_dir_all(&deploy_to).unwrap();
    let pki = Pki::new();
    let agent = AgentBuilder::new(&pki)
        .apps(&format!(
            "[[app]]\nname = \"shop\"\nrepo = \"/nonexistent.git\"\ndeploy_to = \"{}\"\n",
            deploy_to.display()
        ))
        .start()
        .await;
    let mut client = agent.connect(&pki, Who::Deployer).await.unwrap();
    client
        .lock(LockRequest {
            app: "shop".into(),
            reason: EVIL.into(),
            deploy_id: "evil-1".into(),
            ttl_ms: 0,
        })
        .await
        .expect("the reason is within bounds");

    let fleet = root.path().join("fleet.toml");
    std::fs::write(
        &fleet,
        format!(
            "{}{}",
            pki.fleet_tls(Who::Deployer),
            agent.fleet_entry("web-1")
        ),
    )
    .unwrap();
    let fleet_s = fleet.to_str().unwrap();
    // Another lock is refused; the refusal quotes the holder's reason.
    let (status, out, err) = hoist(&["--fleet", fleet_s, "lock", "shop", "--reason", "mine"]);
    assert!(!status.success(), "{out}{err}");
    let text = format!("{out}{err}");
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}') && !text.contains('\u{9b}'),
        "{text:?}"
    );
    assert!(text.contains("evil-1"), "{text}");

    // `hoist unlock` without --force names the lock and its reason, as the agent
    // reported it in its status: shown, not interpreted.
    let (status, out, err) = hoist(&["--fleet", fleet_s, "unlock", "shop"]);
    assert!(!status.success(), "{out}{err}");
    let text = format!("{out}{err}");
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}') && !text.contains('\u{9b}'),
        "{text:?}"
    );
    assert!(
        text.contains("maint \\e[2J\\e]0;pwned\\x07 \\u{9b}31m done"),
        "{text}"
    );
    // JSON output is escaped by JSON itself.
    let (_, out, _) = hoist(&[
        "--fleet", fleet_s, "--json", "lock", "shop", "--reason", "x",
    ]);
    assert!(!out.contains('\u{1b}'), "{out:?}");
}
