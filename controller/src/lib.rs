//! The hoist controller: fleet file, CA tooling, agent connections and the commands
//! of the `hoist` CLI. `main.rs` only parses arguments and calls [`cli::run`].
//!
//! Layers, imports one way: `cli` → `commands` → `rollout` / `agents` → `fleet` /
//! `output` (and `ca`). Nothing imports `cli`; only `commands` uses `anyhow`.

pub mod agents;
pub mod ca;
pub mod cli;
pub mod commands;
pub mod fleet;
pub mod output;
pub mod rollout;

pub use commands::Failure;

/// Exit code for a failed operation (a host unreachable, a deploy failed).
pub const EXIT_FAILED: u8 = 1;
/// Exit code for bad usage or a bad config file.
pub const EXIT_USAGE: u8 = 2;

#[cfg(test)]
mod testing;
