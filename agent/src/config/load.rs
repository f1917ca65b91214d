//! Loading: the raw document as serde reads it, and the validation pass that turns it
//! into a [`Config`] with every diagnostic at once.

use std::{
    collections::{BTreeMap, HashMap},
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use hoist_config::{Hints, line_column};
use serde::Deserialize;
use toml::Spanned;

use super::*;
use super::{
    check::{CHECK_KEYS, RawCheck},
    diagnostics::{Diagnostics, spanned},
    logs::{RawLog, SecretKey},
    service::{RawService, SERVICE_KEYS},
    values::*,
};

// === loading ===

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Validates config text. `origin` names the file in diagnostics, and relative paths
/// resolve against its directory.
pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    let mut report = Diagnostics {
        text,
        origin,
        errors: Vec::new(),
    };
    let raw: RawConfig = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(err) => {
            report.toml_error(&err, &HINTS);
            return Err(report.into_error());
        }
    };
    let base = origin.parent().unwrap_or(Path::new(""));
    let config = raw.validate(base, &mut report);
    if report.errors.is_empty() {
        Ok(config)
    } else {
        Err(report.into_error())
    }
}

/// The agent config's own hints for toml's and serde's errors.
const HINTS: Hints = Hints {
    unknown_key: Some(kind_keys),
    missing_key: &[
        (
            "tls",
            "add a [tls] table with `ca`, `cert` and `key` (PEM files; \
             `hoist ca issue --agent NAME` makes them)",
        ),
        (
            "kind",
            "set `kind` first; it decides which keys the entry takes",
        ),
    ],
    message: &[(
        "invalid type: map, expected a sequence",
        "write `[[app]]` (a list of tables), not `[app]`",
    )],
};

/// The hint for an unknown key of a service or check entry: the keys of each kind, as
/// the union of every kind's keys (all serde knows) would mislead.
fn kind_keys(keys: &str) -> Option<String> {
    let (_, what, kinds) = [
        ("pidfile", "services", SERVICE_KEYS),
        ("expect_json", "checks", CHECK_KEYS),
    ]
    .into_iter()
    .find(|(marker, _, _)| keys.starts_with("kind, ") && keys.contains(marker))?;
    let hints: Vec<String> = kinds
        .iter()
        .map(|(kind, keys)| format!("{kind} {what} take {}", keys.join(", ")))
        .collect();
    Some(hints.join("; "))
}

// === the raw document and the validation pass ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    agent: AgentSection,
    tls: TlsSection,
    #[serde(default)]
    thresholds: Thresholds,
    #[serde(default, rename = "app")]
    apps: Vec<RawApp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    name: Spanned<Name>,
    repo: Repo,
    deploy_to: Spanned<DeployTo>,
    strategy: Option<Spanned<Strategy>>,
    user: Option<Account>,
    group: Option<Account>,
    #[serde(default)]
    keep_releases: KeepReleases,
    keep_backups: Option<KeepBackups>,
    #[serde(default)]
    shared_files: Vec<SharedPath>,
    #[serde(default)]
    shared_dirs: Vec<SharedPath>,
    #[serde(default)]
    env: BTreeMap<EnvKey, String>,
    step_timeout: Option<Timeout>,
    #[serde(default)]
    steps: Steps,
    #[serde(default)]
    services: Vec<RawService>,
    #[serde(default)]
    checks: Vec<RawCheck>,
    compose_file: Option<Spanned<Word>>,
    project: Option<Spanned<Name>>,
    activate: Option<Spanned<Command>>,
    deactivate: Option<Spanned<Command>>,
    #[serde(default)]
    tasks: BTreeMap<Name, Task>,
    #[serde(default)]
    logs: Vec<RawLog>,
    #[serde(default)]
    secret_keys: Vec<SecretKey>,
}

impl RawConfig {
    fn validate(self, base: &Path, report: &mut Diagnostics<'_>) -> Config {
        let mut agent = self.agent;
        agent.state_dir = base.join(&agent.state_dir);
        let tls = TlsSection {
            ca: base.join(&self.tls.ca),
            cert: base.join(&self.tls.cert),
            key: base.join(&self.tls.key),
            crl: self.tls.crl.as_ref().map(|crl| base.join(crl)),
        };
        let mut names: HashMap<String, Range<usize>> = HashMap::new();
        let mut roots: HashMap<PathBuf, String> = HashMap::new();
        let mut apps = Vec::with_capacity(self.apps.len());
        for raw in self.apps {
            let name = raw.name.get_ref().0.clone();
            if let Some(first) = names.get(&name) {
                let (line, _) = line_column(report.text, first.start);
                report.error(
                    raw.name.span(),
                    format!("duplicate app `{name}`"),
                    Some(format!(
                        "the first `{name}` is at line {line}; app names are unique"
                    )),
                );
            } else {
                names.insert(name.clone(), raw.name.span());
            }
            let root = raw.deploy_to.get_ref().0.clone();
            if let Some(other) = roots.get(&root) {
                report.error(
                    raw.deploy_to.span(),
                    format!("deploy_to {} is already app `{other}`'s", root.display()),
                    Some("every app needs its own deploy_to".into()),
                );
            } else {
                roots.insert(root, name);
            }
            apps.push(raw.validate(base, report));
        }
        Config {
            agent,
            tls,
            thresholds: self.thresholds,
            apps,
        }
    }
}

impl RawApp {
    fn validate(self, base: &Path, report: &mut Diagnostics<'_>) -> App {
        let name = self.name.into_inner().0;
        let strategy = self
            .strategy
            .as_ref()
            .map_or(Strategy::Symlink, |s| *s.get_ref());
        let strategy_span = self.strategy.as_ref().map(Spanned::span);
        // A strategy's own keys: required with it, and a likely mistake without it.
        let keys: [(&str, Strategy, Option<Range<usize>>); 4] = [
            (
                "compose_file",
                Strategy::Compose,
                spanned(&self.compose_file),
            ),
            ("project", Strategy::Compose, spanned(&self.project)),
            ("activate", Strategy::Command, spanned(&self.activate)),
            ("deactivate", Strategy::Command, spanned(&self.deactivate)),
        ];
        for (key, wants, span) in keys {
            if let Some(span) = span
                && wants != strategy
            {
                report.error(
                    span,
                    format!("`{key}` only applies to strategy = \"{}\"", wants.as_str()),
                    Some(format!(
                        "this app's strategy is \"{}\"; remove `{key}` or change the strategy",
                        strategy.as_str()
                    )),
                );
            }
        }
        let missing: Vec<&str> = match strategy {
            Strategy::Symlink => vec![],
            Strategy::Compose => [
                ("compose_file", self.compose_file.is_none()),
                ("project", self.project.is_none()),
            ]
            .into_iter()
            .filter_map(|(key, absent)| absent.then_some(key))
            .collect(),
            Strategy::Command => match self.activate {
                None => vec!["activate"],
                Some(_) => vec![],
            },
        };
        if !missing.is_empty() {
            let keys = missing.join("` and `");
            report.error(
                strategy_span.unwrap_or(0..0),
                format!("strategy = \"{}\" needs `{keys}`", strategy.as_str()),
                Some(match strategy {
                    Strategy::Compose => {
                        "e.g. compose_file = \"compose.yaml\", project = \"shop\"".into()
                    }
                    _ => "e.g. activate = \"helm upgrade --install shop ./chart --wait\"".into(),
                }),
            );
        }

        let services: Vec<Service> = self
            .services
            .into_iter()
            .filter_map(|s| s.validate(base, report))
            .collect();
        let mut checks = Vec::with_capacity(self.checks.len());
        let mut check_names: HashMap<String, usize> = HashMap::new();
        for raw in self.checks {
            let span = raw.name.as_ref().map_or(raw.kind.span(), Spanned::span);
            let Some(check) = raw.validate(base, report) else {
                continue;
            };
            let check_name = check.name();
            if let Some(line) = check_names.get(&check_name) {
                report.error(
                    span,
                    format!("duplicate check `{check_name}` in app `{name}`"),
                    Some(format!(
                        "the first is at line {line}; give each check a distinct `name`"
                    )),
                );
            } else {
                check_names.insert(check_name, line_column(report.text, span.start).0);
            }
            checks.push(check);
        }

        let default_project = self
            .project
            .as_ref()
            .map(|p| p.get_ref().0.clone())
            .or_else(|| {
                services.iter().find_map(|s| match s {
                    Service::Compose { project, .. } => Some(project.clone()),
                    _ => None,
                })
            });
        let mut logs: Vec<LogSource> = Vec::with_capacity(self.logs.len());
        for raw in self.logs {
            if logs.iter().any(|l| l.name == raw.name()) {
                report.error(
                    raw.span(),
                    format!("duplicate log source `{}` in app `{name}`", raw.name()),
                    Some("log source names are unique within an app".into()),
                );
                continue;
            }
            if let Some(source) = raw.validate(default_project.as_deref(), report) {
                logs.push(source);
            }
        }

        App {
            name,
            repo: self.repo.0,
            deploy_to: self.deploy_to.into_inner().0,
            strategy,
            user: self.user.map(|a| a.0),
            group: self.group.map(|a| a.0),
            keep_releases: self.keep_releases.0,
            keep_backups: self.keep_backups.map_or(self.keep_releases.0, |k| k.0),
            shared_files: self.shared_files.into_iter().map(|p| p.0).collect(),
            shared_dirs: self.shared_dirs.into_iter().map(|p| p.0).collect(),
            env: self.env.into_iter().map(|(k, v)| (k.0, v)).collect(),
            step_timeout: self.step_timeout.map_or(Duration::from_secs(600), |t| t.0),
            steps: self.steps,
            services,
            checks,
            compose_file: self.compose_file.map(|f| f.into_inner().0),
            project: self.project.map(|p| p.into_inner().0),
            activate: self.activate.map(Spanned::into_inner),
            deactivate: self.deactivate.map(Spanned::into_inner),
            tasks: self.tasks.into_iter().map(|(k, v)| (k.0, v)).collect(),
            logs,
            secret_keys: self.secret_keys.into_iter().map(|k| k.0).collect(),
        }
    }
}
