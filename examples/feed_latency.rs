//! What the change feed costs and how fast it delivers, on a real PostgreSQL.
//!
//! `DATABASE_URL=postgres://postgres@127.0.0.1:5432/test cargo run --release --example feed_latency`
//!
//! Creates (and drops) a scratch database `synckit_feed_bench` on that server. Measures `set`
//! throughput with 4 concurrent tasks (keys spread over 4 × 100 clients) for: the feed off;
//! the feed on (coalescing publisher, with a subscriber on a second store); and, for
//! comparison, the upsert as raw SQL without and with a `pg_notify` in the same statement
//! (the per-write design the feed avoids). Then the delivery latency from `set` returning on
//! store A to the event arriving at store B's subscriber, idle and under the 4-task load.
//! Optional arguments: seconds per run (default 5), rounds (default 2).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Jsonb, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::StreamExt;
use serde_json::json;
use synckit_awareness::{
    AwarenessStore, AwarenessUpdate, ChangeFeedOptions, ChangeFilter, FeedEvent,
    PostgresAwarenessStore, PostgresOptions,
};

const TASKS: usize = 4;
const CLIENTS_PER_TASK: usize = 100;
const DB: &str = "synckit_feed_bench";

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const UPSERT: &str = "INSERT INTO awareness_entries \
    (document_id, client_id, connection_id, state, clock_value, last_seen) \
    VALUES ($1, $2, 'conn', $3, $4, now()) \
    ON CONFLICT (document_id, client_id) DO UPDATE SET connection_id = excluded.connection_id, \
    state = excluded.state, clock_value = excluded.clock_value, last_seen = excluded.last_seen \
    WHERE awareness_entries.last_seen <= now() - interval '30 seconds' \
    OR awareness_entries.clock_value < excluded.clock_value \
    OR (awareness_entries.clock_value = excluded.clock_value AND excluded.state IS NULL \
    AND awareness_entries.state IS NOT NULL)";

#[derive(Clone, Copy, Debug)]
enum Mode {
    FeedOff,
    FeedOn,
    RawUpsert,
    RawUpsertWithNotify,
}

#[tokio::main]
async fn main() -> Res<()> {
    let admin_url = std::env::var("DATABASE_URL")
        .map_err(|_| "set DATABASE_URL to a PostgreSQL server where you may CREATE DATABASE")?;
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let seconds = Duration::from_secs(args.first().copied().unwrap_or(5));
    let rounds = args.get(1).copied().unwrap_or(2);

    let mut admin = AsyncPgConnection::establish(&admin_url).await?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"))
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {DB}"))
        .await?;
    let url = replace_database(&admin_url, DB);
    synckit_awareness::run_migrations_at(&url, &[]).await?;
    // Probes and load write many clients on one connection id: no participant limits.
    let options = PostgresOptions::default().with_pool_size(8).with_store(
        synckit_awareness::StoreOptions::default()
            .with_max_clients_per_document(None)
            .with_max_clients_per_connection(None),
    );
    let plain = PostgresAwarenessStore::connect(&url, options).await?;
    let feed = PostgresAwarenessStore::connect(&url, options)
        .await?
        .with_change_feed(ChangeFeedOptions::default().with_publish(true))?;
    let reader = PostgresAwarenessStore::connect(&url, options).await?;

    // A subscriber on another store during every run, as in production; counts events.
    let received = Arc::new(AtomicU64::new(0));
    let mut events = reader.subscribe(ChangeFilter::all()).await?;
    let counter = received.clone();
    tokio::spawn(async move {
        while let Some(event) = events.next().await {
            if let FeedEvent::Change(c) = event {
                counter.fetch_add(c.client_ids.len() as u64, Ordering::Relaxed);
            }
        }
    });

    println!(
        "set throughput, {TASKS} tasks, {} s per run, {rounds} rounds (ops/s):",
        seconds.as_secs()
    );
    let modes = [
        Mode::FeedOff,
        Mode::FeedOn,
        Mode::RawUpsert,
        Mode::RawUpsertWithNotify,
    ];
    let mut results: HashMap<&'static str, Vec<f64>> = HashMap::new();
    for round in 0..rounds {
        for mode in modes {
            let before = received.load(Ordering::Relaxed);
            let rate = throughput(mode, &plain, &feed, &url, seconds).await?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let delivered = received.load(Ordering::Relaxed) - before;
            println!(
                "  round {round} {:<24} {rate:>9.0}   (keys delivered to the subscriber: {delivered})",
                format!("{mode:?}")
            );
            results.entry(name(mode)).or_default().push(rate);
        }
    }
    let median = |v: &Vec<f64>| {
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let off = median(&results["feed off"]);
    let on = median(&results["feed on"]);
    let raw = median(&results["raw upsert"]);
    let raw_notify = median(&results["raw upsert + pg_notify"]);
    println!(
        "median: feed off {off:.0}/s, feed on {on:.0}/s (cost {:.1} %); raw upsert {raw:.0}/s, \
         with pg_notify in the statement {raw_notify:.0}/s (cost {:.1} %)",
        (1.0 - on / off) * 100.0,
        (1.0 - raw_notify / raw) * 100.0
    );

    latency("idle", &feed, &reader, None, seconds).await?;
    latency(
        "under 4-task feed-on load",
        &feed,
        &reader,
        Some(&feed),
        seconds,
    )
    .await?;

    drop((plain, feed, reader));
    tokio::time::sleep(Duration::from_millis(200)).await;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"))
        .await?;
    Ok(())
}

fn name(mode: Mode) -> &'static str {
    match mode {
        Mode::FeedOff => "feed off",
        Mode::FeedOn => "feed on",
        Mode::RawUpsert => "raw upsert",
        Mode::RawUpsertWithNotify => "raw upsert + pg_notify",
    }
}

async fn throughput(
    mode: Mode,
    plain: &PostgresAwarenessStore,
    feed: &PostgresAwarenessStore,
    url: &str,
    seconds: Duration,
) -> Res<f64> {
    // Scoped: its `load`/`first` would shadow the atomics' and slices' methods elsewhere.
    use diesel_async::RunQueryDsl;
    let deadline = Instant::now() + seconds;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = match mode {
            Mode::FeedOn => feed.clone(),
            _ => plain.clone(),
        };
        let url = url.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut raw = match mode {
                Mode::RawUpsert | Mode::RawUpsertWithNotify => {
                    Some(AsyncPgConnection::establish(&url).await?)
                }
                _ => None,
            };
            let notify = format!(
                "WITH up AS ({UPSERT} RETURNING document_id, client_id) \
                 SELECT pg_notify('synckit_awareness_raw', document_id || ' ' || client_id) FROM up"
            );
            let mut ops = 0u64;
            let started = now_micros();
            while Instant::now() < deadline {
                let client = format!("t{task}-{}", ops % CLIENTS_PER_TASK as u64);
                let clock = started + ops as i64;
                let state = json!({"cursor": ops, "user": {"name": "bench"}});
                match (&mut raw, mode) {
                    (Some(conn), Mode::RawUpsertWithNotify) => {
                        diesel::sql_query(notify.as_str())
                            .bind::<Text, _>("doc")
                            .bind::<Text, _>(&client)
                            .bind::<Jsonb, _>(&state)
                            .bind::<BigInt, _>(clock)
                            .execute(conn)
                            .await?;
                    }
                    (Some(conn), _) => {
                        diesel::sql_query(UPSERT)
                            .bind::<Text, _>("doc")
                            .bind::<Text, _>(&client)
                            .bind::<Jsonb, _>(&state)
                            .bind::<BigInt, _>(clock)
                            .execute(conn)
                            .await?;
                    }
                    (None, _) => {
                        store
                            .set(&AwarenessUpdate::new(
                                "doc",
                                client,
                                "conn",
                                clock,
                                Some(state),
                            ))
                            .await?;
                    }
                }
                ops += 1;
            }
            Ok::<u64, Box<dyn std::error::Error + Send + Sync>>(ops)
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    Ok(total as f64 / seconds.as_secs_f64())
}

/// Sets one new client every 5 ms on `writer` and times each from `set` returning to the
/// event arriving at `reader`'s subscriber; with `load`, 4 tasks write on it meanwhile.
async fn latency(
    label: &str,
    writer: &PostgresAwarenessStore,
    reader: &PostgresAwarenessStore,
    load: Option<&PostgresAwarenessStore>,
    seconds: Duration,
) -> Res<()> {
    let mut events = reader.subscribe(ChangeFilter::document("probe")).await?;
    let committed: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let load_task = load.map(|store| {
        let store = store.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let plain = store.clone();
            let url = String::new();
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) =
                    throughput(Mode::FeedOn, &plain, &store, &url, Duration::from_secs(1)).await
                {
                    eprintln!("load failed: {e}");
                    return;
                }
            }
        })
    });
    let probes = (seconds.as_millis() / 5) as usize;
    let writer_task = {
        let writer = writer.clone();
        let committed = committed.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            for n in 0..probes {
                tick.tick().await;
                let client = format!("probe-{n}");
                writer
                    .set(&AwarenessUpdate::new(
                        "probe",
                        client.clone(),
                        "conn",
                        now_micros(), // above the previous run's clocks
                        Some(json!(n)),
                    ))
                    .await?;
                if let Ok(mut map) = committed.lock() {
                    map.insert(client, Instant::now());
                }
            }
            Ok::<(), synckit_awareness::Error>(())
        })
    };
    let mut samples = Vec::with_capacity(probes);
    while samples.len() < probes {
        let event = match tokio::time::timeout(Duration::from_secs(10), events.next()).await {
            Ok(Some(event)) => event,
            Ok(None) => return Err(format!("{label}: the stream ended").into()),
            Err(_) => {
                return Err(format!("{label}: no event for 10 s ({} so far)", samples.len()).into())
            }
        };
        let arrived = Instant::now();
        if event == FeedEvent::Resync {
            println!("  {label}: Resync after {} samples", samples.len());
        }
        if let FeedEvent::Change(change) = event {
            for client in change.client_ids {
                // The event can beat `set`'s return to the map (0 latency then counts as such).
                let sent = committed.lock().ok().and_then(|m| m.get(&client).copied());
                samples.push(sent.map_or(Duration::ZERO, |s| arrived.saturating_duration_since(s)));
            }
        }
    }
    writer_task.await??;
    stop.store(true, Ordering::Relaxed);
    if let Some(task) = load_task {
        task.await?;
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p) as usize];
    println!(
        "delivery latency {label}: n={} p50={:?} p99={:?} max={:?}",
        samples.len(),
        pct(0.50),
        pct(0.99),
        pct(1.0)
    );
    Ok(())
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

fn replace_database(url: &str, database: &str) -> String {
    synckit_awareness::DatabaseUrl::new(url)
        .with_database(database)
        .expose()
        .to_owned()
}
