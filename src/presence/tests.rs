//! The engine's rules, without a network: memory store, sessions driven by hand, outboxes read
//! directly. (Across instances on PostgreSQL: tests/presence.rs.)

use std::time::Duration;

use futures_util::FutureExt;
use serde_json::json;

use super::*;
use crate::entry::{AwarenessUpdate, SetOutcome};
use crate::store::StoreOptions;
use crate::y_protocols::{
    decode_awareness_update, decode_message, encode_awareness_update, encode_message,
    AwarenessClientUpdate, AwarenessMessage, DecodeLimits, MESSAGE_AUTH,
};

fn engine(store: StoreOptions) -> Presence {
    Presence::in_memory(
        MemoryAwarenessStore::with_options(store),
        PresenceOptions::default(),
    )
    .expect("engine")
}

fn open() -> Presence {
    engine(StoreOptions::default())
}

/// An awareness message with `clients` as (id, clock, state).
fn message(clients: &[(u64, u64, Option<serde_json::Value>)]) -> Vec<u8> {
    let clients: Vec<AwarenessClientUpdate> = clients
        .iter()
        .map(|(client_id, clock, state)| AwarenessClientUpdate {
            client_id: *client_id,
            clock: *clock,
            state: state.clone(),
        })
        .collect();
    let update = encode_awareness_update(&clients).expect("encode");
    encode_message(&AwarenessMessage::Update(update))
}

/// What an outbox holds now: awareness clients (one Vec per message), permission-denied
/// reasons, and a close if any.
#[derive(Debug, Default)]
struct Drained {
    awareness: Vec<Vec<AwarenessClientUpdate>>,
    denied: Vec<String>,
    close: Option<Disconnect>,
}

impl Drained {
    fn clients(&self) -> Vec<(u64, u64, bool)> {
        self.awareness
            .iter()
            .flatten()
            .map(|c| (c.client_id, c.clock, c.state.is_some()))
            .collect()
    }
}

async fn drain(outbox: &mut Outbox) -> Drained {
    let mut drained = Drained::default();
    while let Ok(Some(next)) = tokio::time::timeout(Duration::from_millis(20), outbox.next()).await
    {
        match next {
            Outgoing::Message(bytes) => match bytes.first().map(|b| u64::from(*b)) {
                Some(MESSAGE_AUTH) => {
                    drained
                        .denied
                        .push(String::from_utf8_lossy(&bytes[3..]).into_owned());
                }
                _ => {
                    let AwarenessMessage::Update(update) =
                        decode_message(&bytes).expect("an awareness message")
                    else {
                        panic!("a query from the engine");
                    };
                    let limits = DecodeLimits::default();
                    drained
                        .awareness
                        .push(decode_awareness_update(&update, &limits).expect("decode"));
                }
            },
            Outgoing::Close(reason) => {
                drained.close = Some(reason);
                break;
            }
        }
    }
    drained
}

async fn stored(presence: &Presence, room: &str, client: u64) -> Option<(i64, bool)> {
    presence
        .store()
        .get(room, &client.to_string())
        .await
        .expect("get")
        .map(|e| (e.clock, !e.is_tombstone()))
}

#[tokio::test]
async fn a_joiner_gets_the_room_and_an_update_reaches_everyone_once() {
    let presence = open();
    let (alice, mut alice_out) = presence.join("doc", None).await.expect("join");
    assert_eq!(drain(&mut alice_out).await.clients(), vec![], "empty room");
    let received = alice
        .receive(&message(&[(1, 1, Some(json!({ "name": "alice" })))]))
        .await
        .expect("receive");
    assert_eq!(received.applied, vec![1]);
    assert_eq!(drain(&mut alice_out).await.clients(), vec![(1, 1, true)]);
    let (bob, mut bob_out) = presence.join("doc", None).await.expect("join");
    assert_eq!(drain(&mut bob_out).await.clients(), vec![(1, 1, true)]);
    bob.receive(&message(&[(2, 1, Some(json!({ "name": "bob" })))]))
        .await
        .expect("receive");
    assert_eq!(drain(&mut alice_out).await.clients(), vec![(2, 1, true)]);
    assert_eq!(drain(&mut bob_out).await.clients(), vec![(2, 1, true)]);
    assert_eq!(presence.counts(), (1, 2));
    // Another room hears nothing of it.
    let (_carol, mut carol_out) = presence.join("other", None).await.expect("join");
    alice
        .receive(&message(&[(1, 2, Some(json!({ "name": "alice" })))]))
        .await
        .expect("receive");
    assert_eq!(drain(&mut carol_out).await.clients(), vec![]);
}

#[tokio::test]
async fn echoes_and_timed_out_leaves_of_peers_are_dropped_without_writing() {
    let presence = open();
    let (alice, mut alice_out) = presence.join("doc", None).await.expect("join");
    let (bob, mut bob_out) = presence.join("doc", None).await.expect("join");
    alice
        .receive(&message(&[(1, 3, Some(json!({ "x": 1 })))]))
        .await
        .expect("receive");
    drain(&mut alice_out).await;
    drain(&mut bob_out).await;
    // Bob's client echoes alice's state back, then times her out (a leave at her clock).
    let echo = bob
        .receive(&message(&[(1, 3, Some(json!({ "x": 1 })))]))
        .await
        .expect("receive");
    assert_eq!((echo.applied.len(), echo.dropped), (0, vec![1]));
    let timeout = bob
        .receive(&message(&[(1, 3, None)]))
        .await
        .expect("receive");
    assert_eq!(timeout.dropped, vec![1]);
    assert_eq!(stored(&presence, "doc", 1).await, Some((3, true)));
    assert_eq!(drain(&mut alice_out).await.clients(), vec![]);
}

/// Open mode: a client live elsewhere (another instance, or a dead one it fails over from)
/// that shows up on a new connection with a newer clock is written and relayed at once, as
/// y-protocols servers do; its echoes are still dropped.
#[tokio::test]
async fn an_anonymous_client_failing_over_is_relayed_at_once() {
    let presence = open();
    // Written by a connection of another instance: no local connection holds it.
    presence
        .store()
        .set(&AwarenessUpdate::new(
            "doc",
            "7",
            "other-instance-1",
            3,
            Some(json!({ "name": "bob" })),
        ))
        .await
        .expect("set");
    let (alice, mut alice_out) = presence.join("doc", None).await.expect("join");
    assert!(drain(&mut alice_out)
        .await
        .clients()
        .contains(&(7, 3, true)));
    let (bob, _bob_out) = presence.join("doc", None).await.expect("join");
    // Bob's provider re-announces at its clock (an echo of what the room shows), then moves.
    let echo = bob
        .receive(&message(&[(7, 3, Some(json!({ "name": "bob" })))]))
        .await
        .expect("receive");
    assert_eq!(echo.dropped, vec![7]);
    let moved = bob
        .receive(&message(&[(7, 4, Some(json!({ "name": "bob", "x": 1 })))]))
        .await
        .expect("receive");
    assert_eq!(moved.applied, vec![7]);
    assert_eq!(drain(&mut alice_out).await.clients(), vec![(7, 4, true)]);
    // Now held by bob's connection: another local connection may not write it.
    let spoof = alice
        .receive(&message(&[(7, 9, Some(json!({ "name": "mallory" })))]))
        .await
        .expect("receive");
    assert_eq!(spoof.dropped, vec![7]);
    assert_eq!(stored(&presence, "doc", 7).await, Some((4, true)));
}

#[tokio::test]
async fn anonymous_spoofs_are_dropped_and_an_authenticated_one_is_refused_with_a_reason() {
    let presence = open();
    let (alice, alice_out) = presence.join("doc", None).await.expect("join");
    alice
        .receive(&message(&[(1, 1, Some(json!({ "name": "alice" })))]))
        .await
        .expect("receive");
    let (mallory, _mallory_out) = presence.join("doc", None).await.expect("join");
    let spoof = mallory
        .receive(&message(&[
            (1, 9, Some(json!({ "name": "mallory" }))),
            (1, 10, None),
        ]))
        .await
        .expect("receive");
    assert_eq!(spoof.dropped, vec![1, 1]);
    assert_eq!(stored(&presence, "doc", 1).await, Some((1, true)));

    // With principals the store decides: another principal's client id is refused, and told.
    let presence = open();
    drop(alice_out);
    let (mallory, mut mallory_out) = presence
        .join("doc2", Some("mallory".into()))
        .await
        .expect("join");
    let (alice2, _a2) = presence
        .join("doc2", Some("alice".into()))
        .await
        .expect("join");
    alice2
        .receive(&message(&[(5, 1, Some(json!({ "name": "alice" })))]))
        .await
        .expect("receive");
    drain(&mut mallory_out).await;
    let refused = mallory
        .receive(&message(&[(5, 2, Some(json!({ "name": "mallory" })))]))
        .await
        .expect("receive");
    assert_eq!(
        refused.dropped,
        vec![5],
        "held by a local connection of alice"
    );
    // A client id alice holds on another instance (not in this room's view): the store refuses.
    presence
        .store()
        .set(
            &AwarenessUpdate::new("doc2", "6", "elsewhere", 4, Some(json!({})))
                .with_owner(Some("alice".into())),
        )
        .await
        .expect("set");
    let refused = mallory
        .receive(&message(&[(6, 5, Some(json!({ "name": "mallory" })))]))
        .await
        .expect("receive");
    assert_eq!(refused.refused, vec![(6, SetOutcome::Forbidden)]);
    let told = drain(&mut mallory_out).await;
    assert_eq!(told.denied.len(), 1, "{told:?}");
    assert!(told.denied[0].contains("forbidden"), "{told:?}");
    // Told once per reason.
    mallory
        .receive(&message(&[(6, 6, Some(json!({ "name": "mallory" })))]))
        .await
        .expect("receive");
    assert!(drain(&mut mallory_out).await.denied.is_empty());
    assert_eq!(stored(&presence, "doc2", 6).await, Some((4, true)));
}

#[tokio::test]
async fn the_same_principal_on_a_new_connection_takes_its_client_over_at_once() {
    let presence = open();
    let (old, _old_out) = presence
        .join("doc", Some("alice".into()))
        .await
        .expect("join");
    old.receive(&message(&[(1, 1, Some(json!({ "v": 1 })))]))
        .await
        .expect("receive");
    let (peer, mut peer_out) = presence.join("doc", None).await.expect("join");
    drain(&mut peer_out).await;
    // The old connection is not noticed dead yet; alice reconnects.
    let (new, _new_out) = presence
        .join("doc", Some("alice".into()))
        .await
        .expect("join");
    let echo = new
        .receive(&message(&[(1, 1, Some(json!({ "v": 1 })))]))
        .await
        .expect("receive");
    assert_eq!(
        echo.dropped,
        vec![1],
        "her re-announce at the same clock is known"
    );
    let moved = new
        .receive(&message(&[(1, 2, Some(json!({ "v": 2 })))]))
        .await
        .expect("receive");
    assert_eq!(moved.applied, vec![1]);
    assert_eq!(drain(&mut peer_out).await.clients(), vec![(1, 2, true)]);
    // The old connection closing does not announce her gone: she is held by the new one.
    old.close().await;
    assert_eq!(drain(&mut peer_out).await.clients(), vec![]);
    assert_eq!(stored(&presence, "doc", 1).await, Some((2, true)));
    drop(peer);
}

#[tokio::test]
async fn a_closed_connection_leaves_once_and_a_rejoin_at_its_old_clock_is_told_to_re_announce() {
    let presence = open();
    let (alice, _alice_out) = presence.join("doc", None).await.expect("join");
    let (_bob, mut bob_out) = presence.join("doc", None).await.expect("join");
    alice
        .receive(&message(&[(7, 4, Some(json!({ "v": 4 })))]))
        .await
        .expect("receive");
    drain(&mut bob_out).await;
    alice.close().await;
    assert_eq!(drain(&mut bob_out).await.clients(), vec![(7, 5, false)]);
    assert_eq!(stored(&presence, "doc", 7).await, Some((5, false)));

    // The real client reconnects with its old clock: stale, and it is sent the leave.
    let (again, mut again_out) = presence.join("doc", None).await.expect("join");
    drain(&mut again_out).await;
    let stale = again
        .receive(&message(&[(7, 4, Some(json!({ "v": 4 })))]))
        .await
        .expect("receive");
    assert!(stale.applied.is_empty());
    assert_eq!(drain(&mut again_out).await.clients(), vec![(7, 5, false)]);
    // y-protocols makes it re-announce one clock higher.
    again
        .receive(&message(&[(7, 6, Some(json!({ "v": 4 })))]))
        .await
        .expect("receive");
    assert_eq!(drain(&mut bob_out).await.clients(), vec![(7, 6, true)]);
}

#[tokio::test]
async fn a_slow_consumer_is_disconnected_and_the_others_are_not() {
    let presence = Presence::in_memory(
        MemoryAwarenessStore::default(),
        // Coalescing off: each move is its own message (with it on, a connection behind
        // holds each client's latest only: tick_tests.rs).
        PresenceOptions::default()
            .with_queue_capacity(4)
            .with_awareness_tick(Duration::ZERO),
    )
    .expect("engine");
    let (alice, mut alice_out) = presence.join("doc", None).await.expect("join");
    let (_slow, mut slow_out) = presence.join("doc", None).await.expect("join");
    for clock in 1..=10 {
        alice
            .receive(&message(&[(1, clock, Some(json!({ "v": clock })))]))
            .await
            .expect("receive");
        // Alice reads hers as they come.
        assert_eq!(
            drain(&mut alice_out).await.clients(),
            vec![(1, clock, true)]
        );
    }
    let slow = drain(&mut slow_out).await;
    let close = slow.close.expect("the slow one is closed");
    assert_eq!(close.code, close_code::POLICY_VIOLATION);
    assert!(close.reason.contains("too slow"), "{close:?}");
    assert!(
        alice_out.next().now_or_never().is_none(),
        "alice is not closed"
    );
}

/// The byte bound: large states fill the queue long before its message count does; the
/// queue never holds more than the bound, and the connection is ended.
#[tokio::test]
async fn a_consumer_behind_by_bytes_is_disconnected_within_the_bound() {
    const BOUND: usize = 64 * 1024;
    let presence = Presence::in_memory(
        MemoryAwarenessStore::default(),
        PresenceOptions::default()
            .with_queue_capacity(10_000)
            .with_queue_bytes(BOUND)
            .with_awareness_tick(Duration::ZERO),
    )
    .expect("engine");
    let (alice, mut alice_out) = presence.join("doc", None).await.expect("join");
    let (_slow, mut slow_out) = presence.join("doc", None).await.expect("join");
    let padding = "x".repeat(8 * 1024);
    let mut most = 0;
    for clock in 1..=40 {
        alice
            .receive(&message(&[(1, clock, Some(json!({ "pad": padding })))]))
            .await
            .expect("receive");
        drain(&mut alice_out).await;
        most = most.max(slow_out.queued_bytes());
    }
    assert!(most <= BOUND, "queued {most} bytes, bound {BOUND}");
    assert!(most > BOUND / 2, "the queue filled ({most} bytes)");
    let slow = drain(&mut slow_out).await;
    let close = slow.close.expect("the slow one is closed");
    assert_eq!(close.code, close_code::POLICY_VIOLATION);
    assert!(close.reason.contains("too slow"), "{close:?}");
    assert!(close.reason.contains("bytes"), "{close:?}");
    assert!(
        alice_out.next().now_or_never().is_none(),
        "alice is not closed"
    );
    // An empty queue takes any one message, however large.
    let (tiny, _tiny_out) = queue_of(1);
    assert!(tiny.queue(bytes::Bytes::from(vec![0u8; 1000])));
    assert!(!tiny.queue(bytes::Bytes::from(vec![0u8; 1])));
}

fn queue_of(bytes: usize) -> (outbox::Sender, Outbox) {
    outbox::queue(16, bytes)
}

#[tokio::test]
async fn a_join_beyond_the_document_limit_is_refused_with_a_reason() {
    let presence = engine(StoreOptions::default().with_max_clients_per_document(Some(1)));
    let (alice, _alice_out) = presence.join("doc", None).await.expect("join");
    alice
        .receive(&message(&[(1, 1, Some(json!({})))]))
        .await
        .expect("receive");
    let (bob, mut bob_out) = presence.join("doc", None).await.expect("join");
    drain(&mut bob_out).await;
    let refused = bob
        .receive(&message(&[(2, 1, Some(json!({})))]))
        .await
        .expect("receive");
    assert_eq!(refused.refused, vec![(2, SetOutcome::DocumentFull)]);
    let told = drain(&mut bob_out).await;
    assert!(told.denied[0].contains("document_full"), "{told:?}");
}

#[tokio::test]
async fn expired_entries_become_leaves_for_the_rooms_that_show_them() {
    let presence = Presence::in_memory(
        MemoryAwarenessStore::with_options(
            StoreOptions::default().with_timeout(Duration::from_millis(300)),
        ),
        PresenceOptions::default().with_prune_interval(Duration::from_millis(50)),
    )
    .expect("engine");
    let (alice, _alice_out) = presence.join("doc", None).await.expect("join");
    let (_bob, mut bob_out) = presence.join("doc", None).await.expect("join");
    alice
        .receive(&message(&[(1, 1, Some(json!({})))]))
        .await
        .expect("receive");
    drain(&mut bob_out).await;
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen.extend(drain(&mut bob_out).await.clients());
        if !seen.is_empty() {
            break;
        }
    }
    assert_eq!(seen, vec![(1, 2, false)], "one leave, one clock above");
}

#[tokio::test]
async fn malformed_input_disconnects_and_writes_nothing() {
    let presence = open();
    let (alice, _out) = presence.join("doc", None).await.expect("join");
    let mut truncated = message(&[(1, 1, Some(json!({ "a": 1 })))]);
    truncated.truncate(truncated.len() - 2);
    let error = alice.receive(&truncated).await.expect_err("malformed");
    assert_eq!(error.code, close_code::INVALID_DATA);
    let error = alice.receive(&[0, 1, 2]).await.expect_err("sync");
    assert_eq!(error.code, close_code::UNSUPPORTED_DATA);
    let nul = message(&[(1, 1, Some(json!({ "a": "\u{0}" })))]);
    let error = alice.receive(&nul).await.expect_err("NUL");
    assert_eq!(error.code, close_code::INVALID_DATA);
    assert_eq!(stored(&presence, "doc", 1).await, None);
    assert!(presence.join("", None).await.is_err(), "an empty room id");
    assert!(
        presence.join("doc", Some("a\u{0}b".into())).await.is_err(),
        "a principal with a NUL"
    );
}

#[tokio::test]
async fn shutdown_closes_every_connection_and_refuses_joins() {
    let presence = open();
    let (_alice, mut alice_out) = presence.join("doc", None).await.expect("join");
    drain(&mut alice_out).await;
    presence.shutdown().await.expect("shutdown");
    let close = drain(&mut alice_out).await.close.expect("closed");
    assert_eq!(close.code, close_code::GOING_AWAY);
    assert!(alice_out.next().await.is_none());
    assert!(presence.join("doc", None).await.is_err());
}

#[test]
fn outside_a_runtime_the_engine_says_so() {
    let error = Presence::in_memory(MemoryAwarenessStore::default(), PresenceOptions::default())
        .expect_err("no runtime");
    assert!(error.to_string().contains("Tokio runtime"), "{error}");
}

#[tokio::test]
async fn bad_options_are_refused() {
    for options in [
        PresenceOptions::default().with_queue_capacity(0),
        PresenceOptions::default().with_queue_bytes(0),
        PresenceOptions::default().with_prune_interval(Duration::ZERO),
    ] {
        assert!(Presence::in_memory(MemoryAwarenessStore::default(), options).is_err());
    }
}

#[test]
fn the_clock_rule() {
    use crate::entry::supersedes;
    assert!(
        supersedes::<i64>(None, 0, true),
        "the store applies to nothing held"
    );
    assert!(
        !supersedes(Some((0u64, false)), 0, true),
        "y-protocols: clock 0 never wins"
    );
    assert!(supersedes(Some((3, true)), 4, true));
    assert!(!supersedes(Some((3, true)), 3, true));
    assert!(
        supersedes(Some((3, true)), 3, false),
        "a same-clock leave over a state"
    );
    assert!(!supersedes(Some((3, false)), 3, false));
    assert!(!supersedes(Some((3, false)), 2, true));
}

mod tick;
