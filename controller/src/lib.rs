//! The hoist controller: fleet file, CA tooling, agent connections and the commands
//! of the `hoist` CLI. `main.rs` only parses arguments and calls [`cli::run`].

pub mod bake;
pub mod ca;
pub mod cli;
pub mod client;
pub mod demo;
pub mod deploy;
pub mod env;
pub mod fanout;
pub mod fleet;
pub mod gates;
pub mod httpc;
pub mod joblog;
pub mod jobs;
pub mod lease;
pub mod lock;
pub mod notify;
pub mod plan;
pub mod progress;
pub mod releases;
pub mod render;
pub mod rollout;
pub mod status;
pub mod table;
pub mod targets;
pub mod top;
pub mod window;

/// A command's failure and the exit code it maps to.
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

/// Exit code for a failed operation (a host unreachable, a deploy failed).
pub const EXIT_FAILED: u8 = 1;
/// Exit code for bad usage or a bad config file.
pub const EXIT_USAGE: u8 = 2;

impl Failure {
    pub fn failed(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: EXIT_FAILED,
            error: error.into(),
        }
    }

    pub fn usage(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: EXIT_USAGE,
            error: error.into(),
        }
    }
}
