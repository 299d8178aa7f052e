//! Instances and their leases (PostgreSQL): a crashed instance's entries are removed by
//! another instance's pruner within its lease, each reported exactly once however many pruners
//! race; a graceful shutdown removes its own at once; an instance cut off for longer than its
//! lease writes nothing until it has registered again.
//!
//! The crash is real: `crashing_instance` runs this test binary again as a child process
//! that starts an instance, writes entries and waits, and the test kills it with SIGKILL.

mod common;

#[path = "support/roles.rs"]
mod roles;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestDb;
use serde_json::json;
use synckit_awareness::{
    AwarenessEntry, AwarenessStore, AwarenessUpdate, Error, InstanceOptions,
    PostgresAwarenessStore, PostgresOptions, Pruner, SetOutcome,
};

/// The child's environment variable carrying the database URL.
const CHILD_URL: &str = "SYNCKIT_INSTANCE_CHILD_URL";
const CHILD_ENTRIES: usize = 24;
const LEASE: Duration = Duration::from_millis(1500);
const PRUNE_EVERY: Duration = Duration::from_millis(200);

fn options() -> PostgresOptions {
    PostgresOptions::default()
        .with_timeout(common::LONG)
        .with_pool_size(4)
}

fn update(doc: &str, client: &str, conn: &str, clock: i64) -> AwarenessUpdate {
    AwarenessUpdate::new(doc, client, conn, clock, Some(json!({ "clock": clock })))
}

async fn instances(db: &TestDb) -> i64 {
    db.scalar("SELECT count(*) AS n FROM awareness_instances")
        .await
}

/// Not a test on its own: the child process of
/// `a_crashed_instance_is_removed_by_the_others_exactly_once`. Ignored unless that test runs
/// it with the database URL in its environment.
#[tokio::test]
#[ignore = "run by a_crashed_instance_is_removed_by_the_others_exactly_once as a child process"]
async fn crashing_instance() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let store = PostgresAwarenessStore::connect(&url, options())
        .await
        .expect("child store");
    store
        .start_instance(
            InstanceOptions::default()
                .with_instance_id("crashing")
                .with_lease(LEASE),
        )
        .await
        .expect("child instance");
    for i in 0..CHILD_ENTRIES {
        let doc = format!("doc{}", i % 3);
        let outcome = store
            .set(&update(&doc, &format!("c{i:02}"), &format!("k{i}"), 1))
            .await
            .expect("child set");
        assert_eq!(outcome, SetOutcome::Applied);
    }
    println!("READY");
    // Killed here.
    tokio::time::sleep(Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashed_instance_is_removed_by_the_others_exactly_once() {
    let db = TestDb::migrated().await;
    // Another instance's entry and an instance-less one: neither may be touched.
    let survivor = db.store(common::options(common::LONG)).await;
    survivor
        .start_instance(InstanceOptions::default().with_lease(LEASE))
        .await
        .unwrap();
    survivor
        .set(&update("doc0", "survivor", "s", 1))
        .await
        .unwrap();
    let plain = db.store(common::options(common::LONG)).await;
    plain.set(&update("doc0", "plain", "p", 1)).await.unwrap();

    let mut child = common::ready_child("crashing_instance", &[(CHILD_URL, &db.url)]).await;
    assert_eq!(instances(&db).await, 2);

    child.kill().expect("SIGKILL the child");
    let killed = Instant::now();
    child.wait().expect("reap the child");

    // Three pruners on three pools race for the dead instance's entries.
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let store = db.store(common::options(common::LONG)).await;
        rounds.push(tokio::spawn(async move {
            let mut taken: Vec<(AwarenessEntry, Duration)> = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                let departed = store.take_departed().await.expect("take_departed");
                assert!(departed.expired.is_empty(), "nothing is expired here");
                taken.extend(
                    departed
                        .abandoned
                        .into_iter()
                        .map(|e| (e, Instant::now() - killed)),
                );
                if store.get_all("doc1").await.unwrap().is_empty()
                    && store.get_all("doc2").await.unwrap().is_empty()
                    && store.get("doc0", "c00").await.unwrap().is_none()
                {
                    break;
                }
                tokio::time::sleep(PRUNE_EVERY).await;
            }
            taken
        }));
    }
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut last = Duration::ZERO;
    for round in rounds {
        for (entry, at) in round.await.unwrap() {
            assert_eq!(entry.instance_id.as_deref(), Some("crashing"));
            *seen
                .entry((entry.document_id, entry.client_id))
                .or_default() += 1;
            last = last.max(at);
        }
    }
    assert_eq!(
        seen.len(),
        CHILD_ENTRIES,
        "every entry of the dead instance"
    );
    assert!(
        seen.values().all(|&n| n == 1),
        "each entry reported by exactly one pruner: {seen:?}"
    );
    println!(
        "crash to cleanup: {:.2} s (lease {:.1} s, prune period {:.1} s)",
        last.as_secs_f64(),
        LEASE.as_secs_f64(),
        PRUNE_EVERY.as_secs_f64()
    );
    // Gone well before the 60 s awareness timeout: within the lease and a few prune periods
    // (generous slack for a loaded machine).
    assert!(last < LEASE + Duration::from_secs(8), "took {last:?}");
    // The survivors are untouched, and the dead lease row is gone.
    let left: Vec<String> = plain
        .get_all("doc0")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.client_id)
        .collect();
    assert_eq!(left, ["plain", "survivor"]);
    assert_eq!(instances(&db).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pruner_reports_a_dead_instances_entries() {
    let db = TestDb::migrated().await;
    let dying = db.store(common::options(common::LONG)).await;
    dying
        .start_instance(InstanceOptions::default().with_lease(LEASE))
        .await
        .unwrap();
    for client in ["a", "b", "c"] {
        dying.set(&update("d", client, "k", 1)).await.unwrap();
    }
    // Dropping every handle stops the renewals: the lease lapses as after a crash.
    drop(dying);
    let watcher: Arc<dyn AwarenessStore> = Arc::new(db.store(common::options(common::LONG)).await);
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let pruner = Pruner::spawn(watcher.clone(), PRUNE_EVERY, move |entry| {
        let _ = sender.send(entry);
    });
    let mut reported = Vec::new();
    while reported.len() < 3 {
        let entry = tokio::time::timeout(Duration::from_secs(15), receiver.recv())
            .await
            .expect("the pruner reports the dead instance's entries")
            .expect("pruner alive");
        reported.push(entry.client_id.clone());
        // The leave a server broadcasts can be written back as the entry's owner.
        assert_eq!(entry.leave_update().clock, 2);
    }
    reported.sort();
    assert_eq!(reported, ["a", "b", "c"]);
    assert!(watcher.get_all("d").await.unwrap().is_empty());
    pruner.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_removes_its_own_entries_and_lease_at_once() {
    let db = TestDb::migrated().await;
    let leaving = db.store(common::options(common::LONG)).await;
    leaving
        .start_instance(InstanceOptions::default().with_instance_id("leaving"))
        .await
        .unwrap();
    assert_eq!(leaving.instance_id(), Some("leaving"));
    assert!(leaving.holds_lease());
    let staying = db.store(common::options(common::LONG)).await;
    staying
        .start_instance(InstanceOptions::default().with_instance_id("staying"))
        .await
        .unwrap();
    for client in ["b", "a", "c"] {
        leaving.set(&update("d", client, "k1", 1)).await.unwrap();
    }
    staying.set(&update("d", "s", "k2", 1)).await.unwrap();
    // An entry the leaving instance wrote last and another instance then took over is no
    // longer the leaving instance's.
    staying.set(&update("d", "c", "k2", 2)).await.unwrap();
    let entry = staying.get("d", "s").await.unwrap().unwrap();
    assert_eq!(entry.instance_id.as_deref(), Some("staying"));

    let removed = leaving.shutdown().await.unwrap();
    let clients: Vec<&str> = removed.iter().map(|e| e.client_id.as_str()).collect();
    assert_eq!(clients, ["a", "b"]);
    assert_eq!(instances(&db).await, 1);
    let left: Vec<String> = staying
        .get_all("d")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.client_id)
        .collect();
    assert_eq!(left, ["c", "s"]);
    // A stopped instance writes nothing.
    assert!(!leaving.holds_lease());
    assert!(matches!(
        leaving.set(&update("d", "z", "k1", 1)).await,
        Err(Error::LeaseLost { ref instance_id, .. }) if instance_id == "leaving"
    ));
    assert!(leaving.get("d", "z").await.unwrap().is_none());
    // Starting twice is refused.
    assert!(matches!(
        staying.start_instance(InstanceOptions::default()).await,
        Err(Error::Config(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_cut_off_longer_than_its_lease_writes_nothing_until_it_registers_again() {
    let db = TestDb::migrated().await;
    let role = roles::AppRole::create(&db).await;
    let cut_off = PostgresAwarenessStore::connect(
        &role.url,
        options()
            .with_pool_size(2)
            .with_acquire_timeout(Duration::from_millis(300)),
    )
    .await
    .expect("store as the app role");
    cut_off
        .start_instance(
            InstanceOptions::default()
                .with_instance_id("cut-off")
                .with_lease(Duration::from_millis(1200)),
        )
        .await
        .unwrap();
    cut_off.set(&update("d", "a", "k", 1)).await.unwrap();

    // The network partition: the instance's role may no longer log in, its sessions end.
    db.exec(&format!(
        "ALTER ROLE {0} NOLOGIN; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{0}'",
        role.name
    ))
    .await;
    let cut = Instant::now();
    let other = db.store(common::options(common::LONG)).await;
    // Once its lease lapsed, another instance's pruner takes the entry over...
    let taken = loop {
        let departed = other.take_departed().await.unwrap();
        if !departed.abandoned.is_empty() {
            break departed.abandoned;
        }
        assert!(cut.elapsed() < Duration::from_secs(15), "never taken over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(taken.len(), 1);
    // ...and the instance itself refuses to write (before trying the database): its lease is
    // not known to be valid.
    while cut.elapsed() < Duration::from_millis(1300) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!cut_off.holds_lease());
    assert!(matches!(
        cut_off.set(&update("d", "a", "k", 2)).await,
        Err(Error::LeaseLost { .. })
    ));
    assert_eq!(cut_off.lease_takeovers(), 0);

    // The partition heals: the next renewal registers again and reports the take-over.
    db.exec(&format!("ALTER ROLE {} LOGIN", role.name)).await;
    let healed = Instant::now();
    while !cut_off.holds_lease() {
        assert!(
            healed.elapsed() < Duration::from_secs(15),
            "never registered again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(cut_off.lease_takeovers(), 1);
    assert_eq!(
        cut_off.set(&update("d", "a", "k", 3)).await.unwrap(),
        SetOutcome::Applied
    );
    let entry = other.get("d", "a").await.unwrap().unwrap();
    assert_eq!(
        (entry.clock, entry.instance_id.as_deref()),
        (3, Some("cut-off"))
    );
    // Registered again, its entries are its own: the next round leaves them alone.
    let departed = other.take_departed().await.unwrap();
    assert!(departed.is_empty());
}

#[tokio::test]
async fn bad_instance_options_are_refused() {
    let db = TestDb::migrated().await;
    let store = db.store(common::options(common::LONG)).await;
    assert!(matches!(
        store
            .start_instance(InstanceOptions::default().with_instance_id(""))
            .await,
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        store
            .start_instance(
                InstanceOptions::default()
                    .with_lease(Duration::from_secs(3))
                    .with_renew_every(Duration::from_secs(3))
            )
            .await,
        Err(Error::Config(_))
    ));
    assert_eq!(store.instance_id(), None);
    assert_eq!(instances(&db).await, 0);
}
