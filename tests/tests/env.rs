//! `shared/.env` editing through the agent: order and comments kept, values hidden in
//! every event and listing unless asked, showing values needs the deployer role.

use std::time::Duration;

use hoist_proto::v1::{
    EnvListRequest, EnvSetRequest, EnvUnsetRequest, EnvVar, JobEvent, JobResult, job_event::Kind,
};
use hoist_tests::harness::{AgentBuilder, Pki, Who};
use tokio_stream::StreamExt as _;

const ORIGINAL: &str = "# Laravel\nAPP_NAME=shop\nAPP_KEY=\"base64:oldsecretvalue\"\n\n# database\nDB_HOST=127.0.0.1\n";

async fn finish(stream: tonic::Streaming<JobEvent>) -> Vec<JobEvent> {
    tokio::time::timeout(
        Duration::from_secs(60),
        stream.map(|e| e.unwrap()).collect(),
    )
    .await
    .expect("env job finished")
}

#[tokio::test]
async fn env_edits_keep_the_file_and_hide_values() {
    let root = tempfile::tempdir().unwrap();
    let deploy_to = root.path().join("shop");
    std::fs::create_dir_all(deploy_to.join("shared")).unwrap();
    let env_path = deploy_to.join("shared/.env");
    std::fs::write(&env_path, ORIGINAL).unwrap();
    let pki = Pki::new();
    let agent = AgentBuilder::new(&pki)
        .apps(&format!(
            "[[app]]\nname = \"shop\"\nrepo = \"/nonexistent.git\"\ndeploy_to = \"{}\"\nshared_files = [\".env\"]\n",
            deploy_to.display()
        ))
        .start()
        .await;
    let mut deployer = agent.connect(&pki, Who::Deployer).await.unwrap();
    let mut viewer = agent.connect(&pki, Who::Viewer).await.unwrap();

    let events = finish(
        deployer
            .env_set(EnvSetRequest {
                app: "shop".into(),
                vars: vec![
                    EnvVar {
                        key: "APP_KEY".into(),
                        value: "base64:newsecretvalue".into(),
                        redacted: false,
                    },
                    EnvVar {
                        key: "MAIL_PASSWORD".into(),
                        value: "hunter2 with spaces".into(),
                        redacted: false,
                    },
                ],
                restart: false,
                job_id: "env-1".into(),
            })
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    let finished = events.iter().find_map(|e| match &e.kind {
        Some(Kind::Finished(f)) => Some(f.result()),
        _ => None,
    });
    assert_eq!(finished, Some(JobResult::Succeeded));
    let transcript = format!("{events:?}");
    assert!(transcript.contains("set APP_KEY: changed"), "{transcript}");
    assert!(
        transcript.contains("set MAIL_PASSWORD: added"),
        "{transcript}"
    );
    for secret in ["newsecretvalue", "hunter2", "oldsecretvalue"] {
        assert!(!transcript.contains(secret), "{secret} leaked into events");
    }
    assert!(!agent.log_text().contains("newsecretvalue"));

    // Order, comments and untouched lines are kept; the new key goes at the end.
    let text = std::fs::read_to_string(&env_path).unwrap();
    assert!(
        text.starts_with("# Laravel\nAPP_NAME=shop\nAPP_KEY="),
        "{text}"
    );
    assert!(
        text.contains("\n\n# database\nDB_HOST=127.0.0.1\n"),
        "{text}"
    );
    assert!(
        text.trim_end()
            .ends_with("MAIL_PASSWORD='hunter2 with spaces'"),
        "{text}"
    );

    // Listing: hidden by default; --show needs deployer.
    let hidden = viewer
        .env_list(EnvListRequest {
            app: "shop".into(),
            show: false,
        })
        .await
        .unwrap()
        .into_inner()
        .vars;
    let keys: Vec<&str> = hidden.iter().map(|v| v.key.as_str()).collect();
    assert_eq!(keys, ["APP_NAME", "APP_KEY", "DB_HOST", "MAIL_PASSWORD"]);
    assert!(
        hidden
            .iter()
            .all(|v| v.redacted && !v.value.contains("secret"))
    );
    let denied = viewer
        .env_list(EnvListRequest {
            app: "shop".into(),
            show: true,
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let shown = deployer
        .env_list(EnvListRequest {
            app: "shop".into(),
            show: true,
        })
        .await
        .unwrap()
        .into_inner()
        .vars;
    let key = shown.iter().find(|v| v.key == "MAIL_PASSWORD").unwrap();
    assert_eq!(key.value, "hunter2 with spaces");

    // Unset, and bad input that changes nothing.
    finish(
        deployer
            .env_unset(EnvUnsetRequest {
                app: "shop".into(),
                keys: vec!["MAIL_PASSWORD".into()],
                restart: false,
                job_id: "env-2".into(),
            })
            .await
            .unwrap()
            .into_inner(),
    )
    .await;
    assert!(
        !std::fs::read_to_string(&env_path)
            .unwrap()
            .contains("MAIL_PASSWORD")
    );
    let before = std::fs::read_to_string(&env_path).unwrap();
    for (key, value) in [("1BAD", "x"), ("OK", "two\nlines"), ("A-B", "x")] {
        let err = deployer
            .env_set(EnvSetRequest {
                app: "shop".into(),
                vars: vec![EnvVar {
                    key: key.into(),
                    value: value.into(),
                    redacted: false,
                }],
                restart: false,
                job_id: "env-bad".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{key}");
    }
    assert_eq!(std::fs::read_to_string(&env_path).unwrap(), before);
    // Viewers cannot edit.
    let err = viewer
        .env_unset(EnvUnsetRequest {
            app: "shop".into(),
            keys: vec!["APP_NAME".into()],
            restart: false,
            job_id: "env-3".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
}
