//! Error handling, limits, framing and property tests for the awareness codec.

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use synckit_awareness::y_protocols::{
    decode_awareness_update, decode_message, encode_awareness_update, encode_message,
    AwarenessClientUpdate, AwarenessMessage, CodecError, DecodeLimits, WireField, MAX_SAFE_INTEGER,
};

fn decode(bytes: &[u8]) -> Result<Vec<AwarenessClientUpdate>, CodecError> {
    decode_awareness_update(bytes, &DecodeLimits::default())
}

/// count=1, id, clock, then a raw state string.
fn one_client(id: u8, clock: u8, state: &[u8]) -> Vec<u8> {
    let mut out = vec![1, id, clock, state.len() as u8];
    out.extend_from_slice(state);
    out
}

#[test]
fn decodes_minimal_update() {
    assert_eq!(
        decode(&one_client(1, 2, b"{\"a\":1}")),
        Ok(vec![AwarenessClientUpdate {
            client_id: 1,
            clock: 2,
            state: Some(json!({"a": 1}))
        }])
    );
    assert_eq!(
        decode(&one_client(1, 2, b"null")).map(|c| c[0].state.clone()),
        Ok(None)
    );
    assert_eq!(decode(&[0]), Ok(vec![]));
}

#[test]
fn truncation_errors_name_the_field() {
    assert_eq!(
        decode(&[]),
        Err(CodecError::Truncated {
            field: WireField::ClientCount
        })
    );
    assert_eq!(
        decode(&[1]),
        Err(CodecError::Truncated {
            field: WireField::ClientId
        })
    );
    assert_eq!(
        decode(&[1, 0x85]),
        Err(CodecError::Truncated {
            field: WireField::ClientId
        })
    );
    assert_eq!(
        decode(&[1, 1]),
        Err(CodecError::Truncated {
            field: WireField::Clock
        })
    );
    assert_eq!(
        decode(&[1, 1, 1]),
        Err(CodecError::Truncated {
            field: WireField::StateLength
        })
    );
    assert_eq!(
        decode(&[1, 1, 1, 5, b'{']),
        Err(CodecError::LengthOutOfBounds {
            field: WireField::State,
            length: 5,
            remaining: 1
        })
    );
    // Count says two clients, only one present.
    let mut two = one_client(1, 1, b"{}");
    two[0] = 2;
    assert_eq!(
        decode(&two),
        Err(CodecError::Truncated {
            field: WireField::ClientId
        })
    );
}

#[test]
fn overflowing_varints_name_the_field() {
    let too_big = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10]; // 2^53
    let too_long = [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00];
    for bad in [&too_big[..], &too_long[..]] {
        let mut id = vec![1];
        id.extend_from_slice(bad);
        id.extend_from_slice(&[1, 2, b'{', b'}']);
        assert_eq!(
            decode(&id),
            Err(CodecError::VarIntOverflow {
                field: WireField::ClientId
            })
        );
        let mut clock = vec![1, 1];
        clock.extend_from_slice(bad);
        clock.extend_from_slice(&[2, b'{', b'}']);
        let err = decode(&clock).unwrap_err();
        assert_eq!(
            err,
            CodecError::VarIntOverflow {
                field: WireField::Clock
            }
        );
        assert!(err.to_string().contains("clock"), "{err}");
    }
    let mut id_msg = vec![1];
    id_msg.extend_from_slice(&too_big);
    assert!(decode(&id_msg)
        .unwrap_err()
        .to_string()
        .contains("clientID"));
}

#[test]
fn rejects_bad_text() {
    assert_eq!(
        decode(&one_client(4, 1, b"\"\xff\"")),
        Err(CodecError::InvalidUtf8 {
            client_id: 4,
            valid_up_to: 1
        })
    );
    let err = decode(&one_client(4, 1, b"{\"a\":")).unwrap_err();
    assert!(
        matches!(err, CodecError::InvalidJson { client_id: 4, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("state of client 4 is not valid JSON"),
        "{err}"
    );
    // JSON.parse rejects these too: trailing garbage, BOM, empty string.
    for bad in [&b"{} x"[..], "\u{feff}{}".as_bytes(), b""] {
        assert!(matches!(
            decode(&one_client(4, 1, bad)),
            Err(CodecError::InvalidJson { .. })
        ));
    }
    // Lone surrogate escapes are valid for JSON.parse but not representable in Rust.
    assert!(matches!(
        decode(&one_client(4, 1, br#""\ud800""#)),
        Err(CodecError::InvalidJson { .. })
    ));
}

#[test]
fn limits_are_enforced_before_allocation() {
    // Count 2^53-1 with no client data: refused by the limit, no huge Vec reserved.
    let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f];
    assert_eq!(
        decode(&huge),
        Err(CodecError::TooManyClients {
            count: MAX_SAFE_INTEGER,
            max: 1024
        })
    );
    // Even with an unlimited max_clients the capacity is bounded by the input size.
    let unlimited = DecodeLimits::default().with_max_clients(usize::MAX);
    assert_eq!(
        decode_awareness_update(&huge, &unlimited),
        Err(CodecError::Truncated {
            field: WireField::ClientId
        })
    );
    let small = DecodeLimits::default()
        .with_max_clients(1)
        .with_max_state_bytes(4);
    let mut two = one_client(1, 1, b"{}");
    two[0] = 2;
    assert_eq!(
        decode_awareness_update(&two, &small),
        Err(CodecError::TooManyClients { count: 2, max: 1 })
    );
    assert_eq!(
        decode_awareness_update(&one_client(9, 1, b"[1,2]"), &small),
        Err(CodecError::StateTooLarge {
            client_id: 9,
            length: 5,
            max: 4
        })
    );
    // The size limit is checked on the declared length, before the bounds check.
    assert_eq!(
        decode(&[1, 1, 1, 0xff, 0xff, 0x7f]),
        Err(CodecError::StateTooLarge {
            client_id: 1,
            length: 2_097_151,
            max: 65_536
        })
    );
    let default = DecodeLimits::default();
    assert_eq!(
        (default.max_clients, default.max_state_bytes),
        (1024, 65_536)
    );
}

#[test]
fn rejects_trailing_bytes() {
    let mut bytes = one_client(1, 1, b"{}");
    bytes.push(0);
    assert_eq!(
        decode(&bytes),
        Err(CodecError::TrailingBytes {
            offset: 6,
            count: 1
        })
    );
}

#[test]
fn encoder_refuses_unsafe_integers() {
    let c = |client_id, clock| AwarenessClientUpdate {
        client_id,
        clock,
        state: None,
    };
    assert_eq!(
        encode_awareness_update(&[c(MAX_SAFE_INTEGER + 1, 0)]),
        Err(CodecError::ValueOutOfRange {
            field: WireField::ClientId,
            value: MAX_SAFE_INTEGER + 1
        })
    );
    assert_eq!(
        encode_awareness_update(&[c(1, u64::MAX)]),
        Err(CodecError::ValueOutOfRange {
            field: WireField::Clock,
            value: u64::MAX
        })
    );
    assert!(encode_awareness_update(&[c(MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)]).is_ok());
}

#[test]
fn message_framing() {
    let update = encode_awareness_update(&[AwarenessClientUpdate {
        client_id: 1,
        clock: 1,
        state: Some(json!({})),
    }])
    .expect("encodable");
    let framed = encode_message(&AwarenessMessage::Update(update.clone()));
    assert_eq!(framed[0], 1);
    assert_eq!(usize::from(framed[1]), update.len());
    assert_eq!(&framed[2..], &update[..]);
    assert_eq!(
        decode_message(&framed),
        Ok(AwarenessMessage::Update(update))
    );
    assert_eq!(encode_message(&AwarenessMessage::Query), vec![3]);
    assert_eq!(decode_message(&[3]), Ok(AwarenessMessage::Query));
    for t in [0u8, 2, 4, 127] {
        assert_eq!(
            decode_message(&[t, 0]),
            Err(CodecError::UnsupportedMessageType(u64::from(t)))
        );
    }
    assert_eq!(
        decode_message(&[0x80, 0x01]),
        Err(CodecError::UnsupportedMessageType(128))
    );
    assert_eq!(
        decode_message(&[]),
        Err(CodecError::Truncated {
            field: WireField::MessageType
        })
    );
    assert_eq!(
        decode_message(&[1]),
        Err(CodecError::Truncated {
            field: WireField::UpdateLength
        })
    );
    assert_eq!(
        decode_message(&[1, 3, 0]),
        Err(CodecError::LengthOutOfBounds {
            field: WireField::Update,
            length: 3,
            remaining: 1
        })
    );
    assert_eq!(
        decode_message(&[3, 0]),
        Err(CodecError::TrailingBytes {
            offset: 1,
            count: 1
        })
    );
    assert_eq!(
        decode_message(&[1, 0, 9]),
        Err(CodecError::TrailingBytes {
            offset: 2,
            count: 1
        })
    );
    // Large payloads need a multi-byte length.
    let big = vec![7u8; 300];
    let framed = encode_message(&AwarenessMessage::Update(big.clone()));
    assert_eq!(&framed[..3], &[1, 0xac, 0x02]);
    assert_eq!(decode_message(&framed), Ok(AwarenessMessage::Update(big)));
}

fn arb_string() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..12).prop_map(String::from_iter)
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        arb_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((arb_string(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn arb_client() -> impl Strategy<Value = AwarenessClientUpdate> {
    let state = prop_oneof![
        1 => Just(None),
        4 => prop::collection::vec((arb_string(), arb_json()), 0..6)
            .prop_map(|kv| Some(Value::Object(kv.into_iter().collect()))),
    ];
    (0..=MAX_SAFE_INTEGER, 0..=MAX_SAFE_INTEGER, state).prop_map(|(client_id, clock, state)| {
        AwarenessClientUpdate {
            client_id,
            clock,
            state,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn roundtrip(clients in prop::collection::vec(arb_client(), 0..8)) {
        let bytes = encode_awareness_update(&clients).expect("safe values encode");
        prop_assert_eq!(decode(&bytes), Ok(clients));
        let framed = encode_message(&AwarenessMessage::Update(bytes.clone()));
        prop_assert_eq!(decode_message(&framed), Ok(AwarenessMessage::Update(bytes)));
    }

    #[test]
    fn non_integral_floats_roundtrip_exactly(f in any::<f64>().prop_filter("finite non-integral", |f| f.is_finite() && f.fract() != 0.0)) {
        let clients = vec![AwarenessClientUpdate { client_id: 1, clock: 1, state: Some(json!({ "f": f })) }];
        let bytes = encode_awareness_update(&clients).expect("encodable");
        prop_assert_eq!(decode(&bytes), Ok(clients));
    }

    #[test]
    fn strict_prefixes_and_suffixes_fail(clients in prop::collection::vec(arb_client(), 1..4), cut in any::<prop::sample::Index>(), extra in 0u8..=255) {
        let bytes = encode_awareness_update(&clients).expect("encodable");
        let cut = cut.index(bytes.len());
        prop_assert!(decode(&bytes[..cut]).is_err());
        let mut longer = bytes.clone();
        longer.push(extra);
        prop_assert_eq!(decode(&longer), Err(CodecError::TrailingBytes { offset: bytes.len(), count: 1 }));
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&bytes);
        let _ = decode_awareness_update(&bytes, &DecodeLimits::unlimited());
        let _ = decode_message(&bytes);
    }

    #[test]
    fn mutated_updates_never_panic(clients in prop::collection::vec(arb_client(), 1..4), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        let mut bytes = encode_awareness_update(&clients).expect("encodable");
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        let _ = decode(&bytes);
    }
}
