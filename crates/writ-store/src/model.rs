//! The records the store keeps.

use serde::{Deserialize, Serialize};
use writ_core::task::ToolPattern;

/// A workload principal: one identity per agent, never shared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// `agt_` followed by 32 hex digits; the `iss`/`sub` of its assertions.
    pub id: String,
    /// Unique, chosen by the operator.
    pub name: String,
    pub team: Option<String>,
    pub owner: Option<String>,
    pub credential: AgentCredential,
    pub disabled: bool,
    pub created_at: i64,
}

/// How an agent proves who it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AgentCredential {
    /// A public key registered in Writ (PEM, SubjectPublicKeyInfo), for RFC 7523 assertions.
    PublicKey { algorithm: String, pem: String },
    /// Keys published by the agent's own JWKS endpoint, for RFC 7523 assertions.
    JwksUrl { url: String },
    /// An identity proven elsewhere: an OIDC issuer's subject, or a SPIFFE ID (issuer
    /// `spiffe`).
    External { issuer: String, subject: String },
}

/// The life of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Active,
    Completed,
    Revoked,
    Expired,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Completed => "completed",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "completed" => Some(Self::Completed),
            "revoked" => Some(Self::Revoked),
            "expired" => Some(Self::Expired),
            _ => None,
        }
    }
}

/// A grant to one agent for one declared purpose. Its token is the writ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// `tsk_` followed by 32 hex digits.
    pub id: String,
    /// The agent that holds the writ and makes the calls (the delegate, for a child task).
    pub agent_id: String,
    /// The agent on whose behalf the chain began (the root task's agent).
    pub subject_id: String,
    pub parent_id: Option<String>,
    /// 0 for a task begun directly; one more per delegation hop.
    pub depth: u32,
    pub purpose: String,
    /// What kind of work the task is (for policy), as the agent declared it; `None` when it
    /// did not say.
    pub category: Option<String>,
    /// What the task may touch: `server.tool`, `server.*`, `*` and the rest of
    /// [`ToolPattern`]'s forms. Serialized as the patterns' text.
    #[serde(with = "patterns")]
    pub tools: Vec<ToolPattern>,
    pub data_classes: Vec<String>,
    pub max_calls: Option<u64>,
    pub calls: u64,
    pub state: TaskState,
    /// Why the task left the active state, when it has.
    pub reason: Option<String>,
    /// How the agent proved itself: `key`, `jwks`, `oidc`, `spiffe_jwt`, `spiffe_x509`.
    pub proof: String,
    /// RFC 7638 thumbprint of the DPoP key the writ is bound to.
    pub jkt: Option<String>,
    /// The `act` claim of the writ (nested actors), as JSON; null without delegation.
    pub actor_chain: serde_json::Value,
    pub created_at: i64,
    pub expires_at: i64,
    pub ended_at: Option<i64>,
}

impl Task {
    /// The task's tool patterns as written, comma-separated, for messages.
    pub fn tool_list(&self) -> String {
        let texts: Vec<String> = self.tools.iter().map(ToString::to_string).collect();
        texts.join(", ")
    }
}

/// Tool patterns as their text, in JSON as in the store.
mod patterns {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};
    use writ_core::task::ToolPattern;

    pub(super) fn serialize<S: Serializer>(
        patterns: &[ToolPattern],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(patterns.iter().map(ToString::to_string))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<ToolPattern>, D::Error> {
        Vec::<String>::deserialize(deserializer)?
            .iter()
            .map(|text| ToolPattern::parse(text).map_err(D::Error::custom))
            .collect()
    }
}

/// A one-time identifier a request spent (an assertion's `jti`), to remember until
/// `expires_at` so that it is never accepted again; as in
/// [`ReplayCache::remember_once`](crate::ReplayCache::remember_once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneTime {
    pub scope: String,
    pub id: String,
    pub expires_at: i64,
}

/// A task to record, with the one-time identifier spent by the request that begins
/// it, if that request spent one; for [`TaskStore::begin_tasks`](crate::TaskStore::begin_tasks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTask {
    pub task: Task,
    pub once: Option<OneTime>,
}

/// What became of one [`NewTask`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begun {
    /// The task is recorded and its identifier remembered.
    Recorded,
    /// The identifier was already remembered: a replay. The task is not recorded.
    Replayed,
}

/// Which tasks [`TaskStore::tasks`](crate::TaskStore::tasks) returns. Empty fields match
/// everything.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub agent_id: Option<String>,
    pub state: Option<TaskState>,
    pub limit: Option<u32>,
}

/// One of Writ's own signing keys for the writs it issues.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    pub kid: String,
    /// `EdDSA` or `ES256`.
    pub algorithm: String,
    /// PKCS#8 PEM. Never logged: `Debug` leaves it out.
    pub private_pem: String,
    pub created_at: i64,
    /// Set when a newer key took over; the key still verifies until its writs expire.
    pub retired_at: Option<i64>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish_non_exhaustive()
    }
}

/// An entry of the change feed that keeps every gateway's memory in step with the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: u64,
    pub kind: ChangeKind,
    /// The task id, agent id or key id concerned; `server.tool` for a tool pin (server
    /// names never contain `.`, tool names may).
    pub subject: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A task left the active state.
    Task,
    /// An agent was disabled.
    Agent,
    /// A signing key was added or dropped.
    Key,
    /// A tool pin's drift appeared, changed or went away, or an operator accepted it.
    Tool,
}

/// A tool definition Writ trusts: pinned on first sight, changed only by an operator.
///
/// Pinning is the defence against a "rug pull": an upstream MCP server changing what a
/// tool says it does after the tool was trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolPin {
    pub server: String,
    /// The upstream's own tool name.
    pub tool: String,
    /// Hex SHA-256 of the accepted definition (the caller computes it).
    pub hash: String,
    /// The accepted definition: name, description, input schema and annotations.
    pub definition: serde_json::Value,
    pub pinned_at: i64,
    /// A different definition the server has offered since, held back until accepted.
    pub drift: Option<ToolDrift>,
}

/// One tool as a server's list offers it, for
/// [`ToolPinStore::observe_tools`](crate::ToolPinStore::observe_tools).
#[derive(Debug, Clone, Copy)]
pub struct OfferedTool<'a> {
    /// The upstream's own tool name.
    pub tool: &'a str,
    /// Hex SHA-256 of `definition`.
    pub hash: &'a str,
    pub definition: &'a serde_json::Value,
}

/// A definition an upstream offers for a pinned tool that differs from the pinned one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolDrift {
    /// Hex SHA-256 of the offered definition.
    pub hash: String,
    pub definition: serde_json::Value,
    /// When this definition was first offered; a server repeating it does not move this.
    pub seen_at: i64,
}

/// The public half of a writer's audit checkpoint key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditKey {
    /// What checkpoints name it by.
    pub key_id: String,
    /// The writer whose checkpoints it signs.
    pub writer: String,
    /// Ed25519 public key, 32 bytes, base64url without padding.
    pub public_key: String,
    /// Milliseconds since the Unix epoch.
    pub created_ms: i64,
}

/// Which audit records [`AuditStore::audit_query`](crate::AuditStore::audit_query)
/// returns. Every condition set must hold; none set means every record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// An agent anywhere in the record's actor chain (acting, or acted for).
    pub agent: Option<String>,
    pub task: Option<String>,
    pub tool: Option<String>,
    /// A kind (`call.decided`), or every kind under a prefix (`call.*`).
    pub kind: Option<String>,
    pub decision: Option<String>,
    /// The call id every record of one call carries in its `call` field.
    pub call: Option<String>,
    /// At or after this time (milliseconds since the Unix epoch).
    pub since_ms: Option<i64>,
    /// Before this time.
    pub until_ms: Option<i64>,
    /// Only records stored after this position (from an earlier [`AuditEntry`]), for
    /// following the log as it grows.
    pub after: Option<u64>,
    /// At most this many; 0 means the store's default (1,000).
    pub limit: u32,
    /// Newest first instead of oldest first.
    pub newest_first: bool,
}

/// A stored audit record and its position in the store: positions grow in commit order
/// across every writer, so "everything after position P" follows the whole log.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub position: u64,
    pub record: writ_audit::Record,
}

/// What retention removed: per writer, the new anchor (the last record pruned).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    pub records: u64,
    /// `(writer, anchor seq)` for every chain that lost records.
    pub anchors: Vec<(String, u64)>,
}
