//! The hot path is prepared once per connection: repeated `set`s and `set_many`s reuse one
//! server-side prepared statement each instead of parsing and planning on every call (diesel
//! marks `ON CONFLICT DO UPDATE` uncacheable by default; the store declares its fixed SQL
//! cacheable). Checked through PostgreSQL's own `pg_prepared_statements`.

mod common;

use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use serde_json::json;
use synckit_awareness::{AwarenessStore, AwarenessUpdate, PostgresAwarenessStore, PostgresOptions};

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

async fn prepared_like(store: &PostgresAwarenessStore, pattern: &str) -> i64 {
    let mut conn = store.pool().get().await.unwrap();
    diesel::sql_query(
        "SELECT count(*)::bigint AS n FROM pg_prepared_statements WHERE statement LIKE $1",
    )
    .bind::<diesel::sql_types::Text, _>(pattern)
    .get_result::<Count>(&mut *conn)
    .await
    .unwrap()
    .n
}

#[tokio::test(flavor = "multi_thread")]
async fn set_and_set_many_are_prepared_once_per_connection() {
    let db = common::TestDb::migrated().await;
    // One connection, so every call below runs on the session being inspected.
    let store =
        PostgresAwarenessStore::connect(&db.url, PostgresOptions::default().with_pool_size(1))
            .await
            .unwrap();
    for clock in 0..5 {
        let update = AwarenessUpdate::new("d", "c", "k", clock, Some(json!({ "n": clock })));
        assert!(store.set(&update).await.unwrap().is_applied());
        let batch = [
            AwarenessUpdate::new("d", "b1", "k", clock, Some(json!(1))),
            AwarenessUpdate::new("d", "b2", "k", clock, None),
        ];
        assert_eq!(store.set_many(&batch).await.unwrap().len(), 2);
    }
    assert_eq!(
        prepared_like(&store, "UPDATE awareness_entries %").await,
        1,
        "set: one prepared statement"
    );
    assert_eq!(
        prepared_like(&store, "WITH input AS %").await,
        1,
        "set_many: one prepared statement"
    );
}

/// How many times the prepared statements matching `pattern` ran on the store's one connection
/// (PostgreSQL counts a plan choice per execution).
async fn executions_like(store: &PostgresAwarenessStore, pattern: &str) -> i64 {
    let mut conn = store.pool().get().await.unwrap();
    diesel::sql_query(
        "SELECT coalesce(sum(generic_plans + custom_plans), 0)::bigint AS n \
         FROM pg_prepared_statements WHERE statement LIKE $1",
    )
    .bind::<diesel::sql_types::Text, _>(pattern)
    .get_result::<Count>(&mut *conn)
    .await
    .unwrap()
    .n
}

const FAST: &str = "UPDATE awareness_entries %";
const FULL: &str = "WITH p AS %";

/// A heartbeat (a live entry this store wrote, a higher clock, the same or no owner) is one
/// statement: the fast path. The full statement ran only for the first write of each key.
#[tokio::test(flavor = "multi_thread")]
async fn a_heartbeat_is_one_statement() {
    let db = common::TestDb::migrated().await;
    db.exec(
        "INSERT INTO awareness_entries (document_id, client_id, connection_id, state, clock_value) \
         VALUES ('d', 'c', 'k', '{}', 1), ('d', 'o', 'k', '{}', 1)",
    )
    .await;
    let store =
        PostgresAwarenessStore::connect(&db.url, PostgresOptions::default().with_pool_size(1))
            .await
            .unwrap();
    for clock in 2..6 {
        let update = AwarenessUpdate::new("d", "c", "k", clock, Some(json!({ "n": clock })));
        assert!(store.set(&update).await.unwrap().is_applied());
        let owned = AwarenessUpdate::new("d", "o", "k2", clock, Some(json!({ "n": clock })))
            .with_owner(Some("alice".into()));
        assert!(store.set(&owned).await.unwrap().is_applied());
    }
    let leave = AwarenessUpdate::leave("d", "c", "k", 6);
    assert!(store.set(&leave).await.unwrap().is_applied());
    assert_eq!(prepared_like(&store, FAST).await, 1);
    assert_eq!(
        executions_like(&store, FULL).await,
        2,
        "the full statement: once per key this store had not written"
    );
    assert_eq!(
        executions_like(&store, FAST).await,
        7,
        "the fast path alone for the 6 heartbeats and the leave"
    );
}

/// A join, an insert and a stale update are one statement too: the full one, without the
/// fast path first (it would change nothing).
#[tokio::test(flavor = "multi_thread")]
async fn joins_inserts_and_stale_updates_are_one_statement() {
    let db = common::TestDb::migrated().await;
    let store =
        PostgresAwarenessStore::connect(&db.url, PostgresOptions::default().with_pool_size(1))
            .await
            .unwrap();
    let state = Some(json!({ "n": 1 }));
    for client in ["a", "b", "c"] {
        let insert = AwarenessUpdate::new("d", client, "k", 5, state.clone());
        assert!(store.set(&insert).await.unwrap().is_applied());
        let stale = AwarenessUpdate::new("d", client, "k", 4, state.clone());
        assert!(!store.set(&stale).await.unwrap().is_applied());
        let equal = AwarenessUpdate::new("d", client, "k", 5, state.clone());
        assert!(!store.set(&equal).await.unwrap().is_applied());
    }
    // After a leave, the next state is a join.
    assert!(store
        .set(&AwarenessUpdate::leave("d", "a", "k", 6))
        .await
        .unwrap()
        .is_applied());
    assert!(store
        .set(&AwarenessUpdate::new("d", "a", "k", 7, state))
        .await
        .unwrap()
        .is_applied());
    assert_eq!(executions_like(&store, FULL).await, 10);
    assert_eq!(executions_like(&store, FAST).await, 1, "the leave only");

    // A disconnect removes the client; its reconnect with a higher clock joins again, in one
    // statement too.
    assert_eq!(store.remove_all_for_connection("k").await.unwrap().len(), 3);
    let rejoin = AwarenessUpdate::new("d", "b", "k2", 9, Some(json!({ "n": 2 })));
    assert!(store.set(&rejoin).await.unwrap().is_applied());
    assert_eq!(executions_like(&store, FULL).await, 11);
    assert_eq!(executions_like(&store, FAST).await, 1);
}

/// A batch of heartbeats of keys this store wrote is one `UPDATE` (the batch fast path); a
/// batch where some update is not a heartbeat sends the rest through the full batch
/// statement, with every outcome right.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_of_heartbeats_is_one_update() {
    let db = common::TestDb::migrated().await;
    let store =
        PostgresAwarenessStore::connect(&db.url, PostgresOptions::default().with_pool_size(1))
            .await
            .unwrap();
    let batch = |clock: i64| -> Vec<AwarenessUpdate> {
        (0..16)
            .map(|c| {
                AwarenessUpdate::new(
                    "d",
                    format!("c{c}"),
                    "k",
                    clock,
                    Some(json!({ "n": clock })),
                )
            })
            .collect()
    };
    let joined = store.set_many(&batch(1)).await.unwrap();
    assert!(joined.iter().all(|o| o.is_applied()));
    for clock in 2..5 {
        let outcomes = store.set_many(&batch(clock)).await.unwrap();
        assert!(outcomes.iter().all(|o| o.is_applied()), "{outcomes:?}");
    }
    assert_eq!(
        executions_like(&store, "WITH input AS %").await,
        1,
        "the joins only"
    );
    assert_eq!(
        executions_like(&store, "WITH i AS (SELECT * FROM unnest(%").await,
        3
    );

    // Another writer moved c3 ahead: the fast path applies 15, the full statement says c3 is
    // stale.
    db.exec("UPDATE awareness_entries SET clock_value = 100 WHERE client_id = 'c3'")
        .await;
    let outcomes = store.set_many(&batch(5)).await.unwrap();
    for (c, outcome) in outcomes.iter().enumerate() {
        assert_eq!(outcome.is_applied(), c != 3, "c{c}: {outcome:?}");
    }
    assert_eq!(executions_like(&store, "WITH input AS %").await, 2);
    assert_eq!(
        executions_like(&store, "WITH i AS (SELECT * FROM unnest(%").await,
        4
    );
    let c3 = store.get("d", "c3").await.unwrap().unwrap();
    assert_eq!(c3.clock, 100);
    let c4 = store.get("d", "c4").await.unwrap().unwrap();
    assert_eq!(c4.clock, 5);
}
