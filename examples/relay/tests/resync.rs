//! Issue 29, deterministic: what a failover does to the documents, without a failover.
//! A promoted standby may lack the last commits of the old primary (asynchronous replication);
//! those rows are deleted here behind the room's back, which is what the relay then sees. After
//! the listener reconnects, each room resyncs (`Room::resync`): it must store again what it
//! relayed and the database lost, or every later update of those clients stays unreadable
//! in every fresh load. And an append must be a durable commit whatever the pool's session
//! says (the library's pool runs `synchronous_commit = off`). Real PostgreSQL (tests/common).

#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "support/documents.rs"]
mod documents;

use documents::fixture;

use std::time::Duration;

use synckit_relay::documents::{DocumentOptions, DocumentStore, Documents};
use yrs::{Text, Transact};

/// `count` updates of one client, each appending `<i>` to Y.Text `t`.
fn typed(count: usize) -> Vec<Vec<u8>> {
    let doc = yrs::Doc::new();
    let text = doc.get_or_insert_text("t");
    (0..count)
        .map(|i| {
            let mut txn = doc.transact_mut();
            let len = text.len(&txn);
            text.insert(&mut txn, len, &format!("<{i}>"));
            txn.encode_update_v1()
        })
        .collect()
}

async fn text_after_load(store: &DocumentStore, room: &str) -> String {
    let fresh = Documents::on_postgres(store.clone(), DocumentOptions::default());
    let room = fresh
        .open(room)
        .await
        .expect("a fresh instance opens the room");
    room.text("t")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resync_stores_again_what_the_database_lost_and_applies_what_it_lacks() {
    let (db, [a, b]) = fixture().await;
    let documents = Documents::on_postgres(a.clone(), DocumentOptions::default());
    let room = documents.open("lost").await.expect("open");
    let updates = typed(6);
    let all: String = (0..6).map(|i| format!("<{i}>")).collect();
    for update in &updates {
        room.apply_local(1, update.clone()).expect("queued");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while room.text("t") != all {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the room applied {:?}",
            room.text("t")
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The failover lost the commits of updates 2 and 3 (relayed, so the room has them); the
    // client's later updates 4 and 5 are stored but cannot be read without them.
    db.exec(
        "DELETE FROM relay_document_updates WHERE document_id = 'lost' AND id IN \
         (SELECT id FROM relay_document_updates WHERE document_id = 'lost' ORDER BY id OFFSET 2 LIMIT 2)",
    )
    .await;
    assert_eq!(
        text_after_load(&b, "lost").await,
        "<0><1>",
        "the loss is real"
    );
    // Meanwhile another instance appended an update of another client.
    let other = {
        let doc = yrs::Doc::new();
        let text = doc.get_or_insert_text("u");
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, "other");
        txn.encode_update_v1()
    };
    b.append("lost", &[&other]).await.expect("append");

    room.resync().await.expect("resync");
    assert_eq!(room.text("u"), "other", "the room applied what it lacked");
    assert_eq!(
        text_after_load(&b, "lost").await,
        all,
        "a fresh load reads every update again"
    );
    let stored = db
        .scalar(
            "SELECT count(*)::bigint AS n FROM relay_document_updates WHERE document_id = 'lost'",
        )
        .await;
    assert_eq!(
        stored, 6,
        "4 rows left, the other instance's and one repair"
    );

    // Nothing lost: a second resync stores nothing.
    room.resync().await.expect("resync");
    let again = db
        .scalar(
            "SELECT count(*)::bigint AS n FROM relay_document_updates WHERE document_id = 'lost'",
        )
        .await;
    assert_eq!(again, stored, "a resync with nothing lost appends nothing");
}

/// The library's pool sets `synchronous_commit = off` on its sessions (presence is
/// ephemeral); a document's append must commit durably anyway (and wait for a synchronous
/// standby when one is configured). Checked inside the statement's transaction, where the
/// commit reads the setting.
#[tokio::test(flavor = "multi_thread")]
async fn an_append_commits_with_synchronous_commit_on_whatever_the_session_says() {
    use diesel::sql_types::{Array, Bytea, Integer, Text as SqlText};
    use diesel::QueryableByName;
    use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
    use synckit_relay::documents::{APPEND, CHANNEL, LOCK_CLASS};

    #[derive(QueryableByName)]
    struct Setting {
        #[diesel(sql_type = SqlText)]
        synchronous_commit: String,
    }

    let (db, _) = fixture().await;
    let mut conn = db.conn().await;
    conn.batch_execute("SET synchronous_commit = off; BEGIN")
        .await
        .expect("begin");
    let update = typed(1).remove(0);
    diesel::sql_query(APPEND)
        .bind::<Integer, _>(LOCK_CLASS)
        .bind::<SqlText, _>("durable")
        .bind::<Array<Bytea>, _>(vec![update])
        .bind::<SqlText, _>(CHANNEL)
        .execute(&mut conn)
        .await
        .expect("append");
    let setting = diesel::sql_query("SHOW synchronous_commit")
        .get_result::<Setting>(&mut conn)
        .await
        .expect("show");
    assert_eq!(setting.synchronous_commit, "on");
    conn.batch_execute("ROLLBACK").await.expect("rollback");
}
