//! What the deciding stages return, and the one place a decision becomes an answer: its
//! HTTP status, its JSON-RPC error, and the decision and reason its audit record shows.
//!
//! Decisions are values, not errors. A stage that refuses returns a [`Refusal`]; errors
//! (`GatewayError`) are for what went wrong.

use axum::http::StatusCode;
use serde_json::{Value, json};
use writ_policy::{Decision, Verdict};

use crate::error::{GatewayError, writ_code};
use crate::policy::describe;
use crate::token::{CallReservation, Denied};

/// A use every deciding stage let through.
#[derive(Debug)]
pub(crate) struct Allowed {
    /// The policies that allowed it (none in shadow mode when policy would refuse).
    pub policies: Vec<String>,
    /// Its call of the task's budget, spent when it is forwarded.
    pub budget: Option<CallReservation>,
}

/// Why a use is not forwarded.
#[derive(Debug, Clone)]
pub(crate) enum Refusal {
    /// The task is no longer active (ended, revoked, expired): 401, as for a dead writ.
    TaskEnded(String),
    /// Outside the task's declared patterns or data classes: a deviation (403). The
    /// text says how it strays.
    Deviation(String),
    /// The task's call budget is spent (403).
    BudgetSpent(String),
    /// The tool's definition drifted from its pin, or Writ has not checked it yet.
    Held { target: String, why: String },
    /// Policy denied it, or requires a human's approval first.
    Policy { target: String, decision: Decision },
    /// Writ could not decide (no policy set, a decision that could not be recorded): 503.
    Unavailable(String),
}

/// What the deciding stages said.
pub(crate) type Decided = Result<Allowed, Refusal>;

impl Refusal {
    /// The `decision` of its audit record.
    pub fn verdict(&self) -> &'static str {
        match self {
            Self::Deviation(_) => "deviation",
            Self::Held { .. } => "held",
            Self::Policy { decision, .. } => decision.verdict.as_str(),
            Self::TaskEnded(_) | Self::BudgetSpent(_) | Self::Unavailable(_) => "deny",
        }
    }

    pub fn is_deviation(&self) -> bool {
        matches!(self, Self::Deviation(_))
    }

    /// The reason, in words, as the agent and the audit log get it.
    pub fn reason(&self) -> String {
        match self {
            Self::Deviation(strayed) => {
                format!("{strayed}; this is a deviation from the task's declared intent")
            }
            Self::TaskEnded(why) | Self::BudgetSpent(why) | Self::Unavailable(why) => why.clone(),
            Self::Held { target, why } => format!("`{target}` is held back: {why}"),
            Self::Policy { target, decision } => format!("`{target}` {}", describe(decision)),
        }
    }

    /// What the agent gets in `error.data`, and the audit record in `detail`.
    pub fn detail(&self) -> Option<Value> {
        match self {
            Self::Held { target, why } => Some(json!({
                "decision": "held",
                "tool": target,
                "reasons": [why],
            })),
            Self::Policy { target, decision } => {
                let mut data = json!({
                    "decision": decision.verdict.as_str(),
                    "tool": target,
                    "policies": decision.policies,
                    "reasons": decision.reasons,
                });
                if let (Verdict::ApprovalRequired { groups }, Some(map)) =
                    (&decision.verdict, data.as_object_mut())
                {
                    map.insert("approvers".into(), groups.clone().into());
                }
                Some(data)
            }
            _ => None,
        }
    }

    /// The answer the agent gets: status and JSON-RPC error, in one place.
    pub fn into_error(self, noun: &str) -> GatewayError {
        let detail = self.detail();
        match self {
            Self::TaskEnded(why) => GatewayError::Denied(Denied::InvalidToken(why)),
            Self::Deviation(_) => GatewayError::Denied(Denied::InsufficientScope(self.reason())),
            Self::Unavailable(_) => GatewayError::Denied(Denied::Unavailable),
            Self::BudgetSpent(why) => {
                GatewayError::client(StatusCode::FORBIDDEN, writ_code::BUDGET_SPENT, why)
            }
            Self::Held { target, why } => GatewayError::Client {
                status: StatusCode::OK,
                code: writ_code::TOOL_HELD,
                message: format!("{noun} `{target}` is held back: {why}"),
                data: detail,
            },
            Self::Policy { target, decision } => GatewayError::Client {
                status: StatusCode::OK,
                code: match decision.verdict {
                    Verdict::ApprovalRequired { .. } => writ_code::APPROVAL_REQUIRED,
                    _ => writ_code::POLICY_DENIED,
                },
                message: format!("{} `{target}` {}", call_word(noun), describe(&decision)),
                data: detail,
            },
        }
    }
}

/// "call to" a tool, "get of" a prompt, "read of" a resource.
fn call_word(noun: &str) -> String {
    match noun {
        "tool" => "call to".to_owned(),
        "prompt" => "get of prompt".to_owned(),
        other => format!("read of {other}"),
    }
}
