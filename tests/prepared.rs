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

/// A heartbeat (a live entry, a higher clock, the same or no owner) is one statement: the fast
/// path. The full statement is never prepared on a connection that only sent heartbeats.
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
    assert_eq!(prepared_like(&store, "UPDATE awareness_entries %").await, 1);
    assert_eq!(
        prepared_like(&store, "WITH p AS %").await,
        0,
        "no heartbeat needed the full statement"
    );
}
