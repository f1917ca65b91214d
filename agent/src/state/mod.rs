//! The files the agent keeps: each app's journal and lock under `state_dir`, its
//! releases and `current` switch under `deploy_to`, `shared/.env`, the running-job
//! marker, and the atomic writer they all use.

pub mod atomic;
pub mod beneath;
pub mod envfile;
pub mod journal;
pub mod lock;
pub mod release;
pub mod running;
