//! The `writ` binary as a user runs it.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "tests fail loudly on unexpected output"
)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

fn writ() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_writ"));
    command.env("WRIT_LOG", "warn");
    command
}

fn temp_config(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("writ-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("writ.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_config_error_names_the_file_the_key_and_the_line() {
    let path = temp_config(
        "bad",
        "[gateway]\nlisten = \"127.0.0.1:0\"\nlisten_port = 8\n",
    );
    let output = writ()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("writ.toml: line 3: unknown field `listen_port`"),
        "{stderr}"
    );
}

#[test]
fn a_missing_config_file_is_named() {
    let output = writ()
        .args(["serve", "--config", "/nonexistent/writ.toml"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("could not read `/nonexistent/writ.toml`")
    );
}

#[test]
fn the_demo_tour_begins_a_task_calls_within_it_and_ends_it() {
    let output = writ()
        .args(["demo", "--tour-only", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(
            "/mcp answers 401 Unauthorized with `WWW-Authenticate: Bearer resource_metadata="
        ),
        "{stdout}"
    );
    assert!(stdout.contains("a DPoP writ for 600 s"), "{stdout}");
    assert!(
        stdout.contains("tools/list shows only the task's tools: notes.read, notes.write\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("notes.read (read)     → ship the gateway"),
        "{stdout}"
    );
    assert!(
        stdout.contains("ops.run (outside the task) → HTTP 403: tool `ops.run` is outside task"),
        "{stdout}"
    );
    assert!(stdout.contains("unknown tool `crm.delete_all`"), "{stdout}");
    assert!(stdout.contains("now gets HTTP 401: task `tsk_"), "{stdout}");
    assert!(
        stdout.contains("is completed; begin a new task"),
        "{stdout}"
    );
}

#[test]
fn serve_runs_until_sigterm_and_exits_cleanly() {
    let fixture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/stdio_server.py");
    let path = temp_config(
        "serve",
        &format!(
            "[gateway]\nlisten = \"127.0.0.1:0\"\nauth = \"off\"\n[[servers]]\nname = \"py\"\ntransport = \"stdio\"\ncommand = \"python3\"\nargs = [\"-u\", \"{}\"]\n",
            fixture.display()
        ),
    );
    let mut child = writ()
        .args(["serve", "--config"])
        .arg(&path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("writ listening on ")
        .unwrap()
        .to_owned();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let http = reqwest::Client::new();
        let base = url.trim_end_matches("/mcp");
        for _ in 0..100 {
            if http.get(format!("{base}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let init = http
            .post(&url)
            .header("content-type", "application/json")
            .body(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "cli-test", "version": "1"}}}).to_string())
            .send()
            .await
            .unwrap();
        let session = init.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        let answer: Value = http
            .post(&url)
            .header("content-type", "application/json")
            .header("mcp-session-id", session)
            .body(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "py.echo", "arguments": {"text": "cli"}}}).to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["result"]["content"][0]["text"], "cli", "{answer}");
    });

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "writ serve exited with {exit}");
}

fn run_ok(args: &[&str]) -> String {
    let output = writ().args(args).output().unwrap();
    assert!(
        output.status.success(),
        "writ {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn agents_are_registered_listed_and_disabled_from_the_command_line() {
    let config = temp_config("agents", "[gateway]\nlisten = \"127.0.0.1:0\"\n");
    let dir = config.parent().unwrap().to_path_buf();
    let _ = std::fs::remove_file(dir.join("agent.key"));
    let _ = std::fs::remove_dir_all(dir.join(".writ"));
    let config = config.to_str().unwrap();
    let key = dir.join("agent.key");
    let id = run_ok(&[
        "agent",
        "create",
        "triage-bot",
        "--team",
        "research",
        "--owner",
        "ana",
        "--out",
        key.to_str().unwrap(),
        "--config",
        config,
    ]);
    let id = id.trim();
    assert!(id.starts_with("agt_") && id.len() == 36, "{id}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(
            mode, 0o600,
            "the private key file is readable by its owner only"
        );
    }
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&key).unwrap()).unwrap();
    assert_eq!(file["agent_id"], id);
    assert!(
        file["private_key"]
            .as_str()
            .unwrap()
            .contains("BEGIN PRIVATE KEY")
    );
    // The store is beside the config file, as `[store] path` says by default.
    assert!(dir.join(".writ/writ.db").exists());

    let again = writ()
        .args(["agent", "create", "triage-bot", "--out"])
        .arg(dir.join("other.key"))
        .args(["--config", config])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    assert!(
        !dir.join("other.key").exists(),
        "no key file for a refused agent"
    );

    let list: Value =
        serde_json::from_str(&run_ok(&["agent", "list", "--json", "--config", config])).unwrap();
    assert_eq!(list[0]["name"], "triage-bot");
    assert_eq!(list[0]["team"], "research");
    assert_eq!(list[0]["disabled"], false);
    let disabled = run_ok(&["agent", "disable", "triage-bot", "--config", config]);
    assert!(
        disabled.contains("agent `triage-bot` disabled; 0 task(s) revoked"),
        "{disabled}"
    );
    let shown: Value =
        serde_json::from_str(&run_ok(&["agent", "show", id, "--config", config])).unwrap();
    assert_eq!(shown["disabled"], true);
    assert!(run_ok(&["keys", "list", "--config", config]).starts_with("KID"));
    let kid = run_ok(&["keys", "rotate", "--config", config]);
    assert!(run_ok(&["keys", "list", "--config", config]).contains(kid.trim()));
}
