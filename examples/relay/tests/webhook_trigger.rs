//! The webhooks' trigger under concurrent writers (issue 39): six writers on two stores (two
//! pools) join, move, leave, remove connections and write batches across four rooms at once,
//! with an endpoint registered. Every statement then also takes the rooms' advisory locks
//! (`relay_webhook_record`), so this is the race test of that lock order: no deadlock is
//! reported by PostgreSQL, every participant's recorded events alternate joined / left starting
//! with a join and end as its entry ends (live: joined), and each room's last event carries the
//! room's final count. Real PostgreSQL (tests/common).
#[path = "../../../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use serde_json::json;
use synckit_awareness::{AwarenessStore, AwarenessUpdate, StoreOptions};

const ROOMS: u64 = 4;
const CLIENTS: u64 = 8;
const WRITERS: u64 = 6;
const OPS: u64 = 300;

/// xorshift64: the writers' choices, repeatable per seed.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

#[derive(QueryableByName, Debug)]
struct Event {
    #[diesel(sql_type = Text)]
    room: String,
    #[diesel(sql_type = Text)]
    client: String,
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = BigInt)]
    count: i64,
}

#[derive(QueryableByName, Debug)]
struct Live {
    #[diesel(sql_type = Text)]
    room: String,
    #[diesel(sql_type = Text)]
    client: String,
}

async fn write(store: Arc<dyn AwarenessStore>, seed: u64, clock: Arc<AtomicI64>) {
    let mut dice = Dice(seed);
    let connection = format!("conn-{seed}");
    let update = |dice: &mut Dice, clock: &AtomicI64| {
        let room = format!("room-{}", dice.roll(ROOMS));
        let client = format!("{}", dice.roll(CLIENTS));
        let tick = clock.fetch_add(1, Ordering::SeqCst);
        let state = (dice.roll(3) > 0).then(|| json!({ "n": tick }));
        AwarenessUpdate::new(room, client, connection.clone(), tick, state)
    };
    for _ in 0..OPS {
        let result = match dice.roll(10) {
            0..=4 => store.set(&update(&mut dice, &clock)).await.map(drop),
            5..=7 => {
                let batch: Vec<_> = (0..3).map(|_| update(&mut dice, &clock)).collect();
                store.set_many(&batch).await.map(drop)
            }
            8 => store.remove_all_for_connection(&connection).await.map(drop),
            _ => {
                let room = format!("room-{}", dice.roll(ROOMS));
                let client = format!("{}", dice.roll(CLIENTS));
                store.remove(&room, &client).await.map(drop)
            }
        };
        result.unwrap_or_else(|e| panic!("writer {seed}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn joins_and_leaves_are_recorded_once_in_order_without_deadlock() {
    let db = common::TestDb::migrated().await;
    synckit_awareness::run_migrations_at(&db.url, &[&synckit_relay::documents::MIGRATIONS])
        .await
        .expect("the relay's migrations");
    db.exec("INSERT INTO relay_webhook_endpoints (url, entry_timeout) VALUES ('http://receiver.test/', interval '1 hour')")
        .await;
    let deadlocks =
        "SELECT deadlocks AS n FROM pg_stat_database WHERE datname = current_database()";
    let deadlocks_before = db.scalar(deadlocks).await;
    let stores: Vec<Arc<dyn AwarenessStore>> = vec![
        Arc::new(db.store(StoreOptions::default()).await),
        Arc::new(db.store(StoreOptions::default()).await),
    ];
    let clock = Arc::new(AtomicI64::new(1));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = stores[usize::try_from(w % 2).expect("small")].clone();
            tokio::spawn(write(store, 0x9e37_79b9_7f4a_7c15 ^ (w + 1), clock.clone()))
        })
        .collect();
    for writer in writers {
        writer.await.expect("a writer");
    }
    assert_eq!(
        db.scalar(deadlocks).await,
        deadlocks_before,
        "PostgreSQL reported a deadlock between writers"
    );

    let mut conn = db.conn().await;
    let events: Vec<Event> = diesel::sql_query(
        "SELECT document_id AS room, payload->'data'->>'clientId' AS client, payload->>'type' AS kind, \
         (payload->'data'->>'count')::bigint AS count FROM relay_webhook_deliveries ORDER BY id",
    )
    .load(&mut conn)
    .await
    .expect("the recorded events");
    let live: Vec<Live> = diesel::sql_query(
        "SELECT document_id AS room, client_id AS client FROM awareness_entries WHERE state IS NOT NULL",
    )
    .load(&mut conn)
    .await
    .expect("the live entries");
    assert!(
        events.len() > 200,
        "too few events to say anything: {}",
        events.len()
    );

    // Per participant: joined, left, joined, … and its last event says how it ended.
    let mut last: BTreeMap<(String, String), &str> = BTreeMap::new();
    for event in &events {
        let key = (event.room.clone(), event.client.clone());
        let before = last.get(&key).copied().unwrap_or("presence.left");
        assert_ne!(
            before, event.kind,
            "{key:?}: two {} events in a row (events of a room out of order, or recorded twice)",
            event.kind
        );
        last.insert(key, event.kind.as_str());
    }
    for (key, kind) in &last {
        let is_live = live
            .iter()
            .any(|l| (&l.room, &l.client) == (&key.0, &key.1));
        assert_eq!(
            *kind == "presence.joined",
            is_live,
            "{key:?}: last event {kind} but live = {is_live}"
        );
    }
    // Each room's last event carries its final count.
    for room in (0..ROOMS).map(|r| format!("room-{r}")) {
        let final_count = live.iter().filter(|l| l.room == room).count();
        if let Some(event) = events.iter().rev().find(|e| e.room == room) {
            assert_eq!(
                usize::try_from(event.count).expect("a count"),
                final_count,
                "{room}: the last event's count"
            );
        }
    }
    println!(
        "{} events recorded by {WRITERS} writers x {OPS} operations; {} participants live at the end",
        events.len(),
        live.len()
    );
}
