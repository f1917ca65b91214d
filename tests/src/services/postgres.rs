//! A private PostgreSQL cluster: `initdb` into a temp dir (trust auth, superuser
//! `postgres`), `postgres` listening on `127.0.0.1:<free port>` and a socket in that dir.
//! PostgreSQL refuses to run as root, so under root the cluster belongs to the `postgres`
//! system user. Stopped (`pg_ctl stop -m fast`, then SIGKILL) on drop.

use std::{
    fmt::Write as _,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use nix::unistd::{Gid, Uid, User, chown};
use tempfile::TempDir;

use crate::e2e;

/// Where Debian's postgresql-15 keeps its server binaries (not on `PATH`).
const PG_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
const INITDB_TIMEOUT: Duration = Duration::from_secs(60);
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const PSQL_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// The cluster's superuser; trust auth, no password.
const SUPERUSER: &str = "postgres";
/// `sockaddr_un.sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 100;

/// A PostgreSQL program: from the postgresql-15 directory, else from `PATH` (and the
/// sbin directories [`e2e::find_tool`] searches).
pub fn pg_bin(name: &str) -> Option<PathBuf> {
    let candidate = Path::new(PG_BIN_DIR).join(name);
    if candidate.is_file() {
        return Some(candidate);
    }
    e2e::find_tool(name)
}

/// Whether the programs [`Postgres::start`] needs are installed; when not, prints
/// `SKIPPED` (or panics under `HOIST_E2E=1`) like [`e2e::require`] and returns false.
pub fn require_postgres(test: &str) -> bool {
    ["initdb", "postgres", "pg_ctl", "pg_isready", "psql"]
        .iter()
        .all(|tool| pg_bin(tool).is_some() || e2e::require(tool, "postgresql", test).is_some())
}

/// The user the cluster runs as: `None` for the current user, or the `postgres` system
/// user (uid, gid) when we are root.
fn server_identity() -> anyhow::Result<Option<(Uid, Gid)>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let user = User::from_name(SUPERUSER)?
        .context("postgres refuses to run as root and there is no `postgres` system user")?;
    Ok(Some((user.uid, user.gid)))
}

/// A running `postgres` server of our own.
pub struct Postgres {
    dir: TempDir,
    data: PathBuf,
    port: u16,
    identity: Option<(Uid, Gid)>,
    child: Option<Child>,
}

impl Postgres {
    /// Creates the cluster, starts the server and waits until `pg_isready` says it
    /// accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        let initdb = pg_bin("initdb").context("initdb not found (apt-get install postgresql)")?;
        let postgres =
            pg_bin("postgres").context("postgres not found (apt-get install postgresql)")?;
        let identity = server_identity()?;

        // The server user must reach the dir: under root use /tmp, which everyone can
        // traverse, whatever TMPDIR says.
        let mut builder = tempfile::Builder::new();
        builder.prefix("hoist-pg");
        let mut dir = if identity.is_some() {
            builder.tempdir_in("/tmp")?
        } else {
            builder.tempdir()?
        };
        let port = e2e::free_port();
        if dir
            .path()
            .join(format!(".s.PGSQL.{port}"))
            .as_os_str()
            .len()
            > MAX_SOCKET_PATH
        {
            dir = builder.tempdir_in("/tmp")?;
        }
        if let Some((uid, gid)) = identity {
            chown(dir.path(), Some(uid), Some(gid))
                .with_context(|| format!("chown {} to postgres", dir.path().display()))?;
        }
        let data = dir.path().join("data");

        let mut cmd = Command::new(initdb);
        cmd.arg("-D")
            .arg(&data)
            .args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .current_dir(dir.path());
        as_identity(&mut cmd, identity);
        let out = e2e::run_with_timeout(&mut cmd, None, INITDB_TIMEOUT)?;
        ensure!(
            out.status.success(),
            "initdb failed ({}):\n{}",
            out.status,
            output_text(&out)
        );

        let log = std::fs::File::create(dir.path().join("postgres.log"))?;
        if let Some((uid, gid)) = identity {
            chown(
                dir.path().join("postgres.log").as_path(),
                Some(uid),
                Some(gid),
            )?;
        }
        let mut cmd = Command::new(postgres);
        cmd.arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(dir.path())
            .arg("-p")
            .arg(port.to_string())
            // Throwaway data: durability only costs time here.
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "shared_buffers=16MB",
                "-c",
                "max_connections=40",
            ])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        as_identity(&mut cmd, identity);
        let child = cmd.spawn().context("spawn postgres")?;
        let mut server = Postgres {
            dir,
            data,
            port,
            identity,
            child: Some(child),
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let pg_isready =
            pg_bin("pg_isready").context("pg_isready not found (apt-get install postgresql)")?;
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut delay = Duration::from_millis(50);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                bail!(
                    "postgres exited with {status} before ready:\n{}",
                    self.log_text()
                );
            }
            let out = e2e::run_with_timeout(
                Command::new(&pg_isready).args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    SUPERUSER,
                    "-d",
                    "postgres",
                    "-t",
                    "2",
                ]),
                None,
                Duration::from_secs(10),
            );
            let last = match out {
                Ok(out) if out.status.success() => return Ok(()),
                Ok(out) => output_text(&out),
                Err(err) => format!("{err:#}"),
            };
            if Instant::now() > deadline {
                bail!(
                    "postgres not ready within {READY_TIMEOUT:?}; pg_isready: {last}\nlog:\n{}",
                    self.log_text()
                );
            }
            thread::sleep(delay);
            delay = (delay * 3 / 2).min(Duration::from_millis(200));
        }
    }

    /// The TCP port on `127.0.0.1`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Always `127.0.0.1`.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The superuser to connect as (trust auth: no password).
    pub fn user(&self) -> &'static str {
        SUPERUSER
    }

    /// The directory holding the unix socket (`.s.PGSQL.<port>`).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The temp dir holding the data directory, socket and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `postgresql://postgres@127.0.0.1:<port>/postgres`.
    pub fn dsn(&self) -> String {
        self.dsn_for("postgres")
    }

    /// `postgresql://postgres@127.0.0.1:<port>/<db>`.
    pub fn dsn_for(&self, db: &str) -> String {
        format!("postgresql://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// `PGHOST`, `PGPORT`, `PGUSER` and `PGDATABASE` for `db`, so `pg_dump`, `pg_restore`
    /// and `psql` in hook commands need no connection flags.
    pub fn pg_env(&self, db: &str) -> Vec<(String, String)> {
        [
            ("PGHOST", "127.0.0.1".to_string()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", SUPERUSER.to_string()),
            ("PGDATABASE", db.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The `DB_*` lines of a Laravel `.env` pointing at `db` on this server.
    pub fn laravel_env(&self, db: &str) -> String {
        let mut text = String::new();
        for (key, value) in [
            ("DB_CONNECTION", "pgsql".to_string()),
            ("DB_HOST", "127.0.0.1".to_string()),
            ("DB_PORT", self.port.to_string()),
            ("DB_DATABASE", db.to_string()),
            ("DB_USERNAME", SUPERUSER.to_string()),
            ("DB_PASSWORD", String::new()),
        ] {
            let _ = writeln!(text, "{key}={value}");
        }
        text
    }

    /// `CREATE DATABASE "<name>"`; names are limited to ASCII letters, digits and `_`.
    pub fn create_database(&self, name: &str) -> anyhow::Result<()> {
        ensure!(
            !name.is_empty()
                && name.len() < 64
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "database name {name:?} must be 1-63 ASCII letters, digits or '_'"
        );
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""))?;
        Ok(())
    }

    /// Runs `sql` (one or more statements) with `psql -X -At -v ON_ERROR_STOP=1` on `db`
    /// and returns its stdout: unaligned rows, `|` between columns. A failing statement
    /// is an error carrying psql's message.
    pub fn psql(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        let psql = pg_bin("psql").context("psql not found (apt-get install postgresql)")?;
        let out = e2e::run_with_timeout(
            Command::new(psql)
                .args([
                    "-X",
                    "-q",
                    "-At",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-h",
                    "127.0.0.1",
                ])
                .args(["-p", &self.port.to_string(), "-U", SUPERUSER, "-d", db])
                .args(["-f", "-"])
                .env("PGCONNECT_TIMEOUT", "5")
                .env_remove("PGPASSWORD")
                .env_remove("PGSERVICE"),
            Some(sql.as_bytes()),
            PSQL_TIMEOUT,
        )?;
        ensure!(
            out.status.success(),
            "psql on {db} failed ({}): {}",
            out.status,
            output_text(&out)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The server's log, for failure messages.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// The postmaster's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        if let Some(pg_ctl) = pg_bin("pg_ctl") {
            let mut cmd = Command::new(pg_ctl);
            cmd.arg("stop")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "fast", "-w", "-t", "10"])
                .current_dir(self.dir.path());
            as_identity(&mut cmd, self.identity);
            // Whatever pg_ctl says, the bounded wait below decides.
            let _ = e2e::run_with_timeout(&mut cmd, None, STOP_TIMEOUT);
        }
        if e2e::wait_bounded(&mut child, Duration::from_secs(5)).is_none() {
            // The postmaster's children (backends, checkpointer, ...) share its group.
            e2e::kill_group(&mut child);
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `cmd` as the cluster's user (uid, gid, no supplementary groups) when given.
fn as_identity(cmd: &mut Command, identity: Option<(Uid, Gid)>) {
    if let Some((uid, gid)) = identity {
        cmd.uid(uid.as_raw()).gid(gid.as_raw());
    }
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[cfg(test)]
mod tests {
    use nix::{sys::signal::kill, unistd::Pid};

    use super::*;

    #[test]
    fn starts_creates_a_database_and_answers_queries() {
        if !require_postgres("starts_creates_a_database_and_answers_queries") {
            return;
        }
        let pg = Postgres::start().unwrap();
        assert_eq!(pg.host(), "127.0.0.1");
        assert!(pg.port() > 0);
        assert_eq!(
            pg.dsn_for("app"),
            format!("postgresql://postgres@127.0.0.1:{}/app", pg.port())
        );

        pg.create_database("app").unwrap();
        let out = pg
            .psql(
                "app",
                "CREATE TABLE t (id int PRIMARY KEY, name text);\n\
                 INSERT INTO t VALUES (1, 'one'), (2, 'two');\n\
                 SELECT id, name FROM t ORDER BY id;",
            )
            .unwrap();
        assert_eq!(out, "1|one\n2|two\n");
        assert_eq!(pg.psql("app", "SELECT current_user").unwrap(), "postgres\n");
        let version = pg.psql("app", "SHOW server_version_num").unwrap();
        assert!(
            version.trim().parse::<u32>().unwrap() >= 150_000,
            "{version}"
        );

        // Errors carry PostgreSQL's words; names are checked before anything runs.
        let err = pg.psql("app", "SELECT * FROM missing").unwrap_err();
        assert!(
            err.to_string()
                .contains("relation \"missing\" does not exist"),
            "{err}"
        );
        let err = pg.create_database("app").unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        let err = pg.create_database("a\"b").unwrap_err();
        assert!(err.to_string().contains("must be"), "{err}");

        // The pg_env variables are enough for a client without flags.
        let psql = pg_bin("psql").unwrap();
        let out = Command::new(psql)
            .args(["-X", "-At", "-c", "SELECT count(*) FROM t"])
            .envs(pg.pg_env("app"))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "2\n");

        // Drop stops the server and removes its files.
        let pid = Pid::from_raw(i32::try_from(pg.pid().unwrap()).unwrap());
        let dir = pg.dir().to_path_buf();
        drop(pg);
        assert!(kill(pid, None).is_err(), "postgres {pid} still alive");
        assert!(!dir.exists());
    }
}
