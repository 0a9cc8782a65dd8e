//! The agent's side of the token endpoint: begin a task, end it.

use serde_json::{Value, json};
use writ_core::oauth::{GRANT_TOKEN_EXCHANGE, TOKEN_TYPE_JWT};

use crate::key::AgentKey;

/// How long an assertion made for one token request lives.
const ASSERTION_LIFETIME_SECS: i64 = 60;

/// What a task asks for.
#[derive(Debug, Clone, Default)]
pub struct TaskRequest {
    pub purpose: String,
    pub tools: Vec<String>,
    pub data_classes: Vec<String>,
    pub max_calls: Option<u64>,
    /// Seconds; clipped by Writ to its `tokens.max_ttl`.
    pub ttl: Option<u64>,
    /// Bind the writ to the agent's key with DPoP.
    pub dpop: bool,
}

impl TaskRequest {
    pub fn authorization_details(&self) -> Value {
        let mut entry = json!({
            "type": writ_core::task::MCP_TASK_TYPE,
            "purpose": self.purpose,
            "tools": self.tools,
            "data_classes": self.data_classes,
        });
        if let (Some(max), Some(map)) = (self.max_calls, entry.as_object_mut()) {
            map.insert("max_calls".into(), max.into());
        }
        json!([entry])
    }
}

/// A writ, as the token endpoint returned it.
#[derive(Debug, Clone)]
pub struct Begun {
    pub access_token: String,
    /// `Bearer` or `DPoP`.
    pub token_type: String,
    pub task: String,
    pub expires_in: i64,
    /// The whole answer.
    pub body: Value,
}

/// Begins a task at Writ's token endpoint (`base` is Writ's base URL).
pub async fn begin_task(
    http: &reqwest::Client,
    base: &str,
    key: &AgentKey,
    request: &TaskRequest,
) -> Result<Begun, String> {
    let base = base.trim_end_matches('/');
    let token_endpoint = format!("{base}/oauth/token");
    let mut form = vec![
        ("grant_type", GRANT_TOKEN_EXCHANGE.to_owned()),
        (
            "subject_token",
            key.assertion(base, ASSERTION_LIFETIME_SECS)
                .map_err(|e| e.to_string())?,
        ),
        ("subject_token_type", TOKEN_TYPE_JWT.to_owned()),
        ("resource", format!("{base}/mcp")),
        (
            "authorization_details",
            request.authorization_details().to_string(),
        ),
    ];
    if let Some(ttl) = request.ttl {
        form.push(("expires_in", ttl.to_string()));
    }
    let mut nonce: Option<String> = None;
    // One retry, when Writ asks for a DPoP nonce.
    for _ in 0..2 {
        let mut builder = http.post(&token_endpoint).form(&form);
        if request.dpop {
            let proof = key
                .dpop_proof("POST", &token_endpoint, None, nonce.as_deref())
                .map_err(|e| e.to_string())?;
            builder = builder.header("DPoP", proof);
        }
        let response = builder
            .send()
            .await
            .map_err(|e| format!("could not reach `{token_endpoint}`: {e}"))?;
        let fresh_nonce = response
            .headers()
            .get("dpop-nonce")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let status = response.status();
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("`{token_endpoint}` answered HTTP {status} without JSON: {e}"))?;
        if status.is_success() {
            let text = |k: &str| {
                body.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            return Ok(Begun {
                access_token: text("access_token"),
                token_type: text("token_type"),
                task: text("task"),
                expires_in: body.get("expires_in").and_then(Value::as_i64).unwrap_or(0),
                body,
            });
        }
        let error = body.get("error").and_then(Value::as_str).unwrap_or("error");
        if error == "use_dpop_nonce" && nonce.is_none() && fresh_nonce.is_some() {
            nonce = fresh_nonce;
            // The assertion is single-use: the retry needs a new one.
            if let Some(slot) = form.iter_mut().find(|(k, _)| *k == "subject_token") {
                slot.1 = key
                    .assertion(base, ASSERTION_LIFETIME_SECS)
                    .map_err(|e| e.to_string())?;
            }
            continue;
        }
        let description = body
            .get("error_description")
            .and_then(Value::as_str)
            .unwrap_or_default();
        return Err(format!("{error}: {description}"));
    }
    Err("Writ kept asking for a new DPoP nonce".into())
}

/// Ends the task of `token` (RFC 7009 revocation by its holder).
pub async fn end_task(http: &reqwest::Client, base: &str, token: &str) -> Result<(), String> {
    let endpoint = format!("{}/oauth/revoke", base.trim_end_matches('/'));
    let response = http
        .post(&endpoint)
        .form(&[("token", token), ("token_type_hint", "access_token")])
        .send()
        .await
        .map_err(|e| format!("could not reach `{endpoint}`: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("`{endpoint}` answered HTTP {}", response.status()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_details_name_an_mcp_task_and_its_budget() {
        let request = TaskRequest {
            purpose: "triage".into(),
            tools: vec!["notes.*".into()],
            max_calls: Some(5),
            ..TaskRequest::default()
        };
        assert_eq!(
            request.authorization_details(),
            json!([{
                "type": writ_core::task::MCP_TASK_TYPE,
                "purpose": "triage",
                "tools": ["notes.*"],
                "data_classes": [],
                "max_calls": 5,
            }])
        );
        let unlimited = TaskRequest {
            max_calls: None,
            ..request
        };
        assert!(
            unlimited.authorization_details()[0]
                .get("max_calls")
                .is_none()
        );
    }
}
