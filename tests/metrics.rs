//! Metrics through the `metrics` facade: with a recorder installed, every store operation is
//! counted with its outcome and timed, refused updates are counted by reason, the pool and the
//! pruner report; docs/metrics.md lists every metric name the crate records.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde_json::json;
use synckit_awareness::{
    AwarenessStore, AwarenessUpdate, MemoryAwarenessStore, Pruner, StoreOptions,
};

/// (name, sorted labels) -> value.
type Seen = HashMap<(String, Vec<(String, String)>), DebugValue>;

fn snapshot(snapshotter: &Snapshotter) -> Seen {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let (_, key) = key.into_parts();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            ((key.name().to_owned(), labels), value)
        })
        .collect()
}

fn counter(seen: &Seen, name: &str, labels: &[(&str, &str)]) -> u64 {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    match seen.get(&(name.to_owned(), labels)) {
        Some(DebugValue::Counter(n)) => *n,
        _ => 0,
    }
}

fn has(seen: &Seen, name: &str) -> bool {
    seen.keys().any(|(n, _)| n == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_outcomes_pool_and_pruning_are_recorded() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");
    use synckit_awareness::metrics as m;

    // In memory: outcomes of sets, by reason.
    let memory = MemoryAwarenessStore::with_options(
        StoreOptions::default().with_max_clients_per_document(Some(1)),
    );
    let owned = AwarenessUpdate::new("d", "c", "k", 1, Some(json!(1))).with_owner(Some("a".into()));
    memory.set(&owned).await.unwrap();
    memory.set(&owned).await.unwrap(); // stale
    let spoof =
        AwarenessUpdate::new("d", "c", "k2", 5, Some(json!(2))).with_owner(Some("b".into()));
    let full = AwarenessUpdate::new("d", "other", "k2", 1, Some(json!(3)));
    memory.set_many(&[spoof, full]).await.unwrap();
    memory.get_all("d").await.unwrap();
    let seen = snapshot(&snapshotter);
    let ops = |op: &str, outcome: &str| {
        counter(
            &seen,
            m::OPERATIONS,
            &[("operation", op), ("store", "memory"), ("outcome", outcome)],
        )
    };
    assert_eq!(ops("set", "applied"), 1);
    assert_eq!(ops("set", "stale"), 1);
    assert_eq!(ops("set_many", "ok"), 1);
    assert_eq!(ops("get_all", "ok"), 1);
    let updates = |outcome: &str| {
        counter(
            &seen,
            m::UPDATES,
            &[("store", "memory"), ("outcome", outcome)],
        )
    };
    assert_eq!(updates("applied"), 1);
    assert_eq!(updates("stale"), 1);
    assert_eq!(updates("forbidden"), 1);
    assert_eq!(updates("document_full"), 1);
    assert!(matches!(
        seen.get(&(
            m::OPERATION_DURATION.to_owned(),
            vec![
                ("operation".to_owned(), "set".to_owned()),
                ("store".to_owned(), "memory".to_owned())
            ]
        )),
        Some(DebugValue::Histogram(samples)) if samples.len() == 2
    ));

    // On PostgreSQL: the pool, the pruner and a lapsed instance's take-over.
    let db = common::TestDb::migrated().await;
    let dying = db.store(common::options(common::LONG)).await;
    dying
        .start_instance(
            synckit_awareness::InstanceOptions::default().with_lease(Duration::from_millis(900)),
        )
        .await
        .unwrap();
    dying
        .set(&AwarenessUpdate::new("d", "x", "k", 1, Some(json!(1))))
        .await
        .unwrap();
    drop(dying);
    let watcher: Arc<dyn AwarenessStore> = Arc::new(db.store(common::options(common::LONG)).await);
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let pruner = Pruner::spawn(watcher, Duration::from_millis(100), move |entry| {
        let _ = sender.send(entry);
    });
    tokio::time::timeout(Duration::from_secs(15), receiver.recv())
        .await
        .expect("taken over")
        .expect("pruner alive");
    pruner.shutdown().await;
    let seen = snapshot(&snapshotter);
    assert_eq!(counter(&seen, m::PRUNED, &[("reason", "abandoned")]), 1);
    assert_eq!(counter(&seen, m::LEASE_TAKEOVERS, &[("side", "taken")]), 1);
    assert!(counter(&seen, m::LEASE_RENEWALS, &[("result", "ok")]) >= 1);
    assert!(
        counter(
            &seen,
            m::OPERATIONS,
            &[
                ("operation", "take_departed"),
                ("store", "postgres"),
                ("outcome", "ok")
            ]
        ) >= 1
    );
    for name in [m::POOL_WAIT, m::POOL_CONNECTIONS, m::POOL_IDLE] {
        assert!(has(&seen, name), "{name} recorded");
    }
}

/// docs/metrics.md names every metric, and nothing else by that prefix.
#[test]
fn the_metrics_guide_lists_every_metric() {
    let readme = include_str!("../docs/metrics.md");
    for name in synckit_awareness::metrics::ALL {
        assert!(
            readme.contains(&format!("`{name}`")),
            "docs/metrics.md lists {name}"
        );
    }
    let listed = readme
        .split('`')
        .filter(|word| word.starts_with("synckit_awareness_") && !word.contains(' '))
        .filter(|word| !synckit_awareness::metrics::ALL.contains(word))
        .collect::<Vec<_>>();
    assert!(
        listed.is_empty(),
        "docs/metrics.md names unknown metrics: {listed:?}"
    );
}
