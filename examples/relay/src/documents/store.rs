//! The documents' rows in PostgreSQL: [`DocumentStore`] runs the statements of `sql.rs` on the
//! presence store's pool (or its unnamed statements behind a transaction pooler).

use diesel::pg::Pg;
use diesel::sql_types::{BigInt, Bytea, Text};
use diesel_async::{
    AnsiTransactionManager, AsyncConnectionCore, AsyncPgConnection, RunQueryDsl, TransactionManager,
};
use synckit_awareness::{PgPool, UnnamedPool};

use super::fold::fold;
use super::sql::{
    DocumentId, DocumentStats, Ids, StoredUpdate, APPEND, DELETE_THROUGH, DOCUMENTS_WITH_ROWS,
    LOCK_CLASS, READ_AFTER, STATS, UPSERT_SNAPSHOT,
};
use super::DocumentError;

/// The relay's migrations (its own tables), applied after the library's by the relay at start
/// (`run_migrations` with this as the extra source); both sets record their versions in
/// diesel's `__diesel_schema_migrations`, which tells them apart by version.
pub const MIGRATIONS: diesel_migrations::EmbeddedMigrations =
    diesel_migrations::embed_migrations!("migrations-documents");

/// The channel appends are announced on; the payload is `<id>:<document_id>`, never the update
/// (payloads stop at 8,000 bytes; a document id is at most 256 bytes).
pub const CHANNEL: &str = "relay_documents";

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
    /// larger id (docs/ARCHITECTURE.md). `None`: there were no rows, or another compaction won.
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
        // (the library's faults test caught the same trap for `set`; docs/ARCHITECTURE.md).
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
