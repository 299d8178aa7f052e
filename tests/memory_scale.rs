//! The in-memory store at scale: joins cost the same with a million entries as with ten (the
//! live counts per document and per connection are kept, not counted), and the counts follow
//! expiry, including for two handles with different timeouts on the same entries.
//! (The contract's semantics are the conformance and model tests'; this file is about size.)

use std::time::{Duration, Instant};

use serde_json::json;
use synckit_awareness::{
    AwarenessStore, AwarenessUpdate, MemoryAwarenessStore, SetOutcome, StoreOptions,
};

const ENTRIES: usize = 1_000_000;
const PER_DOCUMENT: usize = 1_000;
const CONNECTIONS: usize = 4;

fn join(doc: usize, client: usize, conn: usize, clock: i64) -> AwarenessUpdate {
    AwarenessUpdate::new(
        doc.to_string(),
        client.to_string(),
        format!("conn-{conn}"),
        clock,
        Some(
            json!({"user": {"name": format!("User {client}"), "color": "#30bced"}, "cursor": {"anchor": client, "head": client + 6}}),
        ),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_million_entries_load_in_seconds_and_limits_still_hold() {
    // The default per-document limit (1,000) is on; the per-connection one is lifted because
    // four connections carry every participant. An hour's timeout: a debug build on a busy
    // 2-core machine took over 30 s (the default) to load, and the first entries expired.
    let store = MemoryAwarenessStore::with_options(
        StoreOptions::default()
            .with_max_clients_per_connection(None)
            .with_timeout(Duration::from_secs(3600)),
    );
    let started = Instant::now();
    for i in 0..ENTRIES {
        let outcome = store
            .set(&join(i / PER_DOCUMENT, i, i % CONNECTIONS, 1))
            .await
            .expect("set");
        assert_eq!(outcome, SetOutcome::Applied, "entry {i}");
    }
    let loaded = started.elapsed();
    println!(
        "loaded {ENTRIES} entries ({} documents, {CONNECTIONS} connections) in {:.2} s",
        ENTRIES / PER_DOCUMENT,
        loaded.as_secs_f64()
    );
    assert_eq!(store.len(), ENTRIES);

    // Every document is full: a new participant is refused, a heartbeat and a leave are not,
    // and the leave frees a place.
    let last_doc = ENTRIES / PER_DOCUMENT - 1;
    let newcomer = join(last_doc, ENTRIES, 0, 1);
    assert_eq!(
        store.set(&newcomer).await.expect("set"),
        SetOutcome::DocumentFull
    );
    let first_of_last = last_doc * PER_DOCUMENT;
    let heartbeat = join(last_doc, first_of_last, first_of_last % CONNECTIONS, 2);
    assert_eq!(
        store.set(&heartbeat).await.expect("set"),
        SetOutcome::Applied
    );
    let mut leave = heartbeat.clone();
    leave.clock = 3;
    leave.state = None;
    assert_eq!(store.set(&leave).await.expect("set"), SetOutcome::Applied);
    assert_eq!(
        store.set(&newcomer).await.expect("set"),
        SetOutcome::Applied
    );
    assert_eq!(
        store
            .get_all(&last_doc.to_string())
            .await
            .expect("get_all")
            .len(),
        PER_DOCUMENT
    );

    // A connection's entries leave together, and its documents take joins again.
    let removed = store
        .remove_all_for_connection("conn-1")
        .await
        .expect("remove_all_for_connection");
    assert_eq!(removed.len(), ENTRIES / CONNECTIONS);
    assert_eq!(store.len(), ENTRIES + 1 - ENTRIES / CONNECTIONS);
    assert_eq!(
        store.set(&join(0, ENTRIES + 1, 1, 1)).await.expect("set"),
        SetOutcome::Applied
    );
    println!("total {:.2} s", started.elapsed().as_secs_f64());
}

#[tokio::test]
async fn a_connection_limit_counts_live_entries_only() {
    let store = MemoryAwarenessStore::with_options(
        StoreOptions::default()
            .with_timeout(Duration::from_millis(300))
            .with_max_clients_per_connection(Some(2)),
    );
    for client in 0..2 {
        assert_eq!(
            store.set(&join(client, client, 0, 1)).await.expect("set"),
            SetOutcome::Applied
        );
    }
    assert_eq!(
        store.set(&join(2, 2, 0, 1)).await.expect("set"),
        SetOutcome::ConnectionFull
    );
    // Moving a participant to another connection frees a place on the first.
    assert_eq!(
        store.set(&join(1, 1, 9, 2)).await.expect("set"),
        SetOutcome::Applied
    );
    assert_eq!(
        store.set(&join(2, 2, 0, 1)).await.expect("set"),
        SetOutcome::Applied
    );
    // Once they expire, the connection takes two new ones, and still not three.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for client in 3..5 {
        assert_eq!(
            store.set(&join(client, client, 0, 1)).await.expect("set"),
            SetOutcome::Applied
        );
    }
    assert_eq!(
        store.set(&join(5, 5, 0, 1)).await.expect("set"),
        SetOutcome::ConnectionFull
    );
    // Expired entries stay until pruned, and pruning takes exactly them.
    assert_eq!(store.len(), 5);
    let taken = store.take_expired().await.expect("take_expired");
    let taken: Vec<&str> = taken.iter().map(|e| e.client_id.as_str()).collect();
    assert_eq!(taken, ["0", "1", "2"]);
    assert_eq!(store.len(), 2);
}

#[tokio::test]
async fn handles_with_different_timeouts_count_with_their_own() {
    let limits = StoreOptions::default().with_max_clients_per_document(Some(2));
    let short = MemoryAwarenessStore::with_options(limits.with_timeout(Duration::from_millis(200)));
    let long = short.view_with_options(limits.with_timeout(Duration::from_secs(30)));
    for client in 0..2 {
        assert_eq!(
            short.set(&join(0, client, client, 1)).await.expect("set"),
            SetOutcome::Applied
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // For the short handle both have expired; for the long one they are live.
    assert_eq!(
        short.set(&join(0, 2, 2, 1)).await.expect("set"),
        SetOutcome::Applied
    );
    assert_eq!(
        long.set(&join(0, 3, 3, 1)).await.expect("set"),
        SetOutcome::DocumentFull
    );
    assert_eq!(
        short.set(&join(0, 4, 4, 1)).await.expect("set"),
        SetOutcome::Applied
    );
    assert_eq!(
        short.set(&join(0, 5, 5, 1)).await.expect("set"),
        SetOutcome::DocumentFull
    );
    assert_eq!(long.get_all("0").await.expect("get_all").len(), 4);
    assert_eq!(short.get_all("0").await.expect("get_all").len(), 2);
}
