//! Loading a folder of `*.cedar` files into one validated policy set.
//!
//! Each policy gets a stable id: its `@id("…")` annotation, or `file.cedar:N` (the N-th
//! policy of the file). Ids are what decisions, logs and test cases name, so they must be
//! unique across the folder. The whole set is validated strictly against Writ's schema;
//! one bad policy refuses the whole load, so a reload never leaves half a set in force.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use cedar_policy::{Policy, PolicyId, PolicySet, ValidationMode, Validator};
use miette::Diagnostic;
use sha2::{Digest, Sha256};

use crate::schema;

/// One source file of a policy set.
#[derive(Debug, Clone)]
pub struct Source {
    /// The file name, as ids and errors show it.
    pub name: String,
    pub text: String,
}

/// A policy set that passed validation, with what the validator warned about.
#[derive(Debug)]
pub struct Loaded {
    pub policies: PolicySet,
    pub warnings: Vec<String>,
    /// Hex SHA-256 over the file names and texts, in name order.
    pub hash: String,
    pub files: usize,
}

/// Why a policy set was refused. Each problem names the file and, when it can, the policy.
#[derive(Debug)]
pub struct LoadError {
    pub problems: Vec<String>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            f.write_str(problem)?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

impl LoadError {
    fn one(problem: String) -> Self {
        Self {
            problems: vec![problem],
        }
    }
}

/// Reads every `*.cedar` file of `dir`, in name order.
pub fn read_dir(dir: &Path) -> Result<Vec<Source>, LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        LoadError::one(format!(
            "cannot read policy folder `{}`: {e}",
            dir.display()
        ))
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cedar") && p.is_file())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| LoadError::one(format!("cannot read `{}`: {e}", path.display())))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok(Source { name, text })
        })
        .collect()
}

/// Parses, names and validates the sources as one policy set.
pub fn load(sources: &[Source]) -> Result<Loaded, LoadError> {
    let mut problems = Vec::new();
    let mut policies = PolicySet::new();
    let mut hasher = Sha256::new();
    let mut origin: HashMap<String, &Source> = HashMap::new();
    for source in sources {
        hasher.update(source.name.as_bytes());
        hasher.update([0]);
        hasher.update(source.text.as_bytes());
        hasher.update([0]);
        let parsed = match source.text.parse::<PolicySet>() {
            Ok(parsed) => parsed,
            Err(e) => {
                problems.push(format!(
                    "{}{}: syntax error: {}",
                    source.name,
                    line_suffix(&e, &source.text),
                    render(&e)
                ));
                continue;
            }
        };
        if parsed.templates().next().is_some() {
            problems.push(format!(
                "{}: policy templates (`?principal`, `?resource`) are not supported; write each policy out",
                source.name
            ));
            continue;
        }
        // The parser names policies `policy0`, `policy1`… in the order they stand.
        let mut in_order: Vec<(usize, Policy)> = parsed
            .policies()
            .map(|p| {
                let n = p.id().to_string().trim_start_matches("policy").parse();
                (n.unwrap_or(usize::MAX), p.clone())
            })
            .collect();
        in_order.sort_by_key(|(n, _)| *n);
        for (ordinal, (_, policy)) in in_order.into_iter().enumerate() {
            let id = policy
                .annotation("id")
                .map_or_else(|| format!("{}:{}", source.name, ordinal + 1), str::to_owned);
            if let Err(problem) = check_annotations(&policy, &id) {
                problems.push(format!("{}: {problem}", source.name));
                continue;
            }
            if let Err(e) = policies.add(policy.new_id(PolicyId::new(&id))) {
                problems.push(format!("{}: policy `{id}`: {e}", source.name));
            }
            origin.insert(id, source);
        }
    }
    if !problems.is_empty() {
        return Err(LoadError { problems });
    }
    let validator = Validator::new(schema::schema().clone());
    let result = validator.validate(&policies, ValidationMode::Strict);
    let problems: Vec<String> = result
        .validation_errors()
        .map(|e| {
            let id = e.policy_id().to_string();
            let place = origin.get(&id).map_or(String::new(), |source| {
                format!("{}{}: ", source.name, line_suffix(e, &source.text))
            });
            format!(
                "{place}policy `{id}` does not fit Writ's schema: {}",
                render(e)
            )
        })
        .collect();
    if !problems.is_empty() {
        return Err(LoadError { problems });
    }
    let warnings = result
        .validation_warnings()
        .map(|w| format!("policy `{}`: {}", w.policy_id(), render(w)))
        .collect();
    Ok(Loaded {
        policies,
        warnings,
        hash: hex(&hasher.finalize()),
        files: sources.len(),
    })
}

/// The annotations Writ reads: `@id`, `@reason`, and `@approval` (forbid policies only).
fn check_annotations(policy: &Policy, id: &str) -> Result<(), String> {
    if id.trim().is_empty() {
        return Err("a policy has an empty `@id`".into());
    }
    if let Some(group) = policy.annotation("approval") {
        if policy.effect() != cedar_policy::Effect::Forbid {
            return Err(format!(
                "policy `{id}`: `@approval` only applies to `forbid` policies (it turns their deny into \"approval required\")"
            ));
        }
        if !writ_core::task::is_label(group) {
            return Err(format!(
                "policy `{id}`: `@approval(\"{group}\")` must name a group of {}",
                writ_core::task::LABEL_RULE
            ));
        }
    }
    Ok(())
}

/// `:LINE` of the first place a diagnostic points at, when it points somewhere.
fn line_suffix(diagnostic: &dyn Diagnostic, text: &str) -> String {
    let Some(offset) = diagnostic
        .labels()
        .and_then(|mut labels| labels.next())
        .map(|label| label.offset())
    else {
        return String::new();
    };
    let line = text
        .get(..offset)
        .map_or(1, |before| before.matches('\n').count() + 1);
    format!(":{line}")
}

/// An error with its causes, on one line.
fn render(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
