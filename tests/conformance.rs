//! One conformance suite for every store: each test below runs against the in-memory store and
//! against PostgreSQL (an isolated database per test), with the rules of
//! `docs/contract.md`.

mod common;

use std::sync::Arc;

use common::{Stores, PAST_SHORT};
use serde_json::json;
use synckit_awareness::{
    AwarenessStore, AwarenessUpdate, Error, Field, InvalidReason, Pruner, SetOutcome,
};

fn up(
    doc: &str,
    client: &str,
    conn: &str,
    clock: i64,
    state: serde_json::Value,
) -> AwarenessUpdate {
    AwarenessUpdate::new(doc, client, conn, clock, Some(state))
}

fn leave(doc: &str, client: &str, conn: &str, clock: i64) -> AwarenessUpdate {
    AwarenessUpdate::leave(doc, client, conn, clock)
}

async fn set(store: &Arc<dyn AwarenessStore>, update: AwarenessUpdate) -> SetOutcome {
    store.set(&update).await.expect("set")
}

async fn clock_of(store: &Arc<dyn AwarenessStore>, doc: &str, client: &str) -> Option<i64> {
    store.get(doc, client).await.expect("get").map(|e| e.clock)
}

async fn higher_clock_applies(s: Stores) {
    let st = &s.long;
    assert_eq!(
        set(st, up("d", "c", "k1", 1, json!({"x": 1}))).await,
        SetOutcome::Applied
    );
    assert_eq!(
        set(st, up("d", "c", "k2", 5, json!({"x": 5}))).await,
        SetOutcome::Applied
    );
    let e = st.get("d", "c").await.unwrap().unwrap();
    assert_eq!(
        (e.clock, e.state, e.connection_id.as_str()),
        (5, Some(json!({"x": 5})), "k2")
    );
}

async fn lower_and_equal_clocks_are_stale(s: Stores) {
    let st = &s.long;
    set(st, up("d", "c", "k", 5, json!("five"))).await;
    assert_eq!(
        set(st, up("d", "c", "k2", 4, json!("four"))).await,
        SetOutcome::Stale
    );
    assert_eq!(
        set(st, up("d", "c", "k2", 5, json!("again"))).await,
        SetOutcome::Stale
    );
    let e = st.get("d", "c").await.unwrap().unwrap();
    assert_eq!(
        (e.clock, e.state, e.connection_id.as_str()),
        (5, Some(json!("five")), "k")
    );
}

async fn equal_clock_leave_removes_live_state(s: Stores) {
    let st = &s.long;
    set(st, up("d", "c", "k", 3, json!({"cursor": 1}))).await;
    assert_eq!(set(st, leave("d", "c", "k", 3)).await, SetOutcome::Applied);
    let e = st
        .get("d", "c")
        .await
        .unwrap()
        .expect("tombstone is returned by get");
    assert!(e.is_tombstone());
    assert_eq!((e.clock, e.state), (3, None));
    // A second equal-clock leave finds no live state to remove.
    assert_eq!(set(st, leave("d", "c", "k", 3)).await, SetOutcome::Stale);
}

async fn tombstone_blocks_older_update(s: Stores) {
    let st = &s.long;
    set(st, up("d", "c", "k", 7, json!(1))).await;
    set(st, leave("d", "c", "k", 8)).await;
    assert_eq!(
        set(st, up("d", "c", "k", 6, json!("late"))).await,
        SetOutcome::Stale
    );
    assert_eq!(
        set(st, up("d", "c", "k", 8, json!("same"))).await,
        SetOutcome::Stale
    );
    assert!(st.get_all("d").await.unwrap().is_empty());
    assert_eq!(clock_of(st, "d", "c").await, Some(8));
    // A newer clock brings the client back.
    assert_eq!(
        set(st, up("d", "c", "k", 9, json!("back"))).await,
        SetOutcome::Applied
    );
    assert_eq!(st.get_all("d").await.unwrap().len(), 1);
}

async fn expired_entry_accepts_any_clock(s: Stores) {
    set(&s.long, up("d", "c", "k", 10, json!("old"))).await;
    set(&s.long, leave("d", "t", "k", 10)).await;
    tokio::time::sleep(PAST_SHORT).await;
    // Expired for the short view: absent for reads, and any clock applies.
    assert_eq!(s.short.get("d", "c").await.unwrap(), None);
    assert_eq!(
        set(&s.short, up("d", "c", "k2", 1, json!("new"))).await,
        SetOutcome::Applied
    );
    assert_eq!(
        set(&s.short, up("d", "t", "k2", 0, json!("revived"))).await,
        SetOutcome::Applied
    );
    let e = s.short.get("d", "c").await.unwrap().unwrap();
    assert_eq!(
        (e.clock, e.state, e.connection_id.as_str()),
        (1, Some(json!("new")), "k2")
    );
}

async fn applying_refreshes_last_seen(s: Stores) {
    set(&s.long, up("d", "c", "k", 1, json!(1))).await;
    let first = s.long.get("d", "c").await.unwrap().unwrap().last_seen;
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(
        s.short.get("d", "c").await.unwrap(),
        None,
        "expired for the short view"
    );
    set(&s.long, up("d", "c", "k", 2, json!(2))).await;
    let second = s.short.get("d", "c").await.unwrap().expect("fresh again");
    assert!(second.last_seen > first);
    // A stale update does not refresh last_seen.
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(
        set(&s.long, up("d", "c", "k", 1, json!(1))).await,
        SetOutcome::Stale
    );
    assert_eq!(s.short.get("d", "c").await.unwrap(), None);
}

async fn get_all_returns_live_entries_in_client_order(s: Stores) {
    let st = &s.long;
    for (client, clock) in [("b", 1), ("a", 2), ("B", 3), ("é", 4), ("a2", 5), ("Z", 6)] {
        set(st, up("d", client, "k", clock, json!({ "name": client }))).await;
    }
    set(st, leave("d", "a2", "k", 6)).await; // tombstone: excluded
    set(st, up("other", "x", "k", 1, json!(0))).await; // another document
    let clients: Vec<String> = st
        .get_all("d")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.client_id)
        .collect();
    // Byte order: uppercase before lowercase, multi-byte UTF-8 last.
    assert_eq!(clients, ["B", "Z", "a", "b", "é"]);
    assert!(st.get_all("empty-doc").await.unwrap().is_empty());
}

/// `get_all_states` is `get_all` with each state as JSON text: the same participants, order
/// and clocks, and text that parses to the value that was set; bad ids are refused.
async fn get_all_states_is_get_all_as_text(s: Stores) {
    let st = &s.long;
    let states = [
        (
            "b",
            json!({ "user": { "name": "bé", "color": "#30bced" }, "cursor": null }),
        ),
        ("a", json!([1, 2.5, "x\"y", { "z": true }])),
        ("c", json!("just text")),
    ];
    for (i, (client, state)) in states.iter().enumerate() {
        set(st, up("d", client, "k", i as i64 + 1, state.clone())).await;
    }
    set(st, up("d", "gone", "k", 1, json!(0))).await;
    set(st, leave("d", "gone", "k", 2)).await; // tombstone: excluded
    let entries = st.get_all("d").await.unwrap();
    let texts = st.get_all_states("d").await.unwrap();
    assert_eq!(texts.len(), entries.len());
    for (text, entry) in texts.iter().zip(&entries) {
        assert_eq!(text.client_id, entry.client_id);
        assert_eq!(text.clock, entry.clock);
        let parsed: serde_json::Value = serde_json::from_str(&text.state).unwrap();
        assert_eq!(Some(&parsed), entry.state.as_ref());
    }
    let clients: Vec<&str> = texts.iter().map(|t| t.client_id.as_str()).collect();
    assert_eq!(clients, ["a", "b", "c"]);
    assert!(st.get_all_states("empty-doc").await.unwrap().is_empty());
    assert!(st.get_all_states("").await.is_err());
}

async fn get_all_and_get_skip_expired_entries(s: Stores) {
    set(&s.long, up("d", "old", "k", 1, json!(1))).await;
    tokio::time::sleep(PAST_SHORT).await;
    set(&s.long, up("d", "new", "k", 1, json!(2))).await;
    let live: Vec<String> = s
        .short
        .get_all("d")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.client_id)
        .collect();
    assert_eq!(live, ["new"]);
    assert!(s.short.get("d", "old").await.unwrap().is_none());
    assert!(s.long.get("d", "old").await.unwrap().is_some());
    assert_eq!(s.long.get_all("d").await.unwrap().len(), 2);
}

async fn documents_are_kept_apart(s: Stores) {
    let st = &s.long;
    set(st, up("d1", "c", "k", 5, json!("one"))).await;
    assert_eq!(
        set(st, up("d2", "c", "k", 1, json!("two"))).await,
        SetOutcome::Applied
    );
    assert_eq!(clock_of(st, "d1", "c").await, Some(5));
    assert_eq!(clock_of(st, "d2", "c").await, Some(1));
    assert!(st.remove("d1", "c").await.unwrap());
    assert_eq!(clock_of(st, "d2", "c").await, Some(1));
    assert_eq!(st.get_all("d1").await.unwrap().len(), 0);
    assert_eq!(st.get_all("d2").await.unwrap().len(), 1);
}

async fn remove_says_whether_an_entry_was_there(s: Stores) {
    let st = &s.long;
    set(st, up("d", "c", "k", 1, json!(1))).await;
    set(st, leave("d", "t", "k", 1)).await;
    assert!(st.remove("d", "c").await.unwrap());
    assert!(!st.remove("d", "c").await.unwrap());
    assert!(
        st.remove("d", "t").await.unwrap(),
        "tombstones are removable"
    );
    assert!(!st.remove("nope", "c").await.unwrap());
    // After a remove the client may start again from any clock.
    assert_eq!(
        set(st, up("d", "c", "k", 0, json!(0))).await,
        SetOutcome::Applied
    );
}

async fn remove_all_for_connection_takes_only_owned_entries(s: Stores) {
    let st = &s.long;
    set(st, up("d1", "a", "conn1", 1, json!("a"))).await;
    set(st, up("d2", "a", "conn1", 1, json!("a2"))).await;
    set(st, up("d1", "b", "conn1", 1, json!("b"))).await;
    set(st, leave("d1", "t", "conn1", 4)).await;
    // b reconnects under conn2: conn1 no longer owns it.
    set(st, up("d1", "b", "conn2", 2, json!("b2"))).await;
    set(st, up("d1", "c", "conn2", 1, json!("c"))).await;

    let removed = st.remove_all_for_connection("conn1").await.unwrap();
    let keys: Vec<(String, String, i64)> = removed
        .iter()
        .map(|e| (e.document_id.clone(), e.client_id.clone(), e.clock))
        .collect();
    assert_eq!(
        keys,
        [
            ("d1".into(), "a".into(), 1),
            ("d1".into(), "t".into(), 4),
            ("d2".into(), "a".into(), 1)
        ]
    );
    let leave = removed[0].leave_update();
    assert_eq!((leave.clock, leave.state), (2, None));
    let left: Vec<String> = st
        .get_all("d1")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.client_id)
        .collect();
    assert_eq!(left, ["b", "c"]);
    assert!(
        st.get("d1", "t").await.unwrap().is_none(),
        "tombstone removed too"
    );
    assert!(st
        .remove_all_for_connection("conn1")
        .await
        .unwrap()
        .is_empty());
    assert!(st
        .remove_all_for_connection("never")
        .await
        .unwrap()
        .is_empty());
}

async fn remove_all_for_connection_deletes_but_hides_expired(s: Stores) {
    set(&s.long, up("d", "old", "conn", 1, json!(1))).await;
    tokio::time::sleep(PAST_SHORT).await;
    set(&s.long, up("d", "new", "conn", 1, json!(1))).await;
    let removed = s.short.remove_all_for_connection("conn").await.unwrap();
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].client_id, "new");
    assert!(
        s.long.get("d", "old").await.unwrap().is_none(),
        "expired entry deleted as well"
    );
}

async fn expired_entries_are_listed_then_pruned(s: Stores) {
    set(&s.long, up("d1", "a", "k", 1, json!(1))).await;
    set(&s.long, leave("d2", "b", "k", 2)).await;
    tokio::time::sleep(PAST_SHORT).await;
    set(&s.long, up("d1", "fresh", "k", 1, json!(1))).await;

    let expired = s.short.get_expired().await.unwrap();
    let keys: Vec<(&str, &str)> = expired
        .iter()
        .map(|e| (e.document_id.as_str(), e.client_id.as_str()))
        .collect();
    assert_eq!(keys, [("d1", "a"), ("d2", "b")]);
    assert_eq!(
        s.short.get_expired().await.unwrap().len(),
        2,
        "get_expired removes nothing"
    );
    assert!(s.long.get_expired().await.unwrap().is_empty());

    assert_eq!(s.short.prune_expired().await.unwrap(), 2);
    assert_eq!(s.short.prune_expired().await.unwrap(), 0);
    assert!(s.long.get("d1", "a").await.unwrap().is_none());
    assert!(s.long.get("d2", "b").await.unwrap().is_none());
    assert!(s.long.get("d1", "fresh").await.unwrap().is_some());
}

async fn take_expired_returns_what_it_deletes(s: Stores) {
    set(&s.long, up("d", "a", "k", 3, json!({"n": 1}))).await;
    tokio::time::sleep(PAST_SHORT).await;
    set(&s.long, up("d", "b", "k", 1, json!(1))).await;
    let taken = s.short.take_expired().await.unwrap();
    assert_eq!(taken.len(), 1);
    assert_eq!((taken[0].client_id.as_str(), taken[0].clock), ("a", 3));
    assert_eq!(taken[0].state, Some(json!({"n": 1})));
    assert!(s.short.take_expired().await.unwrap().is_empty());
    assert!(s.long.get("d", "b").await.unwrap().is_some());
}

/// Every result spanning documents is ordered by (document_id, client_id) in byte order, on
/// every store: written in scrambled order over several documents whose ids sort differently
/// by bytes than by most locales (upper case before lower case, `é` after `z`).
async fn multi_document_results_are_in_key_byte_order(s: Stores) {
    let keys = [
        ("doc-b", "z"),
        ("doc-é", "a"),
        ("Doc-a", "m"),
        ("doc-b", "B"),
        ("doc-a", "y"),
        ("doc-b", "a"),
        ("Doc-a", "Z"),
        ("doc-a", "b"),
    ];
    let mut expected: Vec<(String, String)> = keys
        .iter()
        .map(|(d, c)| (d.to_string(), c.to_string()))
        .collect();
    expected
        .sort_by(|a, b| (a.0.as_bytes(), a.1.as_bytes()).cmp(&(b.0.as_bytes(), b.1.as_bytes())));
    let key_list = |entries: Vec<synckit_awareness::AwarenessEntry>| -> Vec<(String, String)> {
        entries
            .into_iter()
            .map(|e| (e.document_id, e.client_id))
            .collect()
    };

    for (doc, client) in keys {
        set(&s.long, up(doc, client, "conn-1", 1, json!({"at": client}))).await;
    }
    assert_eq!(
        key_list(s.long.remove_all_for_connection("conn-1").await.unwrap()),
        expected,
        "remove_all_for_connection"
    );

    for (doc, client) in keys {
        set(&s.long, up(doc, client, "conn-2", 2, json!({"at": client}))).await;
    }
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(
        key_list(s.short.get_expired().await.unwrap()),
        expected,
        "get_expired"
    );
    assert_eq!(
        key_list(s.short.take_expired().await.unwrap()),
        expected,
        "take_expired"
    );
}

async fn pruner_hands_over_expired_entries_and_stops(s: Stores) {
    set(&s.long, up("d", "a", "k", 1, json!(1))).await;
    set(&s.long, up("d", "b", "k", 1, json!(1))).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let pruner = Pruner::spawn(
        s.short.clone(),
        std::time::Duration::from_millis(100),
        move |e| {
            let _ = tx.send(e);
        },
    );
    let mut got = Vec::new();
    while got.len() < 2 {
        let e = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .expect("pruner reported the expired entries")
            .expect("channel open");
        got.push(e.client_id);
    }
    got.sort();
    assert_eq!(got, ["a", "b"]);
    assert!(s.long.get("d", "a").await.unwrap().is_none());
    tokio::time::timeout(std::time::Duration::from_secs(5), pruner.shutdown())
        .await
        .expect("shutdown is prompt");
    // After shutdown nothing is pruned any more.
    set(&s.long, up("d", "c", "k", 1, json!(1))).await;
    tokio::time::sleep(PAST_SHORT + std::time::Duration::from_millis(300)).await;
    assert!(s.long.get("d", "c").await.unwrap().is_some());
    assert!(rx.try_recv().is_err());
}

async fn bad_input_is_refused_and_changes_nothing(s: Stores) {
    let st = &s.long;
    set(st, up("d", "c", "k", 1, json!("keep"))).await;
    let cases: Vec<(AwarenessUpdate, Field, InvalidReason)> = vec![
        (
            up("", "c", "k", 2, json!(1)),
            Field::DocumentId,
            InvalidReason::Empty,
        ),
        (
            up("d", "", "k", 2, json!(1)),
            Field::ClientId,
            InvalidReason::Empty,
        ),
        (
            up("d", "c", "", 2, json!(1)),
            Field::ConnectionId,
            InvalidReason::Empty,
        ),
        (
            up(&"x".repeat(257), "c", "k", 2, json!(1)),
            Field::DocumentId,
            InvalidReason::TooLong { len: 257, max: 256 },
        ),
        (
            up("d", "c\0", "k", 2, json!(1)),
            Field::ClientId,
            InvalidReason::ContainsNul,
        ),
        (
            up("d", "c", "k", -1, json!(1)),
            Field::Clock,
            InvalidReason::Negative(-1),
        ),
        (
            up("d", "c", "k", 2, json!({"s": "a\u{0}b"})),
            Field::State,
            InvalidReason::ContainsNul,
        ),
        (
            up("d", "c", "k", 2, json!("x".repeat(70_000))),
            Field::State,
            InvalidReason::TooLarge {
                size: 70_002,
                max: 65_536,
            },
        ),
    ];
    for (update, want_field, want_reason) in cases {
        match st.set(&update).await {
            Err(Error::InvalidInput { field, reason }) => {
                assert_eq!((field, &reason), (want_field, &want_reason));
                let msg = Error::InvalidInput { field, reason }.to_string();
                assert!(
                    msg.contains(want_field.as_str()),
                    "message names the field: {msg}"
                );
            }
            other => panic!("{update:?}: expected InvalidInput, got {other:?}"),
        }
        match st
            .set_many(&[up("d", "ok", "k", 1, json!(1)), update])
            .await
        {
            Err(Error::InvalidInput { .. }) => {}
            other => panic!("set_many: expected InvalidInput, got {other:?}"),
        }
    }
    assert!(matches!(
        st.get("", "c").await,
        Err(Error::InvalidInput {
            field: Field::DocumentId,
            ..
        })
    ));
    assert!(matches!(
        st.get_all("a\0").await,
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        st.remove("d", "").await,
        Err(Error::InvalidInput {
            field: Field::ClientId,
            ..
        })
    ));
    assert!(matches!(
        st.remove_all_for_connection("").await,
        Err(Error::InvalidInput { .. })
    ));
    let all = st.get_all("d").await.unwrap();
    assert_eq!(all.len(), 1, "nothing written: {all:?}");
    assert_eq!((all[0].clock, &all[0].state), (1, &Some(json!("keep"))));
}

async fn odd_but_valid_ids_round_trip(s: Stores) {
    let st = &s.long;
    let ids = [
        "'); DROP TABLE awareness_entries;--",
        "\"quoted\" \\ back\\slash %_ like",
        "🦀 emoji ünïcödé 日本",
        &"m".repeat(256),
    ];
    for (i, id) in ids.iter().enumerate() {
        let state = json!({ "name": id, "nested": [id, { "k": id }] });
        assert_eq!(
            set(st, up(id, id, id, i as i64, state.clone())).await,
            SetOutcome::Applied
        );
        let e = st.get(id, id).await.unwrap().unwrap();
        assert_eq!(
            (
                e.document_id.as_str(),
                e.client_id.as_str(),
                e.connection_id.as_str()
            ),
            (*id, *id, *id)
        );
        assert_eq!(e.state, Some(state));
        assert_eq!(st.remove_all_for_connection(id).await.unwrap().len(), 1);
    }
}

async fn set_many_applies_in_order(s: Stores) {
    let st = &s.long;
    set(st, up("d", "x", "k", 5, json!("x5"))).await;
    let outcomes = st
        .set_many(&[
            up("d", "a", "k", 1, json!("a1")),
            up("d", "x", "k", 4, json!("x4")),
            up("d", "a", "k", 3, json!("a3")),
            up("d", "a", "k", 2, json!("a2")),
            leave("d", "a", "k", 3),
            up("d", "x", "k", 6, json!("x6")),
        ])
        .await
        .unwrap();
    use SetOutcome::{Applied as A, Stale as S};
    assert_eq!(outcomes, [A, S, A, S, A, A]);
    assert_eq!(st.get("d", "a").await.unwrap().unwrap().state, None);
    assert_eq!(
        st.get("d", "x").await.unwrap().unwrap().state,
        Some(json!("x6"))
    );
    assert!(st.set_many(&[]).await.unwrap().is_empty());
}

async fn racing_sets_end_at_the_highest_clock(s: Stores) {
    let st = s.long.clone();
    const TASKS: i64 = 16;
    const PER_TASK: i64 = 25;
    // Every clock 0..400 once, spread over tasks in a scrambled order.
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let st = st.clone();
        handles.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..PER_TASK {
                let clock = ((t * PER_TASK + i) * 7919) % (TASKS * PER_TASK);
                let update = up(
                    "race",
                    "c",
                    &format!("conn{t}"),
                    clock,
                    json!({ "clock": clock }),
                );
                outcomes.push((clock, st.set(&update).await));
            }
            outcomes
        }));
    }
    let mut applied_max = false;
    for h in handles {
        for (clock, outcome) in h.await.unwrap() {
            let outcome = outcome.expect("no errors under contention");
            if clock == TASKS * PER_TASK - 1 {
                applied_max = outcome.is_applied();
            }
        }
    }
    assert!(applied_max, "the highest clock always applies");
    let e = st.get("race", "c").await.unwrap().unwrap();
    assert_eq!(e.clock, TASKS * PER_TASK - 1);
    assert_eq!(e.state, Some(json!({ "clock": TASKS * PER_TASK - 1 })));
}

/// Who is here (issue 26): a document's count and the room list agree with `get_all`, in
/// byte order, paged, without tombstones or expired entries, and refuse bad ids.
async fn counts_and_room_lists_agree_with_get_all(s: Stores) {
    let st = &s.long;
    for (doc, client) in [
        ("b", "1"),
        ("b", "2"),
        ("a", "1"),
        ("c", "1"),
        ("e", "1"),
        ("é", "1"),
    ] {
        set(st, up(doc, client, "k", 1, json!({ "doc": doc }))).await;
    }
    // A room with only a tombstone has nobody in it.
    set(st, leave("c", "1", "k", 1)).await;
    let count = |doc: &'static str| async move { st.count(doc).await.expect("count") };
    assert_eq!(
        (
            count("a").await,
            count("b").await,
            count("c").await,
            count("z").await
        ),
        (1, 2, 0, 0)
    );
    let rooms = |after: Option<&'static str>, limit: u32| async move {
        st.rooms(after, limit)
            .await
            .expect("rooms")
            .into_iter()
            .map(|r| (r.document_id, r.participants))
            .collect::<Vec<_>>()
    };
    let all = rooms(None, 100).await;
    assert_eq!(
        all,
        [
            ("a".into(), 1),
            ("b".into(), 2),
            ("e".into(), 1),
            ("é".into(), 1)
        ]
    );
    for (doc, participants) in &all {
        let live = st.get_all(doc).await.expect("get_all").len();
        assert_eq!(usize::try_from(*participants).unwrap(), live, "{doc}");
    }
    assert_eq!(rooms(None, 1).await, [("a".into(), 1)]);
    assert_eq!(
        rooms(Some("a"), 2).await,
        [("b".into(), 2), ("e".into(), 1)]
    );
    assert_eq!(rooms(Some("e"), 10).await, [("é".into(), 1)]);
    assert_eq!(rooms(Some("é"), 10).await, []);
    assert_eq!(rooms(None, 0).await, []);
    // Expired entries count nowhere.
    tokio::time::sleep(PAST_SHORT).await;
    assert_eq!(s.short.count("b").await.expect("count"), 0);
    assert!(s.short.rooms(None, 100).await.expect("rooms").is_empty());
    // Bad ids are refused.
    for result in [
        st.count("").await.map(|_| ()),
        st.rooms(Some(""), 10).await.map(|_| ()),
    ] {
        assert!(
            matches!(
                result,
                Err(Error::InvalidInput {
                    field: Field::DocumentId,
                    ..
                })
            ),
            "{result:?}"
        );
    }
}

// Memory, PostgreSQL (write coalescing on and off), and through PgBouncer in transaction mode.
common::both_stores!(
    and_pooler;
    higher_clock_applies,
    lower_and_equal_clocks_are_stale,
    equal_clock_leave_removes_live_state,
    tombstone_blocks_older_update,
    expired_entry_accepts_any_clock,
    applying_refreshes_last_seen,
    get_all_returns_live_entries_in_client_order,
    get_all_states_is_get_all_as_text,
    get_all_and_get_skip_expired_entries,
    documents_are_kept_apart,
    remove_says_whether_an_entry_was_there,
    remove_all_for_connection_takes_only_owned_entries,
    remove_all_for_connection_deletes_but_hides_expired,
    expired_entries_are_listed_then_pruned,
    take_expired_returns_what_it_deletes,
    multi_document_results_are_in_key_byte_order,
    pruner_hands_over_expired_entries_and_stops,
    bad_input_is_refused_and_changes_nothing,
    odd_but_valid_ids_round_trip,
    set_many_applies_in_order,
    racing_sets_end_at_the_highest_clock,
    counts_and_room_lists_agree_with_get_all,
);
