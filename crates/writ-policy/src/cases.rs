//! Policy test cases: a TOML file of requests and the decisions they must get, so a
//! policy repository can have CI (`writ policy test FILE`).
//!
//! ```toml
//! [agents.alice]            # facts shared by the cases; unnamed agents have no team
//! team = "research"
//!
//! [tools."notes.write"]     # undeclared tools are `execute` / `high`, like live ones
//! access = "write"
//! risk = "medium"
//!
//! [prompts."notes.summary"] # a prompt's facts (`server.prompt`); none by default
//! data_classes = ["internal"]
//!
//! [resources."file:///reports/q3.txt"]   # a resource's facts, by URI; `server` is required
//! server = "notes"
//! data_classes = ["finance"]
//!
//! [defaults]                # what every case has unless it says otherwise
//! environment = "prod"
//! time = "2026-11-18T10:00:00Z"
//! task = { purpose = "triage the inbox", tools = ["notes.*"] }
//!
//! [[case]]
//! name = "a researcher may write notes"
//! agent = "alice"
//! action = "call"           # discover | call | begin_task | delegate, or for prompts and
//!                           # resources discover_prompt | get_prompt (with `prompt`),
//!                           # discover_resource | read_resource (with `resource`)
//! tool = "notes.write"
//! arguments = { text = "hello" }
//! expect = "allow"          # allow | deny | approval_required
//! policies = ["writes-need-team"]   # optional: exactly these policies decided
//! ```

use std::collections::HashMap;

use serde::Deserialize;
use writ_core::tools::{Access, Risk, ToolClass};

use crate::{
    Action, AgentFacts, ContentFacts, ContentKind, Decision, Engine, Situation, TaskFacts,
    ToolFacts,
};

/// Why a cases file could not be run at all.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CasesError(pub String);

/// One case's result.
#[derive(Debug)]
pub struct CaseOutcome {
    pub name: String,
    pub decision: Decision,
    /// `None` when the case passed; otherwise what differed.
    pub failure: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    agents: HashMap<String, RawAgent>,
    #[serde(default)]
    tools: HashMap<String, RawTool>,
    #[serde(default)]
    prompts: HashMap<String, RawContent>,
    #[serde(default)]
    resources: HashMap<String, RawContent>,
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    case: Vec<RawCase>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    team: Option<String>,
    owner: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTool {
    access: Option<Access>,
    risk: Option<Risk>,
    #[serde(default)]
    data_classes: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    trusted: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawContent {
    server: Option<String>,
    template: Option<String>,
    #[serde(default)]
    data_classes: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    environment: Option<String>,
    time: Option<String>,
    task: Option<RawTask>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawTask {
    #[serde(default)]
    id: String,
    #[serde(default)]
    purpose: String,
    category: Option<String>,
    #[serde(default)]
    tools: Vec<String>,
    #[serde(default)]
    data_classes: Vec<String>,
    #[serde(default)]
    depth: u32,
    #[serde(default)]
    calls: u64,
    max_calls: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    agent: String,
    action: String,
    tool: Option<String>,
    prompt: Option<String>,
    resource: Option<String>,
    arguments: Option<toml::Value>,
    #[serde(default)]
    approved: bool,
    task: Option<RawTask>,
    parent: Option<RawTask>,
    delegate: Option<String>,
    environment: Option<String>,
    time: Option<String>,
    expect: String,
    policies: Option<Vec<String>>,
    approval: Option<Vec<String>>,
}

impl From<RawTask> for TaskFacts {
    fn from(raw: RawTask) -> Self {
        Self {
            id: raw.id,
            purpose: raw.purpose,
            category: raw.category,
            tools: raw.tools,
            data_classes: raw.data_classes,
            depth: raw.depth,
            calls: raw.calls,
            max_calls: raw.max_calls,
        }
    }
}

/// Runs every case of a cases file against `engine`.
pub fn run_cases(engine: &Engine, text: &str) -> Result<Vec<CaseOutcome>, CasesError> {
    let file: File = toml::from_str(text).map_err(|e| CasesError(e.to_string()))?;
    if file.case.is_empty() {
        return Err(CasesError(
            "no `[[case]]` entries: a test file with no cases proves nothing".into(),
        ));
    }
    file.case
        .iter()
        .map(|case| run_case(engine, &file, case))
        .collect()
}

fn run_case(engine: &Engine, file: &File, case: &RawCase) -> Result<CaseOutcome, CasesError> {
    let bad = |m: String| CasesError(format!("case `{}`: {m}", case.name));
    let agent = agent_facts(file, &case.agent);
    let situation = Situation {
        environment: case
            .environment
            .clone()
            .or_else(|| file.defaults.environment.clone())
            .unwrap_or_else(|| "prod".into()),
        now: match case.time.as_ref().or(file.defaults.time.as_ref()) {
            Some(time) => humantime::parse_rfc3339(time)
                .map_err(|e| bad(format!("`time` = `{time}`: {e}")))?
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            None => 0,
        },
    };
    let task: TaskFacts = case
        .task
        .clone()
        .or_else(|| file.defaults.task.clone())
        .unwrap_or_default()
        .into();
    let action = Action::parse(&case.action)
        .ok_or_else(|| bad(format!("unknown action `{}`", case.action)))?;
    let tool = || {
        let name = case
            .tool
            .as_deref()
            .ok_or_else(|| bad(format!("action `{action}` needs `tool`")))?;
        Ok::<_, CasesError>(tool_facts(file, name))
    };
    let content = |kind: ContentKind| match kind {
        ContentKind::Prompt => case
            .prompt
            .as_deref()
            .ok_or_else(|| bad(format!("action `{action}` needs `prompt`")))
            .map(|name| content_facts(file, kind, name)),
        ContentKind::Resource => {
            let uri = case
                .resource
                .as_deref()
                .ok_or_else(|| bad(format!("action `{action}` needs `resource`")))?;
            let facts = content_facts(file, kind, uri);
            if facts.server.is_empty() {
                return Err(bad(format!(
                    "resource `{uri}` needs `[resources.\"{uri}\"] server = \"…\"`"
                )));
            }
            Ok(facts)
        }
    };
    let arguments = || {
        case.arguments
            .as_ref()
            .map(|a| serde_json::to_value(a).map_err(|e| bad(e.to_string())))
            .transpose()
    };
    let decision = match action {
        Action::Discover => engine.discover(&agent, &tool()?, &task, &situation),
        Action::DiscoverPrompt | Action::DiscoverResource => {
            let kind = if action == Action::DiscoverPrompt {
                ContentKind::Prompt
            } else {
                ContentKind::Resource
            };
            let content = content(kind)?;
            match engine.list_context(&task, &situation) {
                Ok(context) => engine.discover_content(&agent, &content, &context),
                Err(e) => return Err(bad(e.to_string())),
            }
        }
        Action::GetPrompt | Action::ReadResource => {
            let kind = if action == Action::GetPrompt {
                ContentKind::Prompt
            } else {
                ContentKind::Resource
            };
            engine.use_content(
                &agent,
                &content(kind)?,
                &task,
                arguments()?.as_ref(),
                case.approved,
                &situation,
            )
        }
        Action::Call => {
            let arguments = arguments()?;
            engine.call(
                &agent,
                &tool()?,
                &task,
                arguments.as_ref(),
                case.approved,
                &situation,
            )
        }
        Action::BeginTask => engine.begin_task(&agent, &task, &situation),
        Action::Delegate => {
            let delegate = case
                .delegate
                .as_deref()
                .ok_or_else(|| bad("action `delegate` needs `delegate`".into()))?;
            let parent: TaskFacts = case.parent.clone().unwrap_or_default().into();
            engine.delegate(
                &agent,
                &agent_facts(file, delegate),
                &parent,
                &task,
                &situation,
            )
        }
    };
    let mut failure = Vec::new();
    if decision.verdict.as_str() != case.expect {
        if !matches!(case.expect.as_str(), "allow" | "deny" | "approval_required") {
            return Err(bad(format!(
                "`expect` = `{}`; write allow, deny or approval_required",
                case.expect
            )));
        }
        failure.push(format!(
            "expected {}, got {} ({})",
            case.expect,
            decision.verdict.as_str(),
            decision.reasons.join("; ")
        ));
    }
    if let Some(expected) = &case.policies {
        let mut expected = expected.clone();
        expected.sort();
        if expected != decision.policies {
            failure.push(format!(
                "expected deciding policies [{}], got [{}]",
                expected.join(", "),
                decision.policies.join(", ")
            ));
        }
    }
    if let Some(expected) = &case.approval {
        let got = match &decision.verdict {
            crate::Verdict::ApprovalRequired { groups } => groups.clone(),
            _ => Vec::new(),
        };
        let mut expected = expected.clone();
        expected.sort();
        if expected != got {
            failure.push(format!(
                "expected approval by [{}], got [{}]",
                expected.join(", "),
                got.join(", ")
            ));
        }
    }
    Ok(CaseOutcome {
        name: case.name.clone(),
        decision,
        failure: (!failure.is_empty()).then(|| failure.join("; ")),
    })
}

fn agent_facts(file: &File, name: &str) -> AgentFacts {
    let raw = file.agents.get(name);
    AgentFacts {
        id: format!("agt_{name}"),
        name: name.to_owned(),
        team: raw.and_then(|a| a.team.clone()),
        owner: raw.and_then(|a| a.owner.clone()),
    }
}

/// A prompt (`server.prompt`) or resource (URI) as the file describes it.
fn content_facts(file: &File, kind: ContentKind, name: &str) -> ContentFacts {
    let raw = match kind {
        ContentKind::Prompt => file.prompts.get(name),
        ContentKind::Resource => file.resources.get(name),
    };
    let server = match (kind, raw.and_then(|r| r.server.clone())) {
        (_, Some(server)) => server,
        (ContentKind::Prompt, None) => name.split_once('.').map_or(name, |(s, _)| s).to_owned(),
        (ContentKind::Resource, None) => String::new(),
    };
    ContentFacts {
        kind,
        name: name.to_owned(),
        server,
        template: raw.and_then(|r| r.template.clone()),
        class: writ_core::tools::ContentClass {
            data_classes: raw.map(|r| r.data_classes.clone()).unwrap_or_default(),
            groups: raw.map(|r| r.groups.clone()).unwrap_or_default(),
        },
    }
}

fn tool_facts(file: &File, name: &str) -> ToolFacts {
    let server = name.split_once('.').map_or(name, |(s, _)| s).to_owned();
    let raw = file.tools.get(name);
    ToolFacts {
        name: name.to_owned(),
        server,
        trusted: raw.is_some_and(|t| t.trusted),
        class: match raw {
            None => ToolClass::UNKNOWN,
            Some(raw) => ToolClass {
                access: raw.access.unwrap_or(ToolClass::UNKNOWN.access),
                risk: raw.risk.unwrap_or(ToolClass::UNKNOWN.risk),
                data_classes: raw.data_classes.clone(),
                groups: raw.groups.clone(),
            },
        },
    }
}
