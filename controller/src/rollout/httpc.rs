//! A minimal HTTP/1.1 client (hyper) for Prometheus gates and webhooks: one request per
//! connection, `http://` or `https://`, a bounded body, and every error as one line
//! that names the URL.
//!
//! `https://` is rustls (ring) verifying the server against the system's root
//! certificates (`rustls-native-certs`: the platform store, or `SSL_CERT_FILE` /
//! `SSL_CERT_DIR` when set) for the URL's host, DNS name or IP address, with ALPN
//! `http/1.1`.

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

/// Why a URL or an exchange failed; the messages never show a URL's path (webhook
/// paths are secrets).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("{0} is not an http:// or https:// URL")]
    NotHttp(String),
    #[error("{url} has a bad port {port:?}")]
    BadPort { url: String, port: String },
    #[error("{0} has no host")]
    NoHost(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connect {authority}: {reason}")]
    Connect { authority: String, reason: String },
    #[error("{host} is not a TLS server name: {reason}")]
    ServerName { host: String, reason: String },
    #[error("TLS handshake with {authority}: {reason}")]
    Handshake { authority: String, reason: String },
    #[error(
        "no trusted root certificates for https ({0}); install the system CA bundle or set \
         SSL_CERT_FILE"
    )]
    NoRoots(String),
    #[error("TLS setup: {0}")]
    TlsSetup(String),
    /// HTTP/1.1 itself failed (handshake, request, connection).
    #[error("{0}")]
    Protocol(String),
    #[error("HTTP {status}, reading the body: {reason}")]
    Body { status: u16, reason: String },
}

/// Bytes of a response body read at most.
const MAX_BODY: usize = 1024 * 1024;

/// A parsed `http[s]://[user[:password]@]host[:port]/path?query` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct Url {
    /// `https://`: TLS to the server.
    pub tls: bool,
    /// `host:port` as written without userinfo (port 80 or 443 when absent), for the
    /// Host header and messages.
    pub authority: String,
    pub host: String,
    pub port: u16,
    /// Path and query, at least `/`.
    pub path: String,
    /// `Authorization: Basic …` from the URL's userinfo (percent-decoded), if any.
    basic: Option<String>,
}

impl std::fmt::Debug for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Url")
            .field("tls", &self.tls)
            .field("authority", &self.authority)
            .field("path", &self.path)
            .field("basic", &self.basic.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Url {
    /// Parses an `http://` or `https://` URL with [`http::Uri`]; anything else is an
    /// error that says so. Userinfo becomes Basic authentication and never appears in
    /// messages.
    pub fn parse(url: &str) -> Result<Url, HttpError> {
        let shown = || redact(url);
        let uri: http::Uri = url.parse().map_err(|_| {
            if url.starts_with("http://") || url.starts_with("https://") {
                HttpError::NoHost(shown())
            } else {
                HttpError::NotHttp(shown())
            }
        })?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(HttpError::NotHttp(shown())),
        };
        let authority = uri.authority().ok_or_else(|| HttpError::NoHost(shown()))?;
        let written = authority.as_str();
        let (userinfo, host_port) = match written.rsplit_once('@') {
            Some((info, rest)) => (Some(info), rest),
            None => (None, written),
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(HttpError::NoHost(shown()));
        }
        // What follows the host: `:PORT`, or nothing.
        let after_host = host_port.get(authority.host().len()..).unwrap_or_default();
        let port = match authority.port() {
            Some(port) => port.as_u16(),
            None if !after_host.is_empty() => {
                return Err(HttpError::BadPort {
                    url: shown(),
                    port: after_host.trim_start_matches(':').to_string(),
                });
            }
            None => {
                if tls {
                    443
                } else {
                    80
                }
            }
        };
        let path = match uri.path_and_query() {
            Some(pq) if pq.as_str().starts_with('/') => pq.as_str().to_string(),
            Some(pq) => format!("/{}", pq.as_str()),
            None => "/".to_string(),
        };
        Ok(Url {
            tls,
            authority: host_port.to_string(),
            host: host.to_string(),
            port,
            path,
            basic: userinfo.map(|info| format!("Basic {}", base64(&percent_decode(info)))),
        })
    }
}

/// A URL for messages: scheme and host only (webhook paths are secrets), userinfo
/// redacted.
pub fn redact(url: &str) -> String {
    crate::output::redact::host_only(url)
}

/// `%XX` sequences decoded (userinfo may encode `:` and `@`).
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// Standard base64 with padding (RFC 4648), for the Basic credentials.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A response: status code and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// `GET url`, bounded by `timeout` as a whole.
pub async fn get(url: &Url, timeout: Duration) -> Result<Response, HttpError> {
    request(url, "GET", None, timeout).await
}

/// `POST url` with a JSON body, bounded by `timeout` as a whole.
pub async fn post_json(url: &Url, body: String, timeout: Duration) -> Result<Response, HttpError> {
    request(url, "POST", Some(body), timeout).await
}

async fn request(
    url: &Url,
    method: &str,
    body: Option<String>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    match tokio::time::timeout(timeout, exchange(url, method, body)).await {
        Ok(result) => result,
        Err(_) => Err(HttpError::Timeout(timeout)),
    }
}

async fn exchange(url: &Url, method: &str, body: Option<String>) -> Result<Response, HttpError> {
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| HttpError::Connect {
            authority: url.authority.clone(),
            reason: e.to_string(),
        })?;
    if !url.tls {
        return send(tcp, url, method, body).await;
    }
    let name = ServerName::try_from(url.host.clone()).map_err(|e| HttpError::ServerName {
        host: url.host.clone(),
        reason: e.to_string(),
    })?;
    let tls = TlsConnector::from(tls_config()?)
        .connect(name, tcp)
        .await
        .map_err(|e| HttpError::Handshake {
            authority: url.authority.clone(),
            reason: e.to_string(),
        })?;
    send(tls, url, method, body).await
}

/// The TLS client configuration, built once: the system's roots, ALPN `http/1.1`.
fn tls_config() -> Result<Arc<ClientConfig>, HttpError> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, HttpError>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map_or_else(|| "none found".to_string(), |e| e.to_string());
                return Err(HttpError::NoRoots(why));
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| HttpError::TlsSetup(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
}

/// One request and its response over an open connection.
async fn send<S>(
    io: S,
    url: &Url,
    method: &str,
    body: Option<String>,
) -> Result<Response, HttpError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| HttpError::Protocol(e.to_string()))?;
    let conn = tokio::spawn(conn);
    let mut request = http::Request::builder()
        .method(method)
        .uri(url.path.as_str())
        .header(http::header::HOST, url.authority.as_str())
        .header(
            http::header::USER_AGENT,
            concat!("hoist/", env!("CARGO_PKG_VERSION")),
        )
        .header(http::header::ACCEPT, "application/json");
    if let Some(basic) = &url.basic {
        let mut value = http::HeaderValue::from_str(basic)
            .map_err(|_| HttpError::Protocol("the URL's user name is not usable".into()))?;
        value.set_sensitive(true);
        request = request.header(http::header::AUTHORIZATION, value);
    }
    if body.is_some() {
        request = request.header(http::header::CONTENT_TYPE, "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|e| HttpError::Protocol(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| HttpError::Protocol(e.to_string()))?;
    let status = response.status().as_u16();
    let bytes = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| HttpError::Body {
            status,
            reason: e.to_string(),
        })?;
    conn.abort();
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

/// Percent-encodes everything but RFC 3986 unreserved characters (for query values).
pub fn encode(text: &str) -> String {
    use std::fmt::Write as _;
    text.bytes().fold(String::new(), |mut out, b| {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
        out
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A one-trick HTTP server: answers every request with `status` and `body`, and
    /// records each request's head and body.
    pub(crate) struct Server {
        pub url: String,
        pub requests: Arc<Mutex<Vec<String>>>,
    }

    pub(crate) async fn server(status: u16, body: &'static str) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = requests.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // Read the head, then as much body as Content-Length says.
                    loop {
                        let n = stream.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_string();
                        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
                            let length = head
                                .lines()
                                .find_map(|l| {
                                    l.to_ascii_lowercase()
                                        .strip_prefix("content-length: ")
                                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                                })
                                .unwrap_or(0);
                            if rest.len() >= length {
                                break;
                            }
                        }
                    }
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf).into_owned());
                    let answer = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                });
            }
        });
        Server { url, requests }
    }

    #[test]
    fn urls() {
        let url = Url::parse("http://127.0.0.1:9090").unwrap();
        assert!(!url.tls);
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("127.0.0.1", 9090, "/")
        );
        let url = Url::parse("http://prom.internal/prometheus/").unwrap();
        assert_eq!((url.port, url.path.as_str()), (80, "/prometheus/"));
        assert_eq!(url.authority, "prom.internal");
        let url = Url::parse("http://[::1]:8080/hook?x=1").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 8080));
        assert_eq!(Url::parse("http://h?a=b").unwrap().path, "/?a=b");
        let url = Url::parse("https://hooks.slack.com/services/T0/B0/SECRET").unwrap();
        assert!(url.tls);
        assert_eq!(
            (url.host.as_str(), url.port, url.authority.as_str()),
            ("hooks.slack.com", 443, "hooks.slack.com")
        );
        assert_eq!(url.path, "/services/T0/B0/SECRET");
        let url = Url::parse("https://[::1]:8443/x").unwrap();
        assert_eq!((url.tls, url.host.as_str(), url.port), (true, "::1", 8443));
        let err = Url::parse("ftp://h/SECRET").unwrap_err().to_string();
        assert!(
            err.contains("not an http") && !err.contains("SECRET"),
            "{err}"
        );
        assert!(
            Url::parse("http://h:x/")
                .unwrap_err()
                .to_string()
                .contains("bad port")
        );
        assert!(Url::parse("ftp://h/").is_err());
        assert_eq!(redact("http://h:1/a/b?c"), "http://h:1/…");
        let url = Url::parse("http://user:p%40ss@prom:9090/x").unwrap();
        assert_eq!(
            (url.host.as_str(), url.port, url.authority.as_str()),
            ("prom", 9090, "prom:9090")
        );
        assert_eq!(url.basic.as_deref(), Some("Basic dXNlcjpwQHNz"));
        assert!(!format!("{url:?}").contains("p%40ss"));
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(redact("http://u:pw@h:1/a"), "http://u:***@h:1/…");
        let err = Url::parse("http://u:pw@h:x/").unwrap_err().to_string();
        assert!(!err.contains("pw"), "{err}");
        assert_eq!(
            encode("up{job=\"x\"} > 0"),
            "up%7Bjob%3D%22x%22%7D%20%3E%200"
        );
    }

    #[tokio::test]
    async fn get_and_post() {
        let server = server(200, "{\"ok\":true}").await;
        let url = Url::parse(&format!("{}/api?q=1", server.url)).unwrap();
        let response = get(&url, Duration::from_secs(5)).await.unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.body, "{\"ok\":true}");
        let response = post_json(&url, "{\"text\":\"hi\"}".into(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(response.status, 200);
        let requests = server.requests.lock().unwrap().clone();
        assert!(
            requests[0].starts_with("GET /api?q=1 HTTP/1.1\r\n"),
            "{requests:?}"
        );
        assert!(requests[1].starts_with("POST /api?q=1 HTTP/1.1\r\n"));
        assert!(requests[1].ends_with("{\"text\":\"hi\"}"), "{requests:?}");

        let with_user = server.url.replacen("http://", "http://ops:s3cr%40t@", 1);
        let url = Url::parse(&format!("{with_user}/q")).unwrap();
        get(&url, Duration::from_secs(5)).await.unwrap();
        let requests = server.requests.lock().unwrap().clone();
        assert!(
            requests[2].contains("authorization: Basic b3BzOnMzY3JAdA==\r\n"),
            "{requests:?}"
        );
        assert!(!requests[2].contains("ops:"), "{requests:?}");

        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = Url::parse(&format!("http://{}/", closed.local_addr().unwrap())).unwrap();
        drop(closed);
        let err = get(&dead, Duration::from_secs(5))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("connect 127.0.0.1:"), "{err}");
    }
}
