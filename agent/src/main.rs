//! `hoistd`: parse arguments, set up logging, load and preflight the config (exit 64
//! when it is bad, which the unit's `RestartPreventExitStatus=64` turns into a failed
//! unit instead of a restart loop), run the agent on a single-threaded runtime until a
//! stop signal. `hoistd check-config` runs the same checks; `hoistd reload` is the
//! unit's `ExecReload`: it signals the agent and waits for the outcome.

use std::{
    io::IsTerminal as _,
    os::unix::fs::MetadataExt as _,
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::Parser as _;
use hoist_agent::{
    cli::{Cli, Command, LogFormat},
    config, daemon, preflight,
    state::reload::ReloadStatus,
};

const EX_CONFIG: u8 = 64;
const EX_USAGE: u8 = 2;
fn main() -> ExitCode {
    hoist_agent::memory::configure();
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::CheckConfig { path }) => {
            return check_config(path.as_ref().unwrap_or(&cli.config));
        }
        Some(Command::Reload { pid, timeout }) => return reload(&cli.config, *pid, *timeout),
        None => {}
    }

    let filter = hoist_config::log_filter("HOIST_LOG", tracing::Level::INFO);
    let journal = stderr_is_journal();
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(!journal && std::io::stderr().is_terminal());
    {
        use tracing_subscriber::{layer::SubscriberExt as _, util::SubscriberInitExt as _};
        match (cli.log_format, journal) {
            // journald stamps every line itself.
            (LogFormat::Human, true) => builder.without_time().finish().with(filter).init(),
            (LogFormat::Human, false) => builder.finish().with(filter).init(),
            (LogFormat::Json, _) => builder.json().finish().with(filter).init(),
        }
    }

    // Config errors are printed once, as they are (file:line:column lines), and end
    // with 64 so systemd does not restart into the same error.
    let config = match config::load(&cli.config) {
        Ok(c) => c,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let problems = preflight::check(&config);
    if !problems.is_empty() {
        for problem in &problems {
            eprintln!("{}: {problem}", cli.config.display());
        }
        return ExitCode::from(EX_CONFIG);
    }
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
            ExitCode::FAILURE
        }
    }
}

/// `hoistd check-config`: the config file, then everything the daemon would load or
/// need from it ([`preflight::check`]).
fn check_config(path: &Path) -> ExitCode {
    let cfg = match config::load(path) {
        Ok(cfg) => cfg,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let problems = preflight::check(&cfg);
    for problem in &problems {
        eprintln!("{}: {problem}", path.display());
    }
    for warning in preflight::unit_warnings(&cfg) {
        eprintln!("{}: {warning}", path.display());
    }
    if !problems.is_empty() {
        return ExitCode::from(EX_CONFIG);
    }
    println!("{}: ok ({} app(s))", path.display(), cfg.apps.len());
    ExitCode::SUCCESS
}

/// `hoistd reload`: SIGHUP to the agent, then wait until it records the outcome of that
/// reload in `state_dir/reload`.
fn reload(config_path: &Path, pid: Option<u32>, timeout: Duration) -> ExitCode {
    let Some(pid) = pid else {
        eprintln!(
            "hoistd reload: no agent pid: pass --pid PID (systemd sets $MAINPID for ExecReload)"
        );
        return ExitCode::from(EX_USAGE);
    };
    // The state dir comes from the file being reloaded; a file that does not parse is
    // refused here, as the agent would refuse it.
    let cfg = match config::load(config_path) {
        Ok(cfg) => cfg,
        Err(err) => {
            eprintln!("{err}");
            eprintln!("hoistd reload: refused; the agent keeps its running config");
            return ExitCode::FAILURE;
        }
    };
    let state_dir = &cfg.agent.state_dir;
    let before = ReloadStatus::read(state_dir)
        .filter(|s| s.pid == pid)
        .map_or(0, |s| s.seq);
    let target = nix::unistd::Pid::from_raw(pid as i32);
    if let Err(err) = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGHUP) {
        eprintln!("hoistd reload: cannot signal pid {pid}: {err}");
        return ExitCode::FAILURE;
    }
    let started = Instant::now();
    while started.elapsed() < timeout {
        if let Some(status) =
            ReloadStatus::read(state_dir).filter(|s| s.pid == pid && s.seq > before)
        {
            return if status.applied {
                println!("hoistd reload: {}", status.message);
                ExitCode::SUCCESS
            } else {
                eprintln!("{}", status.message);
                eprintln!("hoistd reload: refused; the agent keeps its running config");
                ExitCode::FAILURE
            };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "hoistd reload: pid {pid} did not record a reload in {} within {timeout:?}; is it hoistd, and is state_dir right?",
        ReloadStatus::path(state_dir).display()
    );
    ExitCode::FAILURE
}

/// Whether stderr is the journal (`JOURNAL_STREAM` names its device and inode).
fn stderr_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}
