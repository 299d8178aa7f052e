//! Every SQL statement the relay sends about documents, and the rows they return
//! (`relay_documents`, `relay_document_updates`; migrations-documents/), pinned by the tests
//! below; `store.rs` runs them.

use diesel::sql_types::{BigInt, Bool, Bytea, Text};
use diesel::QueryableByName;

/// First key of the per-document advisory lock ("rela"); the second is `hashtext(document_id)`.
/// A two-key lock lives apart from the library's one-key locks (its migration lock).
pub const LOCK_CLASS: i32 = 0x7265_6c61;

/// Appends updates (in order) under the document's lock and announces the last id, once per
/// call; returns the ids. The lock makes appends to one document take turns, so within a
/// document id order is commit order: a reader that saw id `n` has seen every smaller id of
/// that document (docs/ARCHITECTURE.md). One statement, one commit for many updates: an instance
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
pub(super) struct DocumentId {
    #[diesel(sql_type = Text)]
    pub(super) document_id: String,
}

#[derive(QueryableByName)]
pub(super) struct Ids {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Array<BigInt>>)]
    pub(super) ids: Option<Vec<i64>>,
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
