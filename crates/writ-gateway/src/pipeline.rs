//! The request pipeline: what Writ does with one JSON-RPC request once the front door has
//! accepted it (framing, origin, session or per-request version already checked).
//!
//! ```text
//! request ──▶ (front door: authenticate — the writ, its DPoP proof, its task's state)
//!         ──▶ route (method → list | tool | prompt | resource | local)
//!         ──▶ resolve target (exposed name → server, upstream name)
//!         ──▶ pin check (a tool whose definition drifted is held)
//!         ──▶ intent check (outside the task's tools or data classes: a deviation,
//!             which revokes the task)
//!         ──▶ policy (Cedar `call`: allow | deny | approval required)
//!         ──▶ audit (the decision committed to the hash chain; refusals end here)
//!         ──▶ budget (one call of the task's `max_calls`)
//!         ──▶ forward (Writ's own upstream session, id and progress token)
//!         ──▶ shape result for the agent's revision ──▶ agent
//! ```
//! `tools/list` runs the same checks with Cedar's `discover` over every tool and shows
//! only what passes; what it hides is logged with the reason. Whatever the pin, intent
//! and policy stages decide is recorded in the audit log and committed before anything
//! else happens (`record_decision`): a refusal is answered after it is recorded, an
//! allowed call is forwarded only after it is, and a call whose decision cannot be
//! recorded is refused. The approval stage goes between policy and audit as it lands.

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use writ_mcp::jsonrpc::{self, Request};
use writ_mcp::revision::ProtocolVersion;
use writ_mcp::upstream::{ProgressRoute, Upstream};

use crate::Gateway;
use crate::catalog::ListName;
use crate::error::{GatewayError, writ_code};
use crate::policy::describe;
use crate::token::{Caller, Denied};
use crate::tools::KnownTool;
use axum::http::StatusCode;
use writ_audit::{Event, kinds};
use writ_core::config::OnDeviation;
use writ_policy::{Decision, Verdict};
use writ_store::TaskState;

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
        "tools/list" => list(gateway, request, ListName::Tools, version, caller).await,
        "prompts/list" => list(gateway, request, ListName::Prompts, version, None).await,
        "resources/list" => list(gateway, request, ListName::Resources, version, None).await,
        "resources/templates/list" => {
            list(gateway, request, ListName::ResourceTemplates, version, None).await
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

async fn list(
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
    let page = gateway
        .catalog
        .page(list, cursor, gateway.config.page_size)
        .map_err(GatewayError::invalid_params)?;
    // Built as text around the stored raw items: listing never re-encodes a tool definition.
    let mut out =
        String::with_capacity(64 + page.entries().map(|e| e.raw.get().len() + 1).sum::<usize>());
    out.push_str("{\"");
    out.push_str(list.result_key());
    out.push_str("\":[");
    // A page may come out shorter than the page size once filtered; its cursor still
    // leads on, so the agent sees every tool it may.
    let mut first = true;
    let mut screen = (list == ListName::Tools).then(|| Screen::new(gateway, caller));
    for entry in page
        .entries()
        .filter(|entry| screen.as_mut().is_none_or(|s| s.shows(entry)))
    {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(entry.raw.get());
    }
    out.push(']');
    if let Some(next) = &page.next {
        out.push_str(",\"nextCursor\":");
        out.push_str(&jsonrpc::to_raw(&next).to_string());
    }
    if version.is_stateless() {
        // What an agent may see will depend on who it is: never cache across agents.
        out.push_str(",\"ttlMs\":0,\"cacheScope\":\"private\"");
    }
    out.push('}');
    if let Some(screen) = screen {
        screen.log().await;
    }
    RawValue::from_string(out).map_err(|e| GatewayError::Internal(format!("list result: {e}")))
}

/// Decides, tool by tool, what one `tools/list` shows: the `discover` side of the
/// pipeline. Without authentication (`gateway.auth = "off"`) everything is shown.
struct Screen<'g> {
    gateway: &'g Gateway,
    caller: Option<&'g Caller>,
    /// One policy set for the whole list, even if a reload lands halfway through, and
    /// the context every tool's `discover` shares.
    policy: Option<(
        std::sync::Arc<writ_policy::Engine>,
        Result<writ_policy::ListContext, writ_policy::FactsError>,
    )>,
    shown: Vec<String>,
    hidden: Vec<(String, String)>,
}

impl<'g> Screen<'g> {
    fn new(gateway: &'g Gateway, caller: Option<&'g Caller>) -> Self {
        let policy = gateway
            .policies
            .as_ref()
            .zip(caller)
            .map(|(policies, caller)| {
                let engine = policies.current();
                let context = engine.list_context(&caller.task.facts(), &policies.situation());
                (engine, context)
            });
        Self {
            gateway,
            caller,
            policy,
            shown: Vec::new(),
            hidden: Vec::new(),
        }
    }

    fn shows(&mut self, entry: &crate::catalog::Entry) -> bool {
        let Some(caller) = self.caller else {
            return true;
        };
        // Every tool entry is named when it is installed; one that is not is not shown.
        let Some(name) = &entry.name else {
            return false;
        };
        let why_hidden = match self.gateway.tools.get(name) {
            None => Some("Writ has not checked this tool yet".to_owned()),
            Some(tool) => self.why_hidden(caller, &tool),
        };
        match why_hidden {
            None => {
                self.shown.push(name.clone());
                true
            }
            Some(why) => {
                self.hidden.push((name.clone(), why));
                false
            }
        }
    }

    fn why_hidden(&self, caller: &Caller, tool: &KnownTool) -> Option<String> {
        if let Some(held) = &tool.held {
            return Some(format!("held back: {held}"));
        }
        // What calling it would be a deviation for is not offered in the first place. The
        // reason does not name the tool, so the tools hidden for it are recorded together.
        let task = &caller.task.task;
        match stray(caller, tool) {
            None => {}
            Some(Stray::Tools) => {
                return Some(format!(
                    "outside task `{}` (its tools: {})",
                    task.id,
                    task.tools.join(", ")
                ));
            }
            Some(Stray::DataClass(class)) => {
                return Some(format!(
                    "handles data of class `{class}`, which task `{}` did not declare (its data classes: {})",
                    task.id,
                    declared_classes(caller)
                ));
            }
        }
        let decision = match &self.policy {
            Some((engine, Ok(context))) => {
                engine.discover_in(&caller.task.agent, &tool.facts, context)
            }
            Some((_, Err(e))) => {
                return Some(format!("the request could not be put to policy: {e}"));
            }
            None => return Some("Writ has no policy set to decide with".into()),
        };
        if decision.is_allow() {
            return None;
        }
        let why = describe(&decision);
        if self
            .gateway
            .policies
            .as_ref()
            .is_some_and(|p| !p.enforcing())
        {
            tracing::warn!(tool = %tool.facts.name, agent = %caller.task.agent.name, decision = %why, "shadow mode: policy would hide this tool");
            return None;
        }
        Some(why)
    }

    /// Records what the list showed and hid, and why: in the process log, and as a
    /// `tools.discovered` event with the hidden tools grouped by reason (most share one,
    /// and a page of 100 tools is one record). The event is handed over, not waited for
    /// to be committed; but when the writer is behind, the list waits for room in its
    /// queue, so a flood of lists is slowed rather than held in memory.
    async fn log(self) {
        let Some(caller) = self.caller else { return };
        tracing::info!(
            agent = %caller.task.agent.name,
            task = %caller.task.task.id,
            shown = self.shown.len(),
            hidden = ?self.hidden,
            "tools listed"
        );
        if let Some(audit) = &self.gateway.audit {
            let mut by_reason: Vec<(String, Vec<String>)> = Vec::new();
            for (tool, reason) in self.hidden {
                match by_reason.iter_mut().find(|(r, _)| *r == reason) {
                    Some((_, tools)) => tools.push(tool),
                    None => by_reason.push((reason, vec![tool])),
                }
            }
            let hidden: Vec<Value> = by_reason
                .into_iter()
                .map(|(reason, tools)| serde_json::json!({ "reason": reason, "tools": tools }))
                .collect();
            audit
                .note(
                    crate::events::event(kinds::TOOLS_DISCOVERED)
                        .with_actor(crate::token::actors(&caller.task.task))
                        .with_task(caller.task.task.id.clone())
                        .with_field("shown", self.shown)
                        .with_field("hidden", hidden),
                )
                .await;
        }
    }
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
    let mut audited = None;
    if let Some(caller) = caller {
        let known = gateway.tools.get(&exposed).ok_or_else(|| {
            GatewayError::client(
                StatusCode::OK,
                writ_code::TOOL_HELD,
                format!("tool `{exposed}` has not been checked by Writ yet; try again"),
            )
        })?;
        let arguments = params.get("arguments");
        let call = format!("c_{}", uuid::Uuid::new_v4().simple());
        let decided = async {
            check_pin(&known, &exposed)?;
            check_intent(gateway, caller, &known, &exposed, &call).await?;
            check_policy(gateway, caller, &known, arguments)
        }
        .await;
        record_decision(gateway, caller, &known, &call, arguments, &decided).await?;
        decided?;
        if let Some(tokens) = &gateway.tokens {
            tokens.count_call(caller).map_err(GatewayError::Denied)?;
        }
        audited = Some(Audited {
            call,
            actor: crate::token::actors(&caller.task.task),
            task: caller.task.task.id.clone(),
            tool: known.facts.name.clone(),
            server: known.facts.server.clone(),
        });
    }
    let (Some(audited), Some(audit)) = (audited, &gateway.audit) else {
        params.insert("name".into(), Value::String(tool));
        return Ok(upstream
            .call("tools/call", Some(upstream_params(params)), progress)
            .await?);
    };
    audit
        .note(
            audited
                .event(kinds::CALL_FORWARDED)
                .with_field("upstream_tool", tool.clone())
                .with_field(
                    "credential",
                    gateway.credentials.get(&audited.server).cloned().flatten(),
                ),
        )
        .await;
    params.insert("name".into(), Value::String(tool));
    let started = std::time::Instant::now();
    let result = upstream
        .call("tools/call", Some(upstream_params(params)), progress)
        .await;
    let latency_ms = started.elapsed().as_secs_f64() * 1_000.0;
    let completed = audited
        .event(kinds::CALL_COMPLETED)
        .with_field("latency_ms", (latency_ms * 1_000.0).round() / 1_000.0);
    audit
        .note(match &result {
            Ok(raw) => completed
                .with_field(
                    "status",
                    if is_tool_error(raw) {
                        "tool_error"
                    } else {
                        "ok"
                    },
                )
                // Of the result exactly as the upstream sent it.
                .with_field(
                    "result_digest",
                    writ_audit::sha256_hex(raw.get().as_bytes()),
                ),
            Err(err) => completed
                .with_field("status", "error")
                .with_field("error", err.to_string()),
        })
        .await;
    Ok(result?)
}

/// What the records after a call's decision share: which call, task, tool and server.
struct Audited {
    call: String,
    actor: Vec<String>,
    task: String,
    tool: String,
    server: String,
}

impl Audited {
    fn event(&self, kind: &'static str) -> Event {
        crate::events::event(kind)
            .with_actor(self.actor.clone())
            .with_task(self.task.clone())
            .with_tool(self.tool.clone())
            .with_field("call", self.call.clone())
            .with_field("server", self.server.clone())
    }
}

/// Whether a `tools/call` result says the tool failed (`isError: true`).
fn is_tool_error(raw: &RawValue) -> bool {
    #[derive(serde::Deserialize)]
    struct Outcome {
        #[serde(rename = "isError", default)]
        is_error: bool,
    }
    serde_json::from_str::<Outcome>(raw.get()).is_ok_and(|o| o.is_error)
}

/// The pin stage: a tool whose definition changed since it was trusted is not called.
fn check_pin(tool: &KnownTool, exposed: &str) -> Result<(), GatewayError> {
    match &tool.held {
        None => Ok(()),
        Some(why) => Err(GatewayError::Client {
            status: StatusCode::OK,
            code: writ_code::TOOL_HELD,
            message: format!("tool `{exposed}` is held back: {why}"),
            data: Some(serde_json::json!({
                "decision": "held",
                "tool": tool.facts.name,
                "reasons": [why],
            })),
        }),
    }
}

/// The intent stage: a call must stay within the tools and data classes its task
/// declared. One that strays is a deviation: denied, logged, and (by default) the task
/// and every task delegated from it are revoked at once — an agent acting outside its
/// declared intent may have been subverted, and its writ should not outlive that.
async fn check_intent(
    gateway: &Gateway,
    caller: &Caller,
    tool: &KnownTool,
    exposed: &str,
    call: &str,
) -> Result<(), GatewayError> {
    let Some(strayed) = deviation(caller, tool, exposed) else {
        return Ok(());
    };
    let task = &caller.task;
    tracing::warn!(
        agent = %task.agent.name,
        task = %task.task.id,
        tool = exposed,
        deviation = %strayed,
        "deviation from the task's declared intent"
    );
    let mut message = format!("{strayed}; this is a deviation from the task's declared intent");
    if let (OnDeviation::Revoke, Some(tokens)) = (gateway.on_deviation, &gateway.tokens) {
        let reason = format!("deviation: {strayed}");
        match tokens
            .end_task_for(&task.task.id, TaskState::Revoked, &reason, Some(call))
            .await
        {
            Ok(ended) if ended.len() == 2 => {
                message.push_str(", so the task and the one task delegated from it are revoked")
            }
            Ok(ended) if ended.len() > 2 => message.push_str(&format!(
                ", so the task and the {} tasks delegated from it are revoked",
                ended.len() - 1
            )),
            Ok(_) => message.push_str(", so the task is revoked"),
            // The call is refused either way; nobody retries the revocation, so say so.
            Err(err) => {
                tracing::error!(%err, task = %task.task.id, "could not revoke a deviating task")
            }
        }
    }
    Err(GatewayError::Denied(Denied::InsufficientScope(message)))
}

/// How a tool lies outside its caller's task.
enum Stray<'t> {
    /// Not among the task's tools.
    Tools,
    /// Handles data of a class the task did not declare.
    DataClass(&'t str),
}

fn stray<'t>(caller: &Caller, tool: &'t KnownTool) -> Option<Stray<'t>> {
    let grant = &caller.task.grant;
    if !grant.allows(writ_core::task::Target::Tool {
        server: &tool.facts.server,
        name: &tool.tool,
    }) {
        return Some(Stray::Tools);
    }
    tool.facts
        .class
        .data_classes
        .iter()
        .find(|c| !grant.data_classes.contains(c))
        .map(|class| Stray::DataClass(class))
}

/// The task's data classes, for messages.
fn declared_classes(caller: &Caller) -> String {
    let classes = &caller.task.grant.data_classes;
    if classes.is_empty() {
        "none".to_owned()
    } else {
        classes.join(", ")
    }
}

/// How a call strays from its task, if it does.
fn deviation(caller: &Caller, tool: &KnownTool, exposed: &str) -> Option<String> {
    let task = &caller.task.task;
    Some(match stray(caller, tool)? {
        Stray::Tools => format!(
            "tool `{exposed}` is outside task `{}` (its tools: {})",
            task.id,
            task.tools.join(", ")
        ),
        Stray::DataClass(class) => format!(
            "tool `{exposed}` handles data of class `{class}`, which task `{}` did not declare (its data classes: {})",
            task.id,
            declared_classes(caller)
        ),
    })
}

/// The policy stage: Cedar's `call` decision on this agent, tool, task and arguments.
/// Allowed, it returns the policies that allowed the call.
fn check_policy(
    gateway: &Gateway,
    caller: &Caller,
    tool: &KnownTool,
    arguments: Option<&Value>,
) -> Result<Vec<String>, GatewayError> {
    // An authenticated caller always has a policy set to answer to; without one, refuse.
    let Some(policies) = &gateway.policies else {
        return Err(GatewayError::Denied(Denied::Unavailable));
    };
    let decision = policies.current().call(
        &caller.task.agent,
        &tool.facts,
        &caller.task.facts(),
        arguments,
        false,
        &policies.situation(),
    );
    tracing::info!(
        agent = %caller.task.agent.name,
        task = %caller.task.task.id,
        tool = %tool.facts.name,
        decision = decision.verdict.as_str(),
        policies = ?decision.policies,
        "call decided"
    );
    if decision.is_allow() {
        return Ok(decision.policies);
    }
    let described = describe(&decision);
    if !policies.enforcing() {
        tracing::warn!(tool = %tool.facts.name, decision = %described, "shadow mode: policy would refuse this call");
        return Ok(Vec::new());
    }
    Err(refusal(&tool.facts.name, &decision, &described))
}

/// Arguments larger than this (as JSON) are recorded by digest only.
const MAX_AUDITED_ARGUMENTS: usize = 4 * 1024;

/// The audit stage: records what the stages before it decided, and waits until it is
/// committed. A call that cannot be recorded is refused: an allowed one with 503, a
/// refused one with its own refusal.
async fn record_decision(
    gateway: &Gateway,
    caller: &Caller,
    tool: &KnownTool,
    call: &str,
    arguments: Option<&Value>,
    decided: &Result<Vec<String>, GatewayError>,
) -> Result<(), GatewayError> {
    let Some(audit) = &gateway.audit else {
        return Ok(());
    };
    let (kind, decision) = match decided {
        Ok(_) => (kinds::CALL_DECIDED, "allow"),
        Err(GatewayError::Denied(Denied::InsufficientScope(_))) => {
            (kinds::CALL_DEVIATION, "deviation")
        }
        Err(GatewayError::Client { code, .. }) if *code == writ_code::TOOL_HELD => {
            (kinds::CALL_DECIDED, "held")
        }
        Err(GatewayError::Client { code, .. }) if *code == writ_code::APPROVAL_REQUIRED => {
            (kinds::CALL_DECIDED, "approval_required")
        }
        Err(_) => (kinds::CALL_DECIDED, "deny"),
    };
    let task = &caller.task.task;
    let mut event = crate::events::event(kind)
        .with_actor(crate::token::actors(task))
        .with_task(task.id.clone())
        .with_tool(tool.facts.name.clone())
        .with_decision(decision)
        .with_field("call", call.to_owned())
        .with_field("server", tool.facts.server.clone())
        .with_field(
            "proof",
            if caller.claims.cnf.is_some() {
                "dpop"
            } else {
                "bearer"
            },
        );
    match decided {
        Ok(policies) => event = event.with_field("policies", policies.clone()),
        Err(GatewayError::Client { message, data, .. }) => {
            event = event.with_field("reason", message.clone());
            if let Some(data) = data {
                event = event.with_field("detail", data.clone());
            }
        }
        Err(GatewayError::Denied(Denied::InsufficientScope(why))) => {
            event = event.with_field("reason", why.clone());
        }
        Err(err) => event = event.with_field("reason", err.to_string()),
    }
    if let Some(arguments) = arguments {
        // Encoded once: its hash is the digest, its length decides whether it is copied.
        let canonical = writ_audit::canonical_json(arguments);
        event = event.with_field("arguments_digest", writ_audit::sha256_hex(&canonical));
        // Large arguments are recorded by digest only, and never copied.
        if canonical.len() <= MAX_AUDITED_ARGUMENTS {
            let mut shown = arguments.clone();
            writ_audit::redact(&mut shown, &gateway.redact);
            event = event.with_field("arguments", shown);
        }
    }
    match audit.record(event).await {
        Ok(()) => Ok(()),
        Err(err) => {
            tracing::error!(%err, task = %task.id, tool = %tool.facts.name, "call refused: its decision could not be recorded");
            match decided {
                Ok(_) => Err(GatewayError::Denied(Denied::Unavailable)),
                // Refused anyway; the refusal says more than the audit failure.
                Err(_) => Ok(()),
            }
        }
    }
}

/// A policy refusal as the agent receives it: what was decided, by which policies, why,
/// and (for approval) by whom it could be approved.
fn refusal(tool: &str, decision: &Decision, described: &str) -> GatewayError {
    let mut data = serde_json::json!({
        "decision": decision.verdict.as_str(),
        "tool": tool,
        "policies": decision.policies,
        "reasons": decision.reasons,
    });
    let code = match &decision.verdict {
        Verdict::ApprovalRequired { groups } => {
            if let Some(data) = data.as_object_mut() {
                data.insert("approvers".into(), groups.clone().into());
            }
            writ_code::APPROVAL_REQUIRED
        }
        _ => writ_code::POLICY_DENIED,
    };
    GatewayError::Client {
        status: StatusCode::OK,
        code,
        message: format!("call to `{tool}` {described}"),
        data: Some(data),
    }
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
                StatusCode::OK,
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
