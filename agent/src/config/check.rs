//! `[[app.checks]]` entries: their raw keys and the validation of each kind.

use std::{collections::BTreeMap, path::Path, time::Duration};

use serde::Deserialize;
use toml::Spanned;

use super::*;
use super::{
    diagnostics::{Diagnostics, foreign_keys, keys_of, spanned},
    values::*,
};

// === checks ===

#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum CheckKind {
    Http,
    Tcp,
    Command,
}

/// Every key of every check kind; the validation pass sorts out which apply.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCheck {
    pub(super) kind: Spanned<CheckKind>,
    pub(super) name: Option<Spanned<CheckName>>,
    pub(super) url: Option<Spanned<HttpUrl>>,
    pub(super) expect_status: Option<Spanned<StatusCode>>,
    pub(super) expect_json: Option<Spanned<BTreeMap<String, serde_json::Value>>>,
    pub(super) address: Option<Spanned<HostPort>>,
    pub(super) command: Option<Spanned<Command>>,
    pub(super) timeout: Option<Spanned<Timeout>>,
    pub(super) retries: Option<Spanned<Retries>>,
    pub(super) interval: Option<Spanned<Dur>>,
    pub(super) gate: Option<Spanned<bool>>,
    pub(super) ca: Option<Spanned<String>>,
}

/// The keys each kind of check takes besides `kind`.
pub(super) const CHECK_KEYS: &[(&str, &[&str])] = &[
    (
        "http",
        &[
            "name",
            "url",
            "expect_status",
            "expect_json",
            "timeout",
            "retries",
            "interval",
            "gate",
            "ca",
        ],
    ),
    (
        "tcp",
        &["name", "address", "timeout", "retries", "interval", "gate"],
    ),
    (
        "command",
        &["name", "command", "timeout", "retries", "interval", "gate"],
    ),
];

impl RawCheck {
    pub(super) fn validate(self, base: &Path, report: &mut Diagnostics<'_>) -> Option<Check> {
        let kind = *self.kind.get_ref();
        let what = format!("{} checks", kind.as_str());
        let allowed = keys_of(CHECK_KEYS, kind.as_str());
        let present = [
            ("name", spanned(&self.name)),
            ("url", spanned(&self.url)),
            ("expect_status", spanned(&self.expect_status)),
            ("expect_json", spanned(&self.expect_json)),
            ("address", spanned(&self.address)),
            ("command", spanned(&self.command)),
            ("timeout", spanned(&self.timeout)),
            ("retries", spanned(&self.retries)),
            ("interval", spanned(&self.interval)),
            ("gate", spanned(&self.gate)),
            ("ca", spanned(&self.ca)),
        ];
        let before = report.errors.len();
        foreign_keys(report, &what, allowed, &present);
        let required = match kind {
            CheckKind::Http => (
                "url",
                self.url.is_some(),
                "url = \"http://127.0.0.1/health\"",
            ),
            CheckKind::Tcp => (
                "address",
                self.address.is_some(),
                "address = \"127.0.0.1:5432\"",
            ),
            CheckKind::Command => (
                "command",
                self.command.is_some(),
                "command = \"php artisan ...\"",
            ),
        };
        if let (key, false, example) = required {
            report.error(
                self.kind.span(),
                format!("{what} need `{key}`"),
                Some(format!("e.g. {example}")),
            );
        }
        if let (Some(ca), Some(url)) = (&self.ca, &self.url)
            && url.get_ref().0.starts_with("http://")
        {
            report.error(
                ca.span(),
                format!(
                    "`ca` is for https checks; {:?} is plain http",
                    url.get_ref().0
                ),
                Some("drop `ca`, or use an https:// url".into()),
            );
        }
        if report.errors.len() > before {
            return None;
        }

        let name = self.name.map(|n| n.into_inner().0);
        let timeout = self
            .timeout
            .map_or(Duration::from_secs(5), |t| t.into_inner().0);
        let retries = self.retries.map_or(3, |r| r.into_inner().0);
        let interval = self
            .interval
            .map_or(Duration::from_secs(2), |i| i.into_inner().0);
        let probe = match kind {
            CheckKind::Http => Probe::Http {
                url: self.url?.into_inner().0,
                expect_status: self.expect_status.map_or(200, |s| s.into_inner().0),
                expect_json: self
                    .expect_json
                    .map(Spanned::into_inner)
                    .unwrap_or_default(),
                ca: self.ca.map(|c| base.join(c.into_inner())),
            },
            CheckKind::Tcp => Probe::Tcp {
                address: self.address?.into_inner().0,
            },
            CheckKind::Command => Probe::Command {
                command: self.command?.into_inner(),
            },
        };
        Some(Check {
            name,
            gate: self.gate.is_none_or(Spanned::into_inner),
            timeout,
            retries,
            interval,
            probe,
        })
    }
}

impl CheckKind {
    fn as_str(self) -> &'static str {
        match self {
            CheckKind::Http => "http",
            CheckKind::Tcp => "tcp",
            CheckKind::Command => "command",
        }
    }
}
