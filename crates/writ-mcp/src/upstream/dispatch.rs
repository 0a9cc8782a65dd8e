//! Matching what an upstream sends to the calls waiting for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use writ_core::naming::ServerName;

use super::{ListKind, ProgressRoute, ServerInfo, UpstreamError, UpstreamEvent};
use crate::jsonrpc::{self, Message, Notification};

type Outcome = Result<Box<RawValue>, UpstreamError>;

/// Shared by a link's reader and its callers: pending requests by Writ's own id, progress
/// routes by Writ's own token, and the event channel.
#[derive(Debug)]
pub(super) struct Dispatcher {
    server: ServerName,
    next_id: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<Outcome>>>,
    progress: Mutex<HashMap<String, ProgressRoute>>,
    events: broadcast::Sender<UpstreamEvent>,
    cancels: mpsc::Sender<u64>,
    cancel_rx: Mutex<Option<mpsc::Receiver<u64>>>,
    /// True while the server is initialised; calls wait on it.
    ready: watch::Sender<bool>,
    /// What the server said in its last `initialize`.
    info: std::sync::RwLock<Option<Arc<ServerInfo>>>,
}

/// What `handle` found in one message from the upstream.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Handled {
    /// The answer to Writ's request with this id.
    Answer(u64),
    /// Anything else; `reply` is what to send back (to a server-initiated request).
    Other { reply: Option<String> },
}

impl Dispatcher {
    pub(super) fn new(server: ServerName) -> Self {
        let (events, _) = broadcast::channel(64);
        let (cancels, cancel_rx) = mpsc::channel(super::CANCEL_BACKLOG);
        Self {
            server,
            next_id: AtomicU64::new(1),
            pending: Mutex::default(),
            progress: Mutex::default(),
            events,
            cancels,
            cancel_rx: Mutex::new(Some(cancel_rx)),
            ready: watch::Sender::new(false),
            info: std::sync::RwLock::new(None),
        }
    }

    /// The server answered `initialize`: calls may go, lists must be fetched again.
    pub(super) fn became_ready(&self, info: ServerInfo) {
        tracing::info!(server = %self.server, protocol = %info.protocol_version, "upstream ready");
        *self.info.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(info));
        self.ready.send_replace(true);
        self.emit(UpstreamEvent::Ready);
    }

    /// The server went away (its process exited); calls wait for the next `became_ready`.
    pub(super) fn went_down(&self) {
        self.ready.send_replace(false);
    }

    pub(super) fn ready(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    pub(super) fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    pub(super) fn info(&self) -> Option<Arc<ServerInfo>> {
        self.info
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<UpstreamEvent> {
        self.events.subscribe()
    }

    pub(super) fn emit(&self, event: UpstreamEvent) {
        let _ = self.events.send(event);
    }

    /// The ids of calls abandoned before their answer, for the link to cancel upstream.
    pub(super) fn take_cancels(&self) -> Option<mpsc::Receiver<u64>> {
        self.cancel_rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Reserves an id for a request and rewrites its progress token to one Writ owns.
    pub(super) fn register(
        self: &Arc<Self>,
        mut params: Option<Map<String, Value>>,
        progress: Option<ProgressRoute>,
    ) -> (u64, Pending) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let mut token = None;
        if let Some(meta) = params
            .as_mut()
            .and_then(|p| p.get_mut("_meta"))
            .and_then(Value::as_object_mut)
        {
            match progress {
                Some(route) if meta.contains_key("progressToken") => {
                    let ours = format!("writ-{id}");
                    meta.insert("progressToken".into(), Value::String(ours.clone()));
                    lock(&self.progress).insert(ours.clone(), route);
                    token = Some(ours);
                }
                _ => {
                    meta.remove("progressToken");
                }
            }
        }
        let params = params.map(|p| jsonrpc::to_raw(&p));
        (
            id,
            Pending {
                id,
                rx: Some(rx),
                params,
                token,
                dispatcher: self.clone(),
                done: false,
            },
        )
    }

    /// Fails every waiting call, e.g. when the child process died.
    pub(super) fn fail_all(&self, reason: &str) {
        let pending: Vec<_> = lock(&self.pending).drain().collect();
        for (_, tx) in pending {
            let _ = tx.send(Err(UpstreamError::Unavailable {
                server: self.server.clone(),
                reason: reason.to_owned(),
            }));
        }
        lock(&self.progress).clear();
    }

    /// Fails one waiting call with a specific error (e.g. an HTTP status).
    pub(super) fn fail(&self, id: u64, error: UpstreamError) {
        if let Some(tx) = lock(&self.pending).remove(&id) {
            let _ = tx.send(Err(error));
        }
    }

    /// Takes one message text from the upstream.
    pub(super) fn handle(&self, text: &str) -> Handled {
        let message = match jsonrpc::parse_message(text) {
            Ok(message) => message,
            Err(err) => {
                tracing::warn!(server = %self.server, %err, "ignoring a malformed message from the upstream");
                return Handled::Other { reply: None };
            }
        };
        match message {
            Message::Response(response) => {
                let Some(id) = response.id.as_u64() else {
                    tracing::warn!(server = %self.server, "ignoring an answer to an id Writ never sent");
                    return Handled::Other { reply: None };
                };
                match lock(&self.pending).remove(&id) {
                    Some(tx) => {
                        let _ = tx.send(response.outcome.map_err(UpstreamError::Rpc));
                    }
                    None => {
                        tracing::debug!(server = %self.server, id, "late answer for a finished call")
                    }
                }
                Handled::Answer(id)
            }
            Message::Notification(notification) => {
                self.notification(notification);
                Handled::Other { reply: None }
            }
            Message::Request(request) => {
                // Writ offers no client capabilities upstream (sampling, roots, elicitation);
                // only ping is answered.
                let reply = if request.method == "ping" {
                    jsonrpc::result_response(
                        request.id.as_raw(),
                        &jsonrpc::to_raw(&serde_json::json!({})),
                    )
                } else {
                    jsonrpc::error_response(
                        Some(request.id.as_raw()),
                        jsonrpc::code::METHOD_NOT_FOUND,
                        &format!(
                            "Writ does not offer `{}` to upstream servers",
                            request.method
                        ),
                        None,
                    )
                };
                Handled::Other { reply: Some(reply) }
            }
        }
    }

    fn notification(&self, notification: Notification) {
        match notification.method.as_str() {
            "notifications/progress" => self.progress(notification),
            "notifications/tools/list_changed" => {
                self.emit(UpstreamEvent::ListChanged(ListKind::Tools))
            }
            "notifications/prompts/list_changed" => {
                self.emit(UpstreamEvent::ListChanged(ListKind::Prompts))
            }
            "notifications/resources/list_changed" => {
                self.emit(UpstreamEvent::ListChanged(ListKind::Resources))
            }
            "notifications/message" => {
                tracing::info!(server = %self.server, params = notification.params.as_deref().map_or("", RawValue::get), "upstream log");
            }
            other => {
                tracing::debug!(server = %self.server, method = other, "upstream notification not forwarded")
            }
        }
    }

    /// Passes progress on with the agent's own token.
    fn progress(&self, notification: Notification) {
        let Some(mut params) = notification
            .params
            .and_then(|p| serde_json::from_str::<Map<String, Value>>(p.get()).ok())
        else {
            return;
        };
        let Some(token) = params.get("progressToken").and_then(Value::as_str) else {
            return;
        };
        let Some(route) = lock(&self.progress).get(token).cloned() else {
            return;
        };
        params.insert("progressToken".into(), route.client_token);
        let _ = route.sink.try_send(Notification {
            method: notification.method,
            params: Some(jsonrpc::to_raw(&params)),
        });
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A call waiting for its answer. Dropped before the answer, it tells the link to cancel.
#[derive(Debug)]
pub(super) struct Pending {
    id: u64,
    rx: Option<oneshot::Receiver<Outcome>>,
    params: Option<Box<RawValue>>,
    token: Option<String>,
    dispatcher: Arc<Dispatcher>,
    done: bool,
}

impl Pending {
    pub(super) fn params(&mut self) -> Option<Box<RawValue>> {
        self.params.take()
    }

    pub(super) async fn outcome(&mut self) -> Outcome {
        let server = self.dispatcher.server.clone();
        let outcome = match self.rx.take() {
            Some(rx) => rx.await.unwrap_or_else(|_| {
                Err(UpstreamError::Unavailable {
                    server,
                    reason: "the link closed".into(),
                })
            }),
            None => Err(UpstreamError::Unavailable {
                server,
                reason: "the call was already answered".into(),
            }),
        };
        self.done = true;
        outcome
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if let Some(token) = &self.token {
            lock(&self.dispatcher.progress).remove(token);
        }
        if !self.done && lock(&self.dispatcher.pending).remove(&self.id).is_some() {
            let _ = self.dispatcher.cancels.try_send(self.id);
        }
    }
}

/// The params of `notifications/cancelled` for Writ's request `id`.
pub(super) fn cancelled_params(id: u64) -> Box<RawValue> {
    jsonrpc::to_raw(
        &serde_json::json!({ "requestId": id, "reason": "the agent cancelled the call or it timed out" }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dispatcher() -> Arc<Dispatcher> {
        Arc::new(Dispatcher::new(ServerName::parse("s").unwrap()))
    }

    #[tokio::test]
    async fn answers_reach_their_caller() {
        let d = dispatcher();
        let (id, mut pending) = d.register(None, None);
        assert_eq!(
            d.handle(&format!(
                r#"{{"jsonrpc":"2.0","id":{id},"result":{{"ok":true}}}}"#
            )),
            Handled::Answer(id)
        );
        assert_eq!(pending.outcome().await.unwrap().get(), r#"{"ok":true}"#);
    }

    #[tokio::test]
    async fn progress_goes_back_with_the_agents_token() {
        let d = dispatcher();
        let (sink, mut rx) = mpsc::channel(8);
        let params =
            serde_json::from_str(r#"{"name":"t","_meta":{"progressToken":"client-7"}}"#).unwrap();
        let route = ProgressRoute {
            client_token: Value::String("client-7".into()),
            sink,
        };
        let (id, mut pending) = d.register(Some(params), Some(route));
        let sent = pending.params().unwrap();
        assert!(
            sent.get().contains(&format!("\"writ-{id}\"")),
            "{}",
            sent.get()
        );
        d.handle(&format!(r#"{{"jsonrpc":"2.0","method":"notifications/progress","params":{{"progressToken":"writ-{id}","progress":1}}}}"#));
        let note = rx.recv().await.unwrap();
        assert!(note.params.unwrap().get().contains("\"client-7\""));
    }

    #[tokio::test]
    async fn a_token_without_a_route_is_removed() {
        let d = dispatcher();
        let params = serde_json::from_str(r#"{"_meta":{"progressToken":1}}"#).unwrap();
        let (_, mut pending) = d.register(Some(params), None);
        assert_eq!(pending.params().unwrap().get(), r#"{"_meta":{}}"#);
    }

    #[tokio::test]
    async fn an_abandoned_call_is_cancelled_upstream() {
        let d = dispatcher();
        let mut cancels = d.take_cancels().unwrap();
        let (id, pending) = d.register(None, None);
        drop(pending);
        assert_eq!(cancels.recv().await, Some(id));
    }

    #[test]
    fn server_requests_other_than_ping_are_refused() {
        let d = dispatcher();
        let Handled::Other { reply: Some(reply) } = d
            .handle(r#"{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{}}"#)
        else {
            panic!("reply expected");
        };
        assert!(reply.contains("-32601"));
    }
}
