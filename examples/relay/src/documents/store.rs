//! The documents' rows in PostgreSQL: every statement the relay sends about documents, in one
//! place (`relay_documents`, `relay_document_updates`; migrations-documents/).

use diesel::pg::Pg;
use diesel::sql_types::{BigInt, Bool, Bytea, Text};
use diesel::QueryableByName;
use diesel_async::{
    AnsiTransactionManager, AsyncConnectionCore, AsyncPgConnection, RunQueryDsl, TransactionManager,
};
use synckit_awareness::{PgPool, UnnamedPool};
use yrs::updates::decoder::Decode;
use yrs::{ReadTxn, StateVector, Transact, Update};

use super::DocumentError;

/// The relay's migrations (its own tables), applied after the library's by the relay at start
/// (`run_migrations` with this as the extra source); both sets record their versions in
/// diesel's `__diesel_schema_migrations`, which tells them apart by version.
pub const MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("migrations-documents");

/// The channel appends are announced on; the payload is `<id>:<document_id>`, never the update
/// (payloads stop at 8,000 bytes; a document id is at most 256 bytes).
pub const CHANNEL: &str = "relay_documents";

/// First key of the per-document advisory lock ("rela"); the second is `hashtext(document_id)`.
/// A two-key lock lives apart from the library's one-key locks (its migration lock).
pub const LOCK_CLASS: i32 = 0x7265_6c61;

/// Appends updates (in order) under the document's lock and announces the last id, once per
/// call; returns the ids. The lock makes appends to one document take turns, so within a
/// document id order is commit order: a reader that saw id `n` has seen every smaller id of
/// that document (docs/NOTES.md). One statement, one commit for many updates: an instance
/// sends the updates that queued up while its previous append was committing (group commit).
pub const APPEND: &str = r#"WITH locked AS (
    SELECT pg_advisory_xact_lock($1, hashtext($2)), set_config('synchronous_commit', 'on', true)
)
, inserted AS (
    INSERT INTO relay_document_updates (document_id, "update")
    SELECT $2, u FROM locked, unnest($3::bytea[]) WITH ORDINALITY AS t (u, n) ORDER BY n
    RETURNING id
)
SELECT array_agg(id ORDER BY id) AS ids, pg_notify($4, max(id)::text || ':' || $2)::text AS notified
FROM inserted"#;

/// The document after `$2`: its snapshot when compaction passed `$2`, then its rows after
/// `$2`, in id order. One statement, one snapshot of the database: a compaction is either
/// wholly before it or wholly after.
pub const READ_AFTER: &str = r#"SELECT id, bytes, snapshot FROM (
    SELECT compacted_through AS id, snapshot AS bytes, true AS snapshot
    FROM relay_documents WHERE document_id = $1 AND compacted_through > $2
    UNION ALL
    SELECT id, "update", false
    FROM relay_document_updates WHERE document_id = $1 AND id > $2
) AS document ORDER BY id, snapshot DESC"#;

/// Stores the folded snapshot, only over the snapshot it was folded from (`$4`: its
/// `compacted_through`, 0 without one): of two compactions at once, the second writes nothing
/// (0 rows) and deletes nothing.
pub const UPSERT_SNAPSHOT: &str = r#"INSERT INTO relay_documents (document_id, snapshot, compacted_through)
VALUES ($1, $2, $3)
ON CONFLICT (document_id) DO UPDATE
SET snapshot = excluded.snapshot, compacted_through = excluded.compacted_through, updated_at = now()
WHERE relay_documents.compacted_through = $4"#;

/// Removes the rows folded into the snapshot.
pub const DELETE_THROUGH: &str =
    "DELETE FROM relay_document_updates WHERE document_id = $1 AND id <= $2";

/// The documents that have rows to compact.
pub const DOCUMENTS_WITH_ROWS: &str =
    "SELECT DISTINCT document_id FROM relay_document_updates ORDER BY document_id";

/// Rows and bytes a document holds (for `/healthz`-style reports, the benchmark and tests).
pub const STATS: &str = r#"SELECT
    (SELECT count(*) FROM relay_document_updates WHERE document_id = $1)::bigint AS rows,
    (SELECT coalesce(sum(octet_length("update")), 0) FROM relay_document_updates WHERE document_id = $1)::bigint AS row_bytes,
    (SELECT coalesce(sum(octet_length(snapshot)), 0) FROM relay_documents WHERE document_id = $1)::bigint AS snapshot_bytes"#;

#[derive(QueryableByName)]
struct DocumentId {
    #[diesel(sql_type = Text)]
    document_id: String,
}

#[derive(QueryableByName)]
struct Ids {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Array<BigInt>>)]
    ids: Option<Vec<i64>>,
}

/// One row of `READ_AFTER` (a stored update, or the snapshot).
#[derive(Debug, Clone, QueryableByName)]
pub struct StoredUpdate {
    /// The row's id, or for the snapshot the id it is compacted through.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// A Yjs update (v1).
    #[diesel(sql_type = Bytea)]
    pub bytes: Vec<u8>,
    /// Whether this is the document's snapshot rather than one appended update.
    #[diesel(sql_type = Bool)]
    pub snapshot: bool,
}

/// What a document holds in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct DocumentStats {
    /// Appended rows not yet compacted.
    #[diesel(sql_type = BigInt)]
    pub rows: i64,
    /// Their bytes (updates only).
    #[diesel(sql_type = BigInt)]
    pub row_bytes: i64,
    /// The snapshot's bytes (0 without one).
    #[diesel(sql_type = BigInt)]
    pub snapshot_bytes: i64,
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// The snapshot now covers every row up to this id.
    pub through: i64,
    /// Rows folded and deleted.
    pub rows: usize,
    /// Their bytes.
    pub row_bytes: usize,
    /// The new snapshot's bytes.
    pub snapshot_bytes: usize,
}

/// The documents' tables on a pool (the presence store's: one pool per process).
#[derive(Clone)]
pub struct DocumentStore {
    pool: PgPool,
    /// Behind a transaction-mode pooler: the presence store's unnamed connections
    /// (`PostgresAwarenessStore::statement_pool`), where every one-statement operation runs in
    /// one round trip with no explicit transaction.
    statements: Option<UnnamedPool>,
    /// Behind a transaction-mode pooler: every operation is one explicit transaction, so the
    /// statements diesel-async prepares (and closes) stay on one server connection.
    pooled: bool,
}

impl std::fmt::Debug for DocumentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentStore").finish_non_exhaustive()
    }
}

fn database(error: impl std::fmt::Display) -> DocumentError {
    DocumentError::Store(error.to_string())
}

impl DocumentStore {
    /// The store on `pool` (migrated with [`MIGRATIONS`]).
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            statements: None,
            pooled: false,
        }
    }

    /// `pool` goes through a transaction-mode pooler (PgBouncer, Supavisor, RDS Proxy): each
    /// operation then runs in one explicit transaction, as the library's store does.
    pub fn with_transaction_pooler(mut self, pooled: bool) -> Self {
        self.pooled = pooled;
        self
    }

    /// Behind a transaction-mode pooler, `statements` (the presence store's
    /// `statement_pool()`) runs the one-statement operations — [`append`](Self::append),
    /// [`read_after`](Self::read_after), [`stats`](Self::stats),
    /// [`documents_with_rows`](Self::documents_with_rows) — one round trip each; compaction's
    /// write (two statements in one transaction) stays on `pool`.
    pub fn with_statement_pool(mut self, statements: Option<UnnamedPool>) -> Self {
        self.statements = statements;
        self
    }

    /// Behind a pooler, opens the operation's transaction (see [`begin`]).
    async fn begin(&self, conn: &mut AsyncPgConnection) -> Result<(), DocumentError> {
        if self.pooled {
            begin(conn).await?;
        }
        Ok(())
    }

    /// Ends what [`DocumentStore::begin`] opened (see [`finish`]).
    async fn finish<T>(
        &self,
        conn: &mut AsyncPgConnection,
        result: Result<T, diesel::result::Error>,
    ) -> Result<T, DocumentError> {
        if !self.pooled {
            return result.map_err(database);
        }
        finish(conn, result).await
    }

    async fn conn(
        &self,
    ) -> Result<
        diesel_async::pooled_connection::bb8::PooledConnection<'_, AsyncPgConnection>,
        DocumentError,
    > {
        self.pool.get().await.map_err(database)
    }

    /// Appends `updates` to `document` in order and announces them on [`CHANNEL`] (delivered
    /// at commit); returns their ids, in the same order.
    pub async fn append(
        &self,
        document: &str,
        updates: &[&[u8]],
    ) -> Result<Vec<i64>, DocumentError> {
        if updates.is_empty() {
            return Ok(Vec::new());
        }
        let rows = match &self.statements {
            Some(statements) => {
                let mut conn = statements.get().await.map_err(database)?;
                append(&mut *conn, document, updates)
                    .await
                    .map_err(database)?
            }
            None => {
                let mut conn = self.conn().await?;
                self.begin(&mut conn).await?;
                let result = append(&mut *conn, document, updates).await;
                self.finish(&mut conn, result).await?
            }
        };
        let ids = rows
            .into_iter()
            .next()
            .and_then(|row| row.ids)
            .unwrap_or_default();
        if ids.len() != updates.len() {
            return Err(DocumentError::Store(format!(
                "{} updates appended, {} ids returned",
                updates.len(),
                ids.len()
            )));
        }
        Ok(ids)
    }

    /// The document after row `after`: its snapshot first when compaction went past `after`,
    /// then the rows, in id order. `after = 0`: the whole document.
    pub async fn read_after(
        &self,
        document: &str,
        after: i64,
    ) -> Result<Vec<StoredUpdate>, DocumentError> {
        if let Some(statements) = &self.statements {
            let mut conn = statements.get().await.map_err(database)?;
            return read_after(&mut *conn, document, after)
                .await
                .map_err(database);
        }
        let mut conn = self.conn().await?;
        self.begin(&mut conn).await?;
        let result = read_after(&mut *conn, document, after).await;
        self.finish(&mut conn, result).await
    }

    /// Folds the document's rows into its snapshot. The rows are read and folded without any
    /// lock (appends never wait for a compaction); then one short transaction writes the
    /// snapshot, only if no other compaction wrote one meanwhile, and deletes the rows folded.
    /// Safe while others append: appends to a document take turns under its lock, so every row
    /// with an id up to the largest one read was in what was read, and every later row gets a
    /// larger id (docs/NOTES.md). `None`: there were no rows, or another compaction won.
    pub async fn compact(&self, document: &str) -> Result<Option<Compacted>, DocumentError> {
        let mut conn = self.conn().await?;
        self.begin(&mut conn).await?;
        let result = read_after(&mut *conn, document, 0).await;
        let stored = self.finish(&mut conn, result).await?;
        let previous = stored.iter().find(|u| u.snapshot).map_or(0, |u| u.id);
        let rows: Vec<&StoredUpdate> = stored.iter().filter(|u| !u.snapshot).collect();
        let Some(through) = rows.last().map(|u| u.id) else {
            return Ok(None);
        };
        let snapshot = fold(stored.iter().map(|u| u.bytes.as_slice()));
        // One transaction, with or without a pooler.
        begin(&mut conn).await?;
        let written = write_snapshot(&mut conn, document, &snapshot, through, previous).await;
        let written = finish(&mut conn, written).await?;
        Ok(written.then(|| Compacted {
            through,
            rows: rows.len(),
            row_bytes: rows.iter().map(|u| u.bytes.len()).sum(),
            snapshot_bytes: snapshot.len(),
        }))
    }

    /// Every document with rows not yet compacted.
    pub async fn documents_with_rows(&self) -> Result<Vec<String>, DocumentError> {
        if let Some(statements) = &self.statements {
            let mut conn = statements.get().await.map_err(database)?;
            let rows = diesel::sql_query(DOCUMENTS_WITH_ROWS)
                .load::<DocumentId>(&mut *conn)
                .await
                .map_err(database)?;
            return Ok(rows.into_iter().map(|r| r.document_id).collect());
        }
        let mut conn = self.conn().await?;
        self.begin(&mut conn).await?;
        let result = diesel::sql_query(DOCUMENTS_WITH_ROWS)
            .load::<DocumentId>(&mut conn)
            .await;
        let rows = self.finish(&mut conn, result).await?;
        Ok(rows.into_iter().map(|r| r.document_id).collect())
    }

    /// Rows and bytes `document` holds.
    pub async fn stats(&self, document: &str) -> Result<DocumentStats, DocumentError> {
        if let Some(statements) = &self.statements {
            let mut conn = statements.get().await.map_err(database)?;
            return diesel::sql_query(STATS)
                .bind::<Text, _>(document)
                .get_result(&mut *conn)
                .await
                .map_err(database);
        }
        let mut conn = self.conn().await?;
        self.begin(&mut conn).await?;
        let result = diesel::sql_query(STATS)
            .bind::<Text, _>(document)
            .get_result(&mut conn)
            .await;
        self.finish(&mut conn, result).await
    }
}

/// Opens a transaction tracked by diesel-async (a connection dropped inside it is discarded
/// by the pool, not reused).
async fn begin(conn: &mut AsyncPgConnection) -> Result<(), DocumentError> {
    AnsiTransactionManager::begin_transaction(conn)
        .await
        .map_err(database)
}

/// Commits after `Ok`, rolls back after `Err`.
async fn finish<T>(
    conn: &mut AsyncPgConnection,
    result: Result<T, diesel::result::Error>,
) -> Result<T, DocumentError> {
    match result {
        Ok(value) => {
            AnsiTransactionManager::commit_transaction(conn)
                .await
                .map_err(database)?;
            Ok(value)
        }
        Err(error) => {
            // A failed rollback leaves the transaction open: the pool discards the connection;
            // the operation's error is what matters.
            let _ = AnsiTransactionManager::rollback_transaction(conn).await;
            Err(database(error))
        }
    }
}

/// Writes the snapshot over the one it was folded from and deletes the rows folded; whether
/// it did (another compaction may have won).
async fn write_snapshot(
    conn: &mut AsyncPgConnection,
    document: &str,
    snapshot: &[u8],
    through: i64,
    previous: i64,
) -> Result<bool, diesel::result::Error> {
    let written = diesel::sql_query(UPSERT_SNAPSHOT)
        .bind::<Text, _>(document)
        .bind::<Bytea, _>(snapshot)
        .bind::<BigInt, _>(through)
        .bind::<BigInt, _>(previous)
        .execute(conn)
        .await?;
    if written == 1 {
        diesel::sql_query(DELETE_THROUGH)
            .bind::<Text, _>(document)
            .bind::<BigInt, _>(through)
            .execute(conn)
            .await?;
    }
    Ok(written == 1)
}

/// `updates` appended to `document` and announced (see [`DocumentStore::append`]): the rows'
/// ids, in one row.
async fn append<C: AsyncConnectionCore<Backend = Pg> + Send>(
    conn: &mut C,
    document: &str,
    updates: &[&[u8]],
) -> Result<Vec<Ids>, diesel::result::Error> {
    diesel::sql_query(APPEND)
        .bind::<diesel::sql_types::Integer, _>(LOCK_CLASS)
        .bind::<Text, _>(document)
        .bind::<diesel::sql_types::Array<Bytea>, _>(updates)
        .bind::<Text, _>(CHANNEL)
        // `load`, not `get_result`: diesel-async's `get_result` returns at the first row,
        // before the server's ReadyForQuery — before the implicit commit when no pooler
        // transaction is open — so the updates would be relayed before they are durable
        // (the library's faults test caught the same trap for `set`; docs/NOTES.md).
        .load::<Ids>(conn)
        .await
}

async fn read_after<C: AsyncConnectionCore<Backend = Pg> + Send>(
    conn: &mut C,
    document: &str,
    after: i64,
) -> Result<Vec<StoredUpdate>, diesel::result::Error> {
    diesel::sql_query(READ_AFTER)
        .bind::<Text, _>(document)
        .bind::<BigInt, _>(after)
        .load(conn)
        .await
}

/// One update holding every given update (applied in order into a fresh document, encoded as
/// its whole state: deleted content is garbage-collected, and updates still waiting for a
/// missing dependency are kept, as `encode_state_as_update` includes pending ones). An update
/// that does not decode is skipped with a warning: it was never applied anywhere either.
pub fn fold<'a>(updates: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let doc = yrs::Doc::new();
    {
        let mut txn = doc.transact_mut();
        for bytes in updates {
            match Update::decode_v1(bytes) {
                Ok(update) => {
                    if let Err(error) = txn.apply_update(update) {
                        tracing::warn!(%error, "a stored update does not apply; left out");
                    }
                }
                Err(error) => tracing::warn!(%error, "a stored update does not decode; left out"),
            }
        }
    }
    let txn = doc.transact();
    txn.encode_state_as_update_v1(&StateVector::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    // The statements are pinned here so a change to one is a visible change to a test.
    #[test]
    fn append_takes_the_lock_before_the_id_and_notifies_with_the_id_only() {
        let lock = APPEND.find("pg_advisory_xact_lock").unwrap_or(usize::MAX);
        let insert = APPEND.find("INSERT").unwrap_or(0);
        assert!(
            lock < insert,
            "the lock is taken before the row gets its id"
        );
        assert!(APPEND.contains("FROM locked"));
        assert!(APPEND.contains("pg_notify($4, max(id)::text || ':' || $2)"));
        assert!(APPEND.contains("WITH ORDINALITY AS t (u, n) ORDER BY n"));
    }

    #[test]
    fn compaction_never_goes_back_and_deletes_only_what_it_folded() {
        assert!(UPSERT_SNAPSHOT.contains("WHERE relay_documents.compacted_through = $4"));
        assert!(DELETE_THROUGH.ends_with("id <= $2"));
        assert!(READ_AFTER.contains("compacted_through > $2"));
        assert!(READ_AFTER.contains("ORDER BY id, snapshot DESC"));
    }
}
