//! Health checks: http (status and JSON fields, plain or https), tcp (connect), command
//! (exit 0). They gate deploys (unless `gate = false`) and run in the background every
//! `health_interval`.
//!
//! `https://` URLs are verified by rustls (ring) against the system's root certificates
//! (`rustls-native-certs`: `/etc/ssl/certs`, or `SSL_CERT_FILE`/`SSL_CERT_DIR`), read once,
//! plus the check's own `ca` file (read at every run, so a renewed private CA is picked
//! up without a restart).

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, OnceLock},
    time::{Duration, Instant, SystemTime},
};

use hoist_proto::v1::CheckStatus;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::{CertificateError, ClientConfig, RootCertStore, pki_types::ServerName};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

use crate::{
    config::{App, Check, Probe},
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
    let timeout = check.timeout;
    let result = match &check.probe {
        Probe::Http {
            url,
            expect_status,
            expect_json,
            ca,
        } => match tokio::time::timeout(
            timeout,
            http(url, *expect_status, expect_json, ca.as_deref()),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(format!("GET {url}: no answer within {timeout:?}")),
        },
        Probe::Tcp { address } => {
            match tokio::time::timeout(timeout, TcpStream::connect(address.as_str())).await {
                Ok(Ok(_)) => Ok(format!("connected to {address}")),
                Ok(Err(err)) => Err(format!("connect {address}: {err}")),
                Err(_) => Err(format!("connect {address}: no answer within {timeout:?}")),
            }
        }
        Probe::Command { command } => command_check(app, &command.0.join(" && "), timeout).await,
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
        monitor_only: !check.gate,
    }
}

async fn http(
    url: &str,
    expect_status: u16,
    expect_json: &BTreeMap<String, serde_json::Value>,
    ca: Option<&Path>,
) -> Result<String, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("bad check url {url}: {e}"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("check url {url} has no host"))?;
    let https = uri.scheme_str() == Some("https");
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("GET {url}: connect: {e}"))?;
    let authority = uri
        .authority()
        .map(|a| a.as_str())
        .unwrap_or(host)
        .to_string();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let (status, body) = if https {
        let config = tls_config(ca).map_err(|e| format!("GET {url}: {e}"))?;
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("GET {url}: {host:?} cannot be checked by TLS: {e}"))?;
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("GET {url}: TLS: {}", tls_failure(&e, ca)))?;
        exchange(tls, &authority, path).await
    } else {
        exchange(tcp, &authority, path).await
    }
    .map_err(|e| format!("GET {url}{e}"))?;
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

/// One GET over an open connection: the status and the bounded body, or the error
/// text to append after `GET URL`.
async fn exchange<S>(
    io: S,
    authority: &str,
    path: &str,
) -> Result<(http::StatusCode, Bytes), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!(": {e}"))?;
    let conn = tokio::spawn(conn);
    let request = http::Request::get(path)
        .header(http::header::HOST, authority)
        .header(
            http::header::USER_AGENT,
            concat!("hoistd/", env!("CARGO_PKG_VERSION")),
        )
        .header(http::header::ACCEPT, "application/json, */*")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!(": {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!(": {e}"))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| format!(" → {status}: reading body: {e}"))?;
    conn.abort();
    Ok((status, body))
}

/// The system's roots, read once; empty (with why) when the host has none.
fn system_roots() -> &'static (RootCertStore, String) {
    static ROOTS: OnceLock<(RootCertStore, String)> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(found.certs);
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_string(), |e| e.to_string());
        (roots, why)
    })
}

/// The client configuration for one https check: system roots plus `ca`.
fn tls_config(ca: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let (system, why) = system_roots();
    let mut roots = system.clone();
    if let Some(ca) = ca {
        let extra = read_ca(ca)?;
        roots.add_parsable_certificates(extra);
    }
    if roots.is_empty() {
        return Err(format!(
            "no root certificates to verify against (system store: {why}); install \
             ca-certificates or set `ca` on the check"
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The certificates of a check's `ca` file (PEM, at least one).
pub fn read_ca(ca: &Path) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    let pem = std::fs::read(ca).map_err(|e| format!("cannot read ca {}: {e}", ca.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("ca {} is not PEM: {e}", ca.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "ca {} holds no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)",
            ca.display()
        ));
    }
    Ok(certs)
}

/// A failed handshake in the operator's words.
fn tls_failure(err: &std::io::Error, ca: Option<&Path>) -> String {
    let trusted = match ca {
        Some(ca) => format!("the system's roots or ca {}", ca.display()),
        None => "the system's roots (set `ca` on the check for a private CA)".to_string(),
    };
    let cert = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
        .and_then(|e| match e {
            rustls::Error::InvalidCertificate(c) => Some(c),
            _ => None,
        });
    match cert {
        Some(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => {
            format!("the server's certificate has expired ({err}); renew it")
        }
        Some(CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }) => {
            format!("the server's certificate is not valid yet ({err}); check the host's clock")
        }
        Some(CertificateError::UnknownIssuer) => {
            format!("the server's certificate is not signed by {trusted} ({err})")
        }
        Some(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!("the server's certificate is for another name ({err})"),
        _ => err.to_string(),
    }
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
