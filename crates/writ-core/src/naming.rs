//! Names of servers and of the tools Writ exposes.
//!
//! Every tool reaches an agent as `server.tool`. The MCP specification (2025-11-25 and
//! later) limits a tool name to 1–128 characters from `A-Z a-z 0-9 _ - .`; a server name
//! may not contain `.`, so the first `.` in an exposed name always splits server from tool,
//! whatever characters the upstream tool name itself uses.

use std::fmt;

/// The longest tool name the MCP specification allows.
pub const MAX_TOOL_NAME_LEN: usize = 128;

/// The longest server name Writ accepts, leaving room for the tool part of a name.
pub const MAX_SERVER_NAME_LEN: usize = 48;

/// A validated server name: `[a-z0-9_-]`, starting with a letter or digit, at most 48 bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerName(String);

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "server name `{0}` must be 1 to 48 characters of a-z, 0-9, `_` or `-`, starting with a letter or digit"
    )]
    InvalidServer(String),
    #[error("tool name `{0}` must be 1 to 128 characters of A-Z, a-z, 0-9, `_`, `-` or `.`")]
    InvalidTool(String),
}

impl ServerName {
    pub fn parse(name: &str) -> Result<Self, NameError> {
        let valid_char =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
        let starts_well = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if name.len() <= MAX_SERVER_NAME_LEN && starts_well && name.chars().all(valid_char) {
            Ok(Self(name.to_owned()))
        } else {
            Err(NameError::InvalidServer(name.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ServerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// True when `name` is a tool name the MCP specification accepts.
pub fn is_valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOOL_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The name an agent sees for `tool` on `server`: `server.tool`.
pub fn namespaced(server: &ServerName, tool: &str) -> Result<String, NameError> {
    let name = format!("{server}.{tool}");
    if is_valid_tool_name(&name) {
        Ok(name)
    } else {
        Err(NameError::InvalidTool(name))
    }
}

/// Splits an exposed name at its first `.` into server and upstream tool name.
pub fn split_namespaced(name: &str) -> Option<(&str, &str)> {
    name.split_once('.')
        .filter(|(server, tool)| !server.is_empty() && !tool.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_are_lowercase_without_dots() {
        assert!(ServerName::parse("notes").is_ok());
        assert!(ServerName::parse("crm-2_eu").is_ok());
        assert!(ServerName::parse("").is_err());
        assert!(ServerName::parse("Notes").is_err());
        assert!(ServerName::parse("a.b").is_err());
        assert!(ServerName::parse("-lead").is_err());
        assert!(ServerName::parse(&"a".repeat(49)).is_err());
    }

    #[test]
    fn namespaced_names_split_at_the_first_dot() {
        let server = ServerName::parse("fs").unwrap();
        let name = namespaced(&server, "dir.list").unwrap();
        assert_eq!(name, "fs.dir.list");
        assert_eq!(split_namespaced(&name), Some(("fs", "dir.list")));
        assert_eq!(split_namespaced("nodot"), None);
        assert_eq!(split_namespaced(".x"), None);
    }

    #[test]
    fn namespaced_names_respect_the_spec_limit() {
        let server = ServerName::parse("fs").unwrap();
        assert!(namespaced(&server, &"t".repeat(125)).is_ok());
        assert!(namespaced(&server, &"t".repeat(126)).is_err());
        assert!(namespaced(&server, "has space").is_err());
    }
}
