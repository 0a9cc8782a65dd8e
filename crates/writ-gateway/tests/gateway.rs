//! The gateway over real sockets: Writ on port 0 in front of real upstreams — Writ's kit
//! server over HTTP, and a Python stdio server (tests/fixtures/stdio_server.py) that
//! crashes, hangs and streams progress on request.
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
use writ_core::config::Config;
use writ_gateway::Running;
use writ_mcp::server::{Tool, ToolServer, text_result};

const ACCEPT: &str = "application/json, text/event-stream";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

async fn echo_server() -> (Arc<ToolServer>, String) {
    let echo = Tool::new(
        "echo",
        "Echo.",
        json!({"type": "object"}),
        json!({"readOnlyHint": true}),
        |args| {
            Ok(text_result(
                args.get("text").and_then(Value::as_str).unwrap_or_default(),
            ))
        },
    );
    let server = ToolServer::new("echo-upstream", vec![echo]);
    let (addr, _task) = server
        .clone()
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (server, format!("http://{addr}/mcp"))
}

fn kit_toml(url: &str) -> String {
    format!("[[servers]]\nname = \"kit\"\ntransport = \"http\"\nurl = \"{url}\"\n")
}

fn stdio_server_toml(name: &str) -> String {
    format!(
        "[[servers]]\nname = \"{name}\"\ntransport = \"stdio\"\ncommand = \"python3\"\nargs = [\"-u\", \"{}\"]\n",
        fixture("stdio_server.py").display()
    )
}

async fn start(toml: &str) -> Running {
    let config = Config::parse(&format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\nauth = \"off\"\ncall_timeout = \"2s\"\n{toml}"
    ))
    .unwrap();
    let running = Running::start(&config).await.unwrap();
    assert!(
        running.wait_ready(Duration::from_secs(20)).await,
        "upstreams did not become ready"
    );
    running
}

/// An agent speaking the session era with plain HTTP, so each request is exactly what the test says.
struct Agent {
    http: reqwest::Client,
    url: String,
    session: String,
    version: &'static str,
}

impl Agent {
    async fn connect(url: &str, version: &'static str) -> Self {
        let http = reqwest::Client::new();
        let response = http
            .post(url)
            .header("content-type", "application/json")
            .header("accept", ACCEPT)
            .body(json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let session = response.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["result"]["protocolVersion"], version);
        let agent = Self {
            http,
            url: url.to_owned(),
            session,
            version,
        };
        assert_eq!(
            agent
                .post_text(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
                .await
                .status(),
            StatusCode::ACCEPTED
        );
        agent
    }

    fn request(&self) -> reqwest::RequestBuilder {
        self.http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("accept", ACCEPT)
            .header("mcp-session-id", &self.session)
            .header("mcp-protocol-version", self.version)
    }

    async fn post_text(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.request().body(body).send().await.unwrap()
    }

    async fn call(&self, method: &str, params: Value) -> Value {
        let response = self
            .post_text(
                json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string(),
            )
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn tool(&self, name: &str, arguments: Value) -> Value {
        self.call("tools/call", json!({"name": name, "arguments": arguments}))
            .await
    }
}

async fn error_of(response: reqwest::Response) -> (StatusCode, i64, String) {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["error"]["code"].as_i64().unwrap(),
        body["error"]["message"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn tools_from_http_and_stdio_servers_are_merged_and_called() {
    let (upstream, url) = echo_server().await;
    let writ = start(&format!("{}{}", kit_toml(&url), stdio_server_toml("py"))).await;
    let agent = Agent::connect(&writ.mcp_url(), "2025-11-25").await;
    let list = agent.call("tools/list", json!({})).await;
    let names: Vec<&str> = list["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(&names[..3], ["kit.echo", "py.echo", "py.crash"]);
    assert_eq!(
        agent.tool("kit.echo", json!({"text": "hi"})).await["result"]["content"][0]["text"],
        "hi"
    );
    assert_eq!(
        agent.tool("py.echo", json!({"text": "there"})).await["result"]["content"][0]["text"],
        "there"
    );
    assert_eq!(upstream.tool_calls(), 1);
}

#[tokio::test]
async fn merged_lists_paginate_at_both_ends() {
    // The fixture pages its 7 tools by 4; Writ follows its cursors and pages by 3.
    let writ = start(&format!("page_size = 3\n{}", stdio_server_toml("py"))).await;
    let agent = Agent::connect(&writ.mcp_url(), "2025-06-18").await;
    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let params = cursor.as_ref().map_or(json!({}), |c| json!({"cursor": c}));
        let page = agent.call("tools/list", params).await;
        pages += 1;
        names.extend(
            page["result"]["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_owned()),
        );
        match page["result"]["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        names,
        [
            "py.echo",
            "py.crash",
            "py.hang",
            "py.sleep",
            "py.progress",
            "py.add_tool",
            "py.stats"
        ]
    );
    let bad = agent
        .call("tools/list", json!({"cursor": "not-ours"}))
        .await;
    assert_eq!(bad["error"]["code"], -32602);
}

#[tokio::test]
async fn malformed_json_is_a_parse_error_and_nothing_is_forwarded() {
    let (upstream, url) = echo_server().await;
    let writ = start(&kit_toml(&url)).await;
    let agent = Agent::connect(&writ.mcp_url(), "2025-11-25").await;
    let (status, code, _) = error_of(
        agent
            .post_text(
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"kit.echo""#,
            )
            .await,
    )
    .await;
    assert_eq!((status, code), (StatusCode::BAD_REQUEST, -32700));
    let (status, code, message) = error_of(
        agent
            .post_text(r#"{"jsonrpc":"2.0","id":1,"method":5}"#)
            .await,
    )
    .await;
    assert_eq!((status, code), (StatusCode::BAD_REQUEST, -32600));
    assert!(message.contains("`method` must be a string"), "{message}");
    let (_, code, message) =
        error_of(agent.post_text(r#"{"id":1,"method":"tools/call"}"#).await).await;
    assert_eq!(code, -32600);
    assert!(message.contains("jsonrpc"), "{message}");
    let (status, code, message) = error_of(
        agent
            .post_text(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"p\xffng\"}".to_vec())
            .await,
    )
    .await;
    assert_eq!((status, code), (StatusCode::BAD_REQUEST, -32700));
    assert!(message.contains("UTF-8"), "{message}");
    let deep = format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"kit.echo","arguments":{{"a":{}1{}}}}}}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    let (status, _, message) = error_of(agent.post_text(deep).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("deeper than 64"), "{message}");
    assert_eq!(upstream.tool_calls(), 0);
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413() {
    let (upstream, url) = echo_server().await;
    let writ = start(&kit_toml(&url)).await;
    let agent = Agent::connect(&writ.mcp_url(), "2025-11-25").await;
    let big = "x".repeat(4 * 1024 * 1024);
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "kit.echo", "arguments": {"text": big}}}).to_string();
    let (status, _, message) = error_of(agent.post_text(body).await).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(message.contains("4194304"), "{message}");
    assert_eq!(upstream.tool_calls(), 0);
}

#[tokio::test]
async fn batches_only_where_the_revision_has_them() {
    let (_upstream, url) = echo_server().await;
    let writ = start(&kit_toml(&url)).await;
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","id":2,"method":"tools/list"}]"#;
    let modern = Agent::connect(&writ.mcp_url(), "2025-06-18").await;
    let (status, code, message) = error_of(modern.post_text(batch).await).await;
    assert_eq!((status, code), (StatusCode::BAD_REQUEST, -32600));
    assert!(message.contains("no batches"), "{message}");
    let old = Agent::connect(&writ.mcp_url(), "2025-03-26").await;
    let answers: Value = old.post_text(batch).await.json().await.unwrap();
    assert_eq!(answers.as_array().unwrap().len(), 2);
    assert_eq!(answers[1]["result"]["tools"][0]["name"], "kit.echo");
}

#[tokio::test]
async fn unknown_methods_and_tools_get_their_codes() {
    let (upstream, url) = echo_server().await;
    let writ = start(&kit_toml(&url)).await;
    let agent = Agent::connect(&writ.mcp_url(), "2025-11-25").await;
    assert_eq!(
        agent.call("tools/frobnicate", json!({})).await["error"]["code"],
        -32601
    );
    let unknown = agent.tool("kit.nope", json!({})).await;
    assert_eq!(unknown["error"]["code"], -32602);
    assert_eq!(unknown["error"]["message"], "unknown tool `kit.nope`");
    assert_eq!(
        agent.tool("other.echo", json!({})).await["error"]["code"],
        -32602
    );
    assert_eq!(upstream.tool_calls(), 0);
}

#[tokio::test]
async fn sessions_are_required_checked_and_ended() {
    let (_upstream, url) = echo_server().await;
    let writ = start(&kit_toml(&url)).await;
    let http = reqwest::Client::new();
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let no_session = http
        .post(writ.mcp_url())
        .header("content-type", "application/json")
        .body(ping)
        .send()
        .await
        .unwrap();
    assert_eq!(no_session.status(), StatusCode::BAD_REQUEST);
    let forged = http
        .post(writ.mcp_url())
        .header("content-type", "application/json")
        .header("mcp-session-id", "forged")
        .body(ping)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::NOT_FOUND);

    let agent = Agent::connect(&writ.mcp_url(), "2025-11-25").await;
    assert_eq!(agent.post_text(ping).await.status(), StatusCode::OK);
    let ended = http
        .delete(writ.mcp_url())
        .header("mcp-session-id", &agent.session)
        .send()
        .await
        .unwrap();
    assert_eq!(ended.status(), StatusCode::NO_CONTENT);
    assert_eq!(agent.post_text(ping).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn initialize_beyond_the_session_limit_gets_503() {
    let (_upstream, url) = echo_server().await;
    let writ = start(&format!("max_sessions = 1\n{}", kit_toml(&url))).await;
    let first = Agent::connect(&writ.mcp_url(), "2025-11-25").await;
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let http = reqwest::Client::new();
    let refused = http
        .post(writ.mcp_url())
        .header("content-type", "application/json")
        .body(init.to_string())
        .send()
        .await
        .unwrap();
    let (status, _, message) = error_of(refused).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(message.contains("max_sessions"), "{message}");
    http.delete(writ.mcp_url())
        .header("mcp-session-id", &first.session)
        .send()
        .await
        .unwrap();
    Agent::connect(&writ.mcp_url(), "2025-11-25").await;
}

#[tokio::test]
async fn protocol_version_header_must_be_a_revision_writ_speaks() {
    let (_upstream, url) = echo_server().await;
    let writ = start(&kit_toml(&url)).await;
    let agent = Agent::connect(&writ.mcp_url(), "2025-06-18").await;
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let with_version = |version: &str| {
        agent
            .http
            .post(&agent.url)
            .header("content-type", "application/json")
            .header("mcp-session-id", &agent.session)
            .header("mcp-protocol-version", version)
            .body(ping)
    };
    // Another session-era revision is tolerated, as the official SDK servers do.
    assert_eq!(
        with_version("2025-03-26").send().await.unwrap().status(),
        StatusCode::OK
    );
    let (status, code, message) = error_of(with_version("1999-01-01").send().await.unwrap()).await;
    assert_eq!((status, code), (StatusCode::BAD_REQUEST, -32022));
    assert!(
        message.contains("`1999-01-01` is not supported"),
        "{message}"
    );
}

#[tokio::test]
async fn foreign_origins_are_refused() {
    let (upstream, url) = echo_server().await;
    let writ = start(&kit_toml(&url)).await;
    let agent = Agent::connect(&writ.mcp_url(), "2025-11-25").await;
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"kit.echo","arguments":{}}}"#;
    let evil = agent
        .request()
        .header("origin", "http://evil.example")
        .body(call)
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status(), StatusCode::FORBIDDEN);
    let own = agent
        .request()
        .header("origin", format!("http://{}", writ.local_addr()))
        .body(call)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), StatusCode::OK);
    assert_eq!(upstream.tool_calls(), 1);
}

#[tokio::test]
async fn a_crash_mid_call_is_a_clear_error_and_the_next_call_works_after_restart() {
    let writ = start(&stdio_server_toml("py")).await;
    let agent = Agent::connect(&writ.mcp_url(), "2025-11-25").await;
    let crashed = agent.tool("py.crash", json!({})).await;
    assert_eq!(crashed["error"]["code"], -31002, "{crashed}");
    let message = crashed["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("server `py` is unavailable") && message.contains("exited"),
        "{message}"
    );
    let after = agent.tool("py.echo", json!({"text": "back"})).await;
    assert_eq!(after["result"]["content"][0]["text"], "back", "{after}");
}

#[tokio::test]
async fn a_hanging_upstream_times_out_and_is_told_to_cancel() {
    let config = format!("{}call_timeout = \"300ms\"\n", stdio_server_toml("py"));
    let writ = start(&config).await;
    let agent = Agent::connect(&writ.mcp_url(), "2025-11-25").await;
    let hung = agent.tool("py.hang", json!({})).await;
    assert_eq!(hung["error"]["code"], -31001, "{hung}");
    assert_eq!(
        hung["error"]["message"],
        "server `py` did not answer within 300ms"
    );
    // Writ's cancellation reached the server: it lists one cancelled request id.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = agent.tool("py.stats", json!({})).await;
    let cancelled: Value =
        serde_json::from_str(stats["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(
        cancelled["cancelled"].as_array().unwrap().len(),
        1,
        "{cancelled}"
    );
}

#[tokio::test]
async fn an_agents_cancellation_reaches_the_upstream() {
    let writ = start(&stdio_server_toml("py")).await;
    let agent = Arc::new(Agent::connect(&writ.mcp_url(), "2025-11-25").await);
    let caller = agent.clone();
    let hung = tokio::spawn(async move {
        caller.post_text(r#"{"jsonrpc":"2.0","id":"slow-1","method":"tools/call","params":{"name":"py.hang","arguments":{}}}"#).await.json::<Value>().await.unwrap()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cancel = agent.post_text(r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":"slow-1"}}"#).await;
    assert_eq!(cancel.status(), StatusCode::ACCEPTED);
    let answer = tokio::time::timeout(Duration::from_secs(2), hung)
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cancelled"),
        "{answer}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stats = agent.tool("py.stats", json!({})).await;
    assert!(
        stats["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("\"cancelled\": ["),
        "{stats}"
    );
    assert!(
        !stats["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("\"cancelled\": []"),
        "{stats}"
    );
}

#[tokio::test]
async fn an_upstream_answering_non_json_gets_a_clear_error_misbehaving_upstream() {
    // A real HTTP server that speaks MCP for the handshake and answers calls with garbage.
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/mcp",
        post(|body: String| async move {
            let request: Value = serde_json::from_str(&body).unwrap();
            let id = request.get("id").cloned();
            let json_type = [("content-type", "application/json")];
            match request["method"].as_str() {
                Some("initialize") => (StatusCode::OK, json_type, json!({"jsonrpc": "2.0", "id": id, "result": {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "bad", "version": "1"}}}).to_string()),
                Some("tools/list") => (StatusCode::OK, json_type, json!({"jsonrpc": "2.0", "id": id, "result": {"tools": [{"name": "t", "inputSchema": {"type": "object"}}]}}).to_string()),
                Some("tools/call") => (StatusCode::OK, json_type, "<html>oops</html>".to_owned()),
                _ => (StatusCode::ACCEPTED, json_type, String::new()),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let writ = start(&format!(
        "[[servers]]\nname = \"bad\"\ntransport = \"http\"\nurl = \"http://{addr}/mcp\"\n"
    ))
    .await;
    let agent = Agent::connect(&writ.mcp_url(), "2025-11-25").await;
    let answer = agent.tool("bad.t", json!({})).await;
    assert_eq!(answer["error"]["code"], -31003, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not a valid MCP message"),
        "{answer}"
    );
}

#[tokio::test]
async fn progress_streams_as_sse_with_the_agents_token() {
    let writ = start(&stdio_server_toml("py")).await;
    let agent = Agent::connect(&writ.mcp_url(), "2025-11-25").await;
    let body = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "py.progress", "arguments": {"steps": 3}, "_meta": {"progressToken": "mine"}}});
    let response = agent.post_text(body.to_string()).await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.unwrap();
    let messages: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(messages.len(), 4, "{text}");
    for (i, note) in messages[..3].iter().enumerate() {
        assert_eq!(note["method"], "notifications/progress");
        assert_eq!(note["params"]["progressToken"], "mine");
        assert_eq!(note["params"]["progress"], i + 1);
    }
    assert_eq!(messages[3]["id"], 9);
    assert_eq!(messages[3]["result"]["content"][0]["text"], "done");
}

#[tokio::test]
async fn an_upstream_list_change_refreshes_the_list_and_reaches_agents() {
    let writ = start(&stdio_server_toml("py")).await;
    let agent = Agent::connect(&writ.mcp_url(), "2025-11-25").await;
    let mut stream = agent
        .http
        .get(&agent.url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &agent.session)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(
        agent.tool("py.add_tool", json!({"name": "fresh"})).await["result"]["content"][0]["text"],
        "added"
    );
    let mut seen = String::new();
    while !seen.contains("notifications/tools/list_changed") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    let list = agent.call("tools/list", json!({})).await;
    assert!(
        list["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "py.fresh"),
        "{list}"
    );
    assert_eq!(
        agent.tool("py.fresh", json!({})).await["result"]["content"][0]["text"],
        "extra tool called"
    );
}

/// The 2026-07-28 era: no session, version and method mirrored in headers.
fn stateless(
    http: &reqwest::Client,
    url: &str,
    method: &str,
    name: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut request = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", method);
    if let Some(name) = name {
        request = request.header("mcp-name", name);
    }
    request
}

/// Sends a stateless request that Writ must refuse; returns status, code and message.
async fn stateless_error(
    http: &reqwest::Client,
    url: &str,
    method: &str,
    name: Option<&str>,
    body: String,
) -> (StatusCode, i64, String) {
    error_of(
        stateless(http, url, method, name)
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn stateless_body(method: &str, params: Value) -> String {
    let mut params = params;
    params["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}});
    json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string()
}

#[tokio::test]
async fn the_stateless_revision_discovers_lists_and_calls() {
    let (upstream, url) = echo_server().await;
    let writ = start(&kit_toml(&url)).await;
    let http = reqwest::Client::new();
    let discover: Value = stateless(&http, &writ.mcp_url(), "server/discover", None)
        .body(stateless_body("server/discover", json!({})))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        discover["result"]["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("2026-07-28")),
        "{discover}"
    );
    assert_eq!(discover["result"]["resultType"], "complete");

    let list: Value = stateless(&http, &writ.mcp_url(), "tools/list", None)
        .body(stateless_body("tools/list", json!({})))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["result"]["tools"][0]["name"], "kit.echo");
    assert_eq!(list["result"]["cacheScope"], "private");

    let call = stateless(&http, &writ.mcp_url(), "tools/call", Some("kit.echo"))
        .body(stateless_body(
            "tools/call",
            json!({"name": "kit.echo", "arguments": {"text": "stateless"}}),
        ))
        .send()
        .await
        .unwrap();
    assert!(call.headers().get("mcp-session-id").is_none());
    let call: Value = call.json().await.unwrap();
    assert_eq!(call["result"]["content"][0]["text"], "stateless");
    assert_eq!(call["result"]["resultType"], "complete");
    assert_eq!(upstream.tool_calls(), 1);
}

#[tokio::test]
async fn stateless_headers_must_match_the_body() {
    let (upstream, url) = echo_server().await;
    let writ = start(&kit_toml(&url)).await;
    let http = reqwest::Client::new();
    let body = stateless_body("tools/call", json!({"name": "kit.echo", "arguments": {}}));
    for (method, name, needle) in [
        ("tools/list", Some("kit.echo"), "Mcp-Method"),
        ("tools/call", Some("kit.other"), "Mcp-Name"),
        ("tools/call", None, "`Mcp-Name` header is missing"),
    ] {
        let (status, code, message) =
            stateless_error(&http, &writ.mcp_url(), method, name, body.clone()).await;
        assert_eq!(
            (status, code),
            (StatusCode::BAD_REQUEST, -32020),
            "{message}"
        );
        assert!(message.contains(needle), "{message}");
    }
    // `_meta` must carry the revision and the client's capabilities.
    for meta in [
        json!({"io.modelcontextprotocol/clientCapabilities": {}}),
        json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28"}),
    ] {
        let body =
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": meta}});
        let (status, code, message) =
            stateless_error(&http, &writ.mcp_url(), "tools/list", None, body.to_string()).await;
        assert_eq!(
            (status, code),
            (StatusCode::BAD_REQUEST, -32602),
            "{message}"
        );
        assert!(message.contains("`params._meta` must carry"), "{message}");
    }
    // `ping` is gone in 2026-07-28.
    let ping = stateless(&http, &writ.mcp_url(), "ping", None)
        .body(stateless_body("ping", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(ping.status(), StatusCode::NOT_FOUND);
    // The header and `_meta` disagree on the revision.
    let older = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2025-11-25", "io.modelcontextprotocol/clientCapabilities": {}}}});
    let (status, code, message) = stateless_error(
        &http,
        &writ.mcp_url(),
        "tools/list",
        None,
        older.to_string(),
    )
    .await;
    assert_eq!(
        (status, code),
        (StatusCode::BAD_REQUEST, -32020),
        "{message}"
    );
    let unknown = stateless(&http, &writ.mcp_url(), "tools/frob", None)
        .body(stateless_body("tools/frob", json!({})))
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_of(unknown).await;
    assert_eq!((status, code), (StatusCode::NOT_FOUND, -32601));
    let get = http
        .get(writ.mcp_url())
        .header("mcp-protocol-version", "2026-07-28")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(upstream.tool_calls(), 0);
}

#[tokio::test]
async fn readiness_follows_the_upstreams_and_shutdown_drains_calls() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let config = Config::parse(&format!("[gateway]\nlisten = \"127.0.0.1:0\"\nauth = \"off\"\n[[servers]]\nname = \"down\"\ntransport = \"http\"\nurl = \"http://{closed}/mcp\"\n")).unwrap();
    let down = Running::start(&config).await.unwrap();
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(format!("http://{}/healthz", down.local_addr()))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let readyz = http
        .get(format!("http://{}/readyz", down.local_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        readyz.json::<Value>().await.unwrap()["servers"]["down"],
        false
    );
    down.shutdown(Duration::from_secs(1)).await;

    let writ = start(&stdio_server_toml("py")).await;
    assert_eq!(
        http.get(format!("http://{}/readyz", writ.local_addr()))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let agent = Arc::new(Agent::connect(&writ.mcp_url(), "2025-11-25").await);
    let caller = agent.clone();
    let slow = tokio::spawn(async move { caller.tool("py.sleep", json!({"ms": 500})).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    writ.shutdown(Duration::from_secs(5)).await;
    let answer = slow.await.unwrap();
    assert_eq!(answer["result"]["content"][0]["text"], "slept", "{answer}");
}
