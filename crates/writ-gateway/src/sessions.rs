//! Agent-facing sessions of the 2025 revisions (`Mcp-Session-Id`).
//!
//! These are Writ's own sessions with the agent; they are unrelated to Writ's sessions
//! with upstream servers, which never leave the gateway.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use writ_mcp::revision::ProtocolVersion;

#[derive(Debug)]
pub struct Session {
    pub id: String,
    pub version: ProtocolVersion,
    /// The agent whose writ opened the session; only it may use the session
    /// (`None` with authentication off).
    pub agent: Option<String>,
    born: Instant,
    /// Milliseconds after `born` of the last request, for idle expiry.
    last_seen_ms: AtomicU64,
    /// In-flight requests by the agent's request id text, so `notifications/cancelled` can stop them.
    in_flight: Mutex<HashMap<String, CancellationToken>>,
    /// Cancelled when the session ends, closing its streams.
    pub ended: CancellationToken,
    /// The log level the agent asked for (`logging/setLevel`): this session's own, never
    /// passed to upstreams, whose sessions every agent shares.
    log_level: Mutex<Option<String>>,
}

impl Session {
    fn touch(&self) {
        let now = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_seen_ms.store(now, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        self.born.elapsed().saturating_sub(Duration::from_millis(
            self.last_seen_ms.load(Ordering::Relaxed),
        ))
    }

    /// Registers an in-flight request; the guard unregisters it when dropped.
    pub fn track(self: &Arc<Self>, request_id: &str) -> InFlight {
        let token = CancellationToken::new();
        lock(&self.in_flight).insert(request_id.to_owned(), token.clone());
        InFlight {
            session: self.clone(),
            request_id: request_id.to_owned(),
            token,
        }
    }

    /// Keeps the log level the agent set for this session.
    pub fn set_log_level(&self, level: &str) {
        *lock(&self.log_level) = Some(level.to_owned());
    }

    /// The log level the agent set, if it set one.
    pub fn log_level(&self) -> Option<String> {
        lock(&self.log_level).clone()
    }

    /// Cancels an in-flight request of this session; unknown ids are ignored, as the spec asks.
    pub fn cancel(&self, request_id: &str) {
        if let Some(token) = lock(&self.in_flight).remove(request_id) {
            token.cancel();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug)]
pub struct InFlight {
    session: Arc<Session>,
    request_id: String,
    pub token: CancellationToken,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.session.in_flight).remove(&self.request_id);
    }
}

#[derive(Debug)]
pub struct Sessions {
    by_id: RwLock<HashMap<String, Arc<Session>>>,
    idle_timeout: Duration,
    max: usize,
}

impl Sessions {
    pub fn new(idle_timeout: Duration, max: usize) -> Self {
        Self {
            by_id: RwLock::default(),
            idle_timeout,
            max,
        }
    }

    /// Starts a session with a fresh unguessable id (122 random bits).
    /// `None` when `max` sessions are open even after forgetting idle ones.
    pub fn create(&self, version: ProtocolVersion, agent: Option<String>) -> Option<Arc<Session>> {
        if self.len() >= self.max {
            self.sweep();
            if self.len() >= self.max {
                return None;
            }
        }
        let session = Arc::new(Session {
            id: uuid::Uuid::new_v4().simple().to_string(),
            version,
            agent,
            born: Instant::now(),
            last_seen_ms: AtomicU64::new(0),
            in_flight: Mutex::default(),
            ended: CancellationToken::new(),
            log_level: Mutex::default(),
        });
        self.by_id
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(session.id.clone(), session.clone());
        Some(session)
    }

    fn len(&self) -> usize {
        self.by_id
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The live session with this id; an idle-expired one is removed and not returned.
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        let session = self
            .by_id
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()?;
        if session.idle_for() > self.idle_timeout {
            self.end(id);
            return None;
        }
        session.touch();
        Some(session)
    }

    /// Ends a session; true when it existed.
    pub fn end(&self, id: &str) -> bool {
        let removed = self
            .by_id
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        removed.map(|session| session.ended.cancel()).is_some()
    }

    /// Forgets sessions idle past the timeout; run periodically.
    pub fn sweep(&self) {
        let expired: Vec<String> = self
            .by_id
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|s| s.idle_for() > self.idle_timeout)
            .map(|s| s.id.clone())
            .collect();
        for id in expired {
            self.end(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle() {
        let sessions = Sessions::new(Duration::from_millis(20), 10);
        let session = sessions.create(ProtocolVersion::V2025_06_18, None).unwrap();
        assert!(sessions.get(&session.id).is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert!(sessions.get(&session.id).is_none());
        assert!(session.ended.is_cancelled());
    }

    #[test]
    fn sessions_are_capped() {
        let sessions = Sessions::new(Duration::from_secs(60), 2);
        let first = sessions.create(ProtocolVersion::V2025_11_25, None).unwrap();
        assert!(
            sessions
                .create(ProtocolVersion::V2025_11_25, None)
                .is_some()
        );
        assert!(
            sessions
                .create(ProtocolVersion::V2025_11_25, None)
                .is_none()
        );
        sessions.end(&first.id);
        assert!(
            sessions
                .create(ProtocolVersion::V2025_11_25, None)
                .is_some()
        );
    }

    #[test]
    fn cancelling_reaches_the_in_flight_request() {
        let sessions = Sessions::new(Duration::from_secs(60), 10);
        let session = sessions.create(ProtocolVersion::V2025_11_25, None).unwrap();
        let guard = session.track("7");
        session.cancel("7");
        assert!(guard.token.is_cancelled());
        session.cancel("unknown");
    }
}
