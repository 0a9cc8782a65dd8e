//! `writ demo`: the gateway in front of three built-in MCP servers, nothing to install.
//!
//! The servers cover each access class: `notes.read` (read), `notes.write` (write),
//! `ops.run` (execute) and `crm.export` (read, customer data for export); `notes` also
//! serves a prompt (`summarise`) and two documents, one of them board papers. The demo starts
//! them on loopback, puts Writ in front with a fresh store and the example policy pack
//! (`examples/policies`), registers two agents of different teams, and walks through a
//! tour as they would: prove who they are, begin tasks, see different tool lists, get
//! calls allowed, denied and held for approval, stray from a task and lose it. Then it
//! keeps serving so any MCP client can connect.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};
use writ_agent::AgentKey;
use writ_agent::client::{self, TaskRequest};
use writ_core::config::{Config, SigningAlgorithm};
use writ_gateway::Running;
use writ_mcp::server::{Content, Tool, ToolServer, text_result};
use writ_store::{AuditFilter, Store};

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
    let researcher =
        register_demo_agent(store.as_ref(), "researcher", "research", &key_file).await?;
    let operator = register_demo_agent(
        store.as_ref(),
        "operator",
        "ops",
        &data.join("operator.key"),
    )
    .await?;
    let running = Running::start_with_store(&config, store.clone())
        .await
        .context("could not start the gateway")?;
    if !running.wait_ready(Duration::from_secs(10)).await {
        bail!("the demo servers did not become ready");
    }
    let url = running.mcp_url();
    let base = format!("http://{}", running.local_addr());
    println!("Writ is running at {url} in front of three demo servers: notes, ops, crm.");
    println!(
        "Its state (agents, tasks, keys) and policies are in {}.\n",
        data.display()
    );
    tour(&base, &researcher, &operator).await?;
    audit_tour(store.as_ref(), &data.join("writ.toml")).await?;
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

# The example pack: read-only by default, writes by team, approval for execute.
# `staging`, so the tour does not depend on the hour (`export` leaves only during
# business hours in prod).
[policy]
dir = "{policies}"
environment = "staging"

# A checkpoint every 8 records, so the short tour's chain is signed before it ends
# (the default is every 1,000 records or 10 seconds).
[audit]
checkpoint_every = 8
"#,
        store = data.join("writ.db").display(),
        policies = write_policies(data)?.display(),
    );
    for (name, url) in servers {
        text.push_str(&format!(
            "\n[[servers]]\nname = \"{name}\"\ntransport = \"http\"\nurl = \"{url}\"\n{}",
            server_facts(name)
        ));
    }
    let file = data.join("writ.toml");
    std::fs::write(&file, &text)
        .with_context(|| format!("could not write `{}`", file.display()))?;
    Config::parse(&text).map_err(|err| anyhow::anyhow!("demo config: {err}"))
}

/// The example policy pack, as the binary carries it.
const POLICY_PACK: &[(&str, &str)] = &[
    (
        "10-tasks.cedar",
        include_str!("../../../../examples/policies/10-tasks.cedar"),
    ),
    (
        "20-read-only-by-default.cedar",
        include_str!("../../../../examples/policies/20-read-only-by-default.cedar"),
    ),
    (
        "30-team-tools.cedar",
        include_str!("../../../../examples/policies/30-team-tools.cedar"),
    ),
    (
        "40-approvals.cedar",
        include_str!("../../../../examples/policies/40-approvals.cedar"),
    ),
    (
        "50-export-hours.cedar",
        include_str!("../../../../examples/policies/50-export-hours.cedar"),
    ),
    (
        "60-prompts-and-resources.cedar",
        include_str!("../../../../examples/policies/60-prompts-and-resources.cedar"),
    ),
];

fn write_policies(data: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let dir = data.join("policies");
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("could not create `{}`", dir.display()))?;
    for (name, text) in POLICY_PACK {
        std::fs::write(dir.join(name), text)
            .with_context(|| format!("could not write the policy `{name}`"))?;
    }
    Ok(dir)
}

/// What the operator says about each demo server's tools. The notes server is trusted,
/// so its annotations classify its tools; the others are described here.
fn server_facts(server: &str) -> &'static str {
    match server {
        "notes" => {
            "trusted = true\n[[servers.resources]]\nuri = \"notes://board/*\"\ndata_classes = [\"board\"]\n"
        }
        "ops" => "[[servers.tools]]\nname = \"run\"\naccess = \"execute\"\nrisk = \"high\"\n",
        "crm" => {
            "[[servers.tools]]\nname = \"export\"\naccess = \"read\"\nrisk = \"medium\"\ndata_classes = [\"customer\", \"export\"]\n"
        }
        _ => "",
    }
}

/// Registers a demo agent of `team` with a fresh Ed25519 key, kept in `key_file` so
/// `writ task begin --key` can use it too.
async fn register_demo_agent(
    store: &dyn Store,
    name: &str,
    team: &str,
    key_file: &std::path::Path,
) -> anyhow::Result<AgentKey> {
    super::register_key_agent(
        store,
        name,
        Some(team.into()),
        Some("demo".into()),
        SigningAlgorithm::EdDSA,
        Some(key_file),
    )
    .await
}

/// Acts as two agents of different teams: prove who they are, begin tasks, see different
/// lists, get calls allowed, denied and held for approval, stray from a task and lose it.
#[expect(clippy::print_stdout, reason = "the tour is the command's output")]
async fn tour(base: &str, researcher: &AgentKey, operator: &AgentKey) -> anyhow::Result<()> {
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
    let (research_writ, research) = begin(
        base,
        &url,
        researcher,
        "Summarise the launch plan from the notes",
        (&["notes.*", "ops.run"], &[]),
    )
    .await?;
    println!(
        "2. Agent `researcher` (team research) signs an assertion with its own key and begins task {}\n   for `notes.*` and `ops.run`: a DPoP-bound writ for {} s.",
        research_writ.task, research_writ.expires_in
    );
    let (ops_writ, ops) = begin(
        base,
        &url,
        operator,
        "Check the demo host",
        // Declaring the board papers' data class makes reading them a policy decision
        // rather than a deviation.
        (&["notes.*", "ops.*"], &["board"]),
    )
    .await?;
    println!(
        "3. Agent `operator` (team ops) begins task {} for `notes.*` and `ops.*`, declaring\n   it handles `board` data.",
        ops_writ.task
    );
    println!(
        "4. Each sees what policy lets its team discover:\n   researcher: {}\n   operator:   {}",
        tool_names(&research).await?.join(", "),
        tool_names(&ops).await?.join(", ")
    );
    let wrote = research
        .request(
            "tools/call",
            json!({ "name": "notes.write", "arguments": { "title": "plan", "body": "ship the gateway" } }),
        )
        .await?;
    println!(
        "5. researcher → notes.write: allowed → {}",
        first_text(&wrote)
    );
    let (_, denied) = research
        .request_raw(
            "tools/call",
            json!({ "name": "ops.run", "arguments": { "operation": "uptime" } }),
        )
        .await?;
    println!("6. researcher → ops.run: {}", error_line(&denied));
    let (_, held) = ops
        .request_raw(
            "tools/call",
            json!({ "name": "ops.run", "arguments": { "operation": "uptime" } }),
        )
        .await?;
    println!("7. operator → ops.run: {}", error_line(&held));
    let plan = research
        .request("resources/read", json!({ "uri": "notes://plans/launch" }))
        .await?;
    println!(
        "8. researcher → resources/read notes://plans/launch: allowed → {}",
        plan.pointer("/contents/0/text")
            .and_then(Value::as_str)
            .unwrap_or_default()
    );
    let prompt = research
        .request("prompts/get", json!({ "name": "notes.summarise" }))
        .await?;
    println!(
        "9. researcher → prompts/get notes.summarise: allowed → {}",
        prompt
            .pointer("/messages/0/content/text")
            .and_then(Value::as_str)
            .unwrap_or_default()
    );
    let (_, board) = ops
        .request_raw("resources/read", json!({ "uri": "notes://board/minutes" }))
        .await?;
    println!(
        "10. operator → resources/read notes://board/minutes: {}",
        error_line(&board)
    );
    let (_, unknown) = research
        .request_raw(
            "tools/call",
            json!({ "name": "crm.delete_all", "arguments": {} }),
        )
        .await?;
    println!(
        "11. researcher → crm.delete_all (not a tool): refused before any server saw it: {}",
        error_line(&unknown)
    );
    let (status, strayed) = research
        .request_raw(
            "tools/call",
            json!({ "name": "crm.export", "arguments": { "segment": "all" } }),
        )
        .await?;
    println!(
        "12. researcher → crm.export, outside its declared task: HTTP {status}: {}",
        error_line(&strayed)
    );
    let (status, after) = research
        .request_raw(
            "tools/call",
            json!({ "name": "notes.read", "arguments": { "title": "plan" } }),
        )
        .await?;
    println!(
        "13. The researcher's writ is dead after the deviation: HTTP {status}: {}",
        error_line(&after)
    );
    client::end_task(&http, base, &ops_writ.access_token)
        .await
        .map_err(|e| anyhow::anyhow!("could not end the operator's task: {e}"))?;
    println!("14. The operator ends its task.");
    Ok(())
}

/// The end of the tour: the audit log's story of an allowed call, a denied call and the
/// deviation, then the whole log verified — what an operator runs afterwards.
#[expect(clippy::print_stdout, reason = "the tour is the command's output")]
async fn audit_tour(store: &dyn Store, config_file: &std::path::Path) -> anyhow::Result<()> {
    let first = |kind: &str, decision: &str| AuditFilter {
        kind: Some(kind.to_owned()),
        decision: Some(decision.to_owned()),
        limit: 1,
        ..AuditFilter::default()
    };
    let allowed = first("call.decided", "allow");
    let denied = first("call.decided", "deny");
    let deviation = first("call.deviation", "deviation");
    // What follows a decision is committed within milliseconds, not waited for.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let allowed_call = loop {
        let found = store.audit_query(&allowed).await?;
        let call = found
            .first()
            .and_then(|e| e.record.fields.get("call"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let completed = match &call {
            Some(call) => !store
                .audit_query(&AuditFilter {
                    kind: Some("call.completed".into()),
                    call: Some(call.clone()),
                    ..AuditFilter::default()
                })
                .await?
                .is_empty(),
            None => false,
        };
        match call {
            Some(call) if completed => break call,
            _ if tokio::time::Instant::now() >= deadline => {
                bail!("the allowed call's records did not reach the audit log")
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let call_of = |found: Vec<writ_store::AuditEntry>, what: &str| {
        found
            .first()
            .and_then(|e| e.record.fields.get("call"))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("the {what} is not in the audit log"))
    };
    let denied_call = call_of(store.audit_query(&denied).await?, "denied call")?;
    let deviation_call = call_of(store.audit_query(&deviation).await?, "deviation")?;
    let config = config_file.display();
    let mut out = std::io::stdout();
    for (step, what, call) in [
        (15, "the allowed call (5)", &allowed_call),
        (16, "the denied call (6)", &denied_call),
        (17, "the deviation (12)", &deviation_call),
    ] {
        println!(
            "\n{step}. The audit log's story of {what}: writ audit explain {call} --config {config}"
        );
        super::audit::explain_to(store, call, &mut out).await?;
    }
    println!("\n18. Every chain and checkpoint recomputed: writ audit verify --config {config}");
    super::audit::verify_to(store, &mut out).await?;
    println!("\nApproval is the next stage of this same path.");
    Ok(())
}

/// Begins a DPoP-bound task for `tools` (handling data of `data_classes`) as the agent
/// holding `key` and opens a session.
async fn begin<'k>(
    base: &str,
    url: &str,
    key: &'k AgentKey,
    purpose: &str,
    (tools, data_classes): (&[&str], &[&str]),
) -> anyhow::Result<(client::Begun, TourClient<'k>)> {
    let request = TaskRequest {
        purpose: purpose.into(),
        tools: tools.iter().map(|t| (*t).to_owned()).collect(),
        data_classes: data_classes.iter().map(|c| (*c).to_owned()).collect(),
        ttl: Some(600),
        dpop: true,
        ..TaskRequest::default()
    };
    let begun = client::begin_task(&reqwest::Client::new(), base, key, &request)
        .await
        .map_err(|e| anyhow::anyhow!("the demo task was refused: {e}"))?;
    let session = TourClient::connect(url, &begun.access_token, key).await?;
    Ok((begun, session))
}

async fn tool_names(client: &TourClient<'_>) -> anyhow::Result<Vec<String>> {
    let tools = client.request("tools/list", json!({})).await?;
    Ok(tools
        .pointer("/tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect())
}

/// A JSON-RPC error as `message [code]`.
fn error_line(answer: &Value) -> String {
    format!(
        "{} [{}]",
        answer
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("?"),
        answer
            .pointer("/error/code")
            .and_then(Value::as_i64)
            .unwrap_or_default()
    )
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
    let content = Content {
        prompts: vec![(
            "summarise".to_owned(),
            "Summarise the notes in three bullet points.".to_owned(),
        )],
        resources: vec![
            (
                "notes://plans/launch".to_owned(),
                "Launch plan: ship the gateway on Friday.".to_owned(),
            ),
            (
                "notes://board/minutes".to_owned(),
                "Board minutes: confidential.".to_owned(),
            ),
        ],
        templates: Vec::new(),
    };
    (
        "notes",
        ToolServer::with_content("writ-demo-notes", vec![read, write], content),
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
