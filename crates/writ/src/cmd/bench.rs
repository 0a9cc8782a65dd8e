//! `writ bench`: `tools/call` latency and throughput through Writ, side by side with a
//! direct connection to the same upstream, in the same run.
//!
//! The upstream is Writ's kit server with an `echo` tool on loopback. The gateway is
//! `writ serve` in a process of its own, started from a `writ.toml` the bench writes as
//! an operator would, so its start-to-ready time, CPU time and memory are its own
//! (read from Linux's /proc). Phases alternate (direct, Writ, direct, Writ, …) so drift
//! on a shared machine hits both sides alike.
//! Agents authenticate as a user would run Writ: a registered agent begins a task and
//! sends its writ (bearer, or DPoP-bound with a proof per call) on every call, and every
//! call is decided by Cedar against 100 policies shaped like a deployment's (pinning and
//! the task's intent checked too). The token scenario times the exchange itself.
//! `--rate` runs an open loop at a fixed rate; closed loop (each client back to back) is
//! the default. The list scenario and the other protocol era are still to come.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use writ_core::config::{Config, SigningAlgorithm};
use writ_gateway::token::agent_key::AgentKey;
use writ_gateway::token::client::{self, TaskRequest};
use writ_mcp::server::{Tool, ToolServer, text_result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Concurrent clients, each with its own session and keep-alive connection.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Calls per phase, spread over the clients.
    #[arg(long, default_value_t = 4000)]
    calls: usize,
    /// Size of the `text` argument of each call, in bytes.
    #[arg(long, default_value_t = 1024)]
    payload: usize,
    /// Direct/Writ phase pairs.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// How agents authenticate through Writ: `bearer` writs (the default), `dpop`-bound
    /// writs (a fresh proof signed per call, counted in Writ's latency), or `off`.
    #[arg(long, default_value = "bearer", value_parser = ["off", "bearer", "dpop"])]
    auth: String,
    /// Token exchanges to time after the call phases (0 to skip).
    #[arg(long, default_value_t = 400)]
    tokens: usize,
    /// Open loop: send this many calls per second in all (spread evenly over the
    /// clients) instead of each client calling back to back. A call held up by a slow
    /// one before it counts from when it was due, so a stall also charges the calls
    /// queued behind it.
    #[arg(long)]
    rate: Option<u32>,
}

#[derive(Debug, Default)]
struct Samples {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Samples {
    fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * (sorted.len() as f64)).ceil() as usize;
        sorted
            .get(rank.saturating_sub(1).min(sorted.len() - 1))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }

    fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    fn summary(&self) -> Value {
        json!({
            "p50": self.percentile(50.0), "p90": self.percentile(90.0),
            "p99": self.percentile(99.0), "p999": self.percentile(99.9),
            "throughput": self.throughput(), "calls": self.latencies.len(),
        })
    }
}

#[expect(clippy::print_stdout, reason = "the report is the command's output")]
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.clients == 0 || args.calls < args.clients {
        bail!("`--calls` must be at least `--clients`, and both above zero");
    }
    let echo = Tool::new(
        "echo",
        "Echo the text.",
        json!({"type": "object", "properties": {"text": {"type": "string"}}}),
        json!({"readOnlyHint": true}),
        |args| {
            Ok(text_result(
                args.get("text").and_then(Value::as_str).unwrap_or_default(),
            ))
        },
    );
    let (upstream_addr, _upstream) = ToolServer::new("writ-bench-echo", vec![echo])
        .serve("127.0.0.1:0".parse()?)
        .await?;
    let direct_url = format!("http://{upstream_addr}/mcp");
    let data = std::env::temp_dir().join(format!("writ-bench-{}", std::process::id()));
    let (config_file, config) = bench_config(upstream_addr, &data, args.auth != "off")?;
    let key = if args.auth == "off" {
        None
    } else {
        Some(register_agent(&config).await?)
    };
    let gateway = Gateway::start(&config_file).await?;
    let writ_url = gateway.mcp_url.clone();
    let base = gateway.base.clone();
    let http = reqwest::Client::new();
    let auth = match &key {
        None => None,
        Some(key) => {
            let request = TaskRequest {
                purpose: "benchmark the echo tool".into(),
                tools: vec!["bench.*".into()],
                ttl: Some(3600),
                dpop: args.auth == "dpop",
                ..TaskRequest::default()
            };
            let begun = client::begin_task(&http, &base, key, &request)
                .await
                .map_err(|e| anyhow::anyhow!("the bench task was refused: {e}"))?;
            Some(Arc::new(Auth {
                token: begun.access_token,
                key: (args.auth == "dpop").then(|| key.clone()),
            }))
        }
    };

    let text = "x".repeat(args.payload);
    let mut direct = Samples::default();
    let mut writ = Samples::default();
    let mut writ_cpu = Duration::ZERO;
    // One warm-up phase each, not counted: connections, allocators and caches settle.
    phase(
        &direct_url,
        "echo",
        &text,
        args.clients,
        args.clients * 10,
        None,
        args.rate,
    )
    .await?;
    phase(
        &writ_url,
        "echo",
        &text,
        args.clients,
        args.clients * 10,
        auth.clone(),
        args.rate,
    )
    .await?;
    for _ in 0..args.rounds {
        let d = phase(
            &direct_url,
            "echo",
            &text,
            args.clients,
            args.calls,
            None,
            args.rate,
        )
        .await?;
        direct.latencies.extend(d.latencies);
        direct.elapsed += d.elapsed;
        let cpu_before = gateway.cpu()?;
        let w = phase(
            &writ_url,
            "echo",
            &text,
            args.clients,
            args.calls,
            auth.clone(),
            args.rate,
        )
        .await?;
        writ_cpu += gateway.cpu()?.saturating_sub(cpu_before);
        writ.latencies.extend(w.latencies);
        writ.elapsed += w.elapsed;
    }
    let tokens = match &key {
        Some(key) if args.tokens > 0 => {
            Some(token_phase(&base, key, args.clients, args.tokens, args.auth == "dpop").await?)
        }
        _ => None,
    };
    let peak_rss = gateway.memory_kib("VmHWM")?;
    let rss_with_sessions = rss_with_sessions(&gateway, auth.clone(), SESSIONS).await?;
    let start_to_ready = gateway.start_to_ready;
    gateway.stop().await;
    let _ = std::fs::remove_dir_all(&data);
    let calls = writ.latencies.len().max(1) as f64;
    let gateway_report = json!({
        "start_to_ready_ms": start_to_ready.as_secs_f64() * 1_000.0,
        "cpu_us_per_call": writ_cpu.as_secs_f64() * 1e6 / calls,
        "cpu_cores": writ_cpu.as_secs_f64() / writ.elapsed.as_secs_f64().max(f64::EPSILON),
        "peak_rss_mib": peak_rss as f64 / 1024.0,
        "sessions": SESSIONS,
        "rss_with_sessions_mib": rss_with_sessions as f64 / 1024.0,
    });

    let added = |p: f64| writ.percentile(p) - direct.percentile(p);
    let report = json!({
        "scenario": "call",
        "auth": args.auth,
        "policies": if args.auth == "off" { 0 } else { BENCH_POLICIES },
        "clients": args.clients,
        "load": args.rate.map_or_else(|| json!("closed"), |rate| json!({ "open_rate": rate })),
        "payload_bytes": args.payload,
        "direct": direct.summary(),
        "writ": writ.summary(),
        "added_ms": { "p50": added(50.0), "p90": added(90.0), "p99": added(99.0), "p999": added(99.9) },
        "latency_ratio_p50": writ.percentile(50.0) / direct.percentile(50.0).max(f64::EPSILON),
        "throughput_ratio": writ.throughput() / direct.throughput().max(f64::EPSILON),
        "gateway": gateway_report,
    });
    let token_report = tokens.as_ref().map(|t| {
        json!({ "scenario": "token", "auth": args.auth, "clients": args.clients, "exchanges": t.summary() })
    });
    if args.json {
        println!("{report}");
        if let Some(token_report) = token_report {
            println!("{token_report}");
        }
        return Ok(());
    }
    println!(
        "scenario call: tools/call, {} B argument, {} clients, {}, {} calls per side, auth {}{}",
        args.payload,
        args.clients,
        args.rate.map_or_else(
            || "closed loop".to_owned(),
            |rate| format!("open loop at {rate} calls/s")
        ),
        direct.latencies.len(),
        args.auth,
        if args.auth == "off" {
            String::new()
        } else {
            format!(", {BENCH_POLICIES} Cedar policies")
        }
    );
    println!(
        "{:<8} {:>9} {:>9} {:>9} {:>9} {:>12}",
        "", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "calls/s"
    );
    for (name, s) in [("direct", &direct), ("writ", &writ)] {
        println!(
            "{name:<8} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>12.0}",
            s.percentile(50.0),
            s.percentile(90.0),
            s.percentile(99.0),
            s.percentile(99.9),
            s.throughput()
        );
    }
    println!(
        "{:<8} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
        "added",
        added(50.0),
        added(90.0),
        added(99.0),
        added(99.9)
    );
    println!(
        "throughput through Writ / direct: {:.2}",
        writ.throughput() / direct.throughput().max(f64::EPSILON)
    );
    println!(
        "gateway process: start to ready {:.0} ms; {:.0} µs of CPU per call through Writ ({:.2} cores); peak RSS {:.1} MiB; RSS with {SESSIONS} sessions open {:.1} MiB",
        start_to_ready.as_secs_f64() * 1_000.0,
        writ_cpu.as_secs_f64() * 1e6 / calls,
        writ_cpu.as_secs_f64() / writ.elapsed.as_secs_f64().max(f64::EPSILON),
        peak_rss as f64 / 1024.0,
        rss_with_sessions as f64 / 1024.0,
    );
    if let Some(t) = tokens {
        println!(
            "scenario token: {} token exchanges ({} clients): p50 {:.3} ms, p99 {:.3} ms, {:.0} exchanges/s",
            t.latencies.len(),
            args.clients,
            t.percentile(50.0),
            t.percentile(99.0),
            t.throughput()
        );
    }
    Ok(())
}

/// Sessions opened at the end to see what the gateway's memory does with many agents.
const SESSIONS: usize = 1_000;

/// Opens `count` sessions on the gateway (over a few shared connections, as agents
/// behind one egress would) and reads its resident memory while they are all open.
async fn rss_with_sessions(
    gateway: &Gateway,
    auth: Option<Arc<Auth>>,
    count: usize,
) -> anyhow::Result<u64> {
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let mut sessions = Vec::with_capacity(count);
    for _ in 0..count {
        sessions.push(Session::open_with(http.clone(), &gateway.mcp_url, auth.clone()).await?);
    }
    let rss = gateway.memory_kib("VmRSS")?;
    drop(sessions);
    Ok(rss)
}

/// The gateway under test: `writ serve` in a process of its own, as an operator runs it,
/// so that its CPU time and memory are its own and not the load generator's.
struct Gateway {
    child: std::process::Child,
    mcp_url: String,
    base: String,
    /// From starting the process to `/readyz` answering 200.
    start_to_ready: Duration,
}

impl Gateway {
    async fn start(config: &std::path::Path) -> anyhow::Result<Self> {
        let started = Instant::now();
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args(["serve", "--config"])
            .arg(config)
            .env(
                "WRIT_LOG",
                std::env::var("WRIT_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("could not start `writ serve`")?;
        let stdout = child.stdout.take().context("`writ serve` has no stdout")?;
        let (first, listening) = tokio::sync::oneshot::channel();
        // Reads the address line, then drains the rest so the gateway never blocks on a
        // full pipe.
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            let mut lines = std::io::BufReader::new(stdout).lines();
            let _ = first.send(lines.next());
            for _ in lines {}
        });
        let line = match listening.await {
            Ok(Some(Ok(line))) => line,
            _ => bail!("`writ serve` stopped before it said where it listens"),
        };
        let mcp_url = line
            .trim()
            .strip_prefix("writ listening on ")
            .with_context(|| format!("`writ serve` said `{line}`"))?
            .to_owned();
        let base = mcp_url.trim_end_matches("/mcp").to_owned();
        let http = reqwest::Client::new();
        let deadline = started + Duration::from_secs(10);
        loop {
            let ready = http.get(format!("{base}/readyz")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("the gateway did not become ready within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(Self {
            child,
            mcp_url,
            base,
            start_to_ready: started.elapsed(),
        })
    }

    /// The CPU time (user and system, every thread) the gateway has used so far.
    fn cpu(&self) -> anyhow::Result<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .context("reading the gateway's CPU time (Linux /proc)")?;
        // After the command name in parentheses: state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |index: usize| -> anyhow::Result<u64> {
            Ok(fields
                .get(index)
                .context("an unexpected /proc/PID/stat")?
                .parse()?)
        };
        // Clock ticks of 10 ms: Linux reports these at USER_HZ = 100 on every platform.
        Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
    }

    /// A memory figure of the gateway's (`VmRSS`, `VmHWM` for the peak), in KiB.
    fn memory_kib(&self, key: &str) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .context("reading the gateway's memory (Linux /proc)")?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no `{key}` in /proc/PID/status"))
    }

    /// Stops it as an operator would (SIGTERM), and kills it if it does not stop.
    async fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the bench agent sends with each call through Writ.
struct Auth {
    token: String,
    /// Present for DPoP: a fresh proof is signed for every call.
    key: Option<Arc<AgentKey>>,
}

/// Registers the bench agent in the bench's own store and returns its key.
async fn register_agent(config: &Config) -> anyhow::Result<Arc<AgentKey>> {
    let store = super::open_store(config).await?;
    let key = super::register_key_agent(
        store.as_ref(),
        "bench",
        None,
        None,
        SigningAlgorithm::EdDSA,
        None,
    )
    .await?;
    Ok(Arc::new(key))
}

/// `total` token exchanges over `clients` concurrent agents' connections.
async fn token_phase(
    base: &str,
    key: &Arc<AgentKey>,
    clients: usize,
    total: usize,
    dpop: bool,
) -> anyhow::Result<Samples> {
    let request = Arc::new(TaskRequest {
        purpose: "benchmark the token endpoint".into(),
        tools: vec!["bench.echo".into()],
        dpop,
        ..TaskRequest::default()
    });
    let mut workers = Vec::with_capacity(clients);
    for _ in 0..clients {
        let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
        workers.push((http, base.to_owned(), key.clone(), request.clone()));
    }
    closed_loop(
        workers,
        (total / clients).max(1),
        |(http, base, key, request)| async move {
            client::begin_task(&http, &base, &key, &request)
                .await
                .map(|_| ())
                .map_err(|e| anyhow::anyhow!("a token exchange failed: {e}"))
        },
    )
    .await
}

/// Each worker makes `per_worker` requests back to back, all workers at once; every
/// request's latency is a sample.
async fn closed_loop<W, F, Fut>(
    workers: Vec<W>,
    per_worker: usize,
    request: F,
) -> anyhow::Result<Samples>
where
    W: Clone + Send + 'static,
    F: Fn(W) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(workers.len());
    for worker in workers {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_worker);
            for _ in 0..per_worker {
                let sent = Instant::now();
                request(worker.clone()).await?;
                latencies.push(sent.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    gather(tasks, started).await
}

/// Every worker's latencies, once all have finished, as one set of samples over the time
/// since `started`.
async fn gather(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Vec<Duration>>>>,
    started: Instant,
) -> anyhow::Result<Samples> {
    let mut samples = Samples::default();
    for task in tasks {
        samples
            .latencies
            .extend(task.await.context("a bench client stopped")??);
    }
    samples.elapsed = started.elapsed();
    Ok(samples)
}

/// Writes the gateway's `writ.toml` (and its policies) into `data`, as an operator
/// would, and returns the file and the configuration it holds.
fn bench_config(
    upstream: SocketAddr,
    data: &std::path::Path,
    auth: bool,
) -> anyhow::Result<(std::path::PathBuf, Config)> {
    let policies = data.join("policies");
    std::fs::create_dir_all(&policies)?;
    std::fs::write(policies.join("bench.cedar"), bench_policies(BENCH_POLICIES))?;
    let text = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\nauth = \"{}\"\ntool_names = \"bare\"\n\
         [store]\npath = \"{}\"\n[policy]\ndir = \"{}\"\n\
         [[servers]]\nname = \"bench\"\ntransport = \"http\"\nurl = \"http://{upstream}/mcp\"\n\
         call_timeout = \"30s\"\n[[servers.tools]]\nname = \"echo\"\naccess = \"read\"\nrisk = \"low\"\n",
        if auth { "on" } else { "off" },
        data.join("writ.db").display(),
        policies.display()
    );
    let file = data.join("writ.toml");
    std::fs::write(&file, &text)?;
    Ok((file, Config::parse(&text)?))
}

/// How many Cedar policies the gateway decides with, as a deployment might have.
const BENCH_POLICIES: usize = 100;

/// `count` policies shaped like a real deployment's: the few that decide the bench's
/// calls (read-only default, the bench agent's server, an approval rule, an
/// export-hours rule) and many per-team, per-tool and per-server rules for other
/// servers, which slicing by resource keeps out of the bench's decisions.
fn bench_policies(count: usize) -> String {
    let mut text = String::from(
        "permit(principal, action == Writ::Action::\"begin_task\", resource);\n\
         permit(principal, action in [Writ::Action::\"discover\", Writ::Action::\"call\"], resource) when { resource.access == \"read\" };\n\
         permit(principal == Writ::Agent::\"bench\", action in [Writ::Action::\"discover\", Writ::Action::\"call\"], resource in Writ::Server::\"bench\");\n\
         @approval(\"ops-leads\") forbid(principal, action == Writ::Action::\"call\", resource) when { resource.access == \"execute\" } unless { context.approved };\n\
         forbid(principal, action == Writ::Action::\"call\", resource) when { resource.data_classes.contains(\"export\") && context.environment == \"prod\" && (context.time.weekday > 5 || context.time.hour < 8 || context.time.hour >= 18) };\n",
    );
    for i in 5..count {
        let server = format!("s{}", i % 20);
        text.push_str(&match i % 3 {
            0 => format!(
                "permit(principal in Writ::Team::\"team{}\", action in [Writ::Action::\"discover\", Writ::Action::\"call\"], resource == Writ::Tool::\"{server}.tool{i}\");\n",
                i % 7
            ),
            1 => format!(
                "forbid(principal, action == Writ::Action::\"call\", resource in Writ::Server::\"{server}\") when {{ resource.risk_level >= 3 && context.task.calls > {i} }};\n"
            ),
            _ => format!(
                "forbid(principal, action == Writ::Action::\"call\", resource in Writ::ToolGroup::\"group{}\") when {{ context.arguments_omitted }};\n",
                i % 11
            ),
        });
    }
    text
}

/// `clients` sessions sharing `calls` calls, back to back (closed loop) or at `rate`
/// calls per second in all (open loop).
async fn phase(
    url: &str,
    tool: &str,
    text: &str,
    clients: usize,
    calls: usize,
    auth: Option<Arc<Auth>>,
    rate: Option<u32>,
) -> anyhow::Result<Samples> {
    let mut sessions = Vec::with_capacity(clients);
    for _ in 0..clients {
        sessions.push(Session::open(url, auth.clone()).await?);
    }
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {"text": text}}}).to_string();
    let body: Arc<str> = body.into();
    let workers = sessions
        .into_iter()
        .map(|s| (Arc::new(s), body.clone()))
        .collect();
    let call = |(session, body): (Arc<Session>, Arc<str>)| async move {
        session.call(body.to_string()).await
    };
    match rate {
        None => closed_loop(workers, calls / clients, call).await,
        Some(rate) => open_loop(workers, calls / clients, rate, call).await,
    }
}

/// Each of the workers makes `per_worker` requests on a fixed schedule, so that all of
/// them together make `rate` per second, staggered evenly. A request is never sent
/// before the one before it on that worker answered (one keep-alive connection each).
/// A request held up by the one before it counts from when it was due, so stalls are
/// not hidden (no coordinated omission); one that was not counts from when it was sent,
/// so the timer's 1 ms tick (a wake-up up to 1 ms after the due time) is not counted
/// as latency on either side.
async fn open_loop<W, F, Fut>(
    workers: Vec<W>,
    per_worker: usize,
    rate: u32,
    request: F,
) -> anyhow::Result<Samples>
where
    W: Clone + Send + 'static,
    F: Fn(W) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    if rate == 0 {
        bail!("`--rate` must be above zero");
    }
    let count = workers.len() as u32;
    let interval = Duration::from_secs_f64(f64::from(count) / f64::from(rate));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(workers.len());
    for (index, worker) in workers.into_iter().enumerate() {
        let request = request.clone();
        let offset = interval.mul_f64(index as f64 / f64::from(count));
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_worker);
            let mut free_since = started;
            for n in 0..per_worker {
                let due = started + offset + interval.mul_f64(n as f64);
                tokio::time::sleep_until(due.into()).await;
                let from = if free_since > due {
                    due
                } else {
                    Instant::now()
                };
                request(worker.clone()).await?;
                free_since = Instant::now();
                latencies.push(free_since - from);
            }
            anyhow::Ok(latencies)
        }));
    }
    gather(tasks, started).await
}

struct Session {
    http: reqwest::Client,
    url: String,
    id: String,
    auth: Option<Arc<Auth>>,
}

impl Session {
    fn authorize(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        Ok(match &self.auth {
            None => request,
            Some(auth) => match &auth.key {
                None => request.header("authorization", format!("Bearer {}", auth.token)),
                Some(key) => request
                    .header("authorization", format!("DPoP {}", auth.token))
                    .header(
                        "dpop",
                        key.dpop_proof("POST", &self.url, Some(&auth.token), None)?,
                    ),
            },
        })
    }

    async fn open(url: &str, auth: Option<Arc<Auth>>) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1)
            .build()?;
        Self::open_with(http, url, auth).await
    }

    /// A session over `http`'s connections (shared with other sessions).
    async fn open_with(
        http: reqwest::Client,
        url: &str,
        auth: Option<Arc<Auth>>,
    ) -> anyhow::Result<Self> {
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "writ-bench", "version": "1"}}});
        let mut session = Self {
            http,
            url: url.to_owned(),
            id: String::new(),
            auth,
        };
        let response = session
            .authorize(session.http.post(url))?
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(init.to_string())
            .send()
            .await?;
        session.id = response
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .with_context(|| format!("no session id (HTTP {})", response.status()))?
            .to_owned();
        let _ = response.bytes().await?;
        Ok(session)
    }

    async fn call(&self, body: String) -> anyhow::Result<()> {
        let response = self
            .authorize(self.http.post(&self.url))?
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &self.id)
            .header("mcp-protocol-version", "2025-11-25")
            .body(body)
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("call failed with HTTP {}", response.status());
        }
        let bytes = response.bytes().await?;
        if bytes.windows(8).any(|w| w == b"\"error\":") {
            bail!("call failed: {}", String::from_utf8_lossy(&bytes));
        }
        Ok(())
    }
}
