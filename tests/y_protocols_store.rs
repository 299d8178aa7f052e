//! y-protocols awareness updates applied to and read from the stores (memory and PostgreSQL).

mod common;

use serde_json::json;
use synckit_awareness::y_protocols::{
    apply_awareness_update, decode_awareness_update, encode_awareness_state,
    encode_awareness_update, AwarenessClientUpdate, CodecError, DecodeLimits, MAX_SAFE_INTEGER,
};
use synckit_awareness::{AwarenessUpdate, Error, SetOutcome};

fn client(client_id: u64, clock: u64, state: Option<serde_json::Value>) -> AwarenessClientUpdate {
    AwarenessClientUpdate {
        client_id,
        clock,
        state,
    }
}

fn update(clients: &[AwarenessClientUpdate]) -> Vec<u8> {
    encode_awareness_update(clients).expect("encodable")
}

async fn applies_decimal_ids_and_outcomes(stores: common::Stores) {
    let store = stores.long.clone();
    let limits = DecodeLimits::default();
    let first = update(&[
        client(7, 1, Some(json!({"user": {"name": "Ann"}}))),
        client(
            MAX_SAFE_INTEGER,
            MAX_SAFE_INTEGER,
            Some(json!({"max": true})),
        ),
    ]);
    let outcomes = apply_awareness_update(&*store, "doc", "conn", &first, &limits)
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        [
            (7, SetOutcome::Applied),
            (MAX_SAFE_INTEGER, SetOutcome::Applied)
        ]
    );
    let entry = store.get("doc", "7").await.unwrap().expect("client 7");
    assert_eq!((entry.clock, entry.connection_id.as_str()), (1, "conn"));
    let max = store
        .get("doc", "9007199254740991")
        .await
        .unwrap()
        .expect("max client");
    assert_eq!(max.clock, 9_007_199_254_740_991);

    // Rule 1 through the codec: an older clock is stale, a same-clock null is a leave.
    let second = update(&[client(7, 0, Some(json!({"old": true}))), client(7, 1, None)]);
    let outcomes = apply_awareness_update(&*store, "doc", "conn", &second, &limits)
        .await
        .unwrap();
    assert_eq!(outcomes, [(7, SetOutcome::Stale), (7, SetOutcome::Applied)]);
    assert!(store.get("doc", "7").await.unwrap().unwrap().is_tombstone());
}

async fn malformed_input_applies_nothing(stores: common::Stores) {
    let store = stores.long.clone();
    let limits = DecodeLimits::default().with_max_clients(2);
    let good = update(&[client(1, 1, Some(json!({"ok": 1})))]);
    let truncated = &good[..good.len() - 1];
    let three = update(&[
        client(1, 1, Some(json!(1))),
        client(2, 1, Some(json!(2))),
        client(3, 1, Some(json!(3))),
    ]);
    for (bytes, expected) in [
        (
            truncated,
            CodecError::LengthOutOfBounds {
                field: synckit_awareness::y_protocols::WireField::State,
                length: 8,
                remaining: 7,
            },
        ),
        (&three[..], CodecError::TooManyClients { count: 3, max: 2 }),
    ] {
        match apply_awareness_update(&*store, "doc", "conn", bytes, &limits).await {
            Err(Error::Codec(e)) => assert_eq!(e, expected),
            other => panic!("expected a codec error, got {other:?}"),
        }
    }
    // Decodable, but the second state holds a NUL: refused by the store's input rules,
    // before the first is applied.
    let nul = update(&[
        client(1, 1, Some(json!({"ok": 1}))),
        client(2, 1, Some(json!("a\u{0}b"))),
    ]);
    assert!(matches!(
        apply_awareness_update(&*store, "doc", "conn", &nul, &limits).await,
        Err(Error::InvalidInput { .. })
    ));
    assert!(store.get_all("doc").await.unwrap().is_empty());
}

async fn encodes_live_entries_skipping_non_yjs_ids(stores: common::Stores) {
    let store = stores.long.clone();
    let limits = DecodeLimits::default();
    let joined = update(&[
        client(30, 2, Some(json!({"b": 1, "a": 2}))),
        client(4, 1, Some(json!("four"))),
        client(5, 3, None),
    ]);
    apply_awareness_update(&*store, "doc", "conn", &joined, &limits)
        .await
        .unwrap();
    for id in ["synckit-user", "007", "9007199254740992"] {
        store
            .set(&AwarenessUpdate::new("doc", id, "conn", 1, Some(json!({}))))
            .await
            .unwrap();
    }
    store
        .set(&AwarenessUpdate::new(
            "elsewhere",
            "8",
            "conn",
            1,
            Some(json!(8)),
        ))
        .await
        .unwrap();

    let bytes = encode_awareness_state(&*store, "doc").await.unwrap();
    // Live entries only (client 5 left), by client_id text ("30" < "4"), key order kept.
    assert_eq!(
        decode_awareness_update(&bytes, &limits).unwrap(),
        [
            client(30, 2, Some(json!({"b": 1, "a": 2}))),
            client(4, 1, Some(json!("four"))),
        ]
    );
    assert_eq!(
        encode_awareness_state(&*store, "empty").await.unwrap(),
        [0],
        "no clients: count 0"
    );
}

common::both_stores!(
    applies_decimal_ids_and_outcomes,
    malformed_input_applies_nothing,
    encodes_live_entries_skipping_non_yjs_ids,
);
