//! The story of one call as the log tells it: the call's own records, its task, the
//! tasks it was delegated from, the agent's sign-in, and how the task ended. Every part
//! keeps the id of the record it comes from.

use std::collections::HashSet;

use anyhow::bail;
use serde::Serialize;
use serde_json::Value;
use writ_audit::{Record, kinds};
use writ_store::{AuditFilter, Store};

use super::{field, record_id, utc, utc_seconds};

/// Delegation chains are short; a longer one is a loop in the records.
const MAX_DEPTH: usize = 32;

/// Everything the log says about one call.
#[derive(Debug, Serialize)]
pub(super) struct Story {
    pub call: String,
    /// What the use was: `call` (a tool), `prompt` (a prompt get) or `resource` (a read),
    /// from its records' kinds.
    pub what: String,
    /// The tool, prompt (`server.prompt`) or resource URI.
    pub tool: Option<String>,
    /// The call's own records, in commit order.
    pub records: Vec<String>,
    pub agent: Option<Agent>,
    pub task: Option<Task>,
    /// From the call's task up to the task it all began with.
    pub delegation: Vec<Link>,
    pub decision: Option<Decision>,
    pub approval: Approval,
    pub arguments: Option<Arguments>,
    pub forwarded: Option<Forwarded>,
    pub outcome: Option<Outcome>,
    /// How the call's task ended, if it has.
    pub task_ended: Option<Ended>,
}

#[derive(Debug, Serialize)]
pub(super) struct Agent {
    pub id: String,
    /// On whose behalf it acted, outward.
    pub acting_for: Vec<String>,
    pub name: Option<String>,
    pub team: Option<String>,
    /// How it proved who it is when the task began (`key`, `jwks`, `oidc`, `spiffe`).
    pub identity: Option<String>,
    /// How it held the task's writ: `bearer`, or `dpop` with `jkt`.
    pub writ: Option<String>,
    pub jkt: Option<String>,
    /// How it presented the writ on this call.
    pub call_proof: Option<String>,
    /// Its latest sign-in at the token endpoint before the task began.
    pub sign_in: Option<SignIn>,
    /// The task's record, where most of the above comes from.
    pub record: Option<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct SignIn {
    pub method: Option<String>,
    pub key_id: Option<String>,
    pub issuer: Option<String>,
    pub time: String,
    pub record: String,
}

#[derive(Debug, Serialize)]
pub(super) struct Task {
    pub id: String,
    pub purpose: Option<String>,
    pub category: Option<String>,
    pub tools: Vec<String>,
    pub data_classes: Vec<String>,
    pub max_calls: Option<u64>,
    pub expires_at: Option<String>,
    pub begun_at: Option<String>,
    /// `None` when the log has no record of how the task began.
    pub record: Option<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct Link {
    pub task: String,
    /// `task.begun` or `task.delegated`; `None` when the log has no record of the task.
    pub kind: Option<String>,
    pub agent: Option<String>,
    pub purpose: Option<String>,
    pub parent: Option<String>,
    pub record: Option<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct Decision {
    pub kind: String,
    pub decision: Option<String>,
    pub policies: Vec<String>,
    pub reason: Option<String>,
    pub reasons: Vec<String>,
    pub shadow: bool,
    pub server: Option<String>,
    pub record: String,
}

#[derive(Debug, Serialize)]
pub(super) struct Approval {
    /// `none`, `required` (no approval flow exists yet) or `recorded`.
    pub status: &'static str,
    pub approvers: Vec<String>,
    pub records: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct Arguments {
    pub digest: Option<String>,
    pub redacted: Option<Value>,
    pub record: String,
}

#[derive(Debug, Serialize)]
pub(super) struct Forwarded {
    pub server: Option<String>,
    pub upstream_tool: Option<String>,
    /// The name of the credential reference used, never its value.
    pub credential: Option<String>,
    pub record: String,
}

#[derive(Debug, Serialize)]
pub(super) struct Outcome {
    pub status: Option<String>,
    pub latency_ms: Option<Value>,
    pub error: Option<String>,
    pub result_digest: Option<String>,
    pub record: String,
}

#[derive(Debug, Serialize)]
pub(super) struct Ended {
    pub kind: String,
    /// The task the record is about: the call's own, or an ancestor that took it along.
    pub task: Option<String>,
    pub reason: Option<String>,
    pub ended: Vec<String>,
    pub time: String,
    /// Whether this call's deviation is what ended it.
    pub by_this_call: bool,
    pub record: String,
}

impl Story {
    pub(super) async fn gather(store: &dyn Store, call: &str) -> anyhow::Result<Self> {
        let records = query(
            store,
            AuditFilter {
                call: Some(call.to_owned()),
                ..AuditFilter::default()
            },
        )
        .await?;
        if records.is_empty() {
            bail!("no audit record of call `{call}` (it may have been pruned)");
        }
        // A use's records are one family: `call.*`, `prompt.*` or `resource.*`.
        let what = records
            .iter()
            .find_map(|r| {
                let (family, _) = r.kind.split_once('.')?;
                ["call", "prompt", "resource"]
                    .contains(&family)
                    .then(|| family.to_owned())
            })
            .unwrap_or_else(|| "call".to_owned());
        let of_kind = |suffix: &str| {
            records
                .iter()
                .find(|r| r.kind.strip_prefix(what.as_str()) == Some(suffix))
        };
        let decided = of_kind(".decided").or_else(|| of_kind(".deviation"));
        let task_id = records.iter().find_map(|r| r.task.clone());

        let (delegation, task_records) = match &task_id {
            Some(task) => delegation(store, task).await?,
            None => (Vec::new(), Vec::new()),
        };
        let begin = task_id
            .as_deref()
            .and_then(|task| beginning(&task_records, task));
        let acting = decided.or(records.first());
        let agent = match acting.and_then(|r| r.actor.first()) {
            Some(id) => Some(agent(store, id, acting, decided, begin).await?),
            None => None,
        };
        let task_ended = task_id
            .as_deref()
            .and_then(|task| ended(&task_records, task, call, decided));
        Ok(Story {
            call: call.to_owned(),
            what: what.clone(),
            tool: records.iter().find_map(|r| r.tool.clone()),
            records: records.iter().map(record_id).collect(),
            agent,
            task: task_id.map(|id| task(id, begin)),
            delegation,
            decision: decided.map(decision),
            approval: approval(&records, decided),
            arguments: decided.map(|r| Arguments {
                digest: text(r, "arguments_digest"),
                redacted: r.fields.get("arguments").cloned(),
                record: record_id(r),
            }),
            forwarded: of_kind(".forwarded").map(|r| Forwarded {
                server: text(r, "server"),
                upstream_tool: text(r, "upstream_tool"),
                credential: text(r, "credential"),
                record: record_id(r),
            }),
            outcome: of_kind(".completed").map(|r| Outcome {
                status: text(r, "status"),
                latency_ms: r.fields.get("latency_ms").cloned(),
                error: text(r, "error"),
                result_digest: text(r, "result_digest"),
                record: record_id(r),
            }),
            task_ended,
        })
    }
}

/// The chain from `task` up to its root, and every `task.*` record of those tasks.
async fn delegation(store: &dyn Store, task: &str) -> anyhow::Result<(Vec<Link>, Vec<Record>)> {
    let mut links = Vec::new();
    let mut task_records = Vec::new();
    let mut seen = HashSet::new();
    let mut next = Some(task.to_owned());
    while let Some(task) = next.take() {
        if !seen.insert(task.clone()) || seen.len() > MAX_DEPTH {
            break;
        }
        let mine = query(
            store,
            AuditFilter {
                task: Some(task.clone()),
                kind: Some("task.*".to_owned()),
                ..AuditFilter::default()
            },
        )
        .await?;
        let begin = beginning(&mine, &task);
        next = begin.and_then(|r| text(r, "parent"));
        links.push(Link {
            kind: begin.map(|r| r.kind.clone()),
            agent: begin.and_then(|r| r.actor.first().cloned()),
            purpose: begin.and_then(|r| text(r, "purpose")),
            parent: next.clone(),
            record: begin.map(record_id),
            task,
        });
        task_records.extend(mine);
    }
    Ok((links, task_records))
}

/// The record that began `task`: `task.begun`, or `task.delegated` for a delegated one.
fn beginning<'a>(task_records: &'a [Record], task: &str) -> Option<&'a Record> {
    task_records.iter().find(|r| {
        r.task.as_deref() == Some(task)
            && (r.kind == kinds::TASK_BEGUN || r.kind == kinds::TASK_DELEGATED)
    })
}

async fn agent(
    store: &dyn Store,
    id: &str,
    acting: Option<&Record>,
    decided: Option<&Record>,
    begin: Option<&Record>,
) -> anyhow::Result<Agent> {
    let sign_in = match begin {
        Some(begin) => sign_in(store, id, begin.time_ms).await?,
        None => None,
    };
    Ok(Agent {
        id: id.to_owned(),
        acting_for: acting
            .map(|r| r.actor.iter().skip(1).cloned().collect())
            .unwrap_or_default(),
        name: begin.and_then(|r| text(r, "agent_name")),
        team: begin.and_then(|r| text(r, "team")),
        identity: begin.and_then(|r| text(r, "identity")),
        writ: begin.and_then(|r| text(r, "proof")),
        jkt: begin.and_then(|r| text(r, "jkt")),
        call_proof: decided.and_then(|r| text(r, "proof")),
        sign_in,
        record: begin.map(record_id),
    })
}

/// The agent's latest sign-in at or before `before_ms`.
async fn sign_in(store: &dyn Store, agent: &str, before_ms: i64) -> anyhow::Result<Option<SignIn>> {
    let latest = store
        .audit_query(&AuditFilter {
            agent: Some(agent.to_owned()),
            kind: Some(kinds::AUTH_SUCCEEDED.to_owned()),
            until_ms: Some(before_ms.saturating_add(1)),
            limit: 1,
            newest_first: true,
            ..AuditFilter::default()
        })
        .await?;
    Ok(latest.first().map(|entry| {
        let r = &entry.record;
        SignIn {
            method: text(r, "method"),
            key_id: text(r, "key_id"),
            issuer: text(r, "issuer"),
            time: utc(r.time_ms),
            record: record_id(r),
        }
    }))
}

fn task(id: String, begin: Option<&Record>) -> Task {
    Task {
        id,
        purpose: begin.and_then(|r| text(r, "purpose")),
        category: begin.and_then(|r| text(r, "category")),
        tools: begin.map(|r| strings(r, "tools")).unwrap_or_default(),
        data_classes: begin
            .map(|r| strings(r, "data_classes"))
            .unwrap_or_default(),
        max_calls: begin.and_then(|r| r.fields.get("max_calls")?.as_u64()),
        expires_at: begin
            .and_then(|r| r.fields.get("expires_at")?.as_i64())
            .map(utc_seconds),
        begun_at: begin.map(|r| utc(r.time_ms)),
        record: begin.map(record_id),
    }
}

/// An allowed call names its policies at the top; a refusal carries them, with the
/// reasons and approvers, in `detail` (what the agent was answered).
fn decision(r: &Record) -> Decision {
    let policies = match strings(r, "policies") {
        top if top.is_empty() => detail(r, "policies"),
        top => top,
    };
    Decision {
        kind: r.kind.clone(),
        decision: r.decision.clone(),
        policies,
        reason: text(r, "reason"),
        reasons: detail(r, "reasons"),
        shadow: r
            .fields
            .get("shadow")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        server: text(r, "server"),
        record: record_id(r),
    }
}

fn approval(records: &[Record], decided: Option<&Record>) -> Approval {
    let recorded: Vec<String> = records
        .iter()
        .filter(|r| r.kind.starts_with("approval."))
        .map(record_id)
        .collect();
    let required = decided.and_then(|r| r.decision.as_deref()) == Some("approval_required");
    Approval {
        status: match (recorded.is_empty(), required) {
            (false, _) => "recorded",
            (true, true) => "required",
            (true, false) => "none",
        },
        approvers: decided.map(|r| detail(r, "approvers")).unwrap_or_default(),
        records: recorded,
    }
}

/// The record that ended `task`: its own end, or an ancestor's that took it along.
fn ended(
    task_records: &[Record],
    task: &str,
    call: &str,
    decided: Option<&Record>,
) -> Option<Ended> {
    let end = task_records.iter().find(|r| {
        matches!(
            r.kind.as_str(),
            kinds::TASK_COMPLETED | kinds::TASK_REVOKED | kinds::TASK_EXPIRED
        ) && (r.task.as_deref() == Some(task) || strings(r, "ended").iter().any(|t| t == task))
    })?;
    let reason = text(end, "reason");
    // A deviation revokes its task on the spot, with the reason `deviation: …`.
    let by_this_call = field(end, "call") == Some(call)
        || (decided.is_some_and(|d| d.kind.ends_with(".deviation"))
            && end.kind == kinds::TASK_REVOKED
            && end.task.as_deref() == Some(task)
            && reason
                .as_deref()
                .is_some_and(|r| r.starts_with("deviation")));
    Some(Ended {
        kind: end.kind.clone(),
        task: end.task.clone(),
        reason,
        ended: strings(end, "ended"),
        time: utc(end.time_ms),
        by_this_call,
        record: record_id(end),
    })
}

async fn query(store: &dyn Store, filter: AuditFilter) -> anyhow::Result<Vec<Record>> {
    Ok(store
        .audit_query(&filter)
        .await?
        .into_iter()
        .map(|entry| entry.record)
        .collect())
}

fn text(record: &Record, name: &str) -> Option<String> {
    field(record, name).map(str::to_owned)
}

fn strings_of(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn strings(record: &Record, name: &str) -> Vec<String> {
    strings_of(record.fields.get(name))
}

fn detail(record: &Record, name: &str) -> Vec<String> {
    strings_of(record.fields.get("detail").and_then(|d| d.get(name)))
}
