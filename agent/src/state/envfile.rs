//! `shared/.env` files, edited safely: every line the edit does not touch (comments,
//! blank lines, `export`, quoting, line endings) is written back byte for byte; keys are
//! validated; values never leave this module unredacted unless the caller asks; the
//! file is replaced atomically, keeping its mode and owner.
//!
//! Reading follows phpdotenv (the Laravel runbooks) where dotenv dialects agree, and the
//! values hoist writes are quoted so that phpdotenv, docker compose and python-dotenv
//! all read them back unchanged (see [`quote`]).

use std::{fs, os::unix::fs::PermissionsExt as _};

use hoist_proto::v1::EnvVar;
use nix::unistd::Gid;

use crate::state::beneath::{BeneathError, Dir};

/// Largest `.env` (or `.env.example`) the agent reads.
const MAX_ENV_FILE: u64 = 1 << 20;

/// Mode of a `.env` created by hoist: the app's group may read it, nobody else.
const NEW_FILE_MODE: u32 = 0o640;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error(
        "invalid key {0:?}: use letters, digits and '_', not starting with a digit \
         (e.g. DB_PASSWORD)"
    )]
    InvalidKey(String),
    #[error("the value for {key} contains a {what}; values must be a single line")]
    InvalidValue { key: String, what: &'static str },
}

/// Why a `.env` file could not be read, edited or written.
#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    /// Unreadable, unwritable, or a link or hard link (named, never quoted).
    #[error(transparent)]
    Access(#[from] BeneathError),
    #[error("{name} is not UTF-8 text")]
    NotText { name: String },
    #[error("{name} does not exist yet; `hoist env APP set KEY=VALUE` creates it")]
    Missing { name: String },
    #[error(transparent)]
    Invalid(#[from] EnvError),
}

/// A parsed `.env` file that remembers every line as it was read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvFile {
    lines: Vec<Line>,
}

/// One logical line: a comment, a blank line, an unparsable line, or an assignment
/// (which may span several physical lines inside a quoted value).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Line {
    /// The text as read, including its line ending(s).
    raw: String,
    entry: Option<Entry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    key: String,
    /// Unquoted, unescaped.
    value: String,
    export: bool,
    /// A trailing ` # comment`, kept when the value is replaced.
    comment: String,
}

impl EnvFile {
    /// Parses `text`. Never fails: lines that are not assignments are kept as they are.
    pub fn parse(text: &str) -> EnvFile {
        let physical: Vec<&str> = text.split_inclusive('\n').collect();
        let mut lines = Vec::new();
        let mut at = 0;
        while at < physical.len() {
            let (entry, used) = parse_entry(&physical[at..]);
            lines.push(Line {
                raw: physical[at..at + used].concat(),
                entry,
            });
            at += used;
        }
        EnvFile { lines }
    }

    /// Reads and parses the file `name` in `dir` (never through a link); `None` when it
    /// does not exist.
    pub fn read_from(dir: &Dir, name: &str) -> Result<Option<EnvFile>, EnvFileError> {
        let Some(bytes) = dir.read(name, MAX_ENV_FILE)? else {
            return Ok(None);
        };
        let text = String::from_utf8(bytes).map_err(|_| EnvFileError::NotText {
            name: dir.name(name),
        })?;
        Ok(Some(EnvFile::parse(&text)))
    }

    /// The value of `key` (unquoted and unescaped; `${...}` references are returned as
    /// written, not expanded). When a key is assigned twice, the first wins, as in
    /// phpdotenv.
    pub fn get(&self, key: &str) -> Option<String> {
        self.entries()
            .find(|e| e.key == key)
            .map(|e| e.value.clone())
    }

    /// Every key, once, in file order.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for entry in self.entries() {
            if !keys.contains(&entry.key) {
                keys.push(entry.key.clone());
            }
        }
        keys
    }

    /// Sets `key` to `value`: in place (keeping an `export` prefix and a trailing
    /// comment) where the key already is, dropping any later duplicate so every dotenv
    /// reader agrees; otherwise appended at the end.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), EnvError> {
        check_assignment(key, value)?;
        let Some(first) = self.position(key) else {
            self.append(key, value);
            return Ok(());
        };
        let line = &mut self.lines[first];
        let Some(entry) = line.entry.as_mut() else {
            return Ok(());
        };
        entry.value = value.to_string();
        let export = if entry.export { "export " } else { "" };
        line.raw = format!(
            "{export}{key}={}{}{}",
            quote(value),
            entry.comment,
            line_ending(&line.raw)
        );
        let mut index = 0;
        self.lines.retain(|l| {
            let keep = index <= first || l.entry.as_ref().is_none_or(|e| e.key != key);
            index += 1;
            keep
        });
        Ok(())
    }

    /// Removes every assignment of `key`; whether there was one.
    pub fn unset(&mut self, key: &str) -> bool {
        let before = self.lines.len();
        self.lines
            .retain(|l| l.entry.as_ref().is_none_or(|e| e.key != key));
        self.lines.len() != before
    }

    /// The file's text: untouched lines exactly as read.
    pub fn render(&self) -> String {
        self.lines.iter().map(|l| l.raw.as_str()).collect()
    }

    fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.lines.iter().filter_map(|l| l.entry.as_ref())
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.lines
            .iter()
            .position(|l| l.entry.as_ref().is_some_and(|e| e.key == key))
    }

    fn append(&mut self, key: &str, value: &str) {
        if let Some(last) = self.lines.last_mut()
            && !last.raw.ends_with('\n')
        {
            last.raw.push('\n');
        }
        self.lines.push(Line {
            raw: format!("{key}={}\n", quote(value)),
            entry: Some(Entry {
                key: key.into(),
                value: value.into(),
                export: false,
                comment: String::new(),
            }),
        });
    }
}

/// Keys listed in `.env.example` that `.env` lacks (an empty value counts as present),
/// in the example's order.
pub fn missing_keys(example: &EnvFile, actual: &EnvFile) -> Vec<String> {
    example
        .keys()
        .into_iter()
        .filter(|k| actual.get(k).is_none())
        .collect()
}

/// What is shown instead of a value: `•••• (12 chars)`.
pub fn redact(value: &str) -> String {
    match value.chars().count() {
        0 => "(empty)".into(),
        1 => "•••• (1 char)".into(),
        n => format!("•••• ({n} chars)"),
    }
}

/// Whether `KEY=value` may be written: the key matches `^[A-Za-z_][A-Za-z0-9_]*$` and
/// the value is one line. The message never contains the value.
pub fn check_assignment(key: &str, value: &str) -> Result<(), EnvError> {
    if !valid_key(key) {
        return Err(EnvError::InvalidKey(key.into()));
    }
    let bad = [
        ('\n', "newline"),
        ('\r', "carriage return"),
        ('\0', "NUL byte"),
    ];
    match bad.iter().find(|(c, _)| value.contains(*c)) {
        Some((_, what)) => Err(EnvError::InvalidValue {
            key: key.into(),
            what,
        }),
        None => Ok(()),
    }
}

fn valid_key(key: &str) -> bool {
    key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Atomically replaces the file `name` in `dir` with `env`, keeping the existing file's
/// mode and owner (a new file: mode 0640, owner root — or the agent — and group
/// `group`, else the directory's group).
///
/// Through [`Dir::write_atomic`]: the temp file is created 0600, so the secrets are
/// never readable by others, and given the old file's owner and mode before the
/// rename. A link or a hard-linked file at `name` is refused rather than followed or
/// replaced: `shared/` may be writable by the app's user.
pub fn write_atomic(
    dir: &Dir,
    name: &str,
    env: &EnvFile,
    group: Option<Gid>,
) -> Result<(), EnvFileError> {
    let existing = dir.check_writable(name)?;
    let (mode, uid, gid) = match existing {
        Some(st) => (st.mode, Some(st.uid), Some(st.gid)),
        None => {
            let dir_gid = nix::sys::stat::fstat(dir.as_fd()).ok().map(|st| st.st_gid);
            (NEW_FILE_MODE, None, group.map(Gid::as_raw).or(dir_gid))
        }
    };
    dir.write_atomic(name, env.render().as_bytes(), |file| {
        // Best effort for a new file's group: a non-root agent may not be in it.
        match std::os::unix::fs::fchown(file, uid, gid) {
            Err(e) if uid.is_some() => return Err(e),
            _ => {}
        }
        // After chown, which clears set-id bits.
        file.set_permissions(fs::Permissions::from_mode(mode))
    })?;
    Ok(())
}

/// Keys of the `.env.example` `example` in `example_dir` missing from the `.env` `env`
/// in `env_dir` (every key, when that does not exist; none when there is no example).
/// Neither is read through a link, and no error quotes their content.
pub fn missing_keys_beneath(
    example_dir: &Dir,
    example: &str,
    env_dir: &Dir,
    env: &str,
) -> Result<Vec<String>, EnvFileError> {
    let Some(example) = EnvFile::read_from(example_dir, example)? else {
        return Ok(Vec::new());
    };
    let actual = EnvFile::read_from(env_dir, env)?.unwrap_or_default();
    Ok(missing_keys(&example, &actual))
}

/// Applies `set` then `unset` to the `.env` `name` in `dir` (created when missing, with
/// group `group`) and writes it back atomically if anything changed. Returns one line
/// per change, naming keys only, never values.
pub fn edit(
    dir: &Dir,
    name: &str,
    set: &[(String, String)],
    unset: &[String],
    group: Option<Gid>,
) -> Result<Vec<String>, EnvFileError> {
    let mut env = EnvFile::read_from(dir, name)?.unwrap_or_default();
    let mut report = Vec::new();
    let mut changed = false;
    for (key, value) in set {
        check_assignment(key, value)?;
        let note = match env.get(key) {
            Some(old) if old == *value => {
                report.push(format!("set {key}: unchanged"));
                continue;
            }
            Some(_) => "changed",
            None => "added",
        };
        env.set(key, value)?;
        changed = true;
        report.push(format!("set {key}: {note}, {}", redact(value)));
    }
    for key in unset {
        check_assignment(key, "")?;
        if env.unset(key) {
            changed = true;
            report.push(format!("unset {key}"));
        } else {
            report.push(format!("unset {key}: was not set"));
        }
    }
    if changed {
        write_atomic(dir, name, &env, group)?;
    }
    Ok(report)
}

/// The variables of the `.env` `name` in `dir`, values redacted unless `show`.
pub fn list(dir: &Dir, name: &str, show: bool) -> Result<Vec<EnvVar>, EnvFileError> {
    let env = EnvFile::read_from(dir, name)?.ok_or_else(|| EnvFileError::Missing {
        name: dir.name(name),
    })?;
    Ok(env
        .keys()
        .into_iter()
        .map(|key| {
            let value = env.get(&key).unwrap_or_default();
            EnvVar {
                value: if show { value } else { redact(&value) },
                redacted: !show,
                key,
            }
        })
        .collect())
}

/// How a value is written:
/// - unquoted when it is non-empty and only `A-Za-z0-9` and `_-.,:/@+=%` (e.g. Laravel's
///   `base64:...` APP_KEY, hosts, URLs without spaces);
/// - else in single quotes when it has no `'` and no `\`: literal in phpdotenv, docker
///   compose, python-dotenv and shells alike, so `$`, `#`, spaces and `"` are safe;
/// - else in double quotes with `\`, `"` and `$` escaped (phpdotenv's escapes; `$`
///   escaped so `${...}` is not interpolated).
fn quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.,:/@+=%".contains(c));
    if plain {
        value.to_string()
    } else if !value.contains(['\'', '\\']) {
        format!("'{value}'")
    } else {
        let mut out = String::from("\"");
        for c in value.chars() {
            if matches!(c, '\\' | '"' | '$') {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        out
    }
}

/// `\r\n`, `\n` or nothing (a last line without a newline).
fn line_ending(raw: &str) -> &'static str {
    if raw.ends_with("\r\n") {
        "\r\n"
    } else if raw.ends_with('\n') {
        "\n"
    } else {
        ""
    }
}

/// The assignment starting at `lines[0]`, and how many physical lines it spans; a
/// quoted value may continue on the following lines. Not an assignment → `(None, 1)`.
fn parse_entry(lines: &[&str]) -> (Option<Entry>, usize) {
    let Some((export, key, rest)) = split_assignment(lines[0]) else {
        return (None, 1);
    };
    let mut text = rest.to_string();
    for used in 1..=lines.len() {
        match parse_value(&text) {
            Some((value, comment)) => {
                let entry = Entry {
                    key: key.into(),
                    value,
                    export,
                    comment,
                };
                return (Some(entry), used);
            }
            None if used < lines.len() => text.push_str(lines[used]),
            None => break,
        }
    }
    // A quote never closed: keep the line as it is, not as an assignment.
    (None, 1)
}

/// `[export ]KEY = rest` → `(export, KEY, rest)`; comments, blanks and invalid keys
/// are not assignments.
fn split_assignment(line: &str) -> Option<(bool, &str, &str)> {
    let mut body = line.trim_start();
    if body.is_empty() || body.starts_with('#') {
        return None;
    }
    let export = body
        .strip_prefix("export")
        .filter(|rest| rest.starts_with([' ', '\t']));
    if let Some(rest) = export {
        body = rest.trim_start();
    }
    let (key, rest) = body.split_once('=')?;
    let key = key.trim();
    valid_key(key).then_some((export.is_some(), key, rest))
}

/// The value at the start of `text` (what follows `=`, possibly several lines) and the
/// trailing comment after it; `None` while a quote is still open.
fn parse_value(text: &str) -> Option<(String, String)> {
    let text = text.trim_start_matches([' ', '\t']);
    let (value, after) = match text.chars().next() {
        Some('"') => double_quoted(&text[1..])?,
        Some('\'') => {
            let end = text[1..].find('\'')?;
            (text[1..1 + end].to_string(), &text[end + 2..])
        }
        _ => {
            let line = text.trim_end_matches(['\n', '\r']);
            let cut = comment_start(line).unwrap_or(line.len());
            (line[..cut].trim_end().to_string(), &line[cut..])
        }
    };
    let after = after.trim_end_matches(['\n', '\r']);
    let comment = if after.trim_start().starts_with('#') {
        after.to_string()
    } else {
        String::new()
    };
    Some((value, comment))
}

/// Where an unquoted value's comment starts (with the whitespace before it): a `#` at
/// the start or after whitespace (a `#` inside a word, as in `pa#ss`, is part of the
/// value).
fn comment_start(line: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    let hash = (0..bytes.len())
        .find(|&i| bytes[i] == b'#' && (i == 0 || matches!(bytes[i - 1], b' ' | b'\t')))?;
    Some(line[..hash].trim_end_matches([' ', '\t']).len())
}

/// A double-quoted value after its opening quote: phpdotenv's escapes (`\"`, `\\`,
/// `\$`, `\n`, `\r`, `\t`, `\f`, `\v`); other backslashes are kept. Returns the value
/// and the text after the closing quote.
fn double_quoted(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                'r' => value.push('\r'),
                't' => value.push('\t'),
                'f' => value.push('\u{c}'),
                'v' => value.push('\u{b}'),
                e @ ('"' | '\\' | '$') => value.push(e),
                other => {
                    value.push('\\');
                    value.push(other);
                }
            },
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests;
