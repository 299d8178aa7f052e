//! What a transaction-mode pooler costs: heartbeat `set`s through the store's public API,
//! directly and through PgBouncer (`pool_mode = transaction`), at 1, 4 and 16 tasks.
//!
//! ```sh
//! DATABASE_URL='postgres://postgres@127.0.0.1:5432/test?sslmode=disable' \
//! POOLER_URL='postgres://postgres@127.0.0.1:6432/test?sslmode=disable' \
//! cargo run --release --example pooler_cost [seconds per run, default 3] [rounds, default 3]
//! ```
//!
//! Both URLs name the same database (migrated here). Sides, interleaved per round, medians
//! printed: `direct` (the store as usual), `pooler` (through PgBouncer with
//! `transaction_pooler`), and `pooler, setting off` (through PgBouncer as if it were a direct
//! connection: the failure the setting exists for; its errors are counted). Each side writes its
//! own clients with clocks that keep rising across rounds, so no side's rows make another's
//! writes stale.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use synckit_awareness::{AwarenessStore, AwarenessUpdate, PostgresAwarenessStore, PostgresOptions};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const CLIENTS_PER_TASK: usize = 50;

struct Side {
    name: &'static str,
    store: Arc<PostgresAwarenessStore>,
    clock: Arc<AtomicU64>,
}

async fn run(side: &Side, tasks: usize, seconds: u64) -> (f64, u64) {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let base = side.clock.fetch_add(1_000_000, Ordering::Relaxed) as i64;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let (store, ok, errors, name) = (side.store.clone(), ok.clone(), errors.clone(), side.name);
        handles.push(tokio::spawn(async move {
            let mut clock = base;
            while Instant::now() < deadline {
                clock += 1;
                let client = format!("{name}-{task}-{}", clock as usize % CLIENTS_PER_TASK);
                let update = AwarenessUpdate::new(
                    "pooler-doc",
                    client,
                    format!("k{task}"),
                    clock,
                    Some(json!({ "x": clock })),
                );
                match store.set(&update).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for handle in handles {
        let _ = handle.await;
    }
    (
        ok.load(Ordering::Relaxed) as f64 / seconds as f64,
        errors.load(Ordering::Relaxed),
    )
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() -> Res<()> {
    let direct_url = std::env::var("DATABASE_URL").map_err(|_| "set DATABASE_URL (direct)")?;
    let pooler_url =
        std::env::var("POOLER_URL").map_err(|_| "set POOLER_URL (PgBouncer, transaction mode)")?;
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let options = PostgresOptions::default()
        .with_pool_size(16)
        .with_validate_on_start(false)
        .with_timeout(Duration::from_secs(3600));
    let direct = PostgresAwarenessStore::connect(&direct_url, options).await?;
    direct.migrate(&[]).await?;
    let pooled =
        PostgresAwarenessStore::connect(&pooler_url, options.with_transaction_pooler(true)).await?;
    let unaware = PostgresAwarenessStore::connect(&pooler_url, options).await?;
    let sides = [
        Side {
            name: "direct",
            store: Arc::new(direct),
            clock: Arc::default(),
        },
        Side {
            name: "pooler",
            store: Arc::new(pooled),
            clock: Arc::default(),
        },
        Side {
            name: "pooler, setting off",
            store: Arc::new(unaware),
            clock: Arc::default(),
        },
    ];
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.trim());
    println!("| tasks | side | sets/s (median of {rounds}) | errors/s | vs direct |");
    println!("|---:|---|---:|---:|---:|");
    for tasks in [1, 4, 16] {
        let mut rates = vec![Vec::new(); sides.len()];
        let mut errors = vec![0u64; sides.len()];
        for round in 0..rounds {
            // Interleaved, each round in a rotated order.
            for i in 0..sides.len() {
                let index = (i + round) % sides.len();
                let (rate, failed) = run(&sides[index], tasks, seconds).await;
                rates[index].push(rate);
                errors[index] += failed;
            }
        }
        let direct = median(rates[0].clone());
        for (index, side) in sides.iter().enumerate() {
            let rate = median(rates[index].clone());
            println!(
                "| {tasks} | {} | {rate:.0} | {:.0} | {:.2} |",
                side.name,
                errors[index] as f64 / (seconds as f64 * rounds as f64),
                rate / direct
            );
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at end: {}", load.trim());
    Ok(())
}
