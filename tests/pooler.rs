//! Behind PgBouncer in transaction mode (issue 21), started by the test harness
//! (tests/common/pooler.rs): the change feed with writers through the pooler and the listener
//! on a direct URL, two instances with leases through it, nothing of the store's session
//! settings left on the pooler's server connections, and a clear error for what cannot work
//! there. The conformance and model suites also run through it (`postgres_pooler::*`,
//! `stores_match_the_contract_model_through_a_transaction_pooler`).

mod common;

use std::time::{Duration, Instant};

use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures_util::StreamExt;
use serde_json::json;
use synckit_awareness::{
    AwarenessStore, AwarenessUpdate, ChangeFeedOptions, ChangeFilter, Error, FeedEvent,
    InstanceOptions, PostgresAwarenessStore, PostgresOptions, SetOutcome,
};

use common::TestDb;

const LEASE: Duration = Duration::from_millis(1500);

fn pooled_options() -> PostgresOptions {
    PostgresOptions::default()
        .with_timeout(common::LONG)
        .with_pool_size(4)
        .with_transaction_pooler(true)
}

async fn pooled_store(url: &str) -> PostgresAwarenessStore {
    PostgresAwarenessStore::connect(url, pooled_options())
        .await
        .unwrap_or_else(|e| panic!("cannot open the store through PgBouncer: {e}"))
}

fn update(client: &str, clock: i64) -> AwarenessUpdate {
    AwarenessUpdate::new("doc", client, "k", clock, Some(json!({ "clock": clock })))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_change_feed_publishes_through_the_pooler_and_listens_on_a_direct_url() {
    let db = TestDb::migrated().await;
    let pooled = common::pooled_url(&db).await;
    let feed = || {
        ChangeFeedOptions::default()
            .with_publish(true)
            .with_listen_url(db.url.clone())
    };
    let writer = pooled_store(&pooled)
        .await
        .with_change_feed(feed())
        .expect("feed");
    let reader = pooled_store(&pooled)
        .await
        .with_change_feed(feed())
        .expect("feed");
    let mut events = reader
        .subscribe(ChangeFilter::document("doc"))
        .await
        .expect("subscribe on the direct URL");
    assert_eq!(
        writer.set(&update("a", 1)).await.unwrap(),
        SetOutcome::Applied
    );
    let event = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("an event within 5 s")
        .expect("the stream goes on");
    let FeedEvent::Change(change) = event else {
        panic!("a change, got {event:?}");
    };
    assert_eq!(change.client_ids, ["a"]);
    assert_eq!(change.state_of(0).map(|s| s.clock), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn what_cannot_work_through_the_pooler_fails_at_once_saying_how_to_fix_it() {
    let db = TestDb::migrated().await;
    let store = pooled_store(&common::pooled_url(&db).await).await;
    let started = Instant::now();
    match store.migrate(&[]).await {
        Err(Error::Config(message)) => assert!(message.contains("direct"), "{message}"),
        other => panic!("migrate behind a pooler: {other:?}"),
    }
    let feed = store
        .with_change_feed(ChangeFeedOptions::default())
        .expect("feed options");
    match feed.subscribe(ChangeFilter::all()).await {
        Err(Error::Config(message)) => assert!(message.contains("with_listen_url"), "{message}"),
        Err(other) => panic!("subscribe without a listen URL: {other:?}"),
        Ok(_) => panic!("subscribe without a listen URL behind a pooler succeeded"),
    }
    assert!(started.elapsed() < Duration::from_secs(2), "no hang");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_instances_hold_leases_through_the_pooler_and_a_dead_one_is_taken_over() {
    let db = TestDb::migrated().await;
    let pooled = common::pooled_url(&db).await;
    let survivor = pooled_store(&pooled).await;
    survivor
        .start_instance(InstanceOptions::default().with_lease(LEASE))
        .await
        .expect("instance through the pooler");
    assert_eq!(
        survivor.set(&update("s", 1)).await.unwrap(),
        SetOutcome::Applied
    );
    {
        let doomed = pooled_store(&pooled).await;
        doomed
            .start_instance(InstanceOptions::default().with_lease(LEASE))
            .await
            .expect("instance through the pooler");
        for client in ["d1", "d2"] {
            assert_eq!(
                doomed.set(&update(client, 1)).await.unwrap(),
                SetOutcome::Applied
            );
        }
        // Dropping every handle stops its renewals: a crash, as far as the lease knows.
    }
    let deadline = Instant::now() + LEASE * 4;
    let mut abandoned = Vec::new();
    while abandoned.len() < 2 && Instant::now() < deadline {
        let departed = survivor.take_departed().await.expect("take_departed");
        abandoned.extend(departed.abandoned.into_iter().map(|e| e.client_id));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    abandoned.sort();
    assert_eq!(abandoned, ["d1", "d2"]);
    assert!(survivor.holds_lease());
    assert!(
        survivor.get("doc", "s").await.unwrap().is_some(),
        "the survivor's entry stays"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_leaves_no_session_setting_on_the_poolers_server_connections() {
    #[derive(QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Text)]
        value: String,
    }
    const SETTINGS: &str = "SELECT current_setting('synchronous_commit') || '/' || \
         current_setting('statement_timeout') AS value";
    let db = TestDb::migrated().await;
    // What a connection of the server has when nobody sets anything.
    let mut direct = AsyncPgConnection::establish(&db.url)
        .await
        .expect("a direct connection");
    let server: Vec<Setting> = diesel::sql_query(SETTINGS)
        .load(&mut direct)
        .await
        .expect("the server's settings");
    // The store sets a statement_timeout no server has by default, and synchronous_commit.
    let pooled = common::pooled_url(&db).await;
    let store = PostgresAwarenessStore::connect(
        &pooled,
        pooled_options()
            .with_statement_timeout(Some(Duration::from_millis(4321)))
            .with_synchronous_commit(false),
    )
    .await
    .expect("store");
    assert!(!server[0].value.ends_with("/4321ms"), "{}", server[0].value);
    for clock in 1..=20 {
        store.set(&update("a", clock)).await.expect("set");
    }
    // Whichever server connection the pooler hands out, it has the server's settings.
    let mut plain = AsyncPgConnection::establish(&pooled)
        .await
        .expect("a plain connection through the pooler");
    // (Its statements prepared and run inside one transaction, as the store's are.)
    plain.set_prepared_statement_cache_size(diesel::connection::CacheSize::Disabled);
    for _ in 0..10 {
        let rows: Vec<Setting> = plain
            .transaction(async |c| diesel::sql_query(SETTINGS).load(c).await)
            .await
            .expect("current settings");
        assert_eq!(rows[0].value, server[0].value, "a setting leaked");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_presence_engine_shares_presence_across_instances_through_the_pooler() {
    use synckit_awareness::presence::{Outgoing, Presence, PresenceOptions};
    use synckit_awareness::y_protocols::{
        decode_awareness_update, decode_message, encode_awareness_update, encode_message,
        AwarenessClientUpdate, AwarenessMessage, DecodeLimits,
    };
    let db = TestDb::migrated().await;
    let pooled = common::pooled_url(&db).await;
    let engine = || async {
        Presence::on_postgres(
            pooled_store(&pooled).await,
            PresenceOptions::default().with_change_feed(
                ChangeFeedOptions::default()
                    .with_publish_delay(Duration::ZERO)
                    .with_listen_url(db.url.clone()),
            ),
        )
        .await
        .expect("an engine through the pooler")
    };
    let (a, b) = (engine().await, engine().await);
    let (alice, _alice_out) = a.join("doc", Some("alice".into())).await.expect("join");
    let (_bob, mut bob_out) = b.join("doc", Some("bob".into())).await.expect("join");
    let update = encode_awareness_update(&[AwarenessClientUpdate {
        client_id: 7,
        clock: 1,
        state: Some(json!({ "name": "alice" })),
    }])
    .expect("encode");
    let received = alice
        .receive(&encode_message(&AwarenessMessage::Update(update)))
        .await
        .expect("receive");
    assert_eq!(received.applied, vec![7]);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let next = tokio::time::timeout(deadline - Instant::now(), bob_out.next())
            .await
            .expect("alice reaches bob within 5 s");
        let Some(Outgoing::Message(bytes)) = next else {
            panic!("bob's connection ended: {next:?}");
        };
        let Ok(AwarenessMessage::Update(update)) = decode_message(&bytes) else {
            continue;
        };
        let clients = decode_awareness_update(&update, &DecodeLimits::default()).expect("decode");
        if clients.iter().any(|c| c.client_id == 7 && c.clock == 1) {
            break;
        }
    }
    a.shutdown().await.expect("shutdown through the pooler");
}
