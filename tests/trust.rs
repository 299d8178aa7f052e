//! Ownership of client ids and the limits on live participants (docs/contract.md, rules 4 and
//! 5), for every store: spoofing through `set`, `set_many` and the y-protocols path is refused
//! and changes nothing; limits refuse joins, never heartbeats or leaves.

mod common;

use std::sync::Arc;

use common::{Stores, PAST_SHORT};
use serde_json::json;
use synckit_awareness::y_protocols::{
    apply_awareness_update_as, encode_awareness_update, AwarenessClientUpdate, DecodeLimits,
};
use synckit_awareness::{AwarenessStore, AwarenessUpdate, Error, Field, SetOutcome, StoreOptions};

use SetOutcome::{Applied, ConnectionFull, DocumentFull, Forbidden, Stale};

fn by(owner: Option<&str>, client: &str, conn: &str, clock: i64) -> AwarenessUpdate {
    AwarenessUpdate::new("d", client, conn, clock, Some(json!({ "clock": clock })))
        .with_owner(owner.map(str::to_owned))
}

async fn set(store: &Arc<dyn AwarenessStore>, update: AwarenessUpdate) -> SetOutcome {
    store.set(&update).await.expect("set")
}

async fn spoofing_a_live_client_is_forbidden_and_changes_nothing(s: Stores) {
    let st = &s.long;
    assert_eq!(set(st, by(Some("alice"), "c", "k1", 1)).await, Applied);
    let before = st.get("d", "c").await.unwrap().expect("entry");
    assert_eq!(before.owner.as_deref(), Some("alice"));
    // Another principal, a higher clock, a leave, or no principal at all: refused.
    assert_eq!(set(st, by(Some("bob"), "c", "k2", 9)).await, Forbidden);
    assert_eq!(
        set(
            st,
            AwarenessUpdate::leave("d", "c", "k2", 9).with_owner(Some("bob".into()))
        )
        .await,
        Forbidden
    );
    assert_eq!(set(st, by(None, "c", "k2", 9)).await, Forbidden);
    let after = st.get("d", "c").await.unwrap().expect("entry");
    assert_eq!(after.clock, before.clock);
    assert_eq!(after.state, before.state);
    assert_eq!(after.connection_id, "k1");
    assert_eq!(after.owner.as_deref(), Some("alice"));
    // The owner on a new connection (a reconnect) writes as usual; clocks still rule.
    assert_eq!(set(st, by(Some("alice"), "c", "k3", 2)).await, Applied);
    assert_eq!(set(st, by(Some("alice"), "c", "k3", 2)).await, Stale);
    let moved = st.get("d", "c").await.unwrap().expect("entry");
    assert_eq!((moved.connection_id.as_str(), moved.clock), ("k3", 2));
    // Ownership is checked before clocks: a spoof with a stale clock is still a spoof.
    assert_eq!(set(st, by(Some("bob"), "c", "k2", 0)).await, Forbidden);
}

async fn a_leave_keeps_the_id_owned_until_it_expires_or_is_removed(s: Stores) {
    let st = &s.long;
    assert_eq!(set(st, by(Some("alice"), "c", "k1", 1)).await, Applied);
    let leave = AwarenessUpdate::leave("d", "c", "k1", 2).with_owner(Some("alice".into()));
    assert_eq!(set(st, leave).await, Applied);
    // The tombstone still belongs to alice.
    assert_eq!(set(st, by(Some("bob"), "c", "k2", 5)).await, Forbidden);
    // Removed: the id is free again.
    assert!(st.remove("d", "c").await.unwrap());
    assert_eq!(set(st, by(Some("bob"), "c", "k2", 1)).await, Applied);
    // Expired: free again too (the short view sees bob's entry expired).
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(
        set(&s.short, by(Some("carol"), "c", "k3", 1)).await,
        Applied
    );
    let entry = st.get("d", "c").await.unwrap().expect("entry");
    assert_eq!(entry.owner.as_deref(), Some("carol"));
}

async fn unowned_entries_are_taken_by_the_first_owner(s: Stores) {
    let st = &s.long;
    assert_eq!(set(st, by(None, "c", "k1", 1)).await, Applied);
    assert_eq!(set(st, by(None, "c", "k1", 2)).await, Applied);
    assert_eq!(set(st, by(Some("alice"), "c", "k1", 3)).await, Applied);
    assert_eq!(set(st, by(None, "c", "k1", 4)).await, Forbidden);
    // The leave a server writes for a gone entry carries the entry's owner.
    let entry = st.get("d", "c").await.unwrap().expect("entry");
    assert_eq!(set(st, entry.leave_update()).await, Applied);
}

async fn set_many_refuses_each_spoof_and_applies_the_rest(s: Stores) {
    let st = &s.long;
    assert_eq!(set(st, by(Some("alice"), "a", "k1", 1)).await, Applied);
    assert_eq!(set(st, by(Some("alice"), "b", "k1", 1)).await, Applied);
    let batch = [
        by(Some("bob"), "a", "k2", 5),
        by(Some("bob"), "new", "k2", 1),
        by(Some("bob"), "b", "k2", 5),
        by(Some("bob"), "new", "k2", 2),
    ];
    assert_eq!(
        st.set_many(&batch).await.unwrap(),
        [Forbidden, Applied, Forbidden, Applied]
    );
    let all = st.get_all("d").await.unwrap();
    let owners: Vec<(&str, Option<&str>, i64)> = all
        .iter()
        .map(|e| (e.client_id.as_str(), e.owner.as_deref(), e.clock))
        .collect();
    assert_eq!(
        owners,
        [
            ("a", Some("alice"), 1),
            ("b", Some("alice"), 1),
            ("new", Some("bob"), 2)
        ]
    );
    // One key from two principals in one batch: decided one update after another.
    let mixed = [
        by(Some("carol"), "x", "k3", 1),
        by(Some("dave"), "x", "k4", 2),
    ];
    assert_eq!(st.set_many(&mixed).await.unwrap(), [Applied, Forbidden]);
    // A bad owner is refused before anything is written.
    let bad = [by(Some("erin"), "y", "k5", 1), by(Some(""), "z", "k5", 1)];
    assert!(matches!(
        st.set_many(&bad).await,
        Err(Error::InvalidInput {
            field: Field::Owner,
            ..
        })
    ));
    assert!(st.get("d", "y").await.unwrap().is_none());
}

fn y_update(clients: &[(u64, u64)]) -> Vec<u8> {
    let clients: Vec<AwarenessClientUpdate> = clients
        .iter()
        .map(|&(client_id, clock)| AwarenessClientUpdate {
            client_id,
            clock,
            state: Some(json!({ "user": { "name": format!("u{client_id}") } })),
        })
        .collect();
    encode_awareness_update(&clients).expect("encode")
}

async fn the_y_protocols_path_refuses_spoofs(s: Stores) {
    let st = &s.long;
    let limits = DecodeLimits::default();
    let alice = apply_awareness_update_as(
        st.as_ref(),
        "d",
        "k1",
        Some("alice"),
        &y_update(&[(1, 1), (2, 1)]),
        &limits,
    )
    .await
    .unwrap();
    assert_eq!(alice, [(1, Applied), (2, Applied)]);
    let mallory = apply_awareness_update_as(
        st.as_ref(),
        "d",
        "k2",
        Some("mallory"),
        &y_update(&[(1, 7), (3, 1)]),
        &limits,
    )
    .await
    .unwrap();
    assert_eq!(mallory, [(1, Forbidden), (3, Applied)]);
    let one = st.get("d", "1").await.unwrap().expect("entry");
    assert_eq!((one.clock, one.owner.as_deref()), (1, Some("alice")));
}

fn limited(document: Option<u32>, connection: Option<u32>) -> StoreOptions {
    common::options(common::LONG)
        .with_max_clients_per_document(document)
        .with_max_clients_per_connection(connection)
}

async fn a_full_document_refuses_joins_but_not_heartbeats_or_leaves(s: Stores) {
    let st = s.with_options(limited(Some(3), None));
    for (i, client) in ["a", "b", "c"].into_iter().enumerate() {
        assert_eq!(
            set(&st, by(None, client, &format!("k{i}"), 1)).await,
            Applied
        );
    }
    assert_eq!(set(&st, by(None, "d", "k9", 1)).await, DocumentFull);
    assert!(st.get("d", "d").await.unwrap().is_none(), "nothing written");
    // Members heartbeat and leave as usual.
    assert_eq!(set(&st, by(None, "a", "k0", 2)).await, Applied);
    assert_eq!(
        set(&st, AwarenessUpdate::leave("d", "b", "k1", 2)).await,
        Applied
    );
    // The leave freed a place; the next join takes it, and the one after is refused.
    assert_eq!(set(&st, by(None, "d", "k9", 1)).await, Applied);
    assert_eq!(set(&st, by(None, "e", "k9", 1)).await, DocumentFull);
    // A tombstone coming back to life joins again, so it needs a place too.
    assert_eq!(set(&st, by(None, "b", "k1", 3)).await, DocumentFull);
    // Other documents are not affected.
    let other = AwarenessUpdate::new("other", "e", "k9", 1, Some(json!(1)));
    assert_eq!(st.set(&other).await.unwrap(), Applied);
    assert_eq!(st.get_all("d").await.unwrap().len(), 3);
    // Staleness is reported before the limit.
    assert_eq!(set(&st, by(None, "b", "k1", 1)).await, Stale);
}

async fn a_full_connection_refuses_joins_in_any_document(s: Stores) {
    let st = s.with_options(limited(None, Some(2)));
    let join = |doc: &str, client: &str| {
        AwarenessUpdate::new(doc, client, "conn", 1, Some(json!({ "at": doc })))
    };
    assert_eq!(st.set(&join("d1", "a")).await.unwrap(), Applied);
    assert_eq!(st.set(&join("d2", "a")).await.unwrap(), Applied);
    assert_eq!(st.set(&join("d3", "a")).await.unwrap(), ConnectionFull);
    assert!(st.get("d3", "a").await.unwrap().is_none());
    // Another connection is not affected; after a disconnect the connection has room again.
    let elsewhere = AwarenessUpdate::new("d3", "a", "other", 1, Some(json!(1)));
    assert_eq!(st.set(&elsewhere).await.unwrap(), Applied);
    assert_eq!(st.remove_all_for_connection("conn").await.unwrap().len(), 2);
    assert_eq!(st.set(&join("d4", "b")).await.unwrap(), Applied);
}

async fn one_batch_cannot_exceed_a_limit_by_itself(s: Stores) {
    let st = s.with_options(limited(Some(4), None));
    assert_eq!(set(&st, by(None, "a", "k", 1)).await, Applied);
    // Three places left; five joins, a heartbeat and a leave in one batch.
    let batch = [
        by(None, "j1", "k", 1),
        by(None, "a", "k", 2),
        by(None, "j2", "k", 1),
        by(None, "j3", "k", 1),
        AwarenessUpdate::leave("d", "gone", "k", 1),
        by(None, "j4", "k", 1),
        by(None, "j5", "k", 1),
    ];
    let outcomes = st.set_many(&batch).await.unwrap();
    assert_eq!(
        outcomes,
        [
            Applied,
            Applied,
            Applied,
            Applied,
            Applied,
            DocumentFull,
            DocumentFull
        ]
    );
    assert_eq!(st.get_all("d").await.unwrap().len(), 4);
    // The y-protocols path: a hostile update declaring 50 clients adds none to a full room.
    let hostile: Vec<(u64, u64)> = (100..150).map(|id| (id, 1)).collect();
    let outcomes = synckit_awareness::y_protocols::apply_awareness_update(
        st.as_ref(),
        "d",
        "hostile",
        &y_update(&hostile),
        &DecodeLimits::default(),
    )
    .await
    .unwrap();
    assert!(outcomes.iter().all(|(_, o)| *o == DocumentFull));
    assert_eq!(st.get_all("d").await.unwrap().len(), 4);
}

async fn limits_are_on_by_default(s: Stores) {
    let defaults = StoreOptions::default();
    assert_eq!(
        defaults.max_clients_per_document,
        Some(synckit_awareness::DEFAULT_MAX_CLIENTS_PER_DOCUMENT)
    );
    assert_eq!(
        defaults.max_clients_per_connection,
        Some(synckit_awareness::DEFAULT_MAX_CLIENTS_PER_CONNECTION)
    );
    let st = s.with_options(defaults);
    let batch: Vec<AwarenessUpdate> = (0..70)
        .map(|i| by(None, &format!("c{i:02}"), "one-connection", 1))
        .collect();
    let outcomes = st.set_many(&batch).await.unwrap();
    assert_eq!(
        outcomes.iter().filter(|o| o.is_applied()).count(),
        synckit_awareness::DEFAULT_MAX_CLIENTS_PER_CONNECTION as usize
    );
    assert!(outcomes[64..].iter().all(|o| *o == ConnectionFull));
}

common::both_stores!(
    spoofing_a_live_client_is_forbidden_and_changes_nothing,
    a_leave_keeps_the_id_owned_until_it_expires_or_is_removed,
    unowned_entries_are_taken_by_the_first_owner,
    set_many_refuses_each_spoof_and_applies_the_rest,
    the_y_protocols_path_refuses_spoofs,
    a_full_document_refuses_joins_but_not_heartbeats_or_leaves,
    a_full_connection_refuses_joins_in_any_document,
    one_batch_cannot_exceed_a_limit_by_itself,
    limits_are_on_by_default,
);
