//! The files the agent keeps: each app's journal and lock under `state_dir`, its
//! releases and `current` switch under `deploy_to`, `shared/.env`, the atomic writer
//! they all use, and the sweep of what a killed agent left half-written.

pub mod atomic;
pub mod beneath;
pub mod envfile;
pub mod journal;
pub mod lock;
pub mod release;
pub mod reload;
pub mod running;
pub mod secrets;
pub mod sweep;
