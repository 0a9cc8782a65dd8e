//! `[audit]`: what the audit log keeps, for how long, and how often it is checkpointed.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{At, ConfigError};

/// A checkpoint is signed at least this often, counted in records…
const DEFAULT_CHECKPOINT_EVERY: usize = 1_000;
/// …and at most this long after the last record it does not yet cover.
const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(10);

/// The audit log's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// Argument paths whose values are never recorded (`password`, `items.*.token`),
    /// besides the secrets Writ holds and values that look like credentials, which are
    /// always redacted.
    pub redact: Vec<String>,
    /// Records older than this are pruned, leaving an anchor so the rest still verifies.
    /// `None` (the default) keeps every record: deleting audit history is the operator's
    /// decision, not Writ's.
    pub retain: Option<Duration>,
    /// A signed checkpoint after this many records…
    pub checkpoint_every: usize,
    /// …or this long after a record no checkpoint covers yet, whichever comes first.
    pub checkpoint_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            redact: Vec::new(),
            retain: None,
            checkpoint_every: DEFAULT_CHECKPOINT_EVERY,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    #[serde(default)]
    redact: Vec<Spanned<String>>,
    retain: Option<Spanned<String>>,
    checkpoint_every: Option<Spanned<usize>>,
    checkpoint_interval: Option<Spanned<String>>,
}

impl RawAudit {
    pub(super) fn into_config(self, at: &At<'_>) -> Result<AuditConfig, ConfigError> {
        let mut redact = Vec::with_capacity(self.redact.len());
        for pattern in self.redact {
            if pattern.get_ref().split('.').any(str::is_empty) {
                return Err(at.error(
                    &pattern,
                    format!(
                        "`audit.redact` pattern `{}` is not a path; write it like \"password\" or \"items.*.token\"",
                        pattern.get_ref()
                    ),
                ));
            }
            redact.push(pattern.into_inner());
        }
        let retain = match &self.retain {
            None => None,
            Some(value) => Some(at.duration("audit.retain", Some(value), Duration::ZERO)?),
        };
        Ok(AuditConfig {
            redact,
            retain,
            checkpoint_every: at.positive(
                "audit.checkpoint_every",
                self.checkpoint_every.as_ref(),
                DEFAULT_CHECKPOINT_EVERY,
            )?,
            checkpoint_interval: at.duration(
                "audit.checkpoint_interval",
                self.checkpoint_interval.as_ref(),
                DEFAULT_CHECKPOINT_INTERVAL,
            )?,
        })
    }
}
