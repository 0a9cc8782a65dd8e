//! The audit log under faults, with the `writ` binary as an operator runs it: the gateway
//! killed mid-burst, a disk that fills, a store that cannot be written. Each test runs a
//! real `writ serve` on a real socket in front of the stdio test server, which logs every
//! call that reaches it (`--log`), so "never forwarded" is checked where it matters.
//! Unix only: they signal processes and limit file sizes with `sh`'s `ulimit`.
#![cfg(unix)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "tests fail loudly on unexpected output"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use writ_store::AuditStore as _;

/// How long any one HTTP request, process start or process exit may take.
const PATIENCE: Duration = Duration::from_secs(20);
const PROTOCOL: &str = "2025-11-25";

fn writ() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_writ"));
    command.env("WRIT_LOG", "warn");
    command
}

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/stdio_server.py")
}

/// A fresh folder for one test.
fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("writ-faults-{}-{name}", std::process::id()));
    if dir.exists() {
        restore_permissions(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Makes `dir` and everything under it writable by its owner again.
fn restore_permissions(dir: &Path) {
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            restore_permissions(&entry.path());
        } else {
            let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o644));
        }
    }
}

/// How the gateway starts its upstream, the stdio test server logging to `log`.
enum Upstream<'a> {
    /// `python3 stdio_server.py --log LOG`.
    Plain(&'a Path),
    /// The same, but first lifting the file-size limit the gateway runs under, so the
    /// upstream's log is not what fills up.
    Unlimited(&'a Path),
}

/// A `writ.toml` with auth on, a store at `store`, a permissive policy, and the stdio
/// server as `up`. Returns the config file's path.
fn write_config(dir: &Path, store: &Path, upstream: &Upstream<'_>, extra: &str) -> PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("all.cedar"),
        "@id(\"all\")\npermit(principal, action, resource);\n",
    )
    .unwrap();
    let server = match upstream {
        Upstream::Plain(log) => format!(
            "command = \"python3\"\nargs = [\"-u\", \"{}\", \"--log\", \"{}\"]\n",
            fixture().display(),
            log.display()
        ),
        Upstream::Unlimited(log) => format!(
            "command = \"sh\"\nargs = [\"-c\", \"ulimit -S -f unlimited && exec python3 -u \\\"$0\\\" --log \\\"$1\\\"\", \"{}\", \"{}\"]\n",
            fixture().display(),
            log.display()
        ),
    };
    let text = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\ncall_timeout = \"10s\"\n\n[store]\npath = \"{}\"\n\n[policy]\ndir = \"{}\"\n\n{extra}\n[[servers]]\nname = \"up\"\ntransport = \"stdio\"\n{server}",
        store.display(),
        policies.display(),
    );
    let path = dir.join("writ.toml");
    std::fs::write(&path, text).unwrap();
    let valid = writ()
        .args(["policy", "validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        valid.status.success(),
        "the permissive policy validates: {}",
        String::from_utf8_lossy(&valid.stderr)
    );
    path
}

fn run_ok(command: &mut Command) -> String {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn create_agent(config: &Path) -> PathBuf {
    let key = config.with_file_name("agent.key");
    run_ok(
        writ()
            .args(["agent", "create", "burster", "--team", "research", "--out"])
            .arg(&key)
            .arg("--config")
            .arg(config),
    );
    key
}

/// Begins a task for `up.*` at the gateway at `base` and returns its writ.
fn begin_task(config: &Path, key: &Path, base: &str) -> String {
    run_ok(
        writ()
            .args(["task", "begin", "--purpose", "echo a lot", "--tool", "up.*"])
            .args(["--url", base, "--key"])
            .arg(key)
            .arg("--config")
            .arg(config),
    )
    .trim()
    .to_owned()
}

fn wait_for_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `writ serve` process, killed (SIGKILL) if still running when dropped.
struct Gateway {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    base: String,
    /// What it wrote to stderr so far. A pipe, not a file: a file would be subject to
    /// the same size limit as the store.
    stderr: Arc<Mutex<String>>,
}

/// What became of a `writ serve` that never said it was listening.
struct Refused {
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

impl Gateway {
    /// Runs `writ serve --config CONFIG`, under `sh -c WRAPPER` if given.
    fn start(config: &Path, wrapper: Option<&str>) -> Self {
        match Self::try_start(config, wrapper) {
            Ok(gateway) => gateway,
            Err(refused) => panic!(
                "writ serve did not start ({:?}):\n{}{}",
                refused.status, refused.stdout, refused.stderr
            ),
        }
    }

    fn try_start(config: &Path, wrapper: Option<&str>) -> Result<Self, Refused> {
        let mut command = match wrapper {
            None => writ(),
            Some(script) => {
                let mut sh = Command::new("sh");
                sh.args(["-c", script, "sh", env!("CARGO_BIN_EXE_writ")])
                    .env("WRIT_LOG", "warn");
                sh
            }
        };
        let mut child = command
            .args(["serve", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let errors = BufReader::new(child.stderr.take().unwrap());
        let collected = stderr.clone();
        let drained = std::thread::spawn(move || {
            for line in errors.lines() {
                let Ok(line) = line else { return };
                let mut text = collected.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        // The first line says where it listens; a thread reads it so a silent gateway
        // fails the test after PATIENCE instead of blocking it.
        let stdout = child.stdout.take().unwrap();
        let (lines, first) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if lines.send(Some(line.clone())).is_err() {
                    return;
                }
                line.clear();
            }
            let _ = lines.send(None);
        });
        match first.recv_timeout(PATIENCE) {
            Ok(Some(line)) => {
                let url = line
                    .trim()
                    .strip_prefix("writ listening on ")
                    .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
                Ok(Self {
                    child,
                    base: url.trim_end_matches("/mcp").to_owned(),
                    stderr,
                })
            }
            Ok(None) | Err(_) => {
                let status = wait_for_exit(&mut child, PATIENCE);
                if status.is_none() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                let mut stdout = String::new();
                while let Ok(Some(line)) = first.try_recv() {
                    stdout.push_str(&line);
                }
                let deadline = Instant::now() + PATIENCE;
                while !drained.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let stderr = stderr.lock().unwrap().clone();
                Err(Refused {
                    status,
                    stdout,
                    stderr,
                })
            }
        }
    }

    fn url(&self) -> String {
        format!("{}/mcp", self.base)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends SIGTERM and waits for a clean exit.
    fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = wait_for_exit(&mut self.child, PATIENCE)
            .unwrap_or_else(|| panic!("writ serve ignored SIGTERM:\n{}", self.stderr()));
        assert!(
            exit.success(),
            "writ serve exited with {exit}:\n{}",
            self.stderr()
        );
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(PATIENCE)
        .build()
        .unwrap()
}

async fn readyz(http: &reqwest::Client, base: &str) -> (u16, Value) {
    let response = http.get(format!("{base}/readyz")).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn wait_ready(http: &reqwest::Client, gateway: &Gateway) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let ready = http
            .get(format!("{}/readyz", gateway.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never became ready:\n{}",
            gateway.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One agent's MCP session over Streamable HTTP.
struct Session {
    http: reqwest::Client,
    url: String,
    writ: String,
    id: String,
}

impl Session {
    async fn open(url: &str, writ: &str) -> Result<Self, String> {
        let http = http();
        let mut session = Self {
            http,
            url: url.to_owned(),
            writ: writ.to_owned(),
            id: String::new(),
        };
        let init = session
            .post(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": PROTOCOL, "capabilities": {}, "clientInfo": {"name": "audit-faults", "version": "1"}}}))
            .await
            .map_err(|e| e.to_string())?;
        if !init.status().is_success() {
            return Err(format!("initialize answered {}", init.status()));
        }
        session.id = init
            .headers()
            .get("mcp-session-id")
            .ok_or("no Mcp-Session-Id")?
            .to_str()
            .map_err(|e| e.to_string())?
            .to_owned();
        let initialized = session
            .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await
            .map_err(|e| e.to_string())?;
        if !initialized.status().is_success() {
            return Err(format!("initialized answered {}", initialized.status()));
        }
        Ok(session)
    }

    async fn post(&self, body: &Value) -> Result<reqwest::Response, reqwest::Error> {
        let mut request = self
            .http
            .post(&self.url)
            .bearer_auth(&self.writ)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", PROTOCOL);
        if !self.id.is_empty() {
            request = request.header("mcp-session-id", &self.id);
        }
        request.body(body.to_string()).send().await
    }

    /// Calls `tool` and returns the HTTP status and the JSON-RPC response.
    async fn call(&self, id: u64, tool: &str, arguments: Value) -> Result<(u16, Value), String> {
        let response = self
            .post(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}))
            .await
            .map_err(describe)?;
        let status = response.status().as_u16();
        let sse = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let body = response.text().await.map_err(describe)?;
        let answer = if sse {
            // The response is the last `data:` event carrying our id.
            body.lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
                .rfind(|message| message["id"] == id)
                .ok_or_else(|| format!("no response in the event stream: {body}"))?
        } else {
            serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?
        };
        Ok((status, answer))
    }
}

/// A transport error, saying whether the request was refused a connection or lost on one.
fn describe(err: reqwest::Error) -> String {
    if err.is_connect() {
        format!("connect: {err}")
    } else {
        format!("lost: {err:?}")
    }
}

/// The calls that reached the upstream, in its log's order: `(tool, text)`.
fn upstream_log(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let entry: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a torn upstream log line {line:?}: {e}"));
            (
                entry["tool"].as_str().unwrap().to_owned(),
                entry["arguments"]["text"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Every `call.decided` record in the store, paging through the commit-order cursor.
async fn decided_records(store: &writ_store::SqliteStore) -> Vec<writ_audit::Record> {
    let mut records = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .audit_query(&writ_store::AuditFilter {
                kind: Some("call.decided".into()),
                after,
                limit: 500,
                ..Default::default()
            })
            .await
            .unwrap();
        let Some(last) = page.last() else {
            return records;
        };
        after = Some(last.position);
        records.extend(page.into_iter().map(|entry| entry.record));
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// The store's files: the database, its write-ahead log and its shared memory.
fn store_files(store: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| PathBuf::from(format!("{}{suffix}", store.display()));
    [store.to_path_buf(), with("-wal"), with("-shm")]
}

#[test]
fn kill_dash_nine_during_a_burst_loses_no_decision() {
    const CLIENTS: usize = 8;
    const KILL_AFTER: usize = 150;
    let started = Instant::now();
    let dir = fresh_dir("kill9");
    let store = dir.join("writ.db");
    let log = dir.join("upstream.log");
    // Checkpoints every 64 records, so the kill lands past a signed checkpoint with an
    // unsigned tail behind it.
    let config = write_config(
        &dir,
        &store,
        &Upstream::Plain(&log),
        "[audit]\ncheckpoint_every = 64\n",
    );
    let key = create_agent(&config);
    let mut gateway = Gateway::start(&config, None);
    let runtime = runtime();
    runtime.block_on(wait_ready(&http(), &gateway));
    let token = begin_task(&config, &key, &gateway.base);

    let answered = Arc::new(AtomicUsize::new(0));
    let url = gateway.url();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let answered = answered.clone();
            let url = url.clone();
            let token = token.clone();
            runtime.spawn(async move {
                let session = Session::open(&url, &token).await?;
                let mut ok = Vec::new();
                for n in 0..100_000_u64 {
                    let text = format!("burst-{client}-{n}");
                    match session
                        .call(n + 1, "up.echo", json!({ "text": text }))
                        .await
                    {
                        Ok((200, answer)) if answer["result"]["content"][0]["text"] == text => {
                            ok.push(text);
                            answered.fetch_add(1, Ordering::AcqRel);
                        }
                        Ok((status, answer)) => {
                            return Err(format!("`{text}` answered HTTP {status}: {answer}"));
                        }
                        // The gateway is gone: how this client's call ended.
                        Err(lost) => return Ok((ok, lost)),
                    }
                }
                Err("the gateway was never killed".to_owned())
            })
        })
        .collect();

    let deadline = Instant::now() + PATIENCE;
    while answered.load(Ordering::Acquire) < KILL_AFTER {
        assert!(
            Instant::now() < deadline,
            "only {} calls answered in {PATIENCE:?}:\n{}",
            answered.load(Ordering::Acquire),
            gateway.stderr()
        );
        assert!(
            clients.iter().all(|c| !c.is_finished()),
            "a client stopped before the kill:\n{}",
            gateway.stderr()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    gateway.child.kill().unwrap(); // SIGKILL
    let at_kill = answered.load(Ordering::Acquire);
    assert!(wait_for_exit(&mut gateway.child, PATIENCE).is_some());

    let mut answered_texts = BTreeSet::new();
    let mut lost = Vec::new();
    for client in clients {
        let outcome = runtime
            .block_on(async { tokio::time::timeout(PATIENCE, client).await })
            .expect("a client hung after the kill")
            .unwrap();
        let (ok, how) = outcome.unwrap_or_else(|e| panic!("{e}\n{}", gateway.stderr()));
        answered_texts.extend(ok);
        lost.push(how);
    }
    drop(gateway);
    let in_flight = lost.iter().filter(|how| how.starts_with("lost")).count();
    let refused = lost.len() - in_flight;

    // (a) The gateway starts again on the same store, becomes ready and stops cleanly.
    let restarted = Gateway::start(&config, None);
    runtime.block_on(wait_ready(&http(), &restarted));
    restarted.terminate();

    // (b) Every chain verifies, the killed writer's included.
    let verify = writ()
        .args(["audit", "verify", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let verified = String::from_utf8_lossy(&verify.stdout).into_owned();
    assert!(
        verify.status.success(),
        "writ audit verify failed:\n{verified}{}",
        String::from_utf8_lossy(&verify.stderr)
    );

    // (c) Every call that reached the upstream has its allow decision in the log.
    let reached = upstream_log(&log);
    let decided = runtime.block_on(async {
        let store = writ_store::SqliteStore::open(&store).await.unwrap();
        let records = decided_records(&store).await;
        store.close().await;
        records
    });
    let mut by_text: BTreeMap<String, Vec<&writ_audit::Record>> = BTreeMap::new();
    for record in &decided {
        if let Some(text) = record
            .fields
            .get("arguments")
            .and_then(|a| a["text"].as_str())
        {
            by_text.entry(text.to_owned()).or_default().push(record);
        }
    }
    let mut seen = BTreeSet::new();
    for (tool, text) in &reached {
        assert_eq!(tool, "echo");
        assert!(seen.insert(text), "`{text}` reached the upstream twice");
        let records = by_text.get(text).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(
            records.len(),
            1,
            "`{text}` reached the upstream with {} call.decided records: {records:?}",
            records.len()
        );
        assert_eq!(records[0].decision.as_deref(), Some("allow"), "{text}");
        assert_eq!(records[0].tool.as_deref(), Some("up.echo"), "{text}");
    }
    for text in &answered_texts {
        assert!(seen.contains(text), "`{text}` was answered but not logged");
    }

    // (d) The burst was real and the kill landed in it.
    assert!(!reached.is_empty());
    assert!(
        in_flight >= 1,
        "no client lost a call to the kill (they ended: {lost:?})"
    );
    let burst_decided = by_text.keys().filter(|t| t.starts_with("burst-")).count();
    eprintln!(
        "kill -9 after {at_kill} answered calls: {in_flight} calls lost in flight, {refused} clients refused a connection; \
         {} answered, {} upstream log lines, {burst_decided} call.decided records ({} decided but never reached the upstream); \
         {:.1} s\n{verified}",
        answered_texts.len(),
        reached.len(),
        burst_decided - reached.len(),
        started.elapsed().as_secs_f64(),
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// How many bytes one block of `sh`'s `ulimit -f` is (512 in dash, 1024 in bash),
/// measured by letting `sh` hit a two-block limit.
fn ulimit_block(dir: &Path) -> u64 {
    let probe = dir.join("ulimit-probe");
    let _ = Command::new("sh")
        .args([
            "-c",
            "trap '' XFSZ; ulimit -S -f 2; head -c 5000 /dev/zero > \"$0\"",
        ])
        .arg(&probe)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let block = file_len(&probe) / 2;
    std::fs::remove_file(&probe).unwrap();
    assert!(
        block == 512 || block == 1024,
        "`ulimit -f` blocks of {block} bytes?"
    );
    block
}

/// `sh -c` that runs the rest of its arguments with files limited to `blocks`; SIGXFSZ
/// ignored (inherited through exec), so writes past the limit fail with EFBIG instead of
/// killing the process. Only the soft limit, so the upstream can lift it again.
fn size_limited(blocks: u64) -> String {
    format!("trap '' XFSZ; ulimit -S -f {blocks} && exec \"$@\"")
}

/// `full-N-` and padding to about 3 KiB: large enough to fill the disk soon, small
/// enough that the audit record keeps the arguments.
fn large_text(n: usize) -> String {
    format!("full-{n}-{}", "x".repeat(3 * 1024))
}

#[test]
fn a_full_disk_refuses_calls_and_forwards_none() {
    const MARGIN: u64 = 1024 * 1024;
    const GIVE_UP: usize = 2_000;
    let started = Instant::now();
    let dir = fresh_dir("full");
    let store = dir.join("writ.db");
    let log = dir.join("upstream.log");
    // No timed checkpoints while the test runs: a small checkpoint row may still fit on
    // the full disk, and would make the outcome depend on the clock.
    let config = write_config(
        &dir,
        &store,
        &Upstream::Unlimited(&log),
        "[audit]\ncheckpoint_interval = \"10m\"\n",
    );
    let key = create_agent(&config);
    let runtime = runtime();
    let mut answered = BTreeSet::new();

    // A normal run first, to see how large the store's files get with the gateway up,
    // a task begun and a call made.
    let gateway = Gateway::start(&config, None);
    let mut peak = 0;
    runtime.block_on(async {
        wait_ready(&http(), &gateway).await;
        let token = begin_task(&config, &key, &gateway.base);
        let session = Session::open(&gateway.url(), &token).await.unwrap();
        let text = large_text(0);
        let (status, answer) = session
            .call(1, "up.echo", json!({ "text": text }))
            .await
            .unwrap();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["result"]["content"][0]["text"], text, "{answer}");
        answered.insert(text);
        peak = store_files(&store)
            .iter()
            .map(|f| file_len(f))
            .max()
            .unwrap();
    });
    gateway.terminate();
    let at_rest = store_files(&store).map(|f| file_len(&f));
    let block = ulimit_block(&dir);
    let limit = peak.max(at_rest.into_iter().max().unwrap()) + MARGIN;
    let blocks = limit.div_ceil(block);

    // Now with every file the gateway writes limited to `blocks`.
    let gateway = Gateway::start(&config, Some(&size_limited(blocks)));
    let mut refused = Vec::new();
    let ready = runtime.block_on(async {
        wait_ready(&http(), &gateway).await;
        let token = begin_task(&config, &key, &gateway.base);
        let session = Session::open(&gateway.url(), &token).await.unwrap();
        let mut n = 0;
        let mut readiness = Vec::new();
        // Until six calls have been refused. Every call is either answered (and then
        // recorded and forwarded) or refused for want of a record (and then forwarded
        // nowhere), and the gateway is unready right after a refusal. A call after a
        // refusal may be answered again: once the write-ahead log has been folded back
        // into the database, SQLite starts it over from the top of its file, so the next
        // commit can fit in the space the limit allows.
        while refused.len() < 6 {
            n += 1;
            assert!(
                n <= GIVE_UP,
                "{GIVE_UP} calls of 3 KiB with files limited to {blocks} blocks of {block} bytes, and only {} refused:\n{}",
                refused.len(),
                gateway.stderr()
            );
            let text = large_text(n);
            let (status, answer) = session
                .call(n as u64 + 1, "up.echo", json!({ "text": text }))
                .await
                .unwrap_or_else(|e| panic!("call {n}: {e}\n{}", gateway.stderr()));
            if status == 200 && answer["result"]["content"][0]["text"] == text {
                answered.insert(text);
                continue;
            }
            assert_eq!(
                (status, &answer["error"]["code"]),
                (503, &json!(-31012)),
                "call {n} ({} refused before it) was not refused for want of an audit record: {answer}\n{}",
                refused.len(),
                gateway.stderr()
            );
            refused.push((n, text));
            readiness.push(readyz(&http(), &gateway.base).await);
        }
        readiness
    });
    let stderr = gateway.stderr();
    drop(gateway);
    for (status, body) in &ready {
        assert_eq!(*status, 503, "/readyz after a refused call: {body}");
        assert_eq!(body["audit"], false, "/readyz after a refused call: {body}");
    }
    assert!(
        stderr.contains("audit write failed"),
        "the gateway logs why it refuses:\n{stderr}"
    );

    let reached: BTreeSet<String> = upstream_log(&log).into_iter().map(|(_, t)| t).collect();
    for (n, text) in &refused {
        assert!(
            !reached.contains(text),
            "the refused call {n} reached the upstream"
        );
    }
    assert_eq!(
        reached, answered,
        "the upstream saw exactly the calls that were answered"
    );

    // The failed writes left no trace in the chain: it verifies, and holds a decision
    // for every answered call and none for a refused one.
    let verify = writ()
        .args(["audit", "verify", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "writ audit verify after the disk filled:\n{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let decided: BTreeSet<String> = runtime.block_on(async {
        let store = writ_store::SqliteStore::open(&store).await.unwrap();
        let records = decided_records(&store).await;
        store.close().await;
        records
            .iter()
            .filter_map(|r| {
                r.fields.get("arguments")?["text"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    });
    assert_eq!(
        decided, answered,
        "a decision for every answered call, and only those"
    );
    eprintln!(
        "files limited to {blocks} blocks of {block} bytes (store files at most {peak} bytes while serving, {at_rest:?} at rest): \
         {} calls answered, then calls {:?} refused with HTTP 503 / -31012, /readyz {} {}; {} upstream log lines; {:.1} s",
        answered.len() - 1,
        refused.iter().map(|(n, _)| n).collect::<Vec<_>>(),
        ready[0].0,
        ready[0].1,
        reached.len(),
        started.elapsed().as_secs_f64(),
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs `writ serve` and expects it to refuse to start, naming `store`.
fn assert_refuses_to_start(config: &Path, wrapper: Option<&str>, store: &Path, why: &str) {
    let refused = match Gateway::try_start(config, wrapper) {
        Ok(gateway) => panic!(
            "writ serve started at {} with {why}:\n{}",
            gateway.base,
            gateway.stderr()
        ),
        Err(refused) => refused,
    };
    let status = refused
        .status
        .unwrap_or_else(|| panic!("writ serve with {why} neither served nor exited"));
    assert!(
        !status.success(),
        "writ serve with {why} exited with {status}"
    );
    assert!(
        !refused.stdout.contains("listening"),
        "{why}: {}",
        refused.stdout
    );
    let named = format!("could not open the store at `{}`", store.display());
    assert!(
        refused.stderr.contains(&named),
        "{why}: the error names the store:\n{}",
        refused.stderr
    );
    eprintln!("{why}: exit {status}: {}", refused.stderr.trim());
}

#[test]
fn a_store_that_cannot_be_written_stops_the_gateway_from_starting() {
    let started = Instant::now();
    let dir = fresh_dir("readonly");
    let folder = dir.join("store");
    std::fs::create_dir_all(&folder).unwrap();
    let store = folder.join("writ.db");
    let log = dir.join("upstream.log");
    let config = write_config(&dir, &store, &Upstream::Plain(&log), "");
    create_agent(&config);
    let runtime = runtime();
    let gateway = Gateway::start(&config, None);
    runtime.block_on(wait_ready(&http(), &gateway));
    gateway.terminate();

    // A store that exists but whose files may not grow by a byte, as on a full disk.
    // Unlike permissions, this binds root too.
    assert_refuses_to_start(
        &config,
        Some(&size_limited(0)),
        &store,
        "a store whose files cannot grow",
    );

    // A store that cannot even be created: its folder is a regular file.
    let blocker = dir.join("not-a-folder");
    std::fs::write(&blocker, "").unwrap();
    let nowhere = blocker.join("writ.db");
    let elsewhere = write_config(&dir, &nowhere, &Upstream::Plain(&log), "");
    assert_refuses_to_start(&elsewhere, None, &nowhere, "a store under a regular file");
    write_config(&dir, &store, &Upstream::Plain(&log), "");

    // The store's folder and files read-only. Root writes through permissions, so this
    // part only means something for other users; as root it says so and is skipped.
    for file in store_files(&store) {
        if file.exists() {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o400)).unwrap();
        }
    }
    std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o500)).unwrap();
    let probe = folder.join("probe");
    let bound = std::fs::write(&probe, "").is_err();
    if bound {
        assert_refuses_to_start(&config, None, &store, "a read-only store");
    } else {
        let _ = std::fs::remove_file(&probe);
        eprintln!(
            "SKIPPED the read-only store: this test runs as a user who can write to a 0500 folder (root), so permissions cannot make the store read-only here"
        );
    }
    restore_permissions(&folder);
    eprintln!("{:.1} s", started.elapsed().as_secs_f64());
    std::fs::remove_dir_all(&dir).unwrap();
}
