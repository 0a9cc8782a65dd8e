//! The facts a decision is made on, and their shape in Cedar: entities for the agent, the
//! tool and the call's arguments; a context record for the task, the time and the
//! environment. One builder serves the gateway, `writ policy explain` and the test cases,
//! so a test case is decided exactly as a live request would be.

use std::collections::HashMap;
use std::sync::OnceLock;

use cedar_policy::{
    Context, Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression as Expr,
};
use serde_json::Value;
use writ_core::tools::ToolClass;

use crate::reads::Reads;

/// Arguments with more leaves than this are not given to policy (`arguments_omitted`).
pub const MAX_ARGUMENT_LEAVES: usize = 256;
/// Arguments nested deeper than this are not given to policy.
pub const MAX_ARGUMENT_DEPTH: usize = 16;
/// A string argument longer than this (in bytes) is not given to policy.
pub const MAX_ARGUMENT_TEXT: usize = 8 * 1024;

/// The agent asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentFacts {
    pub id: String,
    pub name: String,
    pub team: Option<String>,
    pub owner: Option<String>,
}

/// The tool asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolFacts {
    /// `server.tool`, whatever names agents see.
    pub name: String,
    pub server: String,
    pub trusted: bool,
    pub class: ToolClass,
}

/// Whether content is a prompt or a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentKind {
    Prompt,
    Resource,
}

impl ContentKind {
    pub(crate) fn discover_action(self) -> crate::Action {
        match self {
            Self::Prompt => crate::Action::DiscoverPrompt,
            Self::Resource => crate::Action::DiscoverResource,
        }
    }

    pub(crate) fn use_action(self) -> crate::Action {
        match self {
            Self::Prompt => crate::Action::GetPrompt,
            Self::Resource => crate::Action::ReadResource,
        }
    }
}

/// A prompt or a resource asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentFacts {
    pub kind: ContentKind,
    /// `server.prompt` for a prompt (whatever names agents see), the URI for a resource.
    pub name: String,
    pub server: String,
    /// The URI template a resource's URI matched, when it was not listed itself.
    pub template: Option<String>,
    pub class: writ_core::tools::ContentClass,
}

impl ContentFacts {
    fn uid(&self) -> Result<EntityUid, FactsError> {
        match self.kind {
            ContentKind::Prompt => uid("Prompt", &self.name),
            ContentKind::Resource => uid("Resource", &self.name),
        }
    }

    /// The entity, with its server and groups as parents.
    fn entity(&self) -> Result<Entity, FactsError> {
        let mut parents = vec![uid("Server", &self.server)?];
        for group in &self.class.groups {
            parents.push(uid("ToolGroup", group)?);
        }
        let mut attrs = vec![
            ("server".to_owned(), text(&self.server)),
            ("data_classes".to_owned(), set(&self.class.data_classes)),
        ];
        if self.kind == ContentKind::Resource {
            attrs.push(("uri".to_owned(), text(&self.name)));
            attrs.push((
                "template".to_owned(),
                text(self.template.as_deref().unwrap_or("")),
            ));
        }
        Entity::new_with_tags(self.uid()?, attrs, parents, [])
            .map_err(|e| fail("prompt or resource")(e.to_string()))
    }
}

/// The task the request belongs to (or, for `begin_task`, would begin).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TaskFacts {
    pub id: String,
    pub purpose: String,
    pub category: Option<String>,
    pub tools: Vec<String>,
    pub data_classes: Vec<String>,
    pub depth: u32,
    pub calls: u64,
    pub max_calls: Option<u64>,
}

/// Where and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Situation {
    pub environment: String,
    /// Unix seconds, UTC.
    pub now: i64,
}

/// A Cedar request, ready to decide.
pub(crate) struct Built {
    pub principal: EntityUid,
    pub resource: EntityUid,
    pub context: Context,
    pub entities: Vec<Entity>,
}

/// Why facts could not be put into Cedar form; decided as a deny.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FactsError(pub String);

fn fail(what: &str) -> impl Fn(String) -> FactsError + '_ {
    move |e| FactsError(format!("{what}: {e}"))
}

/// The entity types of Writ's schema, parsed once (Cedar's parser is not free).
const KINDS: [&str; 11] = [
    "Agent",
    "Team",
    "Server",
    "ToolGroup",
    "Tool",
    "Prompt",
    "Resource",
    "Task",
    "Arguments",
    "ArgumentNumbers",
    "Action",
];

pub(crate) fn uid(kind: &str, id: &str) -> Result<EntityUid, FactsError> {
    static TYPES: OnceLock<HashMap<&'static str, EntityTypeName>> = OnceLock::new();
    let types = TYPES.get_or_init(|| {
        KINDS
            .iter()
            .filter_map(|k| Some((*k, format!("Writ::{k}").parse().ok()?)))
            .collect()
    });
    let name = types.get(kind).cloned().ok_or_else(|| {
        FactsError(format!(
            "`Writ::{kind}` is not an entity type of Writ's schema"
        ))
    })?;
    Ok(EntityUid::from_type_name_and_id(name, EntityId::new(id)))
}

fn text(value: &str) -> Expr {
    Expr::new_string(value.to_owned())
}

fn long(value: impl TryInto<i64>) -> Expr {
    Expr::new_long(value.try_into().unwrap_or(i64::MAX))
}

fn set<'a>(values: impl IntoIterator<Item = &'a String>) -> Expr {
    Expr::new_set(values.into_iter().map(|v| text(v)))
}

fn record(fields: Vec<(&str, Expr)>) -> Result<Expr, FactsError> {
    Expr::new_record(fields.into_iter().map(|(k, v)| (k.to_owned(), v)))
        .map_err(|e| FactsError(e.to_string()))
}

impl AgentFacts {
    pub(crate) fn uid(&self) -> Result<EntityUid, FactsError> {
        uid("Agent", &self.name)
    }

    /// The agent's entity. Its team is a parent only: `principal in Writ::Team::"t"` needs
    /// the agent's ancestors, not a team entity in the store.
    pub(crate) fn entity(&self) -> Result<Entity, FactsError> {
        let parents = match &self.team {
            Some(team) => vec![uid("Team", team)?],
            None => Vec::new(),
        };
        let attrs = [
            ("id".to_owned(), text(&self.id)),
            ("team".to_owned(), text(self.team.as_deref().unwrap_or(""))),
            (
                "owner".to_owned(),
                text(self.owner.as_deref().unwrap_or("")),
            ),
        ];
        Entity::new_with_tags(self.uid()?, attrs, parents, [])
            .map_err(|e| fail("agent")(e.to_string()))
    }
}

impl ToolFacts {
    pub(crate) fn uid(&self) -> Result<EntityUid, FactsError> {
        uid("Tool", &self.name)
    }

    /// The tool's entity, with its server and groups as parents.
    pub(crate) fn entity(&self) -> Result<Entity, FactsError> {
        let mut parents = vec![uid("Server", &self.server)?];
        for group in &self.class.groups {
            parents.push(uid("ToolGroup", group)?);
        }
        let attrs = [
            ("server".to_owned(), text(&self.server)),
            ("server_trusted".to_owned(), Expr::new_bool(self.trusted)),
            ("access".to_owned(), text(self.class.access.as_str())),
            ("risk".to_owned(), text(self.class.risk.as_str())),
            ("risk_level".to_owned(), long(self.class.risk.level())),
            ("data_classes".to_owned(), set(&self.class.data_classes)),
        ];
        Entity::new_with_tags(self.uid()?, attrs, parents, [])
            .map_err(|e| fail("tool")(e.to_string()))
    }
}

impl TaskFacts {
    /// The servers the task's tool patterns reach: `notes` for `notes.*` and
    /// `notes.read`, `*` for `*`.
    pub fn servers(&self) -> Vec<String> {
        let mut servers: Vec<String> = self
            .tools
            .iter()
            .map(|t| t.split_once('.').map_or(t.as_str(), |(s, _)| s).to_owned())
            .collect();
        servers.sort();
        servers.dedup();
        servers
    }

    /// The task as a Cedar record, with the attributes policies read (all of them for
    /// `Reads::everything`): sets cost to build, and most policies read one or two.
    pub(crate) fn to_cedar(&self, reads: &Reads) -> Result<Expr, FactsError> {
        let mut fields = Vec::with_capacity(9);
        let mut add = |name: &'static str, value: &dyn Fn() -> Expr| {
            if reads.task_field(name) {
                fields.push((name, value()));
            }
        };
        add("id", &|| text(&self.id));
        add("purpose", &|| text(&self.purpose));
        add("category", &|| text(self.category.as_deref().unwrap_or("")));
        add("tools", &|| set(&self.tools));
        add("servers", &|| set(&self.servers()));
        add("data_classes", &|| set(&self.data_classes));
        add("depth", &|| long(self.depth));
        add("calls", &|| long(self.calls));
        add("max_calls", &|| long(self.max_calls.unwrap_or(0)));
        record(fields)
    }
}

impl Situation {
    /// Hour, minute and ISO weekday (1 = Monday) of `now`, in UTC.
    fn clock(&self) -> (i64, i64, i64) {
        let seconds_of_day = self.now.rem_euclid(86_400);
        let days = self.now.div_euclid(86_400);
        // 1970-01-01 was a Thursday (ISO weekday 4).
        let weekday = (days + 3).rem_euclid(7) + 1;
        (seconds_of_day / 3600, seconds_of_day % 3600 / 60, weekday)
    }

    fn time(&self) -> Result<Expr, FactsError> {
        let (hour, minute, weekday) = self.clock();
        record(vec![
            ("hour", long(hour)),
            ("minute", long(minute)),
            ("weekday", long(weekday)),
            ("unix", long(self.now)),
        ])
    }

    /// The context fields every action has (those policies read).
    fn common(
        &self,
        task: &TaskFacts,
        reads: &Reads,
    ) -> Result<Vec<(&'static str, Expr)>, FactsError> {
        let mut fields = Vec::with_capacity(8);
        if reads.field("environment") {
            fields.push(("environment", text(&self.environment)));
        }
        if reads.field("time") {
            fields.push(("time", self.time()?));
        }
        if reads.field("task") {
            fields.push(("task", task.to_cedar(reads)?));
        }
        Ok(fields)
    }
}

fn context(fields: Vec<(&'static str, Expr)>) -> Result<Context, FactsError> {
    Context::from_pairs(fields.into_iter().map(|(k, v)| (k.to_owned(), v)))
        .map_err(|e| FactsError(format!("context: {e}")))
}

/// What a `call` adds to the context of a `discover`.
pub(crate) struct CallFacts<'a> {
    pub arguments: Option<&'a Value>,
    pub approved: bool,
}

/// The context of `discover` and `call`. The agent and tool entities are not made here:
/// they are built once per slice and kept with it.
pub(crate) fn tool_context(task: &TaskFacts, situation: &Situation) -> Result<Context, FactsError> {
    context(situation.common(task, &Reads::everything())?)
}

/// A `call`: its context, and the argument entities when they are given.
pub(crate) fn call_request(
    agent: &AgentFacts,
    tool: &ToolFacts,
    task: &TaskFacts,
    situation: &Situation,
    call: &CallFacts<'_>,
    reads: &Reads,
) -> Result<Built, FactsError> {
    let mut fields = situation.common(task, reads)?;
    let mut entities = Vec::new();
    call_fields(call, reads, &mut fields, &mut entities)?;
    Ok(Built {
        principal: agent.uid()?,
        resource: tool.uid()?,
        context: context(fields)?,
        entities,
    })
}

/// What a use adds to the context of a discovery (those of it policies read): whether
/// it was approved, and its arguments as entities with one tag per leaf.
fn call_fields(
    call: &CallFacts<'_>,
    reads: &Reads,
    fields: &mut Vec<(&'static str, Expr)>,
    entities: &mut Vec<Entity>,
) -> Result<(), FactsError> {
    let leaves = call
        .arguments
        .map(flatten)
        .unwrap_or(Some(Leaves::default()));
    if reads.field("arguments_omitted") {
        fields.push(("arguments_omitted", Expr::new_bool(leaves.is_none())));
    }
    if reads.field("approved") {
        fields.push(("approved", Expr::new_bool(call.approved)));
    }
    if reads.field("arguments") || reads.field("argument_numbers") {
        let leaves = leaves.unwrap_or_default();
        let arguments = uid("Arguments", "call")?;
        let numbers = uid("ArgumentNumbers", "call")?;
        entities.push(
            Entity::new_with_tags(arguments.clone(), [], [], leaves.text)
                .map_err(|e| fail("arguments")(e.to_string()))?,
        );
        entities.push(
            Entity::new_with_tags(numbers.clone(), [], [], leaves.numbers)
                .map_err(|e| fail("arguments")(e.to_string()))?,
        );
        fields.push(("arguments", Expr::new_entity_uid(arguments)));
        fields.push(("argument_numbers", Expr::new_entity_uid(numbers)));
    }
    Ok(())
}

/// What a `get_prompt` or `read_resource` decides on besides the agent and the content.
pub(crate) struct UseFacts<'a> {
    pub task: &'a TaskFacts,
    pub situation: &'a Situation,
    pub call: CallFacts<'a>,
}

/// A decision on a prompt or resource: `discover_*` with the list's shared context, or a
/// use (`get_prompt`, `read_resource`) with its own.
pub(crate) fn content_request(
    agent: &AgentFacts,
    content: &ContentFacts,
    list: Option<&Context>,
    used: Option<&UseFacts<'_>>,
) -> Result<Built, FactsError> {
    let mut entities = vec![agent.entity()?, content.entity()?];
    let context = match (list, used) {
        (Some(list), _) => list.clone(),
        (None, Some(used)) => {
            let everything = Reads::everything();
            let mut fields = used.situation.common(used.task, &everything)?;
            match content.kind {
                // A prompt's arguments are given to policy as a tool call's are.
                ContentKind::Prompt => {
                    call_fields(&used.call, &everything, &mut fields, &mut entities)?
                }
                // A read has no arguments.
                ContentKind::Resource => {
                    fields.push(("approved", Expr::new_bool(used.call.approved)));
                }
            }
            context(fields)?
        }
        (None, None) => return Err(FactsError("a content request needs a context".into())),
    };
    Ok(Built {
        principal: agent.uid()?,
        resource: content.uid()?,
        context,
        entities,
    })
}

pub(crate) fn begin_task_request(
    agent: &AgentFacts,
    task: &TaskFacts,
    situation: &Situation,
) -> Result<Built, FactsError> {
    let resource = uid("Task", if task.id.is_empty() { "new" } else { &task.id })?;
    let entities = vec![
        agent.entity()?,
        Entity::new_no_attrs(resource.clone(), Default::default()),
    ];
    Ok(Built {
        principal: agent.uid()?,
        resource,
        context: context(situation.common(task, &Reads::everything())?)?,
        entities,
    })
}

pub(crate) fn delegate_request(
    agent: &AgentFacts,
    delegate: &AgentFacts,
    parent: &TaskFacts,
    child: &TaskFacts,
    situation: &Situation,
) -> Result<Built, FactsError> {
    let mut fields = situation.common(child, &Reads::everything())?;
    fields.push(("parent", parent.to_cedar(&Reads::everything())?));
    let mut entities = vec![agent.entity()?];
    if delegate.name != agent.name {
        entities.push(delegate.entity()?);
    }
    Ok(Built {
        principal: agent.uid()?,
        resource: delegate.uid()?,
        context: context(fields)?,
        entities,
    })
}

/// The leaves of a call's arguments, as Cedar tags.
#[derive(Default)]
struct Leaves {
    text: HashMap<String, Expr>,
    numbers: HashMap<String, Expr>,
}

/// Flattens arguments into leaves; `None` when they are too big or too deep to give to
/// policy whole (a policy that sees part of the arguments could allow what the rest
/// forbids, so it sees none and `arguments_omitted` says so).
fn flatten(arguments: &Value) -> Option<Leaves> {
    fn walk(value: &Value, path: &mut String, depth: usize, out: &mut Leaves) -> Option<()> {
        if depth > MAX_ARGUMENT_DEPTH || out.text.len() > MAX_ARGUMENT_LEAVES {
            return None;
        }
        let mut descend = |key: &str, child: &Value| {
            let before = path.len();
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key);
            let done = walk(child, path, depth + 1, out);
            path.truncate(before);
            done
        };
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    descend(key, child)?;
                }
            }
            Value::Array(items) => {
                for (index, child) in items.iter().enumerate() {
                    descend(&index.to_string(), child)?;
                }
            }
            Value::String(s) => {
                if s.len() > MAX_ARGUMENT_TEXT {
                    return None;
                }
                out.text.insert(path.clone(), text(s));
            }
            other => {
                if let Some(n) = other.as_i64() {
                    out.numbers.insert(path.clone(), Expr::new_long(n));
                }
                out.text.insert(path.clone(), text(&other.to_string()));
            }
        }
        (out.text.len() <= MAX_ARGUMENT_LEAVES).then_some(())
    }
    let mut out = Leaves::default();
    walk(arguments, &mut String::new(), 0, &mut out)?;
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use serde_json::json;

    #[test]
    fn weekday_and_hour_are_utc() {
        // 2026-11-18 is a Wednesday; 14:30 UTC.
        let s = Situation {
            environment: "prod".into(),
            now: 1_795_012_200,
        };
        assert_eq!(s.clock(), (14, 30, 3));
        let sunday_before_epoch = Situation {
            environment: "prod".into(),
            now: -3 * 86_400 - 1,
        };
        assert_eq!(sunday_before_epoch.clock(), (23, 59, 7));
    }

    #[test]
    fn arguments_flatten_to_paths_and_big_ones_are_omitted() {
        let leaves = flatten(&json!({ "a": { "b": 1 }, "items": ["x", true] })).unwrap();
        let mut paths: Vec<_> = leaves.text.keys().cloned().collect();
        paths.sort();
        assert_eq!(paths, ["a.b", "items.0", "items.1"]);
        assert_eq!(leaves.numbers.len(), 1);
        let mut deep = json!("leaf");
        for _ in 0..=MAX_ARGUMENT_DEPTH {
            deep = json!({ "d": deep });
        }
        assert!(flatten(&deep).is_none());
        let wide: serde_json::Map<_, _> = (0..=MAX_ARGUMENT_LEAVES)
            .map(|i| (i.to_string(), json!(i)))
            .collect();
        assert!(flatten(&Value::Object(wide)).is_none());
        assert!(flatten(&json!({ "t": "x".repeat(MAX_ARGUMENT_TEXT + 1) })).is_none());
    }
}
