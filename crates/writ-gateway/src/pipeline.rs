//! The request pipeline: what Writ does with one JSON-RPC request once the front door has
//! accepted it (framing, origin, session or per-request version already checked).
//!
//! ```text
//! request ──▶ (front door: authenticate — the writ, its DPoP proof, its task's state)
//!         ──▶ route (method → list | tool | prompt | resource | local)
//!         ──▶ resolve target (exposed name → server, upstream name)
//!         ──▶ task check (the tool is within the task's tools; one call of its budget)
//!         ──▶ forward (Writ's own upstream session, id and progress token)
//!         ──▶ shape result for the agent's revision ──▶ agent
//! ```
//! `tools/list` shows only the tools the caller's task covers. Policy, approval and audit
//! stages are inserted between the task check and forward as they land; each is one
//! function called from `handle`.

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use writ_mcp::jsonrpc::{self, Request};
use writ_mcp::revision::ProtocolVersion;
use writ_mcp::upstream::{ProgressRoute, Upstream};

use crate::Gateway;
use crate::catalog::ListName;
use crate::error::GatewayError;
use crate::token::{Caller, Denied};

/// `_meta` keys of the 2026-07-28 revision that describe the agent's request to Writ; they
/// are not forwarded to upstreams, which speak an earlier revision.
const PER_REQUEST_META: &[&str] = &[
    "io.modelcontextprotocol/protocolVersion",
    "io.modelcontextprotocol/clientInfo",
    "io.modelcontextprotocol/clientCapabilities",
    "io.modelcontextprotocol/logLevel",
];

/// Handles one request and returns its raw result.
pub async fn handle(
    gateway: &Gateway,
    request: &Request,
    version: ProtocolVersion,
    progress: Option<ProgressRoute>,
    caller: Option<&Caller>,
) -> Result<Box<RawValue>, GatewayError> {
    let result = match request.method.as_str() {
        "ping" => Ok(jsonrpc::to_raw(&serde_json::json!({}))),
        "server/discover" if version.is_stateless() => {
            Ok(jsonrpc::to_raw(&gateway.discover_result()))
        }
        "tools/list" => list(gateway, request, ListName::Tools, version, caller),
        "prompts/list" => list(gateway, request, ListName::Prompts, version, None),
        "resources/list" => list(gateway, request, ListName::Resources, version, None),
        "resources/templates/list" => {
            list(gateway, request, ListName::ResourceTemplates, version, None)
        }
        "tools/call" => call_tool(gateway, request, progress, caller).await,
        "prompts/get" => get_prompt(gateway, request).await,
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            resource(gateway, request, version).await
        }
        "completion/complete" => complete(gateway, request, version).await,
        "logging/setLevel" => set_level(gateway, request).await,
        other => Err(GatewayError::method_not_found(other)),
    }?;
    Ok(if version.is_stateless() {
        stateless_result(&request.method, result)
    } else {
        result
    })
}

fn params(request: &Request) -> Result<Map<String, Value>, GatewayError> {
    match &request.params {
        None => Ok(Map::new()),
        Some(raw) => serde_json::from_str(raw.get())
            .map_err(|e| GatewayError::invalid_params(format!("`params`: {e}"))),
    }
}

/// The params an upstream receives: the agent's, without the per-request `_meta` keys.
fn upstream_params(mut params: Map<String, Value>) -> Map<String, Value> {
    if let Some(Value::Object(meta)) = params.get_mut("_meta") {
        for key in PER_REQUEST_META {
            meta.remove(*key);
        }
    }
    params
}

fn string_param<'p>(params: &'p Map<String, Value>, key: &str) -> Result<&'p str, GatewayError> {
    match params.get(key) {
        Some(Value::String(value)) => Ok(value),
        Some(_) => Err(GatewayError::invalid_params(format!(
            "`params.{key}` must be a string"
        ))),
        None => Err(GatewayError::invalid_params(format!(
            "`params.{key}` is missing"
        ))),
    }
}

fn list(
    gateway: &Gateway,
    request: &Request,
    list: ListName,
    version: ProtocolVersion,
    caller: Option<&Caller>,
) -> Result<Box<RawValue>, GatewayError> {
    let params = params(request)?;
    let cursor = match params.get("cursor") {
        None | Some(Value::Null) => None,
        Some(Value::String(cursor)) => Some(cursor.as_str()),
        Some(_) => {
            return Err(GatewayError::invalid_params(
                "`params.cursor` must be a string",
            ));
        }
    };
    let (items, next) = gateway
        .catalog
        .page(list, cursor, gateway.config.page_size)
        .map_err(GatewayError::invalid_params)?;
    // Built as text around the stored raw items: listing never re-encodes a tool definition.
    let mut out =
        String::with_capacity(64 + items.iter().map(|i| i.get().len() + 1).sum::<usize>());
    out.push_str("{\"");
    out.push_str(list.result_key());
    out.push_str("\":[");
    // A page may come out shorter than the page size once filtered; its cursor still
    // leads on, so the agent sees every tool its task covers.
    let mut first = true;
    for item in items
        .iter()
        .filter(|item| within_task(gateway, caller, item))
    {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(item.get());
    }
    out.push(']');
    if let Some(next) = next {
        out.push_str(",\"nextCursor\":");
        out.push_str(&jsonrpc::to_raw(&next).to_string());
    }
    if version.is_stateless() {
        // What an agent may see will depend on who it is: never cache across agents.
        out.push_str(",\"ttlMs\":0,\"cacheScope\":\"private\"");
    }
    out.push('}');
    RawValue::from_string(out).map_err(|e| GatewayError::Internal(format!("list result: {e}")))
}

/// True when a listed tool is within the caller's task (always, without authentication).
fn within_task(gateway: &Gateway, caller: Option<&Caller>, item: &RawValue) -> bool {
    #[derive(serde::Deserialize)]
    struct Named<'a> {
        #[serde(borrow)]
        name: std::borrow::Cow<'a, str>,
    }
    let Some(caller) = caller else {
        return true;
    };
    let Ok(named) = serde_json::from_str::<Named<'_>>(item.get()) else {
        return false;
    };
    gateway
        .catalog
        .resolve(&named.name)
        .and_then(|(index, tool)| Some((gateway.upstreams.get(index)?, tool)))
        .is_some_and(|(upstream, tool)| {
            caller
                .task
                .grant
                .allows_tool(upstream.name().as_str(), tool)
        })
}

/// The task stage: the tool must be one the task declared, and the task must have a call
/// left in its budget. Out of scope is refused before the budget is touched.
fn check_task(
    gateway: &Gateway,
    caller: Option<&Caller>,
    upstream: &Upstream,
    tool: &str,
    exposed: &str,
) -> Result<(), GatewayError> {
    let (Some(caller), Some(tokens)) = (caller, &gateway.tokens) else {
        return Ok(());
    };
    if !caller
        .task
        .grant
        .allows_tool(upstream.name().as_str(), tool)
    {
        return Err(GatewayError::Denied(Denied::InsufficientScope(format!(
            "tool `{exposed}` is outside task `{}` (its tools: {})",
            caller.task.task.id,
            caller.task.task.tools.join(", ")
        ))));
    }
    tokens.count_call(caller).map_err(GatewayError::Denied)
}

async fn call_tool(
    gateway: &Gateway,
    request: &Request,
    progress: Option<ProgressRoute>,
    caller: Option<&Caller>,
) -> Result<Box<RawValue>, GatewayError> {
    let mut params = params(request)?;
    let exposed = string_param(&params, "name")?.to_owned();
    if let Some(arguments) = params.get("arguments")
        && !arguments.is_object()
        && !arguments.is_null()
    {
        return Err(GatewayError::invalid_params(
            "`params.arguments` must be an object",
        ));
    }
    let (upstream, tool) = resolve_tool(gateway, &exposed)?;
    check_task(gateway, caller, &upstream, &tool, &exposed)?;
    params.insert("name".into(), Value::String(tool));
    Ok(upstream
        .call("tools/call", Some(upstream_params(params)), progress)
        .await?)
}

/// The upstream and its own name for an exposed tool; unknown tools never reach a server.
fn resolve_tool(gateway: &Gateway, exposed: &str) -> Result<(Upstream, String), GatewayError> {
    let unknown = || GatewayError::invalid_params(format!("unknown tool `{exposed}`"));
    if !gateway.catalog.has_tool(exposed) {
        return Err(unknown());
    }
    let (index, tool) = gateway.catalog.resolve(exposed).ok_or_else(unknown)?;
    let upstream = gateway.upstreams.get(index).cloned().ok_or_else(unknown)?;
    Ok((upstream, tool.to_owned()))
}

async fn get_prompt(gateway: &Gateway, request: &Request) -> Result<Box<RawValue>, GatewayError> {
    let mut params = params(request)?;
    let exposed = string_param(&params, "name")?.to_owned();
    let (index, prompt) = gateway
        .catalog
        .resolve(&exposed)
        .ok_or_else(|| GatewayError::invalid_params(format!("unknown prompt `{exposed}`")))?;
    let upstream = gateway
        .upstreams
        .get(index)
        .ok_or_else(|| GatewayError::invalid_params(format!("unknown prompt `{exposed}`")))?;
    params.insert("name".into(), Value::String(prompt.to_owned()));
    Ok(upstream
        .call("prompts/get", Some(upstream_params(params)), None)
        .await?)
}

async fn resource(
    gateway: &Gateway,
    request: &Request,
    version: ProtocolVersion,
) -> Result<Box<RawValue>, GatewayError> {
    let params = params(request)?;
    let uri = string_param(&params, "uri")?;
    let upstream = resource_upstream(gateway, uri, version)?;
    Ok(upstream
        .call(&request.method, Some(upstream_params(params)), None)
        .await?)
}

fn resource_upstream<'g>(
    gateway: &'g Gateway,
    uri: &str,
    version: ProtocolVersion,
) -> Result<&'g Upstream, GatewayError> {
    let not_found = if version.is_stateless() {
        jsonrpc::code::INVALID_PARAMS
    } else {
        crate::error::mcp_code::RESOURCE_NOT_FOUND_BEFORE_2026
    };
    gateway
        .catalog
        .resource_server(uri)
        .and_then(|index| gateway.upstreams.get(index))
        .ok_or_else(|| {
            GatewayError::client(
                http::StatusCode::OK,
                not_found,
                format!("resource `{uri}` is not served by any server"),
            )
        })
}

async fn complete(
    gateway: &Gateway,
    request: &Request,
    version: ProtocolVersion,
) -> Result<Box<RawValue>, GatewayError> {
    let mut params = params(request)?;
    let reference = params
        .get_mut("ref")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| GatewayError::invalid_params("`params.ref` is missing"))?;
    let upstream = match reference.get("type").and_then(Value::as_str) {
        Some("ref/prompt") => {
            let exposed = reference
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let (index, prompt) = gateway.catalog.resolve(&exposed).ok_or_else(|| {
                GatewayError::invalid_params(format!("unknown prompt `{exposed}`"))
            })?;
            reference.insert("name".into(), Value::String(prompt.to_owned()));
            gateway.upstreams.get(index).ok_or_else(|| {
                GatewayError::invalid_params(format!("unknown prompt `{exposed}`"))
            })?
        }
        Some("ref/resource") => resource_upstream(
            gateway,
            reference
                .get("uri")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            version,
        )?,
        _ => {
            return Err(GatewayError::invalid_params(
                "`params.ref.type` must be \"ref/prompt\" or \"ref/resource\"",
            ));
        }
    };
    Ok(upstream
        .call("completion/complete", Some(upstream_params(params)), None)
        .await?)
}

/// Sets the log level on every upstream that offers logging.
async fn set_level(gateway: &Gateway, request: &Request) -> Result<Box<RawValue>, GatewayError> {
    let params = upstream_params(params(request)?);
    string_param(&params, "level")?;
    for upstream in &gateway.upstreams {
        if upstream.info().is_some_and(|info| info.has("logging")) {
            upstream
                .call("logging/setLevel", Some(params.clone()), None)
                .await?;
        }
    }
    Ok(jsonrpc::to_raw(&serde_json::json!({})))
}

/// Shapes an upstream's session-era result for 2026-07-28: every result carries
/// `resultType`, and `resources/read` is cacheable, so it carries `ttlMs` and `cacheScope`
/// (private: what an agent may read will depend on who it is). The fields are spliced
/// into the raw text; the result is not re-encoded.
fn stateless_result(method: &str, result: Box<RawValue>) -> Box<RawValue> {
    let text = result.get();
    let Some(rest) = text.trim_start().strip_prefix('{') else {
        return result;
    };
    // Upstreams speak session-era revisions and rarely send these; parse only if mentioned.
    let has = |key: &str| {
        text.contains(&format!("\"{key}\""))
            && serde_json::from_str::<Map<String, Value>>(text).is_ok_and(|m| m.contains_key(key))
    };
    let mut fields = Vec::new();
    if !has("resultType") {
        fields.push(r#""resultType":"complete""#);
    }
    if method == "resources/read" && !has("ttlMs") {
        fields.push(r#""ttlMs":0,"cacheScope":"private""#);
    }
    if fields.is_empty() {
        return result;
    }
    let body = rest.trim_start();
    let separator = if body.starts_with('}') { "" } else { "," };
    RawValue::from_string(format!("{{{}{separator}{body}", fields.join(","))).unwrap_or(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stateless_results_gain_their_fields_once() {
        let raw = |s: &str| RawValue::from_string(s.to_owned()).unwrap();
        let shape = |method: &str, text: &str| stateless_result(method, raw(text)).get().to_owned();
        assert_eq!(shape("tools/list", "{}"), r#"{"resultType":"complete"}"#);
        assert_eq!(
            shape("tools/call", r#"{"a":1}"#),
            r#"{"resultType":"complete","a":1}"#
        );
        assert_eq!(
            shape("tools/call", r#"{"resultType":"input_required"}"#),
            r#"{"resultType":"input_required"}"#
        );
        assert_eq!(
            shape("resources/read", r#"{"contents":[]}"#),
            r#"{"resultType":"complete","ttlMs":0,"cacheScope":"private","contents":[]}"#
        );
    }

    #[test]
    fn per_request_meta_is_not_forwarded() {
        let params: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "_meta": { "io.modelcontextprotocol/protocolVersion": "2026-07-28", "progressToken": 1 }
        }))
        .unwrap();
        let forwarded = upstream_params(params);
        assert_eq!(
            forwarded["_meta"],
            serde_json::json!({ "progressToken": 1 })
        );
    }
}
