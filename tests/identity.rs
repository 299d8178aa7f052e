//! Identity from the server, not the client (issue 35): a connection joined with
//! `Identity::with_user` is seen by everyone — on this instance, on another one through the
//! change feed, in the store, and by a joiner reading the room — with the server's `user`,
//! whatever name the client claimed; on the persist-interval path and with every move written.

mod common;

use std::time::{Duration, Instant};

use common::TestDb;
use serde_json::{json, Value};
use synckit_awareness::presence::{Identity, Outbox, Outgoing, Presence, PresenceOptions};
use synckit_awareness::y_protocols::{
    decode_awareness_update, decode_message, encode_awareness_update, encode_message,
    AwarenessClientUpdate, AwarenessMessage, DecodeLimits,
};
use synckit_awareness::{
    AwarenessStore, MemoryAwarenessStore, PostgresAwarenessStore, PostgresOptions,
};

fn message(client_id: u64, clock: u64, state: Value) -> Vec<u8> {
    let update = encode_awareness_update(&[AwarenessClientUpdate {
        client_id,
        clock,
        state: Some(state),
    }])
    .expect("encode");
    encode_message(&AwarenessMessage::Update(update))
}

/// The state `client` has at `clock` in what arrives in `outbox`; panics after 5 s.
async fn state_of(outbox: &mut Outbox, client: u64, clock: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = Vec::new();
    while let Ok(Some(Outgoing::Message(bytes))) = tokio::time::timeout(
        deadline.saturating_duration_since(Instant::now()),
        outbox.next(),
    )
    .await
    {
        let Ok(AwarenessMessage::Update(update)) = decode_message(&bytes) else {
            continue;
        };
        for c in decode_awareness_update(&update, &DecodeLimits::default()).expect("decode") {
            if (c.client_id, c.clock) == (client, clock) {
                return c.state.expect("a present state");
            }
            seen.push((c.client_id, c.clock));
        }
    }
    panic!("client {client} at clock {clock} did not arrive; got {seen:?}");
}

async fn postgres(url: &str, persist_interval: Duration) -> Presence {
    let store = PostgresAwarenessStore::connect(url, PostgresOptions::default().with_pool_size(2))
        .await
        .expect("store");
    Presence::on_postgres(
        store,
        PresenceOptions::default().with_persist_interval(persist_interval),
    )
    .await
    .expect("engine")
}

/// Alice's token says she is Alice; her client says Mallory. Bob (on `b`) sees Alice, and so
/// does the store once it holds the move.
async fn the_token_wins(a: &Presence, b: &Presence, store: &dyn AwarenessStore) {
    let token_user = json!({ "name": "Alice", "color": "#f80" });
    let (alice, _alice_out) = a
        .join_as(
            "doc",
            Identity::principal("auth0|alice").with_user(token_user.clone()),
        )
        .await
        .expect("join");
    assert_eq!(alice.identity().user.as_ref(), Some(&token_user));
    let (_bob, mut bob_out) = b.join("doc", Some("bob".into())).await.expect("join");

    let claimed =
        json!({ "cursor": { "anchor": 3 }, "user": { "name": "Mallory", "color": "#000" } });
    let received = alice
        .receive(&message(7, 1, claimed))
        .await
        .expect("receive");
    assert_eq!(received.applied, vec![7]);
    let want = json!({ "cursor": { "anchor": 3 }, "user": token_user });
    assert_eq!(state_of(&mut bob_out, 7, 1).await, want);

    // A move without a user field still carries the token's.
    alice
        .receive(&message(7, 2, json!({ "cursor": { "anchor": 4 } })))
        .await
        .expect("receive");
    let moved = state_of(&mut bob_out, 7, 2).await;
    assert_eq!(moved["user"], token_user);

    // The store holds it too (the persist interval saves it within a second or so).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let entry = store.get("doc", "7").await.expect("get").expect("stored");
        if entry.clock == 2 {
            assert_eq!(entry.state.as_ref().map(|s| &s["user"]), Some(&token_user));
            assert_eq!(entry.owner.as_deref(), Some("auth0|alice"));
            break;
        }
        assert!(Instant::now() < deadline, "the move was not stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A joiner reads the room from the store: it sees Alice too.
    let (_carol, mut carol_out) = b.join("doc", None).await.expect("join");
    assert_eq!(state_of(&mut carol_out, 7, 2).await["user"], token_user);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_servers_user_is_what_everyone_sees_across_instances() {
    for persist_interval in [Duration::from_millis(200), Duration::ZERO] {
        let db = TestDb::migrated().await;
        let a = postgres(&db.url, persist_interval).await;
        let b = postgres(&db.url, persist_interval).await;
        let store = db.store(Default::default()).await;
        the_token_wins(&a, &b, &store).await;
        a.shutdown().await.expect("shutdown");
        b.shutdown().await.expect("shutdown");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_servers_user_is_what_everyone_sees_in_memory() {
    let store = MemoryAwarenessStore::default();
    let presence = Presence::in_memory(store.clone(), PresenceOptions::default()).expect("engine");
    the_token_wins(&presence, &presence, &store).await;
}
