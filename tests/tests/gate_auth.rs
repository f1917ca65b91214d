//! A Prometheus gate URL with `user:password@`: the password never appears (dry run,
//! plan JSON, connect errors), and the userinfo is sent as Basic authentication to a
//! real loopback HTTP server, through the real CLI and agent.

use std::sync::{Arc, Mutex};

use hoist_tests::{
    harness::{AgentBuilder, Pki, Who, hoist},
    services::git::AppRepo,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const VECTOR: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.001"]}]}}"#;

/// Answers every request with a one-sample vector; records each request head.
async fn prometheus() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let heads: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 * 1024 {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                seen.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf).into_owned());
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{VECTOR}",
                    VECTOR.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
            });
        }
    });
    (addr, heads)
}

// Multi-threaded: the loopback server answers while the test blocks on `hoist`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_userinfo_is_redacted_and_sent_as_basic_auth() {
    let pki = Pki::new();
    let repo = AppRepo::new_static(&[("index.html", "v\n")]);
    repo.commit_version("1", &[]);
    let root = tempfile::tempdir().unwrap();
    let deploy_to = root.path().join("web-1");
    let agent = AgentBuilder::new(&pki)
        .health_interval("300ms")
        .apps(&format!(
            "[[app]]\nname = \"web\"\nrepo = \"{}\"\ndeploy_to = \"{}\"\n",
            repo.url(),
            deploy_to.display()
        ))
        .start()
        .await;
    let (addr, heads) = prometheus().await;
    let fleet_file = |gate: &str| {
        let path = root.path().join("fleet.toml");
        std::fs::write(
            &path,
            format!(
                "{}{}\n[deploy]\nstrategy = \"all\"\nbake = \"1s\"\n\n[[gate]]\nprometheus = \"{gate}\"\nquery = 'up'\nmax = 0.01\n",
                pki.fleet_tls(Who::Deployer),
                agent.fleet_entry("web-1")
            ),
        )
        .unwrap();
        path.display().to_string()
    };
    let fl = fleet_file(&format!("http://ops:s3cr%40t@{addr}"));

    for extra in [&[][..], &["--json"][..]] {
        let mut args = vec![
            "deploy",
            "web",
            "--ref",
            "main",
            "--fleet",
            &fl,
            "--dry-run",
        ];
        args.extend_from_slice(extra);
        let (status, out, err) = hoist(&args);
        assert!(status.success(), "{out}{err}");
        assert!(!out.contains("s3cr") && !err.contains("s3cr"), "{out}{err}");
        assert!(out.contains(&format!("ops:***@{addr}")), "{out}");
    }
    assert!(
        heads.lock().unwrap().is_empty(),
        "a dry run queries nothing"
    );

    let (status, out, err) = hoist(&["deploy", "web", "--ref", "main", "--fleet", &fl]);
    assert!(status.success(), "{out}{err}");
    assert!(!out.contains("s3cr") && !err.contains("s3cr"), "{out}{err}");
    let heads = heads.lock().unwrap().clone();
    assert!(!heads.is_empty(), "the gate was queried");
    for head in &heads {
        // base64("ops:s3cr@t"): the percent-encoded '@' is decoded first.
        assert!(
            head.lines()
                .any(|l| l.eq_ignore_ascii_case("authorization: Basic b3BzOnMzY3JAdA==")),
            "{head}"
        );
        assert!(head.contains(&format!("host: {addr}\r\n")), "{head}");
    }

    // A gate that cannot be reached: the error names the host, never the password.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap();
    drop(closed);
    let fl = fleet_file(&format!("http://ops:s3cr%40t@{dead}"));
    repo.commit_version("2", &[]);
    let (status, out, err) = hoist(&["deploy", "web", "--ref", "main", "--fleet", &fl]);
    assert!(!status.success(), "{out}{err}");
    assert!(!out.contains("s3cr") && !err.contains("s3cr"), "{out}{err}");
    assert!(
        format!("{out}{err}").contains(&format!("ops:***@{dead}")),
        "{out}{err}"
    );
}
