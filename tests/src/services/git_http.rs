//! A bare git repository served over git's "dumb" HTTP protocol on `127.0.0.1:<port>`,
//! so a test controls how long an agent's fetch takes: every request can be answered
//! after a delay, or held open without an answer (a hanging fetch) until the test lets
//! it go. Plain files only (`info/refs`, `HEAD`, `objects/...`); `info/refs` is
//! refreshed with `git update-server-info` on each request, so pushes made with
//! [`crate::services::git::AppRepo`] are seen at once. It runs on its own threads, so a
//! test that blocks never stalls it.

use std::{
    collections::HashMap,
    io::{Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    path::{Component, Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::Context as _;

use crate::e2e;

/// Longest a request's head may be.
const MAX_HEAD: usize = 16 * 1024;
/// How long `update-server-info` may take.
const GIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a held request looks whether it may go.
const HOLD_POLL: Duration = Duration::from_millis(20);

struct Shared {
    bare: PathBuf,
    /// Per-request delay, in milliseconds.
    delay_ms: AtomicU64,
    /// New requests are held (never answered) while set.
    hang: AtomicBool,
    /// Bumped by [`GitHttp::release`]: held requests of an older generation give up.
    generation: AtomicU64,
    stop: AtomicBool,
    requests: AtomicUsize,
    held: AtomicUsize,
    /// Connections being served or held, by number, shut down on drop; each is removed
    /// when its answer is sent (so a long run does not pile up descriptors).
    open: Mutex<HashMap<usize, TcpStream>>,
    next_conn: AtomicUsize,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The server; stopped (every connection closed) on drop.
pub struct GitHttp {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl GitHttp {
    /// Serves the bare repository at `bare` (e.g. [`AppRepo::url`]), answering each
    /// request after `delay`.
    ///
    /// [`AppRepo::url`]: crate::services::git::AppRepo::url
    pub fn start(bare: &Path, delay: Duration) -> anyhow::Result<GitHttp> {
        let listener = TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            bare: bare.to_path_buf(),
            delay_ms: AtomicU64::new(millis(delay)),
            hang: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            requests: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
            open: Mutex::new(HashMap::new()),
            next_conn: AtomicUsize::new(0),
        });
        let accepting = shared.clone();
        let acceptor = thread::spawn(move || {
            for stream in listener.incoming() {
                if accepting.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else {
                    // EMFILE and the like: do not spin.
                    thread::sleep(HOLD_POLL);
                    continue;
                };
                let conn = accepting.next_conn.fetch_add(1, Ordering::SeqCst);
                if let Ok(clone) = stream.try_clone() {
                    locked(&accepting.open).insert(conn, clone);
                }
                let shared = accepting.clone();
                thread::spawn(move || {
                    serve(&shared, stream);
                    locked(&shared.open).remove(&conn);
                });
            }
        });
        Ok(GitHttp {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The URL to use as an app's `repo`.
    pub fn url(&self) -> String {
        format!("http://{}/app.git", self.addr)
    }

    /// Answers each later request after `delay`.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.delay_ms.store(millis(delay), Ordering::SeqCst);
    }

    /// Holds every later request open without an answer: a fetch that hangs.
    pub fn hang(&self) {
        self.shared.hang.store(true, Ordering::SeqCst);
    }

    /// Stops holding: held connections are closed (their fetch fails at once) and later
    /// requests are answered again.
    pub fn release(&self) {
        self.shared.hang.store(false, Ordering::SeqCst);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Requests seen so far.
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Requests being held now.
    pub fn held(&self) -> usize {
        self.shared.held.load(Ordering::SeqCst)
    }
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.release();
        for (_, stream) in locked(&self.shared.open).drain() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        // Wake the acceptor so it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One connection: one request, one answer (`Connection: close`).
fn serve(shared: &Shared, mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let Some(path) = read_path(&mut stream) else {
        return;
    };
    shared.requests.fetch_add(1, Ordering::SeqCst);
    if shared.hang.load(Ordering::SeqCst) {
        let generation = shared.generation.load(Ordering::SeqCst);
        shared.held.fetch_add(1, Ordering::SeqCst);
        while shared.generation.load(Ordering::SeqCst) == generation
            && !shared.stop.load(Ordering::SeqCst)
        {
            thread::sleep(HOLD_POLL);
        }
        shared.held.fetch_sub(1, Ordering::SeqCst);
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    thread::sleep(Duration::from_millis(
        shared.delay_ms.load(Ordering::SeqCst),
    ));
    let (status, body) = match file_for(shared, &path) {
        Some(file) => match std::fs::read(&file) {
            Ok(bytes) => ("200 OK", bytes),
            Err(_) => ("404 Not Found", Vec::new()),
        },
        None => ("404 Not Found", Vec::new()),
    };
    // text/plain, never the smart protocol's advertisement type: git falls back to the
    // dumb protocol and fetches the files one by one.
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(&body));
    let _ = stream.shutdown(Shutdown::Both);
}

/// The path of a `GET PATH HTTP/1.x` request, without its query.
fn read_path(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 || head.len() > MAX_HEAD {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut words = text.lines().next()?.split_whitespace();
    (words.next()? == "GET").then_some(())?;
    let target = words.next()?;
    Some(target.split('?').next().unwrap_or(target).to_string())
}

/// The file under the bare repo that `/app.git/REST` names; `info/refs` refreshed.
fn file_for(shared: &Shared, path: &str) -> Option<PathBuf> {
    let rest = path.strip_prefix("/app.git/")?;
    let rel = Path::new(rest);
    if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    if rest == "info/refs" {
        update_server_info(&shared.bare);
    }
    Some(shared.bare.join(rel))
}

fn update_server_info(bare: &Path) {
    let Some(git) = e2e::find_tool("git") else {
        return;
    };
    let mut cmd = Command::new(git);
    cmd.arg("--git-dir")
        .arg(bare)
        .arg("update-server-info")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    let _ = e2e::run_with_timeout(&mut cmd, None, GIT_TIMEOUT);
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::services::git::AppRepo;

    fn clone(url: &str, into: &Path, timeout: Duration) -> anyhow::Result<std::process::Output> {
        let mut cmd = Command::new(e2e::find_tool("git").expect("git"));
        cmd.args(["clone", "--mirror", "--quiet", url])
            .arg(into)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0");
        e2e::run_with_timeout(&mut cmd, None, timeout)
    }

    #[test]
    fn serves_a_clone_slowly_and_can_hang_it() {
        if e2e::require("git", "git", "serves_a_clone_slowly_and_can_hang_it").is_none() {
            return;
        }
        let repo = AppRepo::new_static(&[("index.html", "hi\n")]);
        let sha = repo.commit_version("1", &[]);
        let server = GitHttp::start(Path::new(&repo.url()), Duration::from_millis(50)).unwrap();
        let dir = tempfile::tempdir().unwrap();

        let started = Instant::now();
        let out = clone(&server.url(), &dir.path().join("a.git"), GIT_TIMEOUT).unwrap();
        assert!(out.status.success(), "{out:?}");
        let requests = server.requests();
        assert!(requests >= 4, "a dumb clone asks for each file: {requests}");
        // git fetches objects in parallel, but info/refs, HEAD, the commit and its tree
        // come one after the other: at least 4 delays.
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(50 * 4),
            "{requests} requests in {took:?}"
        );
        let head = std::fs::read_to_string(dir.path().join("a.git/refs/heads/main"))
            .or_else(|_| std::fs::read_to_string(dir.path().join("a.git/packed-refs")))
            .unwrap();
        assert!(head.contains(&sha), "{head}");

        // Hung: the clone waits until released, then fails.
        server.hang();
        let url = server.url();
        let into = dir.path().join("b.git");
        let waiting = thread::spawn(move || clone(&url, &into, GIT_TIMEOUT));
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.held() == 0 {
            assert!(Instant::now() < deadline, "no request held");
            thread::sleep(HOLD_POLL);
        }
        thread::sleep(Duration::from_millis(200));
        assert!(!waiting.is_finished(), "the clone hangs while held");
        server.release();
        let out = waiting.join().unwrap().unwrap();
        assert!(!out.status.success(), "{out:?}");
    }
}
