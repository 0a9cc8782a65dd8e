//! A small MCP server over Streamable HTTP, for Writ's own demo and benchmark servers.
//!
//! It serves tools, and optionally prompts, resources and resource templates with text
//! content ([`Content`]); it answers in JSON (never SSE), and issues a session id so it
//! behaves like the session-era servers Writ fronts in production. A request that carries
//! the 2026-07-28 revision in `_meta` is answered as a stateless server answers it (a
//! `resultType` on every result), so `writ bench` can compare that era directly too.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::jsonrpc::{self, Body, Message, code};
use crate::revision::ProtocolVersion;

/// What a tool handler returns: the `CallToolResult` object, or an error text that is
/// returned as a tool error (`isError: true`).
pub type ToolOutcome = Result<Value, String>;

type Handler = Arc<dyn Fn(&Map<String, Value>) -> ToolOutcome + Send + Sync>;

/// One tool a kit server offers.
#[derive(Clone)]
pub struct Tool {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
    pub annotations: Value,
    handler: Handler,
}

impl std::fmt::Debug for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tool")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Tool {
    pub fn new(
        name: &str,
        description: &str,
        input_schema: Value,
        annotations: Value,
        handler: impl Fn(&Map<String, Value>) -> ToolOutcome + Send + Sync + 'static,
    ) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            input_schema,
            annotations,
            handler: Arc::new(handler),
        }
    }

    fn definition(&self) -> Value {
        json!({
            "name": self.name,
            "description": self.description,
            "inputSchema": self.input_schema,
            "annotations": self.annotations,
        })
    }
}

/// A text result.
pub fn text_result(text: impl Into<String>) -> Value {
    json!({ "content": [{ "type": "text", "text": text.into() }], "isError": false })
}

/// The prompts, resources and resource templates a kit server offers besides tools.
#[derive(Debug, Clone, Default)]
pub struct Content {
    /// Prompts, by name, with the text `prompts/get` returns.
    pub prompts: Vec<(String, String)>,
    /// Resources, by URI, with the text `resources/read` returns.
    pub resources: Vec<(String, String)>,
    /// URI templates; a read of a URI starting with a template's fixed prefix returns
    /// `template {template}: {uri}`.
    pub templates: Vec<String>,
}

#[derive(Debug)]
pub struct ToolServer {
    name: String,
    tools: Vec<Tool>,
    content: Content,
    /// The `tools/list` result, encoded once.
    list: String,
    /// The same for a 2026-07-28 request (with `resultType`).
    list_stateless: String,
    /// How many `tools/call` requests arrived, known tool or not (tests use it to prove
    /// that a refused call never reached the server).
    tool_calls: std::sync::atomic::AtomicU64,
    /// How many `prompts/get`, `resources/read` and `completion/complete` requests arrived.
    content_uses: std::sync::atomic::AtomicU64,
}

impl ToolServer {
    pub fn new(name: &str, tools: Vec<Tool>) -> Arc<Self> {
        Self::with_content(name, tools, Content::default())
    }

    /// A server with prompts, resources and templates besides its tools.
    pub fn with_content(name: &str, tools: Vec<Tool>, content: Content) -> Arc<Self> {
        let definitions: Vec<Value> = tools.iter().map(Tool::definition).collect();
        let list = json!({ "tools": definitions }).to_string();
        let list_stateless = json!({ "tools": definitions, "resultType": "complete" }).to_string();
        Arc::new(Self {
            name: name.into(),
            tools,
            content,
            list,
            list_stateless,
            tool_calls: Default::default(),
            content_uses: Default::default(),
        })
    }

    /// How many prompt gets, resource reads and completions this server has received.
    pub fn content_uses(&self) -> u64 {
        self.content_uses.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn capabilities(&self) -> Value {
        let mut capabilities = json!({ "tools": { "listChanged": false } });
        if let Some(map) = capabilities.as_object_mut() {
            if !self.content.prompts.is_empty() {
                map.insert("prompts".into(), json!({ "listChanged": false }));
                map.insert("completions".into(), json!({}));
            }
            if !self.content.resources.is_empty() || !self.content.templates.is_empty() {
                map.insert("resources".into(), json!({ "listChanged": false }));
                map.insert("completions".into(), json!({}));
            }
        }
        capabilities
    }

    /// Answers the content methods, `None` for any other method.
    fn answer_content(
        &self,
        method: &str,
        params: &Map<String, Value>,
    ) -> Option<Result<Value, (i64, String)>> {
        let count = || {
            self.content_uses
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        };
        let content = &self.content;
        Some(match method {
            "prompts/list" => Ok(
                json!({ "prompts": content.prompts.iter().map(|(name, _)| json!({
                "name": name,
                "description": "A kit prompt.",
                "arguments": [{ "name": "topic", "required": false }],
            })).collect::<Vec<_>>() }),
            ),
            "prompts/get" => {
                count();
                let name = params
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                content
                    .prompts
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, text)| {
                        json!({ "messages": [{ "role": "user", "content": { "type": "text", "text": text } }] })
                    })
                    .ok_or((code::INVALID_PARAMS, format!("unknown prompt `{name}`")))
            }
            "resources/list" => Ok(
                json!({ "resources": content.resources.iter().map(|(uri, _)| json!({
                "uri": uri,
                "name": uri,
                "mimeType": "text/plain",
            })).collect::<Vec<_>>() }),
            ),
            "resources/templates/list" => Ok(
                json!({ "resourceTemplates": content.templates.iter().map(|t| json!({
                "uriTemplate": t,
                "name": t,
            })).collect::<Vec<_>>() }),
            ),
            "resources/read" => {
                count();
                let uri = params
                    .get("uri")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let listed = content
                    .resources
                    .iter()
                    .find(|(u, _)| u == uri)
                    .map(|(_, t)| t.clone());
                let templated = || {
                    content
                        .templates
                        .iter()
                        .find(|t| uri.starts_with(t.split('{').next().unwrap_or_default()))
                        .map(|t| format!("template {t}: {uri}"))
                };
                listed
                    .or_else(templated)
                    .map(|text| json!({ "contents": [{ "uri": uri, "mimeType": "text/plain", "text": text }] }))
                    .ok_or((-32002, format!("resource `{uri}` not found")))
            }
            "completion/complete" => {
                count();
                Ok(
                    json!({ "completion": { "values": ["alpha", "beta"], "total": 2, "hasMore": false } }),
                )
            }
            _ => return None,
        })
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route(
                "/mcp",
                axum::routing::post(handle)
                    .get(|| async { StatusCode::METHOD_NOT_ALLOWED })
                    .delete(|| async { StatusCode::NO_CONTENT }),
            )
            .with_state(self)
    }

    /// Serves on `addr` (port 0 picks a free port) until the task is dropped or aborted.
    pub async fn serve(
        self: Arc<Self>,
        addr: SocketAddr,
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let router = self.router();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok((local, task))
    }

    fn answer(
        &self,
        method: &str,
        params: Option<&serde_json::value::RawValue>,
    ) -> Result<Value, (i64, String)> {
        let params: Map<String, Value> = params
            .and_then(|p| serde_json::from_str(p.get()).ok())
            .unwrap_or_default();
        match method {
            "initialize" => {
                let requested = params
                    .get("protocolVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                Ok(json!({
                    "protocolVersion": ProtocolVersion::negotiate(requested).as_str(),
                    "capabilities": self.capabilities(),
                    "serverInfo": { "name": self.name, "version": env!("CARGO_PKG_VERSION") },
                }))
            }
            "ping" => Ok(json!({})),
            "tools/call" => {
                self.tool_calls
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let name = params
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let tool = self
                    .tools
                    .iter()
                    .find(|t| t.name == name)
                    .ok_or((code::INVALID_PARAMS, format!("unknown tool `{name}`")))?;
                let empty = Map::new();
                let arguments = params
                    .get("arguments")
                    .and_then(Value::as_object)
                    .unwrap_or(&empty);
                Ok((tool.handler)(arguments).unwrap_or_else(|message| json!({ "content": [{ "type": "text", "text": message }], "isError": true })))
            }
            other => self.answer_content(other, &params).unwrap_or_else(|| {
                Err((
                    code::METHOD_NOT_FOUND,
                    format!("method `{other}` is not supported"),
                ))
            }),
        }
    }
}

/// What marks a 2026-07-28 request: its revision in `params._meta` (the value is checked
/// loosely; this is a kit server, and Writ's front door does the strict checking).
const STATELESS_META: &str = r#""io.modelcontextprotocol/protocolVersion":"2026-07-28""#;

async fn handle(State(server): State<Arc<ToolServer>>, body: Bytes) -> Response {
    let message = match jsonrpc::parse_body(&body, 64) {
        Ok(Body::Single(message)) => message,
        Ok(Body::Batch(_)) => {
            return (StatusCode::BAD_REQUEST, "batches are not supported").into_response();
        }
        Err(err) => {
            return (
                StatusCode::BAD_REQUEST,
                jsonrpc::error_response(None, err.code(), &err.to_string(), None),
            )
                .into_response();
        }
    };
    let Message::Request(request) = message else {
        return StatusCode::ACCEPTED.into_response();
    };
    let id = request.id.as_raw();
    let stateless = request
        .params
        .as_deref()
        .is_some_and(|p| p.get().contains(STATELESS_META));
    let (text, session) = match request.method.as_str() {
        "tools/list" => (
            jsonrpc::result_response(id, &server.list_raw(stateless)),
            None,
        ),
        method => {
            let session = (method == "initialize" && !stateless)
                .then(|| uuid::Uuid::new_v4().simple().to_string());
            match server.answer(method, request.params.as_deref()) {
                Ok(mut result) => {
                    if stateless && let Some(result) = result.as_object_mut() {
                        result.insert("resultType".into(), json!("complete"));
                    }
                    (
                        jsonrpc::result_response(id, &jsonrpc::to_raw(&result)),
                        session,
                    )
                }
                Err((code, message)) => (
                    jsonrpc::error_response(Some(id), code, &message, None),
                    None,
                ),
            }
        }
    };
    let mut response = (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        text,
    )
        .into_response();
    if let Some(session) = session.and_then(|s| HeaderValue::from_str(&s).ok()) {
        response.headers_mut().insert("mcp-session-id", session);
    }
    response
}

impl ToolServer {
    /// How many `tools/call` requests this server has received.
    pub fn tool_calls(&self) -> u64 {
        self.tool_calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn list_raw(&self, stateless: bool) -> Box<serde_json::value::RawValue> {
        let list = if stateless {
            &self.list_stateless
        } else {
            &self.list
        };
        serde_json::value::RawValue::from_string(list.clone()).unwrap_or_else(|_| jsonrpc::null())
    }
}
