//! The audit stages of a use: its decision, committed before anything else happens; the
//! forwarding; the outcome. Every record of one use carries its id in `fields.call`.

use std::time::Instant;

use serde_json::Value;
use serde_json::value::RawValue;
use writ_audit::Event;

use super::decision::{Decided, Refusal};
use super::methods::Use;
use super::stages::Guarded;
use super::target::{Facts, Target};
use crate::error::GatewayError;

/// Arguments larger than this (as JSON) are recorded by digest only.
const MAX_AUDITED_ARGUMENTS: usize = 4 * 1024;

/// A new use id: `c_` and 32 hex digits.
pub(crate) fn new_call_id() -> String {
    format!("c_{}", uuid::Uuid::new_v4().simple())
}

/// What every record of one use shares: who, which task, what, which use.
fn base(guarded: Guarded<'_>, target: &Target, call: &str, kind: &'static str) -> Event {
    let task = &guarded.caller.task.task;
    let mut event = crate::events::event(kind)
        .with_actor(crate::token::actors(task))
        .with_task(task.id.clone())
        .with_tool(target.name().to_owned())
        .with_field("call", call.to_owned())
        .with_field("server", target.server_name.clone());
    match target.use_ {
        Use::Complete => event = event.with_field("method", "completion/complete"),
        Use::Subscribe => event = event.with_field("method", "resources/subscribe"),
        Use::CallTool | Use::GetPrompt | Use::ReadResource => {}
    }
    if let Facts::Content(content) = &target.facts
        && let Some(template) = &content.template
    {
        event = event.with_field("template", template.clone());
    }
    event
}

/// Records a use refused before any target was found (an unknown tool or prompt, a URI
/// no server serves or one refused outright), so probing leaves a trace too, and waits
/// until it is committed. Nothing was forwarded either way.
pub(crate) async fn unresolved(
    guarded: Guarded<'_>,
    use_: Use,
    params: &serde_json::Map<String, Value>,
    error: &GatewayError,
) {
    let (requested, kinds) = super::target::requested(use_, params);
    let task = &guarded.caller.task.task;
    let mut event = crate::events::event(kinds.decided)
        .with_actor(crate::token::actors(task))
        .with_task(task.id.clone())
        .with_tool(requested)
        .with_decision("deny")
        .with_field("call", new_call_id())
        .with_field("reason", error.to_string());
    if use_ == Use::Complete {
        event = event.with_field("method", "completion/complete");
    }
    if let Err(err) = guarded.guard.audit.record(event).await {
        tracing::error!(%err, "could not record a refused request");
    }
}

/// Records what the deciding stages said and waits until it is committed. A use whose
/// decision cannot be recorded is refused: an allowed one becomes [`Refusal::Unavailable`]
/// (503); a refused one keeps its own refusal, which says more.
pub(crate) async fn decision(
    guarded: Guarded<'_>,
    target: &Target,
    call: &str,
    arguments: Option<&Value>,
    decided: Decided,
) -> Decided {
    let event = decision_event(guarded, target, call, arguments, &decided);
    match guarded.guard.audit.record(event).await {
        Ok(()) => decided,
        Err(err) => {
            tracing::error!(%err, task = %guarded.caller.task.task.id, target = %target.name(), "use refused: its decision could not be recorded");
            match decided {
                Ok(_) => Err(Refusal::Unavailable(
                    "Writ could not record the decision, so it refused".into(),
                )),
                refused => refused,
            }
        }
    }
}

/// The record of what the deciding stages said.
pub(crate) fn decision_event(
    guarded: Guarded<'_>,
    target: &Target,
    call: &str,
    arguments: Option<&Value>,
    decided: &Decided,
) -> Event {
    let kinds = target.kinds();
    let kind = match decided {
        Err(refusal) if refusal.is_deviation() => kinds.deviation,
        _ => kinds.decided,
    };
    let mut event = base(guarded, target, call, kind)
        .with_decision(match decided {
            Ok(_) => "allow",
            Err(refusal) => refusal.verdict(),
        })
        .with_field(
            "proof",
            if guarded.caller.claims.cnf.is_some() {
                "dpop"
            } else {
                "bearer"
            },
        );
    match decided {
        Ok(allowed) => event = event.with_field("policies", allowed.policies.clone()),
        Err(refusal) => {
            event = event.with_field("reason", refusal.reason());
            if let Some(detail) = refusal.detail() {
                event = event.with_field("detail", detail);
            }
        }
    }
    if let Some(arguments) = arguments {
        // Encoded once: its hash is the digest, its length decides whether it is copied.
        let canonical = writ_audit::canonical_json(arguments);
        event = event.with_field("arguments_digest", writ_audit::sha256_hex(&canonical));
        // Large arguments are recorded by digest only, and never copied.
        if canonical.len() <= MAX_AUDITED_ARGUMENTS {
            let mut shown = arguments.clone();
            writ_audit::redact(&mut shown, &guarded.guard.redact);
            event = event.with_field("arguments", shown);
        }
    }
    event
}

/// Records that the use is sent upstream, naming the credential references it is sent
/// with (never their values). Handed over, not waited for: it rides with the next commit.
pub(crate) async fn forwarded(
    guarded: Guarded<'_>,
    target: &Target,
    call: &str,
    credential: Option<String>,
) {
    let mut event = base(guarded, target, call, target.kinds().forwarded);
    if matches!(target.facts, Facts::Tool(_)) {
        event = event.with_field("upstream_tool", target.upstream_name.clone());
    }
    guarded
        .guard
        .audit
        .note(event.with_field("credential", credential))
        .await;
}

/// Records how the use came back: status, latency, and the digest of the result as the
/// upstream sent it.
pub(crate) async fn outcome(
    guarded: Guarded<'_>,
    target: &Target,
    call: &str,
    started: Instant,
    result: &Result<Box<RawValue>, GatewayError>,
) {
    let latency_ms = started.elapsed().as_secs_f64() * 1_000.0;
    let completed = base(guarded, target, call, target.kinds().completed)
        .with_field("latency_ms", (latency_ms * 1_000.0).round() / 1_000.0);
    let event = match result {
        Ok(raw) => completed
            .with_field(
                "status",
                if is_tool_error(raw) {
                    "tool_error"
                } else {
                    "ok"
                },
            )
            .with_field(
                "result_digest",
                writ_audit::sha256_hex(raw.get().as_bytes()),
            ),
        Err(err) => completed
            .with_field("status", "error")
            .with_field("error", err.to_string()),
    };
    guarded.guard.audit.note(event).await;
}

/// Whether a result says the tool failed (`isError: true`).
fn is_tool_error(raw: &RawValue) -> bool {
    #[derive(serde::Deserialize)]
    struct Outcome {
        #[serde(rename = "isError", default)]
        is_error: bool,
    }
    serde_json::from_str::<Outcome>(raw.get()).is_ok_and(|o| o.is_error)
}
