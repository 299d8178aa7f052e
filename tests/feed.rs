//! The change feed across instances: two stores with separate pools on one database.

mod common;

use std::time::Duration;

use common::{options, TestDb, LONG, PAST_SHORT, SHORT};
use futures_util::StreamExt;
use serde_json::json;
use synckit_awareness::{
    AwarenessChange, AwarenessStore, AwarenessUpdate, ChangeFeedOptions, ChangeFilter, ChangeKind,
    ChangeStream, ChannelEvent, FeedEvent, PostgresAwarenessStore,
};

/// Guards against a hang only (a missing event fails the test instead of blocking it); no
/// assertion depends on how fast events arrive.
const HANG_GUARD: Duration = Duration::from_secs(60);

async fn publisher(db: &TestDb, timeout: Duration) -> PostgresAwarenessStore {
    db.store(options(timeout))
        .await
        .with_change_feed(ChangeFeedOptions::default().with_publish(true))
        .expect("feed options")
}

async fn next(stream: &mut ChangeStream) -> FeedEvent {
    tokio::time::timeout(HANG_GUARD, stream.next())
        .await
        .expect("no event arrived")
        .expect("stream ended")
}

async fn next_event(stream: &mut synckit_awareness::ChannelStream) -> ChannelEvent {
    tokio::time::timeout(HANG_GUARD, stream.next())
        .await
        .expect("no event arrived")
        .expect("stream ended")
}

async fn next_change(stream: &mut ChangeStream) -> AwarenessChange {
    match next(stream).await {
        FeedEvent::Change(change) => change,
        FeedEvent::Resync => panic!("unexpected Resync"),
    }
}

/// (kind, client) pairs from changes until `count` have arrived.
async fn keys(stream: &mut ChangeStream, count: usize) -> Vec<(ChangeKind, String)> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let change = next_change(stream).await;
        seen.extend(change.client_ids.into_iter().map(|c| (change.kind, c)));
    }
    seen
}

/// Terminates the sessions of this database named `application_name`; returns how many.
async fn terminate(db: &TestDb, application_name: &str) -> i64 {
    db.scalar(&format!(
        "SELECT count(pg_terminate_backend(pid))::bigint AS n FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = '{application_name}'"
    ))
    .await
}

fn set(doc: &str, client: &str, clock: i64) -> AwarenessUpdate {
    AwarenessUpdate::new(doc, client, "conn-a", clock, Some(json!({"clock": clock})))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_set_on_one_instance_reaches_another() {
    let db = TestDb::migrated().await;
    let a = publisher(&db, LONG).await;
    let b = db.store(options(LONG)).await;
    let mut all = b.subscribe(ChangeFilter::all()).await.unwrap();
    let mut doc2 = b.subscribe(ChangeFilter::document("doc2")).await.unwrap();

    a.set(&set("doc1", "alice", 1)).await.unwrap();
    a.set(&set("doc2", "bob", 1)).await.unwrap();

    let change = next_change(&mut all).await;
    assert_eq!(change.document_id, "doc1");
    assert_eq!(change.client_ids, ["alice"]);
    assert_eq!(change.kind, ChangeKind::Set);
    assert_eq!(change.origin, a.change_feed_origin());
    assert_eq!(next_change(&mut all).await.document_id, "doc2");
    // The document filter skipped doc1.
    let change = next_change(&mut doc2).await;
    assert_eq!(
        (change.document_id.as_str(), change.client_ids),
        ("doc2", vec!["bob".to_owned()])
    );
    // Keys only: B reads the state itself, and sees A's write.
    let entry = b.get("doc1", "alice").await.unwrap().expect("entry");
    assert_eq!(entry.state, Some(json!({"clock": 1})));
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_sets_publish_nothing_and_own_events_can_be_ignored() {
    let db = TestDb::migrated().await;
    let a = publisher(&db, LONG).await;
    let mut others = a
        .subscribe(ChangeFilter::all().ignoring_own())
        .await
        .unwrap();
    let mut everything = a.subscribe(ChangeFilter::all()).await.unwrap();
    let c = publisher(&db, LONG).await;

    a.set(&set("doc", "alice", 5)).await.unwrap();
    assert!(!a.set(&set("doc", "alice", 4)).await.unwrap().is_applied());
    c.set(&set("doc", "carol", 1)).await.unwrap();

    // A's own set is seen unfiltered, the stale one never, and C's. Order is kept per
    // publishing store only: A's and C's publishers send independently.
    let mut seen = keys(&mut everything, 2).await;
    seen.sort_by(|x, y| x.1.cmp(&y.1));
    assert_eq!(
        seen,
        [
            (ChangeKind::Set, "alice".to_owned()),
            (ChangeKind::Set, "carol".to_owned())
        ]
    );
    let change = next_change(&mut others).await;
    assert_eq!(
        (change.client_ids, change.origin.as_str()),
        (vec!["carol".to_owned()], c.change_feed_origin())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn leaves_removals_and_prunes_are_published() {
    let db = TestDb::migrated().await;
    let a = publisher(&db, LONG).await;
    let b = db.store(options(LONG)).await;
    let mut feed = b.subscribe(ChangeFilter::all()).await.unwrap();

    a.set(&set("doc", "alice", 1)).await.unwrap();
    a.set(&AwarenessUpdate::leave("doc", "alice", "conn-a", 2))
        .await
        .unwrap();
    a.set(&set("doc", "bob", 1)).await.unwrap();
    assert!(a.remove("doc", "bob").await.unwrap());
    assert!(!a.remove("doc", "nobody").await.unwrap());
    a.set(&set("doc", "carol", 1)).await.unwrap();
    a.set(&set("other", "dave", 1)).await.unwrap();
    assert_eq!(
        a.remove_all_for_connection("conn-a").await.unwrap().len(),
        3
    );
    let key = |kind, client: &str| (kind, client.to_owned());
    assert_eq!(
        keys(&mut feed, 9).await,
        [
            key(ChangeKind::Set, "alice"),
            key(ChangeKind::Leave, "alice"),
            key(ChangeKind::Set, "bob"),
            key(ChangeKind::Remove, "bob"),
            key(ChangeKind::Set, "carol"),
            key(ChangeKind::Set, "dave"),
            // remove_all_for_connection: the alice tombstone and carol, then dave.
            key(ChangeKind::Remove, "alice"),
            key(ChangeKind::Remove, "carol"),
            key(ChangeKind::Remove, "dave"),
        ]
    );

    // Expiry, through a short-timeout view of the same table that publishes too.
    let a = PostgresAwarenessStore::from_pool(a.pool().clone(), options(SHORT))
        .with_change_feed(ChangeFeedOptions::default().with_publish(true))
        .unwrap();
    a.set(&set("doc", "erin", 1)).await.unwrap();
    a.set(&set("doc", "frank", 1)).await.unwrap();
    assert_eq!(keys(&mut feed, 2).await.len(), 2);
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(a.prune_expired().await.unwrap(), 2);
    assert_eq!(
        keys(&mut feed, 2).await,
        [
            (ChangeKind::Expire, "erin".to_owned()),
            (ChangeKind::Expire, "frank".to_owned())
        ]
    );
    a.set(&set("doc", "gina", 1)).await.unwrap();
    assert_eq!(keys(&mut feed, 1).await[0].1, "gina");
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(a.take_expired().await.unwrap().len(), 1);
    assert_eq!(
        keys(&mut feed, 1).await,
        [(ChangeKind::Expire, "gina".to_owned())]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn order_per_document_and_client_is_preserved() {
    let db = TestDb::migrated().await;
    let a = publisher(&db, LONG).await;
    let b = db.store(options(LONG)).await;
    let mut feed = b.subscribe(ChangeFilter::document("doc")).await.unwrap();

    // Interleaved writes to two clients, without waiting for the publisher in between, so
    // they coalesce into few NOTIFYs; each client's own sequence must arrive in order.
    let mut expected_a = Vec::new();
    let mut expected_b = Vec::new();
    for round in 0..50i64 {
        a.set(&set("doc", "a", round * 2 + 1)).await.unwrap();
        a.set(&set("doc", "b", round * 2 + 1)).await.unwrap();
        a.set(&AwarenessUpdate::leave("doc", "a", "conn-a", round * 2 + 2))
            .await
            .unwrap();
        expected_a.extend([ChangeKind::Set, ChangeKind::Leave]);
        expected_b.push(ChangeKind::Set);
        if round % 10 == 9 {
            assert!(a.remove("doc", "b").await.unwrap());
            expected_b.push(ChangeKind::Remove);
        }
    }
    a.set(&set("doc", "end", 1)).await.unwrap();
    let mut seen_a = Vec::new();
    let mut seen_b = Vec::new();
    loop {
        let change = next_change(&mut feed).await;
        for client in change.client_ids {
            match client.as_str() {
                "a" => seen_a.push(change.kind),
                "b" => seen_b.push(change.kind),
                _ => {
                    assert_eq!(seen_a, expected_a);
                    // Consecutive sets of b with nothing between may coalesce into one.
                    let mut expected_b = expected_b.clone();
                    expected_b.dedup();
                    seen_b.dedup();
                    assert_eq!(seen_b, expected_b);
                    return;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_listener_survives_a_terminated_connection() {
    let db = TestDb::migrated().await;
    let a = publisher(&db, LONG).await;
    let b = db.store(options(LONG)).await;
    let mut feed = b.subscribe(ChangeFilter::all()).await.unwrap();
    a.set(&set("doc", "before", 1)).await.unwrap();
    assert_eq!(next_change(&mut feed).await.client_ids, ["before"]);

    assert_eq!(
        terminate(&db, "synckit-awareness-listener").await,
        1,
        "the listener's backend"
    );

    assert_eq!(next(&mut feed).await, FeedEvent::Resync);
    a.set(&set("doc", "after", 1)).await.unwrap();
    assert_eq!(next_change(&mut feed).await.client_ids, ["after"]);
}

/// Issue 27: an application's own channel rides on the feed's listening session (one session
/// woken per `NOTIFY` instead of two), with a resync after a lost connection.
#[tokio::test(flavor = "multi_thread")]
async fn other_channels_share_the_listening_session() {
    let db = TestDb::migrated().await;
    let a = publisher(&db, LONG).await;
    let b = db
        .store(options(LONG))
        .await
        .with_change_feed(
            ChangeFeedOptions::default()
                .with_also_listen("app_events")
                .with_listener_name("feed-test-shared"),
        )
        .expect("feed options");
    let refused = b.subscribe_channel("not_configured").await;
    assert!(
        matches!(refused, Err(synckit_awareness::Error::Config(_))),
        "{:?}",
        refused.err()
    );
    let mut feed = b.subscribe(ChangeFilter::all()).await.unwrap();
    let mut events = b.subscribe_channel("app_events").await.unwrap();
    let sessions = "SELECT count(*)::bigint AS n FROM pg_stat_activity \
                    WHERE datname = current_database() AND application_name = 'feed-test-shared'";
    assert_eq!(db.scalar(sessions).await, 1, "one listening session");

    db.scalar("SELECT count(pg_notify('app_events', 'hello'))::bigint AS n")
        .await;
    a.set(&set("doc", "feed", 1)).await.unwrap();
    assert_eq!(
        next_event(&mut events).await,
        ChannelEvent::Notification("hello".into())
    );
    assert_eq!(next_change(&mut feed).await.client_ids, ["feed"]);

    assert_eq!(
        terminate(&db, "feed-test-shared").await,
        1,
        "the listener's backend"
    );
    assert_eq!(next_event(&mut events).await, ChannelEvent::Resync);
    assert_eq!(next(&mut feed).await, FeedEvent::Resync);
    db.scalar("SELECT count(pg_notify('app_events', 'again'))::bigint AS n")
        .await;
    assert_eq!(
        next_event(&mut events).await,
        ChannelEvent::Notification("again".into())
    );
    assert_eq!(db.scalar(sessions).await, 1, "still one listening session");
}

/// Issue 27: a store that publishes and listens sends its `NOTIFY`s through its listening
/// session (PostgreSQL then wakes one session fewer); while that session is away it publishes
/// through the pool, and nothing is lost either way.
#[tokio::test(flavor = "multi_thread")]
async fn a_listening_publisher_notifies_through_its_listener() {
    let db = TestDb::migrated().await;
    let a = db
        .store(options(LONG))
        .await
        .with_change_feed(
            ChangeFeedOptions::default()
                .with_publish(true)
                .with_listener_name("feed-test-own")
                .with_reconnect_delay(Duration::from_millis(500)),
        )
        .expect("feed options");
    let b = db.store(options(LONG)).await;
    let mut own = a.subscribe(ChangeFilter::all()).await.unwrap();
    let mut other = b.subscribe(ChangeFilter::all()).await.unwrap();
    a.set(&set("doc", "one", 1)).await.unwrap();
    assert_eq!(next_change(&mut own).await.client_ids, ["one"]);
    assert_eq!(next_change(&mut other).await.client_ids, ["one"]);
    let through_listener = "SELECT count(*)::bigint AS n FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = 'feed-test-own' \
         AND query LIKE 'SELECT pg_notify(%'";
    assert_eq!(
        db.scalar(through_listener).await,
        1,
        "sent on the listener's session"
    );

    assert_eq!(
        terminate(&db, "feed-test-own").await,
        1,
        "the listener's backend"
    );
    // Published while the listener is away (it waits 500 ms): through the pool.
    a.set(&set("doc", "two", 1)).await.unwrap();
    assert_eq!(next_change(&mut other).await.client_ids, ["two"]);
    assert_eq!(next(&mut own).await, FeedEvent::Resync);
    a.set(&set("doc", "three", 1)).await.unwrap();
    assert_eq!(next_change(&mut other).await.client_ids, ["three"]);
    assert_eq!(next_change(&mut own).await.client_ids, ["three"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn publishing_is_off_by_default_and_options_are_checked() {
    let db = TestDb::migrated().await;
    let quiet = db.store(options(LONG)).await;
    let b = db.store(options(LONG)).await;
    let mut feed = b.subscribe(ChangeFilter::all()).await.unwrap();
    let loud = publisher(&db, LONG).await;
    quiet.set(&set("doc", "quiet", 1)).await.unwrap();
    loud.set(&set("doc", "loud", 1)).await.unwrap();
    // The quiet store's set was written first; only the loud one's arrives.
    assert_eq!(next_change(&mut feed).await.client_ids, ["loud"]);

    for bad in [
        ChangeFeedOptions::default().with_channel(String::new()),
        ChangeFeedOptions::default().with_channel("c".repeat(64)),
        ChangeFeedOptions::default().with_origin("o\0"),
        ChangeFeedOptions::default().with_capacity(0),
        ChangeFeedOptions::default().with_also_listen(""),
        ChangeFeedOptions::default().with_also_listen(synckit_awareness::DEFAULT_CHANNEL),
        ChangeFeedOptions::default().with_listener_name("n".repeat(64)),
    ] {
        assert!(matches!(
            db.store(options(LONG)).await.with_change_feed(bad),
            Err(synckit_awareness::Error::Config(_))
        ));
    }
}
