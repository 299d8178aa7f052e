//! Pruning rounds on PostgreSQL cost what they remove, not what the table holds: an idle round
//! (nothing expired, every lease valid) reads no table page sequentially, checked through
//! PostgreSQL's own scan counters; expired entries are still taken within a round of their
//! expiry, and a crashed instance's entries at the first round after its lease lapsed.

mod common;

use common::seq_scans;

use std::time::{Duration, Instant};

use serde_json::json;
use synckit_awareness::{
    AwarenessStore, AwarenessUpdate, InstanceOptions, PostgresAwarenessStore, PostgresOptions,
    StoreOptions,
};

async fn store(url: &str, timeout: Duration) -> PostgresAwarenessStore {
    PostgresAwarenessStore::connect(
        url,
        PostgresOptions::default()
            .with_pool_size(1)
            .with_store(StoreOptions::default().with_timeout(timeout)),
    )
    .await
    .expect("connect")
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_rounds_read_no_table_page_sequentially() {
    let db = common::TestDb::migrated().await;
    let store = store(&db.url, Duration::from_secs(30)).await;
    store
        .start_instance(InstanceOptions::default().with_instance_id("live"))
        .await
        .expect("start_instance");
    // 100,000 fresh entries of the live instance, analysed so the planner knows the size.
    db.exec(
        "INSERT INTO awareness_entries (document_id, client_id, connection_id, state, clock_value, instance_id) \
         SELECT (k / 10)::text, k::text, k::text, '{\"n\": 1}', 1, 'live' FROM generate_series(1, 100000) k; \
         ANALYZE awareness_entries",
    )
    .await;
    // The first round looks for expired entries (one scan) and learns when the first can
    // expire: the counter sees it.
    let start = seq_scans(&store).await;
    assert!(store.take_departed().await.expect("round").is_empty());
    let before = seq_scans(&store).await;
    assert!(before > start, "the first round's scan was not counted");
    for _ in 0..20 {
        assert!(store.take_departed().await.expect("round").is_empty());
    }
    let after = seq_scans(&store).await;
    assert_eq!(after - before, 0, "idle rounds scanned the table");
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_entries_are_taken_within_a_round_of_expiring() {
    let db = common::TestDb::migrated().await;
    let timeout = Duration::from_millis(1_500);
    let store = store(&db.url, timeout).await;
    // An empty table: the next look is a timeout away; an entry written after expires later.
    assert!(store.take_departed().await.expect("round").is_empty());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let written = Instant::now();
    let update = AwarenessUpdate::new("d", "c", "k", 1, Some(json!({ "n": 1 })));
    assert!(store.set(&update).await.expect("set").is_applied());
    let round = Duration::from_millis(100);
    let taken = loop {
        let departed = store.take_departed().await.expect("round");
        if !departed.expired.is_empty() {
            break departed.expired;
        }
        assert!(
            written.elapsed() < timeout * 3,
            "the expired entry was not taken"
        );
        tokio::time::sleep(round).await;
    };
    let after = written.elapsed();
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].client_id, "c");
    assert!(
        after >= timeout,
        "taken after {after:?}, before its timeout of {timeout:?}"
    );
    println!("taken {:?} after the write (timeout {timeout:?})", after);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lapsed_instance_is_taken_at_the_next_round() {
    let db = common::TestDb::migrated().await;
    let pruner = store(&db.url, Duration::from_secs(30)).await;
    pruner
        .start_instance(InstanceOptions::default().with_instance_id("pruner"))
        .await
        .expect("start_instance");
    assert!(pruner.take_departed().await.expect("round").is_empty());
    // Another instance's entries, its lease already lapsed (it crashed).
    db.exec(
        "INSERT INTO awareness_instances (instance_id, lease_expires_at) VALUES ('crashed', now() - interval '1 second'); \
         INSERT INTO awareness_entries (document_id, client_id, connection_id, state, clock_value, instance_id) \
         SELECT 'd', k::text, 'k', '{}', 1, 'crashed' FROM generate_series(1, 3) k",
    )
    .await;
    let departed = pruner.take_departed().await.expect("round");
    let abandoned: Vec<&str> = departed
        .abandoned
        .iter()
        .map(|e| e.client_id.as_str())
        .collect();
    assert_eq!(abandoned, ["1", "2", "3"]);
    assert!(departed.expired.is_empty());
    // And an entry of an instance that never had a lease here, written after a take-over.
    db.exec(
        "INSERT INTO awareness_entries (document_id, client_id, connection_id, state, clock_value, instance_id) \
         VALUES ('d', 'late', 'k', '{}', 1, 'crashed')",
    )
    .await;
    let departed = pruner.take_departed().await.expect("round");
    assert_eq!(departed.abandoned.len(), 1);
    assert_eq!(departed.abandoned[0].client_id, "late");
    assert!(pruner.take_departed().await.expect("round").is_empty());
}

/// Of the instances on one database, only the live one with the smallest id looks for
/// expired entries; the others' rounds read no table page sequentially, even their first.
#[tokio::test(flavor = "multi_thread")]
async fn one_instance_looks_for_expired_entries() {
    let db = common::TestDb::migrated().await;
    let leader = store(&db.url, Duration::from_secs(30)).await;
    leader
        .start_instance(InstanceOptions::default().with_instance_id("a-leader"))
        .await
        .expect("start_instance");
    let other = store(&db.url, Duration::from_secs(30)).await;
    other
        .start_instance(InstanceOptions::default().with_instance_id("b-other"))
        .await
        .expect("start_instance");
    db.exec(
        "INSERT INTO awareness_entries (document_id, client_id, connection_id, state, clock_value, instance_id) \
         SELECT (k / 10)::text, k::text, k::text, '{}', 1, 'a-leader' FROM generate_series(1, 100000) k; \
         ANALYZE awareness_entries",
    )
    .await;
    let start = seq_scans(&other).await;
    for _ in 0..5 {
        assert!(other.take_departed().await.expect("round").is_empty());
    }
    assert_eq!(
        seq_scans(&other).await - start,
        0,
        "the other instance scanned"
    );
    assert!(leader.take_departed().await.expect("round").is_empty());
    assert!(
        seq_scans(&leader).await > start,
        "the leader's first round scans"
    );
}
