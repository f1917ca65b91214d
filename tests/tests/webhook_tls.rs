//! `https://` webhooks through the real `hoist` CLI: a TLS receiver on loopback with a
//! certificate for 127.0.0.1 from a test CA. Trusted through `SSL_CERT_FILE`, it hears
//! the deploy's start and success messages over TLS (ALPN `http/1.1`); trusting
//! another CA instead, the deploy still succeeds and stderr says the webhook failed.

use std::{
    convert::Infallible,
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
};

use hoist_tests::{
    harness::{AgentBuilder, Pki, Who, bin, hoist},
    services::{git::AppRepo, tls},
};
use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio_rustls::TlsAcceptor;

/// Each message: the connection's ALPN protocol and the JSON body.
type Seen = Arc<Mutex<Vec<(Option<Vec<u8>>, Value)>>>;

/// A TLS webhook receiver: records each JSON body POSTed to it with the ALPN protocol
/// its connection negotiated.
struct Receiver {
    port: u16,
    seen: Seen,
    _thread: std::thread::JoinHandle<()>,
}

impl Receiver {
    fn start(cert: &Path, key: &Path) -> Receiver {
        let acceptor = TlsAcceptor::from(tls::server_config(cert, key));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen: Seen = Arc::default();
        let record = seen.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((tcp, _)) = listener.accept().await {
                    let (acceptor, record) = (acceptor.clone(), record.clone());
                    tokio::spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                        let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                            let (record, alpn) = (record.clone(), alpn.clone());
                            async move {
                                let body = req.into_body().collect().await.map(|b| b.to_bytes());
                                if let Ok(body) = body
                                    && let Ok(json) = serde_json::from_slice::<Value>(&body)
                                {
                                    record.lock().unwrap().push((alpn, json));
                                }
                                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok"))))
                            }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(tls), service)
                            .await;
                    });
                }
            });
        });
        Receiver {
            port,
            seen,
            _thread: thread,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/services/T0/B0/secret", self.port)
    }

    /// The `event` field of every message so far, in order.
    fn events(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, b)| b["attachments"][0]["fields"][0]["value"].to_string())
            .map(|v| v.trim_matches('"').to_string())
            .collect()
    }
}

/// Runs `hoist deploy` with `SSL_CERT_FILE=ca`; returns its stderr after checking it
/// exited 0.
fn deploy(fleet: &Path, ca: &Path) -> String {
    let out = Command::new(bin("hoist"))
        .args([
            "deploy",
            "web",
            "--ref",
            "main",
            "--strategy",
            "all",
            "--fleet",
        ])
        .arg(fleet)
        .env("NO_COLOR", "1")
        .env("SSL_CERT_FILE", ca)
        .env_remove("SSL_CERT_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("run hoist");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "hoist deploy\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    stderr
}

#[tokio::test]
async fn https_webhooks_verify_the_server_against_ssl_cert_file() {
    let pki = Pki::new();
    let root = tempfile::tempdir().unwrap();
    let (hooks_ca, other_ca) = (root.path().join("hooks-ca"), root.path().join("other-ca"));
    for (args, what) in [
        (vec!["ca", "init", hooks_ca.to_str().unwrap()], "ca init"),
        (vec!["ca", "init", other_ca.to_str().unwrap()], "ca init"),
        (
            vec![
                "ca",
                "issue",
                "--ca",
                hooks_ca.to_str().unwrap(),
                "--agent",
                "hook",
                "--san",
                "127.0.0.1",
            ],
            "ca issue",
        ),
    ] {
        let (status, out, err) = hoist(&args);
        assert!(status.success(), "hoist {what}: {out}{err}");
    }
    let hooks = Receiver::start(&hooks_ca.join("hook.pem"), &hooks_ca.join("hook.key"));

    let repo = AppRepo::new_static(&[("index.html", "v\n")]);
    repo.commit_version("1", &[]);
    let deploy_to = root.path().join("web");
    let agent = AgentBuilder::new(&pki)
        .apps(&format!(
            "[[app]]\nname = \"web\"\nrepo = \"{}\"\ndeploy_to = \"{}\"\n",
            repo.url(),
            deploy_to.display()
        ))
        .start()
        .await;
    let fleet = root.path().join("fleet.toml");
    std::fs::write(
        &fleet,
        format!(
            "{}{}\n[notify]\nwebhooks = [\"{}\"]\n",
            pki.fleet_tls(Who::Deployer),
            agent.fleet_entry("web-1"),
            hooks.url()
        ),
    )
    .unwrap();

    // Trusted: start and success arrive over TLS, negotiated as http/1.1.
    let stderr = deploy(&fleet, &hooks_ca.join("ca.pem"));
    assert!(!stderr.contains("webhook"), "{stderr}");
    assert_eq!(hooks.events(), ["start", "success"]);
    let seen = hooks.seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .all(|(alpn, _)| alpn.as_deref() == Some(b"http/1.1".as_slice())),
        "{seen:?}"
    );
    assert!(
        seen[1].1["text"]
            .as_str()
            .is_some_and(|t| t.contains("succeeded")),
        "{seen:?}"
    );

    // Untrusted: the deploy goes ahead, the webhook misses its messages and says why.
    repo.commit_version("2", &[]);
    let stderr = deploy(&fleet, &other_ca.join("ca.pem"));
    assert!(
        stderr.contains("webhook https://127.0.0.1:")
            && stderr.contains("missed the start message")
            && stderr.contains("certificate"),
        "{stderr}"
    );
    assert!(!stderr.contains("secret"), "{stderr}");
    assert_eq!(hooks.events(), ["start", "success"], "nothing new arrived");
    assert!(deploy_to.join("current").exists());
}
