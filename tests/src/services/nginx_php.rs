//! A real php-fpm pool and a real nginx in front of it, as a PHP host runs them: nginx
//! serves `<deploy_to>/current/public` on `127.0.0.1:<free port>` and hands PHP to the
//! pool over FastCGI with `$realpath_root` (so a `current` symlink switch reaches PHP
//! without stale paths). Both run in the foreground in temp dirs and are stopped
//! (SIGTERM to the process group, then SIGKILL) on drop.

use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use nix::{
    sys::signal::{Signal, kill},
    unistd::{Group, Pid, Uid, User},
};
use tempfile::TempDir;

use crate::e2e;

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const RELOAD_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_GRACE: Duration = Duration::from_secs(10);
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// Workers in the pool (`pm = static`).
const MAX_CHILDREN: usize = 2;
/// php-fpm binaries by preference: Debian's versioned name, then the plain one.
const PHP_FPM_NAMES: [&str; 2] = ["php-fpm8.2", "php-fpm"];

/// The php-fpm binary: `php-fpm8.2`, else `php-fpm` (both usually in `/usr/sbin`).
pub fn php_fpm_bin() -> Option<PathBuf> {
    PHP_FPM_NAMES.iter().find_map(|name| e2e::find_tool(name))
}

/// Whether php-fpm and nginx are installed; when not, prints `SKIPPED` (or panics under
/// `HOIST_E2E=1`) like [`e2e::require`] and returns false.
pub fn require_php_web(test: &str) -> bool {
    (php_fpm_bin().is_some() || e2e::require(PHP_FPM_NAMES[0], "php8.2-fpm", test).is_some())
        && e2e::require("nginx", "nginx", test).is_some()
}

/// Whether the `php` CLI and php-fpm both have `pdo_pgsql` (what the phpapp fixture needs
/// to reach PostgreSQL); when not, reports like [`e2e::require`] and returns false.
pub fn require_php_pgsql(test: &str) -> bool {
    let Some(php) = e2e::require("php", "php-cli", test) else {
        return false;
    };
    let has_module = |bin: &Path| {
        e2e::run_with_timeout(Command::new(bin).arg("-m"), None, Duration::from_secs(20)).is_ok_and(
            |out| {
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .any(|l| l.trim() == "pdo_pgsql")
            },
        )
    };
    if has_module(&php) && php_fpm_bin().is_some_and(|fpm| has_module(&fpm)) {
        return true;
    }
    // Not a program, so never found: this only reports the missing module the usual way.
    e2e::require("pdo_pgsql (PHP module)", "php8.2-pgsql", test).is_some()
}

// === impl PhpFpm ===

/// A running php-fpm master (`daemonize = no`) with one static pool of two workers on
/// `127.0.0.1:<port>`.
pub struct PhpFpm {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl PhpFpm {
    /// Starts php-fpm with its workers running as the current user (as root that takes
    /// `-R`, which a production pool would not do).
    pub fn start() -> anyhow::Result<Self> {
        Self::spawn(None)
    }

    /// Starts php-fpm as root with its workers running as `user` and that user's
    /// primary group, as a production pool (`user = www-data`) does. Needs root.
    pub fn start_as(user: &str) -> anyhow::Result<Self> {
        ensure!(
            Uid::effective().is_root(),
            "php-fpm can only switch its workers to {user} when started as root"
        );
        let account = User::from_name(user)?.with_context(|| format!("no user {user}"))?;
        let group = Group::from_gid(account.gid)?
            .with_context(|| format!("no group with gid {}", account.gid))?;
        Self::spawn(Some((account.name, group.name)))
    }

    fn spawn(pool_user: Option<(String, String)>) -> anyhow::Result<Self> {
        let fpm = php_fpm_bin().context("php-fpm not found (apt-get install php8.2-fpm)")?;
        let dir = tempfile::Builder::new().prefix("hoist-fpm").tempdir()?;
        let port = e2e::free_port();
        let root = Uid::effective().is_root();
        let pool_user = match pool_user {
            Some(user) => Some(user),
            // A root master must name its workers' user; root itself needs -R.
            None if root => Some(("root".to_string(), "root".to_string())),
            None => None,
        };
        let conf = dir.path().join("php-fpm.conf");
        std::fs::write(&conf, fpm_config(dir.path(), port, pool_user.as_ref())?)
            .context("write php-fpm.conf")?;

        let out = std::fs::File::create(dir.path().join("php-fpm.out"))?;
        let mut cmd = Command::new(fpm);
        cmd.arg("--nodaemonize")
            .arg("--fpm-config")
            .arg(&conf)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        if root {
            cmd.arg("--allow-to-run-as-root");
        }
        let child = cmd.spawn().context("spawn php-fpm")?;
        let mut fpm = PhpFpm {
            dir,
            port,
            child: Some(child),
        };
        fpm.wait_workers(&[], READY_TIMEOUT)
            .context("php-fpm did not start")?;
        Ok(fpm)
    }

    /// Waits until the master runs, has written its pidfile, has [`MAX_CHILDREN`] workers
    /// none of which is in `old`, and accepts connections.
    fn wait_workers(&mut self, old: &[u32], timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut delay = Duration::from_millis(20);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                bail!("php-fpm exited with {status}:\n{}", self.log_text());
            }
            let last = match self.check_workers(old) {
                Ok(()) => return Ok(()),
                Err(err) => err,
            };
            if Instant::now() > deadline {
                bail!(
                    "php-fpm not ready within {timeout:?}: {last}\nlog:\n{}",
                    self.log_text()
                );
            }
            thread::sleep(delay);
            delay = (delay * 3 / 2).min(Duration::from_millis(100));
        }
    }

    fn check_workers(&self, old: &[u32]) -> Result<(), String> {
        let master = self.master_pid();
        let pidfile = std::fs::read_to_string(self.pidfile()).unwrap_or_default();
        if pidfile.trim() != master.to_string() {
            return Err(format!(
                "pidfile says {:?}, master is {master}",
                pidfile.trim()
            ));
        }
        let workers = self.worker_pids();
        if workers.len() != MAX_CHILDREN || workers.iter().any(|pid| old.contains(pid)) {
            return Err(format!("workers {workers:?} (old {old:?})"));
        }
        TcpStream::connect_timeout(&self.addr(), Duration::from_secs(1))
            .map(drop)
            .map_err(|e| format!("connect {}: {e}", self.listen()))
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The pool's FastCGI address, `127.0.0.1:<port>` (nginx's `fastcgi_pass`).
    pub fn listen(&self) -> String {
        self.addr().to_string()
    }

    /// The master's pidfile (`[global] pid`), for a `signal` service with SIGUSR2.
    pub fn pidfile(&self) -> PathBuf {
        self.dir.path().join("php-fpm.pid")
    }

    /// The master's pid. It survives a SIGUSR2 reload, which re-executes in place.
    pub fn master_pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The pool's worker pids (the master's children), sorted.
    pub fn worker_pids(&self) -> Vec<u32> {
        children_of(self.master_pid())
    }

    /// A graceful reload as `systemctl reload php8.2-fpm` does it: SIGUSR2 to the master,
    /// then waits until a fresh set of workers accepts connections.
    pub fn reload(&mut self) -> anyhow::Result<()> {
        let old = self.worker_pids();
        let master = i32::try_from(self.master_pid()).context("php-fpm is not running")?;
        kill(Pid::from_raw(master), Signal::SIGUSR2).context("SIGUSR2 to php-fpm")?;
        self.wait_workers(&old, RELOAD_TIMEOUT)
            .context("php-fpm did not come back after SIGUSR2")
    }

    /// The master's log and captured output (worker stderr included), for failures.
    pub fn log_text(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("php-fpm.log"), read("php-fpm.out"))
    }

    /// The temp dir holding the config, pidfile and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PhpFpm {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            e2e::terminate_group(&mut child, STOP_GRACE);
        }
    }
}

fn fpm_config(dir: &Path, port: u16, user: Option<&(String, String)>) -> anyhow::Result<String> {
    let mut text = String::new();
    writeln!(
        text,
        "[global]\npid = {pid}\nerror_log = {log}\nlog_level = notice\ndaemonize = no\n\
         ; Workers get this long to finish in-flight requests on reload (default 0: killed).\n\
         process_control_timeout = 10s\n\n\
         [app]\nlisten = 127.0.0.1:{port}\nlisten.allowed_clients = 127.0.0.1\n\
         pm = static\npm.max_children = {MAX_CHILDREN}\nclear_env = no\n\
         catch_workers_output = yes\ndecorate_workers_output = no\n\
         php_admin_flag[log_errors] = on\nphp_admin_flag[display_errors] = off",
        pid = dir.join("php-fpm.pid").display(),
        log = dir.join("php-fpm.log").display(),
    )?;
    if let Some((user, group)) = user {
        writeln!(text, "user = {user}\ngroup = {group}")?;
    }
    Ok(text)
}

/// Pids whose parent is `parent`, from /proc, sorted.
fn children_of(parent: u32) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| parent_of(pid) == Some(parent))
        .collect();
    pids.sort_unstable();
    pids
}

/// The ppid field of /proc/<pid>/stat (after the parenthesised command name).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

// === impl Nginx ===

/// One HTTP response from [`Nginx::request`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Header names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A running `nginx -g 'daemon off;'` serving `<deploy_to>/current/public` with PHP from
/// a [`PhpFpm`].
pub struct Nginx {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl Nginx {
    /// Writes the config, starts nginx and waits until it accepts connections.
    /// `deploy_to` need not have a `current` yet (requests then answer 404).
    pub fn start(deploy_to: &Path, php: &PhpFpm) -> anyhow::Result<Self> {
        let nginx = e2e::find_tool("nginx").context("nginx not found (apt-get install nginx)")?;
        let dir = tempfile::Builder::new().prefix("hoist-nginx").tempdir()?;
        let port = e2e::free_port();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(
            &conf,
            nginx_config(dir.path(), port, deploy_to, &php.listen())?,
        )
        .context("write nginx.conf")?;

        let out = std::fs::File::create(dir.path().join("nginx.out"))?;
        let child = Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            // Before reading the config nginx logs to its compiled-in path; not here.
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .args(["-g", "daemon off;"])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0)
            .spawn()
            .context("spawn nginx")?;
        let mut server = Nginx {
            dir,
            port,
            child: Some(child),
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut delay = Duration::from_millis(20);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                bail!("nginx exited with {status}:\n{}", self.log_text());
            }
            let last = match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
                Ok(_) if self.dir.path().join("nginx.pid").is_file() => return Ok(()),
                Ok(_) => "no pidfile yet".to_string(),
                Err(err) => format!("connect {addr}: {err}"),
            };
            if Instant::now() > deadline {
                bail!(
                    "nginx not ready within {READY_TIMEOUT:?}: {last}\nlog:\n{}",
                    self.log_text()
                );
            }
            thread::sleep(delay);
            delay = (delay * 3 / 2).min(Duration::from_millis(100));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port><path>`; `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `GET path` over HTTP/1.0; panics when the request itself fails (no connection,
    /// timeout, garbage), since that is never what a test expects.
    pub fn get(&self, path: &str) -> (u16, String) {
        let response = self.request(path).unwrap_or_else(|e| {
            panic!(
                "GET {}: {e:#}\nnginx log:\n{}",
                self.url(path),
                self.log_text()
            )
        });
        (response.status, response.body)
    }

    /// `GET path` over HTTP/1.0 (a fresh connection, closed by the server), with a
    /// 30-second deadline on each socket operation.
    pub fn request(&self, path: &str) -> anyhow::Result<Response> {
        ensure!(
            path.starts_with('/') && !path.contains(['\r', '\n', ' ']),
            "bad request path {path:?}"
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)
            .with_context(|| format!("connect {addr}"))?;
        stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
        stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
        write!(
            stream,
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nUser-Agent: hoist-tests\r\n\r\n",
            self.port
        )?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).context("read the response")?;
        parse_response(&raw)
    }

    /// nginx's error log and captured output, for failure messages.
    pub fn log_text(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("error.log"), read("nginx.out"))
    }

    /// The access log (`$status $request` per line, oldest first).
    pub fn access_log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// The temp dir holding the config, pidfile and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            e2e::terminate_group(&mut child, STOP_GRACE);
        }
    }
}

fn parse_response(raw: &[u8]) -> anyhow::Result<Response> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers in the response")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = String::from_utf8_lossy(&raw[split + 4..]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_ascii_lowercase(), value.trim().to_string()))
        })
        .collect();
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn nginx_config(dir: &Path, port: u16, deploy_to: &Path, fastcgi: &str) -> anyhow::Result<String> {
    let quoted = |p: &Path| -> anyhow::Result<String> {
        let s = p.display().to_string();
        ensure!(
            !s.contains(['"', '\\', '$', '\n']),
            "path {s:?} cannot be written into nginx.conf"
        );
        Ok(format!("\"{s}\""))
    };
    let mut text = String::new();
    if Uid::effective().is_root() {
        // Otherwise workers run as nobody and cannot read the 0700 temp dirs.
        text.push_str("user root;\n");
    }
    writeln!(
        text,
        "worker_processes 1;\npid {pid};\nerror_log {error} info;\n\n\
         events {{ worker_connections 64; }}\n\n\
         http {{\n\
         \x20   access_log {access};\n\
         \x20   client_body_temp_path {client_tmp};\n\
         \x20   proxy_temp_path {proxy_tmp};\n\
         \x20   fastcgi_temp_path {fastcgi_tmp};\n\
         \x20   uwsgi_temp_path {uwsgi_tmp};\n\
         \x20   scgi_temp_path {scgi_tmp};\n\
         \x20   default_type application/octet-stream;\n\
         \x20   types {{ text/html html; text/css css; application/javascript js; text/plain txt; }}\n\n\
         \x20   server {{\n\
         \x20       listen 127.0.0.1:{port};\n\
         \x20       server_name localhost;\n\
         \x20       root {root};\n\
         \x20       index index.php index.html;\n\n\
         \x20       location / {{\n\
         \x20           try_files $uri /index.php?$query_string;\n\
         \x20       }}\n\n\
         \x20       location ~ \\.php$ {{\n\
         \x20           try_files $fastcgi_script_name =404;\n\
         \x20           fastcgi_pass {fastcgi};\n\
         \x20           fastcgi_read_timeout 30s;\n\
         \x20           fastcgi_param QUERY_STRING $query_string;\n\
         \x20           fastcgi_param REQUEST_METHOD $request_method;\n\
         \x20           fastcgi_param CONTENT_TYPE $content_type;\n\
         \x20           fastcgi_param CONTENT_LENGTH $content_length;\n\
         \x20           fastcgi_param SCRIPT_NAME $fastcgi_script_name;\n\
         \x20           fastcgi_param REQUEST_URI $request_uri;\n\
         \x20           fastcgi_param DOCUMENT_URI $document_uri;\n\
         \x20           fastcgi_param SERVER_PROTOCOL $server_protocol;\n\
         \x20           fastcgi_param REQUEST_SCHEME $scheme;\n\
         \x20           fastcgi_param GATEWAY_INTERFACE CGI/1.1;\n\
         \x20           fastcgi_param SERVER_SOFTWARE nginx/$nginx_version;\n\
         \x20           fastcgi_param REMOTE_ADDR $remote_addr;\n\
         \x20           fastcgi_param REMOTE_PORT $remote_port;\n\
         \x20           fastcgi_param SERVER_ADDR $server_addr;\n\
         \x20           fastcgi_param SERVER_PORT $server_port;\n\
         \x20           fastcgi_param SERVER_NAME $server_name;\n\
         \x20           fastcgi_param REDIRECT_STATUS 200;\n\
         \x20           # The resolved release path, not .../current/...: php-fpm's opcache and\n\
         \x20           # realpath cache then never serve the previous release after a switch.\n\
         \x20           fastcgi_param SCRIPT_FILENAME $realpath_root$fastcgi_script_name;\n\
         \x20           fastcgi_param DOCUMENT_ROOT $realpath_root;\n\
         \x20       }}\n\
         \x20   }}\n\
         }}",
        pid = quoted(&dir.join("nginx.pid"))?,
        error = quoted(&dir.join("error.log"))?,
        access = quoted(&dir.join("access.log"))?,
        client_tmp = quoted(&dir.join("client"))?,
        proxy_tmp = quoted(&dir.join("proxy"))?,
        fastcgi_tmp = quoted(&dir.join("fastcgi"))?,
        uwsgi_tmp = quoted(&dir.join("uwsgi"))?,
        scgi_tmp = quoted(&dir.join("scgi"))?,
        root = quoted(&deploy_to.join("current/public"))?,
    )?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt as _, symlink};

    use serde_json::Value;

    use super::*;
    use crate::services::{
        git::{artisan, artisan_ok, copy_tree, php_app_env, php_fixture_dir},
        postgres::{Postgres, require_postgres},
    };

    /// `<deploy_to>/releases/<name>/public/index.php` with `php` as its body.
    fn php_release(deploy_to: &Path, name: &str, php: &str) -> PathBuf {
        let release = deploy_to.join("releases").join(name);
        std::fs::create_dir_all(release.join("public")).unwrap();
        std::fs::write(release.join("public/index.php"), php).unwrap();
        release
    }

    /// Points `<deploy_to>/current` at `releases/<name>` the atomic way: a temp symlink
    /// renamed over the old one.
    fn switch_current(deploy_to: &Path, name: &str) {
        let tmp = deploy_to.join("current.tmp");
        let _ = std::fs::remove_file(&tmp);
        symlink(Path::new("releases").join(name), &tmp).unwrap();
        std::fs::rename(&tmp, deploy_to.join("current")).unwrap();
    }

    fn json(body: &str) -> Value {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: not JSON: {body}"))
    }

    #[test]
    fn serves_the_current_release_and_follows_a_switch_after_reload() {
        let test = "serves_the_current_release_and_follows_a_switch_after_reload";
        if !require_php_web(test) {
            return;
        }
        let deploy = tempfile::tempdir().unwrap();
        let page = |name: &str| {
            format!(
                "<?php echo \"release {name} from \", $_SERVER['DOCUMENT_ROOT'], \
                 \" uri \", $_SERVER['REQUEST_URI'];"
            )
        };
        php_release(deploy.path(), "a", &page("a"));
        let b = php_release(deploy.path(), "b", &page("b"));
        std::fs::write(b.join("public/robots.txt"), "static b\n").unwrap();
        switch_current(deploy.path(), "a");

        let mut fpm = PhpFpm::start().unwrap();
        assert_eq!(fpm.listen(), format!("127.0.0.1:{}", fpm.addr().port()));
        assert_eq!(
            std::fs::read_to_string(fpm.pidfile()).unwrap().trim(),
            fpm.master_pid().to_string()
        );
        let nginx = Nginx::start(deploy.path(), &fpm).unwrap();
        assert_eq!(
            nginx.url("/x"),
            format!("http://127.0.0.1:{}/x", nginx.port())
        );

        // DOCUMENT_ROOT is the resolved release, not .../current.
        let releases = deploy.path().canonicalize().unwrap().join("releases");
        let (status, body) = nginx.get("/");
        assert_eq!(status, 200, "{body}\n{}", fpm.log_text());
        assert_eq!(
            body,
            format!("release a from {}/a/public uri /", releases.display())
        );
        // Unknown paths fall through to the front controller.
        let (status, body) = nginx.get("/some/route?x=1");
        assert_eq!(status, 200);
        assert!(body.ends_with("uri /some/route?x=1"), "{body}");
        // A static file only the next release has: the front controller answers.
        let (status, body) = nginx.get("/robots.txt");
        assert_eq!(status, 200);
        assert!(body.starts_with("release a from"), "{body}");
        assert_eq!(nginx.get("/missing.php").0, 404);

        let master = fpm.master_pid();
        let workers = fpm.worker_pids();
        assert_eq!(workers.len(), 2, "{workers:?}");
        switch_current(deploy.path(), "b");
        let started = Instant::now();
        fpm.reload().unwrap();
        let reload_took = started.elapsed();
        assert_eq!(fpm.master_pid(), master, "SIGUSR2 re-executes in place");
        let new_workers = fpm.worker_pids();
        assert!(
            new_workers.iter().all(|p| !workers.contains(p)),
            "{workers:?} -> {new_workers:?}"
        );
        assert!(reload_took < Duration::from_secs(10), "{reload_took:?}");

        let (status, body) = nginx.get("/");
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body,
            format!("release b from {}/b/public uri /", releases.display())
        );
        assert_eq!(nginx.get("/robots.txt"), (200, "static b\n".to_string()));
        assert!(nginx.access_log_text().contains("GET /robots.txt"));

        // Drop stops both, workers included.
        let all: Vec<u32> = [master].into_iter().chain(new_workers).collect();
        let nginx_master: i32 = std::fs::read_to_string(nginx.dir().join("nginx.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        drop(nginx);
        drop(fpm);
        for pid in all {
            let pid = Pid::from_raw(i32::try_from(pid).unwrap());
            assert!(kill(pid, None).is_err(), "php-fpm process {pid} survived");
        }
        assert!(kill(Pid::from_raw(nginx_master), None).is_err());
    }

    #[test]
    fn php_fpm_workers_run_as_the_given_user() {
        let test = "php_fpm_workers_run_as_the_given_user";
        // Switching users needs root and a www-data account; elsewhere there is nothing
        // to check beyond start() (covered above).
        let Ok(Some(www)) = User::from_name("www-data") else {
            return;
        };
        if !Uid::effective().is_root() || !require_php_web(test) {
            return;
        }
        let deploy = tempfile::tempdir().unwrap();
        std::fs::set_permissions(deploy.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        php_release(
            deploy.path(),
            "r1",
            "<?php echo posix_getpwuid(posix_geteuid())['name'];",
        );
        switch_current(deploy.path(), "r1");
        let fpm = PhpFpm::start_as("www-data").unwrap();
        let nginx = Nginx::start(deploy.path(), &fpm).unwrap();
        assert_eq!(nginx.get("/"), (200, "www-data".to_string()));
        for pid in fpm.worker_pids() {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let uid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next())
                .unwrap();
            assert_eq!(uid, www.uid.to_string(), "worker {pid}");
        }
        assert!(PhpFpm::start_as("no-such-user-hoist").is_err());
    }

    #[test]
    fn fixture_app_end_to_end_without_hoist() {
        let test = "fixture_app_end_to_end_without_hoist";
        if !require_php_web(test) || !require_php_pgsql(test) || !require_postgres(test) {
            return;
        }
        let pg = Postgres::start().unwrap();
        pg.create_database("phpapp").unwrap();

        let deploy = tempfile::tempdir().unwrap();
        let release = deploy.path().join("releases/r1");
        copy_tree(&php_fixture_dir(), &release).unwrap();
        std::fs::write(release.join("VERSION"), "1\n").unwrap();
        let env = php_app_env(&pg, "phpapp");
        let keys = |text: &str| -> Vec<String> {
            text.lines()
                .filter_map(|l| Some(l.split_once('=')?.0.to_string()))
                .collect()
        };
        let example = std::fs::read_to_string(release.join(".env.example")).unwrap();
        assert_eq!(
            keys(&env),
            keys(&example),
            "php_app_env covers .env.example"
        );
        std::fs::write(release.join(".env"), &env).unwrap();
        switch_current(deploy.path(), "r1");
        let current = deploy.path().join("current");

        // Fresh database: status fails as Laravel's does, migrate applies 0001.
        let fpm = PhpFpm::start().unwrap();
        let nginx = Nginx::start(deploy.path(), &fpm).unwrap();
        let health = |expect_status: u16| {
            let response = nginx.request("/api/health").unwrap();
            assert_eq!(
                response.status,
                expect_status,
                "{}\n{}",
                response.body,
                fpm.log_text()
            );
            assert_eq!(response.header("x-release"), Some("r1"));
            (json(&response.body), response)
        };
        let (body, _) = health(200);
        assert_eq!(body["migrations"], 0, "{body}");
        assert!(artisan_ok(&current, &["migrate:status"]).is_err());
        let out = artisan_ok(&current, &["migrate", "--force"]).unwrap();
        assert!(
            out.contains("0001_create_items") && out.contains("DONE"),
            "{out}"
        );
        let out = artisan_ok(&current, &["migrate", "--force"]).unwrap();
        assert!(out.contains("Nothing to migrate"), "{out}");
        let out = artisan_ok(&current, &["migrate:status"]).unwrap();
        assert!(
            out.contains("0001_create_items") && out.contains("[1] Ran"),
            "{out}"
        );
        assert_eq!(
            pg.psql("phpapp", "SELECT name FROM items").unwrap(),
            "first item\n"
        );
        assert_eq!(
            pg.psql("phpapp", "SELECT migration, batch FROM migrations")
                .unwrap(),
            "0001_create_items|1\n"
        );

        let (status, body) = nginx.get("/");
        assert_eq!((status, body.as_str()), (200, "hello from release 1"));
        let (body, _) = health(200);
        assert_eq!(
            body,
            serde_json::json!({
                "status": "healthy", "version": "1", "release": "r1", "db": "up", "migrations": 1
            })
        );
        assert_eq!(nginx.get("/nope").0, 404);

        // Maintenance mode.
        artisan_ok(&current, &["down", "--retry=60"]).unwrap();
        assert!(release.join("storage/framework/down").is_file());
        let (body, response) = health(503);
        assert_eq!(body, serde_json::json!({"status": "maintenance"}));
        assert_eq!(response.header("retry-after"), Some("60"));
        assert_eq!(nginx.get("/").0, 503);
        artisan_ok(&current, &["up"]).unwrap();
        assert_eq!(health(200).0["status"], "healthy");
        let out = artisan_ok(&current, &["up"]).unwrap();
        assert!(out.contains("already up"), "{out}");

        // config:cache freezes the configuration: a broken .env no longer matters.
        artisan_ok(&current, &["config:cache"]).unwrap();
        let cached = std::fs::read_to_string(release.join("bootstrap/cache/config.php")).unwrap();
        assert!(
            cached.contains(&format!("'DB_PORT' => '{}'", pg.port())),
            "{cached}"
        );
        std::fs::write(release.join(".env"), "DB_PORT=1\n").unwrap();
        assert_eq!(health(200).0["db"], "up");
        artisan_ok(&current, &["config:clear"]).unwrap();
        let (body, _) = health(503);
        assert_eq!(body["status"], "unhealthy", "{body}");
        assert_eq!(body["db"], "down", "{body}");
        std::fs::write(release.join(".env"), &env).unwrap();

        // A bad release.
        std::fs::write(release.join("HEALTH_FAIL"), "").unwrap();
        let (body, _) = health(500);
        assert_eq!(body["status"], "failing");
        std::fs::remove_file(release.join("HEALTH_FAIL")).unwrap();

        // Rolling back the batch drops the table and the record.
        let out = artisan_ok(&current, &["migrate:rollback", "--force"]).unwrap();
        assert!(out.contains("0001_create_items"), "{out}");
        assert_eq!(health(200).0["migrations"], 0);
        let err = pg.psql("phpapp", "SELECT 1 FROM items").unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
        let out = artisan_ok(&current, &["migrate:status"]).unwrap();
        assert!(out.contains("Pending"), "{out}");
        let out = artisan_ok(&current, &["migrate:rollback", "--force"]).unwrap();
        assert!(out.contains("Nothing to rollback"), "{out}");

        // --step gives each migration its own batch; --step=N undoes N of them.
        std::fs::write(
            release.join("database/migrations/0002_add_price.sql"),
            "ALTER TABLE items ADD COLUMN price integer NOT NULL DEFAULT 0;",
        )
        .unwrap();
        std::fs::write(
            release.join("database/migrations/0002_add_price.down.sql"),
            "ALTER TABLE items DROP COLUMN price;",
        )
        .unwrap();
        artisan_ok(&current, &["migrate", "--force", "--step"]).unwrap();
        assert_eq!(
            pg.psql(
                "phpapp",
                "SELECT migration, batch FROM migrations ORDER BY id"
            )
            .unwrap(),
            "0001_create_items|1\n0002_add_price|2\n"
        );
        let status = artisan(&current, &["migrate:status", "--pending"])
            .unwrap()
            .status;
        assert!(status.success(), "nothing pending");
        artisan_ok(&current, &["migrate:rollback", "--step=1", "--force"]).unwrap();
        assert_eq!(health(200).0["migrations"], 1);
        let out = artisan(&current, &["migrate:status", "--pending"]).unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("0002_add_price"));

        // A failing migration leaves nothing half-applied.
        std::fs::write(
            release.join("database/migrations/0003_broken.sql"),
            "CREATE TABLE broken (id int); SELECT no_such_function();",
        )
        .unwrap();
        let out = artisan(&current, &["migrate", "--force"]).unwrap();
        assert!(!out.status.success(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no_such_function"),
            "{out:?}"
        );
        assert_eq!(
            pg.psql("phpapp", "SELECT count(*) FROM migrations")
                .unwrap(),
            "2\n",
            "0002 applied, 0003 rolled back"
        );
        assert_eq!(
            pg.psql("phpapp", "SELECT to_regclass('broken') IS NULL")
                .unwrap(),
            "t\n"
        );
    }
}
