//! What Writ knows about a tool besides its definition: how it touches the world (access),
//! how much harm a wrong call could do (risk), which data it handles (data classes) and the
//! groups operators put it in. Policy decides on these facts.
//!
//! The operator's `[[servers.tools]]` entries come first. MCP annotations fill in what they
//! leave open, but only for servers marked `trusted = true`: annotations are claims the
//! server makes about itself, and an untrusted server could call `delete_everything`
//! read-only. Whatever is still unknown is the most dangerous case: `execute`, `high`.

use std::fmt;

use serde::Deserialize;
use serde_json::Value;

/// How a tool touches the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Read,
    Write,
    Execute,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Execute => "execute",
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How much harm a wrong call could do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    Low,
    Medium,
    High,
    Critical,
}

impl Risk {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        }
    }

    /// 1 (low) to 4 (critical), so policies can compare risks.
    pub fn level(self) -> i64 {
        match self {
            Self::Low => 1,
            Self::Medium => 2,
            Self::High => 3,
            Self::Critical => 4,
        }
    }
}

impl fmt::Display for Risk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The facts policy sees about one tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolClass {
    pub access: Access,
    pub risk: Risk,
    pub data_classes: Vec<String>,
    pub groups: Vec<String>,
}

impl ToolClass {
    /// A tool nobody described: assume the worst.
    pub const UNKNOWN: Self = Self {
        access: Access::Execute,
        risk: Risk::High,
        data_classes: Vec::new(),
        groups: Vec::new(),
    };
}

/// One `[[servers.tools]]` entry: facts an operator states about the tools it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolRule {
    /// The upstream tool name, or a pattern where `*` stands for any run of characters.
    pub name: String,
    pub access: Option<Access>,
    pub risk: Option<Risk>,
    pub data_classes: Option<Vec<String>>,
    pub groups: Option<Vec<String>>,
}

impl ToolRule {
    pub fn is_pattern(&self) -> bool {
        self.name.contains('*')
    }

    pub fn matches(&self, tool: &str) -> bool {
        glob_matches(&self.name, tool)
    }
}

/// Classifies `tool` (the upstream's own name) of a server with these rules.
///
/// The rule naming the tool exactly wins; otherwise the first matching pattern in file
/// order. Fields the rule leaves out come from the tool's annotations when the server is
/// trusted, else from [`ToolClass::UNKNOWN`].
pub fn classify(
    rules: &[ToolRule],
    trusted: bool,
    tool: &str,
    annotations: Option<&Value>,
) -> ToolClass {
    let rule = rules
        .iter()
        .find(|r| !r.is_pattern() && r.name == tool)
        .or_else(|| rules.iter().find(|r| r.is_pattern() && r.matches(tool)));
    let hinted = if trusted {
        annotations.and_then(from_annotations)
    } else {
        None
    };
    let (access, risk) = hinted.unwrap_or((ToolClass::UNKNOWN.access, ToolClass::UNKNOWN.risk));
    ToolClass {
        access: rule.and_then(|r| r.access).unwrap_or(access),
        risk: rule.and_then(|r| r.risk).unwrap_or(risk),
        data_classes: rule
            .and_then(|r| r.data_classes.clone())
            .unwrap_or_default(),
        groups: rule.and_then(|r| r.groups.clone()).unwrap_or_default(),
    }
}

/// What Writ knows about a prompt or a resource besides its definition: the data it
/// carries and the groups operators put it in. Prompts and resources are read, never
/// run, so they have no access or risk; reading one is a data access.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContentClass {
    pub data_classes: Vec<String>,
    pub groups: Vec<String>,
}

/// One `[[servers.prompts]]` entry: facts about the prompts its `name` names (a glob,
/// as for tools).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptRule {
    pub name: String,
    pub class: ContentClass,
}

/// One `[[servers.resources]]` entry: facts about the resources (and templates) whose
/// URI its `uri` pattern names: one URI, or a prefix ending in `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRule {
    pub uri: crate::uri::UriPattern,
    pub class: ContentClass,
}

/// Classifies a prompt: the rule naming it exactly, else the first matching pattern in
/// file order; a prompt no rule names carries no data classes.
pub fn classify_prompt(rules: &[PromptRule], prompt: &str) -> ContentClass {
    rules
        .iter()
        .find(|r| !r.name.contains('*') && r.name == prompt)
        .or_else(|| {
            rules
                .iter()
                .find(|r| r.name.contains('*') && glob_matches(&r.name, prompt))
        })
        .map(|r| r.class.clone())
        .unwrap_or_default()
}

/// Classifies a resource (or a template, by its template text): the rule naming the URI
/// exactly, else the longest matching prefix, else `*`.
pub fn classify_resource(rules: &[ResourceRule], uri: &str) -> ContentClass {
    use crate::uri::UriPattern;
    let specificity = |rule: &ResourceRule| match &rule.uri {
        UriPattern::Exact(exact) => (exact == uri).then_some(usize::MAX),
        UriPattern::Prefix(prefix) => uri.starts_with(prefix.as_str()).then_some(prefix.len()),
        UriPattern::Any => Some(0),
    };
    rules
        .iter()
        .filter_map(|r| Some((specificity(r)?, r)))
        // The first of equally specific rules wins, as in the file.
        .fold(None::<(usize, &ResourceRule)>, |best, (n, r)| match best {
            Some((b, _)) if b >= n => best,
            _ => Some((n, r)),
        })
        .map(|(_, r)| r.class.clone())
        .unwrap_or_default()
}

/// Access and risk from MCP tool annotations, with the specification's defaults for hints
/// left out (`readOnlyHint` false, `destructiveHint` true). A tool without any of the hints
/// says nothing, and stays unknown.
fn from_annotations(annotations: &Value) -> Option<(Access, Risk)> {
    let hint = |key: &str| annotations.get(key).and_then(Value::as_bool);
    let read_only = hint("readOnlyHint");
    let destructive = hint("destructiveHint");
    if read_only.is_none() && destructive.is_none() {
        return None;
    }
    Some(match (read_only, destructive) {
        (Some(true), _) => (Access::Read, Risk::Low),
        (_, Some(false)) => (Access::Write, Risk::Medium),
        _ => (Access::Write, Risk::High),
    })
}

/// `*` matches any run of characters (also none); everything else matches itself.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return text.is_empty();
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*` at all: the whole text had to be the prefix.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = rest.get(at + part.len()..).unwrap_or_default(),
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule(name: &str, access: Option<Access>, risk: Option<Risk>) -> ToolRule {
        ToolRule {
            name: name.into(),
            access,
            risk,
            data_classes: None,
            groups: None,
        }
    }

    #[test]
    fn prompts_and_resources_take_the_most_specific_rule() {
        use crate::uri::UriPattern;
        let class = |classes: &[&str]| ContentClass {
            data_classes: classes.iter().map(|c| (*c).to_owned()).collect(),
            groups: Vec::new(),
        };
        let prompts = vec![
            PromptRule {
                name: "*".into(),
                class: class(&["internal"]),
            },
            PromptRule {
                name: "payroll".into(),
                class: class(&["pii"]),
            },
        ];
        assert_eq!(classify_prompt(&prompts, "payroll"), class(&["pii"]));
        assert_eq!(classify_prompt(&prompts, "summary"), class(&["internal"]));
        assert_eq!(classify_prompt(&[], "summary"), ContentClass::default());
        let uri = |t: &str| UriPattern::parse(t).unwrap();
        let resources = vec![
            ResourceRule {
                uri: uri("*"),
                class: class(&["internal"]),
            },
            ResourceRule {
                uri: uri("file:///hr/*"),
                class: class(&["pii"]),
            },
            ResourceRule {
                uri: uri("file:///hr/public/*"),
                class: class(&[]),
            },
            ResourceRule {
                uri: uri("file:///hr/public/salaries.csv"),
                class: class(&["pii", "finance"]),
            },
        ];
        assert_eq!(
            classify_resource(&resources, "file:///hr/people.csv"),
            class(&["pii"])
        );
        assert_eq!(
            classify_resource(&resources, "file:///hr/public/handbook.md"),
            class(&[])
        );
        assert_eq!(
            classify_resource(&resources, "file:///hr/public/salaries.csv"),
            class(&["pii", "finance"])
        );
        assert_eq!(
            classify_resource(&resources, "file:///notes.md"),
            class(&["internal"])
        );
    }

    #[test]
    fn globs() {
        assert!(glob_matches("*", ""));
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("get_*", "get_secret"));
        assert!(!glob_matches("get_*", "set_secret"));
        assert!(glob_matches("*_secret", "get_secret"));
        assert!(glob_matches("*secret*", "a_secret_b"));
        assert!(glob_matches("a*b*c", "abc"));
        assert!(!glob_matches("a*b*c", "acb"));
        assert!(glob_matches("read", "read"));
        assert!(!glob_matches("read", "reader"));
        assert!(!glob_matches("ab*ab", "ab"));
    }

    #[test]
    fn unknown_tools_are_execute_high() {
        assert_eq!(classify(&[], false, "x", None), ToolClass::UNKNOWN);
        // Annotations of an untrusted server are ignored.
        let hints = json!({ "readOnlyHint": true });
        assert_eq!(classify(&[], false, "x", Some(&hints)), ToolClass::UNKNOWN);
    }

    #[test]
    fn annotations_count_only_for_trusted_servers() {
        let read = json!({ "readOnlyHint": true });
        let gentle = json!({ "readOnlyHint": false, "destructiveHint": false });
        let harsh = json!({ "readOnlyHint": false });
        let silent = json!({ "title": "Nothing said" });
        let class = |a: &Value| {
            let c = classify(&[], true, "x", Some(a));
            (c.access, c.risk)
        };
        assert_eq!(class(&read), (Access::Read, Risk::Low));
        assert_eq!(class(&gentle), (Access::Write, Risk::Medium));
        assert_eq!(class(&harsh), (Access::Write, Risk::High));
        assert_eq!(class(&silent), (Access::Execute, Risk::High));
    }

    #[test]
    fn the_operator_overrides_annotations_and_exact_names_beat_patterns() {
        let rules = vec![
            rule("*", Some(Access::Read), None),
            rule("drop_table", Some(Access::Execute), Some(Risk::Critical)),
        ];
        let read = json!({ "readOnlyHint": true });
        let drop = classify(&rules, true, "drop_table", Some(&read));
        assert_eq!((drop.access, drop.risk), (Access::Execute, Risk::Critical));
        // The pattern sets access only; risk comes from the trusted annotation.
        let other = classify(&rules, true, "list", Some(&read));
        assert_eq!((other.access, other.risk), (Access::Read, Risk::Low));
        // Without trust, the risk the pattern leaves open is the worst case.
        let other = classify(&rules, false, "list", Some(&read));
        assert_eq!((other.access, other.risk), (Access::Read, Risk::High));
    }
}
