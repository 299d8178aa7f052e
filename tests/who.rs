//! Who is here, on PostgreSQL (issue 26): the count and the room list read no table page
//! sequentially at a million entries (PostgreSQL's own scan counters say so), and presence
//! events cross instances: joined, updated, left, each once, with the principal, whatever
//! removed the participant, and a resync that brings a subscriber up to date.
//! (Both stores' answers to the same questions: `tests/conformance.rs`.)

mod common;

use std::time::Duration;

use common::{options, seq_scans, TestDb, LONG};
use futures_util::StreamExt;
use serde_json::json;
use synckit_awareness::{
    AwarenessStore, AwarenessUpdate, ChangeFeedOptions, Participant, PostgresAwarenessStore,
    PresenceEvent, PresenceFilter, PresenceStream,
};

/// Guards against a hang only; no assertion depends on how fast events arrive.
const HANG_GUARD: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn counts_and_room_lists_read_no_table_page_sequentially_at_a_million_entries() {
    let db = TestDb::migrated().await;
    // 1,000,000 entries in 100,000 rooms of 10; every tenth room holds only tombstones.
    db.exec(
        "INSERT INTO awareness_entries (document_id, client_id, connection_id, state, clock_value) \
         SELECT lpad((k / 10)::text, 6, '0'), k::text, k::text, \
                CASE WHEN (k / 10) % 10 = 3 THEN NULL ELSE '{\"n\": 1}'::jsonb END, 1 \
         FROM generate_series(0, 999999) k; \
         ANALYZE awareness_entries",
    )
    .await;
    let store = db.store(options(LONG)).await;
    let before = seq_scans(&store).await;
    assert_eq!(store.count("000042").await.expect("count"), 10);
    assert_eq!(store.count("000043").await.expect("count"), 0);
    let first = store.rooms(None, 100).await.expect("rooms");
    assert_eq!(first.len(), 100);
    assert_eq!(first[0].document_id, "000000");
    assert!(first.iter().all(|r| r.participants == 10));
    assert!(
        first.iter().all(|r| !r.document_id.ends_with('3')),
        "a room of tombstones was listed"
    );
    let last = first.last().map(|r| r.document_id.clone()).expect("a page");
    let next = store.rooms(Some(&last), 100).await.expect("rooms");
    assert!(next[0].document_id > last && next.len() == 100);
    let end = store.rooms(Some("099990"), 100).await.expect("rooms");
    // 099991 to 099999 but 099993 (tombstones only).
    assert_eq!(end.len(), 8, "the last rooms: {end:?}");
    let participants = store.get_all("000042").await.expect("get_all");
    assert_eq!(participants.len(), 10);
    let after = seq_scans(&store).await;
    assert_eq!(
        after - before,
        0,
        "counting or listing rooms scanned the table"
    );
}

async fn publisher(db: &TestDb, instance: &str) -> PostgresAwarenessStore {
    let store = db
        .store(options(LONG))
        .await
        .with_change_feed(ChangeFeedOptions::default().with_publish(true))
        .expect("feed options");
    store
        .start_instance(synckit_awareness::InstanceOptions::default().with_instance_id(instance))
        .await
        .expect("start_instance");
    store
}

async fn next(events: &mut PresenceStream) -> PresenceEvent {
    tokio::time::timeout(HANG_GUARD, events.next())
        .await
        .expect("no event arrived")
        .expect("stream ended")
}

/// The next event, which must satisfy `expected` (a marker written last makes "nothing else
/// came" checkable up to a known point).
async fn next_is(events: &mut PresenceStream, expected: impl Fn(&PresenceEvent) -> bool) {
    let event = next(events).await;
    assert!(expected(&event), "unexpected event {event:?}");
}

fn join(doc: &str, client: &str, principal: &str, clock: i64) -> AwarenessUpdate {
    AwarenessUpdate::new(
        doc,
        client,
        format!("conn-{client}"),
        clock,
        Some(json!({ "clock": clock })),
    )
    .with_owner(Some(principal.into()))
}

fn joined(event: &PresenceEvent, client: &str, principal: &str) -> bool {
    matches!(event, PresenceEvent::Joined(Participant { client_id, principal: p, instance, .. })
        if client_id == client && p.as_deref() == Some(principal) && instance.as_deref() == Some("b"))
}

fn left(event: &PresenceEvent, client: &str, principal: &str) -> bool {
    matches!(event, PresenceEvent::Left { client_id, principal: p, .. }
        if client_id == client && p.as_deref() == Some(principal))
}

#[tokio::test(flavor = "multi_thread")]
async fn joins_updates_and_leaves_cross_instances_once_each_with_the_principal() {
    let db = TestDb::migrated().await;
    let a = publisher(&db, "a").await;
    let b = publisher(&db, "b").await;
    // Present before the subscription: known, not announced.
    b.set(&join("room", "early", "erin", 1)).await.expect("set");
    let mut room = a
        .presence_events(PresenceFilter::room("room").with_updates())
        .await
        .expect("subscribe");
    let mut everywhere = a
        .presence_events(PresenceFilter::all())
        .await
        .expect("subscribe");

    b.set(&join("room", "1", "alice", 1)).await.expect("set");
    next_is(&mut room, |e| joined(e, "1", "alice")).await;
    next_is(&mut everywhere, |e| joined(e, "1", "alice")).await;
    b.set(&join("room", "1", "alice", 2)).await.expect("set");
    next_is(&mut room, |e| {
        matches!(e, PresenceEvent::Updated(p) if p.client_id == "1" && p.clock == 2
            && p.principal.as_deref() == Some("alice") && p.state == json!({ "clock": 2 }))
    })
    .await;
    // Another room: only the subscription of every room hears of it.
    b.set(&join("elsewhere", "9", "bob", 1)).await.expect("set");
    next_is(&mut everywhere, |e| {
        joined(e, "9", "bob") && e.document_id() == Some("elsewhere")
    })
    .await;

    // A leave, then the connection closing over the tombstone: one Left.
    b.set(&AwarenessUpdate::leave("room", "1", "conn-1", 3).with_owner(Some("alice".into())))
        .await
        .expect("leave");
    b.remove_all_for_connection("conn-1").await.expect("close");
    next_is(&mut room, |e| left(e, "1", "alice")).await;
    next_is(&mut everywhere, |e| left(e, "1", "alice")).await;
    // The one present before leaves by its connection closing.
    b.remove_all_for_connection("conn-early")
        .await
        .expect("close");
    next_is(&mut room, |e| left(e, "early", "erin")).await;
    next_is(&mut everywhere, |e| left(e, "early", "erin")).await;

    // A crashed instance: its lease lapses and a pruner takes its entries.
    b.set(&join("room", "2", "carol", 1)).await.expect("set");
    next_is(&mut room, |e| joined(e, "2", "carol")).await;
    next_is(&mut everywhere, |e| joined(e, "2", "carol")).await;
    db.exec("UPDATE awareness_instances SET lease_expires_at = now() - interval '1 second' WHERE instance_id = 'b'")
        .await;
    let departed = a.take_departed().await.expect("prune round");
    assert!(
        departed.abandoned.iter().any(|e| e.client_id == "2"),
        "{departed:?}"
    );
    next_is(&mut room, |e| left(e, "2", "carol")).await;
    // The marker: nothing else came before it in this room.
    a.set(&join("room", "marker", "mark", 1))
        .await
        .expect("set");
    next_is(&mut room, |e| {
        matches!(e, PresenceEvent::Joined(p) if p.client_id == "marker" && p.instance.as_deref() == Some("a"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_subscriber_whose_listener_reconnects_gets_a_resync_and_the_difference() {
    let db = TestDb::migrated().await;
    let b = publisher(&db, "b").await;
    let a = db
        .store(options(LONG))
        .await
        .with_change_feed(ChangeFeedOptions::default().with_listener_name("who-listener"))
        .expect("feed options");
    b.set(&join("room", "stays", "sam", 1)).await.expect("set");
    b.set(&join("room", "goes", "gus", 1)).await.expect("set");
    let mut room = a
        .presence_events(PresenceFilter::room("room"))
        .await
        .expect("subscribe");
    // While the listener is away, one leaves and one arrives: the feed's events are lost.
    let terminated = db
        .scalar(
            "SELECT count(pg_terminate_backend(pid))::bigint AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'who-listener'",
        )
        .await;
    assert_eq!(terminated, 1, "the listener's backend");
    b.remove_all_for_connection("conn-goes")
        .await
        .expect("close");
    b.set(&join("room", "new", "nina", 1)).await.expect("set");
    // Whatever arrives first, after the resync the view is right: `new` joined, `goes` left,
    // each once, `stays` never announced.
    let mut seen = Vec::new();
    while !(seen.iter().any(|e| joined(e, "new", "nina"))
        && seen.iter().any(|e| left(e, "goes", "gus")))
    {
        seen.push(next(&mut room).await);
    }
    assert!(seen.contains(&PresenceEvent::Resync), "{seen:?}");
    b.set(&join("room", "marker", "mark", 1))
        .await
        .expect("set");
    loop {
        let event = next(&mut room).await;
        if joined(&event, "marker", "mark") {
            break;
        }
        seen.push(event);
    }
    let joins = |client: &str| {
        seen.iter()
            .filter(|e| matches!(e, PresenceEvent::Joined(p) if p.client_id == client))
            .count()
    };
    let leaves = |client: &str| {
        seen.iter()
            .filter(|e| matches!(e, PresenceEvent::Left { client_id, .. } if client_id == client))
            .count()
    };
    assert_eq!(
        (
            joins("new"),
            leaves("goes"),
            joins("stays"),
            leaves("stays")
        ),
        (1, 1, 0, 0),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_room_is_refused() {
    let db = TestDb::migrated().await;
    let a = db.store(options(LONG)).await;
    let refused = a.presence_events(PresenceFilter::room("")).await;
    assert!(
        matches!(refused, Err(synckit_awareness::Error::InvalidInput { .. })),
        "an empty room id"
    );
}
