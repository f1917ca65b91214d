//! Wires the agent together: binds the listeners, starts the monitor, serves gRPC and
//! metrics, and handles the lifecycle signals (SIGTERM/SIGINT drain, SIGHUP reload).

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use hoist_proto::v1::agent_server::AgentServer;
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
    sync::watch,
};
use tonic::transport::Server;

use crate::{
    apps::Apps,
    config,
    flows::events,
    monitor, preflight,
    rpc::{authz::AuthzLayer, server::AgentService, tls},
    sd_notify,
    state::{atomic, journal::Journal, reload::ReloadStatus},
};

/// How often `STATUS=` is refreshed for `systemctl status`.
const STATUS_EVERY: std::time::Duration = std::time::Duration::from_secs(30);
/// How often an idle gRPC connection is pinged, and how long the peer has to answer.
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    #[error(
        "cannot listen on {addr} ({what}): {source}; is another hoistd running, or is `{what}` in the config wrong?"
    )]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create state_dir {path}: {source}")]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot set up signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("cannot build the gRPC reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("the gRPC server task ended abnormally: {0}")]
    ServerTask(#[from] tokio::task::JoinError),
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Runs the agent until SIGTERM/SIGINT, then drains.
pub async fn run(config_path: PathBuf, config: config::Config) -> Result<(), DaemonError> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;

    std::fs::create_dir_all(&config.agent.state_dir).map_err(|source| DaemonError::StateDir {
        path: config.agent.state_dir.clone(),
        source,
    })?;
    let (tls_tx, tls_rx) = watch::channel(tls::server_config(&config.tls)?);
    let listener = TcpListener::bind(config.agent.listen)
        .await
        .map_err(|source| DaemonError::Bind {
            what: "listen",
            addr: config.agent.listen,
            source,
        })?;
    let grpc_addr = listener.local_addr().map_err(|source| DaemonError::Bind {
        what: "listen",
        addr: config.agent.listen,
        source,
    })?;
    let metrics_listener = match config.agent.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| DaemonError::Bind {
                    what: "metrics_listen",
                    addr,
                    source,
                })?,
        ),
        None => None,
    };
    let metrics_addr = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());

    let state_dir = config.agent.state_dir.clone();
    let drain = config.agent.drain_timeout;
    let registry = Arc::new(
        events::Registry::new(&config.agent.state_dir).map_err(|source| DaemonError::StateDir {
            path: config.agent.state_dir.join("jobs"),
            source,
        })?,
    );
    let (sampler, first) = monitor::first_sample(&config).await;
    let (config_tx, config_rx) = watch::channel(Arc::new(config));
    let (snap_tx, snap_rx) = watch::channel(Arc::new(first));
    let recheck = Arc::new(tokio::sync::Notify::new());
    let monitor_task = tokio::spawn(monitor::run(
        config_rx.clone(),
        snap_tx,
        sampler,
        recheck.clone(),
    ));
    let apps = Apps::new(config_rx.clone(), registry, recheck);
    for job in apps.recover().await {
        tracing::warn!(job = %job, "job marked interrupted: hoistd stopped while it ran");
    }
    let metrics_task = metrics_listener.map(|l| {
        tokio::spawn(crate::metrics::serve(
            l,
            config_rx.clone(),
            snap_rx.clone(),
            apps.clone(),
        ))
    });

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<AgentServer<AgentService>>()
        .await;
    // Reflection in both versions clients speak (grpcurl: v1; grpcio-reflection and
    // older tools: v1alpha), describing hoist.v1.Agent and grpc.health.v1.Health (so
    // `grpcurl ... grpc.health.v1.Health/Check` resolves the method).
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(hoist_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let incoming = tls::incoming(listener, tls_rx);
    let agent = AgentService::new(config_rx.clone(), snap_rx, apps, stop_tx.subscribe());
    let server = Server::builder()
        // A peer that vanished (no FIN: a dead controller, a cut network) is found by a
        // ping it does not answer, and its connection (tens of KiB) freed.
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .layer(AuthzLayer)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            AgentServer::new(agent)
                .max_decoding_message_size(crate::rpc::bounds::MAX_REQUEST_BYTES),
        )
        .serve_with_incoming_shutdown(incoming, async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        });
    let mut server = tokio::spawn(server);

    // Tell the operator (and test harnesses using port 0) where we listen.
    let listen_file = state_dir.join("listen");
    let mut listen = format!("grpc={grpc_addr}\n");
    if let Some(addr) = metrics_addr {
        listen.push_str(&format!("metrics={addr}\n"));
    }
    if let Err(err) = atomic::write_file(&listen_file, listen.as_bytes()) {
        tracing::warn!(path = %listen_file.display(), error = %err, "cannot record listen addresses");
    }
    let mut reloads = ReloadStatus {
        pid: std::process::id(),
        seq: 0,
        applied: true,
        message: format!("started with {}", config_path.display()),
    };
    write_reload_status(&state_dir, &reloads);
    tracing::info!(grpc = %grpc_addr, metrics = ?metrics_addr, version = crate::VERSION, "hoistd ready");
    sd_notify::notify("READY=1");

    let mut watchdog = sd_notify::watchdog_interval().map(tokio::time::interval);
    let mut status_every = tokio::time::interval(STATUS_EVERY);
    loop {
        tokio::select! {
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
            _ = sighup.recv() => {
                let outcome = reload(&config_path, &config_tx, &tls_tx);
                reloads.seq += 1;
                reloads.applied = outcome.is_ok();
                reloads.message = outcome.unwrap_or_else(|refused| refused);
                write_reload_status(&state_dir, &reloads);
                sd_notify::notify(&status_line(&config_tx.borrow(), &reloads));
            }
            _ = status_every.tick() => sd_notify::notify(&status_line(&config_tx.borrow(), &reloads)),
            _ = async { watchdog.as_mut().expect("guarded").tick().await }, if watchdog.is_some() => {
                sd_notify::notify("WATCHDOG=1");
            }
            result = &mut server => {
                monitor_task.abort();
                return match result {
                    Ok(r) => r.map_err(DaemonError::from),
                    Err(join) => Err(DaemonError::from(join)),
                };
            }
        }
    }

    tracing::info!(timeout = ?drain, "draining: no new connections, waiting for calls to finish");
    sd_notify::notify("STOPPING=1");
    let _ = stop_tx.send(true);
    health_reporter
        .set_not_serving::<AgentServer<AgentService>>()
        .await;
    monitor_task.abort();
    if let Some(task) = metrics_task {
        task.abort();
    }
    match tokio::time::timeout(drain, &mut server).await {
        Ok(_) => tracing::info!("drained; bye"),
        Err(_) => {
            tracing::warn!(timeout = ?drain, "drain timed out; closing remaining connections");
            server.abort();
        }
    }
    let _ = std::fs::remove_file(&listen_file);
    Ok(())
}

fn write_reload_status(state_dir: &std::path::Path, status: &ReloadStatus) {
    if let Err(err) = status.write(state_dir) {
        tracing::warn!(path = %ReloadStatus::path(state_dir).display(), error = %err, "cannot record the reload outcome");
    }
}

/// SIGHUP: validate the config file (and everything [`preflight`] checks) first; keep
/// the running config on any error. `Ok` says what was applied, `Err` why it was not.
fn reload(
    path: &std::path::Path,
    config_tx: &watch::Sender<Arc<config::Config>>,
    tls_tx: &watch::Sender<Arc<rustls::ServerConfig>>,
) -> Result<String, String> {
    sd_notify::notify(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}",
        sd_notify::monotonic_usec()
    ));
    let outcome = load_for_reload(path).and_then(|new| {
        let tls_config = tls::server_config(&new.tls).map_err(|err| err.to_string())?;
        let old = config_tx.borrow().clone();
        if old.agent.listen != new.agent.listen
            || old.agent.metrics_listen != new.agent.metrics_listen
        {
            tracing::warn!("listen addresses changed; they apply at the next restart");
        }
        tls_tx.send_replace(tls_config);
        let apps = new.apps.len();
        config_tx.send_replace(Arc::new(new));
        tracing::info!(path = %path.display(), apps, "config reloaded");
        Ok(format!("reloaded {} ({apps} app(s))", path.display()))
    });
    if let Err(refused) = &outcome {
        tracing::error!(path = %path.display(), "reload refused, keeping the running config:\n{refused}");
    }
    sd_notify::notify("READY=1");
    outcome
}

fn load_for_reload(path: &std::path::Path) -> Result<config::Config, String> {
    let new = config::load(path).map_err(|err| err.to_string())?;
    let problems = preflight::check(&new);
    if problems.is_empty() {
        Ok(new)
    } else {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        Err(lines.join("\n"))
    }
}

/// `STATUS=` for `systemctl status`: the apps served, the last deploy and when, and a
/// refused reload.
fn status_line(config: &config::Config, reloads: &ReloadStatus) -> String {
    let now_ms = crate::state::journal::now_ms();
    let last = config
        .apps
        .iter()
        .filter_map(|app| {
            let journal = Journal::read(&Journal::path(&config.agent.state_dir, &app.name));
            let job = journal.last_deploy()?.clone();
            Some((app.name.clone(), job))
        })
        .max_by_key(|(_, job)| job.started_at_ms + job.duration_ms);
    let mut text = format!("STATUS=serving {} app(s)", config.apps.len());
    match last {
        Some((app, job)) => {
            let ago = now_ms.saturating_sub(job.started_at_ms + job.duration_ms) / 1000;
            text.push_str(&format!(
                "; last deploy {app} {} {} ago",
                job.result,
                sd_notify::human_secs(ago)
            ));
        }
        None => text.push_str("; no deploys yet"),
    }
    if !reloads.applied {
        text.push_str("; last reload refused (see the journal)");
    }
    text
}
