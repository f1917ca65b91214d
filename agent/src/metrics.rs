//! The Prometheus text endpoint on `metrics_listen` (plain HTTP, loopback by default).

use std::{convert::Infallible, fmt::Write as _, sync::Arc};

use hoist_proto::v1::{JobResult, ServiceState};
use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::watch};

use crate::{
    apps::Apps,
    config::Config,
    host::resources,
    monitor::{self, Snapshot},
    state::journal::{Journal, result_name},
};

/// What the app's owner task knows now, for the metrics: its journal, whether its lock
/// is held and whether a job runs.
#[derive(Debug, Default)]
pub struct AppLive {
    pub journal: Journal,
    pub lock_held: bool,
    pub job_running: bool,
}

/// Every deploy result `hoist_deploys_total` has a series for, at 0 until it happens
/// (so `rate()` and `increase()` see the first one).
const DEPLOY_RESULTS: [JobResult; 5] = [
    JobResult::Succeeded,
    JobResult::Failed,
    JobResult::RolledBack,
    JobResult::Interrupted,
    JobResult::Refused,
];

/// Asks every app's owner task for what [`render`] needs.
pub async fn live(config: &Config, apps: &Apps) -> Vec<AppLive> {
    futures_util::future::join_all(config.apps.iter().map(|a| async move {
        let (lock, running) = apps.state(&a.name).await;
        let journal = match apps.journal(&a.name).await {
            Ok(journal) => journal,
            Err(_) => Journal::read(&Journal::path(&config.agent.state_dir, &a.name)),
        };
        AppLive {
            journal,
            lock_held: lock.is_some(),
            job_running: running.is_some(),
        }
    }))
    .await
}

/// Renders every metric of SPEC §6 from the latest snapshot; `live` holds one entry per
/// configured app, in order.
pub fn render(config: &Config, snap: &Snapshot, live: &[AppLive]) -> String {
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
            &[("mountpoint", &d.mount)],
            d.used_bytes as f64,
        );
    }
    for d in &r.disks {
        m.gauge(
            "hoist_disk_total_bytes",
            "Size of each mounted file system.",
            &[("mountpoint", &d.mount)],
            d.total_bytes as f64,
        );
    }
    m.gauge(
        "hoist_uptime_seconds",
        "Host uptime.",
        &[],
        r.uptime_seconds as f64,
    );
    let process = resources::process_stats();
    m.gauge(
        "hoist_agent_resident_memory_bytes",
        "Resident memory of hoistd itself.",
        &[],
        process.resident_bytes as f64,
    );
    m.sample(
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time hoistd has spent, in seconds.",
        &[],
        process.cpu_seconds,
    );
    m.gauge(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        &[],
        process.resident_bytes as f64,
    );
    m.gauge(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        &[],
        process.virtual_bytes as f64,
    );
    m.gauge(
        "process_start_time_seconds",
        "Start time of hoistd since the Unix epoch, in seconds.",
        &[],
        process.start_time_seconds,
    );
    m.gauge(
        "process_open_fds",
        "Open file descriptors.",
        &[],
        process.open_fds as f64,
    );
    m.gauge(
        "process_max_fds",
        "Limit on open file descriptors.",
        &[],
        process.max_fds as f64,
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
    for app in &config.apps {
        m.gauge(
            "hoist_app_deployed",
            "1 once a release was switched to on this host; 0 before the first deploy (no checks run, none is exported).",
            &[("app", &app.name)],
            f64::from(u8::from(monitor::deployed(app))),
        );
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
        for c in health(&app.name)
            .map(|h| h.checks.as_slice())
            .unwrap_or_default()
        {
            m.gauge(
                "hoist_app_check_gate",
                "1 when the check gates deploys; 0 for a monitor-only check (gate = false).",
                &[("app", &app.name), ("check", &c.name)],
                f64::from(u8::from(!c.monitor_only)),
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
    let apps: Vec<(&str, &AppLive)> = config
        .apps
        .iter()
        .map(|a| a.name.as_str())
        .zip(live)
        .collect();
    for (app, live) in &apps {
        for result in DEPLOY_RESULTS {
            let result = result_name(result);
            m.sample(
                "hoist_deploys_total",
                "counter",
                "Deploys finished on this host, by result.",
                &[("app", app), ("result", result)],
                live.journal.deploys.get(result).copied().unwrap_or(0) as f64,
            );
        }
    }
    for (app, live) in &apps {
        let h = &live.journal.deploy_durations;
        m.header(
            "hoist_deploy_duration_seconds",
            "histogram",
            "Durations of the deploys that ran on this host (refusals aside).",
        );
        for (le, count) in h.cumulative() {
            m.series(
                "hoist_deploy_duration_seconds_bucket",
                &[("app", app), ("le", &le)],
                count as f64,
            );
        }
        m.series(
            "hoist_deploy_duration_seconds_sum",
            &[("app", app)],
            h.sum_ms as f64 / 1000.0,
        );
        m.series(
            "hoist_deploy_duration_seconds_count",
            &[("app", app)],
            h.count as f64,
        );
    }
    for (app, live) in &apps {
        if let Some(last) = live.journal.last_deploy() {
            m.gauge(
                "hoist_app_last_deploy_timestamp_seconds",
                "When the app's last deploy on this host finished (Unix time).",
                &[("app", app), ("result", &last.result)],
                (last.started_at_ms + last.duration_ms) as f64 / 1000.0,
            );
        }
    }
    for (app, live) in &apps {
        m.gauge(
            "hoist_app_lock_held",
            "1 while the app's deploy lock is held.",
            &[("app", app)],
            f64::from(u8::from(live.lock_held)),
        );
    }
    for (app, live) in &apps {
        m.gauge(
            "hoist_app_job_running",
            "1 while a job (deploy, rollback, restart, ...) runs for the app.",
            &[("app", app)],
            f64::from(u8::from(live.job_running)),
        );
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
        self.header(name, kind, help);
        self.series(name, labels, value);
    }

    /// HELP and TYPE, unless the family's were the last written.
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        if self.last != name {
            let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            self.last = name.to_string();
        }
    }

    /// A sample line without HELP/TYPE: a histogram's `_sum` and `_count`.
    fn series(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
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
    apps: Apps,
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
        let (config, snapshot, apps) = (config.clone(), snapshot.clone(), apps.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let (config, snapshot, apps) = (config.clone(), snapshot.clone(), apps.clone());
                async move {
                    let body = match req.uri().path() {
                        "/metrics" => {
                            let cfg = config.borrow().clone();
                            let live = live(&cfg, &apps).await;
                            let snap = snapshot.borrow().clone();
                            Some(render(&cfg, &snap, &live))
                        }
                        _ => None,
                    };
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
