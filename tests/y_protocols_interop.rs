//! Interoperability with the real y-protocols/lib0 JavaScript implementation.
//!
//! Requires Node.js and `npm ci --prefix tests/js`. This test never skips: a missing Node
//! installation or missing node_modules is a failure with instructions.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use synckit_awareness::y_protocols::{
    decode_awareness_update, encode_awareness_update, AwarenessClientUpdate, CodecError,
    DecodeLimits, MAX_SAFE_INTEGER,
};

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("js")
}

fn node(mode: &str, stdin: Option<&[u8]>) -> String {
    let dir = js_dir();
    assert!(
        dir.join("node_modules").join("y-protocols").join("package.json").is_file(),
        "tests/js/node_modules is missing: run `npm ci --prefix tests/js` (needs Node.js) before `cargo test`"
    );
    let mut child = Command::new("node")
        .arg("awareness-interop.mjs")
        .arg(mode)
        .current_dir(&dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("could not start `node` (is Node.js installed and on PATH?): {e}")
        });
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin piped");
        pipe.write_all(input).expect("write to node stdin");
    }
    let out = child.wait_with_output().expect("wait for node");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "`node awareness-interop.mjs {mode}` failed ({}):\n{stderr}",
        out.status
    );
    eprintln!("{stderr}");
    String::from_utf8(out.stdout).expect("node output is UTF-8")
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(hex: &str) -> Vec<u8> {
    assert!(hex.len().is_multiple_of(2), "odd hex length");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn expected_clients(expected: &Value) -> Vec<AwarenessClientUpdate> {
    expected
        .as_array()
        .expect("expected is an array")
        .iter()
        .map(|e| AwarenessClientUpdate {
            client_id: e["clientID"].as_u64().expect("clientID"),
            clock: e["clock"].as_u64().expect("clock"),
            state: match &e["state"] {
                Value::Null => None,
                v => Some(v.clone()),
            },
        })
        .collect()
}

fn assert_preserve_order() {
    let v: Value = serde_json::from_str(r#"{"b":1,"a":2}"#).expect("json");
    let first = v.as_object().and_then(|m| m.keys().next().cloned());
    assert_eq!(
        first.as_deref(),
        Some("b"),
        "serde_json's `preserve_order` feature is required for byte-exact JS interop \
         (JS keeps object keys in insertion order)"
    );
}

#[test]
fn decodes_and_reencodes_js_generated_updates() {
    assert_preserve_order();
    let cases: Value = serde_json::from_str(&node("gen", None)).expect("gen output is JSON");
    let cases = cases.as_array().expect("gen output is an array");
    assert!(cases.len() >= 10, "too few JS cases: {}", cases.len());
    let limits = DecodeLimits::default();
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let bytes = from_hex(case["hex"].as_str().expect("hex"));
        if let Some(kind) = case.get("expectError").and_then(Value::as_str) {
            let err = decode_awareness_update(&bytes, &limits)
                .expect_err(&format!("[{name}] should fail to decode"));
            assert_eq!(kind, "InvalidJson", "[{name}] unknown expectError");
            assert!(
                matches!(err, CodecError::InvalidJson { .. }),
                "[{name}] wrong error: {err:?}"
            );
            continue;
        }
        let decoded = decode_awareness_update(&bytes, &limits)
            .unwrap_or_else(|e| panic!("[{name}] decode failed: {e}"));
        assert_eq!(
            decoded,
            expected_clients(&case["expected"]),
            "[{name}] states"
        );
        let reencoded = encode_awareness_update(&decoded).expect("encodable");
        assert_eq!(
            to_hex(&reencoded),
            to_hex(&bytes),
            "[{name}] Rust re-encoding differs from JS bytes"
        );
    }
}

fn client(client_id: u64, clock: u64, state: Option<Value>) -> AwarenessClientUpdate {
    AwarenessClientUpdate {
        client_id,
        clock,
        state,
    }
}

/// (name, clients, whether JS re-encoding must give identical bytes)
fn rust_cases() -> Vec<(&'static str, Vec<AwarenessClientUpdate>, bool)> {
    let many = (1..=20)
        .map(|i| {
            client(
                i * 1000 + 7,
                i,
                Some(json!({"user": {"name": format!("user {i}"), "color": "#abcdef"}, "cursor": {"anchor": i, "head": i * 2}})),
            )
        })
        .collect();
    let rows: Vec<Value> = (0..700)
        .map(|i| json!({"i": i, "text": format!("row {i} ✓ {}", "y".repeat(40))}))
        .collect();
    let mut deep = json!({"leaf": [1, "two", null, true]});
    for i in 0..60 {
        deep = if i % 2 == 0 {
            json!([deep])
        } else {
            json!({ "k": deep })
        };
    }
    vec![
        ("twenty clients", many, true),
        (
            "leaves, clock 0 entry ignored by JS, Some(Null) is a leave",
            vec![
                client(1, 5, None),
                client(2, 0, Some(json!({"fresh": true}))),
                client(3, 9, Some(Value::Null)),
                client(4, 1, Some(json!({"still": "here"}))),
            ],
            true,
        ),
        (
            "unicode and escapes",
            vec![client(
                77,
                3,
                Some(json!({
                    "emoji": "😀👩‍👩‍👧‍👦🏳️‍🌈",
                    "cjk": "共同編集 협업",
                    "combining": "e\u{301} \u{915}\u{94d}\u{937}",
                    "ctrl": "\"\\/\u{0}\u{8}\u{c}\n\r\t\u{1f}\u{7f}\u{2028}\u{2029}\u{feff}",
                    "ключ 🔑": ["ä", {"名前": "太郎"}],
                })),
            )],
            true,
        ),
        (
            "numbers in JS formatting",
            vec![client(
                5,
                2,
                Some(json!({
                    "ints": [0, -1, 127, 128, i64::MIN, u64::MAX, MAX_SAFE_INTEGER],
                    "floats": [1.0, -0.0, 1.5, 0.1 + 0.2, 1e21, 1e20, 1e-6, 1e-7, 5e-324, f64::MAX, std::f64::consts::PI],
                })),
            )],
            // u64::MAX / i64::MIN are rounded by JS, so its re-encoding differs.
            false,
        ),
        (
            "numbers exact",
            vec![client(
                6,
                2,
                Some(
                    json!({"ints": [0, -1, MAX_SAFE_INTEGER], "floats": [1.0, -0.0, 1.5, 0.1 + 0.2, 1e21, 1e20, 1e-6, 1e-7, 5e-324, f64::MAX]}),
                ),
            )],
            true,
        ),
        (
            "max safe ids and clocks",
            vec![
                client(
                    MAX_SAFE_INTEGER,
                    MAX_SAFE_INTEGER,
                    Some(json!({"max": true})),
                ),
                client(128, 16384, Some(json!({"b": 1}))),
                client(1 << 32, 127, None),
            ],
            true,
        ),
        (
            "insertion-ordered keys",
            vec![client(
                8,
                1,
                Some(
                    serde_json::from_str(
                        r#"{"zeta":1,"alpha":{"yank":[3,2,1],"beta":null},"mid":"m"}"#,
                    )
                    .expect("json"),
                ),
            )],
            true,
        ),
        (
            "integer-like keys (JS reorders them first)",
            vec![client(
                9,
                1,
                Some(serde_json::from_str(r#"{"b":1,"10":2,"2":3}"#).expect("json")),
            )],
            false,
        ),
        (
            "non-object states",
            vec![
                client(10, 1, Some(json!("a string"))),
                client(11, 1, Some(json!(42))),
                client(12, 1, Some(json!([1, [2]]))),
            ],
            true,
        ),
        (
            // JS encodes `states.get(id) || null`, so falsy states re-encode as null.
            "falsy states",
            vec![
                client(13, 1, Some(json!(false))),
                client(14, 1, Some(json!(0))),
            ],
            false,
        ),
        (
            "large ~50KB state",
            vec![client(15, 4, Some(json!({ "rows": rows })))],
            true,
        ),
        ("deeply nested", vec![client(16, 1, Some(deep))], true),
        ("empty update", vec![], true),
    ]
}

#[test]
fn js_applies_rust_encoded_updates() {
    assert_preserve_order();
    let limits = DecodeLimits::default();
    let mut payload = Vec::new();
    for (name, clients, exact) in rust_cases() {
        let bytes = encode_awareness_update(&clients).expect("encodable");
        // Our own decoder must also accept everything we send.
        let decoded = decode_awareness_update(&bytes, &limits)
            .unwrap_or_else(|e| panic!("[{name}] own decode failed: {e}"));
        assert_eq!(decoded.len(), clients.len(), "[{name}]");
        let expected: Vec<Value> = clients
            .iter()
            .map(|c| {
                json!({
                    "clientID": c.client_id,
                    "clock": c.clock,
                    "state": c.state.clone().unwrap_or(Value::Null),
                })
            })
            .collect();
        payload.push(
            json!({"name": name, "hex": to_hex(&bytes), "expected": expected, "exactBytes": exact}),
        );
    }
    let input = serde_json::to_vec(&payload).expect("serialize cases");
    node("check", Some(&input));
}
