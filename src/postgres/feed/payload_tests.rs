//! The payload codec's unit tests (`payload.rs`).

use super::*;

fn ids(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("client-{i}")).collect()
}

#[test]
fn coalesces_without_reordering_a_key() {
    let mut batch = Notifications::default();
    batch.add(ChangeKind::Set, "d".into(), vec!["a".into()], vec![]);
    batch.add(ChangeKind::Set, "e".into(), vec!["a".into()], vec![]);
    batch.add(
        ChangeKind::Set,
        "d".into(),
        vec!["b".into(), "a".into()],
        vec![],
    );
    batch.add(ChangeKind::Remove, "d".into(), vec!["a".into()], vec![]);
    batch.add(ChangeKind::Set, "d".into(), vec!["a".into()], vec![]);
    let payloads = batch.into_payloads("me", &mut 7);
    assert_eq!(
        payloads,
        [
            r#"{"o":"me","s":7,"e":[["set","d",["a","b"]],["set","e",["a"]],["remove","d",["a"]],["set","d",["a"]]]}"#
        ]
    );
    let changes = parse(&payloads[0]).expect("ours");
    assert_eq!(changes.len(), 4);
    assert_eq!(changes[2].kind, ChangeKind::Remove);
    assert_eq!(changes[2].origin, "me");
}

#[test]
fn splits_below_the_limit_and_keeps_every_key_in_order() {
    let long_doc = "é\"".repeat(80);
    let mut batch = Notifications::default();
    batch.add(ChangeKind::Expire, long_doc.clone(), ids(0..1500), vec![]);
    batch.add(ChangeKind::Leave, "x".into(), ids(0..3), vec![]);
    let mut sequence = 0;
    let payloads = batch.into_payloads(&"o".repeat(256), &mut sequence);
    assert!(payloads.len() > 1);
    assert_eq!(sequence, payloads.len() as u64);
    let mut seen = Vec::new();
    for p in &payloads {
        assert!(p.len() <= MAX_PAYLOAD_BYTES, "{} bytes", p.len());
        for change in parse(p).expect("ours") {
            seen.extend(change.client_ids.into_iter().map(|c| (change.kind, c)));
        }
    }
    let expected: Vec<_> = ids(0..1500)
        .into_iter()
        .map(|c| (ChangeKind::Expire, c))
        .chain(ids(0..3).into_iter().map(|c| (ChangeKind::Leave, c)))
        .collect();
    assert_eq!(seen, expected);
}

fn carried(clock: i64, state: Option<serde_json::Value>) -> Option<ChangedState> {
    Some(ChangedState { clock, state })
}

#[test]
fn carries_states_and_keeps_the_latest_of_a_repeat() {
    let mut batch = Notifications::default();
    let v = |x: i64| Some(serde_json::json!({ "x": x }));
    batch.add(
        ChangeKind::Set,
        "d".into(),
        vec!["a".into()],
        vec![carried(1, v(1))],
    );
    batch.add(
        ChangeKind::Set,
        "d".into(),
        vec!["b".into()],
        vec![carried(7, v(7))],
    );
    batch.add(
        ChangeKind::Set,
        "d".into(),
        vec!["a".into()],
        vec![carried(2, v(2))],
    );
    batch.add(
        ChangeKind::Leave,
        "d".into(),
        vec!["b".into()],
        vec![carried(8, None)],
    );
    let payloads = batch.into_payloads("me", &mut 0);
    assert_eq!(
        payloads,
        [
            r#"{"o":"me","s":0,"e":[["set","d",["a","b"],[[2,{"x":2}],[7,{"x":7}]]],["leave","d",["b"],[[8,null]]]]}"#
        ]
    );
    let changes = parse(&payloads[0]).expect("ours");
    assert_eq!(changes[0].state_of(0), carried(2, v(2)).as_ref());
    assert_eq!(changes[1].state_of(0), carried(8, None).as_ref());
}

#[test]
fn a_state_too_large_for_a_payload_goes_as_a_key_and_states_split_in_order() {
    let big = Some(serde_json::json!({ "text": "x".repeat(MAX_PAYLOAD_BYTES) }));
    let small = |i: i64| {
        carried(
            i,
            Some(serde_json::json!({ "pad": "y".repeat(300), "i": i })),
        )
    };
    let mut batch = Notifications::default();
    let ids: Vec<String> = (0..60).map(|i| format!("c{i}")).collect();
    let mut states: Vec<Option<ChangedState>> = (0..60).map(small).collect();
    states[30] = carried(30, big);
    batch.add(ChangeKind::Set, "d".into(), ids.clone(), states);
    let payloads = batch.into_payloads("me", &mut 0);
    assert!(payloads.len() > 2);
    let mut seen = Vec::new();
    for p in &payloads {
        assert!(p.len() <= MAX_PAYLOAD_BYTES, "{} bytes", p.len());
        for change in parse(p).expect("ours") {
            for (i, id) in change.client_ids.iter().enumerate() {
                seen.push((id.clone(), change.state_of(i).map(|s| s.clock)));
            }
        }
    }
    let expected: Vec<_> = (0..60)
        .map(|i: i64| (format!("c{i}"), (i != 30).then_some(i)))
        .collect();
    assert_eq!(seen, expected);
}

#[test]
fn foreign_payloads_are_not_ours() {
    assert!(parse("hello").is_none());
    assert!(parse(r#"{"o":"x","e":[["bogus","d",[]]]}"#).is_none());
}

/// `carries_alone` (presence's unsaved moves are published only when it says yes) agrees with
/// what a payload of that one update carries, on both sides of the limit.
#[test]
fn carries_alone_agrees_with_the_payload() {
    let origin = "origin-1";
    for size in [10, 1000, 7000, 7700, 7800, 7860, 7900, 9000] {
        let update = crate::entry::AwarenessUpdate::new(
            "doc",
            "42",
            "conn",
            7,
            Some(serde_json::json!({ "t": "x".repeat(size) })),
        );
        let mut batch = Notifications::default();
        batch.add(
            ChangeKind::Set,
            update.document_id.clone(),
            vec![update.client_id.clone()],
            vec![carried(update.clock, update.state.clone())],
        );
        let payloads = batch.into_payloads(origin, &mut 0);
        let carried_state = parse(&payloads[0]).expect("parse")[0].state_of(0).is_some();
        if carries_alone(origin, &update) {
            assert!(
                carried_state,
                "size {size}: said it fits, but went as a key"
            );
        }
        if size <= 7700 {
            assert!(carries_alone(origin, &update), "size {size}");
        }
    }
}

#[test]
fn a_hello_carries_its_origin_and_no_change() {
    let every = std::time::Duration::from_millis(5000);
    let hello = super::hello("instance \"a\"", every);
    let parsed = super::parse_with_origin(&hello).expect("a hello is one of ours");
    assert_eq!(parsed.origin, "instance \"a\"");
    assert!(parsed.changes.is_empty());
    assert_eq!(parsed.hello_every, Some(every));
    assert_eq!(super::parse(&hello), Some(Vec::new()));
}

#[test]
fn changes_handed_over_locally_equal_those_read_back_from_the_payloads() {
    let batch = || {
        let mut batch = Notifications::default();
        let state = |clock| {
            Some(ChangedState {
                clock,
                state: Some(serde_json::json!({ "x": clock })),
            })
        };
        batch.add(
            ChangeKind::Set,
            "d1".into(),
            ids(0..3),
            vec![state(1), state(2), None],
        );
        batch.add(ChangeKind::Remove, "d1".into(), ids(3..5), Vec::new());
        batch.add(ChangeKind::Set, "d2".into(), ids(0..1), vec![state(7)]);
        batch
    };
    let mut sequence = 0;
    let read_back: Vec<AwarenessChange> = batch()
        .into_payloads("me", &mut sequence)
        .iter()
        .flat_map(|p| parse(p).expect("ours"))
        .collect();
    assert_eq!(batch().into_changes("me"), read_back);
}
