//! The audit events the gateway records outside the call path, and what it redacts.
//! Which fields each kind carries is written down in ARCHITECTURE.md ("Audit events").

use writ_audit::{Event, RedactRules, kinds};
use writ_core::config::{Config, ServerConfig, Transport, ValueSource};
use writ_policy::Engine;

use crate::StartError;

/// An event of one of the kinds in [`writ_audit::kinds`].
pub(crate) fn event(kind: &'static str) -> Event {
    Event::new(kind).unwrap_or_else(|err| {
        unreachable!("{err}: every kind in `writ_audit::kinds` is checked valid by its tests")
    })
}

/// `config.loaded`: which configuration this gateway runs with (its text's hash).
pub(crate) fn config_loaded(config: &Config) -> Event {
    event(kinds::CONFIG_LOADED)
        .with_field("hash", config.digest.clone())
        .with_field(
            "servers",
            config
                .servers
                .iter()
                .map(|s| s.name.to_string())
                .collect::<Vec<_>>(),
        )
        .with_field(
            "policy_mode",
            format!("{:?}", config.policy.mode).to_lowercase(),
        )
        .with_field("environment", config.policy.environment.clone())
}

/// `policy.loaded`: the set now in force (its hash), loaded at `source` (`start`, `reload`).
pub(crate) fn policy_loaded(engine: &Engine, source: &str) -> Event {
    event(kinds::POLICY_LOADED)
        .with_field("hash", engine.hash().to_owned())
        .with_field("policies", engine.len())
        .with_field("files", engine.files())
        .with_field("source", source.to_owned())
}

/// The names of the credential references a server is reached with — the environment
/// variables its headers or environment come from — never their values. `None` when it
/// is reached with none.
pub(crate) fn credential_references(server: &ServerConfig) -> Option<String> {
    let sources: Vec<(&String, &ValueSource)> = match &server.transport {
        Transport::Http(http) => http.headers.iter().map(|(k, v)| (k, v)).collect(),
        Transport::Stdio(stdio) => stdio.env.iter().map(|(k, v)| (k, v)).collect(),
    };
    let names: Vec<String> = sources
        .into_iter()
        .filter_map(|(key, source)| match source {
            ValueSource::Env(var) => Some(format!("{key} from env {var}")),
            ValueSource::Literal(_) => None,
        })
        .collect();
    (!names.is_empty()).then(|| names.join(", "))
}

/// What recorded arguments never show: the `[audit] redact` paths, every secret Writ
/// holds (the values behind the servers' credential references and the admin token),
/// and values that look like credentials.
pub(crate) fn redact_rules(config: &Config) -> Result<RedactRules, StartError> {
    let mut rules = RedactRules::new();
    for pattern in &config.audit.redact {
        rules = rules
            .with_path(pattern)
            .map_err(|e| StartError::Redact(e.to_string()))?;
    }
    let held = config
        .servers
        .iter()
        .flat_map(|server| match &server.transport {
            Transport::Http(http) => http.headers.iter().map(|(_, v)| v).collect::<Vec<_>>(),
            Transport::Stdio(stdio) => stdio.env.iter().map(|(_, v)| v).collect(),
        })
        .chain(config.admin.token.iter())
        .filter(|source| matches!(source, ValueSource::Env(_)));
    for source in held {
        // A reference that does not resolve holds no secret to hide; the server that
        // needs it reports the missing variable.
        if let Ok(secret) = source.resolve() {
            rules = rules.with_secret(secret);
        }
    }
    Ok(rules)
}
