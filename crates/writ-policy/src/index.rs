//! Slicing the policy set so a decision evaluates only policies that can apply to it.
//!
//! A policy's scope names at most one action set and one resource constraint. For the
//! tool actions (`discover`, `call`) a policy applies to a tool when its resource scope is
//! open, names the tool, or names a server or group the tool is in. Those three maps and
//! the open list give each (action, tool) its slice; the slice is built once, on first
//! use, and kept until the set is replaced. `begin_task` and `delegate` are rare (one per
//! token request) and use every policy of their action.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use cedar_policy::{ActionConstraint, EntityUid, Policy, PolicySet, ResourceConstraint};

use crate::Action;
use crate::facts::ToolFacts;

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

#[derive(Debug)]
pub(crate) struct Index {
    actions: HashMap<Action, ActionIndex>,
    slices: RwLock<HashMap<(Action, String), Arc<PolicySet>>>,
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

    /// The policies of `action` that can apply to `tool`.
    pub(crate) fn slice(&self, action: Action, tool: &ToolFacts) -> Arc<PolicySet> {
        let key = (action, slice_key(tool));
        if let Some(slice) = self
            .slices
            .read()
            .ok()
            .and_then(|slices| slices.get(&key).cloned())
        {
            return slice;
        }
        let Some(index) = self.actions.get(&action) else {
            return Arc::default();
        };
        let mut chosen: Vec<&Policy> = index.open.iter().collect();
        chosen.extend(pick(&index.by_tool, &tool.name));
        chosen.extend(pick(&index.by_server, &tool.server));
        for group in &tool.class.groups {
            chosen.extend(pick(&index.by_group, group));
        }
        let slice = Arc::new(set_of(chosen.into_iter()));
        if let Ok(mut slices) = self.slices.write() {
            slices.insert(key, slice.clone());
        }
        slice
    }
}

fn pick<'m>(map: &'m HashMap<String, Vec<Policy>>, id: &str) -> &'m [Policy] {
    map.get(id).map(Vec::as_slice).unwrap_or_default()
}

/// The key of a tool's slice: its name and groups (a tool's server is part of its name).
fn slice_key(tool: &ToolFacts) -> String {
    let mut key = tool.name.clone();
    for group in &tool.class.groups {
        key.push('\n');
        key.push_str(group);
    }
    key
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
        // Ids are unique in the source set, and a policy lands in one slice at most once
        // unless its scope names both a tool's server and one of its groups — it cannot.
        let _ = set.add(policy.clone());
    }
    set
}
