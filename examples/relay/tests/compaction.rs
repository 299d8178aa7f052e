//! Test 4 of the documents (issue 20): compaction while instances append. Random update streams
//! from several writers go to PostgreSQL through two stores (two pools: two instances), while
//! compaction runs at random points and a second instance's room catches up now and then; the
//! document read back (snapshot + rows), the one a fresh room loads, and the one the catching-up
//! room holds all equal the document built from every update. Real PostgreSQL (tests/common).

#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "support/documents.rs"]
mod documents;

use documents::fixture;

use std::sync::{Arc, Mutex};

use proptest::prelude::*;
use synckit_relay::documents::{fold, DocumentOptions, DocumentStore, Documents};
use yrs::updates::decoder::Decode;
use yrs::{GetString, ReadTxn, Text, Transact, Update};

#[derive(Debug, Clone)]
enum Op {
    /// Insert `text` at `at` (a fraction of the length, /255).
    Insert { at: u8, text: String },
    /// Delete up to `len` characters from `at` (/255).
    Delete { at: u8, len: u8 },
    /// Apply every update the other writers made so far (so edits interleave).
    Sync,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u8>(), "[a-z]{1,6}").prop_map(|(at, text)| Op::Insert { at, text }),
        2 => (any::<u8>(), 1u8..8).prop_map(|(at, len)| Op::Delete { at, len }),
        1 => Just(Op::Sync),
    ]
}

/// Every update in the order they were made, shared by the writers.
type Log = Arc<Mutex<Vec<Vec<u8>>>>;

fn text_of(doc: &yrs::Doc) -> String {
    let text = doc.get_or_insert_text("t");
    let txn = doc.transact();
    text.get_string(&txn)
}

fn doc_of<'a>(updates: impl IntoIterator<Item = &'a [u8]>) -> yrs::Doc {
    let doc = yrs::Doc::new();
    {
        let mut txn = doc.transact_mut();
        for bytes in updates {
            let update = Update::decode_v1(bytes).expect("an update the test made decodes");
            txn.apply_update(update)
                .expect("an update the test made applies");
        }
    }
    doc
}

async fn writer(store: DocumentStore, document: String, ops: Vec<Op>, log: Log) {
    let doc = yrs::Doc::new();
    let text = doc.get_or_insert_text("t");
    let mut seen = 0;
    for op in ops {
        let update = {
            let mut txn = doc.transact_mut();
            match &op {
                Op::Insert { at, text: chunk } => {
                    let len = text.len(&txn);
                    text.insert(&mut txn, len * u32::from(*at) / 255, chunk);
                }
                Op::Delete { at, len } => {
                    let size = text.len(&txn);
                    let from = size * u32::from(*at) / 255;
                    let n = u32::from(*len).min(size - from);
                    if n > 0 {
                        text.remove_range(&mut txn, from, n);
                    }
                }
                Op::Sync => {
                    let others: Vec<Vec<u8>> = log.lock().expect("log")[seen..].to_vec();
                    seen += others.len();
                    for bytes in others {
                        let update = Update::decode_v1(&bytes).expect("decode");
                        txn.apply_update(update).expect("apply");
                    }
                }
            }
            txn.encode_update_v1()
        };
        if matches!(op, Op::Sync) {
            continue;
        }
        store.append(&document, &[&update]).await.expect("append");
        log.lock().expect("log").push(update);
        tokio::task::yield_now().await;
    }
}

struct Case {
    writers: Vec<Vec<Op>>,
    /// After how many appended updates (roughly) each compaction runs.
    compactions: Vec<u8>,
    /// After how many updates the other instance's room catches up.
    catch_ups: Vec<u8>,
}

async fn run(stores: &[DocumentStore; 2], case: Case, n: usize) {
    let document = format!("prop-{n}");
    let log: Log = Arc::default();
    // The second instance has the room open from the start and catches up at random points.
    let other = Documents::on_postgres(stores[1].clone(), DocumentOptions::default());
    let room = other.open(&document).await.expect("open the room");

    let mut tasks = Vec::new();
    for (i, ops) in case.writers.into_iter().enumerate() {
        tasks.push(tokio::spawn(writer(
            stores[i % 2].clone(),
            document.clone(),
            ops,
            log.clone(),
        )));
    }
    let compactor = {
        let (store, document, log) = (stores[0].clone(), document.clone(), log.clone());
        let mut points = case.compactions;
        points.sort_unstable();
        tokio::spawn(async move {
            for point in points {
                while log.lock().expect("log").len() < usize::from(point) / 4 {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                store.compact(&document).await.expect("compact");
            }
        })
    };
    let catcher = {
        let (room, log) = (room.clone(), log.clone());
        let mut points = case.catch_ups;
        points.sort_unstable();
        tokio::spawn(async move {
            for point in points {
                while log.lock().expect("log").len() < usize::from(point) / 4 {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
                room.catch_up().await.expect("catch up");
            }
        })
    };
    for task in tasks {
        task.await.expect("writer");
    }
    // A point past the last update would wait forever: stop waiting.
    compactor.abort();
    let _ = compactor.await;
    catcher.abort();
    let _ = catcher.await;
    // One last compaction racing nothing, then the final reads.
    stores[0].compact(&document).await.expect("compact");

    let all = log.lock().expect("log").clone();
    let expected = doc_of(all.iter().map(Vec::as_slice));
    let expected_text = text_of(&expected);

    let stored = stores[1].read_after(&document, 0).await.expect("read");
    assert!(
        stored.iter().filter(|u| u.snapshot).count() <= 1,
        "at most one snapshot"
    );
    let folded = doc_of([fold(stored.iter().map(|u| u.bytes.as_slice())).as_slice()]);
    assert_eq!(
        text_of(&folded),
        expected_text,
        "the stored document lost or changed edits"
    );
    assert_eq!(
        folded.transact().state_vector(),
        expected.transact().state_vector(),
        "the stored document's state vector differs"
    );

    room.catch_up().await.expect("catch up");
    assert_eq!(
        room.text("t"),
        expected_text,
        "the catching-up room differs"
    );

    let fresh = Documents::on_postgres(stores[0].clone(), DocumentOptions::default());
    let loaded = fresh.open(&document).await.expect("open");
    assert_eq!(loaded.text("t"), expected_text, "a fresh load differs");
    fresh.release(&loaded);
    other.release(&room);

    let stats = stores[0].stats(&document).await.expect("stats");
    assert_eq!(stats.rows, 0, "the last compaction folded every row");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn compaction_while_instances_append_loses_nothing(
        writers in proptest::collection::vec(proptest::collection::vec(op(), 1..40), 2..5),
        compactions in proptest::collection::vec(any::<u8>(), 1..6),
        catch_ups in proptest::collection::vec(any::<u8>(), 0..6),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let (_db, stores) = fixture().await;
            let n = CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            run(&stores, Case { writers, compactions, catch_ups }, n).await;
        });
    }
}

static CASE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The ordering compaction relies on, made deterministic: an append that has its id but has not
/// committed (A, split open by hand the way `APPEND` runs) makes the next append to the same
/// document (B) wait, so B's id is larger; a compaction meanwhile folds only what committed
/// before A and deletes nothing of A's; after both commit, the document has every update.
/// Without the lock, B would commit first with the larger id, a compaction would fold through
/// it, and A's row, committed later below `compacted_through`, would never be read again.
#[tokio::test(flavor = "multi_thread")]
async fn an_append_in_flight_holds_the_next_one_back_so_compaction_cannot_pass_it() {
    use diesel::sql_types::{BigInt, Bytea, Integer, Text as SqlText};
    use diesel::QueryableByName;
    use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
    use synckit_relay::documents::LOCK_CLASS;

    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = BigInt)]
        id: i64,
    }

    let (db, stores) = fixture().await;
    let document = "in-flight";
    let source = yrs::Doc::new();
    let text = source.get_or_insert_text("t");
    let mut updates = Vec::new();
    for chunk in ["zero ", "a ", "b"] {
        let mut txn = source.transact_mut();
        let len = text.len(&txn);
        text.insert(&mut txn, len, chunk);
        updates.push(txn.encode_update_v1());
    }

    let first = stores[0]
        .append(document, &[&updates[0]])
        .await
        .expect("append")[0];

    let mut a = db.conn().await;
    a.batch_execute("BEGIN").await.expect("begin");
    diesel::sql_query("SELECT pg_advisory_xact_lock($1, hashtext($2))::text AS locked")
        .bind::<Integer, _>(LOCK_CLASS)
        .bind::<SqlText, _>(document)
        .execute(&mut a)
        .await
        .expect("lock");
    let id_a = diesel::sql_query(
        r#"INSERT INTO relay_document_updates (document_id, "update") VALUES ($1, $2) RETURNING id"#,
    )
    .bind::<SqlText, _>(document)
    .bind::<Bytea, _>(&updates[1])
    .get_result::<Id>(&mut a)
    .await
    .expect("insert")
    .id;

    let b = {
        let (store, update) = (stores[1].clone(), updates[2].clone());
        tokio::spawn(async move { store.append(document, &[&update]).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !b.is_finished(),
        "the second append waits for the first one's lock"
    );

    let compacted = stores[0]
        .compact(document)
        .await
        .expect("compact")
        .expect("the committed row is folded");
    assert_eq!(compacted.through, first, "only what committed before A");

    a.batch_execute("COMMIT").await.expect("commit");
    let id_b = b.await.expect("task").expect("append")[0];
    assert!(id_b > id_a, "B's id ({id_b}) is larger than A's ({id_a})");

    stores[1].compact(document).await.expect("compact");
    let documents = Documents::on_postgres(stores[1].clone(), DocumentOptions::default());
    let room = documents.open(document).await.expect("open");
    assert_eq!(room.text("t"), "zero a b");
    documents.release(&room);
    let expected = doc_of(updates.iter().map(Vec::as_slice));
    assert_eq!(text_of(&expected), "zero a b");
}
