//! Model check: random operation sequences (sets with equal and lower clocks, leaves, several
//! connections, documents and owners, removals, expiry, and limits of two live participants
//! per document and per connection) run against a reference model written from
//! `docs/contract.md`, the in-memory store and the PostgreSQL store; any difference fails
//! with the shrunk sequence.
//!
//! Expiry is deterministic: the stores run with a 1 s timeout, a sequence between two `Wait`s
//! takes far less than that, and `Wait` sleeps past the timeout, after which the model treats
//! everything written before it as expired.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestDb;
use diesel_async::SimpleAsyncConnection;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::json;
use synckit_awareness::{
    AwarenessEntry, AwarenessStore, AwarenessUpdate, MemoryAwarenessStore, PostgresAwarenessStore,
    PostgresOptions, SetOutcome, StoreOptions,
};

const TIMEOUT: Duration = Duration::from_secs(1);
const PAST_TIMEOUT: Duration = Duration::from_millis(1_150);

#[derive(Debug, Clone)]
enum Op {
    Set {
        doc: u8,
        client: u8,
        conn: u8,
        clock: i64,
        /// `None` = a leave (tombstone).
        value: Option<u8>,
        /// The principal sending it (`None`: unauthenticated).
        owner: Option<u8>,
    },
    Get {
        doc: u8,
        client: u8,
    },
    GetAll {
        doc: u8,
    },
    Remove {
        doc: u8,
        client: u8,
    },
    RemoveAllForConnection {
        conn: u8,
    },
    GetExpired,
    PruneExpired,
    /// Sleep past the timeout: everything stored so far is expired.
    Wait,
}

fn op() -> impl Strategy<Value = Op> {
    let id = 0u8..2;
    prop_oneof![
        12 => (id.clone(), 0u8..3, 0u8..3, 0i64..5, prop::option::weighted(0.75, 0u8..4),
               prop::option::weighted(0.7, 0u8..2))
            .prop_map(|(doc, client, conn, clock, value, owner)| {
                Op::Set { doc, client, conn, clock, value, owner }
            }),
        3 => (id.clone(), 0u8..3).prop_map(|(doc, client)| Op::Get { doc, client }),
        3 => id.clone().prop_map(|doc| Op::GetAll { doc }),
        2 => (id, 0u8..3).prop_map(|(doc, client)| Op::Remove { doc, client }),
        2 => (0u8..3).prop_map(|conn| Op::RemoveAllForConnection { conn }),
        1 => Just(Op::GetExpired),
        1 => Just(Op::PruneExpired),
        1 => Just(Op::Wait),
    ]
}

fn doc(d: u8) -> String {
    format!("d{d}")
}
fn client(c: u8) -> String {
    format!("c{c}")
}
fn conn(k: u8) -> String {
    format!("k{k}")
}
fn owner(o: Option<u8>) -> Option<String> {
    o.map(|o| format!("o{o}"))
}

/// The limits every store of the check runs with: small, so sequences reach them.
const MAX_PER_DOCUMENT: usize = 2;
const MAX_PER_CONNECTION: usize = 2;

fn options() -> StoreOptions {
    StoreOptions::default()
        .with_timeout(TIMEOUT)
        .with_max_clients_per_document(Some(MAX_PER_DOCUMENT as u32))
        .with_max_clients_per_connection(Some(MAX_PER_CONNECTION as u32))
}

/// What an entry looks like from outside, without `last_seen`.
type Seen = (
    String,
    String,
    String,
    i64,
    Option<serde_json::Value>,
    Option<String>,
);

fn seen(e: &AwarenessEntry) -> Seen {
    (
        e.document_id.clone(),
        e.client_id.clone(),
        e.connection_id.clone(),
        e.clock,
        e.state.clone(),
        e.owner.clone(),
    )
}

/// Every result an operation can have, comparable across implementations.
#[derive(Debug, PartialEq)]
enum Outcome {
    Set(SetOutcome),
    Entry(Option<Seen>),
    Entries(Vec<Seen>),
    Removed(bool),
    Count(u64),
    Waited,
}

/// The contract, written directly from docs/contract.md.
#[derive(Default)]
struct Model {
    /// (document, client) -> entry; BTreeMap gives the (document, client) order.
    entries: BTreeMap<(String, String), ModelEntry>,
}

struct ModelEntry {
    conn: String,
    state: Option<serde_json::Value>,
    clock: i64,
    expired: bool,
    owner: Option<String>,
}

impl ModelEntry {
    fn live(&self) -> bool {
        !self.expired && self.state.is_some()
    }
}

impl Model {
    fn seen(key: &(String, String), e: &ModelEntry) -> Seen {
        (
            key.0.clone(),
            key.1.clone(),
            e.conn.clone(),
            e.clock,
            e.state.clone(),
            e.owner.clone(),
        )
    }

    fn apply(&mut self, op: &Op) -> Outcome {
        match op {
            Op::Set {
                doc: d,
                client: c,
                conn: k,
                clock,
                value,
                owner: o,
            } => {
                let key = (doc(*d), client(*c));
                let state = value.map(|v| json!({ "v": v }));
                let owner = owner(*o);
                let fresh = self.entries.get(&key).filter(|e| !e.expired);
                if let Some(e) = fresh {
                    // Ownership first, then rule 1.
                    if e.owner.is_some() && e.owner != owner {
                        return Outcome::Set(SetOutcome::Forbidden);
                    }
                    let wins = *clock > e.clock
                        || (*clock == e.clock && state.is_none() && e.state.is_some());
                    if !wins {
                        return Outcome::Set(SetOutcome::Stale);
                    }
                }
                // Limits: a state for a client without a live entry joins.
                if state.is_some() && !fresh.is_some_and(ModelEntry::live) {
                    let in_document = self
                        .entries
                        .iter()
                        .filter(|(k, e)| k.0 == key.0 && e.live())
                        .count();
                    let on_connection = self
                        .entries
                        .values()
                        .filter(|e| e.conn == conn(*k) && e.live())
                        .count();
                    if in_document >= MAX_PER_DOCUMENT {
                        return Outcome::Set(SetOutcome::DocumentFull);
                    }
                    if on_connection >= MAX_PER_CONNECTION {
                        return Outcome::Set(SetOutcome::ConnectionFull);
                    }
                }
                self.entries.insert(
                    key,
                    ModelEntry {
                        conn: conn(*k),
                        state,
                        clock: *clock,
                        expired: false,
                        owner,
                    },
                );
                Outcome::Set(SetOutcome::Applied)
            }
            // Rule 2: tombstones included, expired absent.
            Op::Get { doc: d, client: c } => Outcome::Entry(
                self.entries
                    .get_key_value(&(doc(*d), client(*c)))
                    .filter(|(_, e)| !e.expired)
                    .map(|(k, e)| Self::seen(k, e)),
            ),
            // Rule 3.
            Op::GetAll { doc: d } => Outcome::Entries(
                self.entries
                    .iter()
                    .filter(|(k, e)| k.0 == doc(*d) && !e.expired && e.state.is_some())
                    .map(|(k, e)| Self::seen(k, e))
                    .collect(),
            ),
            // Rule 4.
            Op::Remove { doc: d, client: c } => {
                Outcome::Removed(self.entries.remove(&(doc(*d), client(*c))).is_some())
            }
            // Rule 5: owned entries go, expired ones are not reported.
            Op::RemoveAllForConnection { conn: k } => {
                let k = conn(*k);
                let mut removed = Vec::new();
                self.entries.retain(|key, e| {
                    if e.conn != k {
                        return true;
                    }
                    if !e.expired {
                        removed.push(Self::seen(key, e));
                    }
                    false
                });
                Outcome::Entries(removed)
            }
            // Rule 6.
            Op::GetExpired => Outcome::Entries(
                self.entries
                    .iter()
                    .filter(|(_, e)| e.expired)
                    .map(|(k, e)| Self::seen(k, e))
                    .collect(),
            ),
            // Rule 7.
            Op::PruneExpired => {
                let before = self.entries.len();
                self.entries.retain(|_, e| !e.expired);
                Outcome::Count((before - self.entries.len()) as u64)
            }
            Op::Wait => {
                for e in self.entries.values_mut() {
                    e.expired = true;
                }
                Outcome::Waited
            }
        }
    }
}

async fn run(store: &dyn AwarenessStore, op: &Op) -> Outcome {
    match op {
        Op::Set {
            doc: d,
            client: c,
            conn: k,
            clock,
            value,
            owner: o,
        } => {
            let update = AwarenessUpdate::new(
                doc(*d),
                client(*c),
                conn(*k),
                *clock,
                value.map(|v| json!({ "v": v })),
            )
            .with_owner(owner(*o));
            Outcome::Set(store.set(&update).await.expect("set"))
        }
        Op::Get { doc: d, client: c } => Outcome::Entry(
            store
                .get(&doc(*d), &client(*c))
                .await
                .expect("get")
                .as_ref()
                .map(seen),
        ),
        Op::GetAll { doc: d } => Outcome::Entries(
            store
                .get_all(&doc(*d))
                .await
                .expect("get_all")
                .iter()
                .map(seen)
                .collect(),
        ),
        Op::Remove { doc: d, client: c } => {
            Outcome::Removed(store.remove(&doc(*d), &client(*c)).await.expect("remove"))
        }
        Op::RemoveAllForConnection { conn: k } => Outcome::Entries(
            store
                .remove_all_for_connection(&conn(*k))
                .await
                .expect("remove_all_for_connection")
                .iter()
                .map(seen)
                .collect(),
        ),
        Op::GetExpired => Outcome::Entries(
            store
                .get_expired()
                .await
                .expect("get_expired")
                .iter()
                .map(seen)
                .collect(),
        ),
        Op::PruneExpired => Outcome::Count(store.prune_expired().await.expect("prune")),
        Op::Wait => Outcome::Waited,
    }
}

/// Runs one sequence on the model and both stores (starting empty), comparing every result.
async fn check(postgres: &PostgresAwarenessStore, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut conn = postgres.pool().get().await.expect("pooled connection");
    conn.batch_execute("DELETE FROM awareness_entries")
        .await
        .expect("empty the table");
    drop(conn);
    let memory = MemoryAwarenessStore::with_options(options());
    let mut model = Model::default();
    let mut segment = Instant::now();
    for (i, op) in ops.iter().enumerate() {
        if let Op::Wait = op {
            tokio::time::sleep(PAST_TIMEOUT).await;
            segment = Instant::now();
        }
        // Expiry is only deterministic while a segment stays well inside the timeout; on a
        // machine so loaded that it does not, the case says nothing and is discarded (proptest
        // fails the run if too many are).
        if segment.elapsed() > TIMEOUT / 2 {
            return Err(TestCaseError::reject(
                "a segment ran too close to the timeout",
            ));
        }
        let want = model.apply(op);
        let from_memory = run(&memory, op).await;
        let from_postgres = run(postgres, op).await;
        prop_assert_eq!(&from_memory, &want, "memory store, op #{} {:?}", i, op);
        prop_assert_eq!(
            &from_postgres,
            &want,
            "PostgreSQL store, op #{} {:?}",
            i,
            op
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_match_the_contract_model() {
    stores_match_the_model(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_match_the_contract_model_without_write_coalescing() {
    stores_match_the_model(false).await;
}

/// Through PgBouncer in transaction mode, the store told so (issue 21).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_match_the_contract_model_through_a_transaction_pooler() {
    run_model(true, true).await;
}

async fn stores_match_the_model(coalesce_writes: bool) {
    run_model(coalesce_writes, false).await;
}

async fn run_model(coalesce_writes: bool, pooler: bool) {
    let db = TestDb::migrated().await;
    let url = if pooler {
        common::pooled_url(&db).await
    } else {
        db.url.clone()
    };
    let postgres = Arc::new(
        PostgresAwarenessStore::connect(
            &url,
            PostgresOptions::default()
                .with_store(options())
                .with_pool_size(2)
                .with_coalesce_writes(coalesce_writes)
                .with_transaction_pooler(pooler),
        )
        .await
        .expect("store"),
    );
    let config = Config {
        cases: 32,
        // Shrinking re-runs sequences (with their sleeps); bound it.
        max_shrink_iters: 200,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let handle = tokio::runtime::Handle::current();
    let result = runner.run(&prop::collection::vec(op(), 1..30), |ops| {
        tokio::task::block_in_place(|| handle.block_on(check(&postgres, &ops)))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
