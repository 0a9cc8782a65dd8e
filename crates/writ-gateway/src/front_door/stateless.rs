//! The 2026-07-28 era at the front door: no session; the revision rides in `_meta` and the
//! method and name are mirrored in headers, which must match the body.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Map, Value};
use writ_mcp::jsonrpc::{Message, Request, code};
use writ_mcp::revision::ProtocolVersion;

use super::{
    Accept, METHOD_HEADER, NAME_HEADER, VERSION_META, answer, client_error, header_str, refuse,
};
use crate::Gateway;
use crate::error::GatewayError;
use crate::pipeline::{self, Admitted};

const CAPABILITIES_META: &str = "io.modelcontextprotocol/clientCapabilities";

/// The 2026-07-28 era: no session; the version rides in `_meta` and the method and name are
/// mirrored in headers, which must match the body.
pub(super) async fn post(
    gateway: &Arc<Gateway>,
    headers: &HeaderMap,
    header_version: Option<ProtocolVersion>,
    message: Message,
    accept: Accept,
    caller: Admitted,
) -> Response {
    let request = match message {
        Message::Request(request) => request,
        // Notifications and responses need no answer in this era either.
        Message::Notification(_) | Message::Response(_) => {
            return StatusCode::ACCEPTED.into_response();
        }
    };
    let id = request.id.as_raw();
    let params: Map<String, Value> = request
        .params
        .as_deref()
        .and_then(|p| serde_json::from_str(p.get()).ok())
        .unwrap_or_default();
    let meta_version = params
        .get("_meta")
        .and_then(|m| m.get(VERSION_META))
        .and_then(Value::as_str);
    // Both keys are required in every request; a missing one is invalid params (400).
    let missing = |key: &str| {
        let error = GatewayError::client(
            StatusCode::BAD_REQUEST,
            code::INVALID_PARAMS,
            format!("`params._meta` must carry `{key}`"),
        );
        refuse(&error, Some(id))
    };
    let Some(meta_version) = meta_version else {
        return missing(VERSION_META);
    };
    let has_capabilities = params
        .get("_meta")
        .and_then(|m| m.get(CAPABILITIES_META))
        .is_some_and(Value::is_object);
    if !has_capabilities {
        return missing(CAPABILITIES_META);
    }
    let Some(version) = ProtocolVersion::parse(meta_version) else {
        return refuse(&GatewayError::unsupported_version(meta_version), Some(id));
    };
    match header_version {
        None => {
            return refuse(
                &GatewayError::header_mismatch("`MCP-Protocol-Version` header is missing"),
                Some(id),
            );
        }
        Some(header) if header != version => {
            return refuse(
                &GatewayError::header_mismatch(format!(
                    "`MCP-Protocol-Version` header `{header}` does not match `_meta` version `{version}`"
                )),
                Some(id),
            );
        }
        Some(_) => {}
    }
    if !version.is_stateless() {
        return refuse(&GatewayError::unsupported_version(meta_version), Some(id));
    }
    if let Err(error) = check_mirrored_headers(headers, &request, &params) {
        return refuse(&error, Some(id));
    }
    if pipeline::lookup(&request.method, version).is_none() {
        let error = client_error(
            StatusCode::NOT_FOUND,
            code::METHOD_NOT_FOUND,
            format!("method `{}` is not supported", request.method),
        );
        return refuse(&error, Some(id));
    }
    answer(gateway.clone(), request, version, None, accept, caller).await
}

/// `Mcp-Method` must equal `method`; `Mcp-Name` must equal `params.name` or `params.uri`
/// for the methods that carry one (after Base64-sentinel decoding).
fn check_mirrored_headers(
    headers: &HeaderMap,
    request: &Request,
    params: &Map<String, Value>,
) -> Result<(), GatewayError> {
    match header_str(headers, METHOD_HEADER) {
        None => {
            return Err(GatewayError::header_mismatch(
                "`Mcp-Method` header is missing",
            ));
        }
        Some(method) if method != request.method => {
            return Err(GatewayError::header_mismatch(format!(
                "`Mcp-Method` header `{method}` does not match body method `{}`",
                request.method
            )));
        }
        Some(_) => {}
    }
    let key = match request.method.as_str() {
        "tools/call" | "prompts/get" => "name",
        "resources/read" => "uri",
        _ => return Ok(()),
    };
    let body = params.get(key).and_then(Value::as_str).unwrap_or_default();
    let Some(raw) = headers.get(NAME_HEADER) else {
        return Err(GatewayError::header_mismatch(
            "`Mcp-Name` header is missing",
        ));
    };
    let raw = raw
        .to_str()
        .map_err(|_| GatewayError::header_mismatch("`Mcp-Name` header has invalid characters"))?;
    let name = decode_sentinel(raw)
        .ok_or_else(|| GatewayError::header_mismatch("`Mcp-Name` header has a bad Base64 value"))?;
    if name != body {
        return Err(GatewayError::header_mismatch(format!(
            "`Mcp-Name` header `{name}` does not match body `{key}` `{body}`"
        )));
    }
    Ok(())
}

/// Decodes `=?base64?…?=` values; plain values pass through.
fn decode_sentinel(raw: &str) -> Option<String> {
    match raw
        .strip_prefix("=?base64?")
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(encoded) => String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .ok()?,
        )
        .ok(),
        None => Some(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_values_are_decoded() {
        assert_eq!(decode_sentinel("plain").as_deref(), Some("plain"));
        assert_eq!(
            decode_sentinel("=?base64?SGVsbG8sIOS4lueVjA==?=").as_deref(),
            Some("Hello, 世界")
        );
        assert_eq!(decode_sentinel("=?base64?!!?="), None);
    }
}
