//! The store across a PostgreSQL failover (issue 29), on a primary and a streaming standby of
//! its own (`tests/support/pg-pair.sh`: initdb, `pg_basebackup -R`), reached through a
//! multi-host URL with `target_session_attrs=read-write`.
//!
//! - A writer keeps writing while the primary is crash-stopped and the standby promoted: it
//!   sees connection errors during the failover (3 s without a primary, longer than its pool's
//!   acquire timeout), then succeeds, and with synchronous replication and
//!   `synchronous_commit` on, nothing it was told was applied is missing on the new primary.
//!   Another instance's change feed delivers its writes again within seconds.
//! - A standby reached directly (a single-host URL) is recognised: the error is
//!   [`Error::ReadOnly`] and says what to do.
//!
//! Needs PostgreSQL's server programs (initdb, pg_ctl, pg_basebackup) and openssl; never skipped.

#[path = "support/pair.rs"]
mod pair;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::json;
use synckit_awareness::{
    AwarenessStore, AwarenessUpdate, ChangeFeedOptions, ChangeFilter, Error, FeedEvent,
    InstanceOptions, PostgresAwarenessStore, PostgresOptions, SetOutcome, StoreOptions,
};

const KEYS: i64 = 40;

async fn store(url: &str, instance: &str) -> PostgresAwarenessStore {
    let store = PostgresAwarenessStore::connect(
        url,
        PostgresOptions::default()
            .with_store(StoreOptions::default().with_timeout(Duration::from_secs(60)))
            .with_pool_size(4)
            .with_acquire_timeout(Duration::from_secs(2))
            .with_synchronous_commit(true)
            .with_validate_on_start(false),
    )
    .await
    .unwrap_or_else(|e| panic!("cannot open the store on the pair: {e}"));
    store.migrate(&[]).await.expect("migrations");
    store
        .start_instance(
            InstanceOptions::default()
                .with_instance_id(instance)
                .with_lease(Duration::from_secs(10)),
        )
        .await
        .expect("instance");
    store
}

fn update(key: i64, clock: i64) -> AwarenessUpdate {
    AwarenessUpdate::new(
        "failover",
        format!("client-{key}"),
        "conn-w",
        clock,
        Some(json!({ "clock": clock })),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_writer_across_a_failover_sees_errors_then_succeeds_and_loses_nothing_applied() {
    let pair = pair::Pair::start("store", true);
    let url = pair.url("");
    let writer = store(&url, "writer").await;
    let reader = store(&url, "reader")
        .await
        .with_change_feed(ChangeFeedOptions::default())
        .expect("feed");
    let writer = writer
        .with_change_feed(ChangeFeedOptions::default().with_publish(true))
        .expect("feed");
    let mut changes = reader
        .subscribe(ChangeFilter::document("failover"))
        .await
        .expect("subscribe");

    // Applied clock per key, as the writer was told.
    let mut applied: HashMap<i64, i64> = HashMap::new();
    let mut errors = Vec::new();
    let mut promoted: Option<Instant> = None;
    let mut first_after: Option<Duration> = None;
    let failover = {
        let pair_dir = pair.dir.clone();
        let ports = pair.ports;
        tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_secs(1));
            let pair = pair::Pair::existing(pair_dir, ports);
            // Longer than the pool's acquire timeout (2 s): writes meanwhile fail.
            let seconds = pair.fail_over(3.0);
            // The new primary waits for a synchronous standby before any commit returns.
            pair.rebuild();
            (seconds, Instant::now())
        })
    };
    let mut failover = Some(failover);
    let mut clock = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut successes_after = 0;
    let mut last_success = Instant::now();
    let mut longest_stall = Duration::ZERO;
    while successes_after < 200 {
        assert!(
            Instant::now() < deadline,
            "the writer did not recover: {errors:?}"
        );
        clock += 1;
        let key = clock % KEYS;
        match writer.set(&update(key, clock)).await {
            Ok(SetOutcome::Applied) => {
                applied.insert(key, clock);
                longest_stall = longest_stall.max(last_success.elapsed());
                last_success = Instant::now();
                if promoted.is_some() {
                    successes_after += 1;
                    first_after
                        .get_or_insert_with(|| promoted.map(|p| p.elapsed()).unwrap_or_default());
                }
            }
            Ok(other) => panic!("clock {clock} of key {key}: {other:?}"),
            Err(error) => {
                assert!(
                    error.is_connection_error(),
                    "a failover is a connection error, not {error:?}"
                );
                errors.push(error.to_string());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        if let Some(task) = failover.as_ref() {
            if task.is_finished() {
                let (seconds, at) = failover.take().expect("task").await.expect("failover ran");
                println!("failover took {seconds:.2} s (3 s of it a pause before the promotion)");
                // Writes after the rebuild count: the promotion was earlier.
                promoted = Some(at);
            }
        }
    }
    println!(
        "{} errors during the failover (first: {:?}); writes stalled {longest_stall:?} at most; \
         first success {first_after:?} after the standby was rebuilt",
        errors.len(),
        errors.first(),
    );
    assert!(!errors.is_empty(), "the writer never noticed the failover");

    // Nothing the writer was told was applied is missing on the new primary.
    for (key, clock) in &applied {
        let entry = reader
            .get("failover", &format!("client-{key}"))
            .await
            .expect("read")
            .unwrap_or_else(|| panic!("client-{key} (applied at clock {clock}) is missing"));
        assert!(
            entry.clock >= *clock,
            "client-{key}: clock {} on the new primary, {clock} was applied",
            entry.clock
        );
    }

    // The reader's feed delivers the writer's changes again.
    let probe = clock + 1;
    writer
        .set(&update(KEYS + 1, probe))
        .await
        .expect("a write after the failover");
    let started = Instant::now();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), changes.next())
            .await
            .expect("the reader's feed delivers within 10 s of a write after the failover")
            .expect("the stream goes on");
        if let FeedEvent::Change(change) = event {
            if change
                .client_ids
                .iter()
                .any(|c| c == &format!("client-{}", KEYS + 1))
            {
                break;
            }
        }
    }
    println!(
        "the reader saw a write after the failover {:?} later",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_reached_directly_is_refused_as_read_only() {
    let pair = pair::Pair::start("standby", false);
    let result = async {
        let store = PostgresAwarenessStore::connect(
            &pair.standby_url(),
            PostgresOptions::default()
                .with_pool_size(1)
                .with_acquire_timeout(Duration::from_secs(2))
                .with_validate_on_start(false),
        )
        .await?;
        store.set(&update(1, 1)).await
    }
    .await;
    match result {
        Err(error @ Error::ReadOnly(_)) => {
            let text = error.to_string();
            assert!(text.contains("target_session_attrs=read-write"), "{text}");
            assert!(text.contains("a standby in recovery"), "{text}");
            assert!(error.is_connection_error());
        }
        other => panic!("expected Error::ReadOnly, got {other:?}"),
    }
}
