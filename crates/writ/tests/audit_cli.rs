//! `writ audit` against a store seeded with a realistic story, sealed and checkpointed as
//! a gateway does it: two writers; an agent begins a task and delegates part of it; the
//! delegate makes an allowed call (forwarded, completed), a denied one and a deviation
//! that gets its task revoked; meanwhile the other writer records a failed sign-in and a
//! call that ends in a tool error.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests fail loudly on unexpected output"
)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use writ_audit::{Chain, Checkpoint, Event, Record, kinds, verify_chain};
use writ_store::{Agent, AgentCredential, AgentStore as _, AuditKey, AuditStore as _, SqliteStore};

const WRITER_A: &str = "gw_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const WRITER_B: &str = "gw_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const KEY_A: &str = "ak_a";
const KEY_B: &str = "ak_b";

const LEAD: &str = "agt_11111111111111111111111111111111";
const DELEGATE: &str = "agt_22222222222222222222222222222222";
const STRANGER: &str = "agt_99999999999999999999999999999999";
const ROOT: &str = "tsk_00000000000000000000000000000001";
const CHILD: &str = "tsk_00000000000000000000000000000002";

const CALL_ALLOWED: &str = "c_0000000000000000000000000000a110";
const CALL_DENIED: &str = "c_0000000000000000000000000000de11";
const CALL_DEVIATION: &str = "c_0000000000000000000000000000de71";
const CALL_OF_B: &str = "c_0000000000000000000000000000000b";
const CALL_APPROVAL: &str = "c_00000000000000000000000000000a99";

/// When the story starts (2026-11-18T11:06:40Z); record `n` in commit order is sealed
/// `n` seconds later.
const T0: i64 = 1_795_000_000_000;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn public(key: &SigningKey) -> String {
    URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes())
}

fn writ() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_writ"));
    command.env("WRIT_LOG", "warn");
    command
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A configuration and its store in a directory of their own, seeded with the story.
struct Seeded {
    dir: PathBuf,
    config: String,
    db: PathBuf,
    /// Every record, in commit order.
    records: Vec<Record>,
}

impl Drop for Seeded {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Seeded {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "writ-audit-cli-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join(".writ")).unwrap();
        let config = dir.join("writ.toml");
        std::fs::write(&config, "[gateway]\nlisten = \"127.0.0.1:0\"\n").unwrap();
        let db = dir.join(".writ/writ.db");
        let records = runtime().block_on(seed(&db));
        Seeded {
            config: config.to_str().unwrap().to_owned(),
            dir,
            db,
            records,
        }
    }

    /// Runs `writ audit <args> --config …`.
    fn run(&self, args: &[&str]) -> Output {
        writ()
            .arg("audit")
            .args(args)
            .args(["--config", &self.config])
            .output()
            .unwrap()
    }

    /// Runs it and returns stdout, failing the test if it fails.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "writ audit {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs SQL on the database file behind the store's back. Raw SQL is right here:
    /// `writ audit` runs in another process, and a changed file is what it must detect.
    fn tamper(&self, sql: &str, binds: &[&str]) {
        runtime().block_on(async {
            use sqlx::Connection as _;
            let url = format!("sqlite://{}", self.db.display());
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()));
            for bind in binds {
                query = query.bind(*bind);
            }
            query.execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        });
    }

    fn id(&self, writer: &str, seq: u64) -> String {
        format!("{writer}:{seq}")
    }
}

fn time(n: i64) -> i64 {
    T0 + n * 1_000
}

/// RFC 3339 of the moment record `n` was sealed, plus `ms` (under a second), worked out
/// by hand: T0 is 11:06:40.
fn rfc3339(n: i64, ms: i64) -> String {
    assert!((0..1_000).contains(&ms) && (0..1_000).contains(&n));
    let seconds = 11 * 3_600 + 6 * 60 + 40 + n;
    format!(
        "2026-11-18T{:02}:{:02}:{:02}.{ms:03}Z",
        seconds / 3_600,
        seconds / 60 % 60,
        seconds % 60
    )
}

fn task_fields(event: Event, purpose: &str, category: &str, tools: &[&str]) -> Event {
    event
        .with_field("purpose", purpose)
        .with_field("category", category)
        .with_field("tools", json!(tools))
        .with_field("data_classes", json!(["finance"]))
        .with_field("max_calls", 10)
        .with_field("expires_at", T0 / 1_000 + 3_600)
        .with_field("team", "finance")
}

/// A `call.decided` or `call.deviation` of the delegate's, as the gateway records it:
/// an allowed call names its policies; a refusal says why, with what the agent was
/// answered (policies, reasons, approvers) as `detail`.
fn decided(call: &str, tool: &str, decision: &str) -> Event {
    let kind = if decision == "deviation" {
        kinds::CALL_DEVIATION
    } else {
        kinds::CALL_DECIDED
    };
    Event::new(kind)
        .unwrap()
        .with_actor([DELEGATE, LEAD])
        .with_task(CHILD)
        .with_tool(tool)
        .with_decision(decision)
        .with_field("call", call)
        .with_field("server", tool.split('.').next().unwrap())
        .with_field("proof", "dpop")
        .with_field("arguments_digest", format!("digest-of-{call}"))
        .with_field("arguments", json!({ "title": "Q3", "token": "[redacted]" }))
}

fn sign_in(agent: &str, name: &str, method: &str) -> Event {
    Event::new(kinds::AUTH_SUCCEEDED)
        .unwrap()
        .with_actor([agent])
        .with_field("endpoint", "token")
        .with_field("method", method)
        .with_field("agent_name", name)
        .with_field("as", "client_assertion")
}

/// The story, as `(writer, event)` in commit order.
fn story() -> Vec<(&'static str, Event)> {
    let e = |kind: &str| Event::new(kind).unwrap();
    vec![
        (
            WRITER_A,
            e(kinds::AUDIT_STARTED)
                .with_field("key_id", KEY_A)
                .with_field("public_key", public(&key(1)))
                .with_field("version", "0.1.0"),
        ),
        (
            WRITER_A,
            e(kinds::CONFIG_LOADED)
                .with_field("hash", "c0ffee".repeat(8))
                .with_field("servers", json!(["notes", "billing", "mail", "ops"]))
                .with_field("policy_mode", "enforce")
                .with_field("environment", "production"),
        ),
        (
            WRITER_A,
            e(kinds::POLICY_LOADED)
                .with_field("hash", "beef".repeat(16))
                .with_field("policies", 3)
                .with_field("source", "start"),
        ),
        (
            WRITER_B,
            e(kinds::AUDIT_STARTED)
                .with_field("key_id", KEY_B)
                .with_field("public_key", public(&key(2)))
                .with_field("version", "0.1.0"),
        ),
        (WRITER_A, sign_in(LEAD, "lead", "key")),
        (
            WRITER_A,
            task_fields(
                e(kinds::TASK_BEGUN).with_actor([LEAD]).with_task(ROOT),
                "prepare the quarterly report",
                "reporting",
                &["notes.*", "billing.export", "mail.send", "ops.run"],
            )
            .with_field("depth", 0)
            .with_field("identity", "key")
            .with_field("proof", "bearer")
            .with_field("agent_name", "lead"),
        ),
        (
            WRITER_B,
            e(kinds::AUTH_FAILED)
                .with_field("endpoint", "token")
                .with_field("error", "invalid_grant")
                .with_field("reason", "the assertion's signature does not verify")
                .with_field("claimed", STRANGER),
        ),
        (WRITER_A, sign_in(DELEGATE, "drafter", "spiffe_jwt")),
        (
            WRITER_A,
            task_fields(
                e(kinds::TASK_DELEGATED)
                    .with_actor([DELEGATE, LEAD])
                    .with_task(CHILD),
                "draft the revenue summary",
                "reporting",
                &["notes.read", "notes.write", "billing.export"],
            )
            .with_field("parent", ROOT)
            .with_field("depth", 1)
            .with_field("identity", "spiffe_jwt")
            .with_field("proof", "dpop")
            .with_field("jkt", "jkt-of-the-delegate")
            .with_field("agent_name", "drafter"),
        ),
        (
            WRITER_A,
            e(kinds::TOOLS_DISCOVERED)
                .with_actor([DELEGATE, LEAD])
                .with_task(CHILD)
                .with_field("shown", json!(["notes.read", "notes.write"]))
                .with_field(
                    "hidden",
                    json!([{ "reason": "not in the task", "tools": ["ops.run", "ops.stop"] }]),
                ),
        ),
        (
            WRITER_A,
            decided(CALL_ALLOWED, "notes.write", "allow")
                .with_field("policies", json!(["writers-may-write"])),
        ),
        (
            WRITER_A,
            e(kinds::CALL_FORWARDED)
                .with_task(CHILD)
                .with_tool("notes.write")
                .with_field("call", CALL_ALLOWED)
                .with_field("server", "notes")
                .with_field("upstream_tool", "write_note")
                .with_field("credential", "Authorization from env NOTES_TOKEN"),
        ),
        (
            WRITER_A,
            e(kinds::CALL_COMPLETED)
                .with_task(CHILD)
                .with_tool("notes.write")
                .with_field("call", CALL_ALLOWED)
                .with_field("server", "notes")
                .with_field("status", "ok")
                .with_field("latency_ms", 42.5)
                .with_field("result_digest", "result-digest-1"),
        ),
        (
            WRITER_B,
            e(kinds::CALL_DECIDED)
                .with_actor([LEAD])
                .with_task(ROOT)
                .with_tool("notes.read")
                .with_decision("allow")
                .with_field("call", CALL_OF_B)
                .with_field("server", "notes")
                .with_field("proof", "bearer")
                .with_field("policies", json!(["read-tools-for-everyone"])),
        ),
        (
            WRITER_B,
            e(kinds::CALL_FORWARDED)
                .with_task(ROOT)
                .with_tool("notes.read")
                .with_field("call", CALL_OF_B)
                .with_field("server", "notes")
                .with_field("upstream_tool", "read_note")
                .with_field("credential", Value::Null),
        ),
        (
            WRITER_B,
            e(kinds::CALL_COMPLETED)
                .with_task(ROOT)
                .with_tool("notes.read")
                .with_field("call", CALL_OF_B)
                .with_field("server", "notes")
                .with_field("status", "tool_error")
                .with_field("latency_ms", 7),
        ),
        (
            WRITER_A,
            decided(CALL_DENIED, "billing.export", "deny")
                .with_field(
                    "reason",
                    "call to `billing.export` denied: exports are allowed from 09:00 to 17:00 only",
                )
                .with_field(
                    "detail",
                    json!({
                        "decision": "deny",
                        "tool": "billing.export",
                        "policies": ["forbid-export-outside-hours"],
                        "reasons": [
                            "exports are allowed from 09:00 to 17:00 only",
                            "finance data stays inside the company",
                        ],
                    }),
                ),
        ),
        // A deviation revokes the task first, then its decision is recorded.
        (
            WRITER_A,
            e(kinds::TASK_REVOKED)
                .with_task(CHILD)
                .with_field(
                    "reason",
                    "deviation: `mail.send` is not among the task's tools",
                )
                .with_field("ended", json!([CHILD])),
        ),
        (
            WRITER_A,
            decided(CALL_DEVIATION, "mail.send", "deviation").with_field(
                "reason",
                "`mail.send` is not among the task's tools; this is a deviation from the \
                 task's declared intent, so the task is revoked",
            ),
        ),
        (
            WRITER_B,
            e(kinds::CALL_DECIDED)
                .with_actor([LEAD])
                .with_task(ROOT)
                .with_tool("ops.run")
                .with_decision("approval_required")
                .with_field("call", CALL_APPROVAL)
                .with_field("server", "ops")
                .with_field("proof", "bearer")
                .with_field(
                    "reason",
                    "call to `ops.run` approval required from ops-leads: tools that execute \
                     need an ops lead's approval",
                )
                .with_field(
                    "detail",
                    json!({
                        "decision": "approval_required",
                        "tool": "ops.run",
                        "policies": ["execute-needs-approval"],
                        "reasons": ["tools that execute need an ops lead's approval"],
                        "approvers": ["ops-leads"],
                    }),
                ),
        ),
    ]
}

/// Seals and stores the story one commit at a time, with the writers' keys and
/// checkpoints (A at 5 and at 14, B at 5). Returns the records in commit order.
async fn seed(db: &std::path::Path) -> Vec<Record> {
    let store = SqliteStore::open(db).await.unwrap();
    for (key_id, writer, seed) in [(KEY_A, WRITER_A, 1), (KEY_B, WRITER_B, 2)] {
        store
            .add_audit_key(&AuditKey {
                key_id: key_id.to_owned(),
                writer: writer.to_owned(),
                public_key: public(&key(seed)),
                created_ms: T0,
            })
            .await
            .unwrap();
    }
    store
        .create_agent(&Agent {
            id: LEAD.to_owned(),
            name: "lead".to_owned(),
            team: Some("finance".to_owned()),
            owner: None,
            credential: AgentCredential::PublicKey {
                algorithm: "EdDSA".to_owned(),
                pem: "-----BEGIN PUBLIC KEY-----".to_owned(),
            },
            disabled: false,
            created_at: T0 / 1_000,
        })
        .await
        .unwrap();
    let mut chains = BTreeMap::from([
        (WRITER_A, Chain::new(WRITER_A, None)),
        (WRITER_B, Chain::new(WRITER_B, None)),
    ]);
    let mut records = Vec::new();
    for (n, (writer, event)) in (1..).zip(story()) {
        let chain = chains.get_mut(writer).unwrap();
        let record = chain.seal(event, time(n));
        store
            .append_audit(std::slice::from_ref(&record))
            .await
            .unwrap();
        let (key_id, seed) = if writer == WRITER_A {
            (KEY_A, 1)
        } else {
            (KEY_B, 2)
        };
        if (writer, record.seq) == (WRITER_A, 5)
            || (writer, record.seq) == (WRITER_A, 14)
            || (writer, record.seq) == (WRITER_B, 5)
        {
            let checkpoint = Checkpoint::sign(chain.head(), time(n) + 1, key_id, &key(seed));
            store.add_audit_checkpoint(&checkpoint).await.unwrap();
        }
        records.push(record);
    }
    store.close().await;
    records
}

/// The table rows of `query`/`tail` output: every line but the header.
fn rows(out: &str) -> Vec<&str> {
    let mut lines = out.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.starts_with("TIME"), "{out}");
    for column in ["ID", "KIND", "AGENT", "TASK", "TOOL", "DECISION", "SUMMARY"] {
        assert!(header.contains(column), "{header}");
    }
    lines.collect()
}

/// The record ids of table rows, in order.
fn ids(out: &str) -> Vec<String> {
    rows(out)
        .iter()
        .map(|row| row.split_whitespace().nth(1).unwrap().to_owned())
        .collect()
}

fn id(record: &Record) -> String {
    format!("{}:{}", record.writer, record.seq)
}

// ----- query -----

#[test]
fn query_lists_records_oldest_first_with_full_ids() {
    let seeded = Seeded::new();
    let out = seeded.ok(&["query"]);
    let all: Vec<_> = seeded.records.iter().map(id).collect();
    assert_eq!(ids(&out), all, "every record, in commit order:\n{out}");
    let first = rows(&out)[0];
    assert!(first.starts_with(&rfc3339(1, 0)), "{first}");
    assert!(first.contains("audit.started"), "{first}");
    assert!(first.contains("checkpoint key ak_a"), "{first}");
    assert!(
        rows(&out)[1].contains("servers notes, billing, mail, ops; policy mode enforce (c0ffee"),
        "{out}"
    );
    let discovered = rows(&out)
        .into_iter()
        .find(|row| row.contains("tools.discovered"))
        .unwrap();
    assert!(discovered.contains("2 shown, 2 hidden"), "{discovered}");
    let deny = rows(&out)
        .into_iter()
        .find(|row| row.contains(CALL_DENIED))
        .unwrap();
    for expected in [
        DELEGATE,
        CHILD,
        "billing.export",
        "deny",
        "exports are allowed",
    ] {
        assert!(deny.contains(expected), "{expected}: {deny}");
    }

    // The latest two, still newest last.
    let output = seeded.run(&["query", "--limit", "2"]);
    let out = String::from_utf8(output.stdout).unwrap();
    assert_eq!(ids(&out), all[all.len() - 2..], "{out}");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("showing the latest 2"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn query_filters_by_agent_kind_decision_call_task_and_time() {
    let seeded = Seeded::new();
    let expect = |args: &[&str], expected: Vec<String>| {
        let out = seeded.ok(args);
        assert_eq!(ids(&out), expected, "{args:?}:\n{out}");
    };
    let matching = |keep: &dyn Fn(&Record) -> bool| {
        seeded
            .records
            .iter()
            .filter(|r| keep(r))
            .map(id)
            .collect::<Vec<_>>()
    };
    let call_of = |r: &Record| {
        r.fields
            .get("call")
            .and_then(Value::as_str)
            .map(str::to_owned)
    };

    // An agent acting, or acted for; by id or by its registered name.
    let lead = matching(&|r| r.actor.iter().any(|a| a == LEAD));
    assert_eq!(lead.len(), 9);
    expect(&["query", "--agent", LEAD], lead.clone());
    expect(&["query", "--agent", "lead"], lead);
    expect(
        &["query", "--agent", DELEGATE],
        matching(&|r| r.actor.first().map(String::as_str) == Some(DELEGATE)),
    );

    let calls = matching(&|r| r.kind.starts_with("call."));
    assert_eq!(calls.len(), 9);
    expect(&["query", "--kind", "call.*"], calls);
    expect(
        &["query", "--kind", "task.delegated"],
        vec![seeded.id(WRITER_A, 7)],
    );
    expect(
        &["query", "--decision", "deny"],
        vec![seeded.id(WRITER_A, 12)],
    );
    expect(
        &["query", "--call", CALL_ALLOWED],
        matching(&|r| call_of(r).as_deref() == Some(CALL_ALLOWED)),
    );
    expect(
        &["query", "--task", ROOT, "--kind", "call.*"],
        vec![
            seeded.id(WRITER_B, 3),
            seeded.id(WRITER_B, 4),
            seeded.id(WRITER_B, 5),
            seeded.id(WRITER_B, 6),
        ],
    );
    expect(
        &["query", "--tool", "notes.write"],
        matching(&|r| r.tool.as_deref() == Some("notes.write")),
    );
    // `--since` is inclusive, `--until` exclusive: records 11, 12 and 13 of the story.
    expect(
        &[
            "query",
            "--since",
            &rfc3339(11, 0),
            "--until",
            &rfc3339(14, 0),
        ],
        seeded.records[10..13].iter().map(id).collect(),
    );
    // Relative times: the story is long past, so nothing is within the last hour.
    let recent = seeded.run(&["query", "--since", "1h"]);
    assert!(recent.status.success());
    assert_eq!(rows(&String::from_utf8(recent.stdout).unwrap()).len(), 0);
    assert!(String::from_utf8_lossy(&recent.stderr).contains("no audit record matches"));
    // All of it is within the last 100 years.
    assert_eq!(ids(&seeded.ok(&["query", "--since", "36500d"])).len(), 20);
}

#[test]
fn query_json_is_one_object_per_line_with_position_id_and_record() {
    let seeded = Seeded::new();
    let out = seeded.ok(&["query", "--kind", "call.*", "--json"]);
    let lines: Vec<Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 9);
    let mut last = 0;
    for line in &lines {
        let position = line["position"].as_u64().unwrap();
        assert!(position > last, "commit order: {out}");
        last = position;
        let record: Record = serde_json::from_value(line["record"].clone()).unwrap();
        assert_eq!(line["id"], id(&record));
        assert!(
            seeded.records.contains(&record),
            "stored as sealed: {record:?}"
        );
    }
}

#[test]
fn query_refuses_malformed_input() {
    let seeded = Seeded::new();
    for (args, expected) in [
        (
            vec!["query", "--kind", "Call.Decided"],
            "is not an event kind",
        ),
        (
            vec!["query", "--since", "yesterday"],
            "neither an RFC 3339 time",
        ),
        (
            vec![
                "query",
                "--since",
                "2026-11-20T00:00:00Z",
                "--until",
                "2026-11-19",
            ],
            "`--since` must be before `--until`",
        ),
    ] {
        let output = seeded.run(&args);
        assert!(!output.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

// ----- explain -----

#[test]
fn explain_an_allowed_call_tells_who_why_where_and_how_it_ended() {
    let seeded = Seeded::new();
    let out = seeded.ok(&["explain", CALL_ALLOWED]);
    let delegated = seeded.id(WRITER_A, 7);
    let decided = seeded.id(WRITER_A, 9);
    for expected in [
        format!("call {CALL_ALLOWED} to notes.write: allowed"),
        // Who, and how it proved itself.
        format!("agent {DELEGATE} (drafter, team finance), acting for {LEAD}  [{delegated}]"),
        format!("held a DPoP-bound writ (key thumbprint jkt-of-the-delegate)  [{delegated}]"),
        format!("proved who it is with its SPIFFE identity when the task began  [{delegated}]"),
        format!("presented it as dpop on this call  [{decided}]"),
        format!(
            "signed in with its SPIFFE identity at {}  [{}]",
            rfc3339(8, 0),
            seeded.id(WRITER_A, 6)
        ),
        // The task.
        format!("{CHILD}: \"draft the revenue summary\" (category reporting)"),
        format!(
            "tools notes.read, notes.write, billing.export; data classes finance  [{delegated}]"
        ),
        "budget 10 calls; expires 2026-11-18T12:06:40.000Z".to_owned(),
        // The delegation chain up to the root.
        format!(
            "{CHILD}: delegated to {DELEGATE} from {ROOT}: \"draft the revenue summary\"  [{delegated}]"
        ),
        format!(
            "{ROOT}: begun by {LEAD} (the root): \"prepare the quarterly report\"  [{}]",
            seeded.id(WRITER_A, 5)
        ),
        // The decision.
        format!("allow by policies writers-may-write  [{decided}]"),
        format!("no approval was involved  [{decided}]"),
        format!("arguments digest digest-of-{CALL_ALLOWED}  [{decided}]"),
        "arguments (redacted) {\"title\":\"Q3\",\"token\":\"[redacted]\"}".to_owned(),
        // Where it went and how it came back.
        format!(
            "to server notes as write_note with credential reference Authorization from env \
             NOTES_TOKEN  [{}]",
            seeded.id(WRITER_A, 10)
        ),
        format!(
            "ok in 42.5 ms, result digest result-digest-1  [{}]",
            seeded.id(WRITER_A, 11)
        ),
        // The task was revoked later, by another call's deviation.
        format!(
            "task {CHILD} was revoked at {}: deviation: `mail.send` is not among the task's \
             tools  [{}]",
            rfc3339(18, 0),
            seeded.id(WRITER_A, 13)
        ),
    ] {
        assert!(out.contains(&expected), "missing `{expected}` in:\n{out}");
    }
    // The story is told in order.
    let order: Vec<_> = [
        "\nwho\n",
        "\ntask\n",
        "\ndelegation\n",
        "\ndecision\n",
        "\nforwarding\n",
        "\noutcome\n",
    ]
    .iter()
    .map(|heading| out.find(heading).unwrap())
    .collect();
    assert!(order.is_sorted(), "{out}");
    assert!(
        !out.contains("reason:"),
        "an allowed call records no reason: {out}"
    );

    // A record id of the call explains the same call.
    let by_record = seeded.ok(&["explain", &seeded.id(WRITER_A, 10)]);
    assert_eq!(by_record, out);
}

#[test]
fn explain_a_denied_call_names_the_policies_and_that_it_was_not_forwarded() {
    let seeded = Seeded::new();
    let out = seeded.ok(&["explain", CALL_DENIED]);
    let decided = seeded.id(WRITER_A, 12);
    for expected in [
        format!("call {CALL_DENIED} to billing.export: denied"),
        format!("deny by policies forbid-export-outside-hours  [{decided}]"),
        format!(
            "reason: call to `billing.export` denied: exports are allowed from 09:00 to 17:00 \
             only  [{decided}]"
        ),
        format!("also: finance data stays inside the company  [{decided}]"),
        format!("no approval was involved  [{decided}]"),
        "not forwarded to server billing: the call was denied".to_owned(),
        format!(
            "not run: call to `billing.export` denied: exports are allowed from 09:00 to 17:00 only  [{decided}]"
        ),
    ] {
        assert!(out.contains(&expected), "missing `{expected}` in:\n{out}");
    }
    assert!(!out.contains("credential reference"), "{out}");
    assert_eq!(
        out.matches("exports are allowed").count(),
        2,
        "a reason is said once: {out}"
    );
}

#[test]
fn explain_a_deviation_names_the_revoked_task_and_what_ended_with_it() {
    let seeded = Seeded::new();
    let out = seeded.ok(&["explain", CALL_DEVIATION]);
    let revoked = seeded.id(WRITER_A, 13);
    for expected in [
        format!("call {CALL_DEVIATION} to mail.send: refused as a deviation"),
        format!("deviation by no policy  [{}]", seeded.id(WRITER_A, 14)),
        "not forwarded to server mail: the call was refused as a deviation".to_owned(),
        format!(
            "this call's deviation ended it: task {CHILD} was revoked at {}: deviation: \
             `mail.send` is not among the task's tools  [{revoked}]",
            rfc3339(18, 0)
        ),
        format!("tasks ended with it: {CHILD}  [{revoked}]"),
    ] {
        assert!(out.contains(&expected), "missing `{expected}` in:\n{out}");
    }
}

#[test]
fn explain_a_call_held_for_approval_names_the_approvers() {
    let seeded = Seeded::new();
    let out = seeded.ok(&["explain", CALL_APPROVAL]);
    let decided = seeded.id(WRITER_B, 6);
    for expected in [
        format!("call {CALL_APPROVAL} to ops.run: held for approval"),
        format!(
            "agent {LEAD} (lead, team finance)  [{}]",
            seeded.id(WRITER_A, 5)
        ),
        format!(
            "proved who it is with an assertion signed with its registered key when the task \
             began  [{}]",
            seeded.id(WRITER_A, 5)
        ),
        format!("held a bearer writ  [{}]", seeded.id(WRITER_A, 5)),
        format!(
            "signed in with an assertion signed with its registered key at {}  [{}]",
            rfc3339(5, 0),
            seeded.id(WRITER_A, 4)
        ),
        format!(
            "none: {ROOT} was begun by {LEAD} itself  [{}]",
            seeded.id(WRITER_A, 5)
        ),
        format!("approval_required by policies execute-needs-approval  [{decided}]"),
        format!("approval required from: ops-leads; no approval flow yet  [{decided}]"),
        "not forwarded to server ops: it needs an approval first".to_owned(),
        "the task has not ended in the log".to_owned(),
    ] {
        assert!(out.contains(&expected), "missing `{expected}` in:\n{out}");
    }
}

#[test]
fn explain_json_has_every_part_of_the_story() {
    let seeded = Seeded::new();
    let story: Value =
        serde_json::from_str(&seeded.ok(&["explain", CALL_ALLOWED, "--json"])).unwrap();
    assert_eq!(story["call"], CALL_ALLOWED);
    assert_eq!(
        story["records"],
        json!([
            seeded.id(WRITER_A, 9),
            seeded.id(WRITER_A, 10),
            seeded.id(WRITER_A, 11)
        ])
    );
    assert_eq!(story["agent"]["id"], DELEGATE);
    assert_eq!(story["agent"]["name"], "drafter");
    assert_eq!(story["agent"]["writ"], "dpop");
    assert_eq!(story["agent"]["identity"], "spiffe_jwt");
    assert_eq!(story["agent"]["sign_in"]["method"], "spiffe_jwt");
    assert_eq!(story["agent"]["sign_in"]["record"], seeded.id(WRITER_A, 6));
    assert_eq!(story["task"]["purpose"], "draft the revenue summary");
    assert_eq!(story["task"]["max_calls"], 10);
    assert_eq!(story["delegation"][0]["task"], CHILD);
    assert_eq!(story["delegation"][0]["parent"], ROOT);
    assert_eq!(story["delegation"][1]["task"], ROOT);
    assert_eq!(story["delegation"][1]["kind"], "task.begun");
    assert_eq!(story["decision"]["decision"], "allow");
    assert_eq!(story["decision"]["policies"], json!(["writers-may-write"]));
    assert_eq!(story["approval"]["status"], "none");
    assert_eq!(story["arguments"]["redacted"]["token"], "[redacted]");
    assert_eq!(
        story["forwarded"]["credential"],
        "Authorization from env NOTES_TOKEN"
    );
    assert_eq!(story["outcome"]["status"], "ok");
    assert_eq!(story["outcome"]["latency_ms"], 42.5);
    assert_eq!(story["task_ended"]["kind"], "task.revoked");
    assert_eq!(story["task_ended"]["by_this_call"], false);
    assert_eq!(story["task_ended"]["record"], seeded.id(WRITER_A, 13));
}

#[test]
fn explain_a_record_of_no_call_prints_it() {
    let seeded = Seeded::new();
    let out = seeded.ok(&["explain", &seeded.id(WRITER_A, 2)]);
    assert!(
        out.contains(&format!(
            "record {WRITER_A}:2: config.loaded at {}",
            rfc3339(2, 0)
        )),
        "{out}"
    );
    assert!(
        out.contains(r#""servers":["notes","billing","mail","ops"]"#),
        "{out}"
    );
    assert!(out.contains("it belongs to no call"), "{out}");
    let json: Value =
        serde_json::from_str(&seeded.ok(&["explain", &seeded.id(WRITER_A, 2), "--json"])).unwrap();
    assert_eq!(json["record"]["kind"], "config.loaded");
    assert_eq!(json["call"], Value::Null);
}

#[test]
fn explain_an_unknown_id_fails_and_says_why() {
    let seeded = Seeded::new();
    for (id, expected) in [
        (
            "c_ffffffffffffffffffffffffffffffff",
            "no audit record of call `c_ffffffffffffffffffffffffffffffff`",
        ),
        (
            &format!("{WRITER_A}:999"),
            &format!("no audit record `{WRITER_A}:999`"),
        ),
        ("gw_nobody:1", "no audit record `gw_nobody:1`"),
        (
            "last-tuesday",
            "`last-tuesday` is neither a call id (`c_…`) nor a record id (`writer:seq`)",
        ),
    ] {
        let output = seeded.run(&["explain", id]);
        assert!(!output.status.success(), "{id}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{id}: {stderr}");
    }
}

// ----- export -----

#[test]
fn export_jsonl_lines_are_the_stored_records_and_verify_again() {
    let seeded = Seeded::new();
    let out = seeded.ok(&["export", "--format", "jsonl"]);
    let exported: Vec<Record> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(
        exported, seeded.records,
        "every record, as sealed, in commit order"
    );
    for (writer, seed, count) in [(WRITER_A, 1, 14), (WRITER_B, 2, 6)] {
        let chain: Vec<_> = exported.iter().filter(|r| r.writer == writer).collect();
        let public = key(seed).verifying_key();
        let verified = verify_chain(writer, None, chain, &[], |_| Some(public)).unwrap();
        assert_eq!(verified.records, count);
    }

    // Filters apply; a file is written when asked.
    let file = seeded.dir.join("calls.jsonl");
    seeded.ok(&[
        "export",
        "--format",
        "jsonl",
        "--kind",
        "call.*",
        "--out",
        file.to_str().unwrap(),
    ]);
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(written.lines().count(), 9);
}

/// The OTLP/JSON shape of one exported request, checked member by member.
fn check_otlp_request(request: &Value, records: &[&Record]) {
    let resource = &request["resourceLogs"][0];
    assert_eq!(request["resourceLogs"].as_array().unwrap().len(), 1);
    assert!(
        resource["resource"]["attributes"]
            .as_array()
            .unwrap()
            .contains(&json!({ "key": "service.name", "value": { "stringValue": "writ" } })),
        "{resource}"
    );
    let scope = &resource["scopeLogs"][0];
    assert_eq!(scope["scope"]["name"], "writ.audit");
    let logs = scope["logRecords"].as_array().unwrap();
    assert_eq!(logs.len(), records.len());
    for (log, record) in logs.iter().zip(records) {
        let nanos = (u64::try_from(record.time_ms).unwrap() * 1_000_000).to_string();
        assert_eq!(log["timeUnixNano"], nanos, "fixed64 as a decimal string");
        assert_eq!(log["body"], json!({ "stringValue": record.kind }));
        assert!(log.get("traceId").is_none() && log.get("spanId").is_none());
        let warn = record.decision.as_deref() == Some("deny")
            || ["call.deviation", "auth.failed", "task.revoked"].contains(&record.kind.as_str());
        assert_eq!(log["severityText"], if warn { "WARN" } else { "INFO" });
        assert_eq!(
            log["severityNumber"],
            if warn { 13 } else { 9 },
            "an enum, as an integer"
        );
        let attributes: BTreeMap<&str, &Value> = log["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|kv| (kv["key"].as_str().unwrap(), &kv["value"]))
            .collect();
        let string = |key: &str| attributes[key]["stringValue"].as_str().unwrap();
        assert_eq!(string("writ.audit.writer"), record.writer);
        assert_eq!(
            attributes["writ.audit.seq"]["intValue"],
            record.seq.to_string()
        );
        assert_eq!(string("writ.audit.kind"), record.kind);
        assert_eq!(string("writ.audit.hash"), record.hash);
        assert_eq!(string("writ.audit.prev_hash"), record.prev_hash);
        let actor: Vec<&str> = attributes["writ.audit.actor"]["arrayValue"]["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["stringValue"].as_str().unwrap())
            .collect();
        assert_eq!(actor, record.actor);
        for (key, value) in [
            ("writ.audit.task", &record.task),
            ("writ.audit.tool", &record.tool),
            ("writ.audit.decision", &record.decision),
        ] {
            assert_eq!(
                attributes.get(key).map(|_| string(key)),
                value.as_deref(),
                "{key}"
            );
        }
        let fields: Value = serde_json::from_str(string("writ.audit.fields")).unwrap();
        assert_eq!(fields, Value::Object(record.fields.clone()));
    }
}

#[test]
fn export_otlp_writes_export_logs_service_requests() {
    let seeded = Seeded::new();
    let out = seeded.ok(&["export", "--format", "otlp"]);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "up to 1,000 records per request");
    let records: Vec<&Record> = seeded.records.iter().collect();
    check_otlp_request(&lines[0], &records);
}

/// A one-shot HTTP server on port 0 that answers `status` with `body` and hands back
/// the request it got (head and body).
fn collector(status: &str, body: &str) -> (String, std::thread::JoinHandle<(String, Vec<u8>)>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let handle = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|n| n.trim().parse().unwrap())
            })
            .unwrap();
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        stream.write_all(response.as_bytes()).unwrap();
        (head, body)
    });
    (url, handle)
}

#[test]
fn export_otlp_posts_to_a_collector_and_names_a_refusal() {
    let seeded = Seeded::new();
    let (url, got) = collector("200 OK", "{}");
    let output = seeded.run(&[
        "export",
        "--format",
        "otlp",
        "--kind",
        "call.*",
        "--endpoint",
        &url,
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains(&format!("exported 9 records to {url}/v1/logs"))
    );
    let (head, body) = got.join().unwrap();
    assert!(head.starts_with("POST /v1/logs HTTP/1.1"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    let calls: Vec<&Record> = seeded
        .records
        .iter()
        .filter(|r| r.kind.starts_with("call."))
        .collect();
    check_otlp_request(&serde_json::from_slice(&body).unwrap(), &calls);

    let (url, got) = collector("503 Service Unavailable", "{\"message\":\"overloaded\"}");
    let output = seeded.run(&[
        "export",
        "--format",
        "otlp",
        "--endpoint",
        &format!("{url}/v1/logs"),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "the collector at `{url}/v1/logs` did not take the export"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("503") && stderr.contains("overloaded"),
        "{stderr}"
    );
    got.join().unwrap();

    let (url, got) = collector(
        "200 OK",
        "{\"partialSuccess\":{\"rejectedLogRecords\":\"2\",\"errorMessage\":\"too old\"}}",
    );
    let output = seeded.run(&["export", "--format", "otlp", "--endpoint", &url]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("it rejected 2 records: too old"),
        "{stderr}"
    );
    got.join().unwrap();

    let output = seeded.run(&["export", "--format", "jsonl", "--endpoint", &url]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("use `--format otlp`"));
}

// ----- tail -----

#[test]
fn tail_without_following_prints_the_last_records() {
    let seeded = Seeded::new();
    let out = seeded.ok(&["tail", "--no-follow", "-n", "3"]);
    let last: Vec<_> = seeded.records[17..].iter().map(id).collect();
    assert_eq!(ids(&out), last, "{out}");
    let out = seeded.ok(&[
        "tail",
        "--no-follow",
        "-n",
        "2",
        "--call",
        CALL_ALLOWED,
        "--json",
    ]);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["id"], seeded.id(WRITER_A, 11));
}

#[test]
fn tail_prints_a_record_committed_after_it_started() {
    let seeded = Seeded::new();
    let mut child = writ()
        .args([
            "audit",
            "tail",
            "-n",
            "1",
            "--kind",
            "call.*",
            "--config",
            &seeded.config,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines, receive) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let next = || receive.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(next().starts_with("TIME"));
    assert!(
        next().contains(&seeded.id(WRITER_B, 6)),
        "the latest call record first"
    );

    // A record that does not match, then one that does.
    runtime().block_on(async {
        let store = SqliteStore::open(&seeded.db).await.unwrap();
        let head = store.audit_head(WRITER_A).await.unwrap();
        let mut chain = Chain::new(WRITER_A, head);
        let other = chain.seal(Event::new(kinds::CONFIG_LOADED).unwrap(), time(20));
        let call = chain.seal(
            Event::new(kinds::CALL_DECIDED)
                .unwrap()
                .with_actor([LEAD])
                .with_task(ROOT)
                .with_tool("notes.read")
                .with_decision("allow")
                .with_field("call", "c_00000000000000000000000000000new"),
            time(21),
        );
        store.append_audit(&[other, call]).await.unwrap();
        store.close().await;
    });
    let line = next();
    child.kill().unwrap();
    let _ = child.wait();
    assert!(line.contains(&seeded.id(WRITER_A, 16)), "{line}");
    assert!(
        line.contains("c_00000000000000000000000000000new"),
        "{line}"
    );
}

// ----- verify -----

#[test]
fn verify_checks_records_and_checkpoints_with_the_chains_own_keys() {
    let seeded = Seeded::new();
    let out = seeded.ok(&["verify"]);
    assert!(
        out.contains(&format!(
            "{WRITER_A}: 14 records verified, last 14 ({}); 2 checkpoints verified, the latest at 14\n",
            &seeded.records[18].hash[..16]
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("{WRITER_B}: 6 records verified, last 6 (")),
        "{out}"
    );
    assert!(
        out.contains(
            "1 checkpoint verified, the latest at 5 (the 1 record since could be cut without \
             trace until the next one)"
        ),
        "{out}"
    );
    assert!(out.contains("2 audit chains verified"), "{out}");
}

#[test]
fn verify_catches_a_replaced_checkpoint_key() {
    let seeded = Seeded::new();
    // Someone with the database swaps writer A's key for one they hold.
    seeded.tamper(
        "UPDATE audit_keys SET public_key = ?1 WHERE key_id = ?2",
        &[&public(&key(66)), KEY_A],
    );
    let output = seeded.run(&["verify"]);
    assert!(!output.status.success());
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        out.contains(&format!(
            "{WRITER_A}: BROKEN: the checkpoint key was replaced: record 1 (audit.started) \
             names key `ak_a` with public key `{}`, but the store has `{}`",
            public(&key(1)),
            public(&key(66))
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("{WRITER_B}: 6 records verified")),
        "{out}"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("1 of 2 audit chains do not verify"));
}

#[test]
fn verify_catches_a_checkpoint_whose_signature_does_not_match() {
    let seeded = Seeded::new();
    // Checkpoint 14 carries checkpoint 5's signature.
    seeded.tamper(
        "UPDATE audit_checkpoints SET signature = \
         (SELECT signature FROM audit_checkpoints WHERE writer = ?1 AND seq = 5) \
         WHERE writer = ?1 AND seq = 14",
        &[WRITER_A],
    );
    let output = seeded.run(&["verify"]);
    assert!(!output.status.success());
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        out.contains(&format!(
            "{WRITER_A}: BROKEN: checkpoint at 14: bad signature"
        )),
        "{out}"
    );
}

#[test]
fn verify_trusts_no_other_key_for_a_chain_than_the_one_it_names() {
    let seeded = Seeded::new();
    // A new key row for writer A, and checkpoint 14 re-signed with it.
    let forged = runtime().block_on(async {
        let store = SqliteStore::open(&seeded.db).await.unwrap();
        store
            .add_audit_key(&AuditKey {
                key_id: "ak_forged".to_owned(),
                writer: WRITER_A.to_owned(),
                public_key: public(&key(66)),
                created_ms: T0,
            })
            .await
            .unwrap();
        store.close().await;
        Checkpoint::sign(seeded.records[18].head(), time(30), "ak_forged", &key(66))
    });
    seeded.tamper(
        "UPDATE audit_checkpoints SET key_id = ?1, signature = ?2, time_ms = ?3 \
         WHERE writer = ?4 AND seq = 14",
        &[
            "ak_forged",
            &forged.signature,
            &time(30).to_string(),
            WRITER_A,
        ],
    );
    let output = seeded.run(&["verify"]);
    assert!(!output.status.success());
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        out.contains(&format!(
            "{WRITER_A}: BROKEN: checkpoint at 14: signed with key `ak_forged` (stored, but not \
             this chain's), not with `ak_a`, the key record 1 (audit.started) names"
        )),
        "{out}"
    );
}

// ----- prune -----

#[test]
fn prune_leaves_anchors_and_what_remains_still_verifies() {
    let seeded = Seeded::new();
    // Records 1 to 10 of the story: writer A's 1–8 and writer B's 1–2.
    let out = seeded.ok(&["prune", "--before", &rfc3339(10, 500)]);
    assert!(
        out.contains(&format!(
            "removed 10 records sealed before {}",
            rfc3339(10, 500)
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{WRITER_A}: records up to 8 removed; the chain now starts at anchor 8 ({})",
            &seeded.records[9].hash[..16]
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("{WRITER_B}: records up to 2 removed")),
        "{out}"
    );

    // Checkpoint A at 5 now vouches for pruned records; its signature still holds with
    // the stored key, the chain's own audit.started record being gone.
    let out = seeded.ok(&["verify"]);
    assert!(
        out.contains(&format!("{WRITER_A}: 6 records verified, last 14")),
        "{out}"
    );
    assert!(
        out.contains("2 checkpoints verified, the latest at 14"),
        "{out}"
    );
    assert!(
        out.contains(&format!("{WRITER_B}: 4 records verified, last 6")),
        "{out}"
    );
    assert_eq!(ids(&seeded.ok(&["query"])).len(), 10);

    // The call is still explained; what was pruned is said to be missing.
    let out = seeded.ok(&["explain", CALL_ALLOWED]);
    assert!(
        out.contains(&format!("{CHILD}: no record of how it began")),
        "{out}"
    );
    assert!(
        out.contains("credential reference Authorization from env NOTES_TOKEN"),
        "{out}"
    );

    let output = seeded.run(&["prune", "--before", "2999-01-01T00:00:00Z"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("`--before` is in the future"));
    let out = seeded.ok(&["prune", "--before", &rfc3339(10, 500)]);
    assert!(out.contains("nothing removed"), "{out}");
}
