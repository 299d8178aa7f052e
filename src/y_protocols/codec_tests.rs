//! Unit tests of `codec.rs`.

use super::*;
use serde_json::json;

fn js(value: Value) -> String {
    let mut out = String::new();
    write_js_json(&mut out, &value);
    out
}

#[test]
fn js_number_layout() {
    let cases: &[(f64, &str)] = &[
        (1.0, "1"),
        (-0.0, "0"),
        (1.5, "1.5"),
        (-0.25, "-0.25"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1e21, "1e+21"),
        (1e20, "100000000000000000000"),
        (123456789.125, "123456789.125"),
        (1e-6, "0.000001"),
        (1e-7, "1e-7"),
        (1.5e-7, "1.5e-7"),
        (5e-324, "5e-324"),
        (f64::MAX, "1.7976931348623157e+308"),
        (2f64.powi(70), "1.1805916207174113e+21"),
    ];
    for (f, expected) in cases {
        assert_eq!(js(json!(f)), *expected, "formatting {f:?}");
    }
}

#[test]
fn js_string_escapes() {
    assert_eq!(
        js(json!(
            "a\"b\\c\u{8}\u{c}\n\r\t\u{0}\u{1f}\u{7f}\u{2028}/é😀"
        )),
        "\"a\\\"b\\\\c\\b\\f\\n\\r\\t\\u0000\\u001f\u{7f}\u{2028}/é😀\""
    );
}

#[test]
fn wire_example() {
    let bytes = encode_awareness_update(&[AwarenessClientUpdate {
        client_id: 300,
        clock: 2,
        state: Some(json!({"a": 1})),
    }])
    .expect("encodable");
    assert_eq!(bytes, b"\x01\xac\x02\x02\x07{\"a\":1}");
}

#[test]
fn a_message_put_together_from_entries_equals_one_encoded_whole() {
    let clients: Vec<AwarenessClientUpdate> = (0..200u64)
        .map(|i| AwarenessClientUpdate {
            client_id: i * 1000,
            clock: i,
            state: (i % 3 != 0).then(|| json!({ "cursor": i, "pad": "x".repeat(i as usize) })),
        })
        .collect();
    let mut json = String::new();
    let entries: Vec<Vec<u8>> = clients
        .iter()
        .map(|client| {
            let mut out = Vec::new();
            encode_client(&mut out, &mut json, client).expect("encodable");
            out
        })
        .collect();
    for n in [0, 1, 2, 127, 128, 200] {
        let whole = encode_message(&AwarenessMessage::Update(
            encode_awareness_update(&clients[..n]).expect("encodable"),
        ));
        let put_together = awareness_message_of(entries[..n].iter().map(Vec::as_slice));
        assert_eq!(put_together, whole, "{n} clients");
    }
}
