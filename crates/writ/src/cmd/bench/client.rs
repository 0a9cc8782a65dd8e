//! A bench client: one agent connection speaking one protocol era, the same way to the
//! upstream directly and to Writ.

use std::sync::Arc;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use writ_agent::AgentKey;

/// The two eras of MCP over HTTP that Writ's front door speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Era {
    /// `initialize` first, then `Mcp-Session-Id` on every request.
    #[value(name = "2025-11-25")]
    Sessions,
    /// No session: every request carries its revision in `_meta` and in headers.
    #[value(name = "2026-07-28")]
    Stateless,
}

impl Era {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sessions => "2025-11-25",
            Self::Stateless => "2026-07-28",
        }
    }
}

/// What the bench agent sends with each request through Writ.
pub struct Auth {
    pub token: String,
    /// Present for DPoP: a fresh proof is signed for every request.
    pub key: Option<Arc<AgentKey>>,
}

/// One request, encoded once for its era and sent many times.
#[derive(Debug, Clone)]
pub struct Request {
    era: Era,
    method: &'static str,
    params: Value,
    /// The tool, for `tools/call` (2026-07-28 mirrors it in `Mcp-Name`).
    name: Option<String>,
    body: Arc<str>,
}

impl Request {
    pub fn new(era: Era, method: &'static str, params: Value) -> Self {
        let name = params
            .get("name")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let body = Self::encode(era, method, params.clone());
        Self {
            era,
            method,
            params,
            name,
            body,
        }
    }

    fn encode(era: Era, method: &str, mut params: Value) -> Arc<str> {
        if era == Era::Stateless
            && let Some(params) = params.as_object_mut()
        {
            params.insert(
                "_meta".into(),
                json!({
                    "io.modelcontextprotocol/protocolVersion": era.as_str(),
                    "io.modelcontextprotocol/clientCapabilities": {},
                }),
            );
        }
        json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
            .to_string()
            .into()
    }

    /// The same list request for the page after `cursor`.
    fn after(&self, cursor: String) -> Arc<str> {
        let mut params = self.params.clone();
        if let Some(map) = params.as_object_mut() {
            map.insert("cursor".into(), Value::String(cursor));
        }
        Self::encode(self.era, self.method, params)
    }
}

/// The most pages one list may take before the bench calls it a loop.
const MAX_PAGES: usize = 1_000;

/// A list result's `nextCursor`, found without decoding the page: it is the only
/// top-level key after the items, and no item's text holds that key with its quotes.
fn next_cursor(page: &[u8]) -> anyhow::Result<Option<String>> {
    const KEY: &str = "\"nextCursor\":";
    let text = std::str::from_utf8(page)?;
    let Some(at) = text.rfind(KEY) else {
        return Ok(None);
    };
    let rest = text.get(at + KEY.len()..).unwrap_or_default();
    let cursor = serde_json::Deserializer::from_str(rest)
        .into_iter::<Option<String>>()
        .next()
        .context("a page's `nextCursor` is not JSON")??;
    Ok(cursor)
}

pub struct Client {
    http: reqwest::Client,
    url: String,
    era: Era,
    /// The session `initialize` opened (2025-11-25 only).
    session: Option<String>,
    auth: Option<Arc<Auth>>,
}

impl Client {
    /// A client on a keep-alive connection of its own.
    pub async fn open(url: &str, era: Era, auth: Option<Arc<Auth>>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1)
            .build()?;
        Self::open_with(http, url, era, auth).await
    }

    /// A client over `http`'s connections (shared with other clients); in the session
    /// era this opens its session.
    pub async fn open_with(
        http: reqwest::Client,
        url: &str,
        era: Era,
        auth: Option<Arc<Auth>>,
    ) -> anyhow::Result<Self> {
        let mut client = Self {
            http,
            url: url.to_owned(),
            era,
            session: None,
            auth,
        };
        if era == Era::Sessions {
            let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": era.as_str(), "capabilities": {}, "clientInfo": {"name": "writ-bench", "version": "1"}}});
            let response = client
                .authorize(client.http.post(url))?
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(init.to_string())
                .send()
                .await?;
            client.session = Some(
                response
                    .headers()
                    .get("mcp-session-id")
                    .and_then(|v| v.to_str().ok())
                    .with_context(|| format!("no session id (HTTP {})", response.status()))?
                    .to_owned(),
            );
            let _ = response.bytes().await?;
        }
        Ok(client)
    }

    fn authorize(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        Ok(match &self.auth {
            None => request,
            Some(auth) => match &auth.key {
                None => request.header("authorization", format!("Bearer {}", auth.token)),
                Some(key) => request
                    .header("authorization", format!("DPoP {}", auth.token))
                    .header(
                        "dpop",
                        key.dpop_proof("POST", &self.url, Some(&auth.token), None)?,
                    ),
            },
        })
    }

    /// Sends `request` and fails unless it is answered with a result; a list follows
    /// its cursor to the last page, as an agent reading the whole list does.
    pub async fn send(&self, request: &Request) -> anyhow::Result<()> {
        self.pages(request).await.map(drop)
    }

    /// How many tools a whole list of `request` shows.
    pub async fn count_tools(&self, request: &Request) -> anyhow::Result<usize> {
        let mut count = 0;
        for page in self.pages(request).await? {
            let answer: Value = serde_json::from_slice(&page)?;
            count += answer
                .pointer("/result/tools")
                .and_then(Value::as_array)
                .context("a list was answered without tools")?
                .len();
        }
        Ok(count)
    }

    async fn pages(&self, request: &Request) -> anyhow::Result<Vec<bytes::Bytes>> {
        let mut pages = vec![self.exchange(request, request.body.to_string()).await?];
        while let Some(cursor) = pages.last().map(|p| next_cursor(p)).transpose()?.flatten() {
            if pages.len() >= MAX_PAGES {
                bail!("{} returned more than {MAX_PAGES} pages", request.method);
            }
            let body = request.after(cursor);
            pages.push(self.exchange(request, body.to_string()).await?);
        }
        Ok(pages)
    }

    async fn exchange(&self, request: &Request, body: String) -> anyhow::Result<bytes::Bytes> {
        let mut http = self
            .authorize(self.http.post(&self.url))?
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", self.era.as_str());
        http = match &self.session {
            Some(session) => http.header("mcp-session-id", session),
            None => http.header("mcp-method", request.method),
        };
        if self.era == Era::Stateless
            && let Some(name) = &request.name
        {
            http = http.header("mcp-name", name);
        }
        let response = http.body(body).send().await?;
        if !response.status().is_success() {
            bail!(
                "{} failed with HTTP {}: {}",
                request.method,
                response.status(),
                response.text().await.unwrap_or_default()
            );
        }
        let bytes = response.bytes().await?;
        // An error answer begins `{"jsonrpc":"2.0","id":1,"error":`; a result's own
        // content (tool descriptions, say) never comes before its `"result"` key.
        let head = bytes.get(..bytes.len().min(64)).unwrap_or_default();
        if head.windows(8).any(|w| w == b"\"error\":") {
            bail!(
                "{} failed: {}",
                request.method,
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_cursor_is_read_from_the_end_of_a_page() {
        let page = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a","description":"nextCursor"}],"nextCursor":"Mg=="}}"#;
        assert_eq!(next_cursor(page).unwrap().as_deref(), Some("Mg=="));
        let last = br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#;
        assert_eq!(next_cursor(last).unwrap(), None);
        assert!(next_cursor(br#"{"result":{"nextCursor":7}}"#).is_err());
    }

    #[test]
    fn stateless_requests_carry_their_revision_and_cursor() {
        let list = Request::new(Era::Stateless, "tools/list", json!({}));
        let body: Value = serde_json::from_str(&list.after("Mg==".into())).unwrap();
        assert_eq!(body["params"]["cursor"], "Mg==");
        assert_eq!(
            body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
            "2026-07-28"
        );
        let call = Request::new(Era::Sessions, "tools/call", json!({"name": "echo"}));
        assert_eq!(call.name.as_deref(), Some("echo"));
        assert!(!call.body.contains("_meta"));
    }
}
