//! `writ demo`: the gateway in front of three built-in MCP servers, nothing to install.
//!
//! The servers cover each access class: `notes.read` (read), `notes.write` (write),
//! `ops.run` (execute) and `crm.export` (read, sensitive export). The demo starts them on
//! loopback, puts Writ in front with a fresh store, registers an agent, and walks through
//! a short tour as that agent would: prove who it is, begin a task, call within it and
//! outside it, end it. Then it keeps serving so any MCP client can connect.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};
use writ_core::config::{Config, SigningAlgorithm};
use writ_gateway::Running;
use writ_gateway::token::agent_key::AgentKey;
use writ_gateway::token::client::{self, TaskRequest};
use writ_mcp::server::{Tool, ToolServer, text_result};
use writ_store::Store;

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
        servers.push((name, format!("http://{addr}/mcp")));
    }
    let data = demo_data_dir()?;
    let config = demo_config(args.listen, &data, &servers)?;
    let store = super::open_store(&config).await?;
    let key_file = data.join("researcher.key");
    let key = register_demo_agent(store.as_ref(), &key_file).await?;
    let running = Running::start(&config)
        .await
        .context("could not start the gateway")?;
    if !running.wait_ready(Duration::from_secs(10)).await {
        bail!("the demo servers did not become ready");
    }
    let url = running.mcp_url();
    let base = format!("http://{}", running.local_addr());
    println!("Writ is running at {url} in front of three demo servers: notes, ops, crm.");
    println!(
        "Its state (agents, tasks, keys) is in {}.\n",
        data.display()
    );
    tour(&base, &key).await?;
    if args.tour_only {
        running.shutdown(super::DRAIN).await;
        return Ok(());
    }
    let config_file = data.join("writ.toml");
    println!("\nTry it yourself while this runs (Ctrl-C stops it):");
    println!(
        "  WRIT_TOKEN=$(writ task begin --config {} --key {} --purpose 'read the notes' --tool 'notes.*')",
        config_file.display(),
        key_file.display()
    );
    println!(
        "  tests/interop/.venv/bin/python tests/interop/client.py --url {url} --token \"$WRIT_TOKEN\" --call notes.read --args '{{\"title\":\"welcome\"}}'"
    );
    println!("  writ task end --config {}", config_file.display());
    let token = running.shutdown_token();
    tokio::spawn(async move {
        super::shutdown_signal().await;
        token.cancel();
    });
    running.run_until_shutdown(super::DRAIN).await;
    Ok(())
}

/// A fresh folder for this run's store and key file, so every demo starts clean.
fn demo_data_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("writ-demo-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("could not clear `{}`", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("could not create `{}`", dir.display()))?;
    Ok(dir)
}

/// The demo's `writ.toml`, written beside its store so `writ task` commands can use it.
fn demo_config(
    listen: SocketAddr,
    data: &std::path::Path,
    servers: &[(&str, String)],
) -> anyhow::Result<Config> {
    let mut text = format!(
        r#"[gateway]
listen = "{listen}"
call_timeout = "10s"

[store]
path = "{store}"

[tokens]
ttl = "10m"

# The researcher may begin tasks over the notes and the CRM; nobody may run ops.
[[tasks.allow]]
agents = ["team:research"]
tools = ["notes.*", "crm.export"]
"#,
        store = data.join("writ.db").display()
    );
    for (name, url) in servers {
        text.push_str(&format!(
            "\n[[servers]]\nname = \"{name}\"\ntransport = \"http\"\nurl = \"{url}\"\n"
        ));
    }
    let file = data.join("writ.toml");
    std::fs::write(&file, &text)
        .with_context(|| format!("could not write `{}`", file.display()))?;
    Config::parse(&text).map_err(|err| anyhow::anyhow!("demo config: {err}"))
}

/// Registers the demo agent `researcher` (team `research`) with a fresh Ed25519 key,
/// kept in `key_file` so `writ task begin --key` can use it too.
async fn register_demo_agent(
    store: &dyn Store,
    key_file: &std::path::Path,
) -> anyhow::Result<AgentKey> {
    super::register_key_agent(
        store,
        "researcher",
        Some("research".into()),
        Some("demo".into()),
        SigningAlgorithm::EdDSA,
        Some(key_file),
    )
    .await
}

/// Acts as an agent: prove who it is, begin a task, call within it and outside it, end it.
#[expect(clippy::print_stdout, reason = "the tour is the command's output")]
async fn tour(base: &str, key: &AgentKey) -> anyhow::Result<()> {
    let url = format!("{base}/mcp");
    let http = reqwest::Client::new();
    let anonymous = http
        .post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(json!({ "jsonrpc": "2.0", "id": 0, "method": "tools/list" }).to_string())
        .send()
        .await?;
    println!(
        "1. Without a writ, /mcp answers {} with `WWW-Authenticate: {}`",
        anonymous.status(),
        anonymous
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
    );
    let request = TaskRequest {
        purpose: "Summarise the launch plan from the notes".into(),
        tools: vec!["notes.*".into()],
        ttl: Some(600),
        dpop: true,
        ..TaskRequest::default()
    };
    let begun = client::begin_task(&http, base, key, &request)
        .await
        .map_err(|e| anyhow::anyhow!("the demo task was refused: {e}"))?;
    println!(
        "2. Agent `researcher` ({}) signs an assertion with its own key and begins task {} \n   for `notes.*`: a {} writ for {} s, bound to its key (DPoP).",
        key.agent_id, begun.task, begun.token_type, begun.expires_in
    );
    let client = TourClient::connect(&url, &begun.access_token, key).await?;
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
        "3. tools/list shows only the task's tools: {}",
        names.join(", ")
    );
    let wrote = client.request("tools/call", json!({ "name": "notes.write", "arguments": { "title": "plan", "body": "ship the gateway" } })).await?;
    println!("4. notes.write (write)   → {}", first_text(&wrote));
    let read = client
        .request(
            "tools/call",
            json!({ "name": "notes.read", "arguments": { "title": "plan" } }),
        )
        .await?;
    println!("5. notes.read (read)     → {}", first_text(&read));
    let (status, outside) = client
        .request_raw(
            "tools/call",
            json!({ "name": "ops.run", "arguments": { "operation": "uptime" } }),
        )
        .await?;
    println!(
        "6. ops.run (outside the task) → HTTP {status}: {}",
        outside
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("?")
    );
    let (_, unknown) = client
        .request_raw(
            "tools/call",
            json!({ "name": "crm.delete_all", "arguments": {} }),
        )
        .await?;
    println!(
        "7. crm.delete_all (not a tool) → refused before any server saw it: {}",
        unknown
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("?")
    );
    client::end_task(&http, base, &begun.access_token)
        .await
        .map_err(|e| anyhow::anyhow!("could not end the demo task: {e}"))?;
    let (status, after) = client
        .request_raw(
            "tools/call",
            json!({ "name": "notes.read", "arguments": { "title": "plan" } }),
        )
        .await?;
    println!(
        "8. The agent ends its task; the same writ now gets HTTP {status}: {}",
        after
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("?")
    );
    println!("\nLater steps of Writ add Cedar policy, approval and audit to this same path.");
    Ok(())
}

fn first_text(result: &Value) -> String {
    result
        .pointer("/content/0/text")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

struct TourClient<'k> {
    http: reqwest::Client,
    url: String,
    session: String,
    token: String,
    key: &'k AgentKey,
}

impl<'k> TourClient<'k> {
    async fn connect(url: &str, token: &str, key: &'k AgentKey) -> anyhow::Result<Self> {
        let mut client = Self {
            http: reqwest::Client::new(),
            url: url.to_owned(),
            session: String::new(),
            token: token.to_owned(),
            key,
        };
        let response = client
            .post(json!({ "jsonrpc": "2.0", "id": 0, "method": "initialize", "params": { "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": { "name": "writ-demo-tour", "version": "1" } } }))
            .await?;
        client.session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .with_context(|| format!("no session from Writ (HTTP {})", response.status()))?
            .to_owned();
        client
            .post(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }))
            .await?;
        Ok(client)
    }

    /// One request, with the writ and a fresh DPoP proof.
    async fn post(&self, body: Value) -> anyhow::Result<reqwest::Response> {
        let proof = self
            .key
            .dpop_proof("POST", &self.url, Some(&self.token), None)?;
        let mut request = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2025-11-25")
            .header("authorization", format!("DPoP {}", self.token))
            .header("dpop", proof);
        if !self.session.is_empty() {
            request = request.header("mcp-session-id", &self.session);
        }
        Ok(request.body(body.to_string()).send().await?)
    }

    async fn request_raw(&self, method: &str, params: Value) -> anyhow::Result<(u16, Value)> {
        let response = self
            .post(json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params }))
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await?))
    }

    async fn request(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let (_, mut answer) = self.request_raw(method, params).await?;
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
