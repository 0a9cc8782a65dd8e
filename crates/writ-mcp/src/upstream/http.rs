//! A Streamable HTTP upstream: one pooled client, one MCP session owned by Writ.

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Response, StatusCode};
use tokio_util::sync::CancellationToken;
use writ_core::config::HttpTransport;
use writ_core::naming::ServerName;

use super::dispatch::{Dispatcher, Handled, cancelled_params};
use super::{UpstreamError, initialize_params, server_info};
use crate::jsonrpc;
use crate::sse;

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const ACCEPT_BOTH: &str = "application/json, text/event-stream";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(15);

#[derive(Debug)]
pub(super) struct HttpLink {
    shared: Arc<Shared>,
    shutdown: CancellationToken,
}

#[derive(Debug)]
struct Shared {
    server: ServerName,
    url: String,
    client: reqwest::Client,
    headers: HeaderMap,
    dispatcher: Arc<Dispatcher>,
    session: RwLock<Option<Session>>,
    /// Serialises re-initialisation so a burst of calls after a 404 starts one session.
    init_lock: tokio::sync::Mutex<()>,
    listener: Mutex<Option<tokio::task::JoinHandle<()>>>,
    shutdown: CancellationToken,
}

#[derive(Debug, Clone)]
struct Session {
    id: Option<HeaderValue>,
    version: HeaderValue,
    generation: u64,
}

impl HttpLink {
    pub(super) fn start(
        server: ServerName,
        config: &HttpTransport,
        dispatcher: Arc<Dispatcher>,
        shutdown: CancellationToken,
    ) -> Result<Self, UpstreamError> {
        let config_error = |reason: String| UpstreamError::Config {
            server: server.clone(),
            reason,
        };
        let mut headers = HeaderMap::new();
        for (key, source) in &config.headers {
            let name = HeaderName::from_bytes(key.as_bytes())
                .map_err(|_| config_error(format!("`{key}` is not a valid header name")))?;
            let value = source.resolve().map_err(|e| config_error(e.to_string()))?;
            let mut value = HeaderValue::from_str(&value)
                .map_err(|_| config_error(format!("the value of header `{key}` is not valid")))?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()
            .map_err(|e| config_error(format!("could not build the HTTP client: {e}")))?;
        let shared = Arc::new(Shared {
            server,
            url: config.url.clone(),
            client,
            headers,
            dispatcher,
            session: RwLock::new(None),
            init_lock: tokio::sync::Mutex::new(()),
            listener: Mutex::new(None),
            shutdown: shutdown.clone(),
        });
        tokio::spawn(connect_with_backoff(shared.clone()));
        if let Some(mut cancels) = shared.dispatcher.take_cancels() {
            let sender = shared.clone();
            tokio::spawn(async move {
                while let Some(id) = cancels.recv().await {
                    let text = jsonrpc::notification_text(
                        "notifications/cancelled",
                        Some(&cancelled_params(id)),
                    );
                    let _ = sender.post(text, sender.session().as_ref()).await;
                }
            });
        }
        Ok(Self { shared, shutdown })
    }

    /// Posts a request and feeds its answer (JSON or an SSE stream) to the dispatcher.
    pub(super) async fn send_request(
        &self,
        id: u64,
        text: String,
        dispatcher: &Dispatcher,
    ) -> Result<(), UpstreamError> {
        let session = self.shared.session();
        let response = self.shared.post(text.clone(), session.as_ref()).await?;
        let response = if response.status() == StatusCode::NOT_FOUND
            && session.as_ref().is_some_and(|s| s.id.is_some())
        {
            // The server forgot our session (restart, expiry): start a new one and retry once.
            tracing::info!(server = %self.shared.server, "upstream session expired; starting a new one");
            self.shared
                .reinitialize(session.map(|s| s.generation))
                .await?;
            self.shared
                .post(text, self.shared.session().as_ref())
                .await?
        } else {
            response
        };
        self.shared.read_answer(id, response, dispatcher).await
    }

    pub(super) async fn send_notification(&self, text: String) -> Result<(), UpstreamError> {
        let session = self.shared.session();
        self.shared.post(text, session.as_ref()).await.map(drop)
    }

    /// Ends the upstream session (DELETE) and the notification listener.
    pub(super) async fn stop(&self) {
        self.shutdown.cancel();
        let listener = self
            .shared
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(listener) = listener {
            listener.abort();
        }
        if let Some(session) = self.shared.session()
            && let Some(id) = session.id
        {
            let request = self
                .shared
                .client
                .delete(&self.shared.url)
                .headers(self.shared.headers.clone())
                .header(SESSION_HEADER, id);
            let _ = tokio::time::timeout(Duration::from_secs(2), request.send()).await;
        }
    }
}

impl Shared {
    fn session(&self) -> Option<Session> {
        self.session
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn unavailable(&self, reason: impl Into<String>) -> UpstreamError {
        UpstreamError::Unavailable {
            server: self.server.clone(),
            reason: reason.into(),
        }
    }

    fn bad(&self, reason: impl Into<String>) -> UpstreamError {
        UpstreamError::BadResponse {
            server: self.server.clone(),
            reason: reason.into(),
        }
    }

    async fn post(
        &self,
        text: String,
        session: Option<&Session>,
    ) -> Result<Response, UpstreamError> {
        let mut request = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, ACCEPT_BOTH)
            .body(text);
        if let Some(session) = session {
            request = request.header(VERSION_HEADER, session.version.clone());
            if let Some(id) = &session.id {
                request = request.header(SESSION_HEADER, id.clone());
            }
        }
        request
            .send()
            .await
            .map_err(|e| self.unavailable(describe(&e)))
    }

    /// Reads the answer to request `id` from a POST response.
    async fn read_answer(
        &self,
        id: u64,
        response: Response,
        dispatcher: &Dispatcher,
    ) -> Result<(), UpstreamError> {
        let status = response.status();
        if !status.is_success() {
            let error = match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    self.unavailable(format!("it refused Writ's credentials (HTTP {status})"))
                }
                _ if status.is_server_error() => self.unavailable(format!("HTTP {status}")),
                _ => self.bad(format!("HTTP {status}")),
            };
            dispatcher.fail(id, error);
            return Ok(());
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if content_type.starts_with("text/event-stream") {
            let mut decoder = sse::Decoder::default();
            let mut body = response.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| {
                    self.unavailable(format!("the answer stream broke: {}", describe(&e)))
                })?;
                let events = decoder.feed(&chunk);
                if decoder.overflowed() {
                    dispatcher.fail(id, self.bad(too_large()));
                    return Ok(());
                }
                for event in events {
                    // Priming events (an id and empty data, for resumability) carry no message.
                    if event.data.trim().is_empty() {
                        continue;
                    }
                    match dispatcher.handle(&event.data) {
                        Handled::Answer(answered) if answered == id => return Ok(()),
                        Handled::Other { reply: Some(reply) } => {
                            let _ = self.post(reply, self.session().as_ref()).await;
                        }
                        _ => {}
                    }
                }
            }
            dispatcher.fail(
                id,
                self.unavailable("the answer stream ended without an answer"),
            );
            Ok(())
        } else if content_type.starts_with("application/json") {
            let mut body = Vec::new();
            let mut response = response;
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| self.unavailable(describe(&e)))?
            {
                if body.len() + chunk.len() > super::MAX_UPSTREAM_MESSAGE {
                    dispatcher.fail(id, self.bad(too_large()));
                    return Ok(());
                }
                body.extend_from_slice(&chunk);
            }
            let text = std::str::from_utf8(&body).map_err(|_| self.bad("the body is not UTF-8"))?;
            if dispatcher.handle(text) != Handled::Answer(id) {
                dispatcher.fail(id, self.bad("the body is not the answer to Writ's request"));
            }
            Ok(())
        } else {
            dispatcher.fail(
                id,
                self.bad(format!("unexpected content type `{content_type}`")),
            );
            Ok(())
        }
    }

    /// Starts a session (initialize + initialized); `seen` is the generation the caller
    /// found stale, so concurrent callers re-initialise once, not once each.
    async fn reinitialize(self: &Arc<Self>, seen: Option<u64>) -> Result<(), UpstreamError> {
        let _guard = self.init_lock.lock().await;
        let current = self.session();
        if let (Some(current), Some(seen)) = (&current, seen)
            && current.generation != seen
        {
            return Ok(());
        }
        let generation = current.map_or(1, |s| s.generation + 1);
        *self.session.write().unwrap_or_else(PoisonError::into_inner) = None;
        let (id, mut pending) = self.dispatcher.register(Some(initialize_params()), None);
        let text = jsonrpc::request_text(id, "initialize", pending.params().as_deref());
        let response = self.post(text, None).await?;
        let session_id = response.headers().get(SESSION_HEADER).cloned();
        self.read_answer(id, response, &self.dispatcher).await?;
        let result = pending.outcome().await?;
        let info = server_info(&self.server, &result)?;
        let version = HeaderValue::from_str(&info.protocol_version)
            .map_err(|_| self.bad("bad protocolVersion"))?;
        let session = Session {
            id: session_id,
            version,
            generation,
        };
        *self.session.write().unwrap_or_else(PoisonError::into_inner) = Some(session.clone());
        let initialized = self
            .post(
                jsonrpc::notification_text("notifications/initialized", None),
                Some(&session),
            )
            .await?;
        if !initialized.status().is_success() {
            return Err(self.bad(format!(
                "`notifications/initialized` got HTTP {}",
                initialized.status()
            )));
        }
        self.start_listener();
        self.dispatcher.became_ready(info);
        Ok(())
    }

    /// Opens the GET stream on which a server sends notifications outside calls
    /// (`list_changed`). A server that answers 405 offers none, which is allowed.
    fn start_listener(self: &Arc<Self>) {
        let shared = self.clone();
        let handle = tokio::spawn(async move {
            loop {
                let Some(session) = shared.session() else {
                    return;
                };
                let mut request = shared
                    .client
                    .get(&shared.url)
                    .headers(shared.headers.clone())
                    .header(ACCEPT, "text/event-stream")
                    .header(VERSION_HEADER, session.version.clone());
                if let Some(id) = &session.id {
                    request = request.header(SESSION_HEADER, id.clone());
                }
                match request.send().await {
                    Ok(response) if response.status().is_success() => {
                        let mut decoder = sse::Decoder::default();
                        let mut body = response.bytes_stream();
                        while let Some(Ok(chunk)) = body.next().await {
                            let events = decoder.feed(&chunk);
                            if decoder.overflowed() {
                                tracing::warn!(server = %shared.server, "{}; listening again", too_large());
                                break;
                            }
                            for event in events {
                                // Priming events (an id and empty data, for resumability) carry no message.
                                if event.data.trim().is_empty() {
                                    continue;
                                }
                                if let Handled::Other { reply: Some(reply) } =
                                    shared.dispatcher.handle(&event.data)
                                {
                                    let _ = shared.post(reply, Some(&session)).await;
                                }
                            }
                        }
                    }
                    Ok(response) if response.status() == StatusCode::METHOD_NOT_ALLOWED => return,
                    Ok(response) => {
                        tracing::debug!(server = %shared.server, status = %response.status(), "notification stream refused")
                    }
                    Err(err) => {
                        tracing::debug!(server = %shared.server, err = %describe(&err), "notification stream failed")
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = shared.shutdown.cancelled() => return,
                }
            }
        });
        let previous = self
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(handle);
        if let Some(previous) = previous {
            previous.abort();
        }
    }
}

/// Keeps trying to start the first session, so `/readyz` turns ready once the server is up.
async fn connect_with_backoff(shared: Arc<Shared>) {
    let mut delay = RETRY_FIRST;
    loop {
        match shared.reinitialize(None).await {
            Ok(()) => return,
            Err(err) => {
                tracing::warn!(server = %shared.server, %err, retry_in = ?delay, "could not connect")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shared.shutdown.cancelled() => return,
        }
        delay = (delay * 2).min(RETRY_MAX);
    }
}

/// A reqwest error without the URL's query string or other noise.
fn describe(err: &reqwest::Error) -> String {
    let kind = if err.is_connect() {
        "could not connect"
    } else if err.is_timeout() {
        "timed out"
    } else if err.is_body() || err.is_decode() {
        "the body could not be read"
    } else {
        "the request failed"
    };
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(err);
    let mut deepest = None;
    while let Some(s) = source {
        deepest = Some(s.to_string());
        source = s.source();
    }
    match deepest {
        Some(cause) => format!("{kind}: {cause}"),
        None => kind.to_owned(),
    }
}

/// Why an answer past [`super::MAX_UPSTREAM_MESSAGE`] is refused.
fn too_large() -> String {
    format!(
        "it sent a message larger than {} MiB",
        super::MAX_UPSTREAM_MESSAGE / (1024 * 1024)
    )
}
