//! The token service over real sockets: Writ on port 0 with a real SQLite store in a
//! temporary folder, in front of Writ's kit server with `notes.read`, `notes.write` and
//! `ops.run`. Every bad input the token issue names has its own test, with the OAuth error
//! it must produce. OIDC keys are served by a real HTTP server; SPIFFE bundles are files.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test helpers fail the test loudly on unexpected input"
)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use writ_agent::client::{self, TaskRequest};
use writ_agent::key::{self as agent_key, AgentKey};
use writ_core::clock::{Clock, ManualClock};
use writ_core::config::{Config, SigningAlgorithm};
use writ_gateway::Running;
use writ_gateway::token::{keys, now};
use writ_mcp::server::{Tool, ToolServer, text_result};
use writ_store::{
    Agent, AgentCredential, AgentStore, SigningKeyStore, SqliteStore, Store, TaskStore,
};

const ACCEPT: &str = "application/json, text/event-stream";
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";
const ACCESS_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "writ-tokens-{name}-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn kit_server() -> String {
    let tool = |name: &'static str| {
        Tool::new(
            name,
            "A kit tool.",
            json!({"type": "object"}),
            json!({}),
            move |_| Ok(text_result(format!("{name} ran"))),
        )
    };
    let notes = ToolServer::new("notes", vec![tool("read"), tool("write")]);
    let ops = ToolServer::new("ops", vec![tool("run")]);
    let (notes_addr, _) = notes.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (ops_addr, _) = ops.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    format!(
        "[[servers]]\nname = \"notes\"\ntransport = \"http\"\nurl = \"http://{notes_addr}/mcp\"\n\
         [[servers]]\nname = \"ops\"\ntransport = \"http\"\nurl = \"http://{ops_addr}/mcp\"\n"
    )
}

/// A running Writ with agents `alice` (team research) and `bob` (team ops), each with a key.
struct Fixture {
    running: Running,
    base: String,
    mcp: String,
    store: Arc<SqliteStore>,
    alice: AgentKey,
    bob: AgentKey,
    alice_public_pem: String,
    http: reqwest::Client,
    dir: PathBuf,
}

/// Who may begin which tasks and delegate to whom. These tests are about the token
/// service, so every discovery and call inside a task is allowed.
const POLICIES: &str = r#"
@id("alice-tasks")
@reason("alice works on the notes and runs ops")
permit (principal == Writ::Agent::"alice", action == Writ::Action::"begin_task", resource)
when { ["notes.*", "notes.read", "notes.write", "ops.run"].containsAll(context.task.tools) };

@id("ops-tasks")
permit (principal in Writ::Team::"ops", action == Writ::Action::"begin_task", resource)
when { ["notes.read", "ops.*", "ops.run"].containsAll(context.task.tools) };

@id("anyone-reads-notes")
permit (principal, action == Writ::Action::"begin_task", resource)
when { ["notes.read"].containsAll(context.task.tools) };

@id("alice-delegates-to-bob")
permit (principal == Writ::Agent::"alice", action == Writ::Action::"delegate", resource == Writ::Agent::"bob");

@id("ops-delegates-to-alice")
permit (principal in Writ::Team::"ops", action == Writ::Action::"delegate", resource == Writ::Agent::"alice");

@id("calls-in-tasks")
permit (principal, action in [Writ::Action::"discover", Writ::Action::"call"], resource);
"#;

async fn register(store: &dyn Store, name: &str, team: &str) -> (AgentKey, String) {
    let id = agent_key::new_agent_id();
    let (key, pem) = AgentKey::generate(&id, SigningAlgorithm::EdDSA).unwrap();
    store
        .create_agent(&Agent {
            id,
            name: name.into(),
            team: Some(team.into()),
            owner: None,
            credential: AgentCredential::PublicKey {
                algorithm: "EdDSA".into(),
                pem: pem.clone(),
            },
            disabled: false,
            created_at: now(),
        })
        .await
        .unwrap();
    (key, pem)
}

impl Fixture {
    async fn start(extra: &str) -> Self {
        Self::launch(extra, None).await
    }

    /// [`Fixture::start`] with the gateway on `clock` rather than the machine's clock.
    async fn start_with_clock(extra: &str, clock: Arc<ManualClock>) -> Self {
        Self::launch(extra, Some(clock)).await
    }

    async fn launch(extra: &str, clock: Option<Arc<ManualClock>>) -> Self {
        let dir = temp_dir("fx");
        let store_path = dir.join("writ.db");
        let store = Arc::new(SqliteStore::open(&store_path).await.unwrap());
        let (alice, alice_public_pem) = register(store.as_ref(), "alice", "research").await;
        let (bob, _) = register(store.as_ref(), "bob", "ops").await;
        let policies = dir.join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        std::fs::write(policies.join("tasks.cedar"), POLICIES).unwrap();
        let config = Config::parse(&format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\ncall_timeout = \"5s\"\n[store]\npath = \"{}\"\n[policy]\ndir = \"{}\"\n{extra}\n{}",
            store_path.display(),
            policies.display(),
            kit_server().await
        ))
        .unwrap();
        let running = match clock {
            None => Running::start(&config).await.unwrap(),
            Some(clock) => Running::start_with(&config, store.clone(), clock)
                .await
                .unwrap(),
        };
        assert!(running.wait_ready(Duration::from_secs(10)).await);
        let base = format!("http://{}", running.local_addr());
        Self {
            mcp: format!("{base}/mcp"),
            base,
            running,
            store,
            alice,
            bob,
            alice_public_pem,
            http: reqwest::Client::new(),
            dir,
        }
    }

    fn task(&self, tools: &[&str]) -> TaskRequest {
        TaskRequest {
            purpose: "test the token service".into(),
            tools: tools.iter().map(|t| (*t).to_owned()).collect(),
            ..TaskRequest::default()
        }
    }

    async fn begin(&self, key: &AgentKey, request: &TaskRequest) -> Result<client::Begun, String> {
        client::begin_task(&self.http, &self.base, key, request).await
    }

    /// A raw token request with these form fields added to a valid exchange for alice.
    async fn token_request(
        &self,
        fields: &[(&str, String)],
        dpop: Option<String>,
    ) -> (StatusCode, Value) {
        let mut form: Vec<(String, String)> = vec![
            ("grant_type".into(), TOKEN_EXCHANGE.into()),
            ("subject_token_type".into(), JWT_TYPE.into()),
            ("resource".into(), self.mcp.clone()),
            (
                "authorization_details".into(),
                json!([{ "type": "mcp_task", "purpose": "p", "tools": ["notes.read"] }])
                    .to_string(),
            ),
        ];
        for (key, value) in fields {
            form.retain(|(k, _)| k != key);
            form.push(((*key).to_owned(), value.clone()));
        }
        let mut request = self
            .http
            .post(format!("{}/oauth/token", self.base))
            .form(&form);
        if let Some(proof) = dpop {
            request = request.header("dpop", proof);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    fn assertion(&self) -> String {
        self.alice.assertion(&self.base, 60).unwrap()
    }

    /// A tools/call through Writ with `authorization` (and a DPoP proof when given).
    async fn call(
        &self,
        authorization: &str,
        dpop: Option<String>,
        tool: &str,
    ) -> reqwest::Response {
        let mut request = self
            .http
            .post(&self.mcp)
            .header("content-type", "application/json")
            .header("accept", ACCEPT)
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", tool)
            .header("authorization", authorization);
        if let Some(proof) = dpop {
            request = request.header("dpop", proof);
        }
        request
            .body(
                json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
                    "name": tool, "arguments": {},
                    "_meta": { "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                               "io.modelcontextprotocol/clientCapabilities": {} } } })
                .to_string(),
            )
            .send()
            .await
            .unwrap()
    }

    async fn list_tools(&self, authorization: &str) -> Vec<String> {
        let response = self
            .http
            .post(&self.mcp)
            .header("content-type", "application/json")
            .header("accept", ACCEPT)
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/list")
            .header("authorization", authorization)
            .body(
                json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {
                    "_meta": { "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                               "io.modelcontextprotocol/clientCapabilities": {} } } })
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.unwrap();
        body["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Writ's own current signing key, read from the store (to forge writs that are
    /// correctly signed but wrong in another way).
    async fn writ_signing_key(&self) -> (String, EncodingKey) {
        let key = self.store.signing_keys().await.unwrap().remove(0);
        (
            key.kid,
            EncodingKey::from_ed_pem(key.private_pem.as_bytes()).unwrap(),
        )
    }

    async fn stop(self) {
        self.running.shutdown(Duration::from_secs(2)).await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn claims_of(jwt: &str) -> Value {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn header_of(jwt: &str) -> Value {
    let part = jwt.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn www_authenticate(response: &reqwest::Response) -> String {
    response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join(" | ")
}

fn assert_oauth_error(answer: &(StatusCode, Value), error: &str, says: &str) {
    assert_eq!(answer.1["error"], error, "{answer:?}");
    assert_eq!(answer.0, StatusCode::BAD_REQUEST, "{answer:?}");
    let description = answer.1["error_description"].as_str().unwrap();
    assert!(description.contains(says), "{description}");
}

#[tokio::test]
async fn a_task_writ_is_an_rfc_9068_token_that_opens_only_its_tools() {
    let fx = Fixture::start("").await;
    let begun = fx
        .begin(&fx.alice, &fx.task(&["notes.read"]))
        .await
        .unwrap();
    assert_eq!(begun.token_type, "Bearer");
    assert_eq!(begun.expires_in, 300, "default ttl is 5 minutes");
    assert_eq!(begun.body["issued_token_type"], ACCESS_TYPE);
    let header = header_of(&begun.access_token);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "EdDSA");
    let claims = claims_of(&begun.access_token);
    assert_eq!(claims["iss"], fx.base);
    assert_eq!(claims["aud"], fx.mcp);
    assert_eq!(claims["sub"], fx.alice.agent_id);
    assert_eq!(claims["client_id"], fx.alice.agent_id);
    assert_eq!(claims["task"], begun.task.as_str());
    assert_eq!(
        claims["authorization_details"][0]["tools"],
        json!(["notes.read"])
    );
    assert!(claims["jti"].is_string() && claims["iat"].is_i64() && claims.get("cnf").is_none());
    let jwks: Value = fx
        .http
        .get(format!("{}/.well-known/jwks.json", fx.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == header["kid"])
    );

    let auth = bearer(&begun.access_token);
    assert_eq!(fx.list_tools(&auth).await, vec!["notes.read"]);
    let inside = fx.call(&auth, None, "notes.read").await;
    assert_eq!(inside.status(), StatusCode::OK);
    let outside = fx.call(&auth, None, "notes.write").await;
    assert_eq!(outside.status(), StatusCode::FORBIDDEN);
    assert!(
        www_authenticate(&outside).contains("error=\"insufficient_scope\""),
        "{}",
        www_authenticate(&outside)
    );
    let body: Value = outside.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("outside task"),
        "{body}"
    );
    fx.stop().await;
}

#[tokio::test]
async fn mcp_without_a_writ_answers_401_with_the_resource_metadata() {
    let fx = Fixture::start("").await;
    let response = fx
        .http
        .post(&fx.mcp)
        .header("content-type", "application/json")
        .header("accept", ACCEPT)
        .body(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let challenge = www_authenticate(&response);
    let metadata_url = format!("{}/.well-known/oauth-protected-resource/mcp", fx.base);
    assert!(
        challenge.starts_with(&format!("Bearer resource_metadata=\"{metadata_url}\"")),
        "{challenge}"
    );
    assert!(challenge.contains("DPoP algs="), "{challenge}");
    let resource: Value = fx
        .http
        .get(&metadata_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resource["resource"], fx.mcp);
    assert_eq!(resource["authorization_servers"], json!([fx.base]));
    let server: Value = fx
        .http
        .get(format!(
            "{}/.well-known/oauth-authorization-server",
            fx.base
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(server["issuer"], fx.base);
    assert_eq!(server["token_endpoint"], format!("{}/oauth/token", fx.base));
    assert_eq!(server["grant_types_supported"], json!([TOKEN_EXCHANGE]));
    assert_eq!(
        server["authorization_details_types_supported"],
        json!(["mcp_task"])
    );
    assert!(
        server["dpop_signing_alg_values_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("EdDSA"))
    );
    let garbage = fx.call("Bearer not-a-jwt", None, "notes.read").await;
    assert_eq!(garbage.status(), StatusCode::UNAUTHORIZED);
    assert!(www_authenticate(&garbage).contains("error=\"invalid_token\""));
    fx.stop().await;
}

#[tokio::test]
async fn alg_none_is_refused() {
    let fx = Fixture::start("").await;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(
        json!({"iss": fx.alice.agent_id, "sub": fx.alice.agent_id, "aud": fx.base, "exp": now() + 60, "jti": "x"})
            .to_string(),
    );
    let unsigned = format!("{header}.{claims}.");
    let answer = fx
        .token_request(&[("subject_token", unsigned.clone())], None)
        .await;
    assert_oauth_error(&answer, "invalid_grant", "`alg: none`");
    // The same on /mcp, as a writ.
    let response = fx.call(&bearer(&unsigned), None, "notes.read").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    fx.stop().await;
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let fx = Fixture::start("").await;
    let claims = json!({"iss": fx.alice.agent_id, "sub": fx.alice.agent_id, "aud": fx.base, "exp": now() + 60, "jti": "confused"});
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(fx.alice_public_pem.as_bytes()),
    )
    .unwrap();
    let answer = fx.token_request(&[("subject_token", forged)], None).await;
    assert_oauth_error(&answer, "invalid_grant", "registered with `EdDSA`");
    fx.stop().await;
}

#[tokio::test]
async fn a_writ_signed_with_an_unknown_kid_is_refused() {
    let fx = Fixture::start("").await;
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some("at+jwt".into());
    header.kid = Some("not-a-writ-key".into());
    let (_, writ_key) = fx.writ_signing_key().await;
    let token = jsonwebtoken::encode(
        &header,
        &json!({"iss": fx.base, "aud": fx.mcp, "sub": "a", "exp": now() + 60}),
        &writ_key,
    )
    .unwrap();
    let response = fx.call(&bearer(&token), None, "notes.read").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        www_authenticate(&response).contains("is not one of Writ"),
        "{}",
        www_authenticate(&response)
    );
    fx.stop().await;
}

#[tokio::test]
async fn an_assertion_with_the_wrong_issuer_is_refused() {
    let fx = Fixture::start("").await;
    // Signed by alice's key but claiming to come from bob, and the other way round.
    let claims = json!({"iss": fx.bob.agent_id, "sub": fx.alice.agent_id, "aud": fx.base, "exp": now() + 60, "jti": "w1"});
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::EdDSA),
        &claims,
        &alice_encoding(&fx),
    )
    .unwrap();
    let answer = fx.token_request(&[("subject_token", token)], None).await;
    assert_oauth_error(&answer, "invalid_grant", "the assertion was refused");
    let claims = json!({"iss": "https://unknown.example", "sub": fx.alice.agent_id, "aud": fx.base, "exp": now() + 60, "jti": "w2"});
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::EdDSA),
        &claims,
        &alice_encoding(&fx),
    )
    .unwrap();
    let answer = fx.token_request(&[("subject_token", token)], None).await;
    assert_oauth_error(
        &answer,
        "invalid_grant",
        "neither a registered agent nor a trusted identity provider",
    );
    fx.stop().await;
}

/// Alice's private key, for hand-made assertions.
fn alice_encoding(fx: &Fixture) -> EncodingKey {
    let path = fx
        .dir
        .join(format!("alice-{}.key", uuid::Uuid::new_v4().simple()));
    fx.alice.write(&path).unwrap();
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    EncodingKey::from_ed_pem(file["private_key"].as_str().unwrap().as_bytes()).unwrap()
}

#[tokio::test]
async fn a_writ_for_another_resource_is_refused_confused_deputy() {
    let fx = Fixture::start("").await;
    let answer = fx
        .token_request(
            &[
                ("subject_token", fx.assertion()),
                ("resource", "https://other.example/mcp".into()),
            ],
            None,
        )
        .await;
    assert_oauth_error(&answer, "invalid_target", "must be Writ's MCP endpoint");
    // A writ correctly signed by Writ, but for another audience, does not open /mcp.
    let begun = fx
        .begin(&fx.alice, &fx.task(&["notes.read"]))
        .await
        .unwrap();
    let mut claims = claims_of(&begun.access_token);
    claims["aud"] = json!("https://other.example/mcp");
    let (kid, key) = fx.writ_signing_key().await;
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some("at+jwt".into());
    header.kid = Some(kid);
    let forged = jsonwebtoken::encode(&header, &claims, &key).unwrap();
    let response = fx.call(&bearer(&forged), None, "notes.read").await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        www_authenticate(&response).contains("another audience"),
        "{}",
        www_authenticate(&response)
    );
    fx.stop().await;
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused() {
    let fx = Fixture::start("").await;
    let assertion = |exp: i64, nbf: Option<i64>, jti: &str| {
        let mut claims = json!({"iss": fx.alice.agent_id, "sub": fx.alice.agent_id, "aud": fx.base, "iat": now() - 10, "exp": exp, "jti": jti});
        if let Some(nbf) = nbf {
            claims["nbf"] = json!(nbf);
        }
        jsonwebtoken::encode(
            &Header::new(Algorithm::EdDSA),
            &claims,
            &alice_encoding(&fx),
        )
        .unwrap()
    };
    let expired = fx
        .token_request(
            &[("subject_token", assertion(now() - 120, None, "e1"))],
            None,
        )
        .await;
    assert_oauth_error(&expired, "invalid_grant", "expired");
    let early = fx
        .token_request(
            &[(
                "subject_token",
                assertion(now() + 60, Some(now() + 600), "e2"),
            )],
            None,
        )
        .await;
    assert_oauth_error(&early, "invalid_grant", "not valid yet");
    // Writs too: an expired one and a not-yet-valid one, both signed by Writ.
    let begun = fx
        .begin(&fx.alice, &fx.task(&["notes.read"]))
        .await
        .unwrap();
    let (kid, key) = fx.writ_signing_key().await;
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some("at+jwt".into());
    header.kid = Some(kid);
    for (patch, says) in [
        (json!({"exp": now() - 120}), "expired"),
        (json!({"nbf": now() + 600}), "not valid yet"),
    ] {
        let mut claims = claims_of(&begun.access_token);
        for (k, v) in patch.as_object().unwrap() {
            claims[k] = v.clone();
        }
        let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        let response = fx.call(&bearer(&token), None, "notes.read").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(
            www_authenticate(&response).contains(says),
            "{}",
            www_authenticate(&response)
        );
    }
    fx.stop().await;
}

/// Time is the gateway's clock, not the machine's: moved past a task's expiry, the next
/// request is refused at once; a writ carrying `nbf` opens when the clock reaches it;
/// moved past the writ's own `exp` and the allowed skew, the writ is refused. No sleeps.
#[tokio::test]
async fn moving_the_clock_ends_tasks_and_writs_without_waiting() {
    let clock = Arc::new(ManualClock::starting_now());
    let fx = Fixture::start_with_clock("[tokens]\nclock_skew = \"30s\"", clock.clone()).await;
    let skew = 30;
    let t0 = clock.now();
    let mut short = fx.task(&["notes.read"]);
    short.ttl = Some(30);
    let begun = fx.begin(&fx.alice, &short).await.unwrap();
    assert_eq!(claims_of(&begun.access_token)["iat"], t0);
    assert_eq!(claims_of(&begun.access_token)["exp"], t0 + 30);
    let auth = bearer(&begun.access_token);
    // A writ not valid until 80 s from now, for a task that lives longer.
    let long = fx
        .begin(&fx.alice, &fx.task(&["notes.read"]))
        .await
        .unwrap();
    let (kid, key) = fx.writ_signing_key().await;
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some("at+jwt".into());
    header.kid = Some(kid);
    let mut claims = claims_of(&long.access_token);
    claims["nbf"] = json!(t0 + 2 * skew + 20);
    let early = bearer(&jsonwebtoken::encode(&header, &claims, &key).unwrap());
    let says = |response: &reqwest::Response, what: &str| {
        let challenge = www_authenticate(response);
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{challenge}");
        assert!(challenge.contains(what), "{challenge}");
    };

    assert_eq!(
        fx.call(&auth, None, "notes.read").await.status(),
        StatusCode::OK
    );
    says(&fx.call(&early, None, "notes.read").await, "not valid yet");

    // A second before the task's end it still works; at its end it is expired, though
    // its writ is still within the skew.
    clock.advance(Duration::from_secs(29));
    assert_eq!(
        fx.call(&auth, None, "notes.read").await.status(),
        StatusCode::OK
    );
    clock.advance(Duration::from_secs(1));
    let expired = fx.call(&auth, None, "notes.read").await;
    says(&expired, "is expired");
    let body: Value = expired.json().await.unwrap();
    assert_eq!(body["error"]["code"], -31010, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is expired"),
        "{body}"
    );
    // `nbf` (t0 + 80) is still more than the skew ahead of t0 + 30.
    says(&fx.call(&early, None, "notes.read").await, "not valid yet");

    // At t0 + 60 the `nbf` is within the skew: the early writ opens. The short writ's
    // `exp` (t0 + 30) is now the whole skew behind: the writ itself is refused.
    clock.advance(Duration::from_secs(30));
    assert_eq!(
        fx.call(&early, None, "notes.read").await.status(),
        StatusCode::OK
    );
    says(
        &fx.call(&auth, None, "notes.read").await,
        "the writ has expired",
    );
    fx.stop().await;
}

#[tokio::test]
async fn a_replayed_assertion_is_refused() {
    let fx = Fixture::start("").await;
    let assertion = fx.assertion();
    let first = fx
        .token_request(&[("subject_token", assertion.clone())], None)
        .await;
    assert_eq!(first.0, StatusCode::OK, "{first:?}");
    let again = fx
        .token_request(&[("subject_token", assertion)], None)
        .await;
    assert_oauth_error(&again, "invalid_grant", "`jti` replay");
    fx.stop().await;
}

/// An assertion is single-use whatever became of its request: one refused by policy
/// cannot be replayed into a task that policy allows.
#[tokio::test]
async fn a_refused_assertion_is_spent_all_the_same() {
    let fx = Fixture::start("").await;
    let assertion = fx.assertion();
    let wider = json!([{ "type": "mcp_task", "purpose": "p", "tools": ["ops.*"] }]).to_string();
    let refused = fx
        .token_request(
            &[
                ("subject_token", assertion.clone()),
                ("authorization_details", wider),
            ],
            None,
        )
        .await;
    assert_oauth_error(&refused, "invalid_authorization_details", "policy refuses");
    let again = fx
        .token_request(&[("subject_token", assertion)], None)
        .await;
    assert_oauth_error(&again, "invalid_grant", "`jti` replay");
    fx.stop().await;
}

/// Exchanges arriving together share one store transaction, and each is still its own:
/// of the same assertion sent many times at once exactly one begins a task, and every
/// distinct one does.
#[tokio::test]
async fn concurrent_exchanges_begin_one_task_per_assertion() {
    let owned = Fixture::start("").await;
    let fx = &owned;
    let assertion = fx.assertion();
    let same = futures_util::future::join_all((0..8).map(|_| {
        let assertion = assertion.clone();
        async move {
            fx.token_request(&[("subject_token", assertion)], None)
                .await
        }
    }))
    .await;
    let begun: Vec<&(StatusCode, Value)> = same.iter().filter(|a| a.0 == StatusCode::OK).collect();
    assert_eq!(begun.len(), 1, "{same:?}");
    for answer in same.iter().filter(|a| a.0 != StatusCode::OK) {
        assert_oauth_error(answer, "invalid_grant", "`jti` replay");
    }
    let distinct = futures_util::future::join_all((0..16).map(|_| async move {
        let assertion = fx.assertion();
        fx.token_request(&[("subject_token", assertion)], None)
            .await
    }))
    .await;
    let mut tasks: Vec<String> = distinct
        .iter()
        .map(|a| {
            assert_eq!(a.0, StatusCode::OK, "{a:?}");
            a.1["task"].as_str().unwrap().to_owned()
        })
        .collect();
    tasks.sort();
    tasks.dedup();
    assert_eq!(tasks.len(), 16);
    for task in &tasks {
        let stored = fx.store.task(task).await.unwrap().unwrap();
        assert_eq!(stored.agent_id, fx.alice.agent_id);
        let writ = distinct
            .iter()
            .find(|a| a.1["task"] == task.as_str())
            .unwrap()
            .1["access_token"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            fx.call(&bearer(&writ), None, "notes.read").await.status(),
            StatusCode::OK
        );
    }
    owned.stop().await;
}

async fn dpop_writ(fx: &Fixture) -> client::Begun {
    let mut request = fx.task(&["notes.read"]);
    request.dpop = true;
    let begun = fx.begin(&fx.alice, &request).await.unwrap();
    assert_eq!(begun.token_type, "DPoP");
    assert_eq!(
        claims_of(&begun.access_token)["cnf"]["jkt"],
        fx.alice.thumbprint()
    );
    begun
}

#[tokio::test]
async fn dpop_bound_writs_need_a_fresh_proof_for_this_request() {
    let fx = Fixture::start("").await;
    let begun = dpop_writ(&fx).await;
    let token = begun.access_token.as_str();
    let auth = format!("DPoP {token}");
    let proof = fx
        .alice
        .dpop_proof("POST", &fx.mcp, Some(token), None)
        .unwrap();
    assert_eq!(
        fx.call(&auth, Some(proof.clone()), "notes.read")
            .await
            .status(),
        StatusCode::OK
    );
    let cases = [
        (Some(proof), "used before"),
        (
            Some(
                fx.alice
                    .dpop_proof("GET", &fx.mcp, Some(token), None)
                    .unwrap(),
            ),
            "`htm`",
        ),
        (
            Some(
                fx.alice
                    .dpop_proof("POST", &format!("{}/other", fx.base), Some(token), None)
                    .unwrap(),
            ),
            "`htu`",
        ),
        (
            Some(
                fx.alice
                    .dpop_proof("POST", &fx.mcp, Some("another token"), None)
                    .unwrap(),
            ),
            "`ath`",
        ),
        (
            Some(
                fx.bob
                    .dpop_proof("POST", &fx.mcp, Some(token), None)
                    .unwrap(),
            ),
            "other than the one the writ is bound to",
        ),
        (None, "needs a `DPoP` proof"),
    ];
    for (proof, says) in cases {
        let response = fx.call(&auth, proof, "notes.read").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{says}");
        let challenge = www_authenticate(&response);
        assert!(
            challenge.contains("invalid_dpop_proof") && challenge.contains(says),
            "{says}: {challenge}"
        );
    }
    let as_bearer = fx.call(&bearer(token), None, "notes.read").await;
    assert_eq!(as_bearer.status(), StatusCode::UNAUTHORIZED);
    assert!(www_authenticate(&as_bearer).contains("DPoP-bound"));
    fx.stop().await;
}

#[tokio::test]
async fn a_token_request_with_a_bad_dpop_proof_is_refused() {
    let fx = Fixture::start("").await;
    let endpoint = format!("{}/oauth/token", fx.base);
    let wrong_htu = fx.alice.dpop_proof("POST", &fx.mcp, None, None).unwrap();
    let answer = fx
        .token_request(&[("subject_token", fx.assertion())], Some(wrong_htu))
        .await;
    assert_oauth_error(&answer, "invalid_dpop_proof", "`htu`");
    let proof = fx.alice.dpop_proof("POST", &endpoint, None, None).unwrap();
    let ok = fx
        .token_request(&[("subject_token", fx.assertion())], Some(proof.clone()))
        .await;
    assert_eq!(ok.0, StatusCode::OK, "{ok:?}");
    let replay = fx
        .token_request(&[("subject_token", fx.assertion())], Some(proof))
        .await;
    assert_oauth_error(&replay, "invalid_dpop_proof", "used before");
    fx.stop().await;
}

#[tokio::test]
async fn server_nonces_and_required_dpop() {
    let fx = Fixture::start("[tokens]\ndpop = \"required\"\ndpop_nonce = true\n").await;
    let bearer_request = fx
        .token_request(&[("subject_token", fx.assertion())], None)
        .await;
    assert_oauth_error(
        &bearer_request,
        "invalid_dpop_proof",
        "only DPoP-bound writs",
    );
    let endpoint = format!("{}/oauth/token", fx.base);
    let no_nonce = fx.alice.dpop_proof("POST", &endpoint, None, None).unwrap();
    let answer = fx
        .token_request(&[("subject_token", fx.assertion())], Some(no_nonce))
        .await;
    assert_oauth_error(&answer, "use_dpop_nonce", "nonce");
    // The client retries with the nonce Writ sent; the writ works on /mcp with a nonce too.
    let begun = dpop_writ(&fx).await;
    let token = &begun.access_token;
    let response = fx
        .call(
            &format!("DPoP {token}"),
            Some(
                fx.alice
                    .dpop_proof("POST", &fx.mcp, Some(token), None)
                    .unwrap(),
            ),
            "notes.read",
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(www_authenticate(&response).contains("use_dpop_nonce"));
    let nonce = response.headers()["dpop-nonce"]
        .to_str()
        .unwrap()
        .to_owned();
    let response = fx
        .call(
            &format!("DPoP {token}"),
            Some(
                fx.alice
                    .dpop_proof("POST", &fx.mcp, Some(token), Some(&nonce))
                    .unwrap(),
            ),
            "notes.read",
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    fx.stop().await;
}

/// A delegation request: bob acts with alice's writ.
async fn delegate(
    fx: &Fixture,
    parent: &str,
    actor: &AgentKey,
    details: Value,
) -> (StatusCode, Value) {
    fx.token_request(
        &[
            ("subject_token", parent.to_owned()),
            ("subject_token_type", ACCESS_TYPE.into()),
            ("actor_token", actor.assertion(&fx.base, 60).unwrap()),
            ("actor_token_type", JWT_TYPE.into()),
            ("authorization_details", details.to_string()),
        ],
        None,
    )
    .await
}

fn details(tools: &[&str]) -> Value {
    json!([{ "type": "mcp_task", "purpose": "delegated part", "tools": tools }])
}

#[tokio::test]
async fn delegation_narrows_nests_act_and_dies_with_its_parent() {
    let fx = Fixture::start("").await;
    let parent = fx
        .begin(&fx.alice, &fx.task(&["notes.*", "ops.run"]))
        .await
        .unwrap();
    let wider = delegate(&fx, &parent.access_token, &fx.bob, details(&["ops.*"])).await;
    assert_oauth_error(
        &wider,
        "invalid_authorization_details",
        "outside the parent task's tools",
    );
    let child = delegate(&fx, &parent.access_token, &fx.bob, details(&["notes.read"])).await;
    assert_eq!(child.0, StatusCode::OK, "{child:?}");
    let child_token = child.1["access_token"].as_str().unwrap().to_owned();
    let claims = claims_of(&child_token);
    assert_eq!(
        claims["sub"], fx.alice.agent_id,
        "the chain's subject stays alice"
    );
    assert_eq!(claims["client_id"], fx.bob.agent_id);
    assert_eq!(claims["act"], json!({ "sub": fx.bob.agent_id }));
    assert!(
        claims["exp"].as_i64().unwrap() <= claims_of(&parent.access_token)["exp"].as_i64().unwrap()
    );
    // Bob may delegate back to alice (team ops rule): depth 2, nested act.
    let grandchild = delegate(&fx, &child_token, &fx.alice, details(&["notes.read"])).await;
    assert_eq!(grandchild.0, StatusCode::OK, "{grandchild:?}");
    let grandchild_token = grandchild.1["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        claims_of(&grandchild_token)["act"],
        json!({ "sub": fx.alice.agent_id, "act": { "sub": fx.bob.agent_id } })
    );
    let too_deep = delegate(&fx, &grandchild_token, &fx.bob, details(&["notes.read"])).await;
    assert_oauth_error(&too_deep, "invalid_grant", "over the limit of 2");
    assert_eq!(
        fx.call(&bearer(&child_token), None, "notes.read")
            .await
            .status(),
        StatusCode::OK
    );
    // Ending the parent revokes the chain beneath it, on the next request.
    client::end_task(&fx.http, &fx.base, &parent.access_token)
        .await
        .unwrap();
    for token in [&child_token, &grandchild_token] {
        let response = fx.call(&bearer(token), None, "notes.read").await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(
            www_authenticate(&response).contains("is revoked"),
            "{}",
            www_authenticate(&response)
        );
    }
    fx.stop().await;
}

#[tokio::test]
async fn delegation_to_an_agent_not_listed_is_refused() {
    let fx = Fixture::start("").await;
    // Alice may delegate only to bob; bob's team may delegate to alice.
    let parent = fx.begin(&fx.bob, &fx.task(&["ops.run"])).await.unwrap();
    let alice_parent = fx
        .begin(&fx.alice, &fx.task(&["notes.read"]))
        .await
        .unwrap();
    let refused = delegate(
        &fx,
        &alice_parent.access_token,
        &fx.alice,
        details(&["notes.read"]),
    )
    .await;
    assert_oauth_error(
        &refused,
        "invalid_grant",
        "policy refuses `delegate` for alice to alice: denied: no policy permits `delegate` here",
    );
    let allowed = delegate(&fx, &parent.access_token, &fx.alice, details(&["ops.run"])).await;
    assert_eq!(allowed.0, StatusCode::OK, "{allowed:?}");
    fx.stop().await;
}

#[tokio::test]
async fn malformed_details_and_missing_purpose_are_refused() {
    let fx = Fixture::start("").await;
    for (details, says) in [
        ("not json".to_owned(), "not JSON"),
        (
            json!([{ "type": "mcp_task", "tools": ["notes.read"] }]).to_string(),
            "`purpose` is required",
        ),
        (
            json!([{ "type": "mcp_task", "purpose": "x", "tools": ["notes"] }]).to_string(),
            "tool pattern",
        ),
        (
            json!([{ "type": "mcp_task", "purpose": "x", "tools": ["crm.export"] }]).to_string(),
            "policy refuses `begin_task` for alice: denied: no policy permits `begin_task` here",
        ),
    ] {
        let answer = fx
            .token_request(
                &[
                    ("subject_token", fx.assertion()),
                    ("authorization_details", details),
                ],
                None,
            )
            .await;
        assert_oauth_error(&answer, "invalid_authorization_details", says);
    }
    let missing = fx
        .token_request(&[("subject_token", String::new())], None)
        .await;
    assert_oauth_error(&missing, "invalid_request", "`subject_token` is required");
    let grant = fx
        .token_request(
            &[
                ("subject_token", fx.assertion()),
                ("grant_type", "client_credentials".into()),
            ],
            None,
        )
        .await;
    assert_eq!(grant.1["error"], "unsupported_grant_type");
    fx.stop().await;
}

#[tokio::test]
async fn a_ttl_over_the_maximum_is_clipped_and_budgets_are_enforced() {
    let fx = Fixture::start("[tokens]\nmax_ttl = \"10m\"\n").await;
    let mut request = fx.task(&["notes.read"]);
    request.ttl = Some(24 * 3600);
    request.max_calls = Some(2);
    let begun = fx.begin(&fx.alice, &request).await.unwrap();
    assert_eq!(begun.expires_in, 600);
    let claims = claims_of(&begun.access_token);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        600
    );
    let auth = bearer(&begun.access_token);
    assert_eq!(
        fx.call(&auth, None, "notes.read").await.status(),
        StatusCode::OK
    );
    assert_eq!(
        fx.call(&auth, None, "notes.read").await.status(),
        StatusCode::OK
    );
    // A spent budget refuses the use (403, Writ's own code), not the writ: it is not a
    // dead or invalid token, and the task still lists.
    let third = fx.call(&auth, None, "notes.read").await;
    assert_eq!(third.status(), StatusCode::FORBIDDEN);
    let body: Value = third.json().await.unwrap();
    assert_eq!(body["error"]["code"], -31013, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("used all 2 of its calls"),
        "{body}"
    );
    fx.stop().await;
}

#[tokio::test]
async fn a_disabled_agent_is_refused_and_its_tasks_end() {
    let fx = Fixture::start("").await;
    let begun = fx
        .begin(&fx.alice, &fx.task(&["notes.read"]))
        .await
        .unwrap();
    let auth = bearer(&begun.access_token);
    assert_eq!(
        fx.call(&auth, None, "notes.read").await.status(),
        StatusCode::OK
    );
    // As `writ agent disable` does: straight to the store, seen by the gateway's change feed.
    fx.store
        .disable_agent(&fx.alice.agent_id, now())
        .await
        .unwrap();
    let answer = fx
        .token_request(&[("subject_token", fx.assertion())], None)
        .await;
    assert_oauth_error(&answer, "invalid_grant", "agent `alice` is disabled");
    let mut refused = false;
    for _ in 0..40 {
        if fx.call(&auth, None, "notes.read").await.status() == StatusCode::UNAUTHORIZED {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "the revocation reached the gateway within 2 s");
    fx.stop().await;
}

#[tokio::test]
async fn introspection_needs_authentication_and_shows_only_ones_own_writs() {
    // The admin token must come from the environment; cargo and nextest set
    // `CARGO_PKG_NAME` for every test process, so it stands in for a secret here.
    let admin_token = format!("Bearer {}", env!("CARGO_PKG_NAME"));
    let fx = Fixture::start("[admin]\ntoken = { env = \"CARGO_PKG_NAME\" }\n").await;
    let begun = fx
        .begin(&fx.alice, &fx.task(&["notes.read"]))
        .await
        .unwrap();
    let introspect = |auth: Option<&str>, extra: Vec<(&str, String)>| {
        let mut form = vec![("token", begun.access_token.clone())];
        form.extend(extra);
        let mut request = fx
            .http
            .post(format!("{}/oauth/introspect", fx.base))
            .form(&form);
        if let Some(auth) = auth {
            request = request.header("authorization", auth.to_owned());
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    let anonymous = introspect(None, vec![]).await;
    assert_eq!(anonymous.0, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.1["error"], "invalid_client");
    let admin = introspect(Some(admin_token.as_str()), vec![]).await;
    assert_eq!(admin.1["active"], true, "{admin:?}");
    assert_eq!(admin.1["task"], begun.task.as_str());
    assert_eq!(admin.1["task_state"], "active");
    let as_alice = introspect(
        None,
        vec![
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
            ),
            (
                "client_assertion",
                fx.alice.assertion(&fx.base, 60).unwrap(),
            ),
        ],
    )
    .await;
    assert_eq!(as_alice.1["active"], true, "{as_alice:?}");
    let as_bob = introspect(
        None,
        vec![
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
            ),
            ("client_assertion", fx.bob.assertion(&fx.base, 60).unwrap()),
        ],
    )
    .await;
    assert_eq!(
        as_bob.1,
        json!({ "active": false }),
        "bob may not see alice's writ"
    );
    client::end_task(&fx.http, &fx.base, &begun.access_token)
        .await
        .unwrap();
    let ended = introspect(Some(admin_token.as_str()), vec![]).await;
    assert_eq!(ended.1, json!({ "active": false }));
    fx.stop().await;
}

#[tokio::test]
async fn key_rotation_keeps_earlier_writs_valid() {
    let fx = Fixture::start("").await;
    let before = fx
        .begin(&fx.alice, &fx.task(&["notes.read"]))
        .await
        .unwrap();
    let old_kid = header_of(&before.access_token)["kid"].clone();
    let new = keys::rotate(fx.store.as_ref(), SigningAlgorithm::EdDSA, now())
        .await
        .unwrap();
    let mut after = None;
    for _ in 0..40 {
        let begun = fx
            .begin(&fx.alice, &fx.task(&["notes.read"]))
            .await
            .unwrap();
        if header_of(&begun.access_token)["kid"] == new.kid.as_str() {
            after = Some(begun);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = after.expect("the gateway signs with the new key within 2 s");
    let jwks: Value = fx
        .http
        .get(format!("{}/.well-known/jwks.json", fx.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&Value> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["kid"])
        .collect();
    assert!(
        kids.contains(&&old_kid) && kids.contains(&&json!(new.kid)),
        "{jwks}"
    );
    for writ in [&before, &after] {
        assert_eq!(
            fx.call(&bearer(&writ.access_token), None, "notes.read")
                .await
                .status(),
            StatusCode::OK
        );
    }
    fx.stop().await;
}

/// An ES256 key pair for an outside issuer: its signing key and its public JWK.
fn issuer_key(kid: &str) -> (EncodingKey, Value) {
    use p256::pkcs8::EncodePrivateKey as _;
    let pem = p256::SecretKey::random(&mut rand_core::OsRng)
        .to_pkcs8_pem(Default::default())
        .unwrap();
    let key = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
    let mut jwk = serde_json::to_value(
        jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap(),
    )
    .unwrap();
    jwk["kid"] = json!(kid);
    (key, jwk)
}

fn es256(kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

async fn register_external(store: &dyn Store, name: &str, issuer: &str, subject: &str) {
    store
        .create_agent(&Agent {
            id: agent_key::new_agent_id(),
            name: name.into(),
            team: Some("research".into()),
            owner: None,
            credential: AgentCredential::External {
                issuer: issuer.into(),
                subject: subject.into(),
            },
            disabled: false,
            created_at: now(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn oidc_identities_are_verified_against_the_issuers_keys_and_follow_rotation() {
    // The issuer: a real HTTP server publishing a key set that the test can change.
    let published = Arc::new(std::sync::Mutex::new(json!({ "keys": [] })));
    let served = published.clone();
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let set = served.lock().unwrap().clone();
            async move { axum::Json(set) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (k1, jwk1) = issuer_key("k1");
    let (k2, jwk2) = issuer_key("k2");
    *published.lock().unwrap() = json!({ "keys": [jwk1.clone()] });

    let fx = Fixture::start(&format!(
        "[[identity.oidc]]\nissuer = \"{issuer}\"\njwks_url = \"{issuer}/jwks\"\naudience = \"writ-test\"\nagent_claim = \"azp\"\n\
"
    ))
    .await;
    register_external(fx.store.as_ref(), "ci-bot", &issuer, "ci-pipeline").await;
    let token = |kid: &str, key: &EncodingKey, azp: &str, aud: &str| {
        es256(
            kid,
            key,
            &json!({ "iss": issuer, "aud": aud, "azp": azp, "sub": "x", "exp": now() + 120 }),
        )
    };
    let ok = fx
        .token_request(
            &[(
                "subject_token",
                token("k1", &k1, "ci-pipeline", "writ-test"),
            )],
            None,
        )
        .await;
    assert_eq!(ok.0, StatusCode::OK, "{ok:?}");
    let wrong_aud = fx
        .token_request(
            &[(
                "subject_token",
                token("k1", &k1, "ci-pipeline", "elsewhere"),
            )],
            None,
        )
        .await;
    assert_oauth_error(&wrong_aud, "invalid_grant", "another audience");
    let unregistered = fx
        .token_request(
            &[(
                "subject_token",
                token("k1", &k1, "someone-else", "writ-test"),
            )],
            None,
        )
        .await;
    assert_oauth_error(&unregistered, "invalid_grant", "not registered as an agent");
    let unknown_kid = fx
        .token_request(
            &[(
                "subject_token",
                token("k9", &k1, "ci-pipeline", "writ-test"),
            )],
            None,
        )
        .await;
    assert_oauth_error(&unknown_kid, "invalid_grant", "no key `k9`");
    // The issuer rotates to k2; after the refetch interval, k2 tokens verify.
    *published.lock().unwrap() = json!({ "keys": [jwk1, jwk2] });
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let rotated = fx
        .token_request(
            &[(
                "subject_token",
                token("k2", &k2, "ci-pipeline", "writ-test"),
            )],
            None,
        )
        .await;
    assert_eq!(rotated.0, StatusCode::OK, "{rotated:?}");
    fx.stop().await;
}

#[tokio::test]
async fn spiffe_jwt_svids_follow_the_jwt_svid_rules() {
    let dir = temp_dir("spiffe");
    let bundle = dir.join("bundle.json");
    let (key, jwk) = issuer_key("spire-1");
    std::fs::write(&bundle, json!({ "keys": [jwk] }).to_string()).unwrap();
    let fx = Fixture::start(&format!(
        "[[identity.spiffe]]\ntrust_domain = \"example.org\"\nbundle = \"{}\"\n\
",
        bundle.display()
    ))
    .await;
    let id = "spiffe://example.org/agents/worker";
    register_external(
        fx.store.as_ref(),
        "worker",
        writ_gateway::token::SPIFFE_ISSUER,
        id,
    )
    .await;
    let svid = |sub: &str, aud: Value| {
        es256(
            "spire-1",
            &key,
            &json!({ "sub": sub, "aud": aud, "exp": now() + 120 }),
        )
    };
    let ok = fx
        .token_request(&[("subject_token", svid(id, json!([fx.base])))], None)
        .await;
    assert_eq!(ok.0, StatusCode::OK, "{ok:?}");
    let two = fx
        .token_request(
            &[("subject_token", svid(id, json!([fx.base, "other"])))],
            None,
        )
        .await;
    assert_oauth_error(&two, "invalid_grant", "exactly one audience");
    let no_aud = fx
        .token_request(
            &[(
                "subject_token",
                es256("spire-1", &key, &json!({ "sub": id, "exp": now() + 120 })),
            )],
            None,
        )
        .await;
    assert_oauth_error(&no_aud, "invalid_grant", "`aud`");
    let foreign = fx
        .token_request(
            &[(
                "subject_token",
                svid("spiffe://evil.org/agents/worker", json!(fx.base)),
            )],
            None,
        )
        .await;
    assert_oauth_error(&foreign, "invalid_grant", "`evil.org` is not trusted");
    let unregistered = fx
        .token_request(
            &[(
                "subject_token",
                svid("spiffe://example.org/agents/other", json!(fx.base)),
            )],
            None,
        )
        .await;
    assert_oauth_error(&unregistered, "invalid_grant", "not registered as an agent");
    // EdDSA is not a JWT-SVID algorithm, even with a key the bundle would hold.
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("spire-1".into());
    let eddsa = jsonwebtoken::encode(
        &header,
        &json!({ "sub": id, "aud": fx.base, "exp": now() + 120 }),
        &alice_encoding(&fx),
    )
    .unwrap();
    let refused = fx.token_request(&[("subject_token", eddsa)], None).await;
    assert_oauth_error(&refused, "invalid_grant", "RS, ES or PS");
    fx.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_agent_may_publish_its_keys_at_a_jwks_url() {
    let (key, jwk) = issuer_key("agent-key-1");
    let app = axum::Router::new().route(
        "/keys",
        axum::routing::get(move || {
            let set = json!({ "keys": [jwk.clone()] });
            async move { axum::Json(set) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let keys_url = format!("http://{}/keys", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let fx = Fixture::start("").await;
    let id = agent_key::new_agent_id();
    fx.store
        .create_agent(&Agent {
            id: id.clone(),
            name: "published".into(),
            team: None,
            owner: None,
            credential: AgentCredential::JwksUrl { url: keys_url },
            disabled: false,
            created_at: now(),
        })
        .await
        .unwrap();
    let assertion = |kid: &str, alg: Algorithm| {
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        let claims = json!({ "iss": id, "sub": id, "aud": fx.base, "iat": now(), "exp": now() + 60, "jti": uuid::Uuid::new_v4().to_string() });
        match alg {
            Algorithm::ES256 => jsonwebtoken::encode(&header, &claims, &key).unwrap(),
            _ => jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(b"k")).unwrap(),
        }
    };
    let ok = fx
        .token_request(
            &[("subject_token", assertion("agent-key-1", Algorithm::ES256))],
            None,
        )
        .await;
    assert_eq!(ok.0, StatusCode::OK, "{ok:?}");
    assert_eq!(
        claims_of(ok.1["access_token"].as_str().unwrap())["client_id"],
        id.as_str()
    );
    let unknown = fx
        .token_request(
            &[("subject_token", assertion("agent-key-2", Algorithm::ES256))],
            None,
        )
        .await;
    assert_oauth_error(&unknown, "invalid_grant", "no key `agent-key-2`");
    let symmetric = fx
        .token_request(
            &[("subject_token", assertion("agent-key-1", Algorithm::HS256))],
            None,
        )
        .await;
    assert_oauth_error(&symmetric, "invalid_grant", "not accepted");
    fx.stop().await;
}
