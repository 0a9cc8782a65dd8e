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
