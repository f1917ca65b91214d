//! `[[app.logs]]` (the sources `hoist logs` reads) and `secret_keys` (which `.env`
//! values are masked in output), with the one glob matcher both use.

use std::{
    ops::Range,
    path::{Component, Path, PathBuf},
};

use serde::Deserialize;
use toml::Spanned;

use super::diagnostics::{Diagnostics, spanned};
use super::values::{Name, Word};

/// One `[[app.logs]]` entry: a name operators pick it by, and where its lines are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogSource {
    pub name: String,
    pub kind: LogKind,
}

/// Where a log source's lines come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogKind {
    /// Files whose name matches `pattern` (`*` and `?`) in `dir` beneath `root`.
    Files {
        root: LogRoot,
        /// Relative to the root, no `..`; empty for the root itself.
        dir: String,
        pattern: String,
    },
    /// `journalctl -u UNIT`.
    Journal { unit: String },
    /// `docker logs` of the containers of one service of a compose project.
    Compose { project: String, service: String },
}

/// The directory a file source's `path` is relative to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogRoot {
    /// The release `current` points at (paths under a `shared_dirs` entry are read in
    /// `shared/`, where the release's link leads).
    Current,
    /// `deploy_to/shared`.
    Shared,
    /// `deploy_to` itself.
    DeployTo,
    /// An absolute directory named in the config (e.g. `/var/log/nginx`).
    Absolute(PathBuf),
}

impl LogRoot {
    pub fn as_str(&self) -> &str {
        match self {
            LogRoot::Current => "current",
            LogRoot::Shared => "shared",
            LogRoot::DeployTo => "deploy_to",
            LogRoot::Absolute(_) => "absolute",
        }
    }
}

impl LogSource {
    /// `file`, `journal` or `compose`.
    pub fn kind(&self) -> &'static str {
        match self.kind {
            LogKind::Files { .. } => "file",
            LogKind::Journal { .. } => "journal",
            LogKind::Compose { .. } => "compose",
        }
    }
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawRoot {
    Current,
    Shared,
    DeployTo,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    name: Spanned<Name>,
    path: Option<Spanned<String>>,
    root: Option<Spanned<RawRoot>>,
    unit: Option<Spanned<Word>>,
    compose_service: Option<Spanned<Word>>,
    project: Option<Spanned<Name>>,
}

const SOURCE_HINT: &str = "give exactly one of `path = \"storage/logs/*.log\"`, \
     `unit = \"myapp.service\"` or `compose_service = \"api\"`";

impl RawLog {
    pub(super) fn span(&self) -> Range<usize> {
        self.name.span()
    }

    pub(super) fn name(&self) -> &str {
        &self.name.get_ref().0
    }

    /// `default_project`: the app's compose project, for `compose_service` without
    /// `project`.
    pub(super) fn validate(
        self,
        default_project: Option<&str>,
        report: &mut Diagnostics<'_>,
    ) -> Option<LogSource> {
        let name = self.name.get_ref().0.clone();
        let given: Vec<&str> = [
            ("path", self.path.is_some()),
            ("unit", self.unit.is_some()),
            ("compose_service", self.compose_service.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        if given.len() != 1 {
            let what = if given.is_empty() {
                format!("log source `{name}` says nowhere to read")
            } else {
                format!("log source `{name}` has {}", given.join(" and "))
            };
            report.error(self.name.span(), what, Some(SOURCE_HINT.into()));
            return None;
        }
        // Keys that only go with a source this entry does not have.
        let wrong: Vec<(Range<usize>, &str)> = [
            (
                self.path.is_none(),
                spanned(&self.root),
                "`root` only goes with `path`",
            ),
            (
                self.compose_service.is_none(),
                spanned(&self.project),
                "`project` only goes with `compose_service`",
            ),
        ]
        .into_iter()
        .filter_map(|(absent, span, message)| Some((span.filter(|_| absent)?, message)))
        .collect();
        if !wrong.is_empty() {
            for (span, message) in wrong {
                report.error(span, message, None);
            }
            return None;
        }
        let kind = if let Some(path) = self.path {
            let root = self.root.as_ref().map(|r| *r.get_ref());
            match file_source(path.get_ref(), root) {
                Ok(kind) => kind,
                Err((message, hint)) => {
                    report.error(path.span(), message, Some(hint.into()));
                    return None;
                }
            }
        } else if let Some(unit) = self.unit {
            LogKind::Journal {
                unit: unit.into_inner().0,
            }
        } else {
            let service = self.compose_service?;
            let project = match (self.project, default_project) {
                (Some(p), _) => p.into_inner().0,
                (None, Some(p)) => p.to_string(),
                (None, None) => {
                    report.error(
                        service.span(),
                        format!("log source `{name}` needs the compose `project` of its service"),
                        Some(
                            "add project = \"NAME\" (the default is the app's own compose \
                             project, and this app has none)"
                                .into(),
                        ),
                    );
                    return None;
                }
            };
            LogKind::Compose {
                project,
                service: service.into_inner().0,
            }
        };
        Some(LogSource { name, kind })
    }
}

/// A file source's `path`: the directory part is plain (no globs, no `..`), the file
/// name may hold `*` and `?`.
fn file_source(path: &str, root: Option<RawRoot>) -> Result<LogKind, (String, &'static str)> {
    const HINT: &str = "write a path relative to `root` (the current release by default) \
                        whose file name may hold * and ?, e.g. \"storage/logs/*.log\", or an \
                        absolute one like \"/var/log/nginx/*.log\"";
    let p = Path::new(path);
    let absolute = p.is_absolute();
    if absolute && root.is_some() {
        return Err((
            format!("log path {path:?} is absolute; `root` only applies to relative paths"),
            "remove `root`, or make the path relative to it",
        ));
    }
    let normal = p
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::RootDir));
    let (Some(file), true) = (p.file_name().and_then(|f| f.to_str()), normal) else {
        return Err((format!("invalid log path {path:?}"), HINT));
    };
    let parent = p.parent().unwrap_or(Path::new(""));
    let dir = parent.to_str().unwrap_or_default();
    if dir.contains(['*', '?']) || path.chars().any(char::is_control) {
        return Err((
            format!("log path {path:?} has a wildcard outside its file name"),
            HINT,
        ));
    }
    let root = match (absolute, root) {
        (true, _) => LogRoot::Absolute(parent.to_path_buf()),
        (false, None | Some(RawRoot::Current)) => LogRoot::Current,
        (false, Some(RawRoot::Shared)) => LogRoot::Shared,
        (false, Some(RawRoot::DeployTo)) => LogRoot::DeployTo,
    };
    Ok(LogKind::Files {
        dir: if absolute { String::new() } else { dir.into() },
        root,
        pattern: file.into(),
    })
}

/// A `secret_keys` entry: a key or a pattern with `*`, e.g. `STRIPE_*`.
pub(super) struct SecretKey(pub(super) String);

impl<'de> Deserialize<'de> for SecretKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        hoist_config::checked_str(d, |s: String| {
            if !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_*".contains(c))
            {
                Ok(s)
            } else {
                Err(hoist_config::hinted(
                    format!("invalid secret key {s:?}"),
                    "write a .env key or a pattern of A-Z, 0-9, _ and *, e.g. \"STRIPE_*\"",
                ))
            }
        })
        .map(SecretKey)
    }
}

/// Whether `text` matches the glob `pattern`: `*` is any run of characters, `?` one
/// character, anything else itself. Linear in practice: one star is retried at most.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(c) if *c == '?' || *c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs_match_stars_and_single_characters() {
        assert!(glob("*.log", "laravel.log"));
        assert!(glob("laravel-*.log", "laravel-2026-12-02.log"));
        assert!(!glob("*.log", "laravel.log.1"));
        assert!(glob("*PASSWORD*", "DB_PASSWORD"));
        assert!(glob("*_KEY", "APP_KEY"));
        assert!(!glob("*_KEY", "KEYS_KEYBOARD"));
        assert!(glob("worker-?.log", "worker-1.log"));
        assert!(!glob("worker-?.log", "worker-12.log"));
        assert!(glob("*", ""));
        assert!(!glob("a", ""));
        assert!(glob("a*b*c", "aXbYbZc"));
    }
}
