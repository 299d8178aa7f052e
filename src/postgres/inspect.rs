//! Read-only inspection for operators' tools (the `synckit-awareness` CLI among them): what a
//! document holds including tombstones and expired entries, and how the table is doing.
//!
//! These are inherent methods, not part of [`AwarenessStore`](crate::AwarenessStore): they
//! expose storage details (expired rows that every read hides, table statistics) that only
//! PostgreSQL has. Each is one statement and uses the database's clock, like the store.

use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Interval, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use serde::Serialize;

use super::pool::{with_conn, Connections};
use super::sql;
use crate::entry::AwarenessEntry;
use crate::error::{Field, Result};
use crate::validate::check_id;
use diesel::pg::data_types::PgInterval;

/// One stored entry as an operator sees it: also tombstones and expired entries, with how long
/// ago it was written.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InspectedEntry {
    /// The stored row.
    #[serde(flatten)]
    pub entry: AwarenessEntry,
    /// True when `last_seen + timeout <= now`: every read treats the entry as absent, and
    /// the next prune deletes it.
    pub expired: bool,
    /// How long ago `last_seen` was, by the database's clock (zero when it is in the future,
    /// as for a row written after this statement began).
    #[serde(skip)]
    pub age: Duration,
}

/// Counts and table health of the awareness table, from one statement
/// ([`PostgresAwarenessStore::inspect_stats`](crate::PostgresAwarenessStore::inspect_stats)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, QueryableByName)]
pub struct StoreStats {
    /// Every stored row: `live + tombstones + expired`.
    #[diesel(sql_type = BigInt)]
    pub total: i64,
    /// Entries that reads return as present: not expired, not tombstones.
    #[diesel(sql_type = BigInt)]
    pub live: i64,
    /// Tombstones (clients that left) that are not expired.
    #[diesel(sql_type = BigInt)]
    pub tombstones: i64,
    /// Expired entries (tombstones included) waiting to be pruned.
    #[diesel(sql_type = BigInt)]
    pub expired: i64,
    /// Documents with at least one stored row.
    #[diesel(sql_type = BigInt)]
    pub documents: i64,
    /// Documents with at least one live entry.
    #[diesel(sql_type = BigInt)]
    pub active_documents: i64,
    /// Size of the table (heap, TOAST, free-space and visibility maps), in bytes.
    #[diesel(sql_type = BigInt)]
    pub table_bytes: i64,
    /// Size of all its indexes, in bytes.
    #[diesel(sql_type = BigInt)]
    pub index_bytes: i64,
    /// Rows updated since the statistics were reset (`pg_stat_user_tables.n_tup_upd`).
    #[diesel(sql_type = Nullable<BigInt>)]
    pub updates: Option<i64>,
    /// Of those, heap-only (HOT) updates, which touch no index (`n_tup_hot_upd`).
    #[diesel(sql_type = Nullable<BigInt>)]
    pub hot_updates: Option<i64>,
    /// Dead row versions not yet vacuumed (`n_dead_tup`).
    #[diesel(sql_type = Nullable<BigInt>)]
    pub dead_tuples: Option<i64>,
    /// When autovacuum last processed the table; `None` if never.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub last_autovacuum: Option<DateTime<Utc>>,
}

impl StoreStats {
    /// Share of updates that were HOT, from 0.0 to 1.0; `None` before the first update.
    ///
    /// Heartbeats only rewrite `last_seen`, `state` and `clock_value`, none of them indexed,
    /// so this should stay near 1.0; a low ratio means pages are full (see the migration's
    /// `fillfactor`) or someone added an index on a column heartbeats write.
    pub fn hot_update_ratio(&self) -> Option<f64> {
        match (self.updates, self.hot_updates) {
            (Some(updates), Some(hot)) if updates > 0 => Some(hot as f64 / updates as f64),
            _ => None,
        }
    }
}

/// How many entries one document holds ([`PostgresAwarenessStore::inspect_busiest_documents`](crate::PostgresAwarenessStore::inspect_busiest_documents)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, QueryableByName)]
pub struct DocumentActivity {
    /// The document.
    #[diesel(sql_type = Text)]
    pub document_id: String,
    /// Its live entries (present clients).
    #[diesel(sql_type = BigInt)]
    pub live: i64,
    /// All its stored rows, tombstones and expired ones included.
    #[diesel(sql_type = BigInt)]
    pub total: i64,
}

/// See [`PostgresAwarenessStore::inspect_document`](crate::PostgresAwarenessStore::inspect_document).
pub(super) async fn document(
    connections: &Connections,
    timeout: PgInterval,
    document: &str,
    include_hidden: bool,
) -> Result<Vec<InspectedEntry>> {
    check_id(Field::DocumentId, document)?;
    let rows: Vec<(AwarenessEntry, bool, DateTime<Utc>)> = with_conn!(*connections, |conn| Ok(
        sql::read::inspect_document(document, include_hidden, timeout)
            .load(conn)
            .await?
    ))?;
    Ok(rows
        .into_iter()
        .map(|(entry, expired, now)| InspectedEntry {
            age: (now - entry.last_seen).to_std().unwrap_or(Duration::ZERO),
            entry,
            expired,
        })
        .collect())
}

/// See [`PostgresAwarenessStore::inspect_stats`](crate::PostgresAwarenessStore::inspect_stats)(crate::PostgresAwarenessStore::inspect_stats).
pub(super) async fn stats(connections: &Connections, timeout: PgInterval) -> Result<StoreStats> {
    with_conn!(*connections, |conn| Ok(diesel::sql_query(sql::raw::STATS)
        .bind::<Interval, _>(timeout)
        .get_result(conn)
        .await?))
}

/// See [`PostgresAwarenessStore::inspect_busiest_documents`](crate::PostgresAwarenessStore::inspect_busiest_documents)(crate::PostgresAwarenessStore::inspect_busiest_documents).
pub(super) async fn busiest_documents(
    connections: &Connections,
    timeout: PgInterval,
    limit: u32,
) -> Result<Vec<DocumentActivity>> {
    with_conn!(*connections, |conn| Ok(diesel::sql_query(
        sql::raw::BUSIEST_DOCUMENTS
    )
    .bind::<Interval, _>(timeout)
    .bind::<BigInt, _>(i64::from(limit))
    .load(conn)
    .await?))
}
