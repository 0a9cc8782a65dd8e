//! Slicing the policy set so a decision evaluates only policies that can apply to it.
//!
//! A policy's scope names at most one action set, one principal constraint and one
//! resource constraint. For the tool actions (`discover`, `call`) a policy applies to a
//! request when its action scope admits the action, its principal scope can hold the
//! agent (open, the agent itself, the agent's team), and its resource scope is open,
//! names the tool, or names the tool's server or one of its groups. The resource maps
//! below find the candidates; the principal check drops other agents' and teams'
//! policies. A slice is built on first use for one (action, agent, tool) and kept, with
//! the agent's and the tool's Cedar entities, until the set is replaced; the cache is
//! bounded. `begin_task` and `delegate` are rare (one per token request) and use every
//! policy of their action.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use cedar_policy::{
    ActionConstraint, Authorizer, Effect, Entities, Entity, EntityUid, Policy, PolicyId, PolicySet,
    PrincipalConstraint, RequestBuilder, ResourceConstraint,
};

use crate::Action;
use crate::facts::{AgentFacts, FactsError, ToolFacts};
use crate::reads::Reads;

/// More cached slices than this and the cache starts over: a bound on memory when many
/// agents meet many tools, at the cost of rebuilding the slices in use.
const MAX_SLICES: usize = 16_384;

/// Which policies of one action apply to which resources.
#[derive(Debug, Default)]
struct ActionIndex {
    /// Policies whose resource scope is open (or a type check only).
    open: Vec<Policy>,
    by_tool: HashMap<String, Vec<Policy>>,
    by_server: HashMap<String, Vec<Policy>>,
    by_group: HashMap<String, Vec<Policy>>,
    /// Every policy of this action, for the actions that are not sliced.
    all: Vec<Policy>,
}

/// The policies one request can meet, and the entities every such request needs.
///
/// When the slice is built its policies are evaluated once by Cedar's partial evaluator,
/// with the agent, the tool and the action known and the context unknown. A policy that
/// holds whatever the context is kept as an outcome (`permits`, `forbids`); one that
/// cannot hold for this agent and tool whatever the context (`resource.risk_level > 3
/// && context.time.hour < 8` for a low-risk tool) is dropped; the rest — and any that
/// errors — are evaluated per request (`policies`), with a context holding only what
/// they `read`.
#[derive(Debug)]
pub(crate) struct Slice {
    /// The policies that read the context, evaluated per request.
    pub policies: PolicySet,
    /// Ids of context-free permits and forbids that hold for this agent and tool.
    pub permits: Vec<String>,
    pub forbids: Vec<String>,
    /// What of the context `policies` read.
    pub reads: Reads,
    /// The agent's and the tool's entities.
    pub entities: Vec<Entity>,
    /// The same, ready for Cedar: requests that bring no entities of their own use it
    /// as it is.
    pub store: Entities,
}

#[derive(Debug)]
pub(crate) struct Index {
    actions: HashMap<Action, ActionIndex>,
    slices: RwLock<HashMap<(Action, String), Arc<Slice>>>,
    whole: HashMap<Action, Arc<PolicySet>>,
}

impl Index {
    pub(crate) fn new(policies: &PolicySet) -> Self {
        let mut actions: HashMap<Action, ActionIndex> = HashMap::new();
        for policy in policies.policies() {
            for action in applies_to(policy) {
                let index = actions.entry(action).or_default();
                index.all.push(policy.clone());
                let (kind, id) = match policy.resource_constraint() {
                    ResourceConstraint::Any | ResourceConstraint::Is(_) => {
                        index.open.push(policy.clone());
                        continue;
                    }
                    ResourceConstraint::Eq(uid)
                    | ResourceConstraint::In(uid)
                    | ResourceConstraint::IsIn(_, uid) => split(&uid),
                };
                let map = match kind.as_str() {
                    "Writ::Tool" => &mut index.by_tool,
                    "Writ::Server" => &mut index.by_server,
                    "Writ::ToolGroup" => &mut index.by_group,
                    // Scoped to an entity no tool is in (validation refuses most of these).
                    _ => continue,
                };
                map.entry(id).or_default().push(policy.clone());
            }
        }
        let whole = actions
            .iter()
            .map(|(action, index)| (*action, Arc::new(set_of(index.all.iter()))))
            .collect();
        Self {
            actions,
            slices: RwLock::default(),
            whole,
        }
    }

    /// Every policy of `action`.
    pub(crate) fn whole(&self, action: Action) -> Arc<PolicySet> {
        self.whole.get(&action).cloned().unwrap_or_default()
    }

    /// The policies of `action` that can apply to `agent` using `tool`.
    pub(crate) fn slice(
        &self,
        action: Action,
        agent: &AgentFacts,
        tool: &ToolFacts,
    ) -> Result<Arc<Slice>, FactsError> {
        let key = (action, slice_key(agent, tool));
        if let Some(slice) = self
            .slices
            .read()
            .ok()
            .and_then(|slices| slices.get(&key).cloned())
        {
            return Ok(slice);
        }
        let mut chosen: Vec<&Policy> = Vec::new();
        if let Some(index) = self.actions.get(&action) {
            chosen.extend(&index.open);
            chosen.extend(pick(&index.by_tool, &tool.name));
            chosen.extend(pick(&index.by_server, &tool.server));
            for group in &tool.class.groups {
                chosen.extend(pick(&index.by_group, group));
            }
        }
        chosen.retain(|policy| may_hold(policy, agent));
        let entities = vec![agent.entity()?, tool.entity()?];
        let store = Entities::from_entities(entities.iter().cloned(), None)
            .map_err(|e| FactsError(format!("entities: {e}")))?;
        let settled = Settled::of(&chosen, agent, action, tool, &store)?;
        let (mut permits, mut forbids, mut per_request) = (Vec::new(), Vec::new(), Vec::new());
        for policy in chosen {
            let id = policy.id();
            if settled.open.contains(id) {
                per_request.push(policy);
            } else if settled.holds.contains(id) {
                match policy.effect() {
                    Effect::Permit => permits.push(id.to_string()),
                    Effect::Forbid => forbids.push(id.to_string()),
                }
            }
            // Otherwise it cannot hold for this agent and tool: dropped.
        }
        let slice = Arc::new(Slice {
            reads: Reads::of(per_request.iter().copied()),
            policies: set_of(per_request.into_iter()),
            permits,
            forbids,
            store,
            entities,
        });
        if let Ok(mut slices) = self.slices.write() {
            if slices.len() >= MAX_SLICES {
                slices.clear();
            }
            slices.insert(key, slice.clone());
        }
        Ok(slice)
    }
}

fn pick<'m>(map: &'m HashMap<String, Vec<Policy>>, id: &str) -> &'m [Policy] {
    map.get(id).map(Vec::as_slice).unwrap_or_default()
}

/// Everything a slice depends on: the agent's and the tool's facts.
fn slice_key(agent: &AgentFacts, tool: &ToolFacts) -> String {
    let mut key = String::with_capacity(128);
    for part in [
        agent.name.as_str(),
        agent.id.as_str(),
        agent.team.as_deref().unwrap_or(""),
        agent.owner.as_deref().unwrap_or(""),
        tool.name.as_str(),
        tool.server.as_str(),
        if tool.trusted { "t" } else { "u" },
        tool.class.access.as_str(),
        tool.class.risk.as_str(),
    ] {
        key.push_str(part);
        key.push('\n');
    }
    for class in &tool.class.data_classes {
        key.push_str(class);
        key.push(',');
    }
    key.push('\n');
    for group in &tool.class.groups {
        key.push_str(group);
        key.push(',');
    }
    key
}

/// False when the policy's principal scope cannot hold this agent: it names another
/// agent, or a team the agent is not in (an agent is `in` itself and its team only).
fn may_hold(policy: &Policy, agent: &AgentFacts) -> bool {
    let holds = |uid: &EntityUid| {
        let (kind, id) = split(uid);
        match kind.as_str() {
            "Writ::Agent" => id == agent.name,
            "Writ::Team" => agent.team.as_deref() == Some(id.as_str()),
            _ => false,
        }
    };
    match policy.principal_constraint() {
        PrincipalConstraint::Any => true,
        PrincipalConstraint::Is(kind) => kind.to_string() == "Writ::Agent",
        PrincipalConstraint::Eq(uid) | PrincipalConstraint::In(uid) => holds(&uid),
        PrincipalConstraint::IsIn(kind, uid) => kind.to_string() == "Writ::Agent" && holds(&uid),
    }
}

/// What partial evaluation settled for a slice's policies.
struct Settled {
    /// Hold whatever the context is.
    holds: HashSet<PolicyId>,
    /// Depend on the context, or failed to evaluate: decided per request.
    open: HashSet<PolicyId>,
}

impl Settled {
    fn of(
        policies: &[&Policy],
        agent: &AgentFacts,
        action: Action,
        tool: &ToolFacts,
        entities: &Entities,
    ) -> Result<Self, FactsError> {
        // No `context(…)`: the context is unknown.
        let request = RequestBuilder::default()
            .principal(agent.uid()?)
            .action(action.uid()?)
            .resource(tool.uid()?)
            .build();
        let set = set_of(policies.iter().copied());
        let partial = Authorizer::new().is_authorized_partial(&request, &set, entities);
        let holds = partial
            .definitely_satisfied()
            .map(|p| p.id().clone())
            .collect();
        let open = partial
            .nontrivial_residuals()
            .map(|p| p.id().clone())
            .chain(partial.definitely_errored().cloned())
            .collect();
        Ok(Self { holds, open })
    }
}

/// The actions a policy's scope admits.
fn applies_to(policy: &Policy) -> Vec<Action> {
    match policy.action_constraint() {
        ActionConstraint::Any => Action::ALL.to_vec(),
        ActionConstraint::Eq(uid) => Action::from_uid(&uid).into_iter().collect(),
        ActionConstraint::In(uids) => uids.iter().filter_map(Action::from_uid).collect(),
    }
}

fn split(uid: &EntityUid) -> (String, String) {
    (uid.type_name().to_string(), uid.id().unescaped().to_owned())
}

fn set_of<'p>(policies: impl Iterator<Item = &'p Policy>) -> PolicySet {
    let mut set = PolicySet::new();
    for policy in policies {
        // A policy's resource scope names one entity, so it is in one candidate list
        // at most, and ids are unique in the source set: `add` cannot fail here.
        let _ = set.add(policy.clone());
    }
    set
}
