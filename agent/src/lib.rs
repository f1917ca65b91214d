//! hoistd: the hoist agent. Serves the `hoist.v1.Agent` gRPC API over mutual TLS,
//! monitors the host and its apps, and exports Prometheus metrics.
//!
//! Layers, each importing only the ones below it:
//! - [`rpc`]: the gRPC service, authorization, TLS, and the one mapping of domain
//!   errors to `tonic::Status`;
//! - [`apps`]: one owner task per app, the only writer of its journal and lock;
//! - [`flows`]: the jobs (deploy, rollback, restart, env) and their event logs;
//! - [`state`]: the files the agent keeps (journal, lock, releases, `.env`);
//! - [`host`]: the host itself: the one process spawner, services, checks, resources;
//! - [`config`]: the agent's config file.

pub mod apps;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod flows;
pub mod host;
pub mod listen;
pub mod memory;
pub mod metrics;
pub mod monitor;
pub mod preflight;
pub mod rpc;
pub mod sd_notify;
pub mod state;

/// The agent's version, reported by GetInfo, Status and `hoist_build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// This host's name, as reported to the controller.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}
