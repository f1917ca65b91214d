//! End-to-end test support: a harness that starts real `hoistd` processes with real
//! certificates, and real external services (supervisord, an HTTP health endpoint,
//! promtool, Prometheus) started on loopback.
pub mod cli;
pub mod e2e;
pub mod harness;
pub mod jobs;
pub mod services;
