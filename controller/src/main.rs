//! `hoist`: the controller CLI. Parses arguments, loads the fleet file, and runs one
//! command; exit codes: 0 ok, 1 the operation failed, 2 usage or config error.

use hoist_controller::{EXIT_FAILED, Failure, cli};

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    {
        use tracing_subscriber::{layer::SubscriberExt as _, util::SubscriberInitExt as _};
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .finish()
            .with(hoist_config::log_filter("HOIST_LOG", tracing::Level::WARN))
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("hoist: cannot start the runtime: {err}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure { code, error }) => {
            // Errors carry what agents and hooks said: shown, never interpreted.
            let text = format!("{error:#}");
            eprintln!(
                "hoist: {}",
                hoist_controller::output::escape::visible(&text)
            );
            ExitCode::from(code)
        }
    }
}
