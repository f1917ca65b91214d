//! `hoist completions SHELL`: the shell completion script for `hoist`, generated from
//! the same clap definitions it parses (for installs from source; the package ships
//! them in the standard directories).

use std::io::Write as _;

use clap::Args;
use clap_complete::Shell;

use crate::commands::Failure;

#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell. E.g. `hoist completions bash >
    /// ~/.local/share/bash-completion/completions/hoist`.
    pub shell: Shell,
}

/// Writes the script for `args.shell` to stdout; `cli` is `hoist`'s clap command.
pub fn run(args: CompletionsArgs, mut cli: clap::Command) -> Result<(), Failure> {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cli, "hoist", &mut out);
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(&out)
        .and_then(|()| stdout.flush())
        .map_err(|err| Failure::failed_with(format!("cannot write the completions: {err}")))
}
