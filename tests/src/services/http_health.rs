//! A real HTTP/1.1 server (hyper) on `127.0.0.1:<port>` serving `GET /health` with a
//! status code and JSON body the test changes at runtime, and `GET /metrics` with
//! Prometheus text the test sets. It runs on its own thread and runtime, so a test that
//! blocks (running supervisorctl, say) never stalls it.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::Context as _;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Bytes, Incoming},
    header::{ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::oneshot;

struct Shared {
    health: Mutex<(StatusCode, Value)>,
    metrics: Mutex<String>,
    delay: Mutex<Duration>,
    hits: AtomicU64,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The listening half: dropping `shutdown` (or sending on it) closes the listener; the
/// thread then drops its runtime, which closes every open connection.
struct Running {
    shutdown: oneshot::Sender<()>,
    thread: JoinHandle<()>,
}

/// A health endpoint for checks; answers `200 {"status":"healthy"}` until told otherwise.
pub struct HealthServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    running: Option<Running>,
}

impl HealthServer {
    /// Binds `127.0.0.1:0` and serves until [`HealthServer::stop`] or drop.
    pub async fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr");
        let shared = Arc::new(Shared {
            health: Mutex::new((StatusCode::OK, json!({"status": "healthy"}))),
            metrics: Mutex::new(String::new()),
            delay: Mutex::new(Duration::ZERO),
            hits: AtomicU64::new(0),
        });
        let running = serve(listener, shared.clone()).expect("start the health server");
        HealthServer {
            addr,
            shared,
            running: Some(running),
        }
    }

    /// What `GET /health` answers from now on.
    pub fn set(&self, status: u16, body: Value) {
        let status = StatusCode::from_u16(status)
            .unwrap_or_else(|_| panic!("{status} is not an HTTP status code"));
        *locked(&self.shared.health) = (status, body);
    }

    /// Makes every response wait this long first (for check timeouts).
    pub fn set_delay(&self, delay: Duration) {
        *locked(&self.shared.delay) = delay;
    }

    /// What `GET /metrics` answers (Prometheus text format; empty at first).
    pub fn set_metrics(&self, text: &str) {
        *locked(&self.shared.metrics) = text.to_string();
    }

    /// `http://127.0.0.1:PORT/health`
    pub fn url(&self) -> String {
        format!("http://{}/health", self.addr)
    }

    /// `127.0.0.1:PORT`, e.g. a Prometheus scrape target for `/metrics`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many requests `/health` has received.
    pub fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::Relaxed)
    }

    /// Closes the listener and every open connection: new connections are refused.
    pub fn stop(&mut self) {
        if let Some(Running { shutdown, thread }) = self.running.take() {
            let _ = shutdown.send(());
            // The thread only drops its listener and runtime after the signal.
            let _ = thread.join();
        }
    }

    /// Listens again on the same port after [`HealthServer::stop`], keeping the state.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.running.is_none() {
            let listener = std::net::TcpListener::bind(self.addr)
                .with_context(|| format!("rebind {}", self.addr))?;
            self.running = Some(serve(listener, self.shared.clone())?);
        }
        Ok(())
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve(listener: std::net::TcpListener, shared: Arc<Shared>) -> anyhow::Result<Running> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("build the health server runtime")?;
    let (shutdown, mut stopped) = oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("health-{}", listener.local_addr()?.port()))
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(err) => panic!("health server listener: {err}"),
                };
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        accepted = listener.accept() => match accepted {
                            Ok((stream, _)) => {
                                let shared = shared.clone();
                                tokio::spawn(async move {
                                    let service = service_fn(move |req| {
                                        respond(shared.clone(), req)
                                    });
                                    // A client hanging up mid-request is not our error.
                                    let _ = http1::Builder::new()
                                        .serve_connection(TokioIo::new(stream), service)
                                        .await;
                                });
                            }
                            // Out of descriptors and the like: back off briefly.
                            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                        },
                    }
                }
            });
            // The runtime drops here, and with it every connection task.
        })?;
    Ok(Running { shutdown, thread })
}

async fn respond(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path();
    if path == "/health" {
        shared.hits.fetch_add(1, Ordering::Relaxed);
    }
    let delay = *locked(&shared.delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let (status, content_type, body) = match (req.method(), path) {
        (&Method::GET, "/health") => {
            let (status, body) = locked(&shared.health).clone();
            (status, "application/json", body.to_string())
        }
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            locked(&shared.metrics).clone(),
        ),
        (_, "/health" | "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        content_type.parse().expect("static header value"),
    );
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(ALLOW, "GET".parse().expect("static header value"));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpStream,
    };

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// One request on a fresh connection; returns (status line, body).
    async fn get(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<(String, String)> {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut buf = Vec::new();
        tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut buf)).await??;
        let text = String::from_utf8(buf).expect("utf-8 response");
        let (head, body) = text.split_once("\r\n\r\n").expect("header end");
        let status = head.lines().next().unwrap_or_default().to_string();
        Ok((status, body.to_string()))
    }

    #[tokio::test]
    async fn serves_what_the_test_sets_and_stops_for_real() {
        let mut server = HealthServer::start().await;
        let addr = server.addr();
        assert_eq!(server.url(), format!("http://{addr}/health"));
        assert_eq!(server.hits(), 0);

        let (status, body) = get(addr, "GET", "/health").await.unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"status": "healthy"})
        );

        server.set(503, json!({"status": "degraded", "db": {"up": false}}));
        let (status, body) = get(addr, "GET", "/health").await.unwrap();
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"status": "degraded", "db": {"up": false}})
        );
        assert_eq!(server.hits(), 2);

        let (status, _) = get(addr, "GET", "/other").await.unwrap();
        assert_eq!(status, "HTTP/1.1 404 Not Found");
        let (status, _) = get(addr, "POST", "/health").await.unwrap();
        assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
        assert_eq!(server.hits(), 3);

        server.set_metrics("# TYPE x gauge\nx 1\n");
        let (status, body) = get(addr, "GET", "/metrics").await.unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(body, "# TYPE x gauge\nx 1\n");

        // A keep-alive connection open across stop() is closed, and new ones refused.
        let mut open = TcpStream::connect(addr).await.unwrap();
        open.write_all(format!("GET /health HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut first = [0u8; 12];
        open.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"HTTP/1.1 503");
        server.stop();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(TIMEOUT, open.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "connection still open after stop");
        let refused = get(addr, "GET", "/health").await.unwrap_err();
        assert_eq!(
            refused.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{refused}"
        );

        // Back on the same port with the same state.
        server.restart().unwrap();
        let (status, _) = get(addr, "GET", "/health").await.unwrap();
        assert_eq!(status, "HTTP/1.1 503 Service Unavailable");
    }

    #[tokio::test]
    async fn delay_holds_the_answer_back() {
        let server = HealthServer::start().await;
        server.set_delay(Duration::from_millis(300));
        let started = std::time::Instant::now();
        let (status, _) = get(server.addr(), "GET", "/health").await.unwrap();
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}
