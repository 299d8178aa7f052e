//! A publisher alone on its channel (`ChangeFeedOptions::notify_when_alone` off): while its
//! listener hears no other listener's hello, its changes reach its own subscribers and no
//! `NOTIFY` is sent (a plain `LISTEN` session, which says no hello, counts them); once another
//! store's listener starts, changes go out again and reach it; once that listener is gone and
//! quiet, they stop again. With the default (`true`) every change is notified.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{options, TestDb, LONG};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use futures_util::StreamExt;
use serde_json::json;
use synckit_awareness::{
    AwarenessStore, AwarenessUpdate, ChangeFeedOptions, ChangeFilter, ChangeStream, FeedEvent,
    PostgresAwarenessStore, DEFAULT_CHANNEL,
};

const HANG_GUARD: Duration = Duration::from_secs(60);
const HELLO: Duration = Duration::from_millis(100);
/// Longer than the quiet time (2.5 hellos).
const QUIET: Duration = Duration::from_millis(400);

/// Counts the change-carrying notifications on the feed's channel (hellos carry none), from a
/// session that listens without saying hello.
async fn plain_listener(db: &TestDb) -> Arc<AtomicUsize> {
    let mut conn = AsyncPgConnection::establish(&db.url)
        .await
        .expect("a plain listening session");
    conn.batch_execute(&format!("LISTEN \"{DEFAULT_CHANNEL}\""))
        .await
        .expect("LISTEN");
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        let mut notifications = std::pin::pin!(conn.notifications_stream());
        while let Some(Ok(notification)) = notifications.next().await {
            let payload: serde_json::Value =
                serde_json::from_str(&notification.payload).expect("a feed payload is JSON");
            if payload["e"].as_array().is_some_and(|e| !e.is_empty()) {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    count
}

async fn store(db: &TestDb, feed: ChangeFeedOptions) -> PostgresAwarenessStore {
    db.store(options(LONG))
        .await
        .with_change_feed(feed.with_publish(true))
        .expect("feed options")
}

fn set(client: &str, clock: i64) -> AwarenessUpdate {
    AwarenessUpdate::new(
        "doc",
        client,
        "conn-a",
        clock,
        Some(json!({ "clock": clock })),
    )
}

/// The next change of `client`, skipping others; its clock.
async fn clock_of(stream: &mut ChangeStream, client: &str) -> i64 {
    loop {
        let event = tokio::time::timeout(HANG_GUARD, stream.next())
            .await
            .expect("no event arrived")
            .expect("stream ended");
        if let FeedEvent::Change(change) = event {
            if let Some(at) = change.client_ids.iter().position(|c| c == client) {
                return change
                    .states
                    .get(at)
                    .and_then(|s| s.as_ref())
                    .map_or(-1, |s| s.clock);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn alone_no_notify_reaches_own_subscribers_and_stops_when_someone_listens() {
    let db = TestDb::migrated().await;
    let heard = plain_listener(&db).await;
    let a = store(
        &db,
        ChangeFeedOptions::default()
            .with_notify_when_alone(false)
            .with_hello_every(HELLO),
    )
    .await;
    let mut own = a.subscribe(ChangeFilter::all()).await.expect("subscribe");
    tokio::time::sleep(QUIET).await;

    // Alone: its own subscriber gets every change, nobody else a notification.
    for clock in 1..=3 {
        a.set(&set("alice", clock)).await.expect("set");
        assert_eq!(clock_of(&mut own, "alice").await, clock);
    }
    a.flush_change_feed().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        heard.load(Ordering::SeqCst),
        0,
        "a publisher alone sent a NOTIFY"
    );

    // Another store's listener starts (and says hello): changes are notified again.
    let b = store(&db, ChangeFeedOptions::default().with_hello_every(HELLO)).await;
    let mut other = b.subscribe(ChangeFilter::all()).await.expect("subscribe");
    tokio::time::sleep(Duration::from_millis(200)).await;
    a.set(&set("alice", 4)).await.expect("set");
    assert_eq!(
        clock_of(&mut other, "alice").await,
        4,
        "the other listener hears it"
    );
    assert_eq!(clock_of(&mut own, "alice").await, 4);
    a.flush_change_feed().await;
    let with_company = heard.load(Ordering::SeqCst);
    assert!(
        with_company >= 1,
        "not alone, yet no NOTIFY carried the change"
    );

    // The other store goes away; once it has been quiet, no NOTIFY again.
    drop(other);
    drop(b);
    tokio::time::sleep(QUIET + HELLO).await;
    a.set(&set("alice", 5)).await.expect("set");
    assert_eq!(clock_of(&mut own, "alice").await, 5);
    a.flush_change_feed().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        heard.load(Ordering::SeqCst),
        with_company,
        "alone again, yet a NOTIFY was sent"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn by_default_a_publisher_alone_still_notifies() {
    let db = TestDb::migrated().await;
    let heard = plain_listener(&db).await;
    let a = store(&db, ChangeFeedOptions::default().with_hello_every(HELLO)).await;
    let mut own = a.subscribe(ChangeFilter::all()).await.expect("subscribe");
    tokio::time::sleep(QUIET).await;
    a.set(&set("alice", 1)).await.expect("set");
    assert_eq!(clock_of(&mut own, "alice").await, 1);
    a.flush_change_feed().await;
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    while heard.load(Ordering::SeqCst) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no NOTIFY arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
