//! Write coalescing in the PostgreSQL store: concurrent `set`s that queue for a busy pool go out
//! as one statement, and each caller still gets exactly its own outcome or error.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{TestDb, LONG};
use diesel_async::SimpleAsyncConnection;
use serde_json::json;
use synckit_awareness::{
    AwarenessStore, AwarenessUpdate, Error, PostgresAwarenessStore, PostgresOptions, SetOutcome,
};
use tokio::task::JoinSet;

/// Hang detector: a call that takes this long is stuck, not slow.
const HANG: Duration = Duration::from_secs(60);

fn up(client: usize, clock: i64) -> AwarenessUpdate {
    AwarenessUpdate::new(
        "doc",
        format!("c{client:04}"),
        format!("k{client}"),
        clock,
        Some(json!({ "clock": clock })),
    )
}

/// One pooled connection, so concurrent calls must queue.
async fn one_connection_store(db: &TestDb, coalesce: bool) -> Arc<PostgresAwarenessStore> {
    Arc::new(
        PostgresAwarenessStore::connect(
            &db.url,
            PostgresOptions::default()
                .with_timeout(LONG)
                .with_pool_size(1)
                .with_acquire_timeout(HANG)
                .with_statement_timeout(Some(Duration::from_millis(500)))
                .with_coalesce_writes(coalesce),
        )
        .await
        .expect("store"),
    )
}

/// How many batch statements (either form) were prepared on the store's only connection: more
/// than zero means some `set`s went out together.
async fn batch_statement_prepared(store: &PostgresAwarenessStore) -> i64 {
    use diesel::QueryableByName;
    use diesel_async::RunQueryDsl;
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut conn = store.pool().get().await.expect("connection");
    diesel::sql_query(
        "SELECT count(*) AS n FROM pg_prepared_statements \
         WHERE statement LIKE 'WITH input AS %' \
         AND statement NOT LIKE '%pg_prepared_statements%'",
    )
    .get_result::<N>(&mut *conn)
    .await
    .expect("pg_prepared_statements")
    .n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queued_sets_share_a_statement_and_each_gets_its_own_outcome() {
    let db = TestDb::migrated().await;
    let store = one_connection_store(&db, true).await;
    for i in 0..100 {
        assert!(store.set(&up(i, 5)).await.unwrap().is_applied());
    }
    // Even clients of the first hundred move ahead, odd ones fall behind; the second hundred
    // are new. Expected outcomes are known per caller whatever the batches look like.
    let mut tasks = JoinSet::new();
    for i in 0..400 {
        let store = store.clone();
        tasks.spawn(async move {
            let client = i % 200;
            let clock = if client < 100 && client % 2 == 1 {
                3
            } else {
                10
            };
            let outcome = store.set(&up(client, clock + (i / 200) as i64)).await;
            (i, client, outcome)
        });
    }
    while let Some(joined) = tokio::time::timeout(HANG, tasks.join_next()).await.unwrap() {
        let (i, client, outcome) = joined.unwrap();
        let outcome = outcome.unwrap_or_else(|e| panic!("set #{i}: {e}"));
        if i < 200 {
            let expected = if i < 100 && i % 2 == 1 {
                SetOutcome::Stale
            } else {
                SetOutcome::Applied
            };
            // The second round (i >= 200, clock + 1) may run first; only then may the first
            // round's update be stale.
            if outcome != expected {
                assert_eq!(expected, SetOutcome::Applied, "set #{i}");
            }
        } else {
            // Clock 11 is the highest its key ever sees: it always applies; 4 never beats 5.
            let expected = if client < 100 && client % 2 == 1 {
                SetOutcome::Stale
            } else {
                SetOutcome::Applied
            };
            assert_eq!(outcome, expected, "set #{i}");
        }
    }
    // Every key ends at its highest clock: 11 for even/new clients, 5 kept for odd ones of the
    // first hundred (3 and 4 are below 5).
    for client in 0..200 {
        let entry = store
            .get("doc", &format!("c{client:04}"))
            .await
            .unwrap()
            .expect("entry");
        let want = if client < 100 && client % 2 == 1 {
            5
        } else {
            11
        };
        assert_eq!(entry.clock, want, "client {client}");
    }
    assert!(
        batch_statement_prepared(&store).await > 0,
        "400 concurrent sets on one connection never shared a statement"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_fails_only_its_own_caller() {
    let db = TestDb::migrated().await;
    let store = one_connection_store(&db, true).await;
    let mut tasks = JoinSet::new();
    for i in 0..200 {
        let store = store.clone();
        tasks.spawn(async move {
            let mut update = up(i, 1);
            if i % 10 == 0 {
                update.client_id = String::new();
            }
            (i, store.set(&update).await)
        });
    }
    while let Some(joined) = tokio::time::timeout(HANG, tasks.join_next()).await.unwrap() {
        let (i, outcome) = joined.unwrap();
        if i % 10 == 0 {
            assert!(matches!(outcome, Err(Error::InvalidInput { .. })), "#{i}");
        } else {
            assert_eq!(outcome.unwrap(), SetOutcome::Applied, "#{i}");
        }
    }
    assert_eq!(
        db.scalar("SELECT count(*) AS n FROM awareness_entries")
            .await,
        180
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropped_callers_lose_nobody_elses_write() {
    let db = TestDb::migrated().await;
    let store = one_connection_store(&db, true).await;
    let mut kept = JoinSet::new();
    let mut dropped = Vec::new();
    for i in 0..300 {
        let store = store.clone();
        let task = async move { (i, store.set(&up(i, 1)).await) };
        if i % 3 == 0 {
            dropped.push(tokio::spawn(task));
        } else {
            kept.spawn(task);
        }
    }
    // Abort a third of the callers at once, mid-queue or mid-batch.
    for task in &dropped {
        task.abort();
    }
    while let Some(joined) = tokio::time::timeout(HANG, kept.join_next()).await.unwrap() {
        let (i, outcome) = joined.unwrap();
        assert_eq!(outcome.unwrap(), SetOutcome::Applied, "#{i}");
        assert!(
            store
                .get("doc", &format!("c{i:04}"))
                .await
                .unwrap()
                .is_some(),
            "#{i} applied but missing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_batch_fails_its_callers_and_the_store_goes_on() {
    let db = TestDb::migrated().await;
    let store = one_connection_store(&db, true).await;
    assert!(store.set(&up(0, 1)).await.unwrap().is_applied());
    let mut hostage = db.conn().await;
    hostage
        .batch_execute("BEGIN; LOCK TABLE awareness_entries IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    let mut tasks = JoinSet::new();
    for i in 1..=40 {
        let store = store.clone();
        tasks.spawn(async move { store.set(&up(i, 1)).await });
    }
    // Every statement waits for the lock until statement_timeout cancels it.
    while let Some(joined) = tokio::time::timeout(HANG, tasks.join_next()).await.unwrap() {
        match joined.unwrap() {
            Err(Error::Database(e)) => {
                assert!(e.to_string().contains("statement timeout"), "{e}")
            }
            other => panic!("expected the statement timeout, got {other:?}"),
        }
    }
    hostage.batch_execute("ROLLBACK").await.expect("unlock");
    for i in 1..=40 {
        assert!(store.set(&up(i, 2)).await.unwrap().is_applied(), "#{i}");
    }
    assert_eq!(
        db.scalar("SELECT count(*) AS n FROM awareness_entries")
            .await,
        41
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_coalescing_every_set_is_its_own_statement() {
    let db = TestDb::migrated().await;
    let store = one_connection_store(&db, false).await;
    let mut tasks = JoinSet::new();
    for i in 0..100 {
        let store = store.clone();
        tasks.spawn(async move { store.set(&up(i, 1)).await });
    }
    while let Some(joined) = tokio::time::timeout(HANG, tasks.join_next()).await.unwrap() {
        assert_eq!(joined.unwrap().unwrap(), SetOutcome::Applied);
    }
    assert_eq!(batch_statement_prepared(&store).await, 0);
}
