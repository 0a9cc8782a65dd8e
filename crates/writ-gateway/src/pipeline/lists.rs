//! Lists: `tools/list`, `prompts/list`, `resources/list` and `resources/templates/list`.
//! Discovery is kept apart from use: each item is shown only when it is not held, lies
//! within the caller's task, and policy's `discover`, `discover_prompt` or
//! `discover_resource` allows it. What is hidden is recorded with the reason.

use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use writ_audit::kinds;
use writ_core::task::Target as GrantTarget;
use writ_mcp::jsonrpc;
use writ_mcp::revision::ProtocolVersion;
use writ_policy::{ContentFacts, ContentKind, Decision, Engine, FactsError, ListContext};

use super::stages::Guarded;
use crate::Gateway;
use crate::catalog::{Entry, ListName};
use crate::error::GatewayError;
use crate::policy::describe;

/// Answers one list request: one page of the merged list, filtered for the caller.
pub(crate) async fn answer(
    gateway: &Gateway,
    guarded: Option<Guarded<'_>>,
    list: ListName,
    params: &Map<String, Value>,
    version: ProtocolVersion,
) -> Result<Box<RawValue>, GatewayError> {
    if let Some(guarded) = guarded {
        // A task that ended lists nothing; the writ's next use would be refused anyway.
        let task = &guarded.caller.task;
        let state = task.state(guarded.guard.clock.now());
        if state != writ_store::TaskState::Active {
            return Err(GatewayError::Denied(crate::token::Denied::InvalidToken(
                format!(
                    "task `{}` is {}; begin a new task",
                    task.task.id,
                    state.as_str()
                ),
            )));
        }
    }
    let cursor = match params.get("cursor") {
        None | Some(Value::Null) => None,
        Some(Value::String(cursor)) => Some(cursor.as_str()),
        Some(_) => {
            return Err(GatewayError::invalid_params(
                "`params.cursor` must be a string",
            ));
        }
    };
    let page = gateway
        .catalog
        .page(list, cursor, gateway.config.page_size)
        .map_err(GatewayError::invalid_params)?;
    // Built as text around the stored raw items: listing never re-encodes a definition.
    let mut out =
        String::with_capacity(64 + page.entries().map(|e| e.raw.get().len() + 1).sum::<usize>());
    out.push_str("{\"");
    out.push_str(list.result_key());
    out.push_str("\":[");
    // A page may come out shorter than the page size once filtered; its cursor still
    // leads on, so the agent sees every item it may.
    let mut first = true;
    let mut screen = guarded.map(|g| Screen::new(gateway, g, list));
    for entry in page
        .entries()
        .filter(|entry| screen.as_mut().is_none_or(|s| s.shows(entry)))
    {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(entry.raw.get());
    }
    out.push(']');
    if let Some(next) = &page.next {
        out.push_str(",\"nextCursor\":");
        out.push_str(&jsonrpc::to_raw(&next).to_string());
    }
    if version.is_stateless() {
        // What an agent may see depends on who it is: never cache across agents.
        out.push_str(",\"ttlMs\":0,\"cacheScope\":\"private\"");
    }
    out.push('}');
    if let Some(screen) = screen {
        screen.log().await;
    }
    RawValue::from_string(out).map_err(|e| GatewayError::Internal(format!("list result: {e}")))
}

/// Decides, item by item, what one list shows.
struct Screen<'g> {
    gateway: &'g Gateway,
    guarded: Guarded<'g>,
    list: ListName,
    /// One policy set for the whole list, even if a reload lands halfway through, and
    /// the context every item's discovery shares.
    engine: Arc<Engine>,
    context: Result<ListContext, FactsError>,
    shown: Vec<String>,
    hidden: Vec<(String, String)>,
}

impl<'g> Screen<'g> {
    fn new(gateway: &'g Gateway, guarded: Guarded<'g>, list: ListName) -> Self {
        let policies = &guarded.guard.policies;
        let engine = policies.current();
        let context = engine.list_context(&guarded.caller.task.facts(), &policies.situation());
        Self {
            gateway,
            guarded,
            list,
            engine,
            context,
            shown: Vec::new(),
            hidden: Vec::new(),
        }
    }

    fn shows(&mut self, entry: &Entry) -> bool {
        // Every entry is named when it is installed; one that is not is not shown.
        let Some(name) = &entry.name else {
            return false;
        };
        match self.why_hidden(entry.server, name) {
            None => {
                self.shown.push(name.clone());
                true
            }
            Some(why) => {
                self.hidden.push((name.clone(), why));
                false
            }
        }
    }

    fn why_hidden(&self, server: usize, name: &str) -> Option<String> {
        let context = match &self.context {
            Ok(context) => context,
            Err(e) => return Some(format!("the request could not be put to policy: {e}")),
        };
        let agent = &self.guarded.caller.task.agent;
        let decision = match self.list {
            ListName::Tools => {
                let tool = match self.gateway.tools.get(name) {
                    None => return Some("Writ has not checked this tool yet".to_owned()),
                    Some(tool) => tool,
                };
                if let Some(held) = &tool.held {
                    return Some(format!("held back: {held}"));
                }
                let target = GrantTarget::Tool {
                    server: &tool.facts.server,
                    name: &tool.tool,
                };
                if let Some(why) = self.outside_task(target, &tool.facts.class.data_classes) {
                    return Some(why);
                }
                self.engine.discover_in(agent, &tool.facts, context)
            }
            ListName::Prompts | ListName::Resources | ListName::ResourceTemplates => {
                let content = match self.content(server, name) {
                    Ok(content) => content,
                    Err(why) => return Some(why),
                };
                let (server, upstream) = (content.server.as_str(), self.upstream_name(name));
                let target = match content.kind {
                    ContentKind::Prompt => GrantTarget::Prompt {
                        server,
                        name: upstream,
                    },
                    ContentKind::Resource => GrantTarget::Resource { server, uri: name },
                };
                if let Some(why) = self.outside_task(target, &content.class.data_classes) {
                    return Some(why);
                }
                self.engine.discover_content(agent, &content, context)
            }
        };
        self.policy_hides(name, &decision)
    }

    /// The upstream's own name of an exposed prompt name.
    fn upstream_name<'n>(&self, exposed: &'n str) -> &'n str {
        self.gateway
            .catalog
            .resolve(exposed)
            .map_or(exposed, |(_, name)| name)
    }

    /// A prompt, resource or template of the list as policy sees it.
    fn content(&self, server: usize, name: &str) -> Result<ContentFacts, String> {
        let config = self
            .gateway
            .servers
            .get(server)
            .ok_or_else(|| "Writ does not know its server".to_owned())?;
        Ok(match self.list {
            ListName::Prompts => super::target::prompt_facts(config, self.upstream_name(name)),
            _ => {
                let template = self.list == ListName::ResourceTemplates;
                // A URI that could reach elsewhere once normalised is never offered:
                // reading it would be refused.
                if !template {
                    writ_core::uri::check(name).map_err(|e| e.to_string())?;
                }
                // Shown only where a read or completion would be routed: when two servers
                // list one URI, the one a read reaches is the one that decides.
                let routed = if template {
                    self.gateway.catalog.template_server(name)
                } else {
                    self.gateway.catalog.resource_server(name).map(|s| s.server)
                };
                if routed != Some(server) {
                    return Err("another server serves it".to_owned());
                }
                super::target::resource_facts(config, name, template.then(|| name.to_owned()))
            }
        })
    }

    /// What using it would be a deviation for is not offered in the first place. The
    /// reason does not name the item, so the items hidden for it are recorded together.
    fn outside_task(&self, target: GrantTarget<'_>, data_classes: &[String]) -> Option<String> {
        let task = &self.guarded.caller.task;
        super::stages::stray(task, target, data_classes).map(|stray| stray.describe(task))
    }

    fn policy_hides(&self, name: &str, decision: &Decision) -> Option<String> {
        if decision.is_allow() {
            return None;
        }
        let why = describe(decision);
        if !self.guarded.guard.policies.enforcing() {
            let noun = match self.list {
                ListName::Tools => "tool",
                ListName::Prompts => "prompt",
                ListName::Resources => "resource",
                ListName::ResourceTemplates => "resource template",
            };
            tracing::warn!(item = %name, agent = %self.guarded.caller.task.agent.name, decision = %why, "shadow mode: policy would hide this {noun}");
            return None;
        }
        Some(why)
    }

    /// Records what the list showed and hid, and why: in the process log, and as a
    /// `tools.discovered`, `prompts.discovered` or `resources.discovered` event with the
    /// hidden items grouped by reason (most share one, so a page of 100 is one record).
    /// The event is handed over, not waited for; but when the writer is behind, the list
    /// waits for room in its queue, so a flood of lists is slowed rather than held in
    /// memory.
    async fn log(self) {
        let caller = self.guarded.caller;
        tracing::info!(
            agent = %caller.task.agent.name,
            task = %caller.task.task.id,
            list = self.list.result_key(),
            shown = self.shown.len(),
            hidden = ?self.hidden,
            "{} listed",
            self.list.result_key()
        );
        let mut by_reason: Vec<(String, Vec<String>)> = Vec::new();
        for (item, reason) in self.hidden {
            match by_reason.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, items)) => items.push(item),
                None => by_reason.push((reason, vec![item])),
            }
        }
        let key = self.list.result_key();
        let hidden: Vec<Value> = by_reason
            .into_iter()
            .map(|(reason, items)| serde_json::json!({ "reason": reason, key: items }))
            .collect();
        let kind = match self.list {
            ListName::Tools => kinds::TOOLS_DISCOVERED,
            ListName::Prompts => kinds::PROMPTS_DISCOVERED,
            ListName::Resources | ListName::ResourceTemplates => kinds::RESOURCES_DISCOVERED,
        };
        let mut event = crate::events::event(kind)
            .with_actor(crate::token::actors(&caller.task.task))
            .with_task(caller.task.task.id.clone())
            .with_field("shown", self.shown)
            .with_field("hidden", hidden);
        if self.list == ListName::ResourceTemplates {
            event = event.with_field("list", key);
        }
        self.guarded.guard.audit.note(event).await;
    }
}
