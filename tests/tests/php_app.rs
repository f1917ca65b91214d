//! The Laravel runbook, end to end, against real services: PostgreSQL, php-fpm behind
//! nginx, a supervisord queue worker, and git. Deploy v1, deploy v2 with a migration
//! and a backup, a broken v3 rolled back automatically, and a rollback that restores
//! the database.

use std::{os::unix::fs::PermissionsExt as _, time::Duration};

use hoist_proto::v1::{
    DeployRequest, JobEvent, JobResult, RollbackRequest, RunTaskRequest, agent_client::AgentClient,
    job_event::Kind,
};
use hoist_tests::{
    harness::{AgentBuilder, Pki, Who},
    services::{
        git::{AppRepo, php_app_env},
        nginx_php::{Nginx, PhpFpm, require_php_pgsql, require_php_web},
        postgres::{Postgres, pg_bin, require_postgres},
        supervisor::{Program, Supervisord},
    },
};
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;

const MIGRATION_2: &str = "CREATE TABLE tags (id bigserial PRIMARY KEY, label text NOT NULL);\n";
const MIGRATION_2_DOWN: &str = "DROP TABLE tags;\n";

async fn run(stream: tonic::Streaming<JobEvent>) -> (JobResult, String, String, Vec<JobEvent>) {
    let events: Vec<JobEvent> = tokio::time::timeout(
        Duration::from_secs(180),
        stream.map(|e| e.unwrap()).collect(),
    )
    .await
    .expect("job finished in time");
    let (res, rel, err) = events
        .iter()
        .find_map(|e| match &e.kind {
            Some(Kind::Finished(f)) => Some((f.result(), f.release.clone(), f.error.clone())),
            _ => None,
        })
        .expect("finished");
    (res, rel, err, events)
}

fn transcript(events: &[JobEvent]) -> String {
    events
        .iter()
        .map(|e| format!("{:?}", e.kind))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn deploy(
    client: &mut AgentClient<Channel>,
    id: &str,
    migrate: bool,
) -> (JobResult, String, String, Vec<JobEvent>) {
    let stream = client
        .deploy(DeployRequest {
            app: "shop".into(),
            r#ref: "main".into(),
            deploy_id: id.into(),
            migrate,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    run(stream).await
}

#[tokio::test]
async fn laravel_runbook_on_real_services() {
    let test = "laravel_runbook_on_real_services";
    if !require_postgres(test) || !require_php_web(test) || !require_php_pgsql(test) {
        return;
    }
    let Some(_) = hoist_tests::e2e::require("supervisord", "supervisor", test) else {
        return;
    };
    let pg = Postgres::start().unwrap();
    pg.create_database("shop").unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let deploy_to = root.path().join("shop");
    std::fs::create_dir_all(deploy_to.join("shared")).unwrap();
    std::fs::write(deploy_to.join("shared/.env"), php_app_env(&pg, "shop")).unwrap();

    let fpm = PhpFpm::start().unwrap();
    let nginx = Nginx::start(&deploy_to, &fpm).unwrap();
    let supervisor = Supervisord::start(&[Program {
        name: "shop-worker".into(),
        command: format!("php {}/current/artisan queue:work", deploy_to.display()),
        autostart: false,
        numprocs: 1,
        group: None,
    }])
    .unwrap();

    let repo = AppRepo::new_php_app();
    let pg_dump = pg_bin("pg_dump").unwrap();
    let pg_restore = pg_bin("pg_restore").unwrap();
    let conn = format!("-h 127.0.0.1 -p {} -U postgres", pg.port());
    let app = format!(
        r#"
[[app]]
name = "shop"
repo = "{repo}"
deploy_to = "{deploy_to}"
keep_releases = 5
shared_files = [".env"]
shared_dirs = ["storage"]
step_timeout = "60s"

[app.steps]
backup = '{pg_dump} -Fc {conn} shop > "$HOIST_BACKUP_FILE"'
maintenance_on = "php artisan down --retry=60"
migrate = "php artisan migrate --force"
migrate_rollback = "php artisan migrate:rollback --step=1 --force"
restore = ["{psql} -X -q -v ON_ERROR_STOP=1 {conn} -d shop -c 'DROP SCHEMA public CASCADE; CREATE SCHEMA public'", '{pg_restore} --exit-on-error {conn} -d shop "$HOIST_BACKUP_FILE"']
after_switch = ["php artisan config:cache", "php artisan queue:restart"]
maintenance_off = "php artisan up"

[app.tasks]
migrate_status = {{ command = "php artisan migrate:status", role = "viewer" }}

[[app.services]]
kind = "signal"
name = "php-fpm"
pidfile = "{fpm_pid}"
signal = "SIGUSR2"
timeout = "20s"

[[app.services]]
kind = "supervisor"
name = "shop-worker"
serverurl = "{serverurl}"
timeout = "20s"

[[app.checks]]
kind = "http"
name = "health"
url = "{health}"
expect_status = 200
expect_json = {{ status = "healthy", db = "up" }}
retries = 3
interval = "300ms"
timeout = "5s"
"#,
        repo = repo.url(),
        deploy_to = deploy_to.display(),
        pg_dump = pg_dump.display(),
        pg_restore = pg_restore.display(),
        psql = pg_bin("psql").unwrap().display(),
        fpm_pid = fpm.pidfile().display(),
        serverurl = supervisor.serverurl(),
        health = nginx.url("/api/health"),
    );
    let pki = Pki::new();
    let agent = AgentBuilder::new(&pki).apps(&app).start().await;
    let mut client = agent.connect(&pki, Who::Deployer).await.unwrap();

    // v1, with its first migration.
    let (res, rel1, err, events) = deploy(&mut client, "shop-v1", true).await;
    assert_eq!(
        res,
        JobResult::Succeeded,
        "{err}\n{}\n{}",
        transcript(&events),
        agent.log_text()
    );
    let (status, body) = nginx.get("/");
    assert_eq!(status, 200);
    assert!(body.contains("hello from release 1"), "{body}");
    let worker_v1 = supervisor
        .pid_of("shop-worker")
        .expect("worker started by the deploy");

    // v2 adds a table: backup first, then migrate; php-fpm reloads, the worker restarts.
    let fpm_workers = fpm.worker_pids();
    repo.commit_version(
        "2",
        &[
            ("database/migrations/0002_create_tags.sql", MIGRATION_2),
            (
                "database/migrations/0002_create_tags.down.sql",
                MIGRATION_2_DOWN,
            ),
        ],
    );
    let (res, rel2, err, events) = deploy(&mut client, "shop-v2", true).await;
    assert_eq!(res, JobResult::Succeeded, "{err}\n{}", transcript(&events));
    let steps: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::StepStarted(s)) => Some(s.step.clone()),
            _ => None,
        })
        .collect();
    let at = |s: &str| {
        steps
            .iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("no step {s} in {steps:?}"))
    };
    assert!(at("backup") < at("maintenance_on") && at("maintenance_on") < at("migrate"));
    assert!(at("migrate") < at("switch") && at("switch") < at("maintenance_off"));
    assert_eq!(
        pg.psql("shop", "SELECT to_regclass('tags') IS NOT NULL")
            .unwrap()
            .trim(),
        "t"
    );
    let (status, body) = nginx.get("/");
    assert_eq!(status, 200);
    assert!(
        body.contains("hello from release 2"),
        "nginx serves v2: {body}"
    );
    assert_ne!(
        fpm.worker_pids(),
        fpm_workers,
        "php-fpm reloaded its workers"
    );
    assert_ne!(
        supervisor.pid_of("shop-worker"),
        Some(worker_v1),
        "the worker restarted"
    );
    // The backup exists, is non-empty and is a real pg_dump archive.
    let backups: Vec<_> = std::fs::read_dir(deploy_to.join("backups"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "backup"))
        .collect();
    let v1_backup = backups
        .iter()
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&rel1))
        .expect("a backup taken while v1 was current");
    let bytes = std::fs::read(v1_backup).unwrap();
    assert!(bytes.starts_with(b"PGDMP"), "a pg_dump custom archive");
    assert!(deploy_to.join("backups/LAST_SUCCESS").is_file());

    // A declared viewer-safe task: `php artisan migrate:status` in the current release,
    // run by a viewer, its output streamed.
    let mut viewer = agent.connect(&pki, Who::Viewer).await.unwrap();
    let stream = viewer
        .run_task(RunTaskRequest {
            app: "shop".into(),
            task: "migrate_status".into(),
            job_id: "shop-migrate-status".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let (res, release, err, events) = run(stream).await;
    let out = transcript(&events);
    assert_eq!(res, JobResult::Succeeded, "{err}\n{out}");
    assert_eq!(release, rel2, "ran in the current release");
    assert!(
        out.contains("0002_create_tags") && out.contains("Ran"),
        "{out}"
    );

    // Data written under v2.
    pg.psql("shop", "INSERT INTO items (name) VALUES ('written under v2'); INSERT INTO tags (label) VALUES ('x')").unwrap();

    // v3's health endpoint fails: rolled back to v2 automatically, nginx serves v2.
    repo.commit_version("3", &[("HEALTH_FAIL", "1")]);
    let (res, _, err, events) = deploy(&mut client, "shop-v3", false).await;
    assert_eq!(res, JobResult::RolledBack, "{err}\n{}", transcript(&events));
    assert!(
        err.contains("500") && err.contains("failing"),
        "the failing check's output: {err}"
    );
    let (status, body) = nginx.get("/");
    assert_eq!(status, 200);
    assert!(body.contains("hello from release 2"), "back on v2: {body}");

    // --restore-db without confirmation is refused.
    let refused = client
        .rollback(RollbackRequest {
            app: "shop".into(),
            job_id: "rb-no".into(),
            restore_db: true,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    // Roll back to v1 with its database: the v2 table and the rows written since go.
    let stream = client
        .rollback(RollbackRequest {
            app: "shop".into(),
            to_release: rel1.clone(),
            job_id: "shop-rb".into(),
            restore_db: true,
            confirm_restore: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (res, rel, err, events) = run(stream).await;
    assert_eq!(res, JobResult::Succeeded, "{err}\n{}", transcript(&events));
    assert_eq!(rel, rel1);
    assert_eq!(
        pg.psql("shop", "SELECT to_regclass('tags') IS NULL")
            .unwrap()
            .trim(),
        "t"
    );
    assert_eq!(
        pg.psql(
            "shop",
            "SELECT count(*) FROM items WHERE name = 'written under v2'"
        )
        .unwrap()
        .trim(),
        "0"
    );
    let (_, body) = nginx.get("/");
    assert!(body.contains("hello from release 1"), "{body}");
    assert_ne!(rel2, rel1);
}
