//! The real Prometheus tools: `promtool check metrics` as a lint for exposition text, and
//! a `prometheus` server on a free loopback port with its storage in a temp dir.

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
use serde_json::Value;
use tempfile::TempDir;

use crate::e2e;

const PROMTOOL_TIMEOUT: Duration = Duration::from_secs(30);
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(10);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts at a fresh port when the one picked was taken in the meantime.
const PORT_ATTEMPTS: usize = 3;

/// Runs `promtool check metrics` on `text`. Err (with promtool's output) when it exits
/// non-zero or reports any problem, lint warnings included.
pub fn check_metrics(text: &str) -> anyhow::Result<()> {
    let promtool =
        e2e::find_tool("promtool").context("promtool not found (apt-get install prometheus)")?;
    let out = e2e::run_with_timeout(
        Command::new(promtool).args(["check", "metrics"]),
        Some(text.as_bytes()),
        PROMTOOL_TIMEOUT,
    )?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !report.trim().is_empty() {
        bail!(
            "promtool check metrics ({}):\n{}",
            out.status,
            report.trim_end()
        );
    }
    Ok(())
}

/// A running `prometheus` scraping the given targets every second (job `hoist`);
/// stopped (SIGTERM, then SIGKILL) on drop.
pub struct Prometheus {
    dir: TempDir,
    addr: SocketAddr,
    child: Child,
}

impl Prometheus {
    /// Starts prometheus on `127.0.0.1:<free port>` with `/metrics` of each `host:port`
    /// target in `static_configs`, and waits until `/-/ready` answers 200.
    pub fn start<S: AsRef<str>>(targets: &[S]) -> anyhow::Result<Self> {
        let binary = e2e::find_tool("prometheus")
            .context("prometheus not found (apt-get install prometheus)")?;
        let dir = tempfile::Builder::new().prefix("hoist-prom").tempdir()?;
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, config_text(targets)?).context("write prometheus.yml")?;

        let log = dir.path().join("prometheus.log");
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let addr = SocketAddr::from(([127, 0, 0, 1], e2e::free_port()));
            let out = std::fs::File::create(&log)?;
            let mut child = Command::new(&binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .current_dir(dir.path())
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .process_group(0)
                .spawn()
                .context("spawn prometheus")?;
            match wait_ready(&mut child, addr, &log) {
                Ok(()) => {
                    return Ok(Prometheus { dir, addr, child });
                }
                Err(err) => {
                    e2e::terminate_group(&mut child, STOP_GRACE);
                    if !read_log(&log).contains("address already in use") {
                        return Err(err);
                    }
                    last = format!("{err:#}");
                }
            }
        }
        bail!("prometheus found no free port in {PORT_ATTEMPTS} attempts: {last}")
    }

    /// `http://127.0.0.1:PORT`, as a `[[gate]] prometheus = ...` value.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("prometheus.yml")
    }

    pub fn log_text(&self) -> String {
        read_log(&self.dir.path().join("prometheus.log"))
    }

    /// An instant query through `/api/v1/query`; returns `data.result` (a JSON array of
    /// `{"metric": {...}, "value": [ts, "v"]}` for vector results).
    pub fn query(&self, promql: &str) -> anyhow::Result<Value> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let (status, body) = http_get(self.addr, &path)?;
        let json: Value = serde_json::from_str(&body)
            .with_context(|| format!("query {promql:?}: HTTP {status}: {body}"))?;
        ensure!(
            status == 200 && json["status"] == "success",
            "query {promql:?}: HTTP {status}: {body}"
        );
        Ok(json["data"]["result"].clone())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        e2e::terminate_group(&mut self.child, STOP_GRACE);
    }
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Polls `/-/ready` until it answers 200, prometheus exits, or the time is up.
fn wait_ready(child: &mut Child, addr: SocketAddr, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut delay = Duration::from_millis(20);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "prometheus exited with {status} before ready:\n{}",
                read_log(log)
            );
        }
        let last = match http_get(addr, "/-/ready") {
            Ok((200, _)) => return Ok(()),
            Ok((status, body)) => format!("{status} {body}"),
            Err(err) => format!("{err:#}"),
        };
        if Instant::now() > deadline {
            bail!(
                "prometheus not ready within {READY_TIMEOUT:?} ({last}):\n{}",
                read_log(log)
            );
        }
        thread::sleep(delay);
        delay = (delay * 3 / 2).min(Duration::from_millis(100));
    }
}

fn config_text<S: AsRef<str>>(targets: &[S]) -> anyhow::Result<String> {
    let mut text = String::from(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: hoist\n    scrape_interval: 1s\n    scrape_timeout: 1s\n\
         \x20   static_configs:\n      - targets: [",
    );
    for (i, target) in targets.iter().enumerate() {
        let target = target.as_ref();
        ensure!(
            !target.is_empty() && !target.contains(['"', '\\', '\n', '/']),
            "scrape target {target:?} must be host:port"
        );
        if i > 0 {
            text.push_str(", ");
        }
        write!(text, "\"{target}\"")?;
    }
    text.push_str("]\n");
    Ok(text)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn url_encode(text: &str) -> String {
    text.bytes().fold(String::new(), |mut out, b| {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
        out
    })
}

/// A blocking HTTP/1.0 GET (no chunked bodies); returns (status, body).
fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line in {head:?}"))?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::http_health::HealthServer;

    const VALID: &str = "# HELP hoist_up Whether the agent is up.\n# TYPE hoist_up gauge\nhoist_up 1\n\
        # HELP hoist_deploys_total Deploys by result.\n# TYPE hoist_deploys_total counter\n\
        hoist_deploys_total{app=\"web\",result=\"ok\"} 3\n";

    #[test]
    fn promtool_accepts_valid_and_rejects_invalid_text() {
        if e2e::require(
            "promtool",
            "prometheus",
            "promtool_accepts_valid_and_rejects_invalid_text",
        )
        .is_none()
        {
            return;
        }
        check_metrics(VALID).unwrap();

        // A lint problem (no HELP) exits non-zero with the reason.
        let err = check_metrics("# TYPE foo gauge\nfoo 1\n").unwrap_err();
        assert!(err.to_string().contains("no help text"), "{err}");
        // A counter without _total.
        let err = check_metrics("# HELP foo x\n# TYPE foo counter\nfoo 1\n").unwrap_err();
        assert!(err.to_string().contains("_total"), "{err}");
        // Not the exposition format at all.
        let err = check_metrics("hoist up{ 1\n").unwrap_err();
        assert!(err.to_string().contains("error"), "{err}");
    }

    #[test]
    fn config_and_encoding() {
        let text = config_text(&["127.0.0.1:1", "127.0.0.1:2"]).unwrap();
        assert!(
            text.contains("targets: [\"127.0.0.1:1\", \"127.0.0.1:2\"]"),
            "{text}"
        );
        assert!(text.contains("    static_configs:\n"), "{text}");
        assert!(config_text(&["http://x/"]).is_err());
        assert_eq!(
            url_encode("up{job=\"hoist\"} > 0"),
            "up%7Bjob%3D%22hoist%22%7D%20%3E%200"
        );
    }

    #[tokio::test]
    async fn prometheus_scrapes_a_real_target() {
        if e2e::require(
            "prometheus",
            "prometheus",
            "prometheus_scrapes_a_real_target",
        )
        .is_none()
        {
            return;
        }
        let target = HealthServer::start().await;
        target.set_metrics(
            "# TYPE http_requests_total counter\nhttp_requests_total{status=\"500\"} 3\n",
        );
        let prometheus = Prometheus::start(&[target.addr().to_string()]).unwrap();
        assert!(prometheus.url().starts_with("http://127.0.0.1:"));
        let result = e2e::eventually("a scrape", Duration::from_secs(30), || async {
            let result = prometheus.query("http_requests_total{job=\"hoist\"}")?;
            match result.as_array().map(Vec::len) {
                Some(1) => Ok(result),
                _ => Err(anyhow::anyhow!("no sample yet: {result}")),
            }
        })
        .await;
        assert_eq!(result[0]["metric"]["status"], "500", "{result}");
        assert_eq!(result[0]["value"][1], "3", "{result}");
        let up = prometheus.query("up{job=\"hoist\"}").unwrap();
        assert_eq!(up[0]["value"][1], "1", "{up}");

        let err = prometheus.query("sum(").unwrap_err();
        assert!(err.to_string().contains("HTTP 400"), "{err}");

        let pid_dir = prometheus.dir().to_path_buf();
        drop(prometheus);
        assert!(!pid_dir.exists());
    }
}
