//! The gateway under test: `writ serve` in a process of its own, and what Linux's /proc
//! says about its CPU time and memory.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The gateway under test: `writ serve` in a process of its own, as an operator runs it,
/// so that its CPU time and memory are its own and not the load generator's.
pub struct Gateway {
    child: std::process::Child,
    pub mcp_url: String,
    pub base: String,
    /// From starting the process to `/readyz` answering 200.
    pub start_to_ready: Duration,
}

impl Gateway {
    pub async fn start(config: &std::path::Path) -> anyhow::Result<Self> {
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
    pub fn cpu(&self) -> anyhow::Result<Duration> {
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
    pub fn memory_kib(&self, key: &str) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .context("reading the gateway's memory (Linux /proc)")?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no `{key}` in /proc/PID/status"))
    }

    /// Stops it as an operator would (SIGTERM), and kills it if it does not stop.
    pub async fn stop(mut self) {
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
