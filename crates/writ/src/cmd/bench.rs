//! `writ bench`: what Writ costs, side by side with a direct connection to the same
//! upstream, in the same run.
//!
//! The upstream is Writ's kit server on loopback with an `echo` tool and a catalog of
//! other tools (500 in all by default), some read-only and some destructive. The gateway
//! is `writ serve` in a process of its own, started from a `writ.toml` the bench writes
//! as an operator would, so its start-to-ready time, CPU time and memory are its own
//! (read from Linux's /proc). Agents authenticate as a user would run Writ: a registered
//! agent begins a task and sends its writ (bearer, or DPoP-bound with a fresh proof per
//! request) on every request, and Cedar decides every call and every listed tool against
//! 100 policies shaped like a deployment's; the audit log records every decision before
//! the call goes on, at its default durability.
//!
//! Scenarios: `call` (`tools/call` with a 1 KiB argument), `list` (`tools/list` of the
//! whole catalog, which Writ filters by policy and task), `token` (the token exchange
//! itself). Each of `call` and `list` runs in both protocol eras (2025-11-25 sessions,
//! 2026-07-28 stateless) and under both loads: an open loop at a fixed rate for latency,
//! and a closed loop (each client back to back) for the most each side carries. Phases
//! alternate (direct, Writ, direct, Writ, …) so drift on a shared machine hits both
//! sides alike.

mod client;
mod gateway;
mod load;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use writ_agent::AgentKey;
use writ_agent::client::{self as token_client, TaskRequest};
use writ_core::config::{Config, SigningAlgorithm};
use writ_mcp::server::{Tool, ToolServer, text_result};

use client::{Auth, Client, Era, Request};
use gateway::Gateway;
use load::{Samples, closed_loop, open_loop};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenarios to run, comma-separated: `call`, `list`, `token`.
    #[arg(long, value_delimiter = ',', default_value = "call,list,token")]
    scenario: Vec<Scenario>,
    /// Protocol eras for `call` and `list`, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "2025-11-25,2026-07-28")]
    era: Vec<Era>,
    /// Loads for `call` and `list`, comma-separated: `open` (a fixed rate, for latency)
    /// and `closed` (each client back to back, for the most a side carries).
    #[arg(long, value_delimiter = ',', default_value = "open,closed")]
    load: Vec<Load>,
    /// How agents authenticate through Writ, comma-separated: `bearer` writs, `dpop`-bound
    /// writs (a fresh proof signed per request, counted in Writ's latency), or `off` on
    /// its own (a gateway without authentication, policy or audit of calls).
    #[arg(long, value_delimiter = ',', default_value = "bearer,dpop")]
    auth: Vec<AuthMode>,
    /// Concurrent clients, each with its own keep-alive connection (and session, in the
    /// 2025-11-25 era).
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// `tools/call` requests per phase, spread over the clients.
    #[arg(long, default_value_t = 3000)]
    calls: usize,
    /// The open loop's rate for `call`, in calls per second across all clients.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Size of the `text` argument of each call, in bytes.
    #[arg(long, default_value_t = 1024)]
    payload: usize,
    /// Tools the upstream offers (the `echo` tool and a catalog of others).
    #[arg(long, default_value_t = 500)]
    tools: usize,
    /// `tools/list` requests per phase.
    #[arg(long, default_value_t = 400)]
    list_calls: usize,
    /// The open loop's rate for `list`, in lists per second: a whole catalog per request
    /// is far more work than one call on either side.
    #[arg(long, default_value_t = 100)]
    list_rate: u32,
    /// Direct/Writ phase pairs per scenario, era and load.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Token exchanges to time in the `token` scenario.
    #[arg(long, default_value_t = 400)]
    tokens: usize,
    /// Where the upstream runs: in a `process` of its own (the default: an agent never
    /// shares a process with the MCP server it calls, so neither does the bench's
    /// direct side), or `in-process`, inside the bench's own process beside its
    /// clients, where a direct call never leaves a warm runtime.
    #[arg(long, value_enum, default_value = "process")]
    upstream: UpstreamPlace,
    /// Print one JSON object per scenario, era, authentication and load (one per line)
    /// instead of tables.
    #[arg(long)]
    json: bool,
    /// Serve only the bench's upstream, print its address and run until stdin closes
    /// (how the bench starts its upstream process).
    #[arg(long, hide = true)]
    serve_upstream: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum UpstreamPlace {
    Process,
    InProcess,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    Call,
    List,
    Token,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Load {
    Open,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AuthMode {
    Off,
    Bearer,
    Dpop,
}

impl AuthMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Bearer => "bearer",
            Self::Dpop => "dpop",
        }
    }
}

impl Args {
    fn check(&self) -> anyhow::Result<()> {
        if self.clients == 0 || self.calls < self.clients || self.list_calls < self.clients {
            bail!("`--calls` and `--list-calls` must be at least `--clients`, and all above zero");
        }
        if self.rate == 0 || self.list_rate == 0 {
            bail!("`--rate` and `--list-rate` must be above zero");
        }
        if self.auth.contains(&AuthMode::Off) && self.auth.len() > 1 {
            bail!(
                "`--auth off` needs a gateway of its own (authentication off); run it on its own"
            );
        }
        if self.tools == 0 {
            bail!("`--tools` must be at least 1 (the `echo` tool)");
        }
        Ok(())
    }
}

/// How many Cedar policies the gateway decides with, as a deployment might have.
const BENCH_POLICIES: usize = 100;

/// Sessions opened at the end to see what the gateway's memory does with many agents.
const SESSIONS: usize = 1_000;

pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.serve_upstream {
        return serve_upstream(args.tools).await;
    }
    args.check()?;
    let upstream = match args.upstream {
        UpstreamPlace::InProcess => {
            let (addr, task) = ToolServer::new("writ-bench", bench_tools(args.tools))
                .serve("127.0.0.1:0".parse()?)
                .await?;
            Upstream::InProcess(addr, task)
        }
        UpstreamPlace::Process => Upstream::start(args.tools).await?,
    };
    let data = std::env::temp_dir().join(format!("writ-bench-{}", std::process::id()));
    let outcome = run_against(&args, upstream.addr(), &data).await;
    let _ = std::fs::remove_dir_all(&data);
    upstream.stop();
    outcome
}

/// The upstream both sides call.
enum Upstream {
    InProcess(SocketAddr, tokio::task::JoinHandle<()>),
    /// `writ bench --serve-upstream` as a child; it stops when its stdin closes.
    Process(SocketAddr, std::process::Child),
}

impl Upstream {
    async fn start(tools: usize) -> anyhow::Result<Self> {
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args(["bench", "--serve-upstream", "--tools", &tools.to_string()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("could not start the bench's upstream process")?;
        let stdout = child
            .stdout
            .take()
            .context("the upstream process has no stdout")?;
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
                .map(|_| line)
        })
        .await??;
        let Some(addr) = line.trim().strip_prefix("upstream listening on ") else {
            let _ = child.kill();
            bail!("the bench's upstream process said `{}`", line.trim());
        };
        Ok(Self::Process(addr.parse()?, child))
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Self::InProcess(addr, _) | Self::Process(addr, _) => *addr,
        }
    }

    fn stop(self) {
        match self {
            Self::InProcess(_, task) => task.abort(),
            Self::Process(_, mut child) => {
                drop(child.stdin.take());
                for _ in 0..100 {
                    if child.try_wait().ok().flatten().is_some() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The upstream process: serves the bench's tools until its parent closes stdin.
#[expect(
    clippy::print_stdout,
    reason = "the parent reads the address from stdout"
)]
async fn serve_upstream(tools: usize) -> anyhow::Result<()> {
    let (addr, _task) = ToolServer::new("writ-bench", bench_tools(tools))
        .serve("127.0.0.1:0".parse()?)
        .await?;
    println!("upstream listening on {addr}");
    tokio::task::spawn_blocking(|| {
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
    })
    .await?;
    Ok(())
}

async fn run_against(
    args: &Args,
    upstream: SocketAddr,
    data: &std::path::Path,
) -> anyhow::Result<()> {
    let auth_on = !args.auth.contains(&AuthMode::Off);
    let (config_file, config) = bench_config(upstream, data, auth_on)?;
    let key = if auth_on {
        Some(register_agent(&config).await?)
    } else {
        None
    };
    let gateway = Gateway::start(&config_file).await?;
    let bench = Bench {
        args,
        direct_url: format!("http://{upstream}/mcp"),
        gateway,
    };
    let outcome = bench.run_all(key.as_ref()).await;
    bench.gateway.stop().await;
    let (comparisons, tokens, process) = outcome?;
    report(args, &comparisons, &tokens, &process);
    Ok(())
}

struct Bench<'a> {
    args: &'a Args,
    direct_url: String,
    gateway: Gateway,
}

/// What the gateway process showed over the whole run.
struct Process {
    start_to_ready: Duration,
    peak_rss_kib: u64,
    rss_with_sessions_kib: u64,
}

impl Bench<'_> {
    async fn run_all(
        &self,
        key: Option<&Arc<AgentKey>>,
    ) -> anyhow::Result<(Vec<Comparison>, Vec<TokenRun>, Process)> {
        let args = self.args;
        let mut comparisons = Vec::new();
        let mut tokens = Vec::new();
        let mut last_auth = None;
        for &mode in &args.auth {
            let auth = self.begin_task(mode, key).await?;
            last_auth = auth.clone();
            for scenario in [Scenario::Call, Scenario::List] {
                if !args.scenario.contains(&scenario) {
                    continue;
                }
                for &era in &args.era {
                    for &load in &args.load {
                        eprintln!(
                            "writ bench: {} · {} · auth {} · {} loop…",
                            scenario_name(scenario),
                            era.as_str(),
                            mode.as_str(),
                            load_name(load)
                        );
                        comparisons.push(
                            self.compare(scenario, era, load, mode, auth.clone())
                                .await?,
                        );
                    }
                }
            }
            if let (true, Some(key), true) = (
                args.scenario.contains(&Scenario::Token),
                key,
                args.tokens > 0,
            ) {
                eprintln!("writ bench: token · auth {}…", mode.as_str());
                let cpu_before = self.gateway.cpu()?;
                let samples = token_phase(
                    &self.gateway.base,
                    key,
                    args.clients,
                    args.tokens,
                    mode == AuthMode::Dpop,
                )
                .await?;
                tokens.push(TokenRun {
                    auth: mode,
                    samples,
                    cpu: self.gateway.cpu()?.saturating_sub(cpu_before),
                });
            }
        }
        eprintln!("writ bench: opening {SESSIONS} sessions on the gateway…");
        let peak_rss_kib = self.gateway.memory_kib("VmHWM")?;
        let rss_with_sessions_kib = self.rss_with_sessions(last_auth).await?;
        let process = Process {
            start_to_ready: self.gateway.start_to_ready,
            peak_rss_kib,
            rss_with_sessions_kib,
        };
        Ok((comparisons, tokens, process))
    }

    /// The bench agent's credentials for `mode`: a task begun with its key, whose writ
    /// is bearer or bound to the key.
    async fn begin_task(
        &self,
        mode: AuthMode,
        key: Option<&Arc<AgentKey>>,
    ) -> anyhow::Result<Option<Arc<Auth>>> {
        let (AuthMode::Bearer | AuthMode::Dpop, Some(key)) = (mode, key) else {
            return Ok(None);
        };
        let request = TaskRequest {
            purpose: "benchmark the echo tool and the catalog".into(),
            tools: vec!["bench.*".into()],
            ttl: Some(3600),
            dpop: mode == AuthMode::Dpop,
            ..TaskRequest::default()
        };
        let begun =
            token_client::begin_task(&reqwest::Client::new(), &self.gateway.base, key, &request)
                .await
                .map_err(|e| anyhow::anyhow!("the bench task was refused: {e}"))?;
        Ok(Some(Arc::new(Auth {
            token: begun.access_token,
            key: (mode == AuthMode::Dpop).then(|| key.clone()),
        })))
    }

    /// One scenario in one era under one load: a warm-up on each side, then `rounds`
    /// pairs of direct and Writ phases.
    async fn compare(
        &self,
        scenario: Scenario,
        era: Era,
        load: Load,
        auth: AuthMode,
        credentials: Option<Arc<Auth>>,
    ) -> anyhow::Result<Comparison> {
        let args = self.args;
        let writ_url = &self.gateway.mcp_url;
        let (request, calls, rate) = match scenario {
            Scenario::List => (
                Request::new(era, "tools/list", json!({})),
                args.list_calls,
                args.list_rate,
            ),
            _ => (
                Request::new(
                    era,
                    "tools/call",
                    json!({"name": "echo", "arguments": {"text": "x".repeat(args.payload)}}),
                ),
                args.calls,
                args.rate,
            ),
        };
        let listed = match scenario {
            Scenario::List => Some(Listed {
                direct: count_tools(&self.direct_url, era, None, &request).await?,
                writ: count_tools(writ_url, era, credentials.clone(), &request).await?,
            }),
            _ => None,
        };
        if let Some(listed) = &listed
            && (listed.writ == 0 || listed.writ > listed.direct)
        {
            bail!(
                "Writ listed {} of the upstream's {} tools; the bench's policies or catalog are wrong",
                listed.writ,
                listed.direct
            );
        }
        // Warm-up, not counted: connections, allocators and caches settle.
        let warm_up = args.clients * 10;
        let closed = Load::Closed;
        phase(
            &self.direct_url,
            era,
            &request,
            args.clients,
            warm_up,
            None,
            closed,
            rate,
        )
        .await?;
        phase(
            writ_url,
            era,
            &request,
            args.clients,
            warm_up,
            credentials.clone(),
            closed,
            rate,
        )
        .await?;
        let mut comparison = Comparison {
            scenario,
            era,
            auth,
            load,
            rate,
            listed,
            direct: Samples::default(),
            writ: Samples::default(),
            writ_cpu: Duration::ZERO,
        };
        for _ in 0..args.rounds {
            let direct = phase(
                &self.direct_url,
                era,
                &request,
                args.clients,
                calls,
                None,
                load,
                rate,
            )
            .await?;
            comparison.direct.extend(direct);
            let cpu_before = self.gateway.cpu()?;
            let writ = phase(
                writ_url,
                era,
                &request,
                args.clients,
                calls,
                credentials.clone(),
                load,
                rate,
            )
            .await?;
            comparison.writ_cpu += self.gateway.cpu()?.saturating_sub(cpu_before);
            comparison.writ.extend(writ);
        }
        Ok(comparison)
    }

    /// Opens [`SESSIONS`] sessions on the gateway (over a few shared connections, as
    /// agents behind one egress would) and reads its resident memory while they are open.
    async fn rss_with_sessions(&self, auth: Option<Arc<Auth>>) -> anyhow::Result<u64> {
        let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
        let mut sessions = Vec::with_capacity(SESSIONS);
        for _ in 0..SESSIONS {
            sessions.push(
                Client::open_with(
                    http.clone(),
                    &self.gateway.mcp_url,
                    Era::Sessions,
                    auth.clone(),
                )
                .await?,
            );
        }
        let rss = self.gateway.memory_kib("VmRSS")?;
        drop(sessions);
        Ok(rss)
    }
}

/// How many tools one list through `url` shows.
async fn count_tools(
    url: &str,
    era: Era,
    auth: Option<Arc<Auth>>,
    request: &Request,
) -> anyhow::Result<usize> {
    Client::open(url, era, auth)
        .await?
        .count_tools(request)
        .await
}

/// `clients` clients sharing `calls` requests, back to back (closed loop) or at `rate`
/// requests per second in all (open loop).
#[expect(
    clippy::too_many_arguments,
    reason = "one phase's every knob, named at the call"
)]
async fn phase(
    url: &str,
    era: Era,
    request: &Request,
    clients: usize,
    calls: usize,
    auth: Option<Arc<Auth>>,
    load: Load,
    rate: u32,
) -> anyhow::Result<Samples> {
    let mut workers = Vec::with_capacity(clients);
    for _ in 0..clients {
        workers.push((
            Arc::new(Client::open(url, era, auth.clone()).await?),
            Arc::new(request.clone()),
        ));
    }
    let send =
        |(client, request): (Arc<Client>, Arc<Request>)| async move { client.send(&request).await };
    match load {
        Load::Closed => closed_loop(workers, calls / clients, send).await,
        Load::Open => open_loop(workers, calls / clients, rate, send).await,
    }
}

/// Tools shown by one list, directly and through Writ.
struct Listed {
    direct: usize,
    writ: usize,
}

/// One scenario, era, authentication and load: both sides' samples.
struct Comparison {
    scenario: Scenario,
    era: Era,
    auth: AuthMode,
    load: Load,
    /// The open loop's rate (unused in a closed loop).
    rate: u32,
    listed: Option<Listed>,
    direct: Samples,
    writ: Samples,
    /// The gateway's CPU time over the Writ phases.
    writ_cpu: Duration,
}

impl Comparison {
    fn added(&self, p: f64) -> f64 {
        self.writ.percentile(p) - self.direct.percentile(p)
    }

    fn throughput_ratio(&self) -> f64 {
        self.writ.throughput() / self.direct.throughput().max(f64::EPSILON)
    }

    fn cpu_us_per_request(&self) -> f64 {
        self.writ_cpu.as_secs_f64() * 1e6 / self.writ.latencies.len().max(1) as f64
    }

    fn cpu_cores(&self) -> f64 {
        self.writ_cpu.as_secs_f64() / self.writ.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    fn json(&self, args: &Args, process: &Value) -> Value {
        let mut gateway = process.clone();
        if let Some(gateway) = gateway.as_object_mut() {
            gateway.insert("cpu_us_per_call".into(), json!(self.cpu_us_per_request()));
            gateway.insert("cpu_cores".into(), json!(self.cpu_cores()));
        }
        let mut report = json!({
            "scenario": scenario_name(self.scenario),
            "era": self.era.as_str(),
            "auth": self.auth.as_str(),
            "policies": if self.auth == AuthMode::Off { 0 } else { BENCH_POLICIES },
            "clients": args.clients,
            "load": match self.load {
                Load::Open => json!({ "kind": "open", "rate": self.rate }),
                Load::Closed => json!({ "kind": "closed" }),
            },
            "direct": self.direct.summary(),
            "writ": self.writ.summary(),
            "added_ms": {
                "p50": self.added(50.0), "p90": self.added(90.0),
                "p99": self.added(99.0), "p999": self.added(99.9),
            },
            "latency_ratio_p50": self.writ.percentile(50.0) / self.direct.percentile(50.0).max(f64::EPSILON),
            "throughput_ratio": self.throughput_ratio(),
            "gateway": gateway,
        });
        if let Some(report) = report.as_object_mut() {
            match &self.listed {
                Some(listed) => {
                    report.insert(
                        "tools".into(),
                        json!({ "upstream": listed.direct, "shown": listed.writ }),
                    );
                }
                None => {
                    report.insert("payload_bytes".into(), json!(args.payload));
                }
            }
        }
        report
    }

    #[expect(clippy::print_stdout, reason = "the report is the command's output")]
    fn print(&self, args: &Args) {
        let what = match (&self.listed, self.scenario) {
            (Some(listed), _) => format!(
                "tools/list of {} tools ({} shown through Writ)",
                listed.direct, listed.writ
            ),
            _ => format!("tools/call, {} B argument", args.payload),
        };
        println!(
            "\nscenario {}: {what}; {} era; {} clients; {}; auth {}{}",
            scenario_name(self.scenario),
            self.era.as_str(),
            args.clients,
            match self.load {
                Load::Open => format!("open loop at {}/s", self.rate),
                Load::Closed => "closed loop".to_owned(),
            },
            self.auth.as_str(),
            if self.auth == AuthMode::Off {
                String::new()
            } else {
                format!(", {BENCH_POLICIES} Cedar policies")
            }
        );
        println!(
            "{:<8} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7}",
            "", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "per s", "count"
        );
        for (name, s) in [("direct", &self.direct), ("writ", &self.writ)] {
            println!(
                "{name:<8} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>10.0} {:>7}",
                s.percentile(50.0),
                s.percentile(90.0),
                s.percentile(99.0),
                s.percentile(99.9),
                s.throughput(),
                s.latencies.len()
            );
        }
        println!(
            "{:<8} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            "added",
            self.added(50.0),
            self.added(90.0),
            self.added(99.0),
            self.added(99.9)
        );
        println!(
            "throughput through Writ / direct {:.2}; gateway CPU {:.0} µs per request ({:.2} cores)",
            self.throughput_ratio(),
            self.cpu_us_per_request(),
            self.cpu_cores()
        );
    }
}

/// Token exchanges timed under one authentication mode.
struct TokenRun {
    auth: AuthMode,
    samples: Samples,
    /// The gateway's CPU time over the exchanges.
    cpu: Duration,
}

impl TokenRun {
    fn cpu_us_per_exchange(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.samples.latencies.len().max(1) as f64
    }
}

/// Prints every comparison and token run, as tables or as JSON lines.
#[expect(clippy::print_stdout, reason = "the report is the command's output")]
fn report(args: &Args, comparisons: &[Comparison], tokens: &[TokenRun], process: &Process) {
    let process_json = json!({
        "start_to_ready_ms": process.start_to_ready.as_secs_f64() * 1_000.0,
        "peak_rss_mib": process.peak_rss_kib as f64 / 1024.0,
        "sessions": SESSIONS,
        "rss_with_sessions_mib": process.rss_with_sessions_kib as f64 / 1024.0,
    });
    if args.json {
        for comparison in comparisons {
            println!("{}", comparison.json(args, &process_json));
        }
        for run in tokens {
            // The exchange has no direct counterpart: nothing but Writ issues writs.
            println!(
                "{}",
                json!({
                    "scenario": "token", "auth": run.auth.as_str(), "clients": args.clients,
                    "direct": null, "writ": run.samples.summary(),
                    "cpu_us_per_exchange": run.cpu_us_per_exchange(), "gateway": process_json,
                })
            );
        }
        return;
    }
    for comparison in comparisons {
        comparison.print(args);
    }
    for run in tokens {
        let t = &run.samples;
        println!(
            "\nscenario token: {} token exchanges ({} clients, auth {}): p50 {:.3} ms, p99 {:.3} ms, {:.0} exchanges/s; gateway CPU {:.0} µs per exchange",
            t.latencies.len(),
            args.clients,
            run.auth.as_str(),
            t.percentile(50.0),
            t.percentile(99.0),
            t.throughput(),
            run.cpu_us_per_exchange()
        );
    }
    println!(
        "\ngateway process: start to ready {:.0} ms; peak RSS {:.1} MiB; RSS with {SESSIONS} sessions open {:.1} MiB",
        process.start_to_ready.as_secs_f64() * 1_000.0,
        process.peak_rss_kib as f64 / 1024.0,
        process.rss_with_sessions_kib as f64 / 1024.0,
    );
}

fn scenario_name(scenario: Scenario) -> &'static str {
    match scenario {
        Scenario::Call => "call",
        Scenario::List => "list",
        Scenario::Token => "token",
    }
}

fn load_name(load: Load) -> &'static str {
    match load {
        Load::Open => "open",
        Load::Closed => "closed",
    }
}

/// The upstream's tools: `echo`, and a catalog filling up to `count` with tools of
/// realistic size, two in five read-only (shown to the bench agent) and the rest
/// destructive (hidden by policy).
fn bench_tools(count: usize) -> Vec<Tool> {
    let mut tools = vec![Tool::new(
        "echo",
        "Echo the text.",
        json!({"type": "object", "properties": {"text": {"type": "string"}}}),
        json!({"readOnlyHint": true}),
        |args| {
            Ok(text_result(
                args.get("text").and_then(Value::as_str).unwrap_or_default(),
            ))
        },
    )];
    for i in 1..count {
        let read_only = i % 5 < 2;
        tools.push(Tool::new(
            &format!("tool{i:03}"),
            &format!(
                "Catalog tool {i}: {} records of the bench's imaginary inventory by id, with paging.",
                if read_only { "looks up" } else { "deletes" }
            ),
            json!({"type": "object", "properties": {
                "id": {"type": "string", "description": "The record's id."},
                "page": {"type": "integer", "minimum": 1},
            }, "required": ["id"]}),
            if read_only {
                json!({"readOnlyHint": true})
            } else {
                json!({"readOnlyHint": false, "destructiveHint": true})
            },
            |_| Ok(text_result("done")),
        ));
    }
    tools
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
            token_client::begin_task(&http, &base, &key, &request)
                .await
                .map(|_| ())
                .map_err(|e| anyhow::anyhow!("a token exchange failed: {e}"))
        },
    )
    .await
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
         call_timeout = \"30s\"\ntrusted = true\n[[servers.tools]]\nname = \"echo\"\naccess = \"read\"\nrisk = \"low\"\n",
        if auth { "on" } else { "off" },
        data.join("writ.db").display(),
        policies.display()
    );
    let file = data.join("writ.toml");
    std::fs::write(&file, &text)?;
    Ok((file, Config::parse(&text)?))
}

/// `count` policies shaped like a real deployment's: the few that decide the bench's
/// requests (read-only default, which shows the catalog's read-only tools; the bench
/// agent's own `echo`; an approval rule; an export-hours rule) and many per-team, per-tool and per-server rules for other
/// servers, which slicing by resource keeps out of the bench's decisions.
fn bench_policies(count: usize) -> String {
    let mut text = String::from(
        "permit(principal, action == Writ::Action::\"begin_task\", resource);\n\
         permit(principal, action in [Writ::Action::\"discover\", Writ::Action::\"call\"], resource) when { resource.access == \"read\" };\n\
         permit(principal == Writ::Agent::\"bench\", action in [Writ::Action::\"discover\", Writ::Action::\"call\"], resource == Writ::Tool::\"bench.echo\");\n\
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
