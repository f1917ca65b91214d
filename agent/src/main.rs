//! `hoistd`: parse arguments, set up logging, load the config (exit 64 when it is
//! bad), run the agent on a single-threaded runtime until a stop signal.

use std::{io::IsTerminal as _, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};
use hoist_agent::{config, daemon};

const EX_CONFIG: u8 = 64;
const DEFAULT_CONFIG: &str = "/etc/hoist/agent.toml";

#[derive(Parser, Debug)]
#[command(name = "hoistd", version, about = "The hoist deployment agent")]
struct Cli {
    /// Agent config file.
    #[arg(long, short, default_value = DEFAULT_CONFIG, global = true)]
    config: PathBuf,
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a config file, print every error with file:line:column, and exit.
    CheckConfig {
        /// Config file (default: --config).
        path: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::CheckConfig { path }) = &cli.command {
        let path = path.as_ref().unwrap_or(&cli.config);
        return match config::load(path) {
            Ok(cfg) => {
                println!("{}: ok ({} app(s))", path.display(), cfg.apps.len());
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("{err}");
                ExitCode::from(EX_CONFIG)
            }
        };
    }

    let filter = tracing_subscriber::EnvFilter::try_from_env("HOIST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match cli.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }

    let config = match config::load(&cli.config) {
        Ok(c) => c,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    // Processes a step orphans come to hoistd (to be killed and reaped), not to init.
    if let Err(err) = hoist_agent::host::process::become_subreaper() {
        tracing::warn!(error = %err, "cannot become a child subreaper; processes that hooks daemonize are still found by their environment");
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(8)
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("hoistd: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(daemon::run(cli.config.clone(), config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            eprintln!("hoistd: {err}");
            ExitCode::FAILURE
        }
    }
}
