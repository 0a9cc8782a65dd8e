//! A small MCP server over Streamable HTTP, for Writ's own demo and benchmark servers.
//!
//! It serves tools only, answers in JSON (never SSE), and issues a session id so it
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

#[derive(Debug)]
pub struct ToolServer {
    name: String,
    tools: Vec<Tool>,
    /// The `tools/list` result, encoded once.
    list: String,
    /// The same for a 2026-07-28 request (with `resultType`).
    list_stateless: String,
    /// How many `tools/call` requests arrived, known tool or not (tests use it to prove
    /// that a refused call never reached the server).
    tool_calls: std::sync::atomic::AtomicU64,
}

impl ToolServer {
    pub fn new(name: &str, tools: Vec<Tool>) -> Arc<Self> {
        let definitions: Vec<Value> = tools.iter().map(Tool::definition).collect();
        let list = json!({ "tools": definitions }).to_string();
        let list_stateless = json!({ "tools": definitions, "resultType": "complete" }).to_string();
        Arc::new(Self {
            name: name.into(),
            tools,
            list,
            list_stateless,
            tool_calls: Default::default(),
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
                    "capabilities": { "tools": { "listChanged": false } },
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
            other => Err((
                code::METHOD_NOT_FOUND,
                format!("method `{other}` is not supported"),
            )),
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
