//! Every write path under contention, mixed: no call fails (no deadlock reaches a caller), and
//! every key ends at its highest clock. On PostgreSQL each path takes its row locks in key
//! order (docs/ARCHITECTURE.md, "Row locks in one order"); a deadlock or serialization
//! failure that still happens is retried by the store and counted
//! (`synckit_awareness_write_retries_total`).
//!
//! Issue 25's workload: 16 tasks on 20 keys of one document, 12 sending `set_many` batches of
//! 1 to 16 updates of random keys (a batch may repeat a key), 4 sending single `set`s, 40
//! calls each, clocks rising. Then the paths that delete many rows at once: a connection's
//! entries removed while it writes them, and expired entries pruned while a writer revives
//! them. Run on every store, with write coalescing on and off.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::Stores;
use serde_json::json;
use synckit_awareness::{AwarenessUpdate, SetOutcome};

const KEYS: u64 = 20;
const BATCH_TASKS: u64 = 12;
const SET_TASKS: u64 = 4;
const CALLS: u64 = 40;

/// A deterministic scramble (no extra dependency): the n-th value of a 64-bit LCG.
fn scramble(n: u64) -> u64 {
    n.wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        >> 33
}

fn update(doc: &str, client: &str, connection: &str, clock: i64) -> AwarenessUpdate {
    AwarenessUpdate::new(
        doc,
        client,
        connection,
        clock,
        Some(json!({ "cursor": clock, "name": client })),
    )
}

/// What one caller sent and was told.
type Calls = Vec<(Vec<AwarenessUpdate>, Vec<SetOutcome>)>;

async fn writes_race_without_failing_and_end_at_the_highest_clock(s: Stores) {
    // Clocks rise across every task: each update gets a clock no other update has.
    let clock = Arc::new(AtomicI64::new(1));
    let mut writers = Vec::new();
    for t in 0..BATCH_TASKS + SET_TASKS {
        let store = s.long.clone();
        let clock = clock.clone();
        writers.push(tokio::spawn(async move {
            let mut calls: Calls = Vec::new();
            for call in 0..CALLS {
                let seed = t * 1_000 + call;
                let len = if t < BATCH_TASKS {
                    1 + scramble(seed) % 16
                } else {
                    1
                };
                let updates: Vec<AwarenessUpdate> = (0..len)
                    .map(|i| {
                        let key = scramble(seed * 31 + i) % KEYS;
                        let clock = clock.fetch_add(1, Ordering::Relaxed);
                        update("contended", &format!("c{key}"), &format!("conn{t}"), clock)
                    })
                    .collect();
                let outcomes = if t < BATCH_TASKS {
                    store.set_many(&updates).await
                } else {
                    store.set(&updates[0]).await.map(|outcome| vec![outcome])
                };
                match outcomes {
                    Ok(outcomes) => calls.push((updates, outcomes)),
                    Err(e) => panic!("task {t}, call {call}: {e}"),
                }
            }
            calls
        }));
    }

    let mut highest: HashMap<String, (i64, SetOutcome)> = HashMap::new();
    for writer in writers {
        for (updates, outcomes) in writer.await.expect("a writer panicked") {
            assert_eq!(outcomes.len(), updates.len());
            for (u, outcome) in updates.iter().zip(outcomes) {
                let best = highest.entry(u.client_id.clone()).or_insert((-1, outcome));
                if u.clock > best.0 {
                    *best = (u.clock, outcome);
                }
            }
        }
    }
    assert_eq!(highest.len() as u64, KEYS, "every key was written");
    for (client, (clock, outcome)) in highest {
        assert_eq!(
            outcome,
            SetOutcome::Applied,
            "{client}: its highest clock applies"
        );
        let entry = s
            .long
            .get("contended", &client)
            .await
            .expect("read back")
            .expect("present");
        assert_eq!(entry.clock, clock, "{client} ends at its highest clock");
    }
}

/// The paths that delete many rows at once, racing with writers of the same rows (a database
/// of their own: pruning takes every expired entry of the table): two tasks write a
/// connection's keys in batches (both directions of input order) while another removes that
/// connection's entries; one writer revives keys that a 1 ms view keeps pruning.
async fn deletes_race_with_writes_without_failing(s: Stores) {
    for task in spawn_delete_mix(&s) {
        task.await.expect("a task failed");
    }
    // Everything the last writes left is still there to be removed or pruned, once.
    let removed = s
        .long
        .remove_all_for_connection("leaving")
        .await
        .expect("remove");
    assert!(removed.len() <= 8);
    assert_eq!(
        s.long
            .remove_all_for_connection("leaving")
            .await
            .expect("remove"),
        vec![]
    );
    assert!(s.long.get_all("churn").await.expect("read").is_empty());
}

fn spawn_delete_mix(s: &Stores) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let clock = Arc::new(AtomicI64::new(1));
    for t in 0..2u64 {
        let store = s.long.clone();
        let clock = clock.clone();
        tasks.push(tokio::spawn(async move {
            for call in 0..CALLS {
                let mut updates: Vec<AwarenessUpdate> = (0..8u64)
                    .map(|k| {
                        let clock = clock.fetch_add(1, Ordering::Relaxed);
                        update("churn", &format!("r{k}"), "leaving", clock)
                    })
                    .collect();
                if (t + call) % 2 == 1 {
                    updates.reverse();
                }
                if let Err(e) = store.set_many(&updates).await {
                    panic!("churn writer {t}, call {call}: {e}");
                }
            }
        }));
    }
    let store = s.long.clone();
    tasks.push(tokio::spawn(async move {
        for call in 0..CALLS {
            if let Err(e) = store.remove_all_for_connection("leaving").await {
                panic!("remove_all_for_connection, call {call}: {e}");
            }
            tokio::task::yield_now().await;
        }
    }));
    // Entries this view sees as expired the moment they are written (a 1 ms timeout), pruned
    // while the long view's writer keeps writing them.
    let pruning = s.with_options(common::options(Duration::from_millis(1)));
    let store = s.long.clone();
    tasks.push(tokio::spawn(async move {
        for call in 0..CALLS {
            let updates: Vec<AwarenessUpdate> = (0..8u64)
                .map(|k| update("pruned", &format!("p{k}"), "pruned", call as i64 + 1))
                .collect();
            if let Err(e) = store.set_many(&updates).await {
                panic!("pruned writer, call {call}: {e}");
            }
        }
    }));
    tasks.push(tokio::spawn(async move {
        for call in 0..CALLS {
            if let Err(e) = pruning.take_expired().await {
                panic!("take_expired, call {call}: {e}");
            }
            if let Err(e) = pruning.prune_expired().await {
                panic!("prune_expired, call {call}: {e}");
            }
        }
    }));
    tasks
}

common::both_stores!(
    writes_race_without_failing_and_end_at_the_highest_clock,
    deletes_race_with_writes_without_failing,
);
