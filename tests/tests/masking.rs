//! Masking by key, through the real CLI and agent: the values of secret keys of
//! `shared/.env` (the default patterns and the app's `secret_keys`) and URL passwords
//! stay hidden in every output path — the live deploy stream, `hoist log --job`,
//! `hoist attach`, `hoist env list`, a failed check's error and the webhook messages —
//! while ordinary values (hosts, `APP_ENV`, the app's own name) stay readable. The
//! webhook messages name who, the app, ref → commit, the hosts, the duration, what
//! failed and the forced deploy's reason, in their text.

use std::os::unix::fs::PermissionsExt as _;

use hoist_tests::{
    harness::{AgentBuilder, Pki, Who, app_user_lines, hoist},
    services::{git::AppRepo, webhook::Receiver},
};

const SECRETS: [&str; 4] = [
    "Sup3rSecretPw",
    "PgPass-777",
    "sk_test_declared",
    "R3disPass",
];

/// Prints every `.env` value next to the words that must stay readable.
const PRINT: &str = r#". ./.env; echo "env $APP_ENV host $DB_HOST app ${APP_NAME}-worker:* pw $DB_PASSWORD url $DATABASE_URL stripe $STRIPE_SK redis $REDIS_URL health http://$DB_HOST:51081/health""#;

#[tokio::test]
async fn secrets_stay_hidden_everywhere_and_ordinary_values_readable() {
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let deploy_to = root.path().join("carbex");
    std::fs::create_dir_all(deploy_to.join("shared")).unwrap();
    std::fs::set_permissions(
        deploy_to.join("shared"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(
        deploy_to.join("shared/.env"),
        "APP_NAME=carbex\nAPP_ENV=production\nDB_HOST=127.0.0.1\nDB_PASSWORD=Sup3rSecretPw\n\
         DATABASE_URL=postgres://carbex:PgPass-777@127.0.0.1:5432/carbex\n\
         STRIPE_SK=sk_test_declared\nREDIS_URL=redis://default:R3disPass@127.0.0.1:6379/0\n",
    )
    .unwrap();
    std::fs::set_permissions(
        deploy_to.join("shared/.env"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let repo = AppRepo::new_static(&[("index.html", "v\n")]);
    repo.commit_version("1", &[]);
    let pki = Pki::new();
    let run_as = app_user_lines();
    let app = format!(
        r#"[[app]]
name = "carbex"
repo = "{}"
deploy_to = "{}"
{run_as}step_timeout = "30s"
shared_files = [".env"]
secret_keys = ["STRIPE_*"]

[app.steps]
build = '{PRINT}'

[[app.checks]]
kind = "command"
name = "db reachable"
command = '. ./.env; if test -f BROKEN; then echo "db refused $DB_PASSWORD at $DB_HOST"; exit 1; fi'
retries = 1
"#,
        repo.url(),
        deploy_to.display(),
    );
    let agent = AgentBuilder::new(&pki).apps(&app).start().await;
    let hooks = Receiver::start();
    let fleet = root.path().join("fleet.toml");
    std::fs::write(
        &fleet,
        format!(
            "{}{}\n[notify]\nwebhooks = [\"{}\"]\n",
            pki.fleet_tls(Who::Deployer),
            agent.fleet_entry("web-1"),
            hooks.url()
        ),
    )
    .unwrap();
    let fl = fleet.display().to_string();
    let hidden = |what: &str, text: &str| {
        for secret in SECRETS {
            assert!(!text.contains(secret), "{what} shows {secret}:\n{text}");
        }
    };

    // A forced deploy: the live stream masks by key, and keeps ordinary values.
    let (status, out, err) = hoist(&[
        "deploy",
        "carbex",
        "--ref",
        "main",
        "--force",
        "--reason",
        "hotfix INC-42",
        "--fleet",
        &fl,
    ]);
    assert!(status.success(), "{out}{err}");
    hidden("the deploy stream", &format!("{out}{err}"));
    let readable = "env production host 127.0.0.1 app carbex-worker:* pw •••• url •••• stripe •••• \
                    redis redis://default:••••@127.0.0.1:6379/0 health http://127.0.0.1:51081/health";
    assert!(out.contains(readable), "{out}");

    // The stored log, attach and env list.
    let (_, log, _) = hoist(&["log", "carbex", "--json", "--fleet", &fl]);
    let jobs: serde_json::Value = serde_json::from_str(&log).unwrap();
    let job = jobs["hosts"][0]["jobs"][0]["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, text, _) = hoist(&["log", "carbex", "--job", &job, "--fleet", &fl]);
    hidden("hoist log --job", &text);
    assert!(text.contains(readable), "{text}");
    let (_, text, err) = hoist(&["attach", &job, "--fleet", &fl]);
    hidden("hoist attach", &format!("{text}{err}"));
    assert!(text.contains(readable), "{text}{err}");
    let (status, text, err) = hoist(&["env", "carbex", "list", "--fleet", &fl]);
    assert!(status.success(), "{text}{err}");
    hidden("hoist env list", &text);
    assert!(text.contains("DB_PASSWORD"), "{text}");

    // A check that fails, printing the password: rolled back; the error is masked.
    repo.commit_version("2", &[("BROKEN", "1\n")]);
    let (status, out, err) = hoist(&["deploy", "carbex", "--ref", "main", "--fleet", &fl]);
    assert_eq!(status.code(), Some(1), "{out}{err}");
    hidden("a failed deploy", &format!("{out}{err}"));
    assert!(
        format!("{out}{err}").contains("db refused •••• at 127.0.0.1"),
        "{out}{err}"
    );

    // The webhook messages: no secret anywhere, and the facts in the text.
    let bodies = hooks.bodies();
    hidden("the webhooks", &serde_json::to_string(&bodies).unwrap());
    assert_eq!(
        hooks.events(),
        ["start", "success", "start", "failure"],
        "{:?}",
        hooks.texts()
    );
    let texts = hooks.texts();
    let short = &repo.head()[..7];
    let success = &texts[1];
    for part in [
        "succeeded on web-1",
        "by dana",
        "app carbex",
        "ref main → ",
        "hosts web-1",
        "took ",
        "forced: hotfix INC-42",
    ] {
        assert!(success.contains(part), "{part:?} not in {success}");
    }
    assert!(texts[0].contains("forced: hotfix INC-42"), "{}", texts[0]);
    let failure = &texts[3];
    for part in [
        "by dana",
        &format!("ref main → {short}"),
        "hosts web-1",
        "failed: web-1: ",
        "db reachable",
    ] {
        assert!(failure.contains(part), "{part:?} not in {failure}");
    }
    assert!(!failure.contains("forced"), "{failure}");
    drop(agent);
}
