//! Coalescing (`tick.rs`, `batch.rs`): moves of a busy room wait for its tick, joins and leaves
//! never do, and a connection that stops reading holds each client's latest entry only.

use std::time::Duration;

use serde_json::json;

use super::*;

fn ticked(every: Duration, from: usize) -> Presence {
    Presence::in_memory(
        MemoryAwarenessStore::default(),
        PresenceOptions::default()
            .with_awareness_tick(every)
            .with_awareness_tick_from(from),
    )
    .expect("engine")
}

/// The awareness entries of the next message, as (id, clock, state), waiting up to `within`.
async fn next_entries(
    outbox: &mut Outbox,
    within: Duration,
) -> Option<Vec<(u64, u64, Option<serde_json::Value>)>> {
    let next = tokio::time::timeout(within, outbox.next()).await.ok()??;
    let Outgoing::Message(bytes) = next else {
        panic!("closed: {next:?}");
    };
    let AwarenessMessage::Update(update) = decode_message(&bytes).expect("awareness") else {
        panic!("a query from the engine");
    };
    let clients = decode_awareness_update(&update, &DecodeLimits::default()).expect("decode");
    let mut entries: Vec<_> = clients
        .into_iter()
        .map(|c| (c.client_id, c.clock, c.state))
        .collect();
    entries.sort_by_key(|e| (e.0, e.1));
    Some(entries)
}

fn state(v: u64) -> Option<serde_json::Value> {
    Some(json!({ "v": v }))
}

/// Alice and bob in a room of `presence`; alice's client 1 has joined (clock 1) and bob was
/// sent that join at once. Returns alice's session, her outbox, bob's session and his outbox.
async fn joined(presence: &Presence) -> (Session, Outbox, Session, Outbox) {
    let (alice, alice_out) = presence.join("doc", None).await.expect("join");
    let (bob, mut bob_out) = presence.join("doc", None).await.expect("join");
    drain(&mut bob_out).await;
    alice
        .receive(&message(&[(1, 1, state(1))]))
        .await
        .expect("receive");
    assert_eq!(
        next_entries(&mut bob_out, Duration::from_millis(200)).await,
        Some(vec![(1, 1, state(1))]),
        "a join goes at once"
    );
    (alice, alice_out, bob, bob_out)
}

#[tokio::test]
async fn a_client_moving_100_times_within_a_tick_is_delivered_once_with_its_last_state() {
    let presence = ticked(Duration::from_secs(1), 2);
    let (alice, _alice_out, _bob, mut bob_out) = joined(&presence).await;
    for clock in 2..=101 {
        alice
            .receive(&message(&[(1, clock, state(clock))]))
            .await
            .expect("receive");
    }
    assert!(bob_out.try_next().is_none(), "the moves wait for the tick");
    assert_eq!(
        next_entries(&mut bob_out, Duration::from_secs(3)).await,
        Some(vec![(1, 101, state(101))]),
        "one message, the last state"
    );
    assert!(
        next_entries(&mut bob_out, Duration::from_millis(100))
            .await
            .is_none(),
        "nothing more"
    );
}

#[tokio::test]
async fn joins_and_leaves_go_at_once_with_the_moves_held_before_them() {
    let presence = ticked(Duration::from_secs(1), 2);
    let (alice, _alice_out, _bob, mut bob_out) = joined(&presence).await;
    // Held: the room sent something less than a tick ago.
    alice
        .receive(&message(&[(1, 2, state(2))]))
        .await
        .expect("receive");
    assert!(bob_out.try_next().is_none(), "the move waits");
    let (carol, _carol_out) = presence.join("doc", None).await.expect("join");
    drain(&mut bob_out).await;
    carol
        .receive(&message(&[(3, 1, state(31))]))
        .await
        .expect("receive");
    assert_eq!(
        next_entries(&mut bob_out, Duration::from_millis(200)).await,
        Some(vec![(1, 2, state(2)), (3, 1, state(31))]),
        "the join at once, with the move held before it"
    );
    // A leave between two moves: the first move and the leave at once, the second at the tick.
    alice
        .receive(&message(&[(1, 3, state(3))]))
        .await
        .expect("receive");
    carol.close().await;
    assert_eq!(
        next_entries(&mut bob_out, Duration::from_millis(200)).await,
        Some(vec![(1, 3, state(3)), (3, 2, None)])
    );
    alice
        .receive(&message(&[(1, 4, state(4))]))
        .await
        .expect("receive");
    assert!(
        bob_out.try_next().is_none(),
        "the move after the leave waits"
    );
    assert_eq!(
        next_entries(&mut bob_out, Duration::from_secs(3)).await,
        Some(vec![(1, 4, state(4))])
    );
}

#[tokio::test]
async fn a_move_after_a_quiet_tick_or_in_a_room_that_is_not_busy_goes_at_once() {
    let presence = ticked(Duration::from_millis(100), 2);
    let (alice, _alice_out, _bob, mut bob_out) = joined(&presence).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    alice
        .receive(&message(&[(1, 2, state(2))]))
        .await
        .expect("receive");
    assert!(
        matches!(bob_out.try_next(), Some(Outgoing::Message(_))),
        "after a quiet tick, at once"
    );
    // Below `awareness_tick_from` connections nothing waits.
    let presence = ticked(Duration::from_secs(5), 3);
    let (alice, _alice_out) = presence.join("doc", None).await.expect("join");
    let (_bob, mut bob_out) = presence.join("doc", None).await.expect("join");
    drain(&mut bob_out).await;
    for clock in 1..=3 {
        alice
            .receive(&message(&[(1, clock, state(clock))]))
            .await
            .expect("receive");
        assert_eq!(
            next_entries(&mut bob_out, Duration::from_millis(200)).await,
            Some(vec![(1, clock, state(clock))])
        );
    }
}

#[tokio::test]
async fn a_paused_recipient_holds_each_clients_latest_entry_not_every_move() {
    // Queue bounds that 1,000 moves of 1 KiB would pass many times over without merging.
    let presence = Presence::in_memory(
        MemoryAwarenessStore::default(),
        PresenceOptions::default()
            .with_queue_capacity(8)
            .with_queue_bytes(16 * 1024),
    )
    .expect("engine");
    let (alice, _alice_out) = presence.join("doc", None).await.expect("join");
    let (_paused, mut paused_out) = presence.join("doc", None).await.expect("join");
    drain(&mut paused_out).await;
    let pad = "x".repeat(1024);
    let mut most = 0;
    for clock in 1..=1000u64 {
        alice
            .receive(&message(&[(
                1,
                clock,
                Some(json!({ "v": clock, "pad": pad })),
            )]))
            .await
            .expect("receive");
        most = most.max(paused_out.queued_bytes());
    }
    assert!(most < 2 * 1024, "held {most} bytes at most");
    let held = drain(&mut paused_out).await;
    assert!(held.close.is_none(), "not closed: {:?}", held.close);
    assert_eq!(held.clients(), vec![(1, 1000, true)]);
    assert_eq!(paused_out.queued_bytes(), 0);
}

#[tokio::test]
async fn a_paused_recipient_still_gets_every_join_and_leave() {
    let presence = open();
    let (alice, _alice_out) = presence.join("doc", None).await.expect("join");
    let (_paused, mut paused_out) = presence.join("doc", None).await.expect("join");
    drain(&mut paused_out).await;
    for (clock, s) in [
        (1, state(1)),
        (2, state(2)),
        (3, None),
        (4, state(4)),
        (5, state(5)),
    ] {
        alice
            .receive(&message(&[(1, clock, s)]))
            .await
            .expect("receive");
    }
    let held = drain(&mut paused_out).await;
    assert_eq!(
        held.clients(),
        vec![(1, 2, true), (1, 3, false), (1, 5, true)],
        "the join, the leave and the rejoin; the moves merged"
    );
    assert_eq!(held.awareness.len(), 3, "one message each");
}
