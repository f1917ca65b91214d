//! `hoist-docgen OUT`: man pages and shell completions generated from the clap
//! definitions the binaries parse, so they never drift from `--help`:
//!
//! - `OUT/man/hoist.1` and one page per subcommand (`hoist-deploy.1`, `hoist-ca-issue.1`);
//! - `OUT/man/hoistd.8` and its subcommands (`hoistd-check-config.8`, `hoistd-reload.8`);
//! - `OUT/completions/hoist.bash`, `_hoist` (zsh), `hoist.fish`.
//!
//! `packaging/build-debs` runs it and installs the files where Debian expects them.

use std::{
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{Command, CommandFactory as _};
use clap_complete::Shell;

fn main() -> ExitCode {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: hoist-docgen OUT_DIR");
        return ExitCode::from(2);
    };
    match generate(&out) {
        Ok(files) => {
            println!("hoist-docgen: wrote {files} files under {}", out.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("hoist-docgen: {}: {err}", out.display());
            ExitCode::FAILURE
        }
    }
}

/// Writes every page and completion under `out`; returns how many files.
fn generate(out: &Path) -> io::Result<usize> {
    let man = out.join("man");
    let completions = out.join("completions");
    fs::create_dir_all(&man)?;
    fs::create_dir_all(&completions)?;
    let mut files = 0;
    files += man_pages(hoist_controller::cli::Cli::command(), "1", &man)?;
    files += man_pages(hoist_agent::cli::Cli::command(), "8", &man)?;
    for (shell, name) in [
        (Shell::Bash, "hoist.bash"),
        (Shell::Zsh, "_hoist"),
        (Shell::Fish, "hoist.fish"),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(
            shell,
            &mut hoist_controller::cli::Cli::command(),
            "hoist",
            &mut text,
        );
        fs::write(completions.join(name), text)?;
        files += 1;
    }
    Ok(files)
}

/// The page of `cmd` and, recursively, one page per subcommand named `PARENT-SUB`.
fn man_pages(cmd: Command, section: &'static str, dir: &Path) -> io::Result<usize> {
    let mut cmd = cmd;
    cmd.build();
    write_pages(&cmd, cmd.get_name().to_string(), section, dir)
}

fn write_pages(
    cmd: &Command,
    name: String,
    section: &'static str,
    dir: &Path,
) -> io::Result<usize> {
    // clap names are `&'static str` without its `string` feature (which would grow every
    // binary); this one-shot tool can leak a page name.
    let title: &'static str = Box::leak(name.clone().into_boxed_str());
    let page = cmd.clone().name(title).bin_name(name.replace('-', " "));
    let mut text = Vec::new();
    clap_mangen::Man::new(page)
        .section(section)
        .manual(if section == "8" {
            "System Administration"
        } else {
            "User Commands"
        })
        .source(format!("hoist {}", env!("CARGO_PKG_VERSION")))
        .render(&mut text)?;
    let mut file = fs::File::create(dir.join(format!("{name}.{section}")))?;
    file.write_all(&text)?;
    let mut files = 1;
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" || sub.is_hide_set() {
            continue;
        }
        files += write_pages(sub, format!("{name}-{}", sub.get_name()), section, dir)?;
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    #[test]
    fn writes_a_page_per_command_and_the_completions() {
        let dir = tempfile::tempdir().unwrap();
        super::generate(dir.path()).unwrap();
        let man = dir.path().join("man");
        for page in [
            "hoist.1",
            "hoist-deploy.1",
            "hoist-ca-issue.1",
            "hoist-env-set.1",
            "hoist-completions.1",
            "hoistd.8",
            "hoistd-check-config.8",
            "hoistd-reload.8",
        ] {
            let text =
                std::fs::read_to_string(man.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
            assert!(
                text.starts_with(".ie") || text.contains(".TH"),
                "{page}: {text}"
            );
        }
        let deploy = std::fs::read_to_string(man.join("hoist-deploy.1")).unwrap();
        assert!(deploy.contains("canary"), "deploy page lacks its flags");
        let bash = std::fs::read_to_string(dir.path().join("completions/hoist.bash")).unwrap();
        assert!(
            bash.contains("deploy") && bash.contains("--dry-run"),
            "{bash}"
        );
        assert!(dir.path().join("completions/_hoist").is_file());
        assert!(dir.path().join("completions/hoist.fish").is_file());
    }
}
