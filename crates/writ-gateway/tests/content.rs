//! Prompts, resources and completions governed like tools, over real sockets: Writ on
//! port 0 with a real SQLite store and a real policy folder, in front of two of Writ's
//! kit servers that serve prompts, resources and a resource template (`notes`, `crm`).
//! Every test counts what reached the upstreams and reads the audit chain back.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers fail the test loudly on unexpected input"
)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use writ_agent::client::{self, TaskRequest};
use writ_agent::key::{self as agent_key, AgentKey};
use writ_core::config::{Config, SigningAlgorithm};
use writ_gateway::Running;
use writ_gateway::token::now;
use writ_mcp::server::{Content, Tool, ToolServer, text_result};
use writ_store::{Agent, AgentCredential, AuditStore, SqliteStore, Store, TaskState, TaskStore};

const ACCEPT: &str = "application/json, text/event-stream";
const STATELESS: &str = "2026-07-28";
const SESSION: &str = "2025-11-25";
const POLICY_DENIED: i64 = -31020;
const NOT_AUTHENTICATED: i64 = -31010;
const OUTSIDE_TASK: i64 = -31011;
const INVALID_PARAMS: i64 = -32602;
const METHOD_NOT_FOUND: i64 = -32601;
/// Resource not found before 2026-07-28.
const RESOURCE_NOT_FOUND: i64 = -32002;

/// Research may discover and use everything of `notes` and `crm`; the payroll prompt is
/// closed to everyone; anyone may see and call `notes.read`.
const POLICIES: &str = r#"
@id("any-task")
permit (principal, action == Writ::Action::"begin_task", resource);

@id("notes-read-open")
permit (
  principal,
  action in [Writ::Action::"discover", Writ::Action::"call"],
  resource == Writ::Tool::"notes.read"
);

@id("research-content")
@reason("research reads the notes and the CRM")
permit (
  principal in Writ::Team::"research",
  action in [
    Writ::Action::"discover_prompt", Writ::Action::"get_prompt",
    Writ::Action::"discover_resource", Writ::Action::"read_resource"
  ],
  resource
);

@id("payroll-closed")
@reason("the payroll prompt is closed")
forbid (principal, action == Writ::Action::"get_prompt", resource == Writ::Prompt::"notes.payroll");
"#;

struct Kit {
    notes: Arc<ToolServer>,
    crm: Arc<ToolServer>,
    toml: String,
}

impl Kit {
    async fn start() -> Self {
        let read = Tool::new(
            "read",
            "Reads notes.",
            json!({"type": "object"}),
            json!({}),
            |_| Ok(text_result("notes.read ran")),
        );
        let notes = ToolServer::with_content(
            "notes",
            vec![read],
            Content {
                prompts: vec![
                    ("summary".into(), "Summarise today's notes.".into()),
                    ("payroll".into(), "List every salary.".into()),
                ],
                resources: vec![
                    ("file:///reports/q3.txt".into(), "Q3 revenue is up.".into()),
                    ("file:///secrets/key.txt".into(), "hunter2".into()),
                ],
                templates: vec!["file:///reports/{name}".into()],
            },
        );
        let crm = ToolServer::with_content(
            "crm",
            Vec::new(),
            Content {
                prompts: vec![("brief".into(), "Brief me on the account.".into())],
                resources: vec![("crm://accounts/acme".into(), "ACME: renewing.".into())],
                templates: Vec::new(),
            },
        );
        let mut toml = String::new();
        for (name, server, facts) in [
            (
                "notes",
                &notes,
                "[[servers.tools]]\nname = \"read\"\naccess = \"read\"\nrisk = \"low\"\n\
                 [[servers.prompts]]\nname = \"payroll\"\ndata_classes = [\"pii\"]\n\
                 [[servers.resources]]\nuri = \"file:///secrets/*\"\ndata_classes = [\"secret\"]\n",
            ),
            ("crm", &crm, ""),
        ] {
            let (addr, _) = server
                .clone()
                .serve("127.0.0.1:0".parse().unwrap())
                .await
                .unwrap();
            toml.push_str(&format!(
                "[[servers]]\nname = \"{name}\"\ntransport = \"http\"\nurl = \"http://{addr}/mcp\"\n{facts}"
            ));
        }
        Self { notes, crm, toml }
    }

    /// Prompt gets, resource reads and completions that reached either server.
    fn uses(&self) -> u64 {
        self.notes.content_uses() + self.crm.content_uses()
    }
}

/// An agent's answer from `/mcp`.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    body: Value,
}

impl Answer {
    fn result(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "{self:?}");
        assert!(self.body.get("error").is_none(), "{self:?}");
        &self.body["result"]
    }

    /// The message of a JSON-RPC error with this HTTP status and code.
    fn error(&self, status: StatusCode, code: i64) -> &str {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.body["error"]["code"], code, "{self:?}");
        self.body["error"]["message"].as_str().unwrap()
    }
}

/// Which protocol era a request is spoken in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Era {
    /// 2026-07-28: one request per POST, no session.
    Stateless,
    /// 2025-11-25: `initialize` first, then the session.
    Session,
}

struct Fixture {
    running: Running,
    base: String,
    http: reqwest::Client,
    store: Arc<SqliteStore>,
    rita: AgentKey,
    lone: AgentKey,
    dir: PathBuf,
}

async fn register(store: &dyn Store, name: &str, team: Option<&str>) -> AgentKey {
    let id = agent_key::new_agent_id();
    let (key, pem) = AgentKey::generate(&id, SigningAlgorithm::EdDSA).unwrap();
    store
        .create_agent(&Agent {
            id,
            name: name.into(),
            team: team.map(str::to_owned),
            owner: None,
            credential: AgentCredential::PublicKey {
                algorithm: "EdDSA".into(),
                pem,
            },
            disabled: false,
            created_at: now(),
        })
        .await
        .unwrap();
    key
}

impl Fixture {
    async fn start(kit: &Kit) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "writ-content-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let policies = dir.join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(policies.join("content.cedar"), POLICIES).unwrap();
        let store_path = dir.join("writ.db");
        let store = Arc::new(SqliteStore::open(&store_path).await.unwrap());
        let rita = register(store.as_ref(), "rita", Some("research")).await;
        let lone = register(store.as_ref(), "lone", None).await;
        let config = Config::parse(&format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\ncall_timeout = \"5s\"\n[store]\npath = \"{}\"\n[policy]\ndir = \"{}\"\n{}",
            store_path.display(),
            policies.display(),
            kit.toml,
        ))
        .unwrap();
        let running = Running::start(&config).await.unwrap();
        assert!(running.wait_ready(Duration::from_secs(20)).await);
        Self {
            base: format!("http://{}", running.local_addr()),
            running,
            http: reqwest::Client::new(),
            store,
            rita,
            lone,
            dir,
        }
    }

    async fn begin(&self, agent: &AgentKey, tools: &[&str], classes: &[&str]) -> client::Begun {
        let request = TaskRequest {
            purpose: "read the quarter's reports".into(),
            tools: tools.iter().map(|t| (*t).to_owned()).collect(),
            data_classes: classes.iter().map(|c| (*c).to_owned()).collect(),
            ..TaskRequest::default()
        };
        client::begin_task(&self.http, &self.base, agent, &request)
            .await
            .unwrap()
    }

    async fn writ(&self, agent: &AgentKey, tools: &[&str]) -> String {
        self.begin(agent, tools, &[]).await.access_token
    }

    /// One request in `era`: in the session era, a fresh session is opened first.
    async fn request(&self, era: Era, writ: &str, method: &str, params: Value) -> Answer {
        let mut params = params;
        let post = |headers: Vec<(&'static str, String)>, body: Value| {
            let mut request = self
                .http
                .post(format!("{}/mcp", self.base))
                .header("content-type", "application/json")
                .header("accept", ACCEPT)
                .header("authorization", format!("Bearer {writ}"));
            for (name, value) in headers {
                request = request.header(name, value);
            }
            request.body(body.to_string()).send()
        };
        let headers = match era {
            Era::Stateless => {
                params["_meta"] = json!({ "io.modelcontextprotocol/protocolVersion": STATELESS,
                                          "io.modelcontextprotocol/clientCapabilities": {} });
                let mut headers = vec![
                    ("mcp-protocol-version", STATELESS.to_owned()),
                    ("mcp-method", method.to_owned()),
                ];
                let name = params.get("name").or_else(|| params.get("uri"));
                if let (Some(name), true) = (
                    name.and_then(Value::as_str),
                    ["prompts/get", "resources/read"].contains(&method),
                ) {
                    headers.push(("mcp-name", name.to_owned()));
                }
                headers
            }
            Era::Session => {
                let opened = post(vec![], json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": SESSION, "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}))
                    .await
                    .unwrap();
                assert_eq!(opened.status(), StatusCode::OK);
                let session = opened.headers()["mcp-session-id"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                vec![
                    ("mcp-session-id", session),
                    ("mcp-protocol-version", SESSION.to_owned()),
                ]
            }
        };
        let response = post(
            headers,
            json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params }),
        )
        .await
        .unwrap();
        Answer {
            status: response.status(),
            body: response.json().await.unwrap(),
        }
    }

    /// The names (or URIs) a list shows.
    async fn list(&self, era: Era, writ: &str, method: &str) -> Vec<String> {
        let answer = self.request(era, writ, method, json!({})).await;
        let result = answer.result();
        let (key, field) = match method {
            "prompts/list" => ("prompts", "name"),
            "resources/list" => ("resources", "uri"),
            "resources/templates/list" => ("resourceTemplates", "uriTemplate"),
            _ => ("tools", "name"),
        };
        result[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| item[field].as_str().unwrap().to_owned())
            .collect()
    }

    async fn read(&self, era: Era, writ: &str, uri: &str) -> Answer {
        self.request(era, writ, "resources/read", json!({ "uri": uri }))
            .await
    }

    async fn get_prompt(&self, era: Era, writ: &str, name: &str) -> Answer {
        self.request(era, writ, "prompts/get", json!({ "name": name }))
            .await
    }

    async fn task_state(&self, writ_task: &str) -> TaskState {
        self.store.task(writ_task).await.unwrap().unwrap().state
    }

    /// Every record of the gateway's chain, once the gateway stopped (what is handed
    /// over without waiting is committed by then).
    async fn stop(self) -> Vec<writ_audit::Record> {
        let store = self.store.clone();
        self.running.shutdown(Duration::from_secs(2)).await;
        let writer = store.audit_writers().await.unwrap()[0].clone();
        let records = store.audit_records(&writer, 0, 1_000).await.unwrap();
        let _ = std::fs::remove_dir_all(&self.dir);
        records
    }
}

fn task_of(writ: &str) -> String {
    use base64::Engine as _;
    let payload = writ.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["task"].as_str().unwrap().to_owned()
}

/// The done-when of the issue: a task that covers only `notes.read` sees no prompt or
/// resource in any list, and each attempt to get or read one is a deviation — refused
/// with 403, recorded, and then the task revoked — in both eras; nothing reaches a
/// server.
#[tokio::test]
async fn a_task_over_notes_read_alone_lists_and_reads_no_prompt_or_resource() {
    let kit = Kit::start().await;
    let fx = Fixture::start(&kit).await;
    for era in [Era::Stateless, Era::Session] {
        let writ = fx.writ(&fx.rita, &["notes.read"]).await;
        assert_eq!(fx.list(era, &writ, "tools/list").await, ["notes.read"]);
        for list in ["prompts/list", "resources/list", "resources/templates/list"] {
            assert!(fx.list(era, &writ, list).await.is_empty(), "{era:?} {list}");
        }
        let attempts: [(&str, Value); 4] = [
            ("prompts/get", json!({ "name": "notes.summary" })),
            ("resources/read", json!({ "uri": "file:///reports/q3.txt" })),
            ("resources/read", json!({ "uri": "crm://accounts/acme" })),
            (
                "completion/complete",
                json!({ "ref": { "type": "ref/prompt", "name": "notes.summary" },
                        "argument": { "name": "topic", "value": "q" } }),
            ),
        ];
        for (method, params) in attempts {
            let writ = fx.writ(&fx.rita, &["notes.read"]).await;
            let refused = fx.request(era, &writ, method, params.clone()).await;
            let message = refused.error(StatusCode::FORBIDDEN, OUTSIDE_TASK);
            assert!(
                message.contains("is outside task") && message.contains("so the task is revoked"),
                "{era:?} {method}: {message}"
            );
            assert_eq!(fx.task_state(&task_of(&writ)).await, TaskState::Revoked);
        }
    }
    assert_eq!(kit.uses(), 0, "nothing reached a server");

    let records = fx.stop().await;
    let kinds: Vec<&str> = records.iter().map(|r| r.kind.as_str()).collect();
    for kind in ["prompts.discovered", "resources.discovered"] {
        let listed = records.iter().find(|r| r.kind == kind).unwrap();
        assert_eq!(listed.fields["shown"], json!([]), "{kind}");
        assert!(
            listed.fields["hidden"][0]["reason"]
                .as_str()
                .unwrap()
                .contains("(its tools: notes.read)"),
            "{listed:?}"
        );
    }
    // Each deviation is recorded before the revocation it causes, which names the use.
    for deviation in records
        .iter()
        .filter(|r| r.kind == "prompt.deviation" || r.kind == "resource.deviation")
    {
        assert_eq!(deviation.decision.as_deref(), Some("deviation"));
        let call = deviation.fields["call"].as_str().unwrap();
        let revoked = records
            .iter()
            .find(|r| r.kind == "task.revoked" && r.fields["call"] == call)
            .unwrap();
        assert!(revoked.seq > deviation.seq, "{kinds:?}");
    }
    let count = |kind: &str| kinds.iter().filter(|k| **k == kind).count();
    // Per era: the prompt get and the completion, and two reads.
    assert_eq!(count("prompt.deviation"), 4, "{kinds:?}");
    assert_eq!(count("resource.deviation"), 4, "{kinds:?}");
    assert_eq!(count("resource.forwarded") + count("prompt.forwarded"), 0);
}

/// A task that names a prompt and a prefix of resources gets and reads exactly those,
/// through a listed URI and through the server's template, in both eras; everything of
/// the use is recorded under one id.
#[tokio::test]
async fn a_task_over_a_prompt_and_a_resource_prefix_gets_and_reads_them() {
    let kit = Kit::start().await;
    let fx = Fixture::start(&kit).await;
    let tools = ["notes.prompt:summary", "notes.resource:file:///reports/*"];
    let writ = fx.writ(&fx.rita, &tools).await;
    for era in [Era::Stateless, Era::Session] {
        assert_eq!(fx.list(era, &writ, "prompts/list").await, ["notes.summary"]);
        assert_eq!(
            fx.list(era, &writ, "resources/list").await,
            ["file:///reports/q3.txt"]
        );
        assert_eq!(
            fx.list(era, &writ, "resources/templates/list").await,
            ["file:///reports/{name}"]
        );
        assert!(fx.list(era, &writ, "tools/list").await.is_empty());
        let prompt = fx.get_prompt(era, &writ, "notes.summary").await;
        assert_eq!(
            prompt.result()["messages"][0]["content"]["text"],
            "Summarise today's notes."
        );
        let listed = fx.read(era, &writ, "file:///reports/q3.txt").await;
        assert_eq!(listed.result()["contents"][0]["text"], "Q3 revenue is up.");
        if era == Era::Stateless {
            assert_eq!(listed.result()["cacheScope"], "private");
            assert_eq!(listed.result()["ttlMs"], 0);
        }
        let templated = fx.read(era, &writ, "file:///reports/q4.txt").await;
        assert_eq!(
            templated.result()["contents"][0]["text"],
            "template file:///reports/{name}: file:///reports/q4.txt"
        );
        let completed = fx
            .request(
                era,
                &writ,
                "completion/complete",
                json!({ "ref": { "type": "ref/resource", "uri": "file:///reports/{name}" },
                        "argument": { "name": "name", "value": "q" } }),
            )
            .await;
        assert_eq!(
            completed.result()["completion"]["values"],
            json!(["alpha", "beta"])
        );
    }
    assert_eq!(kit.notes.content_uses(), 8);
    assert_eq!(fx.task_state(&task_of(&writ)).await, TaskState::Active);

    let records = fx.stop().await;
    let read = records
        .iter()
        .find(|r| {
            r.kind == "resource.decided" && r.tool.as_deref() == Some("file:///reports/q4.txt")
        })
        .unwrap();
    assert_eq!(read.decision.as_deref(), Some("allow"));
    assert_eq!(read.fields["policies"], json!(["research-content"]));
    assert_eq!(read.fields["template"], "file:///reports/{name}");
    assert_eq!(read.fields["server"], "notes");
    let call = read.fields["call"].as_str().unwrap();
    let of_read: Vec<&str> = records
        .iter()
        .filter(|r| r.fields.get("call").and_then(Value::as_str) == Some(call))
        .map(|r| r.kind.as_str())
        .collect();
    assert_eq!(
        of_read,
        [
            "resource.decided",
            "resource.forwarded",
            "resource.completed"
        ]
    );
    let got = records.iter().find(|r| r.kind == "prompt.decided").unwrap();
    assert_eq!(got.tool.as_deref(), Some("notes.summary"));
    let completion = records
        .iter()
        .find(|r| r.fields.get("method") == Some(&json!("completion/complete")))
        .unwrap();
    assert_eq!(completion.kind, "resource.decided");
}

/// Within its task, a prompt or resource is still decided by policy: a denial is a
/// refusal on HTTP 200 that names the policy, not a deviation, and the task lives on. A
/// completion for a prompt the caller may not get is refused the same way.
#[tokio::test]
async fn policy_decides_within_the_task_and_completions_follow_the_get() {
    let kit = Kit::start().await;
    let fx = Fixture::start(&kit).await;
    // Nobody permits `lone` (no team) any prompt or resource.
    let lone = fx.writ(&fx.lone, &["notes.*"]).await;
    for era in [Era::Stateless, Era::Session] {
        assert!(fx.list(era, &lone, "prompts/list").await.is_empty());
        assert!(fx.list(era, &lone, "resources/list").await.is_empty());
        let denied = fx.read(era, &lone, "file:///reports/q3.txt").await;
        assert_eq!(
            denied.error(StatusCode::OK, POLICY_DENIED),
            "read of resource `file:///reports/q3.txt` denied: no policy permits `read_resource` here"
        );
        assert_eq!(denied.body["error"]["data"]["decision"], "deny");
    }
    assert_eq!(fx.task_state(&task_of(&lone)).await, TaskState::Active);
    // `rita` declares `pii`, so payroll lies within her task; policy closes it.
    let begun = fx.begin(&fx.rita, &["notes.*"], &["pii"]).await;
    let rita = begun.access_token.as_str();
    // Discovery and use are decided apart: `payroll-closed` forbids the get only.
    assert_eq!(
        fx.list(Era::Stateless, rita, "prompts/list").await,
        ["notes.summary", "notes.payroll"]
    );
    let closed = fx.get_prompt(Era::Stateless, rita, "notes.payroll").await;
    assert_eq!(
        closed.body["error"]["data"]["policies"],
        json!(["payroll-closed"])
    );
    closed.error(StatusCode::OK, POLICY_DENIED);
    for era in [Era::Stateless, Era::Session] {
        let completion = fx
            .request(
                era,
                rita,
                "completion/complete",
                json!({ "ref": { "type": "ref/prompt", "name": "notes.payroll" },
                        "argument": { "name": "topic", "value": "s" } }),
            )
            .await;
        assert!(
            completion
                .error(StatusCode::OK, POLICY_DENIED)
                .starts_with("get of prompt `notes.payroll` denied"),
            "{completion:?}"
        );
    }
    // Undeclared data classes are a deviation before policy is asked.
    let secret = fx
        .read(Era::Stateless, rita, "file:///secrets/key.txt")
        .await;
    assert!(
        secret
            .error(StatusCode::FORBIDDEN, OUTSIDE_TASK)
            .contains("handles data of class `secret`, which task"),
        "{secret:?}"
    );
    assert_eq!(kit.uses(), 0, "nothing refused reached a server");
    let records = fx.stop().await;
    let denied: Vec<_> = records
        .iter()
        .filter(|r| r.kind == "resource.decided" || r.kind == "prompt.decided")
        .map(|r| r.decision.as_deref().unwrap())
        .collect();
    assert_eq!(denied, ["deny"; 5]);
}

/// Bad input about resources and prompts is refused before any stage that could reach a
/// server, with the code of the era, and does not cost the task: a URI no server lists
/// or templates, URIs that try to escape the granted prefix (dot segments, encoded
/// slashes and dots, backslashes, another scheme), and a prompt name of another server.
#[tokio::test]
async fn resources_no_server_serves_and_escaping_uris_are_refused_in_both_eras() {
    let kit = Kit::start().await;
    let fx = Fixture::start(&kit).await;
    let writ = fx
        .writ(
            &fx.rita,
            &["notes.resource:file:///reports/*", "notes.prompt:*"],
        )
        .await;
    for era in [Era::Stateless, Era::Session] {
        let not_found = match era {
            Era::Stateless => INVALID_PARAMS,
            Era::Session => RESOURCE_NOT_FOUND,
        };
        for uri in [
            "file:///elsewhere/x.txt",
            "https://file:///reports/q3.txt",
            "file:///reports/../secrets/key.txt",
            "file:///reports/a/../../secrets/key.txt",
            "file:///reports/%2e%2e/secrets/key.txt",
            "file:///reports/%2E%2E%2Fsecrets%2Fkey.txt",
            "file:///reports\\..\\secrets\\key.txt",
            "reports/q3.txt",
            "file:///reports//etc/passwd",
            "file:///reports/x?/../../secrets/key.txt",
            "file:///reports/%252e%252e/secrets/key.txt",
            "file:///reports/%c0%ae%c0%ae/secrets/key.txt",
            "file:///%73ecrets/key.txt",
            "file://localhost/secrets/key.txt",
            "FILE:///reports/q3.txt",
        ] {
            let refused = fx.read(era, &writ, uri).await;
            let message = refused.error(StatusCode::OK, not_found);
            assert!(
                message.contains("not served by any server")
                    || message.contains("segment")
                    || message.contains("percent-encoded")
                    || message.contains("backslash")
                    || message.contains("no scheme")
                    || message.contains("needs no encoding")
                    || message.contains("file:///path")
                    || message.contains("uppercase"),
                "{era:?} {uri}: {message}"
            );
        }
        for name in ["crm.summary", "notes.brief", "notes.nothing", "summary"] {
            let unknown = fx.get_prompt(era, &writ, name).await;
            assert_eq!(
                unknown.error(StatusCode::OK, INVALID_PARAMS),
                format!("unknown prompt `{name}`")
            );
        }
        let template = fx
            .request(
                era,
                &writ,
                "completion/complete",
                json!({ "ref": { "type": "ref/resource", "uri": "file:///{anything}" },
                        "argument": { "name": "anything", "value": "x" } }),
            )
            .await;
        template.error(StatusCode::OK, not_found);
        // What a server is asked to complete cannot reach past the grant either.
        let climbing = fx
            .request(
                era,
                &writ,
                "completion/complete",
                json!({ "ref": { "type": "ref/resource", "uri": "file:///reports/{name}" },
                        "argument": { "name": "name", "value": "../secrets/" } }),
            )
            .await;
        assert!(
            climbing
                .error(StatusCode::OK, not_found)
                .contains("completion value `../secrets/`"),
            "{climbing:?}"
        );
    }
    assert_eq!(kit.uses(), 0, "nothing reached a server");
    assert_eq!(fx.task_state(&task_of(&writ)).await, TaskState::Active);
    // Probing leaves a trace: every refusal is recorded, though nothing was resolved.
    let records = fx.stop().await;
    let refused = |kind: &str, what: &str| {
        records
            .iter()
            .filter(|r| r.kind == kind && r.tool.as_deref() == Some(what))
            .all(|r| r.decision.as_deref() == Some("deny"))
            && records
                .iter()
                .any(|r| r.kind == kind && r.tool.as_deref() == Some(what))
    };
    assert!(refused(
        "resource.decided",
        "file:///reports/../secrets/key.txt"
    ));
    assert!(refused("resource.decided", "file:///elsewhere/x.txt"));
    assert!(refused("prompt.decided", "crm.summary"));
}

/// A subscription is decided as a read of its resource (outside the task it is a
/// deviation) and answered by Writ, never forwarded: one upstream session serves every
/// agent. `logging/setLevel` is kept in the agent's session and checked. Neither exists
/// in 2026-07-28.
#[tokio::test]
async fn subscriptions_are_decided_as_reads_and_log_levels_stay_in_the_session() {
    let kit = Kit::start().await;
    let fx = Fixture::start(&kit).await;
    let writ = fx
        .writ(&fx.rita, &["notes.resource:file:///reports/*"])
        .await;
    let uri = json!({ "uri": "file:///reports/q3.txt" });
    for method in ["resources/subscribe", "resources/unsubscribe"] {
        let answered = fx.request(Era::Session, &writ, method, uri.clone()).await;
        assert_eq!(answered.result(), &json!({}), "{method}");
    }
    let level = fx
        .request(
            Era::Session,
            &writ,
            "logging/setLevel",
            json!({ "level": "debug" }),
        )
        .await;
    assert_eq!(level.result(), &json!({}));
    let bad = fx
        .request(
            Era::Session,
            &writ,
            "logging/setLevel",
            json!({ "level": "loud" }),
        )
        .await;
    assert!(bad.error(StatusCode::OK, INVALID_PARAMS).contains("`loud`"));
    for method in ["resources/subscribe", "logging/setLevel"] {
        let gone = fx.request(Era::Stateless, &writ, method, uri.clone()).await;
        gone.error(StatusCode::NOT_FOUND, METHOD_NOT_FOUND);
    }
    let outside = fx
        .request(
            Era::Session,
            &writ,
            "resources/subscribe",
            json!({ "uri": "crm://accounts/acme" }),
        )
        .await;
    outside.error(StatusCode::FORBIDDEN, OUTSIDE_TASK);
    assert_eq!(kit.uses(), 0, "nothing was forwarded");
    let records = fx.stop().await;
    let subscribed: Vec<(&str, Option<&str>)> = records
        .iter()
        .filter(|r| r.fields.get("method") == Some(&json!("resources/subscribe")))
        .map(|r| (r.kind.as_str(), r.decision.as_deref()))
        .collect();
    assert_eq!(
        subscribed,
        [
            ("resource.decided", Some("allow")),
            ("resource.deviation", Some("deviation")),
        ]
    );
}

/// Regression (hardening issue, item 1): in a 2025-03-26 batch, a deviation revokes the
/// task, and the elements after it see the revoked task — refused, recorded, never
/// forwarded.
#[tokio::test]
async fn a_deviation_in_a_batch_stops_the_rest_of_the_batch() {
    let kit = Kit::start().await;
    let fx = Fixture::start(&kit).await;
    let writ = fx
        .writ(&fx.rita, &["notes.read", "notes.prompt:summary"])
        .await;
    let post = |session: Option<&str>, body: Value| {
        let mut request = fx
            .http
            .post(format!("{}/mcp", fx.base))
            .header("content-type", "application/json")
            .header("accept", ACCEPT)
            .header("authorization", format!("Bearer {writ}"));
        if let Some(session) = session {
            request = request
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", "2025-03-26");
        }
        request.body(body.to_string()).send()
    };
    let opened = post(None, json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}))
        .await
        .unwrap();
    let session = opened.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let call = |id: u64, name: &str| json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": {}}});
    let answers: Value = post(
        Some(&session),
        json!([
            { "jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": { "uri": "file:///reports/q3.txt" } },
            call(2, "notes.read"),
            { "jsonrpc": "2.0", "id": 3, "method": "prompts/get", "params": { "name": "notes.summary" } },
        ]),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), 3, "{answers:?}");
    assert_eq!(answers[0]["error"]["code"], OUTSIDE_TASK, "{answers:?}");
    for later in &answers[1..] {
        assert_eq!(later["error"]["code"], NOT_AUTHENTICATED, "{answers:?}");
        assert!(
            later["error"]["message"]
                .as_str()
                .unwrap()
                .contains("is revoked"),
            "{answers:?}"
        );
    }
    assert_eq!(kit.notes.tool_calls() + kit.uses(), 0);
    let records = fx.stop().await;
    let decided: Vec<(&str, Option<&str>)> = records
        .iter()
        .filter(|r| r.kind.ends_with(".decided") || r.kind.ends_with(".deviation"))
        .map(|r| (r.kind.as_str(), r.decision.as_deref()))
        .collect();
    assert_eq!(
        decided,
        [
            ("resource.deviation", Some("deviation")),
            ("call.decided", Some("deny")),
            ("prompt.decided", Some("deny")),
        ]
    );
}
