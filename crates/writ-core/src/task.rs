//! What a task may touch, and how delegation narrows it.
//!
//! A task is asked for as an RFC 9396 `authorization_details` entry of type `mcp_task`.
//! This module parses that entry into a [`TaskGrant`], decides whether one grant lies
//! within another (delegation never widens), and matches tool names against the grant.
//! Tool patterns are always written against the namespaced name `server.tool`, whatever
//! names the gateway exposes, so a grant means the same thing under every naming mode.

use std::fmt;

use serde_json::{Map, Value};

use crate::naming::ServerName;
use crate::uri::UriPattern;

/// The `type` of Writ's authorization details entry.
pub const MCP_TASK_TYPE: &str = "mcp_task";
/// The longest purpose text accepted; a purpose is a sentence, not a document.
pub const MAX_PURPOSE_LEN: usize = 1_000;
/// What [`is_label`] accepts, for error messages.
pub const LABEL_RULE: &str = "1 to 64 characters of a-z, 0-9, `_` or `-`";

/// True for a label: a data class, a task category, a tool group.
pub fn is_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}
/// How many tool patterns and data classes one task may list.
pub const MAX_LIST_LEN: usize = 256;

/// What a request touches: one tool, prompt or resource of one server. Task patterns
/// are matched against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// A tool, by its upstream name.
    Tool { server: &'a str, name: &'a str },
    /// A prompt, by its upstream name.
    Prompt { server: &'a str, name: &'a str },
    /// A resource (or a resource template), by URI.
    Resource { server: &'a str, uri: &'a str },
}

impl Target<'_> {
    pub fn server(&self) -> &str {
        match self {
            Self::Tool { server, .. }
            | Self::Prompt { server, .. }
            | Self::Resource { server, .. } => server,
        }
    }
}

/// Which prompts of a server a pattern names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PromptNames {
    Any,
    One(String),
}

/// One entry of a task's `tools` list: what the task may touch.
///
/// | pattern | names |
/// |---|---|
/// | `*` | every tool, prompt and resource of every server |
/// | `server.*` | every tool, prompt and resource of `server` |
/// | `server.tool` | that tool alone |
/// | `server.prompt:*`, `server.prompt:name` | every prompt of `server`, or one |
/// | `server.resource:*` | every resource of `server` |
/// | `server.resource:URI`, `server.resource:PREFIX*` | one resource, or every resource whose URI starts with `PREFIX` |
///
/// MCP tool names cannot hold `:`, so `server.prompt:…` and `server.resource:…` never
/// name a tool. Resource URIs follow [`crate::uri::check`]: a pattern cannot be written
/// (nor a URI matched) that could reach outside its prefix once a server normalises it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ToolPattern {
    /// Everything of every server.
    Any,
    /// Everything of one server.
    Server(ServerName),
    /// One tool.
    Tool(ServerName, String),
    /// Prompts of one server.
    Prompt(ServerName, PromptNames),
    /// Resources of one server.
    Resource(ServerName, UriPattern),
}

const PATTERN_RULE: &str = "`server.tool`, `server.*`, `server.prompt:NAME`, `server.prompt:*`, `server.resource:URI`, `server.resource:PREFIX*` or `*`";

impl ToolPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(Self::Any);
        }
        let Some((server, rest)) = text.split_once('.') else {
            return Err(format!("tool pattern `{text}` must be {PATTERN_RULE}"));
        };
        let server = ServerName::parse(server).map_err(|err| err.to_string())?;
        if rest == "*" {
            return Ok(Self::Server(server));
        }
        if let Some(prompt) = rest.strip_prefix("prompt:") {
            if prompt == "*" {
                return Ok(Self::Prompt(server, PromptNames::Any));
            }
            if !crate::naming::is_valid_tool_name(prompt) || prompt.contains('*') {
                return Err(format!(
                    "tool pattern `{text}`: `{prompt}` is not a prompt name (wildcards only as `server.prompt:*`)"
                ));
            }
            return Ok(Self::Prompt(server, PromptNames::One(prompt.to_owned())));
        }
        if let Some(uri) = rest.strip_prefix("resource:") {
            let uri = UriPattern::parse(uri).map_err(|e| format!("tool pattern `{text}`: {e}"))?;
            return Ok(Self::Resource(server, uri));
        }
        if !crate::naming::is_valid_tool_name(rest) || rest.contains('*') {
            return Err(format!(
                "tool pattern `{text}`: `{rest}` is not a tool name (it must be {PATTERN_RULE})"
            ));
        }
        Ok(Self::Tool(server, rest.to_owned()))
    }

    /// True when `target` falls under this pattern.
    pub fn matches(&self, target: Target<'_>) -> bool {
        match (self, target) {
            (Self::Any, _) => true,
            (Self::Server(s), target) => s.as_str() == target.server(),
            (Self::Tool(s, t), Target::Tool { server, name }) => s.as_str() == server && t == name,
            (Self::Prompt(s, names), Target::Prompt { server, name }) => {
                s.as_str() == server
                    && match names {
                        PromptNames::Any => true,
                        PromptNames::One(one) => one == name,
                    }
            }
            (Self::Resource(s, uris), Target::Resource { server, uri }) => {
                s.as_str() == server && uris.matches(uri)
            }
            _ => false,
        }
    }

    /// The server this pattern is limited to, `None` for `*`.
    pub fn server(&self) -> Option<&ServerName> {
        match self {
            Self::Any => None,
            Self::Server(s) | Self::Tool(s, _) | Self::Prompt(s, _) | Self::Resource(s, _) => {
                Some(s)
            }
        }
    }

    /// True when everything `other` names is also named by `self`.
    pub fn covers(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Any, _) => true,
            (_, Self::Any) => false,
            (Self::Server(s), other) => other.server() == Some(s),
            (Self::Tool(s, t), Self::Tool(os, ot)) => s == os && t == ot,
            (Self::Prompt(s, names), Self::Prompt(os, other_names)) => {
                s == os
                    && match (names, other_names) {
                        (PromptNames::Any, _) => true,
                        (PromptNames::One(a), PromptNames::One(b)) => a == b,
                        (PromptNames::One(_), PromptNames::Any) => false,
                    }
            }
            (Self::Resource(s, uris), Self::Resource(os, other_uris)) => {
                s == os && uris.covers(other_uris)
            }
            _ => false,
        }
    }
}

impl fmt::Display for ToolPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Server(s) => write!(f, "{s}.*"),
            Self::Tool(s, t) => write!(f, "{s}.{t}"),
            Self::Prompt(s, PromptNames::Any) => write!(f, "{s}.prompt:*"),
            Self::Prompt(s, PromptNames::One(name)) => write!(f, "{s}.prompt:{name}"),
            Self::Resource(s, uris) => write!(f, "{s}.resource:{uris}"),
        }
    }
}

/// True when `pattern` lies under at least one of `within`.
pub fn covered_by(pattern: &ToolPattern, within: &[ToolPattern]) -> bool {
    within.iter().any(|outer| outer.covers(pattern))
}

/// What one task may do: the parsed `mcp_task` authorization details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskGrant {
    pub purpose: String,
    /// What kind of work this is (`research`, `maintenance`…), for policy; optional.
    pub category: Option<String>,
    pub tools: Vec<ToolPattern>,
    pub data_classes: Vec<String>,
    pub max_calls: Option<u64>,
}

/// Why an `authorization_details` value was refused; the text is the OAuth
/// `error_description` of an `invalid_authorization_details` error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DetailsError(pub String);

impl TaskGrant {
    /// Parses the `authorization_details` parameter: a JSON array holding exactly one
    /// entry of type `mcp_task`. Unknown members are refused rather than ignored, so an
    /// agent never believes a constraint holds that Writ did not read.
    pub fn from_authorization_details(text: &str) -> Result<Self, DetailsError> {
        let err = |m: String| DetailsError(m);
        let value: Value = serde_json::from_str(text)
            .map_err(|e| err(format!("`authorization_details` is not JSON: {e}")))?;
        let Value::Array(entries) = value else {
            return Err(err("`authorization_details` must be a JSON array".into()));
        };
        let mut found = None;
        for entry in entries {
            let Value::Object(entry) = entry else {
                return Err(err(
                    "each authorization details entry must be an object".into()
                ));
            };
            match entry.get("type") {
                Some(Value::String(t)) if t == MCP_TASK_TYPE => {
                    if found.is_some() {
                        return Err(err("only one `mcp_task` entry is allowed".into()));
                    }
                    found = Some(entry);
                }
                Some(Value::String(t)) => {
                    return Err(err(format!(
                        "authorization details type `{t}` is not supported; use `mcp_task`"
                    )));
                }
                _ => return Err(err("an authorization details entry has no `type`".into())),
            }
        }
        let entry = found.ok_or_else(|| err("no `mcp_task` entry".into()))?;
        Self::from_entry(&entry)
    }

    fn from_entry(entry: &Map<String, Value>) -> Result<Self, DetailsError> {
        let err = |m: String| DetailsError(m);
        for key in entry.keys() {
            if !matches!(
                key.as_str(),
                "type" | "purpose" | "category" | "tools" | "data_classes" | "max_calls"
            ) {
                return Err(err(format!("`mcp_task` has no member `{key}`")));
            }
        }
        let purpose = match entry.get("purpose") {
            Some(Value::String(p)) if !p.trim().is_empty() => p.trim().to_owned(),
            Some(Value::String(_)) | None => {
                return Err(err("`purpose` is required: say what the task is for".into()));
            }
            Some(_) => return Err(err("`purpose` must be a string".into())),
        };
        if purpose.chars().count() > MAX_PURPOSE_LEN || purpose.chars().any(char::is_control) {
            return Err(err(format!(
                "`purpose` must be at most {MAX_PURPOSE_LEN} characters without control characters"
            )));
        }
        let tools = string_list(entry, "tools")?
            .ok_or_else(|| err("`tools` is required: list the tools the task needs".into()))?;
        if tools.is_empty() {
            return Err(err("`tools` must name at least one tool".into()));
        }
        let tools = tools
            .iter()
            .map(|t| ToolPattern::parse(t).map_err(DetailsError))
            .collect::<Result<Vec<_>, _>>()?;
        let data_classes = string_list(entry, "data_classes")?.unwrap_or_default();
        for class in &data_classes {
            if !is_label(class) {
                return Err(err(format!("data class `{class}` must be {LABEL_RULE}")));
            }
        }
        let category = match entry.get("category") {
            None | Some(Value::Null) => None,
            Some(Value::String(c)) if is_label(c) => Some(c.clone()),
            Some(_) => return Err(err(format!("`category` must be {LABEL_RULE}"))),
        };
        let max_calls = match entry.get("max_calls") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_u64() {
                Some(n) if n > 0 => Some(n),
                _ => return Err(err("`max_calls` must be a positive integer".into())),
            },
            Some(_) => return Err(err("`max_calls` must be a positive integer".into())),
        };
        Ok(Self {
            purpose,
            category,
            tools,
            data_classes,
            max_calls,
        })
    }

    /// The grant as an `authorization_details` array, as it goes into a writ.
    pub fn to_authorization_details(&self) -> Value {
        let mut entry = Map::new();
        entry.insert("type".into(), MCP_TASK_TYPE.into());
        entry.insert("purpose".into(), self.purpose.clone().into());
        if let Some(category) = &self.category {
            entry.insert("category".into(), category.clone().into());
        }
        entry.insert(
            "tools".into(),
            self.tools.iter().map(|t| t.to_string()).collect(),
        );
        entry.insert("data_classes".into(), self.data_classes.clone().into());
        if let Some(max) = self.max_calls {
            entry.insert("max_calls".into(), max.into());
        }
        Value::Array(vec![Value::Object(entry)])
    }

    /// True when `target` is within the grant's patterns.
    pub fn allows(&self, target: Target<'_>) -> bool {
        self.tools.iter().any(|p| p.matches(target))
    }

    /// Checks that `child` asks for nothing its parent does not hold and fills in what
    /// the child left open from the parent: a child without a budget inherits the
    /// parent's remaining budget. `parent_calls` is how many calls the parent made.
    pub fn narrow(&self, parent_calls: u64, child: Self) -> Result<Self, DetailsError> {
        for tool in &child.tools {
            if !covered_by(tool, &self.tools) {
                return Err(DetailsError(format!(
                    "tool `{tool}` is outside the parent task's tools"
                )));
            }
        }
        for class in &child.data_classes {
            if !self.data_classes.contains(class) {
                return Err(DetailsError(format!(
                    "data class `{class}` is outside the parent task's data classes"
                )));
            }
        }
        let remaining = self.max_calls.map(|max| max.saturating_sub(parent_calls));
        let max_calls = match (remaining, child.max_calls) {
            (Some(0), _) => {
                return Err(DetailsError(
                    "the parent task has no calls left to delegate".into(),
                ));
            }
            (Some(left), Some(asked)) if asked > left => {
                return Err(DetailsError(format!(
                    "`max_calls` {asked} is more than the parent task's {left} remaining calls"
                )));
            }
            (Some(left), None) => Some(left),
            (_, asked) => asked,
        };
        // A child that names no category does the same kind of work as its parent.
        let category = child.category.or_else(|| self.category.clone());
        Ok(Self {
            max_calls,
            category,
            ..child
        })
    }
}

fn string_list(entry: &Map<String, Value>, key: &str) -> Result<Option<Vec<String>>, DetailsError> {
    let Some(value) = entry.get(key) else {
        return Ok(None);
    };
    let Value::Array(items) = value else {
        return Err(DetailsError(format!("`{key}` must be an array of strings")));
    };
    if items.len() > MAX_LIST_LEN {
        return Err(DetailsError(format!(
            "`{key}` may list at most {MAX_LIST_LEN} entries"
        )));
    }
    items
        .iter()
        .map(|item| match item {
            Value::String(s) => Ok(s.clone()),
            _ => Err(DetailsError(format!("`{key}` must be an array of strings"))),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(details: &str) -> Result<TaskGrant, DetailsError> {
        TaskGrant::from_authorization_details(details)
    }

    fn tool<'a>(server: &'a str, name: &'a str) -> Target<'a> {
        Target::Tool { server, name }
    }

    #[test]
    fn patterns_parse_and_match() {
        let read = ToolPattern::parse("notes.read").unwrap();
        assert!(read.matches(tool("notes", "read")));
        assert!(!read.matches(tool("notes", "write")));
        let server = ToolPattern::parse("notes.*").unwrap();
        assert!(server.matches(tool("notes", "write")));
        assert!(!server.matches(tool("crm", "write")));
        assert!(
            ToolPattern::parse("*")
                .unwrap()
                .matches(tool("any", "thing"))
        );
        assert!(ToolPattern::parse("notes").is_err());
        assert!(ToolPattern::parse("notes.re*").is_err());
        assert!(ToolPattern::parse("Notes.read").is_err());
        assert!(ToolPattern::parse("notes.").is_err());
    }

    #[test]
    fn prompt_and_resource_patterns_name_only_their_kind() {
        let p = |t: &str| ToolPattern::parse(t).unwrap();
        let prompt = |name| Target::Prompt {
            server: "notes",
            name,
        };
        let resource = |uri| Target::Resource {
            server: "notes",
            uri,
        };
        // `server.*` covers every tool, prompt and resource of the server.
        assert!(p("notes.*").matches(prompt("summary")));
        assert!(p("notes.*").matches(resource("file:///x")));
        // A tool pattern names that tool alone.
        assert!(!p("notes.summary").matches(prompt("summary")));
        assert!(!p("notes.read").matches(resource("notes://read")));
        assert!(p("notes.prompt:*").matches(prompt("summary")));
        assert!(p("notes.prompt:summary").matches(prompt("summary")));
        assert!(!p("notes.prompt:summary").matches(prompt("other")));
        assert!(!p("notes.prompt:*").matches(tool("notes", "summary")));
        assert!(!p("notes.prompt:*").matches(Target::Prompt {
            server: "crm",
            name: "summary"
        }));
        let reports = p("notes.resource:file:///reports/*");
        assert!(reports.matches(resource("file:///reports/q3.txt")));
        assert!(!reports.matches(resource("file:///secrets/key")));
        assert!(!reports.matches(Target::Resource {
            server: "crm",
            uri: "file:///reports/q3.txt"
        }));
        assert!(p("notes.resource:*").matches(resource("anything://at/all")));
        for text in [
            "notes.prompt:*",
            "notes.prompt:summary",
            "notes.resource:file:///reports/*",
            "notes.resource:*",
        ] {
            assert_eq!(p(text).to_string(), text);
        }
        for bad in [
            "notes.prompt:",
            "notes.prompt:a*",
            "notes.resource:file:///../*",
            "notes.resource:",
            "notes.resource:file:///a%2F*",
        ] {
            assert!(ToolPattern::parse(bad).is_err(), "{bad}");
        }
        assert!(p("notes.*").covers(&p("notes.prompt:summary")));
        assert!(p("notes.prompt:*").covers(&p("notes.prompt:summary")));
        assert!(!p("notes.prompt:summary").covers(&p("notes.prompt:*")));
        assert!(
            p("notes.resource:file:///reports/*")
                .covers(&p("notes.resource:file:///reports/q3.txt"))
        );
        assert!(
            !p("notes.resource:file:///reports/q3.txt")
                .covers(&p("notes.resource:file:///reports/*"))
        );
        assert!(!p("notes.resource:*").covers(&p("notes.*")));
        assert!(!p("notes.prompt:*").covers(&p("notes.summary")));
    }

    #[test]
    fn coverage_never_widens() {
        let p = |t: &str| ToolPattern::parse(t).unwrap();
        assert!(p("*").covers(&p("notes.*")));
        assert!(p("notes.*").covers(&p("notes.read")));
        assert!(p("notes.*").covers(&p("notes.*")));
        assert!(!p("notes.read").covers(&p("notes.*")));
        assert!(!p("notes.*").covers(&p("*")));
        assert!(!p("notes.*").covers(&p("crm.export")));
    }

    #[test]
    fn a_well_formed_task_parses() {
        let g = grant(
            r#"[{"type":"mcp_task","purpose":" triage ","tools":["notes.read","ops.*"],
                 "data_classes":["internal"],"max_calls":5}]"#,
        )
        .unwrap();
        assert_eq!(g.purpose, "triage");
        assert_eq!(g.tools.len(), 2);
        assert_eq!(g.max_calls, Some(5));
        let back = g.to_authorization_details().to_string();
        assert_eq!(grant(&back).unwrap(), g);
    }

    #[test]
    fn malformed_details_are_refused_with_a_reason() {
        for (details, says) in [
            ("{", "not JSON"),
            (r#"{"type":"mcp_task"}"#, "array"),
            (r#"[{"type":"payment"}]"#, "not supported"),
            (
                r#"[{"type":"mcp_task","tools":["notes.read"]}]"#,
                "`purpose` is required",
            ),
            (
                r#"[{"type":"mcp_task","purpose":"  ","tools":["notes.read"]}]"#,
                "`purpose` is required",
            ),
            (
                r#"[{"type":"mcp_task","purpose":"x"}]"#,
                "`tools` is required",
            ),
            (
                r#"[{"type":"mcp_task","purpose":"x","tools":[]}]"#,
                "at least one",
            ),
            (
                r#"[{"type":"mcp_task","purpose":"x","tools":["bad"]}]"#,
                "tool pattern `bad`",
            ),
            (
                r#"[{"type":"mcp_task","purpose":"x","tools":["a.b"],"max_calls":0}]"#,
                "positive",
            ),
            (
                r#"[{"type":"mcp_task","purpose":"x","tools":["a.b"],"scope":"all"}]"#,
                "no member `scope`",
            ),
            (
                r#"[{"type":"mcp_task","purpose":"x","tools":["a.b"],"data_classes":["PII"]}]"#,
                "data class",
            ),
            (r#"[{"purpose":"x"}]"#, "no `type`"),
            (r#"[]"#, "no `mcp_task`"),
        ] {
            let error = grant(details).unwrap_err().0;
            assert!(error.contains(says), "{details}: {error}");
        }
    }

    #[test]
    fn a_child_grant_must_lie_within_its_parent() {
        let parent = grant(
            r#"[{"type":"mcp_task","purpose":"p","tools":["notes.*"],"data_classes":["internal"],"max_calls":10}]"#,
        )
        .unwrap();
        let child = |d: &str| grant(d).unwrap();
        let narrowed = parent
            .narrow(
                4,
                child(r#"[{"type":"mcp_task","purpose":"c","tools":["notes.read"]}]"#),
            )
            .unwrap();
        assert_eq!(narrowed.max_calls, Some(6), "inherits the remaining budget");
        let wider = parent.narrow(
            0,
            child(r#"[{"type":"mcp_task","purpose":"c","tools":["crm.export"]}]"#),
        );
        assert!(
            wider
                .unwrap_err()
                .0
                .contains("outside the parent task's tools")
        );
        let class = parent.narrow(
            0,
            child(r#"[{"type":"mcp_task","purpose":"c","tools":["notes.read"],"data_classes":["pii"]}]"#),
        );
        assert!(class.unwrap_err().0.contains("data class"));
        let budget = parent.narrow(
            8,
            child(r#"[{"type":"mcp_task","purpose":"c","tools":["notes.read"],"max_calls":3}]"#),
        );
        assert!(budget.unwrap_err().0.contains("remaining"));
        let spent = parent.narrow(
            10,
            child(r#"[{"type":"mcp_task","purpose":"c","tools":["notes.read"]}]"#),
        );
        assert!(spent.unwrap_err().0.contains("no calls left"));
    }
}
