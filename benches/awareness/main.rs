//! `make bench`: the store against pgbench running the store's own SQL (the ceiling) and against
//! Redis doing a Redis store's `set` (the peer), in one run, on the same data; then the
//! in-memory store, expiry at scale, and a sustained heartbeat workload (HOT ratio, sizes,
//! plans). `--quick` (CI) shrinks every size and runs each figure once: it proves the harness
//! works and never judges a time. Results: stdout and target/bench/results.md.
//!
//! Options: `--quick`, `--runs N` (median of N, default 3), `--scale F` (multiply operation
//! counts), `--heartbeat-sets N` (default 1,000,000), `--expiry-rows N` (default 1,000,000).
//! Environment: DATABASE_URL (a server where this role may CREATE DATABASE; default
//! postgres://postgres@127.0.0.1:5432/postgres), REDIS_ADDR (default 127.0.0.1:6379).

mod alloc;
mod pg;
mod pruning;
mod redis;
mod stats;
mod who;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use synckit_awareness::{AwarenessStore, AwarenessUpdate, PostgresAwarenessStore, PostgresOptions};

use pg::psql;
use redis::{Redis, Reply};
use stats::Figure;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

const DB: &str = "synckit_bench";
const STATE: &str = r##"{"user":{"name":"User 4711","color":"#30bced"},"cursor":{"anchor":1234,"head":1240},"v":1}"##;
const DOCS: i64 = 1000;
const PER_DOC: i64 = 10;
const KEYS: i64 = DOCS * PER_DOC;
const BIG_DOC_BASE: i64 = 100_000;
const BIG_DOCS: i64 = 100;
const CONCURRENCY: [usize; 3] = [1, 4, 16];

/// Every run's clocks start above every earlier run's.
static RUN: AtomicI64 = AtomicI64::new(1);
fn next_base() -> i64 {
    RUN.fetch_add(1, Ordering::Relaxed) * 10_000_000
}

#[derive(Debug, Clone)]
struct Config {
    quick: bool,
    /// `--only a,b`: run only these parts (set, set_many, trust, read, sync, memory, expiry,
    /// heartbeat, pruning); all when empty.
    only: Vec<String>,
    runs: usize,
    scale: f64,
    heartbeat_sets: usize,
    expiry_rows: i64,
    admin_url: String,
    redis_addr: String,
    out_dir: PathBuf,
}

impl Config {
    fn from_args() -> Self {
        let mut c = Config {
            quick: false,
            only: Vec::new(),
            runs: 3,
            scale: 0.25,
            heartbeat_sets: 1_000_000,
            expiry_rows: 1_000_000,
            admin_url: std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
            redis_addr: std::env::var("REDIS_ADDR").unwrap_or_else(|_| "127.0.0.1:6379".into()),
            out_dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/bench")),
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        // `cargo bench` passes --bench; `cargo test --all-targets` runs bench targets without
        // it. The benchmark is no test (it needs pgbench and Redis and minutes): say how to run
        // it and stop. CI runs it through `make bench-quick`.
        if !args.iter().any(|a| a == "--bench") {
            println!("benches/awareness is a benchmark: run `make bench` or `make bench-quick`");
            std::process::exit(0);
        }
        let mut i = 0;
        while i < args.len() {
            let value = |i: usize| -> &str {
                args.get(i + 1)
                    .map(String::as_str)
                    .unwrap_or_else(|| panic!("{} needs a value", args[i]))
            };
            match args[i].as_str() {
                "--quick" => {
                    c.quick = true;
                    c.runs = 1;
                    c.scale = 0.01;
                    c.heartbeat_sets = 5_000;
                    c.expiry_rows = 10_000;
                }
                "--runs" => c.runs = value(i).parse().expect("--runs N"),
                "--only" => c.only = value(i).split(',').map(str::to_owned).collect(),
                "--scale" => c.scale = value(i).parse().expect("--scale F"),
                "--heartbeat-sets" => c.heartbeat_sets = value(i).parse().expect("N"),
                "--expiry-rows" => c.expiry_rows = value(i).parse().expect("N"),
                // cargo bench passes --bench to harness = false targets.
                "--bench" => {
                    i += 1;
                    continue;
                }
                other => panic!("unknown option {other}; see benches/awareness/main.rs"),
            }
            i += if args[i] == "--quick" { 1 } else { 2 };
        }
        c.runs = c.runs.max(1);
        c
    }

    /// Whether the part `name` runs (`--only`).
    fn runs_part(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == name)
    }

    /// Operations per run for an operation whose full count is `full`.
    fn count(&self, full: usize, tasks: usize) -> usize {
        (((full as f64 * self.scale) as usize) / tasks).max(2)
    }
}

/// One line of the results table.
struct Row {
    op: String,
    system: &'static str,
    tasks: usize,
    fig: Figure,
    rows_differ: bool,
    baseline: Option<f64>,
    peer: Option<f64>,
}

struct Report {
    rows: Vec<Row>,
    notes: String,
}

impl Report {
    fn push(
        &mut self,
        op: &str,
        system: &'static str,
        tasks: usize,
        fig: Figure,
        rows_differ: bool,
    ) {
        println!(
            "  {op:<28} {system:<10} {tasks:>2} tasks {:>10.0} ops/s  p50 {:>7.3} ms  p99 {:>7.3} ms",
            fig.ops_per_s,
            ms(fig.p50),
            ms(fig.p99)
        );
        self.rows.push(Row {
            op: op.into(),
            system,
            tasks,
            fig,
            rows_differ,
            baseline: None,
            peer: None,
        });
    }

    fn note(&mut self, text: &str) {
        println!("{text}");
        self.notes.push_str(text);
        self.notes.push('\n');
    }

    /// Fills the ratio columns: the store's throughput over pgbench's and over Redis's, same
    /// operation and concurrency.
    fn ratios(&mut self) {
        let find = |rows: &[Row], op: &str, system: &str, tasks: usize| {
            rows.iter()
                .find(|r| r.op == op && r.system == system && r.tasks == tasks)
                .map(|r| r.fig.ops_per_s)
        };
        for i in 0..self.rows.len() {
            if !self.rows[i].system.starts_with("store") {
                continue;
            }
            let (op, tasks, ops) = (
                self.rows[i].op.clone(),
                self.rows[i].tasks,
                self.rows[i].fig.ops_per_s,
            );
            self.rows[i].baseline = find(&self.rows, &op, "pgbench", tasks).map(|b| ops / b);
            self.rows[i].peer = find(&self.rows, &op, "redis", tasks).map(|b| ops / b);
        }
    }

    /// Figures that compare rows with each other: `set_many` against single `set`s, and the
    /// latency a lone writer pays for write coalescing.
    fn derived(&mut self) {
        let find = |op: &str, system: &str, tasks: usize| {
            self.rows
                .iter()
                .find(|r| r.op == op && r.system == system && r.tasks == tasks)
                .map(|r| r.fig)
        };
        let mut lines = Vec::new();
        if let (Some(many), Some(single)) = (
            find("set_many of 16", "store", 1),
            find("set heartbeat (existing)", "store", 1),
        ) {
            lines.push(format!(
                "set_many of 16 at 1 task: {:.0} rows/s = {:.1}x single-set rows/s ({:.0})",
                many.rows_per_s,
                many.rows_per_s / single.ops_per_s,
                single.ops_per_s
            ));
        }
        if let (Some(on), Some(off)) = (
            find("set heartbeat (existing)", "store coalescing", 1),
            find("set heartbeat (existing)", "store", 1),
        ) {
            lines.push(format!(
                "set heartbeat at 1 task, p50 with coalescing {:.3} ms vs without {:.3} ms ({:+.1} %)",
                ms(on.p50),
                ms(off.p50),
                (ms(on.p50) / ms(off.p50) - 1.0) * 100.0
            ));
        }
        for tasks in [1, 4] {
            let op = "set heartbeat (trust cost)";
            let (Some(store), Some(owner), Some(unlimited), Some(new), Some(old)) = (
                find(op, "store", tasks),
                find(op, "store owner", tasks),
                find(op, "store no limits", tasks),
                find(op, "pgbench", tasks),
                find(op, "pgbench issue 11", tasks),
            ) else {
                continue;
            };
            let pct = |a: f64, b: f64| (a / b - 1.0) * 100.0;
            lines.push(format!(
                "trust cost at {tasks} task(s): with an owner {:+.1} % ops/s, limits on vs off \
                 {:+.1} %; pgbench of the new statement vs issue 11's upsert {:+.1} % \
                 (p50 {:.3} vs {:.3} ms)",
                pct(owner.ops_per_s, store.ops_per_s),
                pct(store.ops_per_s, unlimited.ops_per_s),
                pct(new.ops_per_s, old.ops_per_s),
                ms(new.p50),
                ms(old.p50)
            ));
        }
        for line in lines {
            self.note(&line);
        }
    }

    fn markdown(&self) -> String {
        let mut s = String::from(
            "| operation | system | tasks | ops/s | rows/s | p50 ms | p99 ms | × pgbench | × Redis |\n\
             |---|---|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in &self.rows {
            let ratio = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v:.2}"));
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.0} | {} | {:.3} | {:.3} | {} | {} |",
                r.op,
                r.system,
                r.tasks,
                r.fig.ops_per_s,
                if r.rows_differ {
                    format!("{:.0}", r.fig.rows_per_s)
                } else {
                    String::new()
                },
                ms(r.fig.p50),
                ms(r.fig.p99),
                ratio(r.baseline),
                ratio(r.peer)
            );
        }
        s
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn state() -> Value {
    serde_json::from_str(STATE).expect("state JSON")
}

/// The key a task touches in the heartbeat/stale workloads: tasks own disjoint keys (key % tasks
/// == task), so each task's rising clock is the key's rising clock, exactly as in pgbench.
fn task_key(r: u64, tasks: usize, task: usize) -> i64 {
    let per = (KEYS as usize / tasks) as u64;
    ((r % per) as usize * tasks + task) as i64
}

/// xorshift, seeded per task and op: the same cheap spread on every side.
fn rand(task: usize, i: usize) -> u64 {
    let mut x = (task as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (i as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 29)
}

async fn open_store(url: &str, pool_size: u32, synchronous_commit: bool) -> PostgresAwarenessStore {
    PostgresAwarenessStore::connect(
        url,
        PostgresOptions::default()
            .with_timeout(Duration::from_secs(86_400))
            .with_pool_size(pool_size)
            .with_synchronous_commit(synchronous_commit),
    )
    .await
    .expect("open the store")
}

/// The preloaded data: 1,000 documents × 10 clients (client id = key, doc = key / 10,
/// connection = key) and 100 documents × 100 clients; clock 1, fresh.
/// Empties the table and loads the 1,000 documents × 10 clients every `set` workload uses.
pub(crate) fn load_keys(url: &str) {
    psql(url, "TRUNCATE awareness_entries");
    psql(
        url,
        &format!(
            "INSERT INTO awareness_entries (document_id, client_id, connection_id, state, clock_value) \
             SELECT (k / {PER_DOC})::text, k::text, k::text, '{STATE}'::jsonb, 1 FROM generate_series(0, {}) k",
            KEYS - 1
        ),
    );
}

fn load_base_data(url: &str) {
    load_keys(url);
    psql(
        url,
        &format!(
            "INSERT INTO awareness_entries (document_id, client_id, connection_id, state, clock_value) \
             SELECT ({BIG_DOC_BASE} + d)::text, c::text, 'big', '{STATE}'::jsonb, 1 \
             FROM generate_series(0, {}) d, generate_series(0, 99) c",
            BIG_DOCS - 1
        ),
    );
    psql(url, "VACUUM ANALYZE awareness_entries");
}

/// The exact statements the store sends, captured from the server after one call of each.
struct Statements {
    /// `set`'s fast path (a heartbeat is this statement alone).
    set: String,
    /// `set`'s full statement (after the fast path changed nothing).
    set_full: String,
    get_all: String,
    remove_all_for_connection: String,
    get_expired: String,
    prune_expired: String,
}

async fn capture_statements(url: &str) -> Statements {
    let store = open_store(url, 1, true).await;
    // A new key: the full statement inserts; then a heartbeat: the fast path.
    let up = AwarenessUpdate::new("capture", "capture", "capture", 1, Some(state()));
    store.set(&up).await.expect("set");
    let up = AwarenessUpdate::new("capture", "capture", "capture", 2, Some(state()));
    store.set(&up).await.expect("set");
    let set = pg::prepared_starting(&store, "UPDATE awareness_entries").await;
    let set_full = pg::prepared_starting(&store, "WITH p AS").await;
    store.get_all("capture").await.expect("get_all");
    let get_all = pg::last_prepared(&store).await;
    store
        .remove_all_for_connection("capture")
        .await
        .expect("remove");
    let remove_all_for_connection = pg::last_prepared(&store).await;
    store.get_expired().await.expect("get_expired");
    let get_expired = pg::last_prepared(&store).await;
    store.prune_expired().await.expect("prune");
    let prune_expired = pg::last_prepared(&store).await;
    Statements {
        set,
        set_full,
        get_all,
        remove_all_for_connection,
        get_expired,
        prune_expired,
    }
}

#[tokio::main]
async fn main() {
    let cfg = Config::from_args();
    std::fs::create_dir_all(&cfg.out_dir).expect("create target/bench");
    let started = Instant::now();
    let mut report = Report {
        rows: Vec::new(),
        notes: String::new(),
    };
    let url = pg::fresh_database(&cfg.admin_url, DB).await;
    let stmts = capture_statements(&url).await;
    std::fs::write(
        cfg.out_dir.join("statements.sql"),
        format!(
            "-- set (fast path)\n{};\n-- set (full)\n{};\n-- get_all\n{};\n-- remove_all_for_connection\n{};\n-- get_expired\n{};\n-- prune_expired\n{};\n",
            stmts.set, stmts.set_full, stmts.get_all, stmts.remove_all_for_connection, stmts.get_expired, stmts.prune_expired
        ),
    )
    .expect("write statements.sql");
    let sync_default = PostgresOptions::default().synchronous_commit;
    report.note(&format!(
        "mode: {} (runs {}, scale {}), synchronous_commit = {} (library default), pgbench {}",
        if cfg.quick { "quick" } else { "full" },
        cfg.runs,
        cfg.scale,
        if sync_default { "on" } else { "off" },
        pg::pgbench_path().display()
    ));
    load_base_data(&url);
    let store = Arc::new(open_store(&url, 16, sync_default).await);
    let set_stores = workloads::SetStores {
        default: store.clone(),
        url: url.clone(),
        // The same server over TLS: the URL's sslmode replaced by prefer.
        tls_url: with_sslmode(&url, "prefer"),
    };
    let mut redis_conn = Redis::connect(&cfg.redis_addr).await.unwrap_or_else(|e| {
        panic!(
            "Redis at {} is needed for the peer baseline (set REDIS_ADDR): {e}",
            cfg.redis_addr
        )
    });
    // Database 15 of the shared server, flushed: the benchmark's keys never mix with others'.
    redis_conn
        .call(&[b"SELECT", b"15"])
        .await
        .expect("redis SELECT");
    redis_conn.call(&[b"FLUSHDB"]).await.expect("redis FLUSHDB");
    let sha = match redis_conn
        .call(&[b"SCRIPT", b"LOAD", redis::SET_SCRIPT.as_bytes()])
        .await
        .expect("SCRIPT LOAD")
    {
        Reply::Text(sha) => Arc::new(sha),
        other => panic!("SCRIPT LOAD: {other:?}"),
    };

    set_workloads(&cfg, &mut report, &url, &set_stores, &stmts, &sha).await;
    if cfg.runs_part("trust") {
        trust_cost(&cfg, &mut report, &url, &set_stores, &stmts).await;
    }
    drop(set_stores);
    if cfg.runs_part("read") {
        read_workloads(&cfg, &mut report, &url, &store, &stmts).await;
    }
    if cfg.runs_part("sync") {
        sync_and_unlogged(&cfg, &mut report, &url, &stmts).await;
    }
    if cfg.runs_part("memory") {
        memory_store(&cfg, &mut report, &sha).await;
    }
    if cfg.runs_part("expiry") {
        expiry(&cfg, &mut report, &url, &store, &stmts).await;
    }
    drop(store);
    if cfg.runs_part("heartbeat") {
        heartbeat_workload(&cfg, &mut report, &url, &stmts).await;
    }
    if cfg.runs_part("pruning") {
        pruning::pruning(&cfg, &mut report, &url).await;
    }
    if cfg.runs_part("who") {
        who::who(&cfg, &mut report, &cfg.admin_url).await;
    }

    redis_conn.call(&[b"FLUSHDB"]).await.expect("redis FLUSHDB");
    report.ratios();
    report.derived();
    let table = report.markdown();
    let machine = machine();
    let out = format!(
        "# synckit-awareness benchmark\n\n{machine}\n\n{table}\n```\n{}```\n\ntotal time: {:.0} s\n",
        report.notes,
        started.elapsed().as_secs_f64()
    );
    println!("\n{table}");
    std::fs::write(cfg.out_dir.join("results.md"), &out).expect("write results.md");
    println!(
        "written to {} ({:.0} s)",
        cfg.out_dir.join("results.md").display(),
        started.elapsed().as_secs_f64()
    );
    pg::psql(
        &cfg.admin_url,
        &format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"),
    );
}

/// `url` with `sslmode` set to `mode` (replacing any given).
fn with_sslmode(url: &str, mode: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("sslmode="))
        .collect();
    let sslmode = format!("sslmode={mode}");
    params.push(&sslmode);
    format!("{base}?{}", params.join("&"))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "machine: {cpu}, {cores} cores; load average at the end: {}",
        load.trim()
    )
}

mod workloads;
use workloads::*;
