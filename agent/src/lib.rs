//! hoistd: the hoist agent. Serves the `hoist.v1.Agent` gRPC API over mutual TLS,
//! monitors the host and its apps, and exports Prometheus metrics.

pub mod apps;
pub mod atomic;
pub mod authz;
pub mod checks;
pub mod config;
pub mod daemon;
pub mod deploy;
pub mod envfile;
pub mod jobs;
pub mod journal;
pub mod lock;
pub mod metrics;
pub mod monitor;
pub mod notify;
pub mod process;
pub mod release;
pub mod resources;
pub mod server;
pub mod services;
pub mod tls;

/// The agent's version, reported by GetInfo, Status and `hoist_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// This host's name, as reported to the controller.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}
