//! Every error an agent can receive, mapped to HTTP status and JSON-RPC error in one place.
//!
//! Each error says whose fault it is: the agent's request, the upstream server, or Writ
//! itself. Internal details go to the log, never to the agent.

use axum::http::StatusCode;
use serde_json::Value;
use serde_json::value::RawValue;
use writ_mcp::jsonrpc::{self, code};
use writ_mcp::upstream::UpstreamError;

use crate::token::Denied;

/// MCP error codes from the 2026-07-28 schema.
pub mod mcp_code {
    pub const HEADER_MISMATCH: i64 = -32020;
    pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
    /// Resource not found up to 2025-11-25; 2026-07-28 uses `-32602` and forbids this code.
    pub const RESOURCE_NOT_FOUND_BEFORE_2026: i64 = -32002;
}

/// Writ's own codes for refusals of the token service and of policy, outside the JSON-RPC
/// reserved range.
pub mod writ_code {
    /// No valid writ, or its task is no longer active (HTTP 401).
    pub const NOT_AUTHENTICATED: i64 = -31010;
    /// The writ is valid but its task does not cover the request (HTTP 403).
    pub const OUTSIDE_TASK: i64 = -31011;
    /// Writ could not decide, so it refused (HTTP 503).
    pub const UNAVAILABLE: i64 = -31012;
    /// The task's call budget (`max_calls`) is spent (HTTP 403); the writ still lists.
    pub const BUDGET_SPENT: i64 = -31013;
    /// Policy denied the call (HTTP 200; `data` names the policies and reasons).
    pub const POLICY_DENIED: i64 = -31020;
    /// Policy requires a human's approval first (`data.approvers` names the groups).
    pub const APPROVAL_REQUIRED: i64 = -31021;
    /// The tool's definition changed since it was pinned; an operator must accept it.
    pub const TOOL_HELD: i64 = -31022;
}

impl Denied {
    /// What the agent (and the audit log) is told, in words.
    pub fn message(&self) -> String {
        match self {
            Self::NoToken => "a writ is required: begin a task at the token endpoint and send `Authorization: Bearer <writ>`".to_owned(),
            Self::InvalidToken(why) | Self::InvalidProof(why) | Self::InsufficientScope(why) => {
                why.clone()
            }
            Self::UseNonce(_) => {
                "send the DPoP proof again with the nonce in `DPoP-Nonce`".to_owned()
            }
            Self::Unavailable => "Writ could not check the writ; try again".to_owned(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The agent's request is at fault.
    #[error("{message}")]
    Client {
        status: StatusCode,
        code: i64,
        message: String,
        data: Option<Value>,
    },
    /// The upstream server, or the link to it, is at fault.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The token service did not let the request in, or its task does not cover it.
    #[error("{}", .0.message())]
    Denied(Denied),
    /// Writ is at fault; the detail is logged, the agent gets a generic message.
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    pub fn client(status: StatusCode, code: i64, message: impl Into<String>) -> Self {
        Self::Client {
            status,
            code,
            message: message.into(),
            data: None,
        }
    }

    /// A request that is well-formed JSON-RPC but wrong for MCP: answered with HTTP 200.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::client(StatusCode::OK, code::INVALID_PARAMS, message)
    }

    pub fn method_not_found(method: &str) -> Self {
        Self::client(
            StatusCode::OK,
            code::METHOD_NOT_FOUND,
            format!("method `{method}` is not supported"),
        )
    }

    pub fn header_mismatch(message: impl Into<String>) -> Self {
        Self::client(StatusCode::BAD_REQUEST, mcp_code::HEADER_MISMATCH, message)
    }

    pub fn unsupported_version(requested: &str) -> Self {
        Self::Client {
            status: StatusCode::BAD_REQUEST,
            code: mcp_code::UNSUPPORTED_PROTOCOL_VERSION,
            message: format!(
                "protocol version `{requested}` is not supported; Writ speaks {}",
                writ_mcp::revision::ProtocolVersion::supported_list()
            ),
            data: Some(serde_json::json!({
                "supported": writ_mcp::revision::ProtocolVersion::ALL.map(|v| v.as_str()),
                "requested": requested,
            })),
        }
    }

    /// The HTTP status of a response that carries only this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Client { status, .. } => *status,
            Self::Denied(Denied::InsufficientScope(_)) => StatusCode::FORBIDDEN,
            Self::Denied(Denied::Unavailable) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Denied(_) => StatusCode::UNAUTHORIZED,
            // Upstream and internal failures are JSON-RPC errors on a successful exchange.
            Self::Upstream(_) | Self::Internal(_) => StatusCode::OK,
        }
    }

    /// The JSON-RPC error response for request `id`.
    pub fn to_response(&self, id: Option<&RawValue>) -> String {
        match self {
            Self::Client {
                code,
                message,
                data,
                ..
            } => jsonrpc::error_response(id, *code, message, data.as_ref()),
            Self::Denied(denied) => {
                let code = match denied {
                    Denied::InsufficientScope(_) => writ_code::OUTSIDE_TASK,
                    Denied::Unavailable => writ_code::UNAVAILABLE,
                    _ => writ_code::NOT_AUTHENTICATED,
                };
                jsonrpc::error_response(id, code, &denied.message(), None)
            }
            Self::Upstream(UpstreamError::Rpc(error)) => jsonrpc::raw_error_response(id, error),
            Self::Upstream(err) => jsonrpc::error_response(id, err.code(), &err.to_string(), None),
            Self::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                jsonrpc::error_response(
                    id,
                    code::INTERNAL_ERROR,
                    "internal error in Writ; see the gateway log",
                    None,
                )
            }
        }
    }
}
