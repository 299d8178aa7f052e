//! `set_many` beyond the conformance suite's small case: big batches checked against a model of
//! the contract, batches mixing new, live and expired keys, and many tasks racing on the same
//! keys. Each test runs on the in-memory store and on PostgreSQL (one statement per batch).

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::{Stores, PAST_SHORT};
use serde_json::json;
use synckit_awareness::{AwarenessStore, AwarenessUpdate, SetOutcome};

type Key = (String, String);

/// The contract as a model: per key, a running maximum of (clock, is_leave) with strict `>`.
fn model(existing: &mut HashMap<Key, (i64, bool)>, updates: &[AwarenessUpdate]) -> Vec<SetOutcome> {
    updates
        .iter()
        .map(|u| {
            let key = (u.document_id.clone(), u.client_id.clone());
            let rank = (u.clock, u.state.is_none());
            match existing.get(&key) {
                Some(&old) if rank <= old => SetOutcome::Stale,
                _ => {
                    existing.insert(key, rank);
                    SetOutcome::Applied
                }
            }
        })
        .collect()
}

/// A deterministic scramble (no extra dependency): the n-th value of a 64-bit LCG.
fn scramble(n: u64) -> u64 {
    n.wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        >> 33
}

fn update(doc: &str, client: &str, clock: i64, leave: bool) -> AwarenessUpdate {
    let state = (!leave).then(|| json!({ "clock": clock, "name": client }));
    AwarenessUpdate::new(doc, client, "conn", clock, state)
}

async fn assert_store_matches(store: &Arc<dyn AwarenessStore>, model: &HashMap<Key, (i64, bool)>) {
    for ((doc, client), &(clock, is_leave)) in model {
        let entry = store
            .get(doc, client)
            .await
            .unwrap()
            .expect("entry present");
        assert_eq!(
            (entry.clock, entry.state.is_none()),
            (clock, is_leave),
            "{doc}/{client}"
        );
    }
}

async fn big_batches_match_the_model(s: Stores) {
    let st = &s.long;
    let mut expected = HashMap::new();
    // Some keys exist before the batches, at various clocks.
    for k in 0..20 {
        let u = update(&format!("doc{}", k % 3), &format!("c{k}"), k * 3, false);
        assert_eq!(
            model(&mut expected, std::slice::from_ref(&u)),
            [SetOutcome::Applied]
        );
        st.set(&u).await.unwrap();
    }
    for round in 0..4u64 {
        let updates: Vec<_> = (0..400u64)
            .map(|i| {
                let r = scramble(round * 1000 + i);
                let k = r % 40;
                update(
                    &format!("doc{}", k % 3),
                    &format!("c{k}"),
                    (r / 40 % 80) as i64,
                    r.is_multiple_of(7),
                )
            })
            .collect();
        let outcomes = st.set_many(&updates).await.unwrap();
        assert_eq!(outcomes, model(&mut expected, &updates), "round {round}");
    }
    assert_store_matches(st, &expected).await;
}

async fn batches_mix_new_live_and_expired_keys(s: Stores) {
    // `short` sees entries as expired 0.7 s after their last write.
    let st = &s.short;
    st.set(&update("d", "expired", 50, false)).await.unwrap();
    st.set(&update("d", "expired-leave", 50, true))
        .await
        .unwrap();
    tokio::time::sleep(PAST_SHORT).await;
    st.set(&update("d", "live", 50, false)).await.unwrap();
    st.set(&update("d", "tomb", 50, true)).await.unwrap();
    let updates = [
        update("d", "expired", 1, false), // expired entry: absent, applies
        update("d", "live", 49, false),   // below the live clock
        update("d", "new", 7, false),     // new key
        update("d", "expired", 2, true),  // after the batch's own write
        update("d", "live", 50, true),    // equal clock, leave over a state
        update("d", "tomb", 50, false),   // equal clock, state under a tombstone
        update("d", "new", 7, false),     // same rank again
        update("d", "expired-leave", 0, false), // expired tombstone: absent
        update("d", "live", 51, false),
    ];
    use SetOutcome::{Applied as A, Stale as S};
    assert_eq!(
        st.set_many(&updates).await.unwrap(),
        [A, S, A, A, A, S, S, A, A]
    );
    let clock_and_leave = |e: Option<synckit_awareness::AwarenessEntry>| {
        let e = e.expect("present");
        (e.clock, e.state.is_none())
    };
    for (client, want) in [
        ("expired", (2, true)),
        ("live", (51, false)),
        ("new", (7, false)),
        ("tomb", (50, true)),
        ("expired-leave", (0, false)),
    ] {
        assert_eq!(
            clock_and_leave(st.get("d", client).await.unwrap()),
            want,
            "{client}"
        );
    }
}

async fn racing_batches_end_at_the_highest_clock(s: Stores) {
    const TASKS: u64 = 8;
    const BATCHES: u64 = 15;
    const KEYS: u64 = 12;
    let mut handles = Vec::new();
    for t in 0..TASKS {
        let st = s.long.clone();
        handles.push(tokio::spawn(async move {
            let mut reported = Vec::new();
            for b in 0..BATCHES {
                // Every clock of a key appears once across all tasks, in a scrambled order;
                // keys overlap between tasks and repeat inside a batch.
                let updates: Vec<_> = (0..16u64)
                    .map(|i| {
                        let n = (t * BATCHES + b) * 16 + i;
                        let k = scramble(n) % KEYS;
                        update("race", &format!("c{k}"), n as i64, false)
                    })
                    .collect();
                let outcomes = st.set_many(&updates).await;
                reported.push((updates, outcomes));
            }
            reported
        }));
    }
    let mut highest: HashMap<String, (i64, SetOutcome)> = HashMap::new();
    for h in handles {
        for (updates, outcomes) in h.await.unwrap() {
            let outcomes = outcomes.expect("no errors under contention");
            assert_eq!(outcomes.len(), updates.len());
            for (u, o) in updates.iter().zip(outcomes) {
                let best = highest.entry(u.client_id.clone()).or_insert((-1, o));
                if u.clock > best.0 {
                    *best = (u.clock, o);
                }
            }
        }
    }
    for (client, (clock, outcome)) in highest {
        assert_eq!(
            outcome,
            SetOutcome::Applied,
            "{client}: the highest clock applies"
        );
        let entry = s.long.get("race", &client).await.unwrap().expect("present");
        assert_eq!(entry.clock, clock, "{client} ends at its highest clock");
    }
}

common::both_stores!(
    big_batches_match_the_model,
    batches_mix_new_live_and_expired_keys,
    racing_batches_end_at_the_highest_clock,
);
