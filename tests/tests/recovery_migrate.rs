//! The recovery path on real PostgreSQL, through the CLI alone: a release that migrated
//! and failed its checks is rolled back automatically; its migrations are reversed
//! from its own release (`hoist rollback APP --migrate`, `--of RELEASE`) while the good
//! release stays current; backups are taken on demand, listed and restored (`hoist
//! backup`, `hoist backups`, `hoist restore`); maintenance_on/off frame every rollback
//! that migrates and every restore (also a failing one); and `migrate_pending` lets a
//! deploy with nothing to migrate skip the backup, maintenance and migrate.
//!
//! The app is a small SQL migration runner (`bin/db.sh`, psql against a private
//! cluster): `migrations/NNN.up.sql` applied in batches recorded in
//! `schema_migrations`, and `down` reversing the last batch from the files of the
//! release it runs in, as Laravel's and alembic's runners do.

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;

use hoist_tests::{
    harness::{Agent, AgentBuilder, Pki, Who, hoist},
    services::{
        git::AppRepo,
        postgres::{Postgres, pg_bin, require_postgres},
    },
};
use serde_json::Value;

const DB_SH: &str = r#"#!/bin/sh
# A tiny migration runner: up | down | pending | status.
set -eu
q() { "$PSQL_BIN" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d app "$@"; }
q -c "CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, batch int NOT NULL)" 2>/dev/null
applied() { [ -n "$(q -c "SELECT 1 FROM schema_migrations WHERE version = '$1'")" ]; }
case "$1" in
up)
  batch=$(( $(q -c "SELECT coalesce(max(batch), 0) FROM schema_migrations") + 1 ))
  for f in migrations/*.up.sql; do
    v=$(basename "$f" .up.sql)
    if ! applied "$v"; then q -f "$f"; q -c "INSERT INTO schema_migrations VALUES ('$v', $batch)"; echo "migrated $v"; fi
  done ;;
down)
  batch=$(q -c "SELECT coalesce(max(batch), 0) FROM schema_migrations")
  for v in $(q -c "SELECT version FROM schema_migrations WHERE batch = $batch ORDER BY version DESC"); do
    q -f "migrations/$v.down.sql"; q -c "DELETE FROM schema_migrations WHERE version = '$v'"; echo "reversed $v"
  done ;;
pending)
  for f in migrations/*.up.sql; do applied "$(basename "$f" .up.sql)" || exit 0; done
  exit 1 ;;
status)
  for f in migrations/*.up.sql; do
    v=$(basename "$f" .up.sql)
    if applied "$v"; then echo "$v applied"; else echo "$v pending"; fi
  done ;;
esac
"#;

/// `user`/`group` lines: hooks run as nobody when the tests run as root.
fn run_as() -> &'static str {
    if nix::unistd::Uid::effective().is_root() {
        "user = \"nobody\"\ngroup = \"nogroup\"\n"
    } else {
        ""
    }
}

struct Setup {
    root: tempfile::TempDir,
    pg: Postgres,
    repo: AppRepo,
    _agents: Vec<Agent>,
    _pki: Pki,
    fleet: String,
    /// web-1's; `deploy_tos` has every host's.
    deploy_to: PathBuf,
    deploy_tos: Vec<PathBuf>,
    /// Every hook that matters appends a line here: `on`, `off`, `down <release dir>`,
    /// `restore`.
    marks: PathBuf,
    /// While this file exists the restore step fails (after maintenance_on).
    restore_fails: PathBuf,
}

/// `hosts` agents `web-1`, `web-2`, ... with the app (one database for all).
async fn setup(test: &str, hosts: usize) -> Option<Setup> {
    if !require_postgres(test) || pg_bin("pg_dump").is_none() {
        return None;
    }
    let pg = Postgres::start().unwrap();
    pg.create_database("app").unwrap();
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The hooks (as the app's user) write their marks here.
    let notes = root.path().join("notes");
    std::fs::create_dir(&notes).unwrap();
    std::fs::set_permissions(&notes, std::fs::Permissions::from_mode(0o777)).unwrap();
    let marks = notes.join("marks.log");
    let restore_fails = notes.join("restore-fails");

    let repo = AppRepo::new_static(&[
        ("bin/db.sh", DB_SH),
        (
            "migrations/001_items.up.sql",
            "CREATE TABLE items (id serial PRIMARY KEY, name text);",
        ),
        ("migrations/001_items.down.sql", "DROP TABLE items;"),
    ]);
    repo.commit_version("1", &[]);

    let conn = format!("-h 127.0.0.1 -p {} -U postgres", pg.port());
    let app = |deploy_to: &std::path::Path| {
        format!(
            r#"
[[app]]
name = "web"
repo = "{repo}"
deploy_to = "{deploy_to}"
keep_releases = 2
keep_backups = 3
step_timeout = "60s"
{run_as}
[app.env]
PSQL_BIN = "{psql}"
PG_PORT = "{port}"

[app.steps]
backup = '{pg_dump} -Fc {conn} app > "$HOIST_BACKUP_FILE"'
migrate = "sh bin/db.sh up"
migrate_status = "sh bin/db.sh status"
migrate_pending = "sh bin/db.sh pending"
migrate_rollback = ['echo "down $(pwd)" >> {marks}', "sh bin/db.sh down"]
restore = ['echo restore >> {marks}', 'test ! -e {restore_fails}', "{psql} -X -q -v ON_ERROR_STOP=1 {conn} -d app -c 'DROP SCHEMA public CASCADE; CREATE SCHEMA public'", '{pg_restore} --exit-on-error {conn} -d app "$HOIST_BACKUP_FILE"']
maintenance_on = 'echo on >> {marks}'
maintenance_off = 'echo off >> {marks}'

[[app.checks]]
kind = "command"
name = "not-broken"
command = "! grep -q broken VERSION"
retries = 1
"#,
            repo = repo.url(),
            deploy_to = deploy_to.display(),
            run_as = run_as(),
            psql = pg_bin("psql").unwrap().display(),
            port = pg.port(),
            pg_dump = pg_bin("pg_dump").unwrap().display(),
            pg_restore = pg_bin("pg_restore").unwrap().display(),
            marks = marks.display(),
            restore_fails = restore_fails.display(),
        )
    };
    let pki = Pki::new();
    let mut fleet_text = pki.fleet_tls(Who::Deployer);
    let (mut agents, mut deploy_tos) = (Vec::new(), Vec::new());
    for i in 1..=hosts {
        let deploy_to = root.path().join(format!("web-{i}"));
        let agent = AgentBuilder::new(&pki).apps(&app(&deploy_to)).start().await;
        fleet_text.push_str(&agent.fleet_entry(&format!("web-{i}")));
        agents.push(agent);
        deploy_tos.push(deploy_to);
    }
    let fleet = root.path().join("fleet.toml");
    std::fs::write(&fleet, fleet_text).unwrap();
    Some(Setup {
        fleet: fleet.display().to_string(),
        root,
        pg,
        repo,
        _agents: agents,
        _pki: pki,
        deploy_to: deploy_tos[0].clone(),
        deploy_tos,
        marks,
        restore_fails,
    })
}

impl Setup {
    fn hoist(&self, args: &[&str]) -> (bool, Option<i32>, String) {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--fleet", &self.fleet]);
        let (status, out, err) = hoist(&all);
        (status.success(), status.code(), format!("{out}{err}"))
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, _, text) = self.hoist(args);
        assert!(ok, "hoist {args:?} failed:\n{text}");
        text
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    fn current(&self) -> String {
        self.current_on(0)
    }

    fn current_on(&self, host: usize) -> String {
        let target =
            std::fs::read_link(self.deploy_tos[host].join("current")).expect("a current release");
        target.file_name().unwrap().to_string_lossy().into_owned()
    }

    fn releases(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.deploy_to.join("releases"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.') && !n.ends_with(".tmp"))
            .collect();
        ids.sort();
        ids
    }

    /// The release a deploy just made: the one not in `before`.
    fn new_release(&self, before: &[String]) -> String {
        let now = self.releases();
        let fresh: Vec<&String> = now.iter().filter(|r| !before.contains(r)).collect();
        assert_eq!(fresh.len(), 1, "one new release: {before:?} -> {now:?}");
        fresh[0].clone()
    }

    fn table_exists(&self, table: &str) -> bool {
        self.pg
            .psql("app", &format!("SELECT to_regclass('{table}') IS NOT NULL"))
            .unwrap()
            .trim()
            == "t"
    }

    fn marks(&self) -> Vec<String> {
        std::fs::read_to_string(&self.marks)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn backup_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.deploy_to.join("backups"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".backup"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Deploys `main` after committing `version` with `files`; returns (ok, new release
    /// id, output).
    fn deploy(
        &self,
        version: &str,
        files: &[(&str, &str)],
        extra: &[&str],
    ) -> (bool, String, String) {
        self.repo.commit_version(version, files);
        let before = self.releases();
        let mut args = vec!["deploy", "web", "--ref", "main"];
        args.extend(extra);
        let (ok, _, text) = self.hoist(&args);
        (ok, self.new_release(&before), text)
    }
}

fn release_json<'a>(releases: &'a Value, id: &str) -> &'a Value {
    releases["hosts"][0]["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .unwrap_or_else(|| panic!("release {id} in {releases}"))
}

fn contains_in_order(lines: &[String], wanted: &[&str]) -> bool {
    let mut it = lines.iter();
    wanted.iter().all(|w| it.any(|l| l.starts_with(w)))
}

/// Problems 1 and 3, and the runbook's "the last deploy migrated and failed: put the
/// schema back", with hoist commands alone.
#[tokio::test]
async fn a_failed_release_s_migrations_are_reversed_from_its_own_release() {
    let Some(s) = setup(
        "a_failed_release_s_migrations_are_reversed_from_its_own_release",
        1,
    )
    .await
    else {
        return;
    };
    let _keep = &s.root;
    s.ok(&["deploy", "web", "--ref", "main"]);
    let v1 = s.current();
    let (ok, v2, text) = s.deploy(
        "2",
        &[
            (
                "migrations/002_tags.up.sql",
                "CREATE TABLE tags (label text);",
            ),
            ("migrations/002_tags.down.sql", "DROP TABLE tags;"),
        ],
        &[],
    );
    assert!(ok, "{text}");
    assert!(s.table_exists("items") && s.table_exists("tags"));

    // v3 migrates, then fails its check: hoist rolls back to v2 and says what to run.
    let (ok, v3, text) = s.deploy(
        "3-broken",
        &[
            (
                "migrations/003_notes.up.sql",
                "CREATE TABLE notes (body text);",
            ),
            ("migrations/003_notes.down.sql", "DROP TABLE notes;"),
        ],
        &[],
    );
    assert!(!ok, "{text}");
    assert_eq!(s.current(), v2, "{text}");
    assert!(s.table_exists("notes"), "v3's migration ran: {text}");
    let advice = format!("hoist rollback web --migrate --of {v3}");
    assert!(
        text.contains(&advice),
        "the advice names the command: {text}"
    );
    // keep_releases = 2, yet v3 stays on disk: its migrations are applied, and only its
    // own migrate_rollback knows how to reverse them.
    assert!(s.releases().contains(&v3), "{:?}", s.releases());
    let releases = s.json(&["releases", "web"]);
    assert_eq!(release_json(&releases, &v3)["migrations"], "applied");
    assert_eq!(release_json(&releases, &v3)["schema_ahead"], true);
    assert_eq!(release_json(&releases, &v2)["schema_ahead"], false);
    assert!(s.ok(&["releases", "web"]).contains("schema applied"));

    // The runbook: put the schema back. The plain command does it: v3's migration is
    // reversed from v3's directory; v2 stays current; v2's and v1's schema are intact.
    let marks_before = s.marks().len();
    let text = s.ok(&["rollback", "web", "--migrate"]);
    assert_eq!(s.current(), v2, "{text}");
    assert!(!s.table_exists("notes"), "{text}");
    assert!(s.table_exists("tags") && s.table_exists("items"), "{text}");
    let marks = s.marks()[marks_before..].to_vec();
    let v3_dir = s.deploy_to.join("releases").join(&v3);
    assert_eq!(
        marks,
        [
            "on".to_string(),
            format!("down {}", v3_dir.display()),
            "off".into()
        ],
        "maintenance around the reversal, run from v3: {text}"
    );
    // A backup was taken before the down-migration, and is listed as such.
    let backups = s.json(&["backups", "web"]);
    let list = backups["hosts"][0]["backups"].as_array().unwrap();
    let before_rollback = list
        .iter()
        .find(|b| b["reason"] == "rollback")
        .unwrap_or_else(|| panic!("{backups}"));
    assert_eq!(before_rollback["release"], v2.as_str());
    assert!(before_rollback["size_bytes"].as_u64().unwrap() > 0);
    let dump = s.deploy_to.join("backups").join(format!(
        "{}.backup",
        before_rollback["id"].as_str().unwrap()
    ));
    let mode = std::fs::metadata(&dump).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{}", dump.display());
    let releases = s.json(&["releases", "web"]);
    assert_eq!(release_json(&releases, &v3)["migrations"], "reversed");
    assert_eq!(release_json(&releases, &v1)["migrations"], "applied");

    // The dedicated form: v4 migrates and fails; `--of v4` undoes its schema only.
    let (ok, v4, text) = s.deploy(
        "4-broken",
        &[
            (
                "migrations/004_logs.up.sql",
                "CREATE TABLE logs (line text);",
            ),
            ("migrations/004_logs.down.sql", "DROP TABLE logs;"),
        ],
        &[],
    );
    assert!(!ok && s.table_exists("logs"), "{text}");
    // v4's directory stays while its migrations are applied (v3, rolled back and
    // reversed, stays too while it is among the keep_releases = 2 newest).
    assert!(s.releases().contains(&v4), "{:?}", s.releases());
    // The current release is not "the failed release": refused, nothing changed.
    let (ok, code, text) = s.hoist(&["rollback", "web", "--migrate", "--of", &v2]);
    assert!(!ok && code == Some(1), "{text}");
    assert!(text.contains(&format!("release {v2} is current")), "{text}");
    assert!(s.table_exists("logs"));
    // --of needs --migrate.
    let (ok, code, text) = s.hoist(&["rollback", "web", "--of", &v4]);
    assert!(!ok && code == Some(2), "{text}");
    let text = s.ok(&["rollback", "web", "--migrate", "--of", &v4]);
    assert!(!s.table_exists("logs") && s.table_exists("tags"), "{text}");
    assert_eq!(s.current(), v2);
    assert!(
        s.marks().contains(&format!(
            "down {}",
            s.deploy_to.join("releases").join(&v4).display()
        )),
        "{:?}",
        s.marks()
    );
    // The runbook's "full rollback, including the database": back to v1 with the backup
    // taken before v2 migrated, the restore inside maintenance; v2's migration is then
    // recorded as undone (nothing left for a later `--migrate` to reverse twice).
    let marks_before = s.marks().len();
    let text = s.ok(&["rollback", "web", "--restore-db", "--yes"]);
    assert_eq!(s.current(), v1, "{text}");
    assert!(!s.table_exists("tags") && s.table_exists("items"), "{text}");
    assert_eq!(
        s.marks()[marks_before..],
        ["on", "restore", "off"],
        "{text}"
    );
    let releases = s.json(&["releases", "web"]);
    assert_eq!(release_json(&releases, &v2)["migrations"], "reversed");
    assert_eq!(release_json(&releases, &v2)["schema_ahead"], false);
}

/// Problems 2 and 4: restore the backup taken before the failed release while the good
/// release is current again; on-demand backups; maintenance_off after a failed restore;
/// nothing pending skips backup, maintenance and migrate; pending shown in a dry run.
#[tokio::test]
async fn backups_restore_and_pending_migrations() {
    let Some(s) = setup("backups_restore_and_pending_migrations", 1).await else {
        return;
    };
    let _keep = &s.root;
    s.ok(&["deploy", "web", "--ref", "main"]);

    // Nothing pending: no dump, no maintenance, no migrate, and the output says so.
    let (backups_before, marks_before) = (s.backup_files(), s.marks().len());
    let (ok, v2, text) = s.deploy("2", &[("README", "no schema change\n")], &[]);
    assert!(ok, "{text}");
    assert!(text.contains("nothing to migrate"), "{text}");
    assert!(
        text.contains("001_items applied"),
        "migrate_status is shown: {text}"
    );
    assert_eq!(
        s.backup_files(),
        backups_before,
        "no backup when nothing is pending"
    );
    assert_eq!(
        s.marks().len(),
        marks_before,
        "no maintenance: {:?}",
        s.marks()
    );

    // Pending migrations are shown per host by a dry run: v3 is deployed without
    // migrating, so its 002 is pending on the host.
    let (ok, v3, text) = s.deploy(
        "3",
        &[
            (
                "migrations/002_tags.up.sql",
                "CREATE TABLE tags (label text);",
            ),
            ("migrations/002_tags.down.sql", "DROP TABLE tags;"),
        ],
        &["--migrate-on", "none"],
    );
    assert!(ok && !s.table_exists("tags"), "{text}");
    let text = s.ok(&["deploy", "web", "--ref", "main", "--dry-run"]);
    assert!(text.contains("web-1: migrations: pending"), "{text}");
    assert!(text.contains("002_tags pending"), "{text}");
    let _ = v2;

    // An on-demand backup, listed with its size, age and release.
    let files_before = s.backup_files();
    let text = s.ok(&["backup", "web"]);
    let files = s.backup_files();
    assert_eq!(files.len(), files_before.len() + 1, "{text}");
    let listing = s.ok(&["backups", "web"]);
    let manual = files
        .iter()
        .find(|f| !files_before.contains(f))
        .unwrap()
        .trim_end_matches(".backup")
        .to_string();
    let row = listing
        .lines()
        .find(|l| l.contains(&manual))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(
        row.contains("manual") && row.contains(&v3) && row.contains("KiB"),
        "{listing}"
    );

    // v4 migrates 002 and 003 and fails; writes happen meanwhile.
    let (ok, v4, text) = s.deploy(
        "4-broken",
        &[
            (
                "migrations/003_notes.up.sql",
                "CREATE TABLE notes (body text);",
            ),
            ("migrations/003_notes.down.sql", "DROP TABLE notes;"),
        ],
        &[],
    );
    assert!(
        !ok && s.current() == v3 && s.table_exists("notes"),
        "{text}"
    );
    s.pg.psql(
        "app",
        "INSERT INTO items (name) VALUES ('written after the backup')",
    )
    .unwrap();

    // Refused without --yes, with the reason, and nothing ran.
    let marks_before = s.marks().len();
    let (ok, code, text) = s.hoist(&["restore", "web"]);
    assert!(!ok && code == Some(2), "{text}");
    assert!(text.contains("--yes"), "{text}");
    assert_eq!(s.marks().len(), marks_before);

    // The default backup is the one taken before v4 migrated.
    let backups = s.json(&["backups", "web"]);
    let default = backups["hosts"][0]["backups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["default"] == true)
        .unwrap_or_else(|| panic!("{backups}"))
        .clone();
    assert_eq!(default["before"], v4.as_str(), "{backups}");
    assert_eq!(default["reason"], "deploy");

    // A failing restore still ends maintenance.
    std::fs::write(&s.restore_fails, "").unwrap();
    let (ok, _, text) = s.hoist(&["restore", "web", "--yes"]);
    assert!(!ok, "{text}");
    assert_eq!(
        s.marks()[marks_before..],
        ["on", "restore", "off"],
        "{text}"
    );
    std::fs::remove_file(&s.restore_fails).unwrap();

    // The restore: v4's schema is gone (and the write made since), v3 still serves,
    // and v4's migrations are bookkept as undone.
    let marks_before = s.marks().len();
    let text = s.ok(&["restore", "web", "--yes"]);
    assert!(text.contains(default["id"].as_str().unwrap()), "{text}");
    assert!(!s.table_exists("notes"), "{text}");
    assert!(
        !s.table_exists("tags"),
        "002 was pending before v4 too: {text}"
    );
    assert_eq!(s.current(), v3);
    assert!(contains_in_order(
        &s.marks()[marks_before..],
        &["on", "restore", "off"]
    ));
    let rows =
        s.pg.psql(
            "app",
            "SELECT count(*) FROM items WHERE name = 'written after the backup'",
        )
        .unwrap();
    assert_eq!(rows.trim(), "0");
    let releases = s.json(&["releases", "web"]);
    assert_eq!(release_json(&releases, &v4)["migrations"], "reversed");
    assert_eq!(release_json(&releases, &v4)["schema_ahead"], false);

    // A migrate step that fails part way: the release is kept (never switched to) with
    // its migrations recorded, and its own migrate_rollback undoes what it applied.
    let (ok, v5, text) = s.deploy(
        "5",
        &[
            ("migrations/005_five.up.sql", "CREATE TABLE five (x int);"),
            ("migrations/005_five.down.sql", "DROP TABLE five;"),
            ("migrations/006_bad.up.sql", "THIS IS NOT SQL;"),
            ("migrations/006_bad.down.sql", "SELECT 1;"),
        ],
        &[],
    );
    assert!(!ok && s.current() == v3 && s.table_exists("five"), "{text}");
    assert!(
        text.contains(&format!("hoist rollback web --migrate --of {v5}")),
        "{text}"
    );
    let releases = s.json(&["releases", "web"]);
    assert_eq!(release_json(&releases, &v5)["schema_ahead"], true);
    let text = s.ok(&["rollback", "web", "--migrate"]);
    assert!(!s.table_exists("five") && s.table_exists("items"), "{text}");
    assert_eq!(s.current(), v3, "{text}");

    // An unknown backup id: a clear error, nothing ran.
    let marks_before = s.marks().len();
    let (ok, _, text) = s.hoist(&["restore", "web", "--backup", "nosuch", "--yes"]);
    assert!(
        !ok && text.contains("no selected host has a backup nosuch"),
        "{text}"
    );
    assert_eq!(s.marks().len(), marks_before);
}

/// In a fleet only the host that migrated reverses, and a plain `rollback --migrate`
/// after an automatic rollback keeps every host on its release: web-1 (the migrator)
/// undoes v3's schema from v3, web-2 (which never got v3) has nothing to reverse and
/// does not move back to v1 either.
#[tokio::test]
async fn in_a_fleet_the_migrator_reverses_and_no_host_moves_back() {
    let Some(s) = setup("in_a_fleet_the_migrator_reverses_and_no_host_moves_back", 2).await else {
        return;
    };
    let _keep = &s.root;
    s.ok(&["deploy", "web", "--ref", "main", "--strategy", "all"]);
    let (v1_1, v1_2) = (s.current_on(0), s.current_on(1));
    s.repo.commit_version(
        "2",
        &[
            (
                "migrations/002_tags.up.sql",
                "CREATE TABLE tags (label text);",
            ),
            ("migrations/002_tags.down.sql", "DROP TABLE tags;"),
        ],
    );
    s.ok(&["deploy", "web", "--ref", "main", "--strategy", "all"]);
    let (v2_1, v2_2) = (s.current_on(0), s.current_on(1));
    s.repo.commit_version(
        "3-broken",
        &[
            (
                "migrations/003_notes.up.sql",
                "CREATE TABLE notes (body text);",
            ),
            ("migrations/003_notes.down.sql", "DROP TABLE notes;"),
        ],
    );
    let (ok, _, text) = s.hoist(&["deploy", "web", "--ref", "main"]);
    assert!(!ok && s.table_exists("notes"), "{text}");
    assert_eq!(
        (s.current_on(0), s.current_on(1)),
        (v2_1.clone(), v2_2.clone()),
        "{text}"
    );

    let marks_before = s.marks().len();
    let text = s.ok(&["rollback", "web", "--migrate"]);
    assert!(
        !s.table_exists("notes") && s.table_exists("items"),
        "{text}"
    );
    assert_eq!(
        (s.current_on(0), s.current_on(1)),
        (v2_1, v2_2),
        "no host moved back: {text}"
    );
    let downs = s.marks()[marks_before..]
        .iter()
        .filter(|m| m.starts_with("down "))
        .count();
    assert_eq!(downs, 1, "reversed once, on the migrator: {:?}", s.marks());
    assert!(
        text.contains("nothing to reverse here"),
        "web-2 says so: {text}"
    );

    // --restore-db restores once, on the host holding the backup taken before v2
    // migrated; the other host switches code only, and both return to v1.
    let marks_before = s.marks().len();
    let text = s.ok(&[
        "rollback",
        "web",
        "--restore-db",
        "--yes",
        "--strategy",
        "all",
    ]);
    assert_eq!((s.current_on(0), s.current_on(1)), (v1_1, v1_2), "{text}");
    assert!(!s.table_exists("tags") && s.table_exists("items"), "{text}");
    let restores = s.marks()[marks_before..]
        .iter()
        .filter(|m| *m == "restore")
        .count();
    assert_eq!(restores, 1, "{:?}", s.marks());
    assert!(text.contains("switching code only here"), "{text}");
}
