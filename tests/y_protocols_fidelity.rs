//! The y-protocols path follows the real y-protocols package where it is stricter than the
//! store's own rule (clock 0), and what a state looks like when it comes back out of each store
//! (equal values; key order is the store's: insertion order in memory, jsonb's on PostgreSQL).

mod common;

use serde_json::json;
use synckit_awareness::y_protocols::{
    apply_awareness_update, decode_awareness_update, encode_awareness_state,
    encode_awareness_update, AwarenessClientUpdate, DecodeLimits,
};
use synckit_awareness::{AwarenessStore, AwarenessUpdate, SetOutcome};

fn update(client_id: u64, clock: u64, state: Option<serde_json::Value>) -> Vec<u8> {
    encode_awareness_update(&[AwarenessClientUpdate {
        client_id,
        clock,
        state,
    }])
    .expect("encodable")
}

async fn apply(store: &dyn AwarenessStore, bytes: &[u8]) -> Vec<(u64, SetOutcome)> {
    apply_awareness_update(store, "doc", "conn", bytes, &DecodeLimits::default())
        .await
        .expect("applies")
}

/// y-protocols: `currClock < clock || (currClock === clock && state === null && states.has(id))`,
/// with `currClock = 0` for a client it does not know.
async fn clock_zero_follows_y_protocols(stores: common::Stores) {
    let store = &*stores.long;
    // A fresh Awareness's initial `{}` at clock 0, from a client the document does not hold.
    assert_eq!(
        apply(store, &update(1, 0, Some(json!({})))).await,
        [(1, SetOutcome::Stale)]
    );
    // A leave at clock 0 for a client it does not hold: y-protocols does not apply it either.
    assert_eq!(
        apply(store, &update(2, 0, None)).await,
        [(2, SetOutcome::Stale)]
    );
    assert_eq!(
        store.get("doc", "1").await.unwrap(),
        None,
        "nothing written"
    );
    assert_eq!(
        store.get("doc", "2").await.unwrap(),
        None,
        "no tombstone written"
    );
    assert!(store.get_all("doc").await.unwrap().is_empty());
    // The first real state (clock 1) is applied.
    assert_eq!(
        apply(store, &update(1, 1, Some(json!({"name": "Ann"})))).await,
        [(1, SetOutcome::Applied)]
    );
    // Mixed frame: the clock-0 entry is stale, the other applied, outcomes in wire order.
    let mixed = encode_awareness_update(&[
        AwarenessClientUpdate {
            client_id: 3,
            clock: 0,
            state: Some(json!({"x": 1})),
        },
        AwarenessClientUpdate {
            client_id: 4,
            clock: 2,
            state: Some(json!({"y": 1})),
        },
    ])
    .unwrap();
    assert_eq!(
        apply(store, &mixed).await,
        [(3, SetOutcome::Stale), (4, SetOutcome::Applied)]
    );
    let live: Vec<String> = store
        .get_all("doc")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.client_id)
        .collect();
    assert_eq!(live, ["1", "4"]);

    // The store's own rule writes a clock-0 state for an absent client (rule 1)...
    let direct = AwarenessUpdate::new("doc", "5", "other", 0, Some(json!({"z": 0})));
    assert_eq!(store.set(&direct).await.unwrap(), SetOutcome::Applied);
    // ...a clock-0 state over it is stale on both paths, and its clock-0 leave is applied
    // (same clock, leave over a live state), as y-protocols would.
    assert_eq!(
        apply(store, &update(5, 0, Some(json!({"z": 1})))).await,
        [(5, SetOutcome::Stale)]
    );
    assert_eq!(
        apply(store, &update(5, 0, None)).await,
        [(5, SetOutcome::Applied)]
    );
    assert!(store.get("doc", "5").await.unwrap().unwrap().is_tombstone());
    // A second clock-0 leave over the tombstone: stale.
    assert_eq!(
        apply(store, &update(5, 0, None)).await,
        [(5, SetOutcome::Stale)]
    );
}

/// An expired entry counts as absent: a clock-0 state is still stale, clock 1 applies.
async fn clock_zero_over_expired_is_stale(stores: common::Stores) {
    let long = &*stores.long;
    let short = &*stores.short;
    assert_eq!(
        apply(long, &update(9, 3, Some(json!({"old": true})))).await,
        [(9, SetOutcome::Applied)]
    );
    tokio::time::sleep(common::PAST_SHORT).await;
    assert_eq!(
        apply(short, &update(9, 0, Some(json!({"new": true})))).await,
        [(9, SetOutcome::Stale)]
    );
    assert_eq!(short.get("doc", "9").await.unwrap(), None);
    assert_eq!(
        long.get("doc", "9").await.unwrap().unwrap().state,
        Some(json!({"old": true})),
        "the stale update wrote nothing"
    );
    assert_eq!(
        apply(short, &update(9, 1, Some(json!({"new": true})))).await,
        [(9, SetOutcome::Applied)]
    );
}

/// What docs/y-protocols.md claims about re-encoded states: values equal on every store; the exact text
/// (`JSON.stringify` of the client's object, insertion-ordered keys) only on the memory store,
/// while PostgreSQL returns jsonb's key order (shorter keys first, then byte order).
async fn re_encoded_states_are_equal_values(stores: common::Stores, expected_text: &str) {
    let store = &*stores.long;
    let state = json!({"zebra": 1, "a": {"yy": [1.5, "x"], "b": null}, "mm": true});
    apply(store, &update(7, 1, Some(state.clone()))).await;
    let bytes = encode_awareness_state(store, "doc").await.unwrap();
    let decoded = decode_awareness_update(&bytes, &DecodeLimits::default()).unwrap();
    assert_eq!(decoded.len(), 1);
    assert_eq!(decoded[0].state.as_ref(), Some(&state), "equal values");
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains(expected_text),
        "expected the state text {expected_text} in {text:?}"
    );
}

async fn memory_keeps_insertion_order(stores: common::Stores) {
    re_encoded_states_are_equal_values(
        stores,
        r#"{"zebra":1,"a":{"yy":[1.5,"x"],"b":null},"mm":true}"#,
    )
    .await;
}

async fn postgres_has_jsonb_key_order(stores: common::Stores) {
    re_encoded_states_are_equal_values(
        stores,
        r#"{"a":{"b":null,"yy":[1.5,"x"]},"mm":true,"zebra":1}"#,
    )
    .await;
}

common::both_stores!(
    clock_zero_follows_y_protocols,
    clock_zero_over_expired_is_stale
);

#[tokio::test]
async fn memory_state_text_is_insertion_ordered() {
    memory_keeps_insertion_order(common::memory_stores().await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_state_text_is_jsonb_ordered() {
    postgres_has_jsonb_key_order(common::postgres_stores().await).await;
}
