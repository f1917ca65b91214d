//! A plain-HTTP webhook receiver on loopback: records every JSON body POSTed to it.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use http_body_util::{BodyExt as _, Full};
use hyper::{Request, Response, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Records the bodies POSTed to it, answering 200 "ok".
pub struct Receiver {
    addr: SocketAddr,
    bodies: Arc<Mutex<Vec<Value>>>,
    _thread: std::thread::JoinHandle<()>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let seen = bodies.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                while let Ok((stream, _)) = listener.accept().await {
                    let seen = seen.clone();
                    tokio::spawn(async move {
                        let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                            let seen = seen.clone();
                            async move {
                                let body = req.into_body().collect().await.map(|b| b.to_bytes());
                                if let Ok(body) = body
                                    && let Ok(json) = serde_json::from_slice::<Value>(&body)
                                {
                                    seen.lock().unwrap().push(json);
                                }
                                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok"))))
                            }
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        Receiver {
            addr,
            bodies,
            _thread: thread,
        }
    }

    /// A Slack-style URL on this receiver.
    pub fn url(&self) -> String {
        format!("http://{}/services/T0/B0/secret", self.addr)
    }

    /// Every body so far, in order.
    pub fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }

    /// The `event` field of every message so far, in order.
    pub fn events(&self) -> Vec<String> {
        self.bodies()
            .iter()
            .map(|b| {
                b["attachments"][0]["fields"][0]["value"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    }

    /// The `text` of every message so far, in order.
    pub fn texts(&self) -> Vec<String> {
        self.bodies()
            .iter()
            .map(|b| b["text"].as_str().unwrap_or("").to_string())
            .collect()
    }
}
