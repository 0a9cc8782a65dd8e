//! `writ audit explain`: the story of one call (see [`Story`]) as readable text. Every
//! line names the record it comes from, so the story can be checked against the log.

use std::io::Write;

use anyhow::{Context, bail};
use serde_json::Value;
use writ_audit::{Record, kinds};
use writ_store::Store;

use super::story::Story;
use super::{call_of, record_id, utc};

pub(super) async fn explain(
    store: &dyn Store,
    id: &str,
    json: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let call = if id.starts_with("c_") {
        id.to_owned()
    } else {
        let record = find_record(store, id).await?;
        match call_of(&record) {
            Some(call) => call.to_owned(),
            None => return print_record(&record, json, out),
        }
    };
    let story = Story::gather(store, &call).await?;
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&story)?)?;
    } else {
        story.write(out)?;
    }
    Ok(())
}

/// The record `writer:seq`.
async fn find_record(store: &dyn Store, id: &str) -> anyhow::Result<Record> {
    let parsed = id
        .rsplit_once(':')
        .and_then(|(writer, seq)| Some((writer, seq.parse::<u64>().ok()?)))
        .filter(|(writer, seq)| !writer.is_empty() && *seq > 0);
    let Some((writer, seq)) = parsed else {
        bail!("`{id}` is neither a call id (`c_…`) nor a record id (`writer:seq`)");
    };
    store
        .audit_records(writer, seq - 1, 1)
        .await?
        .into_iter()
        .find(|r| r.seq == seq)
        .with_context(|| format!("no audit record `{id}` (it may have been pruned)"))
}

/// A record that belongs to no call, on its own.
fn print_record(record: &Record, json: bool, out: &mut impl Write) -> anyhow::Result<()> {
    let id = record_id(record);
    if json {
        let story = serde_json::json!({ "id": id, "call": null, "record": record });
        writeln!(out, "{}", serde_json::to_string_pretty(&story)?)?;
        return Ok(());
    }
    let or_dash = |v: Option<&str>| v.unwrap_or("-").to_owned();
    writeln!(
        out,
        "record {id}: {} at {}",
        record.kind,
        utc(record.time_ms)
    )?;
    writeln!(out, "  actor     {}", dash_join(&record.actor))?;
    writeln!(out, "  task      {}", or_dash(record.task.as_deref()))?;
    writeln!(out, "  tool      {}", or_dash(record.tool.as_deref()))?;
    writeln!(out, "  decision  {}", or_dash(record.decision.as_deref()))?;
    writeln!(out, "  fields    {}", Value::Object(record.fields.clone()))?;
    writeln!(
        out,
        "  hash      {} (after {})",
        record.hash, record.prev_hash
    )?;
    writeln!(out, "it belongs to no call")?;
    Ok(())
}

impl Story {
    fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        let verdict = match self.decision.as_ref().and_then(|d| d.decision.as_deref()) {
            Some("allow") => "allowed",
            Some("deny") => "denied",
            Some("approval_required") => "held for approval",
            Some("held") => "held",
            Some("deviation") => "refused as a deviation",
            Some(other) => other,
            None => "no decision recorded",
        };
        let tool = self.tool.as_deref().unwrap_or("an unnamed tool");
        let (heading, to) = match self.what.as_str() {
            "prompt" => ("prompt get", "of"),
            "resource" => ("resource read", "of"),
            _ => ("call", "to"),
        };
        writeln!(out, "{heading} {} {to} {tool}: {verdict}", self.call)?;
        writeln!(out, "  records: {}", self.records.join(", "))?;

        writeln!(out, "\nwho")?;
        self.write_agent(out)?;
        writeln!(out, "\ntask")?;
        self.write_task(out)?;
        writeln!(out, "\ndelegation")?;
        self.write_delegation(out)?;
        writeln!(out, "\ndecision")?;
        self.write_decision(out)?;
        writeln!(out, "\nforwarding")?;
        self.write_forwarding(out)?;
        writeln!(out, "\noutcome")?;
        self.write_outcome(out)
    }

    fn write_agent(&self, out: &mut impl Write) -> std::io::Result<()> {
        let Some(agent) = &self.agent else {
            return writeln!(out, "  no agent is named in the call's records");
        };
        let from = cite(agent.record.as_deref());
        let mut who = format!("  agent {}", agent.id);
        match (&agent.name, &agent.team) {
            (Some(name), Some(team)) => who.push_str(&format!(" ({name}, team {team})")),
            (Some(name), None) => who.push_str(&format!(" ({name})")),
            _ => {}
        }
        if !agent.acting_for.is_empty() {
            who.push_str(&format!(", acting for {}", agent.acting_for.join(" → ")));
        }
        writeln!(out, "{who}{from}")?;
        if let Some(identity) = &agent.identity {
            writeln!(
                out,
                "  proved who it is with {} when the task began{from}",
                identity_words(identity)
            )?;
        }
        match agent.writ.as_deref() {
            Some("dpop") => writeln!(
                out,
                "  held a DPoP-bound writ (key thumbprint {}){from}",
                agent.jkt.as_deref().unwrap_or("not recorded")
            )?,
            Some(proof) => writeln!(out, "  held a {proof} writ{from}")?,
            None => writeln!(out, "  how it held its writ is not recorded{from}")?,
        }
        if let (Some(proof), Some(decision)) = (&agent.call_proof, &self.decision) {
            writeln!(
                out,
                "  presented it as {proof} on this call{}",
                cite(Some(&decision.record))
            )?;
        }
        match &agent.sign_in {
            Some(sign_in) => {
                let mut how = format!(
                    "  signed in with {} at {}",
                    sign_in
                        .method
                        .as_deref()
                        .map_or("an unrecorded method", identity_words),
                    sign_in.time
                );
                if let Some(key) = &sign_in.key_id {
                    how.push_str(&format!(" with key {key}"));
                }
                if let Some(issuer) = &sign_in.issuer {
                    how.push_str(&format!(" from issuer {issuer}"));
                }
                writeln!(out, "{how}{}", cite(Some(&sign_in.record)))
            }
            None => writeln!(out, "  no sign-in before the task is in the log"),
        }
    }

    fn write_task(&self, out: &mut impl Write) -> std::io::Result<()> {
        let Some(task) = &self.task else {
            return writeln!(out, "  the call's records name no task");
        };
        let from = cite(task.record.as_deref());
        if task.record.is_none() {
            return writeln!(
                out,
                "  {}: no record of how it began (pruned, or begun before this log)",
                task.id
            );
        }
        let mut line = format!(
            "  {}: \"{}\"",
            task.id,
            task.purpose.as_deref().unwrap_or_default()
        );
        if let Some(category) = &task.category {
            line.push_str(&format!(" (category {category})"));
        }
        if let Some(at) = &task.begun_at {
            line.push_str(&format!(", begun {at}"));
        }
        writeln!(out, "{line}{from}")?;
        writeln!(
            out,
            "  tools {}; data classes {}{from}",
            dash_join(&task.tools),
            dash_join(&task.data_classes)
        )?;
        let budget = task.max_calls.map_or_else(
            || "no call budget".to_owned(),
            |n| format!("budget {n} calls"),
        );
        let expiry = task.expires_at.as_deref().unwrap_or("not recorded");
        writeln!(out, "  {budget}; expires {expiry}{from}")
    }

    fn write_delegation(&self, out: &mut impl Write) -> std::io::Result<()> {
        if self.delegation.is_empty() {
            return writeln!(out, "  no task, no delegation");
        }
        if let [only] = self.delegation.as_slice()
            && only.kind.as_deref() == Some(kinds::TASK_BEGUN)
        {
            return writeln!(
                out,
                "  none: {} was begun by {} itself{}",
                only.task,
                only.agent.as_deref().unwrap_or("its agent"),
                cite(only.record.as_deref())
            );
        }
        for link in &self.delegation {
            let Some(kind) = &link.kind else {
                writeln!(
                    out,
                    "  {}: no record of it (pruned, or begun before this log)",
                    link.task
                )?;
                continue;
            };
            let agent = link.agent.as_deref().unwrap_or("an unnamed agent");
            let purpose = link.purpose.as_deref().unwrap_or_default();
            let how = if kind == kinds::TASK_DELEGATED {
                format!(
                    "delegated to {agent} from {}",
                    link.parent.as_deref().unwrap_or("an unnamed task")
                )
            } else {
                format!("begun by {agent} (the root)")
            };
            writeln!(
                out,
                "  {}: {how}: \"{purpose}\"{}",
                link.task,
                cite(link.record.as_deref())
            )?;
        }
        Ok(())
    }

    fn write_decision(&self, out: &mut impl Write) -> std::io::Result<()> {
        let Some(decision) = &self.decision else {
            return writeln!(out, "  no decision is recorded for this call");
        };
        let from = cite(Some(&decision.record));
        let policies = if decision.policies.is_empty() {
            "no policy".to_owned()
        } else {
            format!("policies {}", decision.policies.join(", "))
        };
        writeln!(
            out,
            "  {} by {policies}{}{from}",
            decision.decision.as_deref().unwrap_or("undecided"),
            if decision.shadow {
                " (shadow mode: recorded, not enforced)"
            } else {
                ""
            }
        )?;
        if let Some(reason) = &decision.reason {
            writeln!(out, "  reason: {reason}{from}")?;
        }
        for reason in decision.reasons.iter().filter(|r| {
            !decision
                .reason
                .as_ref()
                .is_some_and(|reason| reason.contains(*r))
        }) {
            writeln!(out, "  also: {reason}{from}")?;
        }
        match self.approval.status {
            "required" => writeln!(
                out,
                "  approval required from: {}; no approval flow yet{from}",
                dash_join(&self.approval.approvers)
            )?,
            "recorded" => writeln!(out, "  approval: {}", self.approval.records.join(", "))?,
            _ => writeln!(out, "  no approval was involved{from}")?,
        }
        if let Some(arguments) = &self.arguments {
            let from = cite(Some(&arguments.record));
            writeln!(
                out,
                "  arguments digest {}{from}",
                arguments.digest.as_deref().unwrap_or("not recorded")
            )?;
            if let Some(redacted) = &arguments.redacted {
                writeln!(out, "  arguments (redacted) {redacted}{from}")?;
            }
        }
        Ok(())
    }

    fn write_forwarding(&self, out: &mut impl Write) -> std::io::Result<()> {
        match &self.forwarded {
            Some(forwarded) => {
                let credential = match &forwarded.credential {
                    Some(name) => format!("credential reference {name}"),
                    None => "no credential".to_owned(),
                };
                writeln!(
                    out,
                    "  to server {} as {} with {credential}{}",
                    forwarded.server.as_deref().unwrap_or("-"),
                    forwarded.upstream_tool.as_deref().unwrap_or("-"),
                    cite(Some(&forwarded.record))
                )
            }
            None => {
                let why = match self.decision.as_ref().and_then(|d| d.decision.as_deref()) {
                    Some("allow") => "no forward is recorded",
                    Some("deny") => "the call was denied",
                    Some("deviation") => "the call was refused as a deviation",
                    Some("approval_required") => "it needs an approval first",
                    Some("held") => "the tool is held back",
                    Some(_) => "the call was refused",
                    None => "no decision is recorded",
                };
                let server = self
                    .decision
                    .as_ref()
                    .and_then(|d| d.server.as_deref())
                    .map(|s| format!(" to server {s}"))
                    .unwrap_or_default();
                writeln!(out, "  not forwarded{server}: {why}")
            }
        }
    }

    fn write_outcome(&self, out: &mut impl Write) -> std::io::Result<()> {
        match &self.outcome {
            Some(outcome) => {
                let mut line = format!("  {}", outcome.status.as_deref().unwrap_or("finished"));
                if let Some(latency) = &outcome.latency_ms {
                    line.push_str(&format!(" in {latency} ms"));
                }
                if let Some(error) = &outcome.error {
                    line.push_str(&format!(": {error}"));
                }
                if let Some(digest) = &outcome.result_digest {
                    line.push_str(&format!(", result digest {digest}"));
                }
                writeln!(out, "{line}{}", cite(Some(&outcome.record)))?;
            }
            None if self.forwarded.is_some() => writeln!(
                out,
                "  no completion is recorded (the call may still run, or the gateway stopped)"
            )?,
            None => match self.decision.as_ref() {
                Some(d) => writeln!(
                    out,
                    "  not run: {}{}",
                    d.reason.as_deref().unwrap_or("no reason recorded"),
                    cite(Some(&d.record))
                )?,
                None => writeln!(out, "  no outcome is recorded")?,
            },
        }
        match &self.task_ended {
            Some(ended) => {
                let what = match ended.kind.as_str() {
                    kinds::TASK_COMPLETED => "was completed",
                    kinds::TASK_REVOKED => "was revoked",
                    kinds::TASK_EXPIRED => "expired",
                    other => other,
                };
                let whose = match (&ended.task, &self.task) {
                    (Some(by), Some(task)) if *by != task.id => {
                        format!("task {} {what} with {by}", task.id)
                    }
                    (Some(task), _) => format!("task {task} {what}"),
                    _ => format!("the task {what}"),
                };
                let whose = if ended.by_this_call {
                    format!("this call's deviation ended it: {whose}")
                } else {
                    whose
                };
                writeln!(
                    out,
                    "  {whose} at {}: {}{}",
                    ended.time,
                    ended.reason.as_deref().unwrap_or("no reason recorded"),
                    cite(Some(&ended.record))
                )?;
                writeln!(
                    out,
                    "  tasks ended with it: {}{}",
                    dash_join(&ended.ended),
                    cite(Some(&ended.record))
                )
            }
            None if self.task.is_some() => writeln!(out, "  the task has not ended in the log"),
            None => Ok(()),
        }
    }
}

/// How an agent proves who it is, as the gateway records it, in words.
fn identity_words(method: &str) -> &str {
    match method {
        "key" => "an assertion signed with its registered key",
        "jwks" => "an assertion signed with a key from its JWKS URL",
        "oidc" => "a token from its OIDC identity provider",
        "spiffe" | "spiffe_jwt" => "its SPIFFE identity",
        other => other,
    }
}

fn dash_join(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

/// The end of a line that comes from `record`.
fn cite(record: Option<&str>) -> String {
    record.map(|id| format!("  [{id}]")).unwrap_or_default()
}
