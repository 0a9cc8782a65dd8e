//! Writ's policy engine: Cedar policies, validated against Writ's schema, decided per
//! request on the facts of the agent, the tool, the task and the moment.
//!
//! ```text
//! facts ──▶ Cedar request (principal, action, resource, context, entities)
//!       ──▶ the slice of policies that can apply (index by action and resource)
//!       ──▶ Cedar's answer ──▶ Decision: allow | deny | approval required
//! ```
//! Cedar denies unless a `permit` applies and no `forbid` does. Writ adds two rules:
//! a `forbid` annotated `@approval("group")` turns its deny into "approval required"
//! (when every forbid that applies carries one), and a policy that fails to evaluate
//! denies the request rather than being skipped — Cedar alone would skip an erroring
//! `forbid`, which could let a request through.

mod cases;
mod facts;
mod index;
mod load;
mod reads;
pub mod schema;

use std::fmt;
use std::sync::Arc;

use std::collections::HashMap;

use cedar_policy::{Authorizer, Context, Entities, EntityUid, PolicySet, Request};
use serde_json::Value;

pub use cases::{CaseOutcome, CasesError, run_cases};
pub use facts::{
    AgentFacts, ContentFacts, ContentKind, FactsError, MAX_ARGUMENT_DEPTH, MAX_ARGUMENT_LEAVES,
    MAX_ARGUMENT_TEXT, Situation, TaskFacts, ToolFacts,
};
pub use load::{LoadError, Source, read_dir};

use facts::Built;
use index::Index;

/// The actions of Writ's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Discover,
    Call,
    BeginTask,
    Delegate,
    DiscoverPrompt,
    GetPrompt,
    DiscoverResource,
    ReadResource,
}

impl Action {
    pub const ALL: [Self; 8] = [
        Self::Discover,
        Self::Call,
        Self::BeginTask,
        Self::Delegate,
        Self::DiscoverPrompt,
        Self::GetPrompt,
        Self::DiscoverResource,
        Self::ReadResource,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Discover => "discover",
            Self::Call => "call",
            Self::BeginTask => "begin_task",
            Self::Delegate => "delegate",
            Self::DiscoverPrompt => "discover_prompt",
            Self::GetPrompt => "get_prompt",
            Self::DiscoverResource => "discover_resource",
            Self::ReadResource => "read_resource",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == text)
    }

    fn uid(self) -> Result<EntityUid, FactsError> {
        facts::uid("Action", self.as_str())
    }

    fn from_uid(uid: &EntityUid) -> Option<Self> {
        (uid.type_name().to_string() == "Writ::Action")
            .then(|| Self::parse(uid.id().unescaped()))
            .flatten()
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What policy said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
    /// Denied until a human of one of these groups approves this exact call.
    ApprovalRequired {
        groups: Vec<String>,
    },
}

impl Verdict {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::ApprovalRequired { .. } => "approval_required",
        }
    }
}

/// A decision with what it rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// The ids of the deciding policies: the permits that allowed, or the forbids that
    /// denied. Empty for a deny because nothing permits.
    pub policies: Vec<String>,
    /// Why, in words: the deciding policies' `@reason`, or Writ's own account.
    pub reasons: Vec<String>,
    /// How many policies were evaluated (the slice, not the whole set).
    pub evaluated: usize,
}

impl Decision {
    pub fn is_allow(&self) -> bool {
        self.verdict == Verdict::Allow
    }

    fn deny(reason: String, evaluated: usize) -> Self {
        Self {
            verdict: Verdict::Deny,
            policies: Vec::new(),
            reasons: vec![reason],
            evaluated,
        }
    }

    /// The request's facts could not be put to Cedar: deny, and say why.
    fn unputtable(error: &dyn fmt::Display, evaluated: usize) -> Self {
        Self::deny(
            format!("the request could not be put to policy: {error}"),
            evaluated,
        )
    }
}

/// What Writ reads from a policy's annotations, looked up once at load.
#[derive(Debug, Default)]
struct Meta {
    reason: Option<String>,
    approval: Option<String>,
}

/// A loaded, validated policy set, indexed for deciding.
#[derive(Debug)]
pub struct Engine {
    policies: PolicySet,
    index: Index,
    meta: HashMap<String, Meta>,
    authorizer: Authorizer,
    hash: String,
    files: usize,
    warnings: Vec<String>,
}

impl Engine {
    /// Loads every `*.cedar` file of a folder.
    pub fn load_dir(dir: &std::path::Path) -> Result<Self, LoadError> {
        Self::load(&read_dir(dir)?)
    }

    /// Loads policy sources (file name and text), validating them as one set.
    pub fn load(sources: &[Source]) -> Result<Self, LoadError> {
        let loaded = load::load(sources)?;
        Ok(Self {
            index: Index::new(&loaded.policies),
            meta: meta_of(&loaded.policies),
            policies: loaded.policies,
            authorizer: Authorizer::new(),
            hash: loaded.hash,
            files: loaded.files,
            warnings: loaded.warnings,
        })
    }

    /// A set with no policies: every request is denied.
    pub fn empty() -> Self {
        let policies = PolicySet::new();
        Self {
            index: Index::new(&policies),
            meta: HashMap::new(),
            policies,
            authorizer: Authorizer::new(),
            hash: String::new(),
            files: 0,
            warnings: Vec::new(),
        }
    }

    /// How many policies the set holds.
    pub fn len(&self) -> usize {
        self.policies.policies().count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hex SHA-256 of the sources the set was loaded from.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    pub fn files(&self) -> usize {
        self.files
    }

    /// What the validator warned about (policies that can never apply, and the like).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The ids of every policy, sorted.
    pub fn policy_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .policies
            .policies()
            .map(|p| p.id().to_string())
            .collect();
        ids.sort();
        ids
    }

    /// May `agent` see `tool` in `tools/list`?
    pub fn discover(
        &self,
        agent: &AgentFacts,
        tool: &ToolFacts,
        task: &TaskFacts,
        situation: &Situation,
    ) -> Decision {
        match facts::tool_context(task, situation) {
            Ok(context) => self.discover_with(agent, tool, &context),
            Err(e) => Decision::unputtable(&e, 0),
        }
    }

    /// The context every `discover` of one `tools/list` shares: build it once, then
    /// decide each tool with [`Engine::discover_in`].
    pub fn list_context(
        &self,
        task: &TaskFacts,
        situation: &Situation,
    ) -> Result<ListContext, FactsError> {
        facts::tool_context(task, situation).map(ListContext)
    }

    /// `discover` for one tool of a list.
    pub fn discover_in(
        &self,
        agent: &AgentFacts,
        tool: &ToolFacts,
        context: &ListContext,
    ) -> Decision {
        self.discover_with(agent, tool, &context.0)
    }

    /// One `discover`; the context is cloned only if a policy is left to read it.
    fn discover_with(&self, agent: &AgentFacts, tool: &ToolFacts, context: &Context) -> Decision {
        let slice = match self.index.slice(Action::Discover, agent, tool) {
            Ok(slice) => slice,
            Err(e) => return Decision::unputtable(&e, 0),
        };
        let build = || {
            Ok(Built {
                principal: agent.uid()?,
                resource: tool.uid()?,
                context: context.clone(),
                entities: Vec::new(),
            })
        };
        self.decide(
            Action::Discover,
            &slice.policies,
            Known::Slice(&slice),
            build,
        )
    }

    /// May `agent` call `tool` with these arguments?
    pub fn call(
        &self,
        agent: &AgentFacts,
        tool: &ToolFacts,
        task: &TaskFacts,
        arguments: Option<&Value>,
        approved: bool,
        situation: &Situation,
    ) -> Decision {
        let slice = match self.index.slice(Action::Call, agent, tool) {
            Ok(slice) => slice,
            Err(e) => return Decision::unputtable(&e, 0),
        };
        let decide = |approved: bool| {
            let call = facts::CallFacts {
                arguments,
                approved,
            };
            self.decide(Action::Call, &slice.policies, Known::Slice(&slice), || {
                facts::call_request(agent, tool, task, situation, &call, &slice.reads)
            })
        };
        approval_would_do(decide, approved)
    }

    /// `call` decided the slow way: every `call` policy evaluated by Cedar with the whole
    /// context, nothing sliced, nothing decided ahead. The tests hold the fast path to
    /// it; it is not for use in a gateway.
    #[doc(hidden)]
    pub fn call_unoptimised(
        &self,
        agent: &AgentFacts,
        tool: &ToolFacts,
        task: &TaskFacts,
        arguments: Option<&Value>,
        approved: bool,
        situation: &Situation,
    ) -> Decision {
        let set = self.index.whole(Action::Call);
        let decide = |approved: bool| {
            let call = facts::CallFacts {
                arguments,
                approved,
            };
            self.decide(Action::Call, &set, Known::Nothing, || {
                let mut built = facts::call_request(
                    agent,
                    tool,
                    task,
                    situation,
                    &call,
                    &reads::Reads::everything(),
                )?;
                built.entities.push(agent.entity()?);
                built.entities.push(tool.entity()?);
                Ok(built)
            })
        };
        approval_would_do(decide, approved)
    }

    /// May `agent` see a prompt or resource in its list? `context` is the list's, as for
    /// tools. Lists of prompts and resources are short, so they are decided over every
    /// policy of the action (already sliced by action) rather than a per-item slice.
    pub fn discover_content(
        &self,
        agent: &AgentFacts,
        content: &ContentFacts,
        context: &ListContext,
    ) -> Decision {
        let action = content.kind.discover_action();
        let set = self.index.whole(action);
        self.decide(action, &set, Known::Nothing, || {
            facts::content_request(agent, content, Some(&context.0), None)
        })
    }

    /// May `agent` get this prompt (with these arguments) or read this resource?
    pub fn use_content(
        &self,
        agent: &AgentFacts,
        content: &ContentFacts,
        task: &TaskFacts,
        arguments: Option<&Value>,
        approved: bool,
        situation: &Situation,
    ) -> Decision {
        let action = content.kind.use_action();
        let set = self.index.whole(action);
        let decide = |approved: bool| {
            let used = facts::UseFacts {
                task,
                situation,
                call: facts::CallFacts {
                    arguments,
                    approved,
                },
            };
            self.decide(action, &set, Known::Nothing, || {
                facts::content_request(agent, content, None, Some(&used))
            })
        };
        approval_would_do(decide, approved)
    }

    /// May `agent` begin `task`?
    pub fn begin_task(
        &self,
        agent: &AgentFacts,
        task: &TaskFacts,
        situation: &Situation,
    ) -> Decision {
        let set = self.index.whole(Action::BeginTask);
        self.decide(Action::BeginTask, &set, Known::Nothing, || {
            facts::begin_task_request(agent, task, situation)
        })
    }

    /// May `agent`, holding `parent`, hand `child` to `delegate`?
    pub fn delegate(
        &self,
        agent: &AgentFacts,
        delegate: &AgentFacts,
        parent: &TaskFacts,
        child: &TaskFacts,
        situation: &Situation,
    ) -> Decision {
        let set = self.index.whole(Action::Delegate);
        self.decide(Action::Delegate, &set, Known::Nothing, || {
            facts::delegate_request(agent, delegate, parent, child, situation)
        })
    }

    /// Puts one request to `policies`, with what its slice already decided (`known`).
    /// `build` makes the request's facts; it is not called when no policy is left to
    /// evaluate per request.
    fn decide(
        &self,
        action: Action,
        policies: &PolicySet,
        known: Known<'_>,
        build: impl FnOnce() -> Result<Built, FactsError>,
    ) -> Decision {
        let evaluated = policies.num_of_policies();
        let (held_permits, held_forbids) = match known {
            Known::Slice(slice) => (slice.permits.as_slice(), slice.forbids.as_slice()),
            Known::Nothing => (&[][..], &[][..]),
        };
        let (mut permits, mut forbids) = if evaluated == 0 {
            (Vec::new(), Vec::new())
        } else {
            match self.evaluate(action, policies, known, build) {
                Ok(found) => found,
                Err(denied) => return denied,
            }
        };
        let allowed = held_forbids.is_empty() && forbids.is_empty();
        let mut deciding = if allowed {
            permits.extend(held_permits.iter().cloned());
            permits
        } else {
            forbids.extend(held_forbids.iter().cloned());
            forbids
        };
        if deciding.is_empty() {
            return Decision::deny(format!("no policy permits `{action}` here"), evaluated);
        }
        deciding.sort();
        let meta = |id: &str| self.meta.get(id);
        let reasons = deciding
            .iter()
            .map(|id| match meta(id).and_then(|m| m.reason.clone()) {
                Some(reason) => reason,
                None if allowed => format!("policy `{id}` permits it"),
                None => format!("policy `{id}` forbids it"),
            })
            .collect();
        let verdict = if allowed {
            Verdict::Allow
        } else {
            let groups: Option<Vec<String>> = deciding
                .iter()
                .map(|id| meta(id).and_then(|m| m.approval.clone()))
                .collect();
            match groups {
                Some(mut groups) => {
                    groups.sort();
                    groups.dedup();
                    Verdict::ApprovalRequired { groups }
                }
                None => Verdict::Deny,
            }
        };
        Decision {
            verdict,
            policies: deciding,
            reasons,
            evaluated,
        }
    }

    /// Evaluates the per-request policies with Cedar: the permits that hold (when none
    /// of the forbids does) or the forbids that hold. A failure is a deny, ready to return.
    fn evaluate(
        &self,
        action: Action,
        policies: &PolicySet,
        known: Known<'_>,
        build: impl FnOnce() -> Result<Built, FactsError>,
    ) -> Result<(Vec<String>, Vec<String>), Decision> {
        let evaluated = policies.num_of_policies();
        let unputtable = |e: &dyn fmt::Display| Decision::unputtable(e, evaluated);
        let built = build().map_err(|e| unputtable(&e))?;
        let action_uid = action.uid().map_err(|e| unputtable(&e))?;
        let made;
        let entities = match (known, built.entities.is_empty()) {
            // The common case: nothing of the request's own, the slice's store as it is.
            (Known::Slice(slice), true) => &slice.store,
            (known, _) => {
                let shared = match known {
                    Known::Slice(slice) => slice.entities.as_slice(),
                    Known::Nothing => &[],
                };
                let all = shared.iter().cloned().chain(built.entities);
                made = Entities::from_entities(all, None).map_err(|e| unputtable(&e))?;
                &made
            }
        };
        let request = Request::new(
            built.principal,
            action_uid,
            built.resource,
            built.context,
            None,
        )
        .map_err(|e| unputtable(&e))?;
        let response = self.authorizer.is_authorized(&request, policies, entities);
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| format!("a policy failed to evaluate, so Writ denies: {e}"))
            .collect();
        if !errors.is_empty() {
            // Fail closed: an erroring policy may have been a forbid.
            return Err(Decision {
                verdict: Verdict::Deny,
                policies: Vec::new(),
                reasons: errors,
                evaluated,
            });
        }
        let held: Vec<String> = response
            .diagnostics()
            .reason()
            .map(ToString::to_string)
            .collect();
        Ok(match response.decision() {
            cedar_policy::Decision::Allow => (held, Vec::new()),
            cedar_policy::Decision::Deny => (Vec::new(), held),
        })
    }
}

/// The context of the `discover` decisions of one `tools/list`.
#[derive(Debug, Clone)]
pub struct ListContext(Context);

/// The entities a decision starts from.
#[derive(Clone, Copy)]
enum Known<'s> {
    Slice(&'s index::Slice),
    Nothing,
}

/// "Approval required" is the answer only if approval would be enough: decide again as
/// if approved, and if something else still denies, the answer is that deny.
fn approval_would_do(decide: impl Fn(bool) -> Decision, approved: bool) -> Decision {
    let decision = decide(approved);
    if approved || !matches!(decision.verdict, Verdict::ApprovalRequired { .. }) {
        return decision;
    }
    let if_approved = decide(true);
    if if_approved.is_allow() {
        decision
    } else {
        if_approved
    }
}

/// The annotations of every policy, read once.
fn meta_of(policies: &PolicySet) -> HashMap<String, Meta> {
    policies
        .policies()
        .map(|p| {
            let get = |key: &str| {
                p.annotations()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.to_owned())
            };
            (
                p.id().to_string(),
                Meta {
                    reason: get("reason"),
                    approval: get("approval"),
                },
            )
        })
        .collect()
}

/// Shared by the gateway's holder of the current set.
pub type SharedEngine = Arc<Engine>;
