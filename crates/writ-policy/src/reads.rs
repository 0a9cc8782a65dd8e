//! What of the context a set of policies reads, so a request builds only that.
//!
//! Found in the policies' text: every `context.NAME` (and `context.task.NAME`) counts.
//! `context` used any other way (`context has x`, `context == …`) counts as reading
//! everything. A mention in a comment or a string counts too: the test errs towards
//! building more, never less.

use std::collections::BTreeSet;

use cedar_policy::Policy;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Reads {
    everything: bool,
    /// Top-level context attributes read.
    fields: BTreeSet<String>,
    /// Attributes of `context.task` read.
    task: BTreeSet<String>,
    /// `context.task` read as a whole.
    whole_task: bool,
}

impl Reads {
    pub(crate) fn everything() -> Self {
        Self {
            everything: true,
            ..Self::default()
        }
    }

    pub(crate) fn of<'p>(policies: impl IntoIterator<Item = &'p Policy>) -> Self {
        let mut reads = Self::default();
        for policy in policies {
            reads.add(&policy.to_string());
        }
        reads
    }

    fn add(&mut self, text: &str) {
        for (at, word) in text.match_indices("context") {
            let rest = text.get(at + word.len()..).unwrap_or_default();
            let Some(field) = member(rest) else {
                self.everything = true;
                return;
            };
            if field == "task" {
                let after = rest.get(1 + field.len()..).unwrap_or_default();
                match member(after) {
                    Some(name) => {
                        self.task.insert(name.to_owned());
                    }
                    None => self.whole_task = true,
                }
            }
            self.fields.insert(field.to_owned());
        }
    }

    /// Does anything read the top-level context attribute `name`?
    pub(crate) fn field(&self, name: &str) -> bool {
        self.everything || self.fields.contains(name)
    }

    /// Does anything read `context.task.name`?
    pub(crate) fn task_field(&self, name: &str) -> bool {
        self.everything || self.whole_task || self.task.contains(name)
    }
}

/// The identifier after a leading `.`, if `rest` starts with one.
fn member(rest: &str) -> Option<&str> {
    let name = rest.strip_prefix('.')?;
    let end = name
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(name.len());
    name.get(..end).filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reads(text: &str) -> Reads {
        let mut reads = Reads::default();
        reads.add(text);
        reads
    }

    #[test]
    fn fields_and_task_fields_are_found() {
        let r = reads("when { context.time.hour > 8 && context.task.calls < 3 }");
        assert!(r.field("time") && r.field("task"));
        assert!(!r.field("arguments") && !r.field("environment"));
        assert!(r.task_field("calls") && !r.task_field("purpose"));
    }

    #[test]
    fn context_as_a_whole_reads_everything() {
        assert!(reads("when { context has approved }").field("arguments"));
        assert!(reads("when { context.task has category }").task_field("purpose"));
    }
}
