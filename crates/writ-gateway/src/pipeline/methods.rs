//! The method table: every MCP method Writ answers, in which protocol eras, and which
//! path through the pipeline it takes. Both eras read this one table, so a method cannot
//! be governed in one era and forgotten in the other.

use writ_mcp::revision::ProtocolVersion;

use crate::catalog::ListName;

/// What a method touches, which decides the stages it passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// Answered by Writ alone; touches no server (`ping`, `server/discover`).
    Local(Local),
    /// A list: every item is screened (held, outside the task, policy `discover_*`) and
    /// only what passes is shown.
    List(ListName),
    /// A use of one tool, prompt or resource: task check, pin check, policy, approval,
    /// record, credentials, forward, answer, outcome.
    Use(Use),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Local {
    Ping,
    Discover,
    /// Kept per session, never forwarded: see `pipeline::set_level`.
    SetLogLevel,
    /// Answered by Writ: see [`Use::Subscribe`].
    Unsubscribe,
}

/// The uses, and what each one touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Use {
    /// `tools/call`.
    CallTool,
    /// `prompts/get`.
    GetPrompt,
    /// `resources/read`.
    ReadResource,
    /// `completion/complete`: decided as getting the prompt or reading the resource it
    /// completes for, since its answers reveal what they hold.
    Complete,
    /// `resources/subscribe`: decided and recorded as a read of the resource, then
    /// answered by Writ, not forwarded. Writ holds one upstream session for every agent,
    /// so an upstream subscription would be every agent's, and Writ does not relay
    /// `notifications/resources/updated` yet (it does not declare `resources.subscribe`).
    Subscribe,
}

/// In which protocol eras a method exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eras {
    Both,
    /// 2025-03-26 to 2025-11-25 only (2026-07-28 removed it).
    SessionOnly,
    /// 2026-07-28 only.
    StatelessOnly,
}

const TABLE: &[(&str, Method, Eras)] = &[
    ("ping", Method::Local(Local::Ping), Eras::SessionOnly),
    (
        "server/discover",
        Method::Local(Local::Discover),
        Eras::StatelessOnly,
    ),
    (
        "logging/setLevel",
        Method::Local(Local::SetLogLevel),
        Eras::SessionOnly,
    ),
    ("tools/list", Method::List(ListName::Tools), Eras::Both),
    ("prompts/list", Method::List(ListName::Prompts), Eras::Both),
    (
        "resources/list",
        Method::List(ListName::Resources),
        Eras::Both,
    ),
    (
        "resources/templates/list",
        Method::List(ListName::ResourceTemplates),
        Eras::Both,
    ),
    ("tools/call", Method::Use(Use::CallTool), Eras::Both),
    ("prompts/get", Method::Use(Use::GetPrompt), Eras::Both),
    ("resources/read", Method::Use(Use::ReadResource), Eras::Both),
    (
        "completion/complete",
        Method::Use(Use::Complete),
        Eras::Both,
    ),
    // 2026-07-28 removed subscriptions along with sessions.
    (
        "resources/subscribe",
        Method::Use(Use::Subscribe),
        Eras::SessionOnly,
    ),
    (
        "resources/unsubscribe",
        Method::Local(Local::Unsubscribe),
        Eras::SessionOnly,
    ),
];

/// The method `name` as spoken in `version`, `None` when Writ does not know it there.
pub(crate) fn lookup(name: &str, version: ProtocolVersion) -> Option<Method> {
    let (_, method, eras) = TABLE.iter().find(|(n, _, _)| *n == name)?;
    let exists = match eras {
        Eras::Both => true,
        Eras::SessionOnly => !version.is_stateless(),
        Eras::StatelessOnly => version.is_stateless(),
    };
    exists.then_some(*method)
}

impl Use {
    /// Whether the use spends one call of the task's budget. A completion only helps
    /// fill in arguments, and a subscription reads nothing; the get or read they lead
    /// to spends one.
    pub(crate) fn spends_budget(self) -> bool {
        !matches!(self, Self::Complete | Self::Subscribe)
    }

    /// Whether Writ answers the use itself once it is decided and recorded.
    pub(crate) fn answered_by_writ(self) -> bool {
        matches!(self, Self::Subscribe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_eras_read_one_table() {
        let session = ProtocolVersion::ALL
            .into_iter()
            .find(|v| !v.is_stateless())
            .unwrap();
        let stateless = ProtocolVersion::ALL
            .into_iter()
            .find(|v| v.is_stateless())
            .unwrap();
        for (name, _, _) in TABLE {
            assert!(
                lookup(name, session).is_some() || lookup(name, stateless).is_some(),
                "{name}"
            );
        }
        assert_eq!(
            lookup("resources/read", stateless),
            Some(Method::Use(Use::ReadResource))
        );
        assert_eq!(lookup("ping", stateless), None, "2026-07-28 removed it");
        assert_eq!(lookup("logging/setLevel", stateless), None);
        assert_eq!(lookup("resources/subscribe", stateless), None);
        assert_eq!(lookup("server/discover", session), None);
        assert_eq!(
            lookup("resources/subscribe", session),
            Some(Method::Use(Use::Subscribe))
        );
        assert_eq!(lookup("tools/unknown", session), None);
    }
}
