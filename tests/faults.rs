//! Faults under load: PostgreSQL restarted (crash-stop of a throwaway cluster) and every backend
//! terminated, while writers run. Run with `make test-faults` (these tests are `#[ignore]`d in
//! `make test` because they restart servers and take several seconds).
//!
//! Asserted: calls in flight fail with a connection error (no panic; no hang — each call runs
//! under a generous timeout that only detects hangs), later calls succeed again without any
//! action by the caller, and every `set` that returned `Applied` is in the table afterwards.
//! Printed: how long the store took to recover.

#[path = "support/cluster.rs"]
mod cluster;
mod common;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use serde_json::json;
use synckit_awareness::{
    AwarenessStore, AwarenessUpdate, PostgresAwarenessStore, PostgresOptions, SetOutcome,
    StoreOptions,
};

/// Hang detector for one call, and the bound on recovery after the fault.
const HANG: Duration = Duration::from_secs(60);
const WRITERS: usize = 8;
/// Successful sets each writer must see after the fault before the run ends.
const AFTER_FAULT: usize = 25;

#[derive(Default)]
struct Log {
    /// (client_id, clock) of every set that returned Applied.
    applied: Vec<(String, i64)>,
    errors: Vec<String>,
    first_error: Option<Instant>,
    last_error: Option<Instant>,
    /// First success after the last error, per writer.
    first_success_after_error: Vec<Instant>,
}

struct Report {
    applied: Vec<(String, i64)>,
    errors: Vec<String>,
    outage: Duration,
    after_fault_done: Duration,
}

fn options() -> PostgresOptions {
    PostgresOptions::default()
        // Every writer adds thousands of clients to one document on one connection id.
        .with_store(
            StoreOptions::default()
                .with_max_clients_per_document(None)
                .with_max_clients_per_connection(None),
        )
        .with_pool_size(8)
        .with_acquire_timeout(Duration::from_secs(2))
        .with_statement_timeout(Some(Duration::from_secs(10)))
}

/// Runs `WRITERS` writers against `store`, triggers `fault` once they are busy, and returns
/// when every writer has had `AFTER_FAULT` successes after the fault finished.
async fn under_load<F, Fut>(store: PostgresAwarenessStore, fault: F) -> Report
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let log = Arc::new(Mutex::new(Log::default()));
    let fault_done: Arc<Mutex<Option<Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, log, fault_done, stop) =
            (store.clone(), log.clone(), fault_done.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n: i64 = 0;
            let mut after_fault = 0;
            let mut failing = false;
            while after_fault < AFTER_FAULT && !stop.load(Ordering::Relaxed) {
                n += 1;
                let client = format!("w{w}-{n}");
                let update =
                    AwarenessUpdate::new("faults", &client, format!("conn{w}"), n, Some(json!(n)));
                let result = tokio::time::timeout(HANG, store.set(&update))
                    .await
                    .unwrap_or_else(|_| panic!("set hung for {HANG:?} (writer {w})"));
                let now = Instant::now();
                let failed = {
                    let mut log = log.lock().unwrap();
                    match result {
                        Ok(outcome) => {
                            assert_eq!(outcome, SetOutcome::Applied, "fresh keys always apply");
                            log.applied.push((client, n));
                            if failing {
                                log.first_success_after_error.push(now);
                                failing = false;
                            }
                            if fault_done.lock().unwrap().is_some() {
                                after_fault += 1;
                            }
                        }
                        Err(e) => {
                            assert!(
                                e.is_connection_error(),
                                "a fault must surface as a connection error, got {e:?}"
                            );
                            log.errors.push(e.to_string());
                            log.first_error.get_or_insert(now);
                            log.last_error = Some(now);
                            failing = true;
                        }
                    }
                    failing
                };
                if failed {
                    // A caller's ordinary back-off; the store needs nothing else.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    fault().await;
    let done = Instant::now();
    *fault_done.lock().unwrap() = Some(done);
    let bound = tokio::time::sleep(HANG);
    tokio::pin!(bound);
    for writer in writers {
        tokio::select! {
            joined = writer => joined.expect("writer did not panic"),
            _ = &mut bound => {
                stop.store(true, Ordering::Relaxed);
                panic!("the store did not recover within {HANG:?} after the fault");
            }
        }
    }
    let log = Arc::try_unwrap(log)
        .ok()
        .expect("writers done")
        .into_inner()
        .unwrap();
    let recovered = log
        .first_success_after_error
        .iter()
        .max()
        .copied()
        .unwrap_or(done);
    eprintln!(
        "fault took {:?}; {} sets applied, {} failed; first failure to last writer's first \
         success after it: {:?}; fault end to last writer recovered: {:?}",
        done - started,
        log.applied.len(),
        log.errors.len(),
        log.first_error
            .map(|f| recovered.saturating_duration_since(f)),
        recovered.saturating_duration_since(done),
    );
    Report {
        outage: log
            .first_error
            .map_or(Duration::ZERO, |f| recovered.saturating_duration_since(f)),
        after_fault_done: recovered.saturating_duration_since(done),
        applied: log.applied,
        errors: log.errors,
    }
}

/// Distinct error messages and how often each was seen.
fn kinds(errors: &[String]) -> std::collections::BTreeMap<&str, usize> {
    let mut kinds = std::collections::BTreeMap::new();
    for e in errors {
        *kinds.entry(e.as_str()).or_default() += 1;
    }
    kinds
}

/// Every `Applied` set is in the table, with its clock.
async fn assert_all_applied_are_stored(url: &str, applied: &[(String, i64)]) {
    // Imported here only: its `load` would shadow AtomicBool::load elsewhere in this file.
    use diesel_async::RunQueryDsl;
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        client_id: String,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        clock: i64,
    }
    let mut conn = AsyncPgConnection::establish(url).await.expect("connect");
    let rows: HashMap<String, i64> = diesel::sql_query(
        "SELECT client_id, clock_value AS clock FROM awareness_entries WHERE document_id = 'faults'",
    )
    .load::<Row>(&mut conn)
    .await
    .expect("read back")
    .into_iter()
    .map(|r| (r.client_id, r.clock))
    .collect();
    let missing: Vec<&(String, i64)> = applied
        .iter()
        .filter(|(client, clock)| rows.get(client) != Some(clock))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} applied sets are missing after the fault: {:?}",
        missing.len(),
        applied.len(),
        &missing[..missing.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "restarts a PostgreSQL cluster; run with `make test-faults`"]
async fn server_crash_restart_under_load() {
    let cluster = Arc::new(cluster::Cluster::start("", |_| {}));
    let url = cluster.url("127.0.0.1", "sslmode=disable");
    synckit_awareness::run_migrations_at(&url, &[])
        .await
        .expect("migrate");
    // A server crash loses the commits synchronous_commit = off has not flushed yet (the
    // documented trade-off of the default); "every Applied set survives a crash" holds with it on.
    let durable = options().with_synchronous_commit(true);
    let store = PostgresAwarenessStore::connect(&url, durable)
        .await
        .expect("store");
    let restarting = cluster.clone();
    let report = under_load(store.clone(), || async move {
        tokio::task::spawn_blocking(move || restarting.restart_immediate())
            .await
            .expect("restart");
    })
    .await;
    assert!(
        !report.errors.is_empty(),
        "a crash-restart under load must fail some in-flight calls"
    );
    eprintln!(
        "crash-restart: outage seen by callers {:?}, recovered {:?} after the server was back; \
         errors seen: {:?}",
        report.outage,
        report.after_fault_done,
        kinds(&report.errors)
    );
    assert_all_applied_are_stored(&url, &report.applied).await;
    // The pool replaced every broken connection: all of them work now.
    let mut sets = Vec::new();
    for i in 0..16 {
        let store = store.clone();
        sets.push(tokio::spawn(async move {
            store
                .set(&AwarenessUpdate::new(
                    "after",
                    format!("c{i}"),
                    "k",
                    1,
                    Some(json!(1)),
                ))
                .await
        }));
    }
    for set in sets {
        assert_eq!(
            set.await.unwrap().expect("healthy pool"),
            SetOutcome::Applied
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "terminates PostgreSQL backends; run with `make test-faults`"]
async fn terminated_backends_under_load() {
    let db = common::TestDb::migrated().await;
    let store = PostgresAwarenessStore::connect(&db.url, options())
        .await
        .expect("store");
    let admin = db.url.clone();
    let name = db.name.clone();
    let report = under_load(store, || async move {
        let mut conn = AsyncPgConnection::establish(&admin).await.expect("admin");
        // Three rounds, so connections opened after the first kill are killed too.
        for _ in 0..3 {
            conn.batch_execute(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            ))
            .await
            .expect("terminate");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        !report.errors.is_empty(),
        "terminating every backend under load must fail some in-flight calls"
    );
    eprintln!(
        "terminate backends: outage seen by callers {:?}, recovered {:?} after the last kill; \
         errors seen: {:?}",
        report.outage,
        report.after_fault_done,
        kinds(&report.errors)
    );
    assert_all_applied_are_stored(&db.url, &report.applied).await;
}
