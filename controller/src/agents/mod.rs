//! Talking to agents: connections over mutual TLS, one question to many hosts, jobs
//! (start, follow, re-attach) and their ids, and running jobs host by host.

pub mod client;
pub mod fanout;
pub mod follow;
pub mod ids;
pub mod session;
