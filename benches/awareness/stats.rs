//! Running one operation from N tasks and summarising what happened.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One measured run: throughput and latency.
#[derive(Debug, Clone, Copy)]
pub struct Figure {
    pub ops_per_s: f64,
    pub rows_per_s: f64,
    pub p50: Duration,
    pub p99: Duration,
}

/// `p`-th percentile (0..=100) of sorted latencies.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p / 100.0).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Builds a figure from every operation's latency, the rows they touched and the wall time.
pub fn figure(mut latencies: Vec<Duration>, rows: u64, wall: Duration) -> Figure {
    latencies.sort_unstable();
    let secs = wall.as_secs_f64().max(1e-9);
    Figure {
        ops_per_s: latencies.len() as f64 / secs,
        rows_per_s: rows as f64 / secs,
        p50: percentile(&latencies, 50.0),
        p99: percentile(&latencies, 99.0),
    }
}

/// The run with the median throughput of several.
pub fn median(mut runs: Vec<Figure>) -> Figure {
    runs.sort_by(|a, b| a.ops_per_s.total_cmp(&b.ops_per_s));
    runs[runs.len() / 2]
}

/// Runs `per_task` calls of `op(task, i)` in each of `tasks` tokio tasks, all started together.
/// `op` returns how many rows the call touched. Any error aborts the benchmark: a benchmark
/// that silently skips failures measures nothing.
pub async fn run_tasks<F, Fut>(tasks: usize, per_task: usize, op: F) -> Figure
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = u64> + Send,
{
    let op = Arc::new(op);
    let barrier = Arc::new(tokio::sync::Barrier::new(tasks + 1));
    let mut handles = Vec::new();
    for t in 0..tasks {
        let op = op.clone();
        let barrier = barrier.clone();
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_task);
            let mut rows = 0;
            barrier.wait().await;
            for i in 0..per_task {
                let start = Instant::now();
                rows += op(t, i).await;
                latencies.push(start.elapsed());
            }
            (latencies, rows)
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    let mut latencies = Vec::with_capacity(tasks * per_task);
    let mut rows = 0;
    for h in handles {
        let (l, r) = h.await.expect("benchmark task panicked");
        latencies.extend(l);
        rows += r;
    }
    figure(latencies, rows, start.elapsed())
}
