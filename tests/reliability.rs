//! Reliability and security: races, pool exhaustion, statement timeout, bad input, least
//! privilege, secrets and tracing. Each test asserts outcomes; none measures speed.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{memory_stores, Stores, TestDb};
use diesel_async::SimpleAsyncConnection;
use serde_json::{json, Value};
use synckit_awareness::{
    AwarenessStore, AwarenessUpdate, Error, Field, InvalidReason, PostgresAwarenessStore,
    PostgresOptions, SetOutcome, StoreOptions, MAX_STATE_DEPTH,
};
use tokio::task::JoinSet;

/// Hang detector: a call that takes this long is stuck, not slow.
const HANG: Duration = Duration::from_secs(60);

fn up(doc: &str, client: &str, conn: &str, clock: i64) -> AwarenessUpdate {
    AwarenessUpdate::new(doc, client, conn, clock, Some(json!({ "clock": clock })))
}

// ---------------------------------------------------------------------------------------------
// Races

const TASKS: u64 = 32;
const SETS_PER_TASK: u64 = 200;
const KEYS: u64 = 4;

/// One `set` as observed: which key, which clock, what came back, and when it started and
/// completed on a global sequence (so "completed before started" is exact, without clocks).
struct Observed {
    key: u64,
    clock: i64,
    outcome: SetOutcome,
    started: u64,
    completed: u64,
}

async fn racing_sets_never_apply_below_an_applied_clock(s: Stores) {
    let store = s.long.clone();
    let seq = Arc::new(AtomicU64::new(0));
    // A bystander connection owns entries elsewhere; removing it and pruning contend for the
    // same table and locks without touching the raced keys.
    let mut tasks = JoinSet::new();
    for t in 0..TASKS {
        let store = store.clone();
        let seq = seq.clone();
        tasks.spawn(async move {
            let mut seen = Vec::new();
            for i in 0..SETS_PER_TASK {
                let n = t * SETS_PER_TASK + i;
                let key = n % KEYS;
                // Each key gets every clock 0..(TASKS*SETS/KEYS) once, in a scrambled order
                // (7919 is prime, so the map n -> n*7919 mod total is a permutation).
                let total = TASKS * SETS_PER_TASK;
                let clock = ((n * 7919) % total / KEYS) as i64;
                let update = up("race", &format!("c{key}"), &format!("conn{t}"), clock);
                let started = seq.fetch_add(1, Ordering::SeqCst);
                let outcome = store
                    .set(&update)
                    .await
                    .expect("no errors under contention");
                let completed = seq.fetch_add(1, Ordering::SeqCst);
                seen.push(Observed {
                    key,
                    clock,
                    outcome,
                    started,
                    completed,
                });
                match i % 20 {
                    3 => {
                        store.get("race", &format!("c{key}")).await.expect("get");
                    }
                    7 => {
                        store.get_all("race").await.expect("get_all");
                    }
                    11 => {
                        let by = format!("bystander{t}");
                        store
                            .set(&up("elsewhere", &by, &by, i as i64))
                            .await
                            .expect("bystander set");
                        store
                            .remove_all_for_connection(&by)
                            .await
                            .expect("remove_all");
                    }
                    17 => {
                        store.prune_expired().await.expect("prune");
                    }
                    _ => {}
                }
            }
            seen
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tokio::time::timeout(HANG, tasks.join_next())
        .await
        .expect("no hang")
    {
        all.extend(done.expect("task did not panic"));
    }
    assert_eq!(all.len() as u64, TASKS * SETS_PER_TASK);

    let mut by_key: HashMap<u64, Vec<&Observed>> = HashMap::new();
    for o in &all {
        by_key.entry(o.key).or_default().push(o);
    }
    for (key, sets) in &by_key {
        let applied: Vec<&&Observed> = sets.iter().filter(|o| o.outcome.is_applied()).collect();
        for a in &applied {
            // No set with a higher clock had already been applied (completed) when this one
            // started: otherwise this Applied went below an applied clock.
            if let Some(higher) = applied
                .iter()
                .find(|b| b.clock > a.clock && b.completed < a.started)
            {
                panic!(
                    "key {key}: clock {} applied after clock {} had been applied",
                    a.clock, higher.clock
                );
            }
        }
        for stale in sets.iter().filter(|o| !o.outcome.is_applied()) {
            // Clocks are unique per key, so a Stale needs a higher clock applied by a set that
            // started before this one completed.
            assert!(
                applied
                    .iter()
                    .any(|b| b.clock > stale.clock && b.started < stale.completed),
                "key {key}: clock {} was stale with no higher clock in sight",
                stale.clock
            );
        }
        let max = sets.iter().map(|o| o.clock).max().expect("sets");
        let max_applied = applied.iter().map(|o| o.clock).max().expect("applied");
        assert_eq!(max_applied, max, "key {key}: the highest clock applies");
        let entry = store
            .get("race", &format!("c{key}"))
            .await
            .unwrap()
            .expect("entry");
        assert_eq!(entry.clock, max, "key {key} ends at its highest clock");
        assert_eq!(entry.state, Some(json!({ "clock": max })));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn races_memory() {
    racing_sets_never_apply_below_an_applied_clock(memory_stores().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn races_postgres() {
    let db = TestDb::migrated().await;
    // 32 tasks share 8 connections and queue on 4 hot rows: bb8 hands connections out without
    // fairness, so one task's wait can exceed the default 5 s; this test is about ordering, so
    // let waits be long (the pool timeout has its own test below).
    let store = PostgresAwarenessStore::connect(
        &db.url,
        PostgresOptions::default()
            .with_pool_size(8)
            .with_acquire_timeout(HANG),
    )
    .await
    .expect("store");
    let store: Arc<dyn AwarenessStore> = Arc::new(store);
    racing_sets_never_apply_below_an_applied_clock(Stores {
        long: store.clone(),
        short: store,
        db: Some(db),
        view: None,
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Pool exhaustion and statement timeout

async fn small_store(
    db: &TestDb,
    connect: Duration,
    statement: Duration,
) -> PostgresAwarenessStore {
    PostgresAwarenessStore::connect(
        &db.url,
        PostgresOptions::default()
            // 65 clients on one connection id below: no per-connection limit.
            .with_store(StoreOptions::default().with_max_clients_per_connection(None))
            .with_pool_size(2)
            .with_acquire_timeout(connect)
            .with_statement_timeout(Some(statement)),
    )
    .await
    .expect("store")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exhausted_pool_fails_with_pool_timeout_then_recovers() {
    let db = TestDb::migrated().await;
    let connect_timeout = Duration::from_millis(300);
    let store = small_store(&db, connect_timeout, Duration::from_secs(30)).await;

    // Open both pooled connections first, so the test does not depend on how fast a new one
    // can be opened within 300 ms on a busy machine.
    tokio::time::timeout(HANG, async {
        while tokio::try_join!(store.pool().get(), store.pool().get()).is_err() {}
    })
    .await
    .expect("two connections open");

    // Hostage: one pooled connection holds a table lock in an open transaction, so the other
    // pooled connection blocks on its first statement and the pool has nothing left to give.
    let mut hostage = store.pool().get().await.expect("hostage connection");
    hostage
        .batch_execute("BEGIN; LOCK TABLE awareness_entries IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");

    let mut calls = JoinSet::new();
    for i in 0..64 {
        let store = store.clone();
        calls.spawn(async move { store.set(&up("pool", &format!("c{i}"), "k", 1)).await });
    }
    let mut timeouts = 0;
    let mut finished = 0;
    // All but the call stuck behind the lock come back, each with a pool timeout.
    while finished < 63 {
        let result = tokio::time::timeout(HANG, calls.join_next())
            .await
            .expect("calls come back instead of hanging")
            .expect("a call is pending")
            .expect("no panic");
        finished += 1;
        match result {
            Err(Error::PoolTimeout(waited)) => {
                assert_eq!(waited, connect_timeout, "reports the configured timeout");
                timeouts += 1;
            }
            other => panic!("expected a pool timeout while exhausted, got {other:?}"),
        }
    }
    assert_eq!(timeouts, 63);
    let message = Error::PoolTimeout(connect_timeout).to_string();
    assert!(message.contains("pool size"), "says what to do: {message}");

    hostage.batch_execute("ROLLBACK").await.expect("release");
    drop(hostage);
    let last = tokio::time::timeout(HANG, calls.join_next())
        .await
        .expect("the blocked call finishes once the lock is gone")
        .expect("pending")
        .expect("no panic");
    assert_eq!(last.expect("blocked call succeeds"), SetOutcome::Applied);

    // Works again, without any action by the caller. One call at a time: 64 concurrent calls
    // on 2 connections with a 300 ms wait could time out on a busy machine, which would test
    // the machine, not the recovery.
    for i in 0..64 {
        let update = up("pool", &format!("d{i}"), "k", 1);
        let outcome = tokio::time::timeout(HANG, store.set(&update))
            .await
            .expect("no hang");
        assert_eq!(outcome.expect("recovered"), SetOutcome::Applied);
    }
    assert_eq!(
        db.scalar("SELECT count(*)::bigint AS n FROM awareness_entries")
            .await,
        65
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statement_timeout_cancels_a_blocked_statement() {
    let db = TestDb::migrated().await;
    let store = small_store(&db, Duration::from_secs(5), Duration::from_millis(200)).await;
    store.set(&up("st", "c", "k", 1)).await.expect("set");

    let mut blocker = db.conn().await;
    blocker
        .batch_execute("BEGIN; LOCK TABLE awareness_entries IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let err = tokio::time::timeout(HANG, store.set(&up("st", "c", "k", 2)))
        .await
        .expect("statement timeout ends the wait")
        .expect_err("cancelled");
    assert!(
        matches!(err, Error::Database(_)) && err.to_string().contains("statement timeout"),
        "{err:?}"
    );
    blocker.batch_execute("ROLLBACK").await.expect("release");

    // The cancelled statement changed nothing, and the same pooled connections work on.
    for clock in [2, 3] {
        assert_eq!(
            store.set(&up("st", "c", "k", clock)).await.unwrap(),
            SetOutcome::Applied
        );
    }
    assert_eq!(store.get("st", "c").await.unwrap().unwrap().clock, 3);
}

// ---------------------------------------------------------------------------------------------
// Bad input

fn nested(depth: usize) -> Value {
    let mut value = json!("leaf");
    for _ in 0..depth {
        value = Value::Array(vec![value]);
    }
    value
}

async fn hostile_input_is_refused_and_the_table_stays_intact(s: Stores) {
    let st = &s.long;
    st.set(&up("d", "keep", "k", 1)).await.unwrap();
    let sql = "'); DROP TABLE awareness_entries;--";
    let cases: Vec<(AwarenessUpdate, Field, InvalidReason)> = vec![
        (
            AwarenessUpdate::new("d", "c", "k", 1, Some(nested(MAX_STATE_DEPTH + 1))),
            Field::State,
            InvalidReason::TooDeep {
                max: MAX_STATE_DEPTH,
            },
        ),
        (
            AwarenessUpdate::new("d", "c", "k", 1, Some(nested(2_000))),
            Field::State,
            InvalidReason::TooDeep {
                max: MAX_STATE_DEPTH,
            },
        ),
        (
            AwarenessUpdate::new("d", "c", "k", 1, Some(json!({ "a\u{0}b": 1 }))),
            Field::State,
            InvalidReason::ContainsNul,
        ),
        (
            up(&format!("{sql}{}", "x".repeat(256)), "c", "k", 1),
            Field::DocumentId,
            InvalidReason::TooLong {
                len: sql.len() + 256,
                max: 256,
            },
        ),
        (
            up("d", &format!("{sql}\0"), "k", 1),
            Field::ClientId,
            InvalidReason::ContainsNul,
        ),
        (
            up("d", "c", &format!("\0{sql}"), 1),
            Field::ConnectionId,
            InvalidReason::ContainsNul,
        ),
        (
            up("d", "c", "k", i64::MIN),
            Field::Clock,
            InvalidReason::Negative(i64::MIN),
        ),
    ];
    for (update, want_field, want_reason) in cases {
        match st.set(&update).await {
            Err(Error::InvalidInput { field, reason }) => {
                assert_eq!((field, &reason), (want_field, &want_reason));
            }
            other => panic!("expected InvalidInput({want_field}), got {other:?}"),
        }
    }
    // A state exactly at the depth limit is fine.
    let deepest = AwarenessUpdate::new("d", "deep", "k", 1, Some(nested(MAX_STATE_DEPTH - 1)));
    assert_eq!(st.set(&deepest).await.unwrap(), SetOutcome::Applied);

    // Valid SQL-looking ids are data, stored and read back byte for byte.
    let tricky = [sql, "x' OR '1'='1", "$1; SELECT pg_sleep(10)", "\\x00\\'--"];
    for id in tricky {
        assert_eq!(
            st.set(&up(id, id, id, 7)).await.unwrap(),
            SetOutcome::Applied
        );
        let e = st.get(id, id).await.unwrap().expect("stored");
        assert_eq!((e.document_id.as_str(), e.client_id.as_str()), (id, id));
        assert_eq!(e.connection_id, id);
    }
    let kept: Vec<String> = st
        .get_all("d")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.client_id)
        .collect();
    assert_eq!(kept, ["deep", "keep"], "only the valid writes landed");
    if let Some(db) = &s.db {
        assert_eq!(
            db.scalar("SELECT count(*)::bigint AS n FROM awareness_entries")
                .await,
            2 + tricky.len() as i64,
            "the table is intact and holds exactly the valid writes"
        );
    }
}

common::both_stores!(hostile_input_is_refused_and_the_table_stays_intact);

// ---------------------------------------------------------------------------------------------
// Least privilege (secrets and tracing: tests/secrets.rs)

#[path = "support/roles.rs"]
mod roles;

use roles::AppRole;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_runs_with_only_dml_rights_on_its_table() {
    let db = TestDb::migrated().await;
    let role = AppRole::create(&db).await;
    // validate_on_start reads the catalog, which needs no extra rights.
    let store = PostgresAwarenessStore::connect(&role.url, PostgresOptions::default())
        .await
        .expect("a DML-only role can open the store and validate the schema");
    let short = PostgresAwarenessStore::from_pool(
        store.pool().clone(),
        synckit_awareness::StoreOptions::default().with_timeout(Duration::from_millis(1)),
    );
    assert_eq!(
        store.set(&up("lp", "a", "k", 1)).await.unwrap(),
        SetOutcome::Applied
    );
    assert_eq!(
        store.set(&up("lp", "a", "k", 2)).await.unwrap(),
        SetOutcome::Applied
    );
    assert_eq!(
        store.set(&up("lp", "b", "k2", 1)).await.unwrap(),
        SetOutcome::Applied
    );
    assert_eq!(store.get_all("lp").await.unwrap().len(), 2);
    assert!(store.remove("lp", "b").await.unwrap());
    assert_eq!(store.remove_all_for_connection("k").await.unwrap().len(), 1);
    store.set(&up("lp", "c", "k", 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(short.get_expired().await.unwrap().len(), 1);
    assert_eq!(short.prune_expired().await.unwrap(), 1);
    store.set(&up("lp", "c", "k", 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(short.take_expired().await.unwrap().len(), 1);

    // ...and cannot change the schema: migrations are the only step that needs DDL rights.
    let mut conn = store.pool().get().await.expect("conn");
    for ddl in [
        "DROP TABLE awareness_entries",
        "ALTER TABLE awareness_entries ADD COLUMN x int",
        "CREATE TABLE other (x int)",
    ] {
        assert!(
            conn.batch_execute(ddl).await.is_err(),
            "{ddl} must be refused"
        );
    }
}
