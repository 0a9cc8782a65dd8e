//! Resolve the target: which tool, prompt or resource a use touches, on which server,
//! with the facts policy decides on. Anything no server offers is refused here, before
//! any stage that could reach a server.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{Map, Value};
use writ_audit::kinds;
use writ_core::config::ServerConfig;
use writ_core::task::Target as GrantTarget;
use writ_core::tools::{classify_prompt, classify_resource};
use writ_mcp::jsonrpc;
use writ_mcp::revision::ProtocolVersion;
use writ_policy::{ContentFacts, ContentKind};

use super::methods::Use;
use crate::Gateway;
use crate::error::{GatewayError, mcp_code};
use crate::tools::KnownTool;

/// What a use touches.
#[derive(Debug)]
pub(crate) struct Target {
    pub use_: Use,
    /// The server, by index in the config.
    pub server: usize,
    pub server_name: String,
    /// The upstream's own name (tools, prompts) or the URI or template (resources).
    pub upstream_name: String,
    /// The name the audit log and messages use: `server.tool`, `server.prompt`, or the
    /// resource's URI. Made once: every record of the use carries it.
    name: String,
    pub facts: Facts,
}

/// What policy and the task check decide on.
#[derive(Debug)]
pub(crate) enum Facts {
    /// A tool; `None` until the tool registry has checked it (never in a guarded
    /// decision: such a tool is held).
    Tool(Option<Arc<KnownTool>>),
    /// A prompt or a resource.
    Content(ContentFacts),
}

/// Which family of audit records a use writes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Kinds {
    pub decided: &'static str,
    pub deviation: &'static str,
    pub forwarded: &'static str,
    pub completed: &'static str,
}

const TOOL_KINDS: Kinds = Kinds {
    decided: kinds::CALL_DECIDED,
    deviation: kinds::CALL_DEVIATION,
    forwarded: kinds::CALL_FORWARDED,
    completed: kinds::CALL_COMPLETED,
};
const PROMPT_KINDS: Kinds = Kinds {
    decided: kinds::PROMPT_DECIDED,
    deviation: kinds::PROMPT_DEVIATION,
    forwarded: kinds::PROMPT_FORWARDED,
    completed: kinds::PROMPT_COMPLETED,
};
const RESOURCE_KINDS: Kinds = Kinds {
    decided: kinds::RESOURCE_DECIDED,
    deviation: kinds::RESOURCE_DEVIATION,
    forwarded: kinds::RESOURCE_FORWARDED,
    completed: kinds::RESOURCE_COMPLETED,
};

impl Target {
    /// The name the audit log and messages use: `server.tool`, `server.prompt`, or the
    /// resource's URI.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it is, for messages.
    pub fn noun(&self) -> &'static str {
        match &self.facts {
            Facts::Tool(_) => "tool",
            Facts::Content(c) if c.kind == ContentKind::Prompt => "prompt",
            Facts::Content(c) if c.template.as_deref() == Some(c.name.as_str()) => {
                "resource template"
            }
            Facts::Content(_) => "resource",
        }
    }

    pub fn kinds(&self) -> Kinds {
        match &self.facts {
            Facts::Tool(_) => TOOL_KINDS,
            Facts::Content(c) if c.kind == ContentKind::Prompt => PROMPT_KINDS,
            Facts::Content(_) => RESOURCE_KINDS,
        }
    }

    /// The target as task patterns match it.
    pub fn as_grant_target(&self) -> GrantTarget<'_> {
        let server = self.server_name.as_str();
        match &self.facts {
            Facts::Tool(_) => GrantTarget::Tool {
                server,
                name: &self.upstream_name,
            },
            Facts::Content(c) if c.kind == ContentKind::Prompt => GrantTarget::Prompt {
                server,
                name: &self.upstream_name,
            },
            Facts::Content(c) => GrantTarget::Resource {
                server,
                uri: &c.name,
            },
        }
    }

    /// The data classes it handles.
    pub fn data_classes(&self) -> &[String] {
        match &self.facts {
            Facts::Tool(Some(known)) => &known.facts.class.data_classes,
            Facts::Tool(None) => &[],
            Facts::Content(c) => &c.class.data_classes,
        }
    }

    /// The method forwarded upstream, and its params: the agent's, with the exposed
    /// name put back to the upstream's own.
    pub fn upstream_request(
        &self,
        mut params: Map<String, Value>,
    ) -> (&'static str, Map<String, Value>) {
        match self.use_ {
            Use::CallTool => {
                params.insert("name".into(), Value::String(self.upstream_name.clone()));
                ("tools/call", params)
            }
            Use::GetPrompt => {
                params.insert("name".into(), Value::String(self.upstream_name.clone()));
                ("prompts/get", params)
            }
            Use::ReadResource => ("resources/read", params),
            Use::Subscribe => ("resources/subscribe", params),
            Use::Complete => {
                if let (Facts::Content(c), Some(Value::Object(reference))) =
                    (&self.facts, params.get_mut("ref"))
                    && c.kind == ContentKind::Prompt
                {
                    reference.insert("name".into(), Value::String(self.upstream_name.clone()));
                }
                ("completion/complete", params)
            }
        }
    }
}

/// Finds what the request's params name. Unknown tools and prompts are `-32602`; a
/// resource no server lists or templates is `-32002` (`-32602` in 2026-07-28), as is a
/// URI that could name another place once a server normalises it.
pub(crate) fn resolve(
    gateway: &Gateway,
    use_: Use,
    params: &Map<String, Value>,
    version: ProtocolVersion,
) -> Result<Target, GatewayError> {
    match use_ {
        Use::CallTool => tool(gateway, string_param(params, "name")?),
        Use::GetPrompt => prompt(gateway, use_, string_param(params, "name")?),
        Use::ReadResource | Use::Subscribe => {
            resource(gateway, use_, string_param(params, "uri")?, version)
        }
        Use::Complete => {
            let reference = params
                .get("ref")
                .and_then(Value::as_object)
                .ok_or_else(|| GatewayError::invalid_params("`params.ref` is missing"))?;
            let field = |key: &str| {
                reference.get(key).and_then(Value::as_str).ok_or_else(|| {
                    GatewayError::invalid_params(format!("`params.ref.{key}` must be a string"))
                })
            };
            match reference.get("type").and_then(Value::as_str) {
                Some("ref/prompt") => prompt(gateway, use_, field("name")?),
                Some("ref/resource") => {
                    // What the server is asked to complete must not reach past the grant.
                    let value = params
                        .get("argument")
                        .and_then(|a| a.get("value"))
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    writ_core::uri::check_completion_value(value)
                        .map_err(|e| resource_not_found(version, e.to_string()))?;
                    template(gateway, field("uri")?, version)
                }
                _ => Err(GatewayError::invalid_params(
                    "`params.ref.type` must be \"ref/prompt\" or \"ref/resource\"",
                )),
            }
        }
    }
}

pub(crate) fn string_param<'p>(
    params: &'p Map<String, Value>,
    key: &str,
) -> Result<&'p str, GatewayError> {
    match params.get(key) {
        Some(Value::String(value)) => Ok(value),
        Some(_) => Err(GatewayError::invalid_params(format!(
            "`params.{key}` must be a string"
        ))),
        None => Err(GatewayError::invalid_params(format!(
            "`params.{key}` is missing"
        ))),
    }
}

fn tool(gateway: &Gateway, exposed: &str) -> Result<Target, GatewayError> {
    let unknown = || GatewayError::invalid_params(format!("unknown tool `{exposed}`"));
    if !gateway.catalog.has_tool(exposed) {
        return Err(unknown());
    }
    let (server, name) = gateway.catalog.resolve(exposed).ok_or_else(unknown)?;
    let config = gateway.servers.get(server).ok_or_else(unknown)?;
    Ok(Target {
        use_: Use::CallTool,
        server,
        server_name: config.name.to_string(),
        upstream_name: name.to_owned(),
        name: format!("{}.{name}", config.name),
        facts: Facts::Tool(gateway.tools.get(exposed)),
    })
}

fn prompt(gateway: &Gateway, use_: Use, exposed: &str) -> Result<Target, GatewayError> {
    let unknown = || GatewayError::invalid_params(format!("unknown prompt `{exposed}`"));
    // Only a prompt its server lists: a name of another server's prompt, or one no
    // server lists, is unknown and reaches nobody.
    if !gateway.catalog.has_prompt(exposed) {
        return Err(unknown());
    }
    let (server, name) = gateway.catalog.resolve(exposed).ok_or_else(unknown)?;
    let config = gateway.servers.get(server).ok_or_else(unknown)?;
    Ok(Target {
        use_,
        server,
        server_name: config.name.to_string(),
        upstream_name: name.to_owned(),
        name: format!("{}.{name}", config.name),
        facts: Facts::Content(prompt_facts(config, name)),
    })
}

/// A prompt (by its upstream name) as policy sees it.
pub(crate) fn prompt_facts(config: &ServerConfig, name: &str) -> ContentFacts {
    ContentFacts {
        kind: ContentKind::Prompt,
        name: format!("{}.{name}", config.name),
        server: config.name.to_string(),
        template: None,
        class: classify_prompt(&config.prompts, name),
    }
}

/// A resource, or a resource template (`template` is then the URI itself), as policy
/// sees it.
pub(crate) fn resource_facts(
    config: &ServerConfig,
    uri: &str,
    template: Option<String>,
) -> ContentFacts {
    ContentFacts {
        kind: ContentKind::Resource,
        name: uri.to_owned(),
        server: config.name.to_string(),
        template,
        class: classify_resource(&config.resources, uri),
    }
}

/// What the request names, for the record of a refusal before any target was found:
/// the name or URI as the agent sent it (cut to 512 bytes), and the audit family.
pub(crate) fn requested(use_: Use, params: &Map<String, Value>) -> (String, Kinds) {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_owned();
    let reference = params.get("ref");
    let (name, kinds) = match use_ {
        Use::CallTool => (text(params.get("name")), TOOL_KINDS),
        Use::GetPrompt => (text(params.get("name")), PROMPT_KINDS),
        Use::ReadResource | Use::Subscribe => (text(params.get("uri")), RESOURCE_KINDS),
        Use::Complete => match reference
            .and_then(|r| r.get("type"))
            .and_then(Value::as_str)
        {
            Some("ref/prompt") => (text(reference.and_then(|r| r.get("name"))), PROMPT_KINDS),
            _ => (text(reference.and_then(|r| r.get("uri"))), RESOURCE_KINDS),
        },
    };
    let mut end = name.len().min(512);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    (name.get(..end).unwrap_or_default().to_owned(), kinds)
}

/// A resource no server serves (or a URI refused outright), with the code of the era.
pub(crate) fn resource_not_found(version: ProtocolVersion, message: String) -> GatewayError {
    let code = if version.is_stateless() {
        jsonrpc::code::INVALID_PARAMS
    } else {
        mcp_code::RESOURCE_NOT_FOUND_BEFORE_2026
    };
    GatewayError::client(StatusCode::OK, code, message)
}

fn resource(
    gateway: &Gateway,
    use_: Use,
    uri: &str,
    version: ProtocolVersion,
) -> Result<Target, GatewayError> {
    writ_core::uri::check(uri).map_err(|e| resource_not_found(version, e.to_string()))?;
    let served = gateway.catalog.resource_server(uri).ok_or_else(|| {
        resource_not_found(
            version,
            format!("resource `{uri}` is not served by any server"),
        )
    })?;
    let config = gateway.servers.get(served.server).ok_or_else(|| {
        resource_not_found(
            version,
            format!("resource `{uri}` is not served by any server"),
        )
    })?;
    Ok(Target {
        use_,
        server: served.server,
        server_name: config.name.to_string(),
        upstream_name: uri.to_owned(),
        name: uri.to_owned(),
        facts: Facts::Content(resource_facts(config, uri, served.template)),
    })
}

/// A completion for a resource names one of the servers' URI templates.
fn template(
    gateway: &Gateway,
    uri: &str,
    version: ProtocolVersion,
) -> Result<Target, GatewayError> {
    let unknown = || {
        resource_not_found(
            version,
            format!("resource template `{uri}` is not declared by any server"),
        )
    };
    let server = gateway.catalog.template_server(uri).ok_or_else(unknown)?;
    let config = gateway.servers.get(server).ok_or_else(unknown)?;
    Ok(Target {
        use_: Use::Complete,
        server,
        server_name: config.name.to_string(),
        upstream_name: uri.to_owned(),
        name: uri.to_owned(),
        facts: Facts::Content(resource_facts(config, uri, Some(uri.to_owned()))),
    })
}
