//! What happened, before it is sealed into a record.

use serde_json::{Map, Value};

use crate::Error;

/// The kinds of event Writ records. A kind is lowercase `a-z`, `0-9` and `_` in
/// dot-separated segments (see [`is_valid_kind`]); these are the ones the gateway uses.
pub mod kinds {
    /// A writer began its chain: the first record of every chain, naming the key its
    /// checkpoints are signed with (`key_id`, `public_key`), so that key is itself
    /// hash-chained.
    pub const AUDIT_STARTED: &str = "audit.started";
    /// An agent proved who it is.
    pub const AUTH_SUCCEEDED: &str = "auth.succeeded";
    /// An agent failed to prove who it is.
    pub const AUTH_FAILED: &str = "auth.failed";
    /// A task was begun (a purpose and the tools it may use).
    pub const TASK_BEGUN: &str = "task.begun";
    /// A task was delegated to another agent, attenuated.
    pub const TASK_DELEGATED: &str = "task.delegated";
    /// A task was completed by its agent.
    pub const TASK_COMPLETED: &str = "task.completed";
    /// A task was revoked.
    pub const TASK_REVOKED: &str = "task.revoked";
    /// A task ran out of time.
    pub const TASK_EXPIRED: &str = "task.expired";
    /// Tools were listed to an agent: which were shown and which were hidden.
    pub const TOOLS_DISCOVERED: &str = "tools.discovered";
    /// A call was decided: decision, policies, reasons, argument digest, redacted arguments.
    pub const CALL_DECIDED: &str = "call.decided";
    /// A call was forwarded: the server and the credential reference used (never its value).
    pub const CALL_FORWARDED: &str = "call.forwarded";
    /// A call came back: status, latency, result digest.
    pub const CALL_COMPLETED: &str = "call.completed";
    /// A call strayed from its task's purpose.
    pub const CALL_DEVIATION: &str = "call.deviation";
    /// Prompts were listed to an agent: which were shown and which were hidden.
    pub const PROMPTS_DISCOVERED: &str = "prompts.discovered";
    /// Resources or resource templates were listed to an agent (`list` says which).
    pub const RESOURCES_DISCOVERED: &str = "resources.discovered";
    /// A prompt get (or a completion of its arguments) was decided; fields as `call.decided`.
    pub const PROMPT_DECIDED: &str = "prompt.decided";
    /// A prompt get strayed from its task's purpose.
    pub const PROMPT_DEVIATION: &str = "prompt.deviation";
    /// A prompt get was forwarded.
    pub const PROMPT_FORWARDED: &str = "prompt.forwarded";
    /// A prompt get came back.
    pub const PROMPT_COMPLETED: &str = "prompt.completed";
    /// A resource read (or a completion of a template's arguments) was decided, with its URI.
    pub const RESOURCE_DECIDED: &str = "resource.decided";
    /// A resource read strayed from its task's purpose.
    pub const RESOURCE_DEVIATION: &str = "resource.deviation";
    /// A resource read was forwarded.
    pub const RESOURCE_FORWARDED: &str = "resource.forwarded";
    /// A resource read came back.
    pub const RESOURCE_COMPLETED: &str = "resource.completed";
    /// A call waits for a human's approval.
    pub const APPROVAL_REQUESTED: &str = "approval.requested";
    /// An approver granted a call.
    pub const APPROVAL_GRANTED: &str = "approval.granted";
    /// An approver denied a call.
    pub const APPROVAL_DENIED: &str = "approval.denied";
    /// An approval was not answered in time.
    pub const APPROVAL_EXPIRED: &str = "approval.expired";
    /// A granted approval was spent on the call it was for.
    pub const APPROVAL_USED: &str = "approval.used";
    /// A policy set was loaded (its hash).
    pub const POLICY_LOADED: &str = "policy.loaded";
    /// A tool's definition changed from the pinned one.
    pub const TOOL_DRIFTED: &str = "tool.drifted";
    /// A changed tool definition was accepted and pinned.
    pub const TOOL_ACCEPTED: &str = "tool.accepted";
    /// A signing key was rotated.
    pub const KEY_ROTATED: &str = "key.rotated";
    /// The configuration was loaded (its hash).
    pub const CONFIG_LOADED: &str = "config.loaded";

    /// Every kind above.
    pub const ALL: &[&str] = &[
        AUDIT_STARTED,
        AUTH_SUCCEEDED,
        AUTH_FAILED,
        TASK_BEGUN,
        TASK_DELEGATED,
        TASK_COMPLETED,
        TASK_REVOKED,
        TASK_EXPIRED,
        TOOLS_DISCOVERED,
        CALL_DECIDED,
        CALL_FORWARDED,
        CALL_COMPLETED,
        CALL_DEVIATION,
        PROMPTS_DISCOVERED,
        RESOURCES_DISCOVERED,
        PROMPT_DECIDED,
        PROMPT_DEVIATION,
        PROMPT_FORWARDED,
        PROMPT_COMPLETED,
        RESOURCE_DECIDED,
        RESOURCE_DEVIATION,
        RESOURCE_FORWARDED,
        RESOURCE_COMPLETED,
        APPROVAL_REQUESTED,
        APPROVAL_GRANTED,
        APPROVAL_DENIED,
        APPROVAL_EXPIRED,
        APPROVAL_USED,
        POLICY_LOADED,
        TOOL_DRIFTED,
        TOOL_ACCEPTED,
        KEY_ROTATED,
        CONFIG_LOADED,
    ];
}

/// The longest kind accepted, in bytes.
pub const MAX_KIND_LEN: usize = 64;

/// Whether `kind` is a well-formed event kind: 1 to 64 bytes of dot-separated, non-empty
/// segments of `a-z`, `0-9` and `_`, starting with a letter (`call.decided`).
pub fn is_valid_kind(kind: &str) -> bool {
    kind.len() <= MAX_KIND_LEN
        && kind.starts_with(|c: char| c.is_ascii_lowercase())
        && kind.split('.').all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// What happened, before it is sealed by a [`Chain`](crate::Chain). The kind is checked
/// when the event is made, so an event always has a valid one.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    // INVARIANT: `is_valid_kind(&kind)`; only `Event::new` sets it.
    pub(crate) kind: String,
    /// The actor chain: the acting agent first, then on whose behalf it acts, outward.
    pub actor: Vec<String>,
    /// The task the event belongs to.
    pub task: Option<String>,
    /// The tool concerned (its gateway-facing name).
    pub tool: Option<String>,
    /// The decision, for events that carry one (`allow`, `deny`, `approval`…).
    pub decision: Option<String>,
    /// Everything else, by name. Encoded as canonical JSON, so key order never matters.
    pub fields: Map<String, Value>,
}

impl Event {
    /// An event of `kind` with no actor, task, tool, decision or fields yet.
    pub fn new(kind: &str) -> Result<Self, Error> {
        if !is_valid_kind(kind) {
            return Err(Error::InvalidKind(kind.to_owned()));
        }
        Ok(Event {
            kind: kind.to_owned(),
            actor: Vec::new(),
            task: None,
            tool: None,
            decision: None,
            fields: Map::new(),
        })
    }

    /// The event's kind.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// With this actor chain (the acting agent first).
    #[must_use]
    pub fn with_actor<S: Into<String>>(mut self, actor: impl IntoIterator<Item = S>) -> Self {
        self.actor = actor.into_iter().map(Into::into).collect();
        self
    }

    /// With this task.
    #[must_use]
    pub fn with_task(mut self, task: impl Into<String>) -> Self {
        self.task = Some(task.into());
        self
    }

    /// With this tool.
    #[must_use]
    pub fn with_tool(mut self, tool: impl Into<String>) -> Self {
        self.tool = Some(tool.into());
        self
    }

    /// With this decision.
    #[must_use]
    pub fn with_decision(mut self, decision: impl Into<String>) -> Self {
        self.decision = Some(decision.into());
        self
    }

    /// With one more field (replacing one of the same name).
    #[must_use]
    pub fn with_field(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.fields.insert(name.into(), value.into());
        self
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn every_listed_kind_is_valid_and_distinct() {
        let mut seen = std::collections::BTreeSet::new();
        for kind in kinds::ALL {
            assert!(is_valid_kind(kind), "{kind}");
            assert!(seen.insert(*kind), "{kind} twice");
        }
        assert_eq!(kinds::ALL.len(), 33);
    }

    #[test]
    fn malformed_kinds_are_refused_by_name() {
        for kind in [
            "",
            "Call.decided",
            "call..decided",
            ".call",
            "call.",
            "call decided",
            "1call",
            "call-decided",
            "call.décidé",
            &"a".repeat(65),
        ] {
            let err = Event::new(kind).unwrap_err();
            assert!(err.to_string().contains(&format!("`{kind}`")), "{err}");
        }
        assert!(Event::new("x.y_2.z").is_ok());
    }

    #[test]
    fn builders_fill_the_members() {
        let event = Event::new(kinds::CALL_DECIDED)
            .unwrap()
            .with_actor(["agent:a", "user:u"])
            .with_task("t1")
            .with_tool("fs.read")
            .with_decision("allow")
            .with_field("policies", vec!["p1"]);
        assert_eq!(event.kind(), "call.decided");
        assert_eq!(event.actor, ["agent:a", "user:u"]);
        assert_eq!(event.task.as_deref(), Some("t1"));
        assert_eq!(event.tool.as_deref(), Some("fs.read"));
        assert_eq!(event.decision.as_deref(), Some("allow"));
        assert_eq!(event.fields["policies"], serde_json::json!(["p1"]));
    }
}
