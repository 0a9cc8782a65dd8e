//! The stages of a use, one function each, in the order `pipeline::use_target` calls
//! them. The deciding stages (task check, pin check, policy, approval) are pure: they
//! read the caller, the target and the policy set, and return a value; nothing they do
//! reaches a server or the store. What follows the record of the decision acts.

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use writ_core::config::OnDeviation;
use writ_core::task::Target as GrantTarget;
use writ_mcp::upstream::ProgressRoute;
use writ_store::TaskState;

use super::decision::{Allowed, Refusal};
use super::target::{Facts, Target};
use crate::error::GatewayError;
use crate::token::{CallReservation, Caller, Denied, LiveTask};
use crate::{Gateway, Guard};

/// A guarded request: the checks and the agent they apply to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Guarded<'r> {
    pub guard: &'r Guard,
    pub caller: &'r Caller,
}

/// The task check: the task is still active (checked for every request, so a batch
/// element sees a revocation an earlier element caused), the target lies within its
/// declared patterns and data classes, and its budget has a call left (reserved now,
/// given back if a later stage refuses).
pub(crate) fn task_check(
    guarded: Guarded<'_>,
    target: &Target,
) -> Result<Option<CallReservation>, Refusal> {
    let caller = guarded.caller;
    let task = &caller.task;
    let id = &task.task.id;
    match task.state(guarded.guard.clock.now()) {
        TaskState::Active => {}
        state => {
            return Err(Refusal::TaskEnded(format!(
                "task `{id}` is {}; begin a new task",
                state.as_str()
            )));
        }
    }
    if let Some(strayed) = strays(caller, target) {
        return Err(Refusal::Deviation(strayed));
    }
    if !target.use_.spends_budget() {
        return Ok(None);
    }
    task.reserve_call().map(Some).map_err(|max| {
        Refusal::BudgetSpent(format!(
            "task `{id}` has used all {max} of its calls; begin a new task"
        ))
    })
}

/// How a target lies outside a task.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stray<'t> {
    /// Not among the task's patterns.
    Outside,
    /// Handles data of a class the task did not declare.
    DataClass(&'t str),
}

impl Stray<'_> {
    /// In words, without naming the target: "outside task … (its tools: …)" or
    /// "handles data of class …".
    pub(crate) fn describe(self, task: &LiveTask) -> String {
        let (record, grant) = (&task.task, &task.grant);
        match self {
            Self::Outside => format!(
                "outside task `{}` (its tools: {})",
                record.id,
                record.tool_list()
            ),
            Self::DataClass(class) => {
                let declared = if grant.data_classes.is_empty() {
                    "none".to_owned()
                } else {
                    grant.data_classes.join(", ")
                };
                format!(
                    "handles data of class `{class}`, which task `{}` did not declare (its data classes: {declared})",
                    record.id
                )
            }
        }
    }
}

/// How `target`, handling `data_classes`, lies outside `task`; `None` when it lies within.
pub(crate) fn stray<'t>(
    task: &LiveTask,
    target: GrantTarget<'_>,
    data_classes: &'t [String],
) -> Option<Stray<'t>> {
    let grant = &task.grant;
    if !grant.allows(target) {
        return Some(Stray::Outside);
    }
    data_classes
        .iter()
        .find(|c| !grant.data_classes.contains(c))
        .map(|class| Stray::DataClass(class))
}

/// How a use's target lies outside its caller's task, in words naming the target.
fn strays(caller: &Caller, target: &Target) -> Option<String> {
    let stray = stray(
        &caller.task,
        target.as_grant_target(),
        target.data_classes(),
    )?;
    let how = stray.describe(&caller.task);
    let (noun, name) = (target.noun(), target.name());
    Some(match stray {
        Stray::Outside => format!("{noun} `{name}` is {how}"),
        Stray::DataClass(_) => format!("{noun} `{name}` {how}"),
    })
}

/// The pin check: a tool whose definition changed since it was trusted is not called,
/// nor one the tool registry has not checked yet. Prompts and resources are not pinned.
pub(crate) fn pin_check(target: &Target) -> Result<(), Refusal> {
    let held = match &target.facts {
        Facts::Content(_) => None,
        Facts::Tool(None) => Some("Writ has not checked this tool yet; try again".to_owned()),
        Facts::Tool(Some(known)) => known.held.clone(),
    };
    match held {
        None => Ok(()),
        Some(why) => Err(Refusal::Held {
            target: target.name().to_owned(),
            why,
        }),
    }
}

/// The policy stage: Cedar's `call`, `get_prompt` or `read_resource` decision on this
/// agent, target, task (with the calls it made before this one) and arguments. Allowed,
/// it returns the policies that allowed it; in shadow mode a refusal is logged and let
/// through.
pub(crate) fn policy(
    guarded: Guarded<'_>,
    target: &Target,
    arguments: Option<&Value>,
    calls_before: u64,
) -> Result<Vec<String>, Refusal> {
    let policies = &guarded.guard.policies;
    let caller = guarded.caller;
    let engine = policies.current();
    let task = caller.task.facts_at(calls_before);
    let situation = policies.situation();
    let decision = match &target.facts {
        Facts::Tool(Some(known)) => engine.call(
            &caller.task.agent,
            &known.facts,
            &task,
            arguments,
            false,
            &situation,
        ),
        Facts::Tool(None) => {
            return Err(Refusal::Unavailable(
                "Writ has no facts about this tool to decide on".into(),
            ));
        }
        Facts::Content(content) => engine.use_content(
            &caller.task.agent,
            content,
            &task,
            arguments,
            false,
            &situation,
        ),
    };
    tracing::info!(
        agent = %caller.task.agent.name,
        task = %caller.task.task.id,
        target = %target.name(),
        decision = decision.verdict.as_str(),
        policies = ?decision.policies,
        "use decided"
    );
    if decision.is_allow() {
        return Ok(decision.policies);
    }
    if !policies.enforcing() {
        let what = if matches!(target.facts, Facts::Tool(_)) {
            "call"
        } else {
            target.noun()
        };
        tracing::warn!(tool = %target.name(), decision = %crate::policy::describe(&decision), "shadow mode: policy would refuse this {what}");
        return Ok(Vec::new());
    }
    Err(Refusal::Policy {
        target: target.name().to_owned(),
        decision,
    })
}

/// The approval stage: where a person's approval of this exact use will turn "approval
/// required" into allow. Step-up approval is not built yet, so every decision passes
/// through unchanged and "approval required" stays a refusal.
pub(crate) fn approval(decided: Result<Allowed, Refusal>) -> Result<Allowed, Refusal> {
    decided
}

/// Answers a refusal other than a deviation, once it is recorded.
pub(crate) fn refuse(target: &Target, refusal: Refusal) -> GatewayError {
    refusal.into_error(target.noun())
}

/// A deviation: its record, then (unless `[tasks] on_deviation = "deny"`) the revocation
/// of the task and every task delegated from it — an agent acting outside its declared
/// intent may have been subverted, and its writ should not outlive that. Both run in a
/// task of their own, so an agent that cancels the request or drops the connection
/// cannot stop the revocation after the record; the answer waits for both. `event` is
/// the deviation's record.
pub(crate) async fn deviate(
    guarded: Guarded<'_>,
    target: &Target,
    call: &str,
    event: writ_audit::Event,
    refusal: Refusal,
) -> GatewayError {
    let Refusal::Deviation(strayed) = &refusal else {
        return refuse(target, refusal);
    };
    let task = &guarded.caller.task;
    tracing::warn!(agent = %task.agent.name, task = %task.task.id, target = %target.name(), deviation = %strayed, "deviation from the task's declared intent");
    let audit = guarded.guard.audit.clone();
    let tokens = guarded.guard.tokens.clone();
    let revoke = guarded.guard.on_deviation == OnDeviation::Revoke;
    let (id, reason, call) = (
        task.task.id.clone(),
        format!("deviation: {strayed}"),
        call.to_owned(),
    );
    let work = tokio::spawn(async move {
        // Refused either way; a record that fails is logged by the audit log itself.
        if let Err(err) = audit.record(event).await {
            tracing::error!(%err, task = %id, "could not record a deviation");
        }
        if !revoke {
            return None;
        }
        Some(
            tokens
                .live
                .end_task_for(&id, TaskState::Revoked, &reason, Some(&call))
                .await,
        )
    });
    let mut message = refusal.reason();
    match work.await {
        Ok(Some(Ok(ended))) if ended.len() == 2 => {
            message.push_str(", so the task and the one task delegated from it are revoked")
        }
        Ok(Some(Ok(ended))) if ended.len() > 2 => message.push_str(&format!(
            ", so the task and the {} tasks delegated from it are revoked",
            ended.len() - 1
        )),
        Ok(Some(Ok(_))) => message.push_str(", so the task is revoked"),
        Ok(None) => {}
        // The use is refused either way; nobody retries the revocation, so say so.
        Ok(Some(Err(err))) => {
            tracing::error!(%err, task = %task.task.id, "could not revoke a deviating task")
        }
        Err(err) => {
            tracing::error!(%err, task = %task.task.id, "the revocation of a deviating task failed")
        }
    }
    GatewayError::Denied(Denied::InsufficientScope(message))
}

/// The credentials stage: which of the server's credential references the use is sent
/// with (named in the record, never their values). The upstream link holds the server's
/// own credentials today; the credential broker will choose and inject them here.
pub(crate) fn credentials(gateway: &Gateway, target: &Target) -> Option<String> {
    gateway
        .credentials
        .get(&target.server_name)
        .cloned()
        .flatten()
}

/// The forward stage: the upstream gets the use under Writ's own session, id and
/// progress token; the agent's writ never leaves Writ.
pub(crate) async fn forward(
    gateway: &Gateway,
    target: &Target,
    params: Map<String, Value>,
    progress: Option<ProgressRoute>,
) -> Result<Box<RawValue>, GatewayError> {
    let upstream = gateway
        .upstreams
        .get(target.server)
        .ok_or_else(|| GatewayError::Internal(format!("no upstream at index {}", target.server)))?;
    let (method, params) = target.upstream_request(params);
    Ok(upstream
        .call(method, Some(super::upstream_params(params)), progress)
        .await?)
}
