//! The Prometheus text endpoint on `metrics_listen` (plain HTTP, loopback by default).

use std::{convert::Infallible, fmt::Write as _, sync::Arc};

use hoist_proto::v1::ServiceState;
use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::watch};

use crate::{
    config::Config,
    host::resources,
    monitor::{self, Snapshot},
    state::journal::Journal,
};

/// Renders every metric of SPEC §6 from the latest snapshot.
pub fn render(config: &Config, snap: &Snapshot) -> String {
    let mut m = Metrics::default();
    m.gauge("hoist_up", "1 while the agent is running.", &[], 1.0);
    m.gauge(
        "hoist_build_info",
        "Agent build; the value is always 1.",
        &[("version", crate::VERSION)],
        1.0,
    );
    if let Some(expiry) = crate::rpc::tls::certificate_expiry() {
        m.gauge(
            "hoist_agent_certificate_expiry_timestamp_seconds",
            "When the agent's TLS certificate in use expires (Unix time); alert well before.",
            &[],
            expiry as f64,
        );
    }
    let r = &snap.resources;
    m.gauge(
        "hoist_cpu_usage_ratio",
        "Host CPU usage over the last sample, 0..1.",
        &[],
        r.cpu_percent / 100.0,
    );
    m.gauge("hoist_load1", "1-minute load average.", &[], r.load1);
    m.gauge("hoist_load5", "5-minute load average.", &[], r.load5);
    m.gauge("hoist_load15", "15-minute load average.", &[], r.load15);
    m.gauge(
        "hoist_memory_used_bytes",
        "Host memory in use.",
        &[],
        r.memory_used_bytes as f64,
    );
    m.gauge(
        "hoist_memory_total_bytes",
        "Host memory in total.",
        &[],
        r.memory_total_bytes as f64,
    );
    m.gauge(
        "hoist_swap_used_bytes",
        "Swap in use.",
        &[],
        r.swap_used_bytes as f64,
    );
    m.gauge(
        "hoist_swap_total_bytes",
        "Swap in total.",
        &[],
        r.swap_total_bytes as f64,
    );
    for d in &r.disks {
        m.gauge(
            "hoist_disk_used_bytes",
            "Bytes used per mounted file system.",
            &[("mount", &d.mount)],
            d.used_bytes as f64,
        );
    }
    for d in &r.disks {
        m.gauge(
            "hoist_disk_total_bytes",
            "Size of each mounted file system.",
            &[("mount", &d.mount)],
            d.total_bytes as f64,
        );
    }
    m.gauge(
        "hoist_uptime_seconds",
        "Host uptime.",
        &[],
        r.uptime_seconds as f64,
    );
    m.gauge(
        "hoist_agent_resident_memory_bytes",
        "Resident memory of hoistd itself.",
        &[],
        resources::resident_memory_bytes() as f64,
    );
    for app in &config.apps {
        let (release, commit) = monitor::current_release(app);
        if !release.is_empty() {
            m.gauge(
                "hoist_app_release_info",
                "Release that `current` points at; the value is always 1.",
                &[
                    ("app", &app.name),
                    ("release", &release),
                    ("commit", &commit),
                ],
                1.0,
            );
        }
    }
    let health = |name: &str| snap.apps.get(name);
    for app in &config.apps {
        for c in health(&app.name)
            .map(|h| h.checks.as_slice())
            .unwrap_or_default()
        {
            m.gauge(
                "hoist_app_check_up",
                "1 when the check passed at its last run.",
                &[("app", &app.name), ("check", &c.name)],
                f64::from(u8::from(c.ok)),
            );
        }
    }
    for app in &config.apps {
        for c in health(&app.name)
            .map(|h| h.checks.as_slice())
            .unwrap_or_default()
        {
            m.gauge(
                "hoist_app_check_duration_seconds",
                "Duration of the check's last run.",
                &[("app", &app.name), ("check", &c.name)],
                c.duration_ms as f64 / 1000.0,
            );
        }
    }
    for app in &config.apps {
        for s in health(&app.name)
            .map(|h| h.services.as_slice())
            .unwrap_or_default()
        {
            let up = s.state == ServiceState::Running as i32;
            m.gauge(
                "hoist_service_up",
                "1 when the service was running at the last probe.",
                &[("app", &app.name), ("service", &s.name)],
                f64::from(u8::from(up)),
            );
        }
    }
    let journals: Vec<(&str, Journal)> = config
        .apps
        .iter()
        .map(|a| {
            (
                a.name.as_str(),
                Journal::read(&Journal::path(&config.agent.state_dir, &a.name)),
            )
        })
        .collect();
    for (app, journal) in &journals {
        for (result, count) in &journal.deploys {
            m.sample(
                "hoist_deploys_total",
                "counter",
                "Deploys finished on this host, by result.",
                &[("app", app), ("result", result)],
                *count as f64,
            );
        }
    }
    for (app, journal) in &journals {
        if let Some(last) = journal.last_deploy() {
            m.gauge(
                "hoist_deploy_duration_seconds",
                "Duration of the app's last deploy.",
                &[("app", app)],
                last.duration_ms as f64 / 1000.0,
            );
        }
    }
    m.out
}

#[derive(Default)]
struct Metrics {
    out: String,
    last: String,
}

impl Metrics {
    /// Appends one sample; HELP/TYPE are written once, before a family's first sample
    /// (callers emit each family's samples together).
    fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.sample(name, "gauge", help, labels, value);
    }

    fn sample(&mut self, name: &str, kind: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        if self.last != name {
            let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            self.last = name.to_string();
        }
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `/metrics` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    config: watch::Receiver<Arc<Config>>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
) {
    let mut backoff = crate::listen::Backoff::default();
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => {
                backoff.succeeded("metrics");
                tcp
            }
            Err(err) => {
                backoff.failed("metrics", &err).await;
                continue;
            }
        };
        let (config, snapshot) = (config.clone(), snapshot.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let body = match req.uri().path() {
                    "/metrics" => Some(render(&config.borrow(), &snapshot.borrow())),
                    _ => None,
                };
                async move {
                    Ok::<_, Infallible>(match body {
                        Some(text) => Response::builder()
                            .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                            .body(Full::new(Bytes::from(text)))
                            .unwrap_or_default(),
                        None => Response::builder()
                            .status(404)
                            .body(Full::new(Bytes::from_static(
                                b"hoistd: metrics are at /metrics\n",
                            )))
                            .unwrap_or_default(),
                    })
                }
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_escaping() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
