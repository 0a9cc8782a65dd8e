//! The sections of `writ.toml` that decide what an agent may do once it is in: `[policy]`,
//! `[tasks]`, and the tool facts of `[[servers.tools]]`.

use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use super::{At, ConfigError};
use crate::task::{LABEL_RULE, is_label};
use crate::tools::{Access, ContentClass, PromptRule, ResourceRule, Risk, ToolRule};
use crate::uri::UriPattern;

const DEFAULT_POLICY_DIR: &str = "policies";
/// Policies written for production must hold when nobody said where Writ runs.
const DEFAULT_ENVIRONMENT: &str = "prod";

/// Where the Cedar policies live and how their decisions are used.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// The folder of `*.cedar` files. A relative path is relative to the config file's
    /// folder. No policies there means every request is denied.
    pub dir: PathBuf,
    pub mode: PolicyMode,
    /// Where this gateway runs (`prod`, `staging`, `dev`…): `context.environment`.
    pub environment: String,
}

/// Whether policy decisions are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyMode {
    /// A deny stops the request (the default).
    Enforce,
    /// Decisions are evaluated and logged but every request proceeds: for rolling out new
    /// policies. Task scope, budgets and tool pinning are still enforced.
    Shadow,
}

/// What happens around tasks besides their tokens.
#[derive(Debug, Clone)]
pub struct TaskRules {
    pub on_deviation: OnDeviation,
}

/// What Writ does when an agent calls outside its task's declared tools or data classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDeviation {
    /// Deny the call and revoke the task and its descendants at once (the default): an
    /// agent that strays from its declared intent may have been subverted.
    Revoke,
    /// Deny the call only.
    Deny,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    dir: Option<String>,
    mode: Option<PolicyMode>,
    environment: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTasks {
    on_deviation: Option<OnDeviation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToolRule {
    name: Spanned<String>,
    access: Option<Access>,
    risk: Option<Risk>,
    data_classes: Option<Spanned<Vec<String>>>,
    groups: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPromptRule {
    name: Spanned<String>,
    data_classes: Option<Spanned<Vec<String>>>,
    groups: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResourceRule {
    uri: Spanned<String>,
    data_classes: Option<Spanned<Vec<String>>>,
    groups: Option<Spanned<Vec<String>>>,
}

/// A list of labels (data classes, groups), each checked.
fn labels(
    at: &At<'_>,
    server: &str,
    key: &str,
    value: Option<Spanned<Vec<String>>>,
) -> Result<Option<Vec<String>>, ConfigError> {
    match value {
        None => Ok(None),
        Some(list) => match list.get_ref().iter().find(|l| !is_label(l)) {
            Some(bad) => Err(at.error(
                &list,
                format!("server `{server}`: {key} `{bad}` must be {LABEL_RULE}"),
            )),
            None => Ok(Some(list.into_inner())),
        },
    }
}

impl RawPromptRule {
    pub(super) fn into_rule(self, at: &At<'_>, server: &str) -> Result<PromptRule, ConfigError> {
        if self.name.get_ref().is_empty() {
            return Err(at.error(
                &self.name,
                format!("server `{server}`: a `[[servers.prompts]]` entry needs a `name`"),
            ));
        }
        Ok(PromptRule {
            name: self.name.into_inner(),
            class: ContentClass {
                data_classes: labels(at, server, "data class", self.data_classes)?
                    .unwrap_or_default(),
                groups: labels(at, server, "group", self.groups)?.unwrap_or_default(),
            },
        })
    }
}

impl RawResourceRule {
    pub(super) fn into_rule(self, at: &At<'_>, server: &str) -> Result<ResourceRule, ConfigError> {
        let uri = UriPattern::parse(self.uri.get_ref()).map_err(|e| {
            at.error(
                &self.uri,
                format!("server `{server}`: `[[servers.resources]]` {e}"),
            )
        })?;
        Ok(ResourceRule {
            uri,
            class: ContentClass {
                data_classes: labels(at, server, "data class", self.data_classes)?
                    .unwrap_or_default(),
                groups: labels(at, server, "group", self.groups)?.unwrap_or_default(),
            },
        })
    }
}

impl RawPolicy {
    pub(super) fn into_config(self, at: &At<'_>) -> Result<PolicyConfig, ConfigError> {
        let environment = match self.environment {
            None => DEFAULT_ENVIRONMENT.to_owned(),
            Some(env) if is_label(env.get_ref()) => env.into_inner(),
            Some(env) => {
                return Err(at.error(&env, format!("`policy.environment` must be {LABEL_RULE}")));
            }
        };
        Ok(PolicyConfig {
            dir: PathBuf::from(self.dir.as_deref().unwrap_or(DEFAULT_POLICY_DIR)),
            mode: self.mode.unwrap_or(PolicyMode::Enforce),
            environment,
        })
    }
}

impl RawTasks {
    pub(super) fn into_config(self) -> TaskRules {
        TaskRules {
            on_deviation: self.on_deviation.unwrap_or(OnDeviation::Revoke),
        }
    }
}

impl RawToolRule {
    pub(super) fn into_rule(self, at: &At<'_>, server: &str) -> Result<ToolRule, ConfigError> {
        if self.name.get_ref().is_empty() {
            return Err(at.error(
                &self.name,
                format!("server `{server}`: a `[[servers.tools]]` entry needs a `name`"),
            ));
        }
        Ok(ToolRule {
            name: self.name.into_inner(),
            access: self.access,
            risk: self.risk,
            data_classes: labels(at, server, "data class", self.data_classes)?,
            groups: labels(at, server, "tool group", self.groups)?,
        })
    }
}
