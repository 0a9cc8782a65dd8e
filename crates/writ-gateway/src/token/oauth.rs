//! The OAuth side of the token endpoints: an error response (RFC 6749 section 5.2 and its
//! extensions) and the form parameters a request carries.

use std::collections::HashMap;

use axum::http::StatusCode;

/// An OAuth error response (RFC 6749 section 5.2 and its extensions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
    /// A nonce to send in `DPoP-Nonce` (with `use_dpop_nonce`).
    pub dpop_nonce: Option<String>,
}

impl OAuthError {
    pub(super) fn new(error: &'static str, description: impl Into<String>) -> Self {
        let status = match error {
            "invalid_client" => StatusCode::UNAUTHORIZED,
            "server_error" => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::BAD_REQUEST,
        };
        Self {
            status,
            error,
            description: description.into(),
            dpop_nonce: None,
        }
    }

    pub fn invalid_request(d: impl Into<String>) -> Self {
        Self::new("invalid_request", d)
    }
    pub(super) fn invalid_grant(d: impl Into<String>) -> Self {
        Self::new("invalid_grant", d)
    }
    pub(super) fn invalid_details(d: impl Into<String>) -> Self {
        Self::new("invalid_authorization_details", d)
    }
    pub(super) fn server_error(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(%err, "{context}");
        Self::new("server_error", format!("{context}; see the gateway log"))
    }
}

/// Form parameters, each given at most once (RFC 6749 section 3.2).
#[derive(Debug)]
pub struct Form(HashMap<String, String>);

impl Form {
    pub fn parse(pairs: Vec<(String, String)>) -> Result<Self, OAuthError> {
        let mut map = HashMap::with_capacity(pairs.len());
        for (key, value) in pairs {
            if map.insert(key.clone(), value).is_some() {
                return Err(OAuthError::invalid_request(format!(
                    "parameter `{key}` is given more than once"
                )));
            }
        }
        Ok(Self(map))
    }

    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub(super) fn require(&self, key: &str) -> Result<&str, OAuthError> {
        self.get(key)
            .ok_or_else(|| OAuthError::invalid_request(format!("parameter `{key}` is required")))
    }
}
