//! Aggregation: every upstream's tools, prompts and resources merged behind one `/mcp`.
//!
//! Tools and prompts are exposed as `server.name`; resources keep their URIs (a URI is the
//! resource's identity and clients show it), and a read is routed to the server that
//! listed the URI, or else to the one whose declared URI template matches it (the most
//! specific, by fixed prefix). A URI neither listed nor matching a template is served by
//! no server: it is refused, never guessed. The merged lists keep config order of
//! servers and each server's own order, so pages are stable.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use writ_core::config::ToolNames;
use writ_core::naming::{self, ServerName};
use writ_core::uri::UriTemplate;
use writ_mcp::jsonrpc;
use writ_mcp::upstream::{ListKind, Upstream, UpstreamError};

/// One item of a list as agents see it: encoded once when the list is installed.
#[derive(Debug)]
pub struct Entry {
    /// What the item is called: the exposed name (tools and prompts), the URI
    /// (resources) or the URI template (templates), so that screening a list never
    /// decodes an item to find out what it is.
    pub name: Option<String>,
    /// The server that listed it, by index.
    pub server: usize,
    pub raw: Box<RawValue>,
}

/// One page of a merged list: the servers' lists it spans, shared with the catalog (a
/// page copies nothing), and the cursor of the next page.
#[derive(Debug)]
pub struct Page {
    lists: Vec<Arc<Vec<Entry>>>,
    start: usize,
    len: usize,
    pub next: Option<String>,
}

impl Page {
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.lists
            .iter()
            .flat_map(|l| l.iter())
            .skip(self.start)
            .take(self.len)
    }
}

/// One server's lists, with names already as agents see them.
#[derive(Debug, Default, Clone)]
struct ServerLists {
    tools: Arc<Vec<Entry>>,
    tool_names: Arc<HashSet<String>>,
    prompts: Arc<Vec<Entry>>,
    prompt_names: Arc<HashSet<String>>,
    resources: Arc<Vec<Entry>>,
    templates: Arc<Vec<Entry>>,
    resource_uris: Arc<HashSet<String>>,
    uri_templates: Arc<Vec<UriTemplate>>,
}

/// Where a resource URI is served: the server, and the template it matched when the
/// server did not list the URI itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub server: usize,
    pub template: Option<String>,
}

#[derive(Debug)]
pub struct Catalog {
    names: ToolNames,
    /// In config order; index = position of the server.
    servers: Vec<ServerName>,
    lists: RwLock<Vec<ServerLists>>,
}

/// Lists fetched from one upstream, not yet installed.
#[derive(Debug)]
pub struct Fetched {
    parts: Vec<FetchedList>,
}

#[derive(Debug)]
struct FetchedList {
    list: ListName,
    /// Items with exposed names.
    items: Vec<Map<String, Value>>,
    /// Exposed names (tools, prompts), URIs (resources) or URI templates (templates).
    keys: Vec<String>,
    /// The upstream's own names of tools and prompts, in step with `items`.
    names: Vec<String>,
}

impl Fetched {
    /// The fetched tools, if tools were fetched.
    pub fn tools(&self) -> Vec<crate::tools::Listed<'_>> {
        self.parts
            .iter()
            .filter(|p| p.list == ListName::Tools)
            .flat_map(|p| {
                p.items
                    .iter()
                    .zip(&p.keys)
                    .zip(&p.names)
                    .map(|((definition, exposed), name)| crate::tools::Listed {
                        exposed,
                        name,
                        definition,
                    })
            })
            .collect()
    }

    pub fn has_tools(&self) -> bool {
        self.parts.iter().any(|p| p.list == ListName::Tools)
    }
}

/// Which list a `*/list` request reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListName {
    Tools,
    Prompts,
    Resources,
    ResourceTemplates,
}

impl ListName {
    pub fn result_key(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Prompts => "prompts",
            Self::Resources => "resources",
            Self::ResourceTemplates => "resourceTemplates",
        }
    }

    fn method(self) -> &'static str {
        match self {
            Self::Tools => "tools/list",
            Self::Prompts => "prompts/list",
            Self::Resources => "resources/list",
            Self::ResourceTemplates => "resources/templates/list",
        }
    }

    fn capability(self) -> &'static str {
        match self {
            Self::Tools => "tools",
            Self::Prompts => "prompts",
            Self::Resources | Self::ResourceTemplates => "resources",
        }
    }
}

impl Catalog {
    pub fn new(names: ToolNames, servers: Vec<ServerName>) -> Self {
        let lists = RwLock::new(vec![ServerLists::default(); servers.len()]);
        Self {
            names,
            servers,
            lists,
        }
    }

    /// The name an agent sees for an upstream tool or prompt.
    pub fn expose(&self, server: &ServerName, name: &str) -> Option<String> {
        match self.names {
            ToolNames::Bare => naming::is_valid_tool_name(name).then(|| name.to_owned()),
            ToolNames::Namespaced => naming::namespaced(server, name).ok(),
        }
    }

    /// Resolves an exposed tool or prompt name to its server (by index) and upstream name.
    pub fn resolve<'n>(&self, exposed: &'n str) -> Option<(usize, &'n str)> {
        match self.names {
            ToolNames::Bare => (!self.servers.is_empty()).then_some((0, exposed)),
            ToolNames::Namespaced => {
                let (server, name) = naming::split_namespaced(exposed)?;
                let index = self.servers.iter().position(|s| s.as_str() == server)?;
                Some((index, name))
            }
        }
    }

    /// True when `exposed` is a tool some upstream currently lists.
    pub fn has_tool(&self, exposed: &str) -> bool {
        let lists = self
            .lists
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some((index, _)) = self.resolve(exposed) else {
            return false;
        };
        lists
            .get(index)
            .is_some_and(|l| l.tool_names.contains(exposed))
    }

    /// True when `exposed` is a prompt some upstream currently lists.
    pub fn has_prompt(&self, exposed: &str) -> bool {
        let lists = self
            .lists
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some((index, _)) = self.resolve(exposed) else {
            return false;
        };
        lists
            .get(index)
            .is_some_and(|l| l.prompt_names.contains(exposed))
    }

    /// The server that serves resource `uri` (already checked by `writ_core::uri::check`):
    /// the first that listed it, else the one whose template matches with the longest
    /// fixed prefix (the first in config order among equals). `None` when no server
    /// lists or templates it.
    pub fn resource_server(&self, uri: &str) -> Option<Served> {
        let lists = self
            .lists
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(server) = lists.iter().position(|l| l.resource_uris.contains(uri)) {
            return Some(Served {
                server,
                template: None,
            });
        }
        let mut best: Option<(usize, usize, &UriTemplate)> = None;
        for (server, list) in lists.iter().enumerate() {
            for template in list.uri_templates.iter().filter(|t| t.matches(uri)) {
                let specificity = template.literal_prefix().len();
                if best.is_none_or(|(b, _, _)| specificity > b) {
                    best = Some((specificity, server, template));
                }
            }
        }
        best.map(|(_, server, template)| Served {
            server,
            template: Some(template.as_str().to_owned()),
        })
    }

    /// The server that declared URI template `template` (a completion names one).
    pub fn template_server(&self, template: &str) -> Option<usize> {
        let lists = self
            .lists
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        lists
            .iter()
            .position(|l| l.uri_templates.iter().any(|t| t.as_str() == template))
    }

    /// One page of a merged list, and the cursor of the next page.
    pub fn page(
        &self,
        list: ListName,
        cursor: Option<&str>,
        page_size: usize,
    ) -> Result<Page, String> {
        let start = match cursor {
            None => 0,
            Some(cursor) => decode_cursor(cursor)
                .ok_or_else(|| format!("cursor `{cursor}` is not one Writ issued"))?,
        };
        let lists: Vec<Arc<Vec<Entry>>> = self
            .lists
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|l| match list {
                ListName::Tools => l.tools.clone(),
                ListName::Prompts => l.prompts.clone(),
                ListName::Resources => l.resources.clone(),
                ListName::ResourceTemplates => l.templates.clone(),
            })
            .collect();
        let total: usize = lists.iter().map(|l| l.len()).sum();
        let len = total.saturating_sub(start).min(page_size);
        let next =
            (start.saturating_add(page_size) < total).then(|| encode_cursor(start + page_size));
        Ok(Page {
            lists,
            start,
            len,
            next,
        })
    }

    /// Fetches an upstream's lists of one kind, with names already as agents see them.
    /// Nothing changes until [`Catalog::install`]: the tool registry checks the tools in
    /// between, so a drifted definition is held before any agent can see it.
    pub async fn fetch(
        &self,
        upstream: &Upstream,
        kind: ListKind,
    ) -> Result<Option<Fetched>, UpstreamError> {
        let Some(info) = upstream.info() else {
            return Ok(None);
        };
        let lists: &[ListName] = match kind {
            ListKind::Tools => &[ListName::Tools],
            ListKind::Prompts => &[ListName::Prompts],
            ListKind::Resources => &[ListName::Resources, ListName::ResourceTemplates],
        };
        let mut parts = Vec::with_capacity(lists.len());
        for &list in lists {
            let items = if info.has(list.capability()) {
                fetch_all(upstream, list).await?
            } else {
                Vec::new()
            };
            let server = upstream.name();
            let mut part = FetchedList {
                list,
                items: Vec::with_capacity(items.len()),
                keys: Vec::new(),
                names: Vec::new(),
            };
            for mut item in items {
                match list {
                    ListName::Tools | ListName::Prompts => {
                        let Some(name) = item.get("name").and_then(Value::as_str) else {
                            continue;
                        };
                        let Some(shown) = self.expose(server, name) else {
                            tracing::warn!(server = %server, name, "skipping an item whose exposed name would not be a valid MCP name");
                            continue;
                        };
                        part.names.push(name.to_owned());
                        part.keys.push(shown.clone());
                        item.insert("name".into(), Value::String(shown));
                    }
                    ListName::Resources => {
                        let Some(uri) = item.get("uri").and_then(Value::as_str) else {
                            continue;
                        };
                        part.keys.push(uri.to_owned());
                    }
                    ListName::ResourceTemplates => {
                        let Some(template) = item.get("uriTemplate").and_then(Value::as_str) else {
                            continue;
                        };
                        part.keys.push(template.to_owned());
                    }
                }
                part.items.push(item);
            }
            parts.push(part);
        }
        Ok(Some(Fetched { parts }))
    }

    /// Makes fetched lists the ones agents see.
    pub fn install(&self, index: usize, fetched: Fetched) {
        let mut all = self
            .lists
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(slot) = all.get_mut(index) else {
            return;
        };
        for part in fetched.parts {
            // Every item has its key (name, URI or template), in step with it.
            let exposed: Vec<Entry> = part
                .items
                .iter()
                .zip(&part.keys)
                .map(|(item, key)| Entry {
                    name: Some(key.clone()),
                    server: index,
                    raw: jsonrpc::to_raw(item),
                })
                .collect();
            match part.list {
                ListName::Tools => {
                    slot.tools = Arc::new(exposed);
                    slot.tool_names = Arc::new(part.keys.into_iter().collect());
                }
                ListName::Prompts => {
                    slot.prompts = Arc::new(exposed);
                    slot.prompt_names = Arc::new(part.keys.into_iter().collect());
                }
                ListName::Resources => {
                    slot.resources = Arc::new(exposed);
                    slot.resource_uris = Arc::new(part.keys.into_iter().collect());
                }
                ListName::ResourceTemplates => {
                    slot.templates = Arc::new(exposed);
                    // A template Writ cannot compile routes nothing: reads under it are
                    // refused rather than sent to a guessed server.
                    slot.uri_templates = Arc::new(
                        part.keys
                            .iter()
                            .filter_map(|t| match UriTemplate::parse(t) {
                                Ok(template) => Some(template),
                                Err(err) => {
                                    tracing::warn!(%err, "skipping a resource template");
                                    None
                                }
                            })
                            .collect(),
                    );
                }
            }
        }
    }

    /// Which kinds of list any upstream offers, for the capabilities Writ declares.
    pub fn offered(upstreams: &[Upstream]) -> HashMap<&'static str, bool> {
        let mut offered = HashMap::new();
        for upstream in upstreams {
            if let Some(info) = upstream.info() {
                for capability in ["tools", "prompts", "resources", "completions", "logging"] {
                    if info.has(capability) {
                        offered.insert(capability, true);
                    }
                }
            }
        }
        offered
    }
}

async fn fetch_all(
    upstream: &Upstream,
    list: ListName,
) -> Result<Vec<Map<String, Value>>, UpstreamError> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    // A server that hands out cursors forever is cut off rather than followed forever.
    for _ in 0..1000 {
        let params = cursor.take().map(|c| {
            let mut p = Map::new();
            p.insert("cursor".into(), Value::String(c));
            p
        });
        let result = upstream.call(list.method(), params, None).await?;
        let mut page: Map<String, Value> =
            serde_json::from_str(result.get()).map_err(|e| UpstreamError::BadResponse {
                server: upstream.name().clone(),
                reason: format!("`{}` result: {e}", list.method()),
            })?;
        if let Some(Value::Array(found)) = page.remove(list.result_key()) {
            items.extend(found.into_iter().filter_map(|v| match v {
                Value::Object(map) => Some(map),
                _ => None,
            }));
        }
        match page.remove("nextCursor") {
            Some(Value::String(next)) if !next.is_empty() => cursor = Some(next),
            _ => return Ok(items),
        }
    }
    Ok(items)
}

const CURSOR_PREFIX: &str = "writ-";

fn encode_cursor(offset: usize) -> String {
    format!("{CURSOR_PREFIX}{offset}")
}

fn decode_cursor(cursor: &str) -> Option<usize> {
    cursor.strip_prefix(CURSOR_PREFIX)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog(names: ToolNames, servers: &[&str]) -> Catalog {
        Catalog::new(
            names,
            servers
                .iter()
                .map(|s| ServerName::parse(s).unwrap())
                .collect(),
        )
    }

    fn set_tools(catalog: &Catalog, index: usize, names: &[&str]) {
        let tools = names
            .iter()
            .map(|n| Entry {
                name: Some(n.to_string()),
                server: index,
                raw: jsonrpc::to_raw(
                    &serde_json::json!({ "name": n, "inputSchema": {"type": "object"} }),
                ),
            })
            .collect();
        let mut lists = catalog.lists.write().unwrap();
        lists[index].tools = Arc::new(tools);
        lists[index].tool_names = Arc::new(names.iter().map(|n| n.to_string()).collect());
    }

    #[test]
    fn namespaced_names_resolve_to_their_server() {
        let c = catalog(ToolNames::Namespaced, &["notes", "ops"]);
        assert_eq!(c.resolve("ops.run"), Some((1, "run")));
        assert_eq!(c.resolve("ops.a.b"), Some((1, "a.b")));
        assert_eq!(c.resolve("crm.export"), None);
        assert_eq!(c.resolve("run"), None);
    }

    #[test]
    fn pages_follow_config_order_and_end_without_a_cursor() {
        let c = catalog(ToolNames::Namespaced, &["a", "b"]);
        set_tools(&c, 0, &["a.1", "a.2", "a.3"]);
        set_tools(&c, 1, &["b.1", "b.2"]);
        let names = |page: &Page| -> Vec<String> {
            page.entries().map(|e| e.name.clone().unwrap()).collect()
        };
        let first = c.page(ListName::Tools, None, 2).unwrap();
        assert_eq!(names(&first), ["a.1", "a.2"]);
        let second = c.page(ListName::Tools, first.next.as_deref(), 2).unwrap();
        assert_eq!(names(&second), ["a.3", "b.1"]);
        assert!(second.entries().next().unwrap().raw.get().contains("a.3"));
        let last = c.page(ListName::Tools, second.next.as_deref(), 2).unwrap();
        assert_eq!(names(&last), ["b.2"]);
        assert_eq!(last.next, None);
        let beyond = c.page(ListName::Tools, Some(&encode_cursor(9)), 2).unwrap();
        assert_eq!((beyond.entries().count(), beyond.next), (0, None));
        assert!(c.page(ListName::Tools, Some("forged"), 2).is_err());
        assert!(c.has_tool("b.2"));
        assert!(!c.has_tool("b.9"));
    }
}
