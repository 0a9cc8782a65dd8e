//! Redaction of values before they are recorded.
//!
//! Three rules, applied in this order to a JSON value (typically a call's arguments):
//!
//! 1. **Paths** (`[audit] redact`): dot-separated keys from the root, `*` for any key or
//!    array element, a number also matching that array index (`a.b`, `items.*.token`,
//!    `rows.0`). What a path reaches is replaced whole, objects and arrays included, by
//!    `"[redacted:path]"`. Keys that contain a `.` cannot be named.
//! 2. **Secrets Writ holds**: a string equal to one becomes `"[redacted:secret]"`, and so
//!    does a string containing one at least [`MIN_SECRET_LEN`] bytes long (shorter ones
//!    would match too much by chance).
//! 3. **Values that look like credentials** (on unless turned off), which become
//!    `"[redacted:credential]"`: see [`looks_like_credential`] for exactly what counts,
//!    plus any string or number under a key whose name, lowercased and without `_` and
//!    `-`, is one of [`CREDENTIAL_KEYS`] (`password`, `api_key`, `Authorization`…).
//!
//! A string that matches is replaced whole, not just the matching part. Object keys
//! are kept as they are.

use std::fmt;

use serde_json::Value;

use crate::Error;
use crate::credential::looks_like_credential;

/// What a path rule leaves in place of what it reaches.
pub const REDACTED_PATH: &str = "[redacted:path]";
/// What replaces a string that holds a secret Writ knows.
pub const REDACTED_SECRET: &str = "[redacted:secret]";
/// What replaces a value that looks like a credential.
pub const REDACTED_CREDENTIAL: &str = "[redacted:credential]";

/// Secrets at least this long are also found inside longer strings.
pub const MIN_SECRET_LEN: usize = 8;

/// Key names (lowercased, `_` and `-` removed) whose string or number values are
/// treated as credentials.
pub const CREDENTIAL_KEYS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "clientsecret",
    "token",
    "accesstoken",
    "refreshtoken",
    "idtoken",
    "sessiontoken",
    "apikey",
    "xapikey",
    "authorization",
    "proxyauthorization",
    "cookie",
    "setcookie",
    "privatekey",
    "secretaccesskey",
    "awssecretaccesskey",
];

/// What to redact. Its `Debug` shows how many secrets it holds, never them.
#[derive(Clone)]
pub struct RedactRules {
    paths: Vec<Vec<Segment>>,
    secrets: Vec<String>,
    credentials: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Any,
    Key(String),
}

impl Segment {
    fn matches_key(&self, key: &str) -> bool {
        match self {
            Segment::Any => true,
            Segment::Key(k) => k == key,
        }
    }

    fn matches_index(&self, index: usize) -> bool {
        match self {
            Segment::Any => true,
            Segment::Key(k) => k.parse::<usize>() == Ok(index),
        }
    }
}

impl fmt::Debug for RedactRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedactRules")
            .field("paths", &self.paths)
            .field("secrets", &format_args!("[{} held]", self.secrets.len()))
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl Default for RedactRules {
    fn default() -> Self {
        Self::new()
    }
}

impl RedactRules {
    /// No paths, no secrets, credential detection on.
    pub fn new() -> Self {
        RedactRules {
            paths: Vec::new(),
            secrets: Vec::new(),
            credentials: true,
        }
    }

    /// Also redacts what `pattern` reaches (`a.b`, `items.*.token`).
    pub fn with_path(mut self, pattern: &str) -> Result<Self, Error> {
        let segments: Vec<Segment> = pattern
            .split('.')
            .map(|segment| match segment {
                "*" => Segment::Any,
                key => Segment::Key(key.to_owned()),
            })
            .collect();
        if segments
            .iter()
            .any(|s| matches!(s, Segment::Key(k) if k.is_empty()))
        {
            return Err(Error::InvalidPath(pattern.to_owned()));
        }
        self.paths.push(segments);
        Ok(self)
    }

    /// Also redacts strings that are, or contain, `secret`. An empty secret is ignored.
    pub fn with_secret(mut self, secret: impl Into<String>) -> Self {
        let secret = secret.into();
        if !secret.is_empty() {
            self.secrets.push(secret);
        }
        self
    }

    /// Turns off redaction of values that look like credentials.
    pub fn without_credential_detection(mut self) -> Self {
        self.credentials = false;
        self
    }
}

/// Redacts `value` in place by `rules` (see the module docs).
pub fn redact(value: &mut Value, rules: &RedactRules) {
    for path in &rules.paths {
        redact_path(value, path);
    }
    redact_values(value, rules, false);
}

fn redact_path(value: &mut Value, path: &[Segment]) {
    let Some((segment, rest)) = path.split_first() else {
        *value = Value::String(REDACTED_PATH.to_owned());
        return;
    };
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if segment.matches_key(key) {
                    redact_path(child, rest);
                }
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter_mut().enumerate() {
                if segment.matches_index(index) {
                    redact_path(child, rest);
                }
            }
        }
        _ => {}
    }
}

fn redact_values(value: &mut Value, rules: &RedactRules, under_credential_key: bool) {
    match value {
        Value::String(s) => {
            if s == REDACTED_PATH {
                return;
            }
            if holds_secret(s, &rules.secrets) {
                *value = Value::String(REDACTED_SECRET.to_owned());
            } else if rules.credentials && (under_credential_key || looks_like_credential(s)) {
                *value = Value::String(REDACTED_CREDENTIAL.to_owned());
            }
        }
        Value::Number(_) if under_credential_key && rules.credentials => {
            *value = Value::String(REDACTED_CREDENTIAL.to_owned());
        }
        Value::Array(items) => {
            for item in items {
                redact_values(item, rules, false);
            }
        }
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                redact_values(child, rules, is_credential_key(key));
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn holds_secret(s: &str, secrets: &[String]) -> bool {
    secrets.iter().any(|secret| {
        s == secret || (secret.len() >= MIN_SECRET_LEN && s.contains(secret.as_str()))
    })
}

fn is_credential_key(key: &str) -> bool {
    if key.len() > 32 {
        return false;
    }
    let normalised: String = key
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    CREDENTIAL_KEYS.contains(&normalised.as_str())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "tests")]
    use super::*;
    use serde_json::json;

    fn redacted(mut value: Value, rules: &RedactRules) -> Value {
        redact(&mut value, rules);
        value
    }

    #[test]
    fn a_path_redacts_what_it_reaches_whole() {
        let rules = RedactRules::new().with_path("a.b").unwrap();
        let value = redacted(json!({"a": {"b": {"deep": 1}, "c": 2}, "b": 3}), &rules);
        assert_eq!(
            value,
            json!({"a": {"b": "[redacted:path]", "c": 2}, "b": 3})
        );
    }

    #[test]
    fn a_wildcard_path_reaches_every_element_and_key() {
        let rules = RedactRules::new().with_path("items.*.note").unwrap();
        let value = redacted(
            json!({"items": [{"note": "x", "id": 1}, {"id": 2}, {"note": ["y"]}],
                   "other": {"note": "kept"}}),
            &rules,
        );
        assert_eq!(
            value,
            json!({"items": [{"note": "[redacted:path]", "id": 1}, {"id": 2},
                             {"note": "[redacted:path]"}],
                   "other": {"note": "kept"}})
        );
        let rules = RedactRules::new().with_path("m.*").unwrap();
        assert_eq!(
            redacted(json!({"m": {"x": 1, "y": 2}}), &rules),
            json!({"m": {"x": "[redacted:path]", "y": "[redacted:path]"}})
        );
    }

    #[test]
    fn a_numeric_path_segment_reaches_an_array_index() {
        let rules = RedactRules::new().with_path("rows.1").unwrap();
        assert_eq!(
            redacted(json!({"rows": ["a", "b", "c"]}), &rules),
            json!({"rows": ["a", "[redacted:path]", "c"]})
        );
    }

    #[test]
    fn a_path_with_an_empty_segment_is_refused_by_name() {
        for pattern in ["", "a..b", ".a", "a."] {
            let err = RedactRules::new().with_path(pattern).unwrap_err();
            assert!(err.to_string().contains(&format!("`{pattern}`")), "{err}");
        }
    }

    #[test]
    fn a_held_secret_is_redacted_exactly_and_inside_longer_strings() {
        let rules = RedactRules::new()
            .without_credential_detection()
            .with_secret("s3cr3t-value")
            .with_secret("abc")
            .with_secret("");
        let value = redacted(
            json!({"a": "s3cr3t-value", "b": "Bearer-ish s3cr3t-value!", "c": "abc",
                   "d": "abcdef", "e": ["s3cr3t-value"], "f": "nothing"}),
            &rules,
        );
        assert_eq!(
            value,
            json!({"a": "[redacted:secret]", "b": "[redacted:secret]", "c": "[redacted:secret]",
                   "d": "abcdef", "e": ["[redacted:secret]"], "f": "nothing"})
        );
    }

    #[test]
    fn debug_never_shows_held_secrets() {
        let rules = RedactRules::new().with_secret("hunter2-hunter2");
        let debug = format!("{rules:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("1 held"), "{debug}");
    }

    #[test]
    fn values_under_credential_keys_are_redacted() {
        let value = redacted(
            json!({"password": "hunter2", "API-Key": 12345, "Authorization": "x",
                   "client_secret": "y", "token": {"nested": "kept"}, "token_count": 5,
                   "tokens": "kept", "pwd": "/home"}),
            &RedactRules::new(),
        );
        assert_eq!(
            value,
            json!({"password": "[redacted:credential]", "API-Key": "[redacted:credential]",
                   "Authorization": "[redacted:credential]",
                   "client_secret": "[redacted:credential]", "token": {"nested": "kept"},
                   "token_count": 5, "tokens": "kept", "pwd": "/home"})
        );
    }

    #[test]
    fn credential_detection_can_be_turned_off() {
        let value = json!({"password": "hunter2", "t": "AKIAIOSFODNN7EXAMPLE"});
        assert_eq!(
            redacted(
                value.clone(),
                &RedactRules::new().without_credential_detection()
            ),
            value
        );
        assert_eq!(
            redacted(value, &RedactRules::default()),
            json!({"password": "[redacted:credential]", "t": "[redacted:credential]"})
        );
    }

    #[test]
    fn numbers_booleans_and_keys_are_left_alone() {
        let value = json!({"AKIAIOSFODNN7EXAMPLE": 1, "n": 12345678901234567u64, "b": true});
        assert_eq!(redacted(value.clone(), &RedactRules::new()), value);
    }
}
