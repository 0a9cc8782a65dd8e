//! Clients for upstream MCP servers: Streamable HTTP and supervised stdio child processes.
//!
//! Writ owns each upstream's session. Agents never see an upstream session id or request
//! id: Writ numbers its own requests, rewrites progress tokens to ones it owns, and maps
//! answers and progress back to the agent that asked.

mod dispatch;
mod http;
mod stdio;

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use writ_core::config::{ServerConfig, Transport};
use writ_core::naming::ServerName;

use crate::jsonrpc::{self, Notification};
use crate::revision::ProtocolVersion;
use dispatch::Dispatcher;

/// Why an upstream call failed. Each variant says the upstream server is at fault, or the
/// link to it; none of them is the agent's fault.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The server answered with a JSON-RPC error; it is passed on as the server gave it.
    #[error("upstream answered with an error")]
    Rpc(Box<RawValue>),
    #[error("server `{server}` did not answer within {}", humanize(*.after))]
    Timeout { server: ServerName, after: Duration },
    #[error("server `{server}` is unavailable: {reason}")]
    Unavailable { server: ServerName, reason: String },
    #[error("server `{server}` answered with something that is not a valid MCP message: {reason}")]
    BadResponse { server: ServerName, reason: String },
    #[error("server `{server}` is misconfigured: {reason}")]
    Config { server: ServerName, reason: String },
}

impl UpstreamError {
    /// The JSON-RPC error code the agent receives.
    pub fn code(&self) -> i64 {
        match self {
            Self::Rpc(_) => jsonrpc::code::INTERNAL_ERROR,
            Self::Timeout { .. } => jsonrpc::code::UPSTREAM_TIMEOUT,
            Self::Unavailable { .. } | Self::Config { .. } => jsonrpc::code::UPSTREAM_UNAVAILABLE,
            Self::BadResponse { .. } => jsonrpc::code::UPSTREAM_BAD_RESPONSE,
        }
    }
}

fn humanize(d: Duration) -> String {
    if d.as_millis().is_multiple_of(1000) {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Something an upstream told Writ outside any one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamEvent {
    /// Initialised (first time or after a restart): lists must be fetched again.
    Ready,
    /// `notifications/tools/list_changed`, `…/prompts/list_changed` or `…/resources/list_changed`.
    ListChanged(ListKind),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
}

/// What the server said about itself in `initialize`.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    pub protocol_version: String,
    pub capabilities: Value,
    pub server_info: Value,
    pub instructions: Option<String>,
}

impl ServerInfo {
    /// True when the server declared the capability (`tools`, `prompts`, `resources`).
    pub fn has(&self, capability: &str) -> bool {
        self.capabilities
            .get(capability)
            .is_some_and(Value::is_object)
    }
}

/// Where progress for one call goes: the agent's own token and a channel to its stream.
/// The channel is bounded: progress from an upstream that outpaces the agent is dropped
/// (it is advisory), never queued without limit.
#[derive(Debug, Clone)]
pub struct ProgressRoute {
    pub client_token: Value,
    pub sink: mpsc::Sender<Notification>,
}

/// The largest message Writ takes from an upstream (a JSON body, one SSE event, one
/// stdio line). Past it the answer is refused as not a valid MCP message, rather than
/// held in memory without limit.
pub const MAX_UPSTREAM_MESSAGE: usize = 16 * 1024 * 1024;

/// How many cancellations of calls nobody waits for any more may wait to be sent to one
/// upstream; beyond that they are dropped (the upstream finishes the call for nobody).
pub(crate) const CANCEL_BACKLOG: usize = 1_024;
/// How many messages may wait to be written to a stdio child's input; beyond that a
/// call is refused as the upstream being unavailable, rather than queued without limit.
pub(crate) const STDIN_BACKLOG: usize = 1_024;

/// One upstream MCP server.
#[derive(Debug, Clone)]
pub struct Upstream {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    name: ServerName,
    timeout: Duration,
    dispatcher: Arc<Dispatcher>,
    transport: TransportKind,
}

#[derive(Debug)]
enum TransportKind {
    Http(http::HttpLink),
    Stdio(stdio::StdioLink),
}

impl Upstream {
    /// Starts connecting to (or spawning) the server in the background; calls wait for it.
    pub fn start(
        config: &ServerConfig,
        shutdown: CancellationToken,
    ) -> Result<Self, UpstreamError> {
        let dispatcher = Arc::new(Dispatcher::new(config.name.clone()));
        let transport = match &config.transport {
            Transport::Http(http) => TransportKind::Http(http::HttpLink::start(
                config.name.clone(),
                http,
                dispatcher.clone(),
                shutdown,
            )?),
            Transport::Stdio(stdio) => TransportKind::Stdio(stdio::StdioLink::start(
                config.name.clone(),
                stdio,
                dispatcher.clone(),
                shutdown,
            )?),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                name: config.name.clone(),
                timeout: config.call_timeout,
                dispatcher,
                transport,
            }),
        })
    }

    pub fn name(&self) -> &ServerName {
        &self.inner.name
    }

    /// Events outside calls (ready, list changed).
    pub fn events(&self) -> broadcast::Receiver<UpstreamEvent> {
        self.inner.dispatcher.subscribe()
    }

    /// True once the server has answered `initialize` and has not gone away since.
    pub fn is_ready(&self) -> bool {
        self.inner.dispatcher.is_ready()
    }

    /// What the server said in `initialize`, once it has.
    pub fn info(&self) -> Option<Arc<ServerInfo>> {
        self.inner.dispatcher.info()
    }

    /// Sends one request and waits for its result, within the server's call timeout.
    ///
    /// `params` is the agent's params object after Writ's rewrites. When it carries
    /// `_meta.progressToken` and `progress` is given, progress reaches that route with the
    /// agent's own token; without a route the token is removed so the server sends none.
    /// Dropping the returned future cancels the call upstream.
    pub async fn call(
        &self,
        method: &str,
        params: Option<Map<String, Value>>,
        progress: Option<ProgressRoute>,
    ) -> Result<Box<RawValue>, UpstreamError> {
        let timeout = self.inner.timeout;
        let work = async {
            self.wait_ready().await;
            let (id, mut pending) = self.inner.dispatcher.register(params, progress);
            let text = jsonrpc::request_text(id, method, pending.params().as_deref());
            match &self.inner.transport {
                TransportKind::Http(link) => {
                    link.send_request(id, text, &self.inner.dispatcher).await?
                }
                TransportKind::Stdio(link) => link.send(text).await?,
            }
            pending.outcome().await
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(outcome) => outcome,
            Err(_) => Err(UpstreamError::Timeout {
                server: self.inner.name.clone(),
                after: timeout,
            }),
        }
    }

    /// Sends a notification (for example `notifications/cancelled`), best effort.
    pub async fn notify(&self, method: &str, params: Option<&RawValue>) {
        let text = jsonrpc::notification_text(method, params);
        let sent = match &self.inner.transport {
            TransportKind::Http(link) => link.send_notification(text).await,
            TransportKind::Stdio(link) => link.send(text).await,
        };
        if let Err(err) = sent {
            tracing::debug!(server = %self.inner.name, %err, "notification not delivered");
        }
    }

    /// Waits until the server is initialised; a call that cannot wait gets the timeout.
    async fn wait_ready(&self) {
        let mut ready = self.inner.dispatcher.ready();
        let _ = ready.wait_for(|ready| *ready).await;
    }

    /// Stops the server: ends the session (HTTP) or the child process (stdio).
    pub async fn stop(&self) {
        match &self.inner.transport {
            TransportKind::Http(link) => link.stop().await,
            TransportKind::Stdio(link) => link.stop().await,
        }
    }
}

/// The params of Writ's own `initialize` to an upstream.
fn initialize_params() -> Map<String, Value> {
    let value = serde_json::json!({
        "protocolVersion": ProtocolVersion::LATEST_SESSION.as_str(),
        "capabilities": {},
        "clientInfo": { "name": "writ", "version": env!("CARGO_PKG_VERSION") },
    });
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Reads an `initialize` result.
fn server_info(server: &ServerName, result: &RawValue) -> Result<ServerInfo, UpstreamError> {
    let bad = |reason: String| UpstreamError::BadResponse {
        server: server.clone(),
        reason,
    };
    let value: Value = serde_json::from_str(result.get()).map_err(|e| bad(e.to_string()))?;
    let protocol_version = value
        .get("protocolVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("initialize result has no `protocolVersion`".into()))?
        .to_owned();
    if ProtocolVersion::parse(&protocol_version).is_none() && protocol_version != "2024-11-05" {
        return Err(UpstreamError::Unavailable {
            server: server.clone(),
            reason: format!(
                "it speaks protocol revision `{protocol_version}`, which Writ does not"
            ),
        });
    }
    Ok(ServerInfo {
        protocol_version,
        capabilities: value.get("capabilities").cloned().unwrap_or(Value::Null),
        server_info: value.get("serverInfo").cloned().unwrap_or(Value::Null),
        instructions: value
            .get("instructions")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}
