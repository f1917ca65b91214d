//! What the validation pass reports through: [`Diagnostics`] (byte spans turned into
//! lines and columns) and the helpers every entry kind shares.

use std::{ops::Range, path::Path};

use hoist_config::{Diagnostic, Hints};
use toml::Spanned;

use super::ConfigError;

/// Collects diagnostics, turning byte spans into lines and columns.
pub(super) struct Diagnostics<'a> {
    pub(super) text: &'a str,
    pub(super) origin: &'a Path,
    pub(super) errors: Vec<Diagnostic>,
}

impl Diagnostics<'_> {
    pub(super) fn error(
        &mut self,
        span: Range<usize>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let diagnostic = Diagnostic::at(self.origin, self.text, span.start, message, hint);
        self.errors.push(diagnostic);
    }

    pub(super) fn toml_error(&mut self, err: &toml::de::Error, hints: &Hints) {
        let diagnostic = Diagnostic::from_toml(self.origin, self.text, err, hints);
        self.errors.push(diagnostic);
    }

    pub(super) fn into_error(mut self) -> ConfigError {
        self.errors.sort_by_key(|d| (d.line, d.column));
        ConfigError::Invalid {
            errors: self.errors,
        }
    }
}

pub(super) fn spanned<T>(value: &Option<Spanned<T>>) -> Option<Range<usize>> {
    value.as_ref().map(Spanned::span)
}

/// Reports the keys of an entry that belong to another `kind` of entry.
pub(super) fn foreign_keys(
    report: &mut Diagnostics<'_>,
    what: &str,
    allowed: &[&str],
    present: &[(&str, Option<Range<usize>>)],
) {
    for (key, span) in present {
        if let Some(span) = span
            && !allowed.contains(key)
        {
            report.error(
                span.clone(),
                format!("`{key}` is not a key of {what}"),
                Some(format!("{what} take: kind, {}", allowed.join(", "))),
            );
        }
    }
}

/// The keys of `kind` in a `(kind, keys)` table.
pub(super) fn keys_of(
    table: &[(&str, &'static [&'static str])],
    kind: &str,
) -> &'static [&'static str] {
    table
        .iter()
        .find_map(|(k, keys)| (*k == kind).then_some(*keys))
        .unwrap_or_default()
}
