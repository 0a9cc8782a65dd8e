//! The front door: `/mcp` over Streamable HTTP, for both protocol eras.
//!
//! Every POST passes the same checks in order — origin, content type, body size, framing,
//! protocol version and session (or, in the stateless era, the mirrored headers) — before
//! anything reaches the pipeline. A refusal is a JSON-RPC error with the HTTP status the
//! specification names, and nothing is forwarded.

use std::pin::Pin;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use writ_mcp::jsonrpc::{self, Body as Frame, FrameError, Message, Notification, Request, code};
use writ_mcp::revision::ProtocolVersion;
use writ_mcp::sse;
use writ_mcp::upstream::ProgressRoute;

use crate::Gateway;
use crate::error::GatewayError;
use crate::pipeline::{self, Admitted, Incoming};
use crate::sessions::Session;
use crate::token::{Denied, endpoints};

/// The most a 2025-03-26 batch's answers may add up to before the rest is refused.
const MAX_BATCH_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// How many progress notifications of one call wait for a slow agent; past that, newer
/// ones are dropped (progress is advisory; the answer itself is never dropped).
const PROGRESS_BACKLOG: usize = 64;

mod stateless;

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
const METHOD_HEADER: &str = "mcp-method";
const NAME_HEADER: &str = "mcp-name";
const VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";

/// A refusal at the door: HTTP status plus a JSON-RPC error body.
fn refuse(error: &GatewayError, id: Option<&RawValue>) -> Response {
    json_response(error.status(), error.to_response(id))
}

/// A refusal sent before the request body was read: the connection cannot carry another
/// request (the unread body is still on it), so say it closes, and clients open a new one.
fn refuse_unread(error: &GatewayError) -> Response {
    let mut response = refuse(error, None);
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn client_error(status: StatusCode, code: i64, message: impl Into<String>) -> GatewayError {
    GatewayError::client(status, code, message)
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `POST /mcp`.
pub async fn post(State(gateway): State<Arc<Gateway>>, headers: HeaderMap, body: Body) -> Response {
    if let Err(error) = check_origin(&gateway, &headers) {
        return refuse_unread(&error);
    }
    let content_type = header_str(&headers, header::CONTENT_TYPE.as_str()).unwrap_or_default();
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        let error = client_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::INVALID_REQUEST,
            "`Content-Type` must be `application/json`",
        );
        return refuse_unread(&error);
    }
    let accept = Accept::from(&headers);
    if !accept.json && !accept.sse {
        let error = client_error(
            StatusCode::NOT_ACCEPTABLE,
            code::INVALID_REQUEST,
            "`Accept` must list `application/json` and `text/event-stream`",
        );
        return refuse_unread(&error);
    }
    let bytes = match axum::body::to_bytes(body, gateway.config.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => {
            let limit = gateway.config.max_body_bytes;
            let error = client_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                code::INVALID_REQUEST,
                format!("body is larger than the limit of {limit} bytes"),
            );
            return refuse_unread(&error);
        }
    };
    // Authentication comes after the body is read (within its size limit): a refused
    // request then leaves the connection reusable, which a DPoP nonce retry relies on.
    let caller = match authenticate(&gateway, &headers, "POST").await {
        Ok(caller) => caller,
        Err(refused) => return refused,
    };
    let header_version = match header_str(&headers, VERSION_HEADER) {
        None => None,
        Some(text) => match ProtocolVersion::parse(text) {
            Some(version) => Some(version),
            None => return refuse(&GatewayError::unsupported_version(text), None),
        },
    };
    let frame = match jsonrpc::parse_body(&bytes, gateway.config.max_json_depth) {
        Ok(frame) => frame,
        Err(err) => return refuse_frame(&err),
    };
    match frame {
        Frame::Single(Message::Request(request)) if request.method == "initialize" => {
            initialize(&gateway, &request, &caller).await
        }
        Frame::Single(message)
            if header_version.is_some_and(ProtocolVersion::is_stateless)
                || carries_version_meta(&message) =>
        {
            stateless::post(&gateway, &headers, header_version, message, accept, caller).await
        }
        Frame::Batch(_) if header_version.is_some_and(ProtocolVersion::is_stateless) => refuse(
            &client_error(
                StatusCode::BAD_REQUEST,
                code::INVALID_REQUEST,
                "revision 2026-07-28 has no batches; send one message per request",
            ),
            None,
        ),
        frame => with_session(&gateway, &headers, header_version, frame, accept, caller).await,
    }
}

/// The pipeline's first stage, authenticate: the writ, its DPoP proof when bound, and
/// its task's state. It runs once per HTTP request, here at the door, because the
/// session a request names belongs to the agent it admits, and a refusal carries the
/// challenge the MCP authorization specification asks for. With authentication off,
/// anyone is admitted.
async fn authenticate(
    gateway: &Gateway,
    headers: &HeaderMap,
    method: &str,
) -> Result<Admitted, Response> {
    let Some(guard) = gateway.guard() else {
        return Ok(Admitted::Anyone);
    };
    let tokens = &guard.tokens;
    let authorization = header_str(headers, header::AUTHORIZATION.as_str());
    match tokens
        .authenticator
        .authenticate(authorization, header_str(headers, "dpop"), method)
        .await
    {
        Ok(caller) => Ok(Admitted::Agent(caller)),
        Err(denied) => {
            tracing::info!(?denied, "request not let in");
            // A missing writ or a nonce request is the protocol's normal first step,
            // not a failed attempt; an invalid writ or proof is recorded.
            if let Denied::InvalidToken(reason) | Denied::InvalidProof(reason) = &denied {
                let audit = &guard.audit;
                let error = match denied {
                    Denied::InvalidProof(_) => "invalid_dpop_proof",
                    _ => "invalid_token",
                };
                audit
                    .note(
                        crate::events::event(writ_audit::kinds::AUTH_FAILED)
                            .with_field("endpoint", "mcp")
                            .with_field("error", error)
                            .with_field("reason", reason.clone()),
                    )
                    .await;
            }
            let error = GatewayError::Denied(denied.clone());
            Err(endpoints::challenge(
                tokens,
                &denied,
                error.to_response(None),
            ))
        }
    }
}

fn refuse_frame(err: &FrameError) -> Response {
    let error = client_error(StatusCode::BAD_REQUEST, err.code(), err.to_string());
    refuse(&error, err.id().map(jsonrpc::Id::as_raw))
}

/// What the agent accepts in answer.
#[derive(Debug, Clone, Copy)]
struct Accept {
    json: bool,
    sse: bool,
}

impl From<&HeaderMap> for Accept {
    fn from(headers: &HeaderMap) -> Self {
        // An absent `Accept` means anything, as in HTTP.
        let Some(accept) = header_str(headers, header::ACCEPT.as_str()) else {
            return Self {
                json: true,
                sse: true,
            };
        };
        let accept = accept.to_ascii_lowercase();
        let any = accept.contains("*/*");
        Self {
            json: any || accept.contains("application/json"),
            sse: any || accept.contains("text/event-stream"),
        }
    }
}

/// Browsers send `Origin`; a page on another origin must not reach a local gateway
/// (DNS rebinding). Requests without `Origin` come from non-browser agents.
fn check_origin(gateway: &Gateway, headers: &HeaderMap) -> Result<(), GatewayError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin
        .to_str()
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_ascii_lowercase();
    if gateway.allowed_origins.contains(&origin) {
        Ok(())
    } else {
        Err(client_error(
            StatusCode::FORBIDDEN,
            code::INVALID_REQUEST,
            format!("origin `{origin}` is not allowed; add it to `gateway.allowed_origins`"),
        ))
    }
}

fn carries_version_meta(message: &Message) -> bool {
    let params = match message {
        Message::Request(r) => r.params.as_deref(),
        Message::Notification(n) => n.params.as_deref(),
        Message::Response(_) => None,
    };
    params.is_some_and(|p| p.get().contains(VERSION_META))
}

async fn initialize(gateway: &Gateway, request: &Request, admitted: &Admitted) -> Response {
    let requested = request
        .params
        .as_deref()
        .and_then(|p| serde_json::from_str::<Map<String, Value>>(p.get()).ok())
        .and_then(|p| {
            p.get("protocolVersion")
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
    let Some(requested) = requested else {
        let error = GatewayError::invalid_params("`params.protocolVersion` is missing");
        return refuse(&error, Some(request.id.as_raw()));
    };
    let version = ProtocolVersion::negotiate(&requested);
    let agent = admitted.caller().map(|c| c.agent_id().to_owned());
    let Some(session) = gateway.sessions.create(version, agent) else {
        let error = client_error(
            StatusCode::SERVICE_UNAVAILABLE,
            code::INTERNAL_ERROR,
            "Writ holds as many sessions as `gateway.max_sessions` allows; end one or try later",
        );
        tracing::warn!("session limit reached; refusing initialize");
        return refuse(&error, Some(request.id.as_raw()));
    };
    let result = jsonrpc::to_raw(&gateway.initialize_result(version));
    let mut response = json_response(
        StatusCode::OK,
        jsonrpc::result_response(request.id.as_raw(), &result),
    );
    if let Ok(value) = HeaderValue::from_str(&session.id) {
        response.headers_mut().insert(SESSION_HEADER, value);
    }
    tracing::debug!(session = %session.id, %version, "session started");
    response
}

/// The session era: `Mcp-Session-Id` names the session; the header version, when sent,
/// must be the one negotiated.
async fn with_session(
    gateway: &Arc<Gateway>,
    headers: &HeaderMap,
    header_version: Option<ProtocolVersion>,
    frame: Frame,
    accept: Accept,
    caller: Admitted,
) -> Response {
    let session = match session_of(gateway, headers, &caller) {
        Ok(session) => session,
        Err(error) => return refuse(&error, None),
    };
    // A supported session-era revision other than the negotiated one is tolerated, as the
    // official SDK servers do (clients probe with 2025-03-26 on raw requests); the session's
    // own revision governs behaviour. Unknown revisions were refused (400) before this.
    if let Some(version) = header_version.filter(|v| *v != session.version) {
        tracing::debug!(session = %session.id, header = %version, negotiated = %session.version, "protocol version header differs from the session's");
    }
    match frame {
        Frame::Single(Message::Request(request)) => {
            answer(
                gateway.clone(),
                request,
                session.version,
                Some(session),
                accept,
                caller,
            )
            .await
        }
        Frame::Single(Message::Notification(notification)) => {
            on_notification(&session, &notification);
            StatusCode::ACCEPTED.into_response()
        }
        // Writ sends agents no requests, so an agent's response has nothing to answer.
        Frame::Single(Message::Response(_)) => StatusCode::ACCEPTED.into_response(),
        Frame::Batch(items) if !session.version.allows_batch() => {
            let _ = items;
            let error = client_error(
                StatusCode::BAD_REQUEST,
                code::INVALID_REQUEST,
                format!(
                    "revision {} has no batches; send one message per request",
                    session.version
                ),
            );
            refuse(&error, None)
        }
        Frame::Batch(items) => batch(gateway, &session, items, &caller).await,
    }
}

/// The session the request names. A session belongs to the agent that opened it: another
/// agent's writ finds no such session, as if the id were unknown.
fn session_of(
    gateway: &Gateway,
    headers: &HeaderMap,
    admitted: &Admitted,
) -> Result<Arc<Session>, GatewayError> {
    let Some(id) = header_str(headers, SESSION_HEADER) else {
        return Err(client_error(
            StatusCode::BAD_REQUEST,
            code::INVALID_REQUEST,
            "`Mcp-Session-Id` is missing; send `initialize` first",
        ));
    };
    let agent = admitted.caller().map(|c| c.agent_id());
    let owned = |s: &Arc<Session>| s.agent.as_deref() == agent;
    gateway.sessions.get(id).filter(owned).ok_or_else(|| {
        client_error(
            StatusCode::NOT_FOUND,
            code::INVALID_REQUEST,
            "session not found or expired; send `initialize` to start a new one",
        )
    })
}

fn on_notification(session: &Session, notification: &Notification) {
    if notification.method == "notifications/cancelled" {
        let request_id = notification
            .params
            .as_deref()
            .and_then(|p| serde_json::from_str::<Map<String, Value>>(p.get()).ok())
            .and_then(|p| p.get("requestId").map(Value::to_string));
        if let Some(request_id) = request_id {
            session.cancel(&request_id);
        }
    }
}

/// A 2025-03-26 batch: notifications are taken, requests answered in one JSON array, in
/// order; each request passes every stage on its own, so it sees the task as the
/// requests before it left it (a deviation's revocation included).
async fn batch(
    gateway: &Arc<Gateway>,
    session: &Arc<Session>,
    items: Vec<Result<Message, FrameError>>,
    admitted: &Admitted,
) -> Response {
    let mut answers: Vec<String> = Vec::new();
    // Answers are held until the whole batch is done: past a limit, the rest of the
    // batch is refused unforwarded rather than held without limit.
    let mut answered = 0usize;
    for item in items {
        let before = answers.len();
        match item {
            Ok(Message::Request(request)) if request.method == "initialize" => {
                answers.push(
                    client_error(
                        StatusCode::OK,
                        code::INVALID_REQUEST,
                        "`initialize` cannot be part of a batch",
                    )
                    .to_response(Some(request.id.as_raw())),
                );
            }
            Ok(Message::Request(request)) if answered > MAX_BATCH_ANSWER_BYTES => {
                answers.push(
                    client_error(
                        StatusCode::OK,
                        code::INVALID_REQUEST,
                        format!("the batch's answers passed {MAX_BATCH_ANSWER_BYTES} bytes; send the rest in another batch"),
                    )
                    .to_response(Some(request.id.as_raw())),
                );
            }
            Ok(Message::Request(request)) => {
                let _in_flight = session.track(request.id.as_raw().get());
                let incoming = Incoming {
                    request: &request,
                    version: session.version,
                    progress: None,
                    session: Some(session),
                    admitted,
                };
                answers.push(match pipeline::handle(gateway, incoming).await {
                    Ok(result) => jsonrpc::result_response(request.id.as_raw(), &result),
                    Err(error) => error.to_response(Some(request.id.as_raw())),
                });
            }
            Ok(Message::Notification(notification)) => on_notification(session, &notification),
            Ok(Message::Response(_)) => {}
            Err(err) => answers.push(
                client_error(StatusCode::OK, err.code(), err.to_string())
                    .to_response(err.id().map(jsonrpc::Id::as_raw)),
            ),
        }
        answered += answers
            .get(before..)
            .map_or(0, |new| new.iter().map(String::len).sum());
    }
    if answers.is_empty() {
        return StatusCode::ACCEPTED.into_response();
    }
    json_response(StatusCode::OK, format!("[{}]", answers.join(",")))
}

/// Runs the pipeline for one request and answers in JSON, or as an SSE stream when the
/// agent asked for progress and accepts streams.
async fn answer(
    gateway: Arc<Gateway>,
    request: Request,
    version: ProtocolVersion,
    session: Option<Arc<Session>>,
    accept: Accept,
    admitted: Admitted,
) -> Response {
    let progress_token = request
        .params
        .as_deref()
        .filter(|p| p.get().contains("progressToken"))
        .and_then(|p| serde_json::from_str::<Map<String, Value>>(p.get()).ok())
        .and_then(|p| p.get("_meta").and_then(|m| m.get("progressToken")).cloned());
    let in_flight = session.as_ref().map(|s| s.track(request.id.as_raw().get()));
    let cancelled = in_flight
        .as_ref()
        .map(|f| f.token.clone())
        .unwrap_or_default();

    let (route, notes) = match progress_token {
        Some(token) if accept.sse => {
            let (sink, notes) = mpsc::channel(PROGRESS_BACKLOG);
            (
                Some(ProgressRoute {
                    client_token: token,
                    sink,
                }),
                Some(notes),
            )
        }
        _ => (None, None),
    };
    let tokens = gateway.guard().map(|g| g.tokens.clone());
    let work = async move {
        let _in_flight = in_flight;
        let incoming = Incoming {
            request: &request,
            version,
            progress: route,
            session: session.as_deref(),
            admitted: &admitted,
        };
        let outcome = tokio::select! {
            outcome = pipeline::handle(&gateway, incoming) => outcome,
            () = cancelled.cancelled() => Err(client_error(StatusCode::OK, code::INVALID_REQUEST, "the request was cancelled")),
        };
        match outcome {
            Ok(result) => (
                StatusCode::OK,
                jsonrpc::result_response(request.id.as_raw(), &result),
                None::<Denied>,
            ),
            Err(error) => {
                // A stateless server answers an unknown method with 404 (2026-07-28).
                let status = match &error {
                    GatewayError::Client { code, .. }
                        if version.is_stateless() && *code == code::METHOD_NOT_FOUND =>
                    {
                        StatusCode::NOT_FOUND
                    }
                    other => other.status(),
                };
                let denied = match error {
                    GatewayError::Denied(ref denied) => Some(denied.clone()),
                    _ => None,
                };
                (status, error.to_response(Some(request.id.as_raw())), denied)
            }
        }
    };
    match notes {
        None => match (work.await, tokens) {
            ((_, body, Some(denied)), Some(tokens)) => endpoints::challenge(&tokens, &denied, body),
            ((status, body, _), _) => json_response(status, body),
        },
        Some(notes) => sse_response(progress_stream(
            Box::pin(async move {
                let (status, body, _) = work.await;
                (status, body)
            }),
            notes,
        )),
    }
}

type Work = Pin<Box<dyn Future<Output = (StatusCode, String)> + Send>>;

/// Progress notifications as they come, then the response; the stream ends after it.
fn progress_stream(
    work: Work,
    notes: mpsc::Receiver<Notification>,
) -> impl futures_util::Stream<Item = Bytes> + Send {
    futures_util::stream::unfold((Some(work), notes), |(work, mut notes)| async move {
        let mut work = work?;
        tokio::select! {
            biased;
            Some(note) = notes.recv() => {
                let text = jsonrpc::notification_text(&note.method, note.params.as_deref());
                Some((sse::encode_event(&text, None), (Some(work), notes)))
            }
            (_, body) = &mut work => Some((sse::encode_event(&body, None), (None, notes))),
        }
    })
}

fn sse_response(stream: impl futures_util::Stream<Item = Bytes> + Send + 'static) -> Response {
    let body = Body::from_stream(stream.map(Ok::<_, std::convert::Infallible>));
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// GET and DELETE exist only in the session era: the refusal, if this request gets one
/// (a foreign origin is 403; 2026-07-28 answers them 405).
fn refuse_outside_session_era(gateway: &Gateway, headers: &HeaderMap) -> Option<Response> {
    if let Err(error) = check_origin(gateway, headers) {
        return Some(refuse(&error, None));
    }
    let stateless = header_str(headers, VERSION_HEADER)
        .and_then(ProtocolVersion::parse)
        .is_some_and(ProtocolVersion::is_stateless);
    stateless.then(|| StatusCode::METHOD_NOT_ALLOWED.into_response())
}

/// `GET /mcp`: the session's stream of notifications outside calls (list changes).
pub async fn get(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Some(refused) = refuse_outside_session_era(&gateway, &headers) {
        return refused;
    }
    if !Accept::from(&headers).sse {
        let error = client_error(
            StatusCode::NOT_ACCEPTABLE,
            code::INVALID_REQUEST,
            "`Accept` must list `text/event-stream`",
        );
        return refuse(&error, None);
    }
    let caller = match authenticate(&gateway, &headers, "GET").await {
        Ok(caller) => caller,
        Err(refused) => return refused,
    };
    // The stream is authorised when it opens; notices on it carry no tool results.
    let session = match session_of(&gateway, &headers, &caller) {
        Ok(session) => session,
        Err(error) => return refuse(&error, None),
    };
    let notices = broadcast_rest(gateway.notices.subscribe());
    let until = {
        let ended = session.ended.clone();
        let shutdown = gateway.shutdown.clone();
        async move {
            tokio::select! {
                () = ended.cancelled() => {}
                () = shutdown.cancelled() => {}
            }
        }
    };
    // A comment first, so the agent sees the stream open before any notification.
    let opening = futures_util::stream::once(async { Bytes::from_static(b": writ\n\n") });
    sse_response(opening.chain(notices).take_until(Box::pin(until)))
}

/// The gateway-wide notices (list changes) as SSE events; a slow reader skips what it missed.
fn broadcast_rest(
    rx: tokio::sync::broadcast::Receiver<String>,
) -> impl futures_util::Stream<Item = Bytes> + Send {
    futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(text) => return Some((sse::encode_event(&text, None), rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// `DELETE /mcp`: the agent ends its session.
pub async fn delete(State(gateway): State<Arc<Gateway>>, headers: HeaderMap) -> Response {
    if let Some(refused) = refuse_outside_session_era(&gateway, &headers) {
        return refused;
    }
    let caller = match authenticate(&gateway, &headers, "DELETE").await {
        Ok(caller) => caller,
        Err(refused) => return refused,
    };
    let session = match session_of(&gateway, &headers, &caller) {
        Ok(session) => session,
        Err(error) => return refuse(&error, None),
    };
    if gateway.sessions.end(&session.id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        refuse(
            &client_error(
                StatusCode::NOT_FOUND,
                code::INVALID_REQUEST,
                "session not found or expired",
            ),
            None,
        )
    }
}
