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
//! [defaults]                # what every case has unless it says otherwise
//! environment = "prod"
//! time = "2026-11-18T10:00:00Z"
//! task = { purpose = "triage the inbox", tools = ["notes.*"] }
//!
//! [[case]]
//! name = "a researcher may write notes"
//! agent = "alice"
//! action = "call"           # discover | call | begin_task | delegate
//! tool = "notes.write"
//! arguments = { text = "hello" }
//! expect = "allow"          # allow | deny | approval_required
//! policies = ["writes-need-team"]   # optional: exactly these policies decided
//! ```

use std::collections::HashMap;

use serde::Deserialize;
use writ_core::tools::{Access, Risk, ToolClass};

use crate::{Action, AgentFacts, Decision, Engine, Situation, TaskFacts, ToolFacts};

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
    let decision = match action {
        Action::Discover => engine.discover(&agent, &tool()?, &task, &situation),
        Action::Call => {
            let arguments = case
                .arguments
                .as_ref()
                .map(|a| serde_json::to_value(a).map_err(|e| bad(e.to_string())))
                .transpose()?;
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
