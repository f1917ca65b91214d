//! docs/REFERENCE.md against the real binaries: every command, flag and environment
//! variable of `hoist` and `hoistd`, and every key of `agent.toml` and `fleet.toml`,
//! has its place in the reference.
//!
//! Nothing here is a hand-kept list. Commands and flags come from clap's `--help`,
//! walked recursively over every subcommand. Config keys come from the real
//! deserializers: both files reject unknown keys, and the diagnostic for one names the
//! keys the table takes, so a probe key written into each table (with `hoistd
//! check-config` for agent.toml, `hoist --fleet FILE targets` for fleet.toml) reveals
//! that table's keys; each key is then tried as a table (`[a.b]`) and as an array of
//! tables (`[[a.b]]`) to find the nested tables, and an empty entry of each table names
//! the key it cannot do without (the `kind` of a service or check, which the per-kind
//! hint leaves out).
//!
//! Where things must be written: a command `hoist env set` has a heading containing
//! `` `hoist env set` ``, and each of its `--long` flags is the first cell of a table
//! row in that heading's own text (up to the next heading), or in the text of an
//! ancestor command that has the same flag (global flags are written once, under
//! `` `hoist` ``). A config table has a heading containing `` `[agent]` `` (or
//! `` `[[app.services]]` ``) inside the `## ` section whose heading names the file,
//! and each of its keys is the first cell of a table row in that heading's own text.
//! A variable named in clap's help (`[env: HOIST_FLEET=]`) appears in the
//! "Environment variables" section.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use hoist_tests::harness::bin;

// === the reference, as headings and their text ===

struct Heading {
    level: usize,
    text: String,
    /// The lines after the heading up to the next heading of any level.
    body: Vec<String>,
}

fn reference() -> Vec<Heading> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/REFERENCE.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mut headings: Vec<Heading> = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        let level = line.chars().take_while(|&c| c == '#').count();
        if !fenced && level > 0 && line[level..].starts_with(' ') {
            headings.push(Heading {
                level,
                text: line[level..].trim().to_string(),
                body: Vec::new(),
            });
        } else if let Some(last) = headings.last_mut() {
            last.body.push(line.to_string());
        }
    }
    headings
}

/// Whether `text` holds `token` not followed by another name character
/// (`--force` is not in `--force-recreate`).
fn has_token(text: &str, token: &str) -> bool {
    text.match_indices(token).any(|(at, _)| {
        text[at + token.len()..]
            .chars()
            .next()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
    })
}

/// The first cells of the table rows in `body`.
fn first_cells(body: &[String]) -> Vec<&str> {
    body.iter()
        .filter_map(|line| line.trim().strip_prefix('|'))
        .filter_map(|row| row.split('|').next())
        .collect()
}

fn row_names_flag(body: &[String], flag: &str) -> bool {
    first_cells(body).iter().any(|cell| has_token(cell, flag))
}

/// The `## ` heading whose text contains `title` and the headings under it.
fn chapter<'h>(headings: &'h [Heading], title: &str) -> Option<&'h [Heading]> {
    let start = headings
        .iter()
        .position(|h| h.level == 2 && h.text.contains(title))?;
    let end = headings[start + 1..]
        .iter()
        .position(|h| h.level <= 2)
        .map_or(headings.len(), |n| start + 1 + n);
    Some(&headings[start..end])
}

// === the command line, from clap's help ===

#[derive(Debug, Default)]
struct Help {
    commands: Vec<String>,
    flags: Vec<String>,
    env: Vec<String>,
}

fn help(binary: &Path, path: &[String]) -> Help {
    let out = Command::new(binary)
        .args(path)
        .arg("--help")
        .env_remove("HOIST_FLEET")
        .stdin(Stdio::null())
        .output()
        .expect("run --help");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} {} --help failed: {text}{}",
        binary.display(),
        path.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    parse_help(&text)
}

/// The `Commands:` and `Options:` sections of clap's help.
fn parse_help(text: &str) -> Help {
    let mut help = Help::default();
    let mut section = "";
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            section = line;
            continue;
        }
        if !line.starts_with(' ') {
            section = "";
            continue;
        }
        let spec = line.trim_start();
        let spec = spec.split("  ").next().unwrap_or_default();
        match section {
            "Commands:" if line.starts_with("  ") && !line.starts_with("   ") => {
                if let Some(name) = spec.split_whitespace().next()
                    && name != "help"
                {
                    help.commands.push(name.to_string());
                }
            }
            "Options:" if spec.starts_with('-') => {
                for token in spec.split([' ', ',', '=']) {
                    if token.starts_with("--") && token.len() > 2 {
                        help.flags.push(token.to_string());
                    }
                }
                let mut rest = line;
                while let Some(at) = rest.find("[env: ") {
                    rest = &rest[at + 6..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    help.env.push(name);
                }
            }
            _ => {}
        }
    }
    help
}

/// Every command path of `binary` (the binary itself first) with its help.
fn command_tree(binary: &Path, name: &str) -> Vec<(Vec<String>, Help)> {
    let mut tree = Vec::new();
    let mut pending: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(path) = pending.pop() {
        let help = help(binary, &path);
        for command in help.commands.iter().rev() {
            let mut child = path.clone();
            child.push(command.clone());
            pending.push(child);
        }
        let mut full = vec![name.to_string()];
        full.extend(path);
        tree.push((full, help));
    }
    tree
}

#[test]
fn every_command_flag_and_variable_is_in_the_reference() {
    let headings = reference();
    let mut missing = Vec::new();
    let mut variables = BTreeSet::new();
    let mut checked = 0;
    for name in ["hoist", "hoistd"] {
        let tree = command_tree(&bin(name), name);
        assert!(
            tree.len() > 1,
            "{name} --help lists no subcommands; has clap's help format changed?"
        );
        checked += tree.iter().map(|(_, h)| h.flags.len()).sum::<usize>();
        let flags_of: BTreeMap<Vec<String>, &Help> = tree
            .iter()
            .map(|(path, help)| (path.clone(), help))
            .collect();
        for (path, help) in &tree {
            let command = path.join(" ");
            variables.extend(help.env.iter().cloned());
            let section = |path: &[String]| {
                let wanted = format!("`{}`", path.join(" "));
                headings.iter().find(|h| h.text.contains(&wanted))
            };
            let Some(own) = section(path) else {
                missing.push(format!("command `{command}`: no heading naming it"));
                continue;
            };
            for flag in &help.flags {
                if flag == "--help" {
                    continue;
                }
                // Its own section, or an ancestor's that has the same flag.
                let documented = (1..=path.len()).rev().any(|n| {
                    let ancestor = &path[..n];
                    let has_flag = n == path.len()
                        || flags_of
                            .get(ancestor)
                            .is_some_and(|h| h.flags.contains(flag));
                    has_flag && section(ancestor).is_some_and(|h| row_names_flag(&h.body, flag))
                });
                if !documented {
                    missing.push(format!(
                        "flag `{flag}` of `{command}`: no table row under \"{}\"",
                        own.text
                    ));
                }
            }
        }
    }
    let environment: Vec<&str> = chapter(&headings, "Environment variables")
        .unwrap_or_default()
        .iter()
        .flat_map(|h| h.body.iter().map(String::as_str))
        .collect();
    for variable in &variables {
        if !environment
            .iter()
            .any(|l| has_token(l, &format!("`{variable}")))
        {
            missing.push(format!(
                "environment variable `{variable}`: not in the \"Environment variables\" section"
            ));
        }
    }
    assert!(
        checked > 20,
        "only {checked} flags found; has clap's help format changed?"
    );
    assert!(
        missing.is_empty(),
        "docs/REFERENCE.md is missing {} item(s):\n  {}",
        missing.len(),
        missing.join("\n  ")
    );
}

// === the config files, from their deserializers ===

const PROBE: &str = "zz_reference_probe";

/// How a config file is validated: the binary and the arguments around the file.
struct Validator {
    file: &'static str,
    binary: PathBuf,
    args: fn(&Path) -> Vec<String>,
    dir: tempfile::TempDir,
    runs: std::cell::Cell<usize>,
}

impl Validator {
    /// The diagnostics for `text` (empty when the file is valid).
    fn diagnostics(&self, text: &str) -> String {
        let n = self.runs.get();
        self.runs.set(n + 1);
        let path = self.dir.path().join(format!("probe-{n}.toml"));
        std::fs::write(&path, text).expect("write probe");
        let out = Command::new(&self.binary)
            .args((self.args)(&path))
            .env_remove("HOIST_FLEET")
            .stdin(Stdio::null())
            .output()
            .expect("run validator");
        let _ = std::fs::remove_file(&path);
        if out.status.success() {
            String::new()
        } else {
            String::from_utf8_lossy(&out.stderr).into_owned()
        }
    }
}

/// A table of the file: `["app", "services"]`, each segment an array of tables or not.
#[derive(Clone, Debug)]
struct Table {
    path: Vec<(String, bool)>,
}

impl Table {
    fn dotted(&self) -> String {
        let names: Vec<&str> = self.path.iter().map(|(n, _)| n.as_str()).collect();
        names.join(".")
    }

    /// `[agent]`, `[[app.services]]`, or `top level`.
    fn title(&self) -> String {
        match self.path.last() {
            None => "top level".into(),
            Some((_, true)) => format!("[[{}]]", self.dotted()),
            Some((_, false)) => format!("[{}]", self.dotted()),
        }
    }

    /// Headers that open this table (and every array entry above it), and the line
    /// of the last one. The first line is a comment, so no header is on line 1.
    fn headers(&self) -> (String, usize) {
        let mut text = String::from("# reference probe\n");
        let mut lines = 1;
        for i in 0..self.path.len() {
            let (_, array) = &self.path[i];
            let prefix = Table {
                path: self.path[..=i].to_vec(),
            };
            if *array {
                text.push_str(&format!("[[{}]]\n", prefix.dotted()));
                lines += 1;
            } else if i + 1 == self.path.len() {
                text.push_str(&format!("[{}]\n", prefix.dotted()));
                lines += 1;
            }
        }
        (text, lines)
    }

    fn child(&self, key: &str, array: bool) -> Table {
        let mut path = self.path.clone();
        path.push((key.to_string(), array));
        Table { path }
    }
}

/// The hint after "unknown key `PROBE`" at `line`, if the diagnostics have it.
fn unknown_probe_hint(diagnostics: &str, line: usize) -> Option<String> {
    let mut lines = diagnostics.lines();
    while let Some(l) = lines.next() {
        if l.contains(&format!(":{line}:")) && l.ends_with(&format!("unknown key `{PROBE}`")) {
            let hint = lines.next()?.trim().strip_prefix("hint: ")?.to_string();
            return Some(hint);
        }
    }
    None
}

/// The keys a hint names: `valid keys here: a, b, c`, `this table takes no keys`, or
/// per kind: `systemd services take a, b; compose services take c, d`.
fn keys_of_hint(hint: &str) -> Vec<String> {
    if hint == "this table takes no keys" {
        return Vec::new();
    }
    let lists: Vec<&str> = match hint.strip_prefix("valid keys here: ") {
        Some(list) => vec![list],
        None => hint
            .split("; ")
            .map(|part| {
                part.split_once(" take ")
                    .unwrap_or_else(|| panic!("unexpected hint for an unknown key: {hint}"))
                    .1
            })
            .collect(),
    };
    lists
        .iter()
        .flat_map(|list| list.split(", ").flat_map(|k| k.split(" or ")))
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .collect()
}

/// Every table of the file with its keys, walked from the top level.
fn schema(validator: &Validator) -> Vec<(Table, BTreeSet<String>)> {
    let mut tables = Vec::new();
    let mut pending = vec![Table { path: Vec::new() }];
    while let Some(table) = pending.pop() {
        let (headers, line) = table.headers();
        let probe_line = line + 1;
        let diagnostics = validator.diagnostics(&format!("{headers}{PROBE} = 1\n"));
        let hint = unknown_probe_hint(&diagnostics, probe_line).unwrap_or_else(|| {
            panic!(
                "{}: no \"unknown key\" diagnostic for {} (has the diagnostics' wording changed?):\n{diagnostics}",
                validator.file,
                table.title()
            )
        });
        let mut keys: BTreeSet<String> = keys_of_hint(&hint).into_iter().collect();
        // The key an empty entry cannot do without, reported at the entry's header.
        if !table.path.is_empty() {
            let diagnostics = validator.diagnostics(&headers);
            let at = format!(":{line}:");
            if let Some(first) = diagnostics.lines().next()
                && first.contains(&at)
                && let Some(rest) = first.split("missing key `").nth(1)
                && let Some(key) = rest.strip_suffix('`')
            {
                keys.insert(key.to_string());
            }
        }
        for key in &keys {
            for array in [false, true] {
                let child = table.child(key, array);
                let (headers, line) = child.headers();
                let diagnostics = validator.diagnostics(&format!("{headers}{PROBE} = 1\n"));
                if unknown_probe_hint(&diagnostics, line + 1).is_some() {
                    pending.push(child);
                    break;
                }
            }
        }
        tables.push((table, keys));
    }
    tables.sort_by_key(|(table, _)| table.dotted());
    tables
}

fn check_file(validator: &Validator, headings: &[Heading], missing: &mut Vec<String>) -> usize {
    let file = validator.file;
    let tables = schema(validator);
    let count = tables.iter().map(|(_, keys)| keys.len()).sum();
    let Some(section) = chapter(headings, &format!("`{file}`")) else {
        missing.push(format!("no `## ` heading naming `{file}`"));
        return count;
    };
    for (table, keys) in &tables {
        let (body, title) = if table.path.is_empty() {
            (&section[0].body, section[0].text.clone())
        } else {
            let wanted = format!("`{}`", table.title());
            match section.iter().find(|h| h.text.contains(&wanted)) {
                Some(h) => (&h.body, h.text.clone()),
                None => {
                    missing.push(format!("{file}: no heading naming {wanted}"));
                    continue;
                }
            }
        };
        let cells = first_cells(body);
        for key in keys {
            let dotted = match table.path.is_empty() {
                true => key.clone(),
                false => format!("{}.{key}", table.dotted()),
            };
            let names = [
                format!("`{key}`"),
                format!("`[{dotted}]`"),
                format!("`[[{dotted}]]`"),
            ];
            if !cells.iter().any(|c| names.iter().any(|n| c.contains(n))) {
                missing.push(format!(
                    "{file}: key `{key}` of {}: no table row under \"{title}\"",
                    table.title()
                ));
            }
        }
    }
    count
}

#[test]
fn every_config_key_is_in_the_reference() {
    let headings = reference();
    let agent = Validator {
        file: "agent.toml",
        binary: bin("hoistd"),
        args: |path| vec!["check-config".into(), path.display().to_string()],
        dir: tempfile::tempdir().unwrap(),
        runs: Default::default(),
    };
    let fleet = Validator {
        file: "fleet.toml",
        binary: bin("hoist"),
        args: |path| {
            vec![
                "--fleet".into(),
                path.display().to_string(),
                "targets".into(),
            ]
        },
        dir: tempfile::tempdir().unwrap(),
        runs: Default::default(),
    };
    let mut missing = Vec::new();
    let agent_keys = check_file(&agent, &headings, &mut missing);
    let fleet_keys = check_file(&fleet, &headings, &mut missing);
    assert!(
        agent_keys > 30 && fleet_keys > 15,
        "only {agent_keys} agent.toml and {fleet_keys} fleet.toml keys found"
    );
    assert!(
        missing.is_empty(),
        "docs/REFERENCE.md is missing {} item(s):\n  {}",
        missing.len(),
        missing.join("\n  ")
    );
}
