//! Health checks: http (status and JSON fields), tcp (connect), command (exit 0).
//! They gate deploys and run in the background every `health_interval`.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant, SystemTime},
};

use hoist_proto::v1::CheckStatus;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::{
    config::{App, Check},
    host::process,
};

/// Body bytes read from an http check; enough for any health JSON.
const MAX_BODY: usize = 64 * 1024;
/// Output kept per check result.
const MAX_OUTPUT: usize = 2048;

/// Runs one check once.
pub async fn run(app: &App, check: &Check) -> CheckStatus {
    let started = Instant::now();
    let at = SystemTime::now();
    let result = match check {
        Check::Http {
            url,
            expect_status,
            expect_json,
            timeout,
            ..
        } => match tokio::time::timeout(*timeout, http(url, *expect_status, expect_json)).await {
            Ok(r) => r,
            Err(_) => Err(format!("GET {url}: no answer within {timeout:?}")),
        },
        Check::Tcp {
            address, timeout, ..
        } => match tokio::time::timeout(*timeout, TcpStream::connect(address.as_str())).await {
            Ok(Ok(_)) => Ok(format!("connected to {address}")),
            Ok(Err(err)) => Err(format!("connect {address}: {err}")),
            Err(_) => Err(format!("connect {address}: no answer within {timeout:?}")),
        },
        Check::Command {
            command, timeout, ..
        } => command_check(app, &command.0.join(" && "), *timeout).await,
    };
    let (ok, output) = match result {
        Ok(out) => (true, out),
        Err(out) => (false, out),
    };
    CheckStatus {
        name: check.name(),
        kind: check.kind().into(),
        ok,
        has_run: true,
        last_run: Some(at.into()),
        duration_ms: started.elapsed().as_millis() as u64,
        output: process::tail(&output, MAX_OUTPUT).to_string(),
    }
}

async fn http(
    url: &str,
    expect_status: u16,
    expect_json: &BTreeMap<String, serde_json::Value>,
) -> Result<String, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("bad check url {url}: {e}"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("check url {url} has no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("GET {url}: connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let conn = tokio::spawn(conn);
    let authority = uri
        .authority()
        .map(|a| a.as_str())
        .unwrap_or(host)
        .to_string();
    let request = http::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(http::header::HOST, authority)
        .header(
            http::header::USER_AGENT,
            concat!("hoistd/", env!("CARGO_PKG_VERSION")),
        )
        .header(http::header::ACCEPT, "application/json, */*")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("GET {url}: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| format!("GET {url} → {status}: reading body: {e}"))?;
    conn.abort();
    let body = String::from_utf8_lossy(&body);
    let excerpt = process::tail(body.trim(), 512);
    if status.as_u16() != expect_status {
        return Err(format!(
            "GET {url} → {status}, expected {expect_status}; body: {excerpt}"
        ));
    }
    if !expect_json.is_empty() {
        let json: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| format!("GET {url} → {status}, body is not JSON ({e}): {excerpt}"))?;
        for (path, want) in expect_json {
            let got = json_path(&json, path);
            if got != Some(want) {
                let got = got.map_or("missing".to_string(), |v| v.to_string());
                return Err(format!(
                    "GET {url} → {status}, but {path} = {got}, expected {want}; body: {excerpt}"
                ));
            }
        }
    }
    Ok(format!("GET {url} → {status}; body: {excerpt}"))
}

/// Looks up a dotted path (`checks.db.status`) in a JSON document.
fn json_path<'a>(json: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(json, |v, key| {
        v.get(key).or_else(|| v.get(key.parse::<usize>().ok()?))
    })
}

async fn command_check(app: &App, shell: &str, timeout: Duration) -> Result<String, String> {
    let run_as = match &app.user {
        Some(user) => {
            Some(process::RunAs::resolve(user, app.group.as_deref()).map_err(|e| e.to_string())?)
        }
        None => None,
    };
    let current = app.deploy_to.join("current");
    let cwd = if current.is_dir() {
        current
    } else if app.deploy_to.is_dir() {
        app.deploy_to.clone()
    } else {
        Path::new("/").to_path_buf()
    };
    let mut env = app.env.clone();
    env.insert("HOIST_APP".into(), app.name.clone());
    let spec = process::Spec {
        shell: shell.to_string(),
        cwd,
        env,
        run_as,
        timeout,
    };
    match process::run_captured(&spec, MAX_OUTPUT).await {
        Err(err) => Err(err.to_string()),
        Ok((outcome, out)) if outcome.timed_out => {
            Err(format!("timed out after {timeout:?}; output: {out}"))
        }
        Ok((outcome, out)) if outcome.success() => Ok(out),
        Ok((outcome, out)) => Err(format!(
            "exit {}; output: {out}",
            outcome.code.map_or("by signal".into(), |c| c.to_string())
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_paths() {
        let json = serde_json::json!({"status": "ok", "db": {"up": true}, "list": [1, 2]});
        assert_eq!(json_path(&json, "status"), Some(&serde_json::json!("ok")));
        assert_eq!(json_path(&json, "db.up"), Some(&serde_json::json!(true)));
        assert_eq!(json_path(&json, "list.1"), Some(&serde_json::json!(2)));
        assert_eq!(json_path(&json, "nope.x"), None);
    }
}
