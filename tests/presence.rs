//! The presence engine across instances on one PostgreSQL database: states cross through the
//! change feed (carried in the notification, re-read when too large), leaves of closed
//! connections, a graceful shutdown's leaves at once, a crashed instance's leaves within its
//! lease, and a client failing over to another instance accepted at once.
//!
//! And across a PostgreSQL failover (issue 29): a connection whose updates cannot be written
//! while there is no primary stays open, and moves cross instances again within seconds of the
//! promotion, also when the failover outlasts the lease.
//!
//! The crashes are real: `crashing_presence` runs this test binary again as a child process
//! that joins a room, writes a client and waits; the test kills it with SIGKILL.

mod common;
#[path = "support/pair.rs"]
mod pair;

use std::process::Child;
use std::time::{Duration, Instant};

use common::TestDb;
use serde_json::json;
use synckit_awareness::presence::{Outbox, Outgoing, Presence, PresenceOptions};
use synckit_awareness::y_protocols::{
    decode_awareness_update, decode_message, encode_awareness_update, encode_message,
    AwarenessClientUpdate, AwarenessMessage, DecodeLimits,
};
use synckit_awareness::{InstanceOptions, PostgresAwarenessStore, PostgresOptions};

const LEASE: Duration = Duration::from_millis(1200);
/// The child's environment: the database URL, the principal, the client id.
const CHILD_URL: &str = "SYNCKIT_PRESENCE_CHILD_URL";
const CHILD_PRINCIPAL: &str = "SYNCKIT_PRESENCE_CHILD_PRINCIPAL";
const CHILD_CLIENT: &str = "SYNCKIT_PRESENCE_CHILD_CLIENT";
const PRUNE_EVERY: Duration = Duration::from_millis(200);

async fn instance(url: &str) -> Presence {
    instance_with(url, PostgresOptions::default()).await
}

async fn instance_with(url: &str, options: PostgresOptions) -> Presence {
    engine(url, options, PresenceOptions::default()).await
}

async fn engine(url: &str, options: PostgresOptions, presence: PresenceOptions) -> Presence {
    let store =
        PostgresAwarenessStore::connect(url, options.with_timeout(common::LONG).with_pool_size(4))
            .await
            .expect("store");
    Presence::on_postgres(
        store,
        presence
            .with_prune_interval(PRUNE_EVERY)
            .with_instance(InstanceOptions::default().with_lease(LEASE)),
    )
    .await
    .expect("engine")
}

fn message(client_id: u64, clock: u64, state: Option<serde_json::Value>) -> Vec<u8> {
    let update = encode_awareness_update(&[AwarenessClientUpdate {
        client_id,
        clock,
        state,
    }])
    .expect("encode");
    encode_message(&AwarenessMessage::Update(update))
}

/// Reads the outbox until `want` (id, clock, present) arrives; panics after `within`.
async fn expect(outbox: &mut Outbox, want: (u64, u64, bool), within: Duration) -> Duration {
    let started = Instant::now();
    let mut seen = Vec::new();
    while let Ok(Some(next)) =
        tokio::time::timeout(within.saturating_sub(started.elapsed()), outbox.next()).await
    {
        let Outgoing::Message(bytes) = next else {
            panic!("closed while waiting for {want:?}: {next:?}");
        };
        let Ok(AwarenessMessage::Update(update)) = decode_message(&bytes) else {
            continue;
        };
        for client in decode_awareness_update(&update, &DecodeLimits::default()).expect("decode") {
            let got = (client.client_id, client.clock, client.state.is_some());
            if got == want {
                return started.elapsed();
            }
            seen.push(got);
        }
    }
    panic!("{want:?} did not arrive within {within:?}; got {seen:?}");
}

/// Not a test of its own: the instance `crashed_instance` kills (see the module docs).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "run as a child process by the crash tests"]
async fn crashing_presence() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let principal = std::env::var(CHILD_PRINCIPAL)
        .ok()
        .filter(|p| !p.is_empty());
    let client: u64 = std::env::var(CHILD_CLIENT)
        .expect("client id")
        .parse()
        .expect("a number");
    let presence = instance(&url).await;
    let (session, _outbox) = presence.join("doc", principal).await.expect("join");
    let received = session
        .receive(&message(client, 5, Some(json!({ "v": 5 }))))
        .await
        .expect("receive");
    assert_eq!(received.applied, vec![client]);
    println!("READY");
    // Killed here.
    tokio::time::sleep(Duration::from_secs(120)).await;
}

/// Starts `crashing_presence` on `db`, writing `client` as `principal`; returns once it has.
async fn crashing_child(db: &TestDb, principal: &str, client: u64) -> Child {
    let client = client.to_string();
    common::ready_child(
        "crashing_presence",
        &[
            (CHILD_URL, &db.url),
            (CHILD_PRINCIPAL, principal),
            (CHILD_CLIENT, &client),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn states_cross_instances_and_leaves_follow_closes_shutdowns_and_crashes() {
    let db = TestDb::migrated().await;
    let a = instance(&db.url).await;
    let b = instance(&db.url).await;
    assert_ne!(a.instance_id(), b.instance_id());

    let (alice, mut alice_out) = a.join("doc", None).await.expect("join");
    let (bob, mut bob_out) = b.join("doc", None).await.expect("join");
    alice
        .receive(&message(1, 1, Some(json!({ "name": "alice" }))))
        .await
        .expect("receive");
    expect(&mut bob_out, (1, 1, true), Duration::from_secs(5)).await;
    bob.receive(&message(2, 1, Some(json!({ "name": "bob" }))))
        .await
        .expect("receive");
    expect(&mut alice_out, (2, 1, true), Duration::from_secs(5)).await;

    // A state too large for a notification is re-read by the receiving instance.
    let large = json!({ "text": "x".repeat(20_000) });
    alice
        .receive(&message(1, 2, Some(large)))
        .await
        .expect("receive");
    expect(&mut bob_out, (1, 2, true), Duration::from_secs(5)).await;

    // Echoes do not travel: bob's client echoing alice's state writes nothing.
    let echo = bob
        .receive(&message(1, 2, Some(json!({ "echo": true }))))
        .await
        .expect("receive");
    assert_eq!(echo.dropped, vec![1]);

    // A closed connection: one leave, one clock above.
    alice.close().await;
    expect(&mut bob_out, (1, 3, false), Duration::from_secs(5)).await;

    // A graceful shutdown: its clients leave for everyone at once.
    let (carol, mut carol_out) = a.join("doc", None).await.expect("join");
    carol
        .receive(&message(3, 1, Some(json!({ "name": "carol" }))))
        .await
        .expect("receive");
    expect(&mut bob_out, (3, 1, true), Duration::from_secs(5)).await;
    a.shutdown().await.expect("shutdown");
    assert!(matches!(
        carol_out.next().await,
        Some(Outgoing::Close(_)) | Some(Outgoing::Message(_))
    ));
    expect(&mut bob_out, (3, 2, false), Duration::from_secs(5)).await;
    drop(carol);

    // A crash (SIGKILL): its clients leave within the lease and a prune period, long before
    // their 30 s timeout.
    let mut child = crashing_child(&db, "", 4).await;
    expect(&mut bob_out, (4, 5, true), Duration::from_secs(5)).await;
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let took = expect(
        &mut bob_out,
        (4, 6, false),
        LEASE * 4 + Duration::from_secs(2),
    )
    .await;
    println!(
        "crashed instance: its client left after {took:?} (lease {LEASE:?}, prune {PRUNE_EVERY:?})"
    );
    drop(bob);
}

/// Issue 27: a held client's moves are relayed at once (locally and to other instances) and
/// saved once per `persist_interval`; joins and leaves are written as they happen, and an
/// unsaved move never overwrites the leave that follows it.
#[tokio::test(flavor = "multi_thread")]
async fn moves_are_relayed_at_once_and_saved_within_the_persist_interval() {
    let db = TestDb::migrated().await;
    let every = Duration::from_millis(300);
    let options = || PresenceOptions::default().with_persist_interval(every);
    let a = engine(&db.url, PostgresOptions::default(), options()).await;
    let b = engine(&db.url, PostgresOptions::default(), options()).await;
    let (alice, _alice_out) = a.join("doc", None).await.expect("join");
    let (bob, mut bob_out) = b.join("doc", None).await.expect("join");
    let clock_in_table = || async {
        let entry = b.store().get("doc", "1").await.expect("get");
        entry.map(|e| (e.clock, e.state.is_some()))
    };

    // The join is written before it is relayed.
    let joined = alice
        .receive(&message(1, 1, Some(json!({ "x": 1 }))))
        .await
        .expect("receive");
    assert_eq!(joined.applied, vec![1]);
    assert_eq!(clock_in_table().await, Some((1, true)));
    expect(&mut bob_out, (1, 1, true), Duration::from_secs(5)).await;

    // Moves: applied and relayed at once.
    for clock in 2..=20 {
        let moved = alice
            .receive(&message(1, clock, Some(json!({ "x": clock }))))
            .await
            .expect("receive");
        assert_eq!(moved.applied, vec![1], "move {clock}");
    }
    expect(&mut bob_out, (1, 20, true), Duration::from_secs(5)).await;
    // A connection joining the same instance is shown the newest state, saved or not.
    let (_carol, mut carol_out) = a.join("doc", None).await.expect("join");
    expect(&mut carol_out, (1, 20, true), Duration::from_millis(1)).await;

    // The table catches up within the interval plus one write.
    let started = Instant::now();
    while clock_in_table().await != Some((20, true)) {
        assert!(
            started.elapsed() < every + Duration::from_secs(5),
            "the table still shows {:?} after {:?}",
            clock_in_table().await,
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "moves saved {:?} after the last one (interval {every:?})",
        started.elapsed()
    );
    // A client joining on another instance reads it from there.
    let (_dave, mut dave_out) = b.join("doc", None).await.expect("join");
    expect(&mut dave_out, (1, 20, true), Duration::from_millis(1)).await;

    // A move not saved yet, then the connection closes: the leave (one clock above the move)
    // is written at once, and the unsaved move never lands after it.
    let moved = alice
        .receive(&message(1, 21, Some(json!({ "x": 21 }))))
        .await
        .expect("receive");
    assert_eq!(moved.applied, vec![1]);
    alice.close().await;
    assert_eq!(clock_in_table().await, Some((22, false)));
    expect(&mut bob_out, (1, 22, false), Duration::from_secs(5)).await;
    tokio::time::sleep(every * 3).await;
    assert_eq!(clock_in_table().await, Some((22, false)));
    drop(bob);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_failing_over_to_another_instance_is_accepted_at_once() {
    let db = TestDb::migrated().await;
    let b = instance(&db.url).await;
    let (watcher, mut watcher_out) = b.join("doc", None).await.expect("join");
    let mut a = crashing_child(&db, "alice", 7).await;
    expect(&mut watcher_out, (7, 5, true), Duration::from_secs(5)).await;
    // A dies; alice's provider reconnects to B at once, re-announcing at the same clock.
    a.kill().expect("SIGKILL");
    a.wait().expect("reap");
    let (again, _again_out) = b.join("doc", Some("alice".into())).await.expect("join");
    let echo = again
        .receive(&message(7, 5, Some(json!({ "v": 5 }))))
        .await
        .expect("receive");
    assert!(echo.refused.is_empty());
    let moved = again
        .receive(&message(7, 6, Some(json!({ "v": 6 }))))
        .await
        .expect("receive");
    assert_eq!(moved.applied, vec![7], "accepted at once: {moved:?}");
    expect(&mut watcher_out, (7, 6, true), Duration::from_secs(5)).await;
    // Another principal cannot take the id over.
    let (mallory, _mallory_out) = b.join("doc", Some("mallory".into())).await.expect("join");
    let refused = mallory
        .receive(&message(7, 9, Some(json!({ "v": "mallory" }))))
        .await
        .expect("receive");
    assert!(refused.applied.is_empty(), "{refused:?}");
    // A's lease lapses: alice is now written by B, so she is not taken away with A's entries.
    tokio::time::sleep(LEASE * 2 + PRUNE_EVERY * 2).await;
    let entry = b
        .store()
        .get("doc", "7")
        .await
        .expect("get")
        .expect("alice is still there");
    assert_eq!((entry.clock, entry.is_tombstone()), (6, false));
    drop((watcher, again, mallory));
}

/// Alice (on A) keeps moving while the primary is crash-stopped and, 2 s later, the standby
/// promoted: longer than the pool's acquire timeout (1 s) and than the lease (1.2 s), so her
/// moves meanwhile fail and B may take A's entries over as abandoned. Her connection stays
/// open throughout, and bob (on B) sees her moves again within 5 s of the promotion.
#[tokio::test(flavor = "multi_thread")]
async fn across_a_failover_connections_stay_and_moves_cross_again_within_seconds() {
    let pair = pair::Pair::start("presence", false);
    let url = pair.url("");
    synckit_awareness::run_migrations_at(&url, &[])
        .await
        .expect("migrations");
    let options = PostgresOptions::default().with_acquire_timeout(Duration::from_secs(1));
    let a = instance_with(&url, options).await;
    let b = instance_with(&url, options).await;
    let (alice, alice_out) = a.join("doc", None).await.expect("join");
    let (_bob, mut bob_out) = b.join("doc", None).await.expect("join");
    alice
        .receive(&message(1, 1, Some(json!({ "moved": 1 }))))
        .await
        .expect("receive");
    expect(&mut bob_out, (1, 1, true), Duration::from_secs(5)).await;

    let failover = {
        let (dir, ports) = (pair.dir.clone(), pair.ports);
        tokio::task::spawn_blocking(move || {
            let seconds = pair::Pair::existing(dir, ports).fail_over(2.0);
            (seconds, Instant::now())
        })
    };
    let mut clock = 1;
    let mut dropped = 0;
    let promoted = loop {
        clock += 1;
        let received = alice
            .receive(&message(1, clock, Some(json!({ "moved": clock }))))
            .await
            .expect("the connection stays open while the database is away");
        dropped += received.dropped.len();
        if failover.is_finished() {
            break failover.await.expect("failover");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (seconds, promoted_at) = promoted;
    assert!(
        dropped > 0,
        "no move was dropped: was the database ever away?"
    );
    // Moves after the promotion: bob must see one of them, present.
    let target = clock + 1;
    let seen = tokio::spawn(async move {
        let mut latest = (0, false);
        loop {
            let Some(Outgoing::Message(bytes)) = bob_out.next().await else {
                panic!("bob's connection closed");
            };
            let Ok(AwarenessMessage::Update(update)) = decode_message(&bytes) else {
                continue;
            };
            for client in
                decode_awareness_update(&update, &DecodeLimits::default()).expect("decode")
            {
                if client.client_id == 1 {
                    latest = (client.clock, client.state.is_some());
                }
            }
            if latest.0 >= target && latest.1 {
                return Instant::now();
            }
        }
    });
    let deadline = promoted_at + Duration::from_secs(5);
    while !seen.is_finished() && Instant::now() < deadline {
        clock += 1;
        alice
            .receive(&message(1, clock, Some(json!({ "moved": clock }))))
            .await
            .expect("the connection stays open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        seen.is_finished(),
        "bob did not see alice move within 5 s of the promotion (failover {seconds:.2} s, \
         {dropped} moves dropped meanwhile)"
    );
    let back = seen.await.expect("reader").duration_since(promoted_at);
    println!(
        "failover {seconds:.2} s ({dropped} of alice's moves dropped meanwhile, connection kept); \
         bob saw her move {back:?} after the promotion"
    );
    let closed = tokio::time::timeout(Duration::from_millis(50), alice_out.closing())
        .await
        .is_ok();
    assert!(!closed, "the engine ended alice's connection");
}
