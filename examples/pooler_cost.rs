//! What a transaction-mode pooler costs: heartbeat `set`s through the store's public API,
//! directly and through PgBouncer (`pool_mode = transaction`), beside `pgbench -M extended`
//! (unnamed statements, one round trip each) running the store's own heartbeat statement
//! through the same PgBouncer and directly, at 1, 4, 16 and 64 tasks. `make bench-pooler`
//! starts a PgBouncer and runs it:
//!
//! ```sh
//! DATABASE_URL='postgres://postgres@127.0.0.1:5432/test?sslmode=disable' \
//! POOLER_URL='postgres://postgres@127.0.0.1:6432/test?sslmode=disable' \
//! cargo run --release --example pooler_cost [seconds per run, default 3] [rounds, default 3]
//! ```
//!
//! Both URLs name the same database (migrated here). Sides, interleaved per round in a
//! rotating order, medians printed: `store direct`, `store pooler` (through PgBouncer with
//! `transaction_pooler`), `pgbench pooler` and `pgbench direct` (the statement the store sends
//! for a heartbeat, captured from the server, with the same values: through the pooler with
//! its own `synchronous_commit = off` as the store sends it, directly with the session's).
//! Each side writes its own clients with clocks that keep rising across rounds, so no side's
//! rows make another's writes stale. Errors are counted per side.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use serde_json::json;
use synckit_awareness::{
    AwarenessStore, AwarenessUpdate, PostgresAwarenessStore, PostgresOptions, SetOutcome,
};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const CLIENTS_PER_TASK: i64 = 50;
const TASKS: [usize; 4] = [1, 4, 16, 64];

enum Side {
    Store(Arc<PostgresAwarenessStore>),
    Pgbench {
        url: String,
        script: std::path::PathBuf,
        direct: bool,
    },
}

struct Named {
    name: &'static str,
    side: Side,
    clock: Arc<AtomicU64>,
}

async fn run_store(
    name: &str,
    store: &Arc<PostgresAwarenessStore>,
    base: i64,
    tasks: usize,
    seconds: u64,
) -> (f64, u64) {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut handles = Vec::new();
    for task in 0..tasks {
        let (store, ok, errors, name) =
            (store.clone(), ok.clone(), errors.clone(), name.to_owned());
        handles.push(tokio::spawn(async move {
            let mut clock = base;
            while Instant::now() < deadline {
                clock += 1;
                let client = format!("{name}-{task}-{}", clock % CLIENTS_PER_TASK);
                let update = AwarenessUpdate::new(
                    format!("pooler-{name}-{task}"),
                    client,
                    format!("{name}-{task}"),
                    clock,
                    Some(json!({ "x": clock })),
                );
                // Anything but applied counts as failed (a refusal would take the slow path).
                match store.set(&update).await {
                    Ok(SetOutcome::Applied) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("{name}: the first failed set: {other:?}");
                        }
                    }
                }
            }
        }));
    }
    for handle in handles {
        let _ = handle.await;
    }
    (
        AtomicU64::load(&ok, Ordering::Relaxed) as f64 / seconds as f64,
        AtomicU64::load(&errors, Ordering::Relaxed),
    )
}

/// pgbench on `script` at `tasks` clients for `seconds`: transactions per second and failed
/// ones.
fn run_pgbench(
    url: &str,
    script: &std::path::Path,
    direct: bool,
    base: i64,
    tasks: usize,
    seconds: u64,
) -> (f64, u64) {
    let mut command = Command::new("pgbench");
    command
        .args([
            "-n",
            "-M",
            "extended",
            "-c",
            &tasks.to_string(),
            "-j",
            &tasks.min(2).to_string(),
            "-T",
            &seconds.to_string(),
            "-D",
            &format!("clock={base}"),
            "-f",
        ])
        .arg(script)
        .arg(url);
    if direct {
        command.env("PGOPTIONS", "-c synchronous_commit=off");
    }
    let out = command
        .output()
        .expect("pgbench (install the PostgreSQL client tools)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let find = |prefix: &str| {
        text.lines().find_map(|l| {
            l.trim()
                .strip_prefix(prefix)
                .map(|r| r.split_whitespace().next().unwrap_or("0").to_owned())
        })
    };
    let tps: f64 = find("tps = ").and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let failed: u64 = find("number of failed transactions: ")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if !out.status.success() {
        eprintln!("pgbench failed: {text}");
    }
    (tps, failed)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[derive(QueryableByName)]
struct Text {
    #[diesel(sql_type = diesel::sql_types::Text)]
    statement: String,
}

/// The statement the store prepared for its heartbeat (its fast path), as the server has it.
async fn heartbeat_statement(store: &PostgresAwarenessStore) -> Res<String> {
    let update = |clock| {
        AwarenessUpdate::new(
            "pooler-capture",
            "capture",
            "k",
            clock,
            Some(json!({ "x": 1 })),
        )
    };
    // Clocks above any earlier run's (a second run finds the first's row).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros() as i64;
    store.set(&update(now)).await?;
    store.set(&update(now + 1)).await?;
    let mut conn = store.pool().get().await?;
    let rows: Vec<Text> = diesel::sql_query("SELECT statement FROM pg_prepared_statements WHERE statement LIKE 'UPDATE awareness_entries%'").load(&mut conn).await?;
    Ok(rows
        .into_iter()
        .next()
        .ok_or("the store prepared no heartbeat statement")?
        .statement)
}

/// A pgbench script of `statement` (the heartbeat) with the values the store binds: the fast
/// path's 15 placeholders (see `FAST_BINDS` in src/postgres/sql/write/set.rs), `commit` the
/// last two (`NULL` or `'off'`); each client heartbeats its own 50 keys.
fn script(
    dir: &std::path::Path,
    name: &str,
    statement: &str,
    commit: &str,
) -> Res<std::path::PathBuf> {
    let values = [
        "('pgb-' || :client_id)",
        "'{\"x\":1}'",
        ":clock",
        "NULL",
        "NULL",
        "('pooler-pgbench-' || :client_id)",
        ":key",
        "'3600 seconds'",
        "'{\"x\":1}'",
        "NULL",
        ":clock",
        ":clock",
        "'{\"x\":1}'",
        commit,
        commit,
    ];
    let mut sql = statement.to_owned();
    for (i, value) in values.iter().enumerate().rev() {
        sql = sql.replace(&format!("${}", i + 1), value);
    }
    if sql.contains('$') {
        return Err(format!(
            "the heartbeat statement has more placeholders than the script fills: {sql}"
        )
        .into());
    }
    // pgbench's \set takes arithmetic only: the key is built in SQL.
    let sql = sql.replace(":key", "('pgb-' || :client_id || '-' || :n)");
    let body = format!("\\set clock :clock + 1\n\\set n :clock % {CLIENTS_PER_TASK}\n{sql};\n");
    let path = dir.join(format!("{name}.sql"));
    std::fs::write(&path, body)?;
    Ok(path)
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
    let capture = PostgresAwarenessStore::connect(&direct_url, options.with_pool_size(1)).await?;
    let statement = heartbeat_statement(&capture).await?;
    drop(capture);
    let dir = std::env::temp_dir().join("synckit-pooler-bench");
    std::fs::create_dir_all(&dir)?;
    // pgbench's keys, live, so every heartbeat takes the statement's update (a document and
    // a connection per client, as the store's tasks have).
    let mut conn = direct.pool().get().await?;
    diesel::sql_query("DELETE FROM awareness_entries WHERE document_id LIKE 'pooler-%'")
        .execute(&mut conn)
        .await?;
    diesel::sql_query(format!("INSERT INTO awareness_entries (document_id, client_id, connection_id, state, clock_value, last_seen) SELECT 'pooler-pgbench-' || c, 'pgb-' || c || '-' || n, 'pgb-' || c, '{{}}', 0, now() FROM generate_series(0, 63) c, generate_series(0, {}) n ON CONFLICT DO NOTHING", CLIENTS_PER_TASK - 1)).execute(&mut conn).await?;
    drop(conn);
    let pooled =
        PostgresAwarenessStore::connect(&pooler_url, options.with_transaction_pooler(true)).await?;
    let sides = [
        Named {
            name: "store pooler",
            side: Side::Store(Arc::new(pooled)),
            clock: Arc::default(),
        },
        Named {
            name: "pgbench pooler",
            side: Side::Pgbench {
                url: pooler_url.clone(),
                script: script(&dir, "pooler", &statement, "'off'")?,
                direct: false,
            },
            clock: Arc::default(),
        },
        Named {
            name: "store direct",
            side: Side::Store(Arc::new(direct)),
            clock: Arc::default(),
        },
        Named {
            name: "pgbench direct",
            side: Side::Pgbench {
                url: direct_url.clone(),
                script: script(&dir, "direct", &statement, "NULL")?,
                direct: true,
            },
            clock: Arc::default(),
        },
    ];
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at start: {}", load.trim());
    println!("{seconds} s per run, {rounds} rounds, medians; sets (transactions) per second, failed per run");
    println!("| tasks | store pooler | pgbench pooler | **ratio** | store direct | pgbench direct | ratio direct | failed (store pooler) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for tasks in TASKS {
        let mut rates = vec![Vec::new(); sides.len()];
        let mut errors = vec![0u64; sides.len()];
        for round in 0..rounds {
            for i in 0..sides.len() {
                let index = (i + round) % sides.len();
                let side = &sides[index];
                let base = side.clock.fetch_add(10_000_000, Ordering::Relaxed) as i64 + 10_000_000;
                let (rate, failed) = match &side.side {
                    Side::Store(store) => run_store(side.name, store, base, tasks, seconds).await,
                    Side::Pgbench {
                        url,
                        script,
                        direct,
                    } => {
                        if *direct && tasks > 16 {
                            // Directly, 64 clients need the pooler's idle server connections
                            // gone (`make bench-pooler` closes them after 1 s).
                            tokio::time::sleep(Duration::from_millis(2500)).await;
                        }
                        run_pgbench(url, script, *direct, base, tasks, seconds)
                    }
                };
                rates[index].push(rate);
                errors[index] += failed;
            }
        }
        let m: Vec<f64> = rates.into_iter().map(median).collect();
        println!(
            "| {tasks} | {:.0} | {:.0} | **{:.2}** | {:.0} | {:.0} | {:.2} | {} |",
            m[0],
            m[1],
            m[0] / m[1],
            m[2],
            m[3],
            m[2] / m[3],
            errors[0]
        );
        if errors.iter().any(|&e| e > 0) {
            println!("  failed per side: {errors:?}");
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at end: {}", load.trim());
    Ok(())
}
