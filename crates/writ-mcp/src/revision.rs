//! MCP protocol revisions Writ speaks at its front door.

use std::fmt;

/// A protocol revision. The first three are the session era (initialize, `Mcp-Session-Id`);
/// 2026-07-28 is stateless (every request carries its own protocol version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    V2025_03_26,
    V2025_06_18,
    V2025_11_25,
    V2026_07_28,
}

impl ProtocolVersion {
    /// Every revision Writ accepts, oldest first.
    pub const ALL: [Self; 4] = [
        Self::V2025_03_26,
        Self::V2025_06_18,
        Self::V2025_11_25,
        Self::V2026_07_28,
    ];

    /// The newest revision that uses `initialize` and sessions.
    pub const LATEST_SESSION: Self = Self::V2025_11_25;

    /// What a session-era server assumes when a request has no `MCP-Protocol-Version` header
    /// (the 2025-06-18 transport rules say 2025-03-26).
    pub const ASSUMED_WITHOUT_HEADER: Self = Self::V2025_03_26;

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V2025_03_26 => "2025-03-26",
            Self::V2025_06_18 => "2025-06-18",
            Self::V2025_11_25 => "2025-11-25",
            Self::V2026_07_28 => "2026-07-28",
        }
    }

    /// Only 2025-03-26 allows JSON-RPC batch arrays.
    pub fn allows_batch(self) -> bool {
        self == Self::V2025_03_26
    }

    /// The stateless era: no initialize, no sessions.
    pub fn is_stateless(self) -> bool {
        self >= Self::V2026_07_28
    }

    /// The session-era revision to answer an `initialize` that asked for `requested`: the
    /// same one when Writ speaks it, otherwise the newest session-era revision.
    pub fn negotiate(requested: &str) -> Self {
        match Self::parse(requested) {
            Some(version) if !version.is_stateless() => version,
            _ => Self::LATEST_SESSION,
        }
    }

    /// The revisions as a comma-separated list, for error messages.
    pub fn supported_list() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_keeps_a_known_session_revision_and_falls_back_otherwise() {
        assert_eq!(
            ProtocolVersion::negotiate("2025-06-18"),
            ProtocolVersion::V2025_06_18
        );
        assert_eq!(
            ProtocolVersion::negotiate("2024-11-05"),
            ProtocolVersion::V2025_11_25
        );
        assert_eq!(
            ProtocolVersion::negotiate("2026-07-28"),
            ProtocolVersion::V2025_11_25
        );
    }

    #[test]
    fn eras_and_batches() {
        assert!(ProtocolVersion::V2025_03_26.allows_batch());
        assert!(!ProtocolVersion::V2025_06_18.allows_batch());
        assert!(ProtocolVersion::V2026_07_28.is_stateless());
        assert!(!ProtocolVersion::V2025_11_25.is_stateless());
    }
}
