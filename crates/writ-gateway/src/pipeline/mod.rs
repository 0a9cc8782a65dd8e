//! The request pipeline: what Writ does with one JSON-RPC request once the front door
//! has accepted it (origin, framing, size, protocol version, session) and authenticated
//! it (the writ, its DPoP proof).
//!
//! ```text
//! request ──▶ method table (methods.rs: which path this method takes, in this era)
//!         ──▶ params, parsed once
//!         ──▶ resolve target (target.rs: which tool, prompt or resource, on which
//!             server; nothing no server offers goes further)
//!         ──▶ task check (stages.rs: the task still active, the target within its
//!             patterns and data classes, a call of its budget reserved)
//!         ──▶ pin check (a drifted tool is held)
//!         ──▶ policy (Cedar `call`, `get_prompt` or `read_resource`)
//!         ──▶ approval (passes through until step-up approval is built)
//!         ──▶ record decision (record.rs: committed before anything else happens; a
//!             refusal is answered after it, and a deviation revokes the task after it)
//!         ──▶ credentials (which credential references the server is reached with)
//!         ──▶ forward (Writ's own upstream session, id and progress token)
//!         ──▶ shape the answer for the agent's revision
//!         ──▶ record outcome
//! ```
//! Lists take their own path (lists.rs): every item is screened by the same task and
//! pin checks and by policy's `discover*` actions, and only what passes is shown. The
//! deciding stages return values (`decision.rs`), and one place turns a refusal into its
//! HTTP status, JSON-RPC error and audit record.

mod decision;
mod lists;
mod methods;
mod record;
mod stages;
mod target;

use std::time::Instant;

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use writ_mcp::jsonrpc::{self, Request};
use writ_mcp::revision::ProtocolVersion;
use writ_mcp::upstream::ProgressRoute;

pub(crate) use methods::{Method, lookup};

use crate::error::GatewayError;
use crate::sessions::Session;
use crate::token::Caller;
use crate::{Gateway, Mode};
use decision::Allowed;
use methods::{Local, Use};
use stages::Guarded;

/// `_meta` keys of the 2026-07-28 revision that describe the agent's request to Writ; they
/// are not forwarded to upstreams, which speak an earlier revision.
const PER_REQUEST_META: &[&str] = &[
    "io.modelcontextprotocol/protocolVersion",
    "io.modelcontextprotocol/clientInfo",
    "io.modelcontextprotocol/clientCapabilities",
    "io.modelcontextprotocol/logLevel",
];

/// Who a request comes from, as the front door admitted it.
#[derive(Debug, Clone)]
pub enum Admitted {
    /// Authentication is off: anyone.
    Anyone,
    /// The agent whose writ (and DPoP proof) the front door checked.
    Agent(Caller),
}

impl Admitted {
    pub fn caller(&self) -> Option<&Caller> {
        match self {
            Self::Anyone => None,
            Self::Agent(caller) => Some(caller),
        }
    }
}

/// One request as the pipeline takes it.
#[derive(Debug)]
pub struct Incoming<'r> {
    pub request: &'r Request,
    pub version: ProtocolVersion,
    /// Where progress notifications go, when the agent asked for them and takes a stream.
    pub progress: Option<ProgressRoute>,
    /// The agent's session (session era).
    pub session: Option<&'r Session>,
    pub admitted: &'r Admitted,
}

/// Handles one request and returns its raw result.
pub async fn handle(
    gateway: &Gateway,
    incoming: Incoming<'_>,
) -> Result<Box<RawValue>, GatewayError> {
    let request = incoming.request;
    let version = incoming.version;
    let method = lookup(&request.method, version)
        .ok_or_else(|| GatewayError::method_not_found(&request.method))?;
    let params = params(request)?;
    let guarded = guarded(gateway, incoming.admitted)?;
    let result = match method {
        Method::Local(Local::Ping) => Ok(jsonrpc::to_raw(&serde_json::json!({}))),
        Method::Local(Local::Discover) => Ok(jsonrpc::to_raw(&gateway.discover_result())),
        Method::Local(Local::SetLogLevel) => set_level(&params, incoming.session),
        // Nothing was forwarded for the subscription, so nothing is to undo upstream.
        Method::Local(Local::Unsubscribe) => Ok(jsonrpc::to_raw(&serde_json::json!({}))),
        Method::List(list) => lists::answer(gateway, guarded, list, &params, version).await,
        Method::Use(use_) => {
            use_target(gateway, guarded, use_, params, incoming.progress, version).await
        }
    }?;
    Ok(shape(&request.method, version, result))
}

/// A tool call, a prompt get, a resource read or a completion: every stage, in order.
async fn use_target(
    gateway: &Gateway,
    guarded: Option<Guarded<'_>>,
    use_: Use,
    params: Map<String, Value>,
    progress: Option<ProgressRoute>,
    version: ProtocolVersion,
) -> Result<Box<RawValue>, GatewayError> {
    let arguments = params.get("arguments").filter(|a| !a.is_null());
    if arguments.is_some_and(|a| !a.is_object()) {
        return Err(GatewayError::invalid_params(
            "`params.arguments` must be an object",
        ));
    }
    let Some(guarded) = guarded else {
        // Authentication off: nothing to decide on, nothing recorded.
        if use_.answered_by_writ() {
            return Ok(jsonrpc::to_raw(&serde_json::json!({})));
        }
        let target = target::resolve(gateway, use_, &params, version)?;
        return stages::forward(gateway, &target, params, progress).await;
    };
    let target = match target::resolve(gateway, use_, &params, version) {
        Ok(target) => target,
        Err(error) => {
            record::unresolved(guarded, use_, &params, &error).await;
            return Err(error);
        }
    };
    let call = record::new_call_id();
    let decided = stages::task_check(guarded, &target).and_then(|budget| {
        stages::pin_check(&target)?;
        let calls_before = budget
            .as_ref()
            .map_or_else(|| guarded.caller.task.calls(), |b| b.calls_before());
        let policies = stages::policy(guarded, &target, arguments, calls_before)?;
        stages::approval(Ok(Allowed { policies, budget }))
    });
    let allowed = match decided {
        Err(refusal) if refusal.is_deviation() => {
            let event =
                record::decision_event(guarded, &target, &call, arguments, &Err(refusal.clone()));
            return Err(stages::deviate(guarded, &target, &call, event, refusal).await);
        }
        decided => match record::decision(guarded, &target, &call, arguments, decided).await {
            Ok(allowed) => allowed,
            Err(refusal) => return Err(stages::refuse(&target, refusal)),
        },
    };
    if use_.answered_by_writ() {
        return Ok(jsonrpc::to_raw(&serde_json::json!({})));
    }
    let credential = stages::credentials(gateway, &target);
    record::forwarded(guarded, &target, &call, credential).await;
    let started = Instant::now();
    // Spent as the use is handed to the upstream, with no wait in between: a request
    // dropped before this point gives its call back.
    if let Some(budget) = allowed.budget {
        budget.spend();
    }
    let result = stages::forward(gateway, &target, params, progress).await;
    record::outcome(guarded, &target, &call, started, &result).await;
    result
}

/// The checks a request passes: `None` with authentication off. A guarded gateway
/// with nobody admitted cannot happen; if it did, it is refused, not let through.
fn guarded<'r>(
    gateway: &'r Gateway,
    admitted: &'r Admitted,
) -> Result<Option<Guarded<'r>>, GatewayError> {
    match (&gateway.mode, admitted) {
        (Mode::Open, _) => Ok(None),
        (Mode::Guarded(guard), Admitted::Agent(caller)) => Ok(Some(Guarded { guard, caller })),
        (Mode::Guarded(_), Admitted::Anyone) => {
            Err(GatewayError::Denied(crate::token::Denied::NoToken))
        }
    }
}

/// The request's params as an object, parsed once for every stage.
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

/// `logging/setLevel`: kept for the agent's own session, never forwarded. Writ holds one
/// session with each upstream for every agent, so forwarding would let one agent change
/// what an upstream logs for all of them; and upstream log messages go to Writ's own
/// log, not to agents, so there is nothing of theirs for the level to filter.
fn set_level(
    params: &Map<String, Value>,
    session: Option<&Session>,
) -> Result<Box<RawValue>, GatewayError> {
    const LEVELS: [&str; 8] = [
        "debug",
        "info",
        "notice",
        "warning",
        "error",
        "critical",
        "alert",
        "emergency",
    ];
    let level = target::string_param(params, "level")?;
    if !LEVELS.contains(&level) {
        return Err(GatewayError::invalid_params(format!(
            "`params.level` `{level}` is not one of {}",
            LEVELS.join(", ")
        )));
    }
    if let Some(session) = session {
        tracing::debug!(session = %session.id, previous = ?session.log_level(), level, "agent set its log level");
        session.set_log_level(level);
    }
    Ok(jsonrpc::to_raw(&serde_json::json!({})))
}

/// Shapes an upstream's session-era result for 2026-07-28: every result carries
/// `resultType`, and `resources/read` is cacheable, so it carries `ttlMs` and `cacheScope`
/// (private: what an agent may read depends on who it is). The fields are spliced into
/// the raw text; the result is not re-encoded. Earlier revisions get the result as is.
fn shape(method: &str, version: ProtocolVersion, result: Box<RawValue>) -> Box<RawValue> {
    if !version.is_stateless() {
        return result;
    }
    let text = result.get();
    let Some(rest) = text.trim_start().strip_prefix('{') else {
        return result;
    };
    // Upstreams speak session-era revisions and rarely send these; parse only if mentioned.
    let has = |key: &str| {
        text.contains(&format!("\"{key}\""))
            && serde_json::from_str::<Map<String, Value>>(text).is_ok_and(|m| m.contains_key(key))
    };
    // What may be cached and by whom is Writ's to say, whatever the upstream sent.
    if method == "resources/read"
        && (has("ttlMs") || has("cacheScope"))
        && let Ok(mut map) = serde_json::from_str::<Map<String, Value>>(text)
    {
        map.insert("ttlMs".into(), 0.into());
        map.insert("cacheScope".into(), "private".into());
        map.entry("resultType").or_insert_with(|| "complete".into());
        return jsonrpc::to_raw(&map);
    }
    let mut fields = Vec::new();
    if !has("resultType") {
        fields.push(r#""resultType":"complete""#);
    }
    if method == "resources/read" {
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
        let stateless = ProtocolVersion::ALL
            .into_iter()
            .find(|v| v.is_stateless())
            .unwrap();
        let shape = |method: &str, text: &str| shape(method, stateless, raw(text)).get().to_owned();
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
        // An upstream's own cache fields never reach the agent.
        let cached: Value = serde_json::from_str(&shape(
            "resources/read",
            r#"{"contents":[],"ttlMs":60000,"cacheScope":"public"}"#,
        ))
        .unwrap();
        assert_eq!(cached["cacheScope"], "private");
        assert_eq!(cached["ttlMs"], 0);
        let session = ProtocolVersion::ALL[0];
        assert_eq!(
            super::shape("tools/call", session, raw(r#"{"a":1}"#)).get(),
            r#"{"a":1}"#
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
