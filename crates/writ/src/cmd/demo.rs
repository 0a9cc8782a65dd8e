//! `writ demo`: the gateway in front of three built-in MCP servers, nothing to install.
//!
//! The servers cover each access class: `notes.read` (read), `notes.write` (write),
//! `ops.run` (execute) and `crm.export` (read, sensitive export). The demo starts them on
//! loopback, puts Writ in front, walks through a short tour as an agent would, then keeps
//! serving so any MCP client can connect.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};
use writ_core::config::{Config, GatewayConfig, HttpTransport, ServerConfig, ToolNames, Transport};
use writ_core::naming::ServerName;
use writ_gateway::Running;
use writ_mcp::server::{Tool, ToolServer, text_result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where the gateway listens.
    #[arg(long, default_value = "127.0.0.1:7800")]
    listen: SocketAddr,
    /// Run the tour and exit instead of serving until Ctrl-C.
    #[arg(long)]
    tour_only: bool,
}

#[expect(clippy::print_stdout, reason = "the tour is the command's output")]
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut servers = Vec::new();
    let mut tasks = Vec::new();
    for server in [notes_server(), ops_server(), crm_server()] {
        let name = server.0;
        let (addr, task) = server
            .1
            .serve("127.0.0.1:0".parse()?)
            .await
            .with_context(|| format!("could not start the `{name}` demo server"))?;
        tasks.push(task);
        servers.push(ServerConfig {
            name: ServerName::parse(name)?,
            transport: Transport::Http(HttpTransport {
                url: format!("http://{addr}/mcp"),
                headers: Vec::new(),
            }),
            call_timeout: Duration::from_secs(10),
        });
    }
    let config = Config {
        gateway: demo_gateway(args.listen),
        servers,
    };
    let running = Running::start(&config)
        .await
        .context("could not start the gateway")?;
    if !running.wait_ready(Duration::from_secs(10)).await {
        bail!("the demo servers did not become ready");
    }
    let url = running.mcp_url();
    println!("Writ is running at {url} in front of three demo servers: notes, ops, crm.\n");
    tour(&url).await?;
    if args.tour_only {
        running.shutdown(super::DRAIN).await;
        return Ok(());
    }
    println!(
        "\nConnect any MCP client (Streamable HTTP) to {url}, for example (after scripts/test installed the SDK clients):"
    );
    println!(
        "  tests/interop/.venv/bin/python tests/interop/client.py --url {url} --call notes.read --args '{{\"title\":\"welcome\"}}'"
    );
    println!(
        "  curl -s {url} -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \\"
    );
    println!(
        "       -d '{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{{\"protocolVersion\":\"2025-11-25\",\"capabilities\":{{}},\"clientInfo\":{{\"name\":\"curl\",\"version\":\"1\"}}}}}}' -i"
    );
    println!("Press Ctrl-C to stop.");
    let token = running.shutdown_token();
    tokio::spawn(async move {
        super::shutdown_signal().await;
        token.cancel();
    });
    running.run_until_shutdown(super::DRAIN).await;
    Ok(())
}

fn demo_gateway(listen: SocketAddr) -> GatewayConfig {
    GatewayConfig {
        listen,
        public_url: None,
        allowed_origins: Vec::new(),
        max_body_bytes: writ_core::config::DEFAULT_MAX_BODY_BYTES,
        max_json_depth: writ_core::config::DEFAULT_MAX_JSON_DEPTH,
        call_timeout: Duration::from_secs(10),
        session_idle_timeout: Duration::from_secs(30 * 60),
        tool_names: ToolNames::Namespaced,
        page_size: 100,
        max_sessions: writ_core::config::DEFAULT_MAX_SESSIONS,
    }
}

/// Acts as an agent: start a session, list the tools, call a few.
#[expect(clippy::print_stdout, reason = "the tour is the command's output")]
async fn tour(url: &str) -> anyhow::Result<()> {
    let client = TourClient::connect(url).await?;
    let tools = client.request("tools/list", json!({})).await?;
    let names: Vec<&str> = tools
        .pointer("/tools")
        .unwrap_or(&Value::Null)
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("name").and_then(Value::as_str))
        .collect();
    println!(
        "1. tools/list through Writ shows every server's tools, namespaced: {}",
        names.join(", ")
    );
    let wrote = client.request("tools/call", json!({ "name": "notes.write", "arguments": { "title": "plan", "body": "ship the gateway" } })).await?;
    println!("2. notes.write (write)   → {}", first_text(&wrote));
    let read = client
        .request(
            "tools/call",
            json!({ "name": "notes.read", "arguments": { "title": "plan" } }),
        )
        .await?;
    println!("3. notes.read (read)     → {}", first_text(&read));
    let ran = client
        .request(
            "tools/call",
            json!({ "name": "ops.run", "arguments": { "operation": "uptime" } }),
        )
        .await?;
    println!("4. ops.run (execute)     → {}", first_text(&ran));
    let export = client
        .request(
            "tools/call",
            json!({ "name": "crm.export", "arguments": { "segment": "enterprise" } }),
        )
        .await?;
    println!(
        "5. crm.export (export)   → {}",
        first_text(&export).lines().next().unwrap_or_default()
    );
    let unknown = client
        .request_raw(
            "tools/call",
            json!({ "name": "crm.delete_all", "arguments": {} }),
        )
        .await?;
    println!(
        "6. crm.delete_all (not a tool) → refused before any server saw it: {}",
        unknown
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("?")
    );
    println!(
        "\nLater steps of Writ add identity, task writs, policy, approval and audit to this same path."
    );
    Ok(())
}

fn first_text(result: &Value) -> String {
    result
        .pointer("/content/0/text")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

struct TourClient {
    http: reqwest::Client,
    url: String,
    session: String,
}

impl TourClient {
    async fn connect(url: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::new();
        let response = http
            .post(url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": { "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "writ-demo-tour", "version": "1" } } }).to_string())
            .send()
            .await?;
        let session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .context("no session id from Writ")?
            .to_owned();
        let client = Self {
            http,
            url: url.to_owned(),
            session,
        };
        client
            .post(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
            .await?;
        Ok(client)
    }

    async fn post(&self, body: Value) -> anyhow::Result<reqwest::Response> {
        Ok(self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &self.session)
            .header("mcp-protocol-version", "2025-11-25")
            .body(body.to_string())
            .send()
            .await?)
    }

    async fn request_raw(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let response = self
            .post(json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params }))
            .await?;
        Ok(response.json().await?)
    }

    async fn request(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let mut answer = self.request_raw(method, params).await?;
        if let Some(error) = answer.get("error") {
            bail!("{method} failed: {error}");
        }
        Ok(answer
            .get_mut("result")
            .map(Value::take)
            .unwrap_or_default())
    }
}

fn schema(properties: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": properties, "required": required })
}

fn string_arg<'a>(args: &'a Map<String, Value>, key: &str) -> Result<&'a str, String> {
    args.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("`{key}` is required and must be a string"))
}

fn notes_server() -> (&'static str, Arc<ToolServer>) {
    let notes: Arc<Mutex<BTreeMap<String, String>>> = Arc::new(Mutex::new(BTreeMap::from([(
        "welcome".to_owned(),
        "Writ fronts this server; every call goes through it.".to_owned(),
    )])));
    let reader = notes.clone();
    let read = Tool::new(
        "read",
        "Read a note by title.",
        schema(json!({ "title": { "type": "string" } }), &["title"]),
        json!({ "readOnlyHint": true, "openWorldHint": false }),
        move |args| {
            let title = string_arg(args, "title")?;
            let notes = reader.lock().unwrap_or_else(PoisonError::into_inner);
            notes
                .get(title)
                .map(|body| text_result(body.clone()))
                .ok_or_else(|| format!("no note titled `{title}`"))
        },
    );
    let write = Tool::new(
        "write",
        "Create or replace a note.",
        schema(
            json!({ "title": { "type": "string" }, "body": { "type": "string" } }),
            &["title", "body"],
        ),
        json!({ "readOnlyHint": false, "destructiveHint": true, "idempotentHint": true, "openWorldHint": false }),
        move |args| {
            let title = string_arg(args, "title")?;
            let body = string_arg(args, "body")?;
            notes
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(title.to_owned(), body.to_owned());
            Ok(text_result(format!("saved note `{title}`")))
        },
    );
    (
        "notes",
        ToolServer::new("writ-demo-notes", vec![read, write]),
    )
}

fn ops_server() -> (&'static str, Arc<ToolServer>) {
    let started = std::time::Instant::now();
    let run = Tool::new(
        "run",
        "Run an operational command on the demo host. Operations: `uptime`, `date`, `disk`.",
        schema(
            json!({ "operation": { "type": "string", "enum": ["uptime", "date", "disk"] } }),
            &["operation"],
        ),
        json!({ "readOnlyHint": false, "destructiveHint": true, "openWorldHint": true }),
        // The demo executes only built-in operations; it never spawns a shell.
        move |args| match string_arg(args, "operation")? {
            "uptime" => Ok(text_result(format!(
                "demo host up {}s",
                started.elapsed().as_secs()
            ))),
            "date" => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or_default();
                Ok(text_result(format!("unix time {now}")))
            }
            "disk" => Ok(text_result("demo volume: 42% used")),
            other => Err(format!(
                "unknown operation `{other}`; try uptime, date or disk"
            )),
        },
    );
    ("ops", ToolServer::new("writ-demo-ops", vec![run]))
}

fn crm_server() -> (&'static str, Arc<ToolServer>) {
    const CUSTOMERS: &[(&str, &str, &str)] = &[
        ("Acme Corp", "enterprise", "ada@acme.example"),
        ("Globex", "enterprise", "hank@globex.example"),
        ("Initech", "smb", "peter@initech.example"),
    ];
    let export = Tool::new(
        "export",
        "Export customer records of a segment as CSV (contains personal data).",
        schema(
            json!({ "segment": { "type": "string", "enum": ["enterprise", "smb", "all"] } }),
            &["segment"],
        ),
        json!({ "readOnlyHint": true, "openWorldHint": false }),
        |args| {
            let segment = string_arg(args, "segment")?;
            let mut csv = String::from("name,segment,email\n");
            for (name, seg, email) in CUSTOMERS
                .iter()
                .filter(|(_, seg, _)| segment == "all" || *seg == segment)
            {
                csv.push_str(&format!("{name},{seg},{email}\n"));
            }
            Ok(text_result(csv))
        },
    );
    ("crm", ToolServer::new("writ-demo-crm", vec![export]))
}
