//! The Writ gateway: the HTTP front door, agent sessions, aggregation of upstream servers,
//! and the request pipeline between them.

pub mod audit;
mod catalog;
pub mod error;
mod events;
mod front_door;
mod pipeline;
pub mod policy;
mod sessions;
pub mod token;
mod tools;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use writ_core::clock::{Clock, SystemClock};
use writ_core::config::{AuthMode, Config, GatewayConfig};
use writ_mcp::jsonrpc;
use writ_mcp::revision::ProtocolVersion;
use writ_mcp::upstream::{ListKind, Upstream, UpstreamEvent};

use catalog::Catalog;
pub use error::GatewayError;
use sessions::Sessions;

/// Everything the handlers share.
#[derive(Debug)]
pub struct Gateway {
    config: GatewayConfig,
    upstreams: Vec<Upstream>,
    /// True per upstream once its lists have been fetched since it last became ready.
    loaded: Vec<AtomicBool>,
    catalog: Catalog,
    sessions: Sessions,
    /// Notifications for every agent stream (list changes), as JSON-RPC text.
    notices: broadcast::Sender<String>,
    allowed_origins: Vec<String>,
    /// Whether requests are checked, and with what.
    mode: Mode,
    /// Tool classifications and pins.
    tools: tools::ToolRegistry,
    /// The servers' configuration: the facts of their prompts and resources.
    servers: Vec<writ_core::config::ServerConfig>,
    /// Per server, the names of the credential references it is reached with.
    credentials: std::collections::HashMap<String, Option<String>>,
    shutdown: CancellationToken,
}

/// Whether the gateway checks who calls. One type says it, rather than several fields
/// that are all `None` exactly when authentication is off.
#[derive(Debug)]
enum Mode {
    /// `gateway.auth = "off"`: anyone who reaches the gateway may use every tool,
    /// prompt and resource, unchecked and unrecorded. For local development only.
    Open,
    /// `gateway.auth = "on"` (the default): every request passes the pipeline.
    Guarded(Guard),
}

/// What a guarded gateway checks requests with.
#[derive(Debug)]
struct Guard {
    tokens: Arc<token::TokenService>,
    policies: Arc<policy::Policies>,
    audit: Arc<audit::AuditLog>,
    on_deviation: writ_core::config::OnDeviation,
    /// What is redacted from recorded arguments.
    redact: writ_audit::RedactRules,
    /// The time every check of a task's state is made at.
    clock: Arc<dyn Clock>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Upstream(#[from] writ_mcp::upstream::UpstreamError),
    // The causes below are part of the message and deliberately not `source`s: printed
    // with its chain (as the binary does), the cause would otherwise appear twice.
    #[error("could not listen on `{addr}`: {error}")]
    Listen {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("could not open the store at `{path}`: {error}")]
    Store {
        path: std::path::PathBuf,
        error: writ_store::StoreError,
    },
    #[error("could not start the audit log in the store at `{path}`: {error}")]
    Audit {
        path: std::path::PathBuf,
        error: writ_store::StoreError,
    },
    #[error(transparent)]
    Tokens(#[from] token::TokenStartError),
    #[error("`audit.redact`: {0}")]
    Redact(String),
    #[error("the policies in `{dir}` do not load:\n{error}")]
    Policy {
        dir: std::path::PathBuf,
        error: writ_policy::LoadError,
    },
}

/// The parts that exist only when authentication is on.
struct Access {
    tokens: Arc<token::TokenService>,
    policies: Arc<policy::Policies>,
    store: Arc<dyn writ_store::Store>,
    audit: Arc<audit::AuditLog>,
}

impl Gateway {
    /// Starts every upstream (in the background) and the catalog that follows them.
    fn start(
        config: &Config,
        listen: SocketAddr,
        access: Option<Access>,
        shutdown: CancellationToken,
        clock: Arc<dyn Clock>,
    ) -> Result<Arc<Self>, StartError> {
        let upstreams = config
            .servers
            .iter()
            // Upstreams get their own token: they must outlive the drain of in-flight calls,
            // and are stopped after it (`Running::finish`).
            .map(|server| Upstream::start(server, CancellationToken::new()))
            .collect::<Result<Vec<_>, _>>()?;
        let catalog = Catalog::new(
            config.gateway.tool_names,
            config.servers.iter().map(|s| s.name.clone()).collect(),
        );
        let (notices, _) = broadcast::channel(64);
        let tools = tools::ToolRegistry::new(
            config.servers.clone(),
            access.as_ref().map(|a| a.store.clone()),
            access.as_ref().map(|a| a.audit.clone()),
            clock.clone(),
        );
        let redact = events::redact_rules(config)?;
        let mode = match access {
            None => Mode::Open,
            Some(access) => Mode::Guarded(Guard {
                tokens: access.tokens,
                policies: access.policies,
                audit: access.audit,
                on_deviation: config.tasks.on_deviation,
                redact,
                clock,
            }),
        };
        let gateway = Arc::new(Self {
            allowed_origins: allowed_origins(&config.gateway, listen),
            config: config.gateway.clone(),
            loaded: upstreams.iter().map(|_| AtomicBool::new(false)).collect(),
            upstreams,
            catalog,
            sessions: Sessions::new(
                config.gateway.session_idle_timeout,
                config.gateway.max_sessions,
            ),
            notices,
            tools,
            mode,
            servers: config.servers.clone(),
            credentials: config
                .servers
                .iter()
                .map(|s| (s.name.to_string(), events::credential_references(s)))
                .collect(),
            shutdown,
        });
        if let Some(guard) = gateway.guard() {
            tokio::spawn(follow_pins(gateway.clone(), guard.tokens.pin_changes()));
        }
        for index in 0..gateway.upstreams.len() {
            tokio::spawn(follow_upstream(gateway.clone(), index));
        }
        tokio::spawn(sweep_sessions(gateway.clone()));
        Ok(gateway)
    }

    /// What requests are checked with; `None` with authentication off.
    fn guard(&self) -> Option<&Guard> {
        match &self.mode {
            Mode::Open => None,
            Mode::Guarded(guard) => Some(guard),
        }
    }

    /// The audit log; `None` with authentication off.
    fn audit(&self) -> Option<&Arc<audit::AuditLog>> {
        self.guard().map(|g| &g.audit)
    }

    /// Ready when every upstream is initialised and its lists are loaded, and the audit
    /// log's last write succeeded.
    pub fn is_ready(&self) -> bool {
        self.audit().is_none_or(|a| a.is_healthy())
            && self
                .upstreams
                .iter()
                .zip(&self.loaded)
                .all(|(u, loaded)| u.is_ready() && loaded.load(Ordering::Acquire))
    }

    fn capabilities(&self) -> Value {
        let offered = Catalog::offered(&self.upstreams);
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("tools".into(), json!({ "listChanged": true }));
        for (kind, value) in [
            ("prompts", json!({ "listChanged": true })),
            ("resources", json!({ "listChanged": true })),
            ("completions", json!({})),
            ("logging", json!({})),
        ] {
            if offered.contains_key(kind) {
                capabilities.insert(kind.into(), value);
            }
        }
        Value::Object(capabilities)
    }

    fn server_info() -> Value {
        json!({ "name": "writ", "title": "Writ MCP gateway", "version": env!("CARGO_PKG_VERSION") })
    }

    fn initialize_result(&self, version: ProtocolVersion) -> Value {
        json!({
            "protocolVersion": version.as_str(),
            "capabilities": self.capabilities(),
            "serverInfo": Self::server_info(),
            "instructions": self.instructions(),
        })
    }

    fn discover_result(&self) -> Value {
        let mut capabilities = self.capabilities();
        // List changes reach agents only on session-era GET streams for now.
        if let Some(map) = capabilities.as_object_mut() {
            for kind in ["tools", "prompts", "resources"] {
                if let Some(Value::Object(cap)) = map.get_mut(kind) {
                    cap.remove("listChanged");
                }
            }
        }
        json!({
            "supportedVersions": ProtocolVersion::ALL.map(ProtocolVersion::as_str),
            "capabilities": capabilities,
            "instructions": self.instructions(),
            "ttlMs": 0,
            "cacheScope": "private",
            "_meta": { "io.modelcontextprotocol/serverInfo": Self::server_info() },
        })
    }

    /// The upstreams' own instructions, each under its server's name.
    fn instructions(&self) -> String {
        let mut text =
            String::from("Tools from several MCP servers, reached through the Writ gateway.");
        for upstream in &self.upstreams {
            if let Some(instructions) = upstream.info().and_then(|i| i.instructions.clone()) {
                text.push_str(&format!("\n\n## {}\n{}", upstream.name(), instructions));
            }
        }
        text
    }
}

/// The gateway's own origins, plus the configured ones, in lowercase without a trailing slash.
fn allowed_origins(config: &GatewayConfig, listen: SocketAddr) -> Vec<String> {
    let mut origins: Vec<String> = config
        .allowed_origins
        .iter()
        .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
        .collect();
    if let Some(public) = &config.public_url {
        let origin: String = public.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
        origins.push(origin.to_ascii_lowercase());
    }
    let port = listen.port();
    origins.push(format!("http://{listen}"));
    if listen.ip().is_loopback() || listen.ip().is_unspecified() {
        origins.push(format!("http://localhost:{port}"));
        origins.push(format!("http://127.0.0.1:{port}"));
        origins.push(format!("http://[::1]:{port}"));
    }
    origins
}

const ALL_LISTS: [ListKind; 3] = [ListKind::Tools, ListKind::Prompts, ListKind::Resources];

/// Keeps one upstream's part of the catalog fresh and tells agents when it changed.
async fn follow_upstream(gateway: Arc<Gateway>, index: usize) {
    let Some(upstream) = gateway.upstreams.get(index).cloned() else {
        return;
    };
    let mut events = upstream.events();
    if upstream.is_ready() {
        refresh(&gateway, index, &upstream, &ALL_LISTS).await;
    }
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            () = gateway.shutdown.cancelled() => return,
        };
        match event {
            Ok(UpstreamEvent::Ready) | Err(broadcast::error::RecvError::Lagged(_)) => {
                refresh(&gateway, index, &upstream, &ALL_LISTS).await;
            }
            Ok(UpstreamEvent::ListChanged(kind)) => {
                refresh(&gateway, index, &upstream, &[kind]).await
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn refresh(gateway: &Gateway, index: usize, upstream: &Upstream, kinds: &[ListKind]) {
    for &kind in kinds {
        match gateway.catalog.fetch(upstream, kind).await {
            Ok(None) => {}
            Ok(Some(fetched)) => {
                if fetched.has_tools() {
                    gateway.tools.observe(index, &fetched.tools()).await;
                }
                gateway.catalog.install(index, fetched);
                let method = match kind {
                    ListKind::Tools => "notifications/tools/list_changed",
                    ListKind::Prompts => "notifications/prompts/list_changed",
                    ListKind::Resources => "notifications/resources/list_changed",
                };
                let _ = gateway
                    .notices
                    .send(jsonrpc::notification_text(method, None));
            }
            Err(err) => tracing::warn!(server = %upstream.name(), %err, "could not fetch lists"),
        }
    }
    if let Some(loaded) = gateway.loaded.get(index) {
        loaded.store(true, Ordering::Release);
    }
}

/// Releases held tools when an operator accepts their new definition (`writ tools accept`).
async fn follow_pins(gateway: Arc<Gateway>, mut changes: broadcast::Receiver<String>) {
    loop {
        let subject = tokio::select! {
            change = changes.recv() => change,
            () = gateway.shutdown.cancelled() => return,
        };
        match subject {
            Ok(subject) => gateway.tools.pin_changed(&subject).await,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Missed some: re-check every server's tools from its current list.
                for (index, upstream) in gateway.upstreams.iter().enumerate() {
                    refresh(&gateway, index, upstream, &[ListKind::Tools]).await;
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn sweep_sessions(gateway: Arc<Gateway>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(30)) => gateway.sessions.sweep(),
            () = gateway.shutdown.cancelled() => return,
        }
    }
}

/// The HTTP routes, without a socket (usable from tests with `tower::ServiceExt`).
pub fn app(gateway: Arc<Gateway>) -> Router {
    let token_routes = gateway
        .guard()
        .map(|g| token::endpoints::routes(g.tokens.clone()))
        .unwrap_or_default();
    Router::new()
        .route(
            "/mcp",
            axum::routing::post(front_door::post)
                .get(front_door::get)
                .delete(front_door::delete),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(gateway)
        .merge(token_routes)
}

async fn readyz(State(gateway): State<Arc<Gateway>>) -> Response {
    let servers: serde_json::Map<String, Value> = gateway
        .upstreams
        .iter()
        .map(|u| (u.name().to_string(), Value::Bool(u.is_ready())))
        .collect();
    let ready = gateway.is_ready();
    let audit = gateway.audit().map(|a| a.is_healthy());
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(json!({ "ready": ready, "servers": servers, "audit": audit })),
    )
        .into_response()
}

/// A running gateway.
#[derive(Debug)]
pub struct Running {
    local_addr: SocketAddr,
    gateway: Arc<Gateway>,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Binds the listener and starts serving; upstreams connect in the background. With
    /// authentication on, the state is kept in the SQLite store at `store.path`, opened
    /// here: a convenience for tests and embedders; the binary opens its store itself and
    /// calls [`Running::start_with_store`].
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        Self::launch(config, None, Arc::new(SystemClock)).await
    }

    /// [`Running::start`] with `store` as the gateway's state, whichever backend it is,
    /// instead of opening one at `store.path`. With authentication off the gateway keeps
    /// no state and `store` is not used.
    pub async fn start_with_store(
        config: &Config,
        store: Arc<dyn writ_store::Store>,
    ) -> Result<Self, StartError> {
        Self::launch(config, Some(store), Arc::new(SystemClock)).await
    }

    /// [`Running::start_with_store`] with `clock` as the time everything that depends
    /// on it is decided at — a writ's validity, a task's expiry, DPoP proofs' age, the
    /// time in policy's context and on audit records — instead of the machine's clock:
    /// tests pass a [`writ_core::clock::ManualClock`] and move it.
    pub async fn start_with(
        config: &Config,
        store: Arc<dyn writ_store::Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartError> {
        Self::launch(config, Some(store), clock).await
    }

    async fn launch(
        config: &Config,
        store: Option<Arc<dyn writ_store::Store>>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartError> {
        let listener = tokio::net::TcpListener::bind(config.gateway.listen)
            .await
            .map_err(|error| StartError::Listen {
                addr: config.gateway.listen,
                error,
            })?;
        let local_addr = listener.local_addr().map_err(|error| StartError::Listen {
            addr: config.gateway.listen,
            error,
        })?;
        let shutdown = CancellationToken::new();
        let access = match config.gateway.auth {
            AuthMode::Off => {
                tracing::warn!(
                    "authentication is OFF (`gateway.auth = \"off\"`): anyone who reaches {local_addr} may call every tool, without policy or tool pinning; use this for local development only"
                );
                None
            }
            AuthMode::On => {
                let store: Arc<dyn writ_store::Store> = match store {
                    Some(store) => store,
                    None => Arc::new(
                        writ_store::SqliteStore::open(&config.store.path)
                            .await
                            .map_err(|error| StartError::Store {
                                path: config.store.path.clone(),
                                error,
                            })?,
                    ),
                };
                let audit = audit::AuditLog::start(
                    store.clone(),
                    &config.audit,
                    shutdown.clone(),
                    clock.clone(),
                )
                .await
                .map_err(|error| StartError::Audit {
                    path: config.store.path.clone(),
                    error,
                })?;
                audit.note(events::config_loaded(config)).await;
                let policies =
                    policy::Policies::load(&config.policy, clock.clone()).map_err(|error| {
                        StartError::Policy {
                            dir: config.policy.dir.clone(),
                            error,
                        }
                    })?;
                audit
                    .note(events::policy_loaded(&policies.current(), "start"))
                    .await;
                policies.spawn_watcher(shutdown.clone(), Some(audit.clone()));
                let base = config
                    .gateway
                    .public_url
                    .clone()
                    .unwrap_or_else(|| format!("http://{local_addr}"));
                let tokens = token::TokenService::start(
                    config,
                    &base,
                    store.clone(),
                    policies.clone(),
                    audit.clone(),
                    clock.clone(),
                )
                .await?;
                tokens.spawn_followers(shutdown.clone());
                Some(Access {
                    tokens,
                    policies,
                    store,
                    audit,
                })
            }
        };
        let gateway = Gateway::start(config, local_addr, access, shutdown.clone(), clock)?;
        let router = app(gateway.clone());
        let drain = shutdown.clone();
        let server = tokio::spawn(async move {
            let serve = axum::serve(listener, router)
                .with_graceful_shutdown(async move { drain.cancelled().await });
            if let Err(err) = serve.await {
                tracing::error!(%err, "the HTTP server stopped");
            }
        });
        Ok(Self {
            local_addr,
            gateway,
            shutdown,
            server,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The `/mcp` URL on the bound address.
    pub fn mcp_url(&self) -> String {
        format!("http://{}/mcp", self.local_addr)
    }

    pub fn is_ready(&self) -> bool {
        self.gateway.is_ready()
    }

    /// Waits until every upstream is ready, or `within` passes; true when ready.
    pub async fn wait_ready(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while !self.gateway.is_ready() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// A token that, when cancelled, starts a graceful shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, drains in-flight calls (up to `drain`), then stops upstreams.
    pub async fn shutdown(self, drain: Duration) {
        self.shutdown.cancel();
        self.finish(drain).await;
    }

    /// Serves until the shutdown token is cancelled, then drains like `shutdown`.
    pub async fn run_until_shutdown(self, drain: Duration) {
        self.shutdown.cancelled().await;
        self.finish(drain).await;
    }

    async fn finish(self, drain: Duration) {
        let mut server = self.server;
        if tokio::time::timeout(drain, &mut server).await.is_err() {
            tracing::warn!("in-flight calls did not finish within {drain:?}; stopping anyway");
            server.abort();
        }
        for upstream in &self.gateway.upstreams {
            upstream.stop().await;
        }
        // Last: the drained calls' outcomes are in the chain before its final checkpoint.
        if let Some(audit) = self.gateway.audit() {
            audit.close().await;
        }
    }
}
