//! How load is driven: a closed loop (each worker back to back, for the most a side can
//! carry) or an open loop (a fixed rate, for latency), and the latencies they collect.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// Latencies of one side, and the wall-clock time they were collected in.
#[derive(Debug, Default)]
pub struct Samples {
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

impl Samples {
    /// The `p`th percentile latency in milliseconds (nearest rank).
    pub fn percentile(&self, p: f64) -> f64 {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return 0.0;
        }
        // Less a hair, so that a rank that is whole on paper (99.9% of 1,000) is not
        // pushed to the next one by floating point.
        let rank = ((p / 100.0) * (sorted.len() as f64) - 1e-9).ceil() as usize;
        sorted
            .get(rank.saturating_sub(1).min(sorted.len() - 1))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    }

    /// Requests answered per second of wall-clock time.
    pub fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// Adds another phase's samples (phases of one side alternate with the other side's).
    pub fn extend(&mut self, other: Samples) {
        self.latencies.extend(other.latencies);
        self.elapsed += other.elapsed;
    }

    pub fn summary(&self) -> Value {
        json!({
            "p50": self.percentile(50.0), "p90": self.percentile(90.0),
            "p99": self.percentile(99.0), "p999": self.percentile(99.9),
            "throughput": self.throughput(), "calls": self.latencies.len(),
        })
    }
}

/// Each worker makes `per_worker` requests back to back, all workers at once; every
/// request's latency is a sample.
pub async fn closed_loop<W, F, Fut>(
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

/// Each of the workers makes `per_worker` requests on a fixed schedule, so that all of
/// them together make `rate` per second, staggered evenly. A request is never sent
/// before the one before it on that worker answered (one keep-alive connection each).
/// A request held up by the one before it counts from when it was due, so stalls are
/// not hidden (no coordinated omission); one that was not counts from when it was sent,
/// so the timer's 1 ms tick (a wake-up up to 1 ms after the due time) is not counted
/// as latency on either side.
pub async fn open_loop<W, F, Fut>(
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
        bail!("an open loop's rate must be above zero");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples = Samples {
            latencies: (1..=1000).map(Duration::from_millis).collect(),
            elapsed: Duration::from_secs(2),
        };
        assert_eq!(samples.percentile(50.0), 500.0);
        assert_eq!(samples.percentile(99.0), 990.0);
        assert_eq!(samples.percentile(99.9), 999.0);
        assert_eq!(samples.throughput(), 500.0);
        assert_eq!(Samples::default().percentile(50.0), 0.0);
    }
}
