//! `[[app.services]]` entries: their raw keys and the validation of each kind.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use super::*;
use super::{
    diagnostics::{Diagnostics, foreign_keys, keys_of, spanned},
    values::*,
};

// === services ===

#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum ServiceKind {
    Systemd,
    Supervisor,
    Compose,
    Signal,
}

/// Every key of every service kind; the validation pass sorts out which apply.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawService {
    pub(super) kind: Spanned<ServiceKind>,
    pub(super) name: Option<Spanned<Word>>,
    pub(super) action: Option<Spanned<String>>,
    pub(super) serverurl: Option<Spanned<ServerUrl>>,
    pub(super) compose_file: Option<Spanned<Word>>,
    pub(super) project: Option<Spanned<Name>>,
    pub(super) services: Option<Spanned<Vec<Word>>>,
    pub(super) pidfile: Option<Spanned<PathBuf>>,
    pub(super) signal: Option<Spanned<SignalName>>,
    pub(super) timeout: Option<Spanned<Timeout>>,
}

/// The keys each kind of service takes besides `kind`.
pub(super) const SERVICE_KEYS: &[(&str, &[&str])] = &[
    ("systemd", &["name", "action", "timeout"]),
    ("supervisor", &["name", "serverurl", "action", "timeout"]),
    (
        "compose",
        &["compose_file", "project", "services", "action", "timeout"],
    ),
    ("signal", &["name", "pidfile", "signal", "timeout"]),
];

impl RawService {
    pub(super) fn validate(self, base: &Path, report: &mut Diagnostics<'_>) -> Option<Service> {
        let kind = *self.kind.get_ref();
        let what = format!("{} services", kind.as_str());
        let allowed = keys_of(SERVICE_KEYS, kind.as_str());
        let present = [
            ("name", spanned(&self.name)),
            ("action", spanned(&self.action)),
            ("serverurl", spanned(&self.serverurl)),
            ("compose_file", spanned(&self.compose_file)),
            ("project", spanned(&self.project)),
            ("services", spanned(&self.services)),
            ("pidfile", spanned(&self.pidfile)),
            ("signal", spanned(&self.signal)),
            ("timeout", spanned(&self.timeout)),
        ];
        let before = report.errors.len();
        foreign_keys(report, &what, allowed, &present);

        let mut require = |key: &str, present: bool| {
            if !present {
                report.error(self.kind.span(), format!("{what} need `{key}`"), None);
            }
        };
        match kind {
            ServiceKind::Systemd | ServiceKind::Supervisor => require("name", self.name.is_some()),
            ServiceKind::Compose => require("project", self.project.is_some()),
            ServiceKind::Signal => {
                require("pidfile", self.pidfile.is_some());
                require("signal", self.signal.is_some());
            }
        }
        let actions: &[&str] = match kind {
            ServiceKind::Systemd => &["reload", "restart"],
            ServiceKind::Supervisor => &["restart"],
            ServiceKind::Compose => &["recreate", "restart"],
            ServiceKind::Signal => &[],
        };
        let action = match &self.action {
            Some(a) if !actions.is_empty() && !actions.contains(&a.get_ref().as_str()) => {
                report.error(
                    a.span(),
                    format!("unknown action `{}` for {what}", a.get_ref()),
                    Some(format!("valid actions: {}", actions.join(", "))),
                );
                None
            }
            other => other.as_ref().map(|a| a.get_ref().as_str()),
        };
        if report.errors.len() > before {
            return None;
        }

        let timeout = self
            .timeout
            .map_or(Duration::from_secs(60), |t| t.into_inner().0);
        let name = self.name.map(|n| n.into_inner().0);
        Some(match kind {
            ServiceKind::Systemd => Service::Systemd {
                name: name?,
                action: match action {
                    Some("reload") => SystemdAction::Reload,
                    _ => SystemdAction::Restart,
                },
                timeout,
            },
            ServiceKind::Supervisor => Service::Supervisor {
                name: name?,
                serverurl: self.serverurl.map(|u| u.into_inner().0),
                action: SupervisorAction::Restart,
                timeout,
            },
            ServiceKind::Compose => Service::Compose {
                compose_file: self.compose_file.map(|f| f.into_inner().0),
                project: self.project?.into_inner().0,
                services: self.services.map_or_else(Vec::new, |s| {
                    s.into_inner().into_iter().map(|w| w.0).collect()
                }),
                action: match action {
                    Some("restart") => ComposeAction::Restart,
                    _ => ComposeAction::Recreate,
                },
                timeout,
            },
            ServiceKind::Signal => Service::Signal {
                name,
                pidfile: base.join(self.pidfile?.into_inner()),
                signal: self.signal?.into_inner().0,
                timeout,
            },
        })
    }
}

impl ServiceKind {
    fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Systemd => "systemd",
            ServiceKind::Supervisor => "supervisor",
            ServiceKind::Compose => "compose",
            ServiceKind::Signal => "signal",
        }
    }
}
