//! Every request field is bounded (SPEC §2): out-of-range values are InvalidArgument
//! with a short message and change nothing, against a real hoistd with the tonic client.

use hoist_proto::v1::{
    AttachRequest, DeployRequest, EnvSetRequest, EnvUnsetRequest, EnvVar, JobLogRequest,
    LockRequest, RecordRefusalRequest, RestartRequest, RollbackRequest, StatusRequest,
    UnlockRequest, WatchStatusRequest, agent_client::AgentClient,
};
use hoist_tests::harness::{AgentBuilder, Pki, Who};
use tonic::{Code, transport::Channel};

const ENV: &str = "APP_NAME=shop\nDB_HOST=127.0.0.1\n";

/// The status's lock of `shop`, if any.
async fn lock_of(client: &mut AgentClient<Channel>) -> Option<hoist_proto::v1::LockInfo> {
    let status = client
        .status(StatusRequest { app: "shop".into() })
        .await
        .unwrap()
        .into_inner();
    status.apps.into_iter().find(|a| a.name == "shop")?.lock
}

fn assert_short_invalid(what: &str, status: tonic::Status) {
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "{what}: {}",
        &status.message()[..status.message().len().min(300)]
    );
    assert!(
        status.message().len() < 200,
        "{what}: message of {} bytes: {}",
        status.message().len(),
        &status.message()[..300.min(status.message().len())]
    );
}

#[tokio::test]
async fn out_of_range_requests_are_refused_and_change_nothing() {
    let root = tempfile::tempdir().unwrap();
    let deploy_to = root.path().join("shop");
    std::fs::create_dir_all(deploy_to.join("shared")).unwrap();
    let env_path = deploy_to.join("shared/.env");
    std::fs::write(&env_path, ENV).unwrap();
    let pki = Pki::new();
    let agent = AgentBuilder::new(&pki)
        .apps(&format!(
            "[[app]]\nname = \"shop\"\nrepo = \"/nonexistent.git\"\ndeploy_to = \"{}\"\nshared_files = [\".env\"]\n",
            deploy_to.display()
        ))
        .start()
        .await;
    let mut client = agent.connect(&pki, Who::Deployer).await.unwrap();

    // A ttl that would wrap the expiry: refused, and nothing is locked.
    let err = client
        .lock(LockRequest {
            app: "shop".into(),
            reason: "wrap".into(),
            deploy_id: "lock-a".into(),
            ttl_ms: u64::MAX,
        })
        .await
        .unwrap_err();
    assert_short_invalid("ttl 2^64-1", err.clone());
    assert!(err.message().contains("ttl_ms"), "{}", err.message());
    assert!(lock_of(&mut client).await.is_none());
    // Another id can lock: nothing was held.
    client
        .lock(LockRequest {
            app: "shop".into(),
            reason: "maintenance".into(),
            deploy_id: "lock-b".into(),
            ttl_ms: 60_000,
        })
        .await
        .expect("a bounded ttl locks");
    let held = lock_of(&mut client).await.expect("locked");
    assert_eq!(held.deploy_id, "lock-b");
    let (since, expires) = (held.since.unwrap(), held.expires_at.unwrap());
    assert!(expires.seconds > since.seconds, "{since:?} {expires:?}");
    client
        .unlock(UnlockRequest {
            app: "shop".into(),
            deploy_id: "lock-b".into(),
            force: false,
        })
        .await
        .unwrap();

    // 1 MB names, refs, ids and reasons: InvalidArgument with a short message.
    let big = "x".repeat(1 << 20);
    let s = |s: &str| s.to_string();
    assert_short_invalid(
        "status app",
        client
            .status(StatusRequest { app: big.clone() })
            .await
            .unwrap_err(),
    );
    let mut watch = client
        .watch_status(WatchStatusRequest {
            app: String::new(),
            interval_ms: u64::MAX,
        })
        .await;
    if let Ok(stream) = watch.as_mut() {
        // Streams may report the refusal on the first message instead.
        watch = stream.get_mut().message().await.map(|_| unreachable!());
    }
    assert_short_invalid("watch interval", watch.unwrap_err());
    for (what, req) in [
        (
            "deploy app",
            DeployRequest {
                app: big.clone(),
                r#ref: s("main"),
                deploy_id: s("d-1"),
                ..Default::default()
            },
        ),
        (
            "deploy ref",
            DeployRequest {
                app: s("shop"),
                r#ref: big.clone(),
                deploy_id: s("d-1"),
                ..Default::default()
            },
        ),
        (
            "deploy id",
            DeployRequest {
                app: s("shop"),
                r#ref: s("main"),
                deploy_id: big.clone(),
                ..Default::default()
            },
        ),
        (
            "deploy reason",
            DeployRequest {
                app: s("shop"),
                r#ref: s("main"),
                deploy_id: s("d-1"),
                reason: big.clone(),
                ..Default::default()
            },
        ),
    ] {
        assert_short_invalid(what, client.deploy(req).await.unwrap_err());
    }
    assert_short_invalid(
        "rollback release",
        client
            .rollback(RollbackRequest {
                app: s("shop"),
                to_release: big.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
    );
    assert_short_invalid(
        "restart service",
        client
            .restart(RestartRequest {
                app: s("shop"),
                service: big.clone(),
                job_id: s("r-1"),
            })
            .await
            .unwrap_err(),
    );
    assert_short_invalid(
        "attach id",
        client
            .attach(AttachRequest {
                job_id: big.clone(),
            })
            .await
            .unwrap_err(),
    );
    assert_short_invalid(
        "job log limit",
        client
            .job_log(JobLogRequest {
                app: s("shop"),
                job_id: String::new(),
                limit: u32::MAX,
                ..Default::default()
            })
            .await
            .unwrap_err(),
    );
    assert_short_invalid(
        "lock reason",
        client
            .lock(LockRequest {
                app: s("shop"),
                reason: big.clone(),
                deploy_id: s("lock-c"),
                ttl_ms: 0,
            })
            .await
            .unwrap_err(),
    );
    assert_short_invalid(
        "refusal reason",
        client
            .record_refusal(RecordRefusalRequest {
                app: s("shop"),
                job_id: s("x-1"),
                reason: big.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err(),
    );
    assert!(lock_of(&mut client).await.is_none());

    // A 1 MB env key is refused and .env is unchanged; so is an oversized value, whose
    // content never appears in the error.
    let key = "K".repeat(1 << 20);
    assert_short_invalid(
        "env key",
        client
            .env_set(EnvSetRequest {
                app: s("shop"),
                vars: vec![EnvVar {
                    key,
                    value: s("v"),
                    redacted: false,
                }],
                restart: false,
                job_id: s("env-1"),
            })
            .await
            .unwrap_err(),
    );
    let err = client
        .env_set(EnvSetRequest {
            app: s("shop"),
            vars: vec![EnvVar {
                key: s("SECRET"),
                value: "s".repeat(100 * 1024),
                redacted: false,
            }],
            restart: false,
            job_id: s("env-2"),
        })
        .await
        .unwrap_err();
    assert!(!err.message().contains("sss"), "{}", err.message());
    assert_short_invalid("env value", err);
    assert_short_invalid(
        "env unset count",
        client
            .env_unset(EnvUnsetRequest {
                app: s("shop"),
                keys: (0..1000).map(|i| format!("K{i}")).collect(),
                restart: false,
                job_id: s("env-3"),
            })
            .await
            .unwrap_err(),
    );
    assert_eq!(std::fs::read_to_string(&env_path).unwrap(), ENV);
    // Nothing was recorded for any refused request.
    let log = client
        .job_log(JobLogRequest {
            app: s("shop"),
            job_id: String::new(),
            limit: 0,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(log.jobs.is_empty(), "{:?}", log.jobs);
}
