//! The deletes: one entry, a connection's entries, and the expired entries (counted, or
//! returned so nothing expires unseen between a read and a delete).
//!
//! A statement that deletes several entries locks them first, in key order
//! ([`delete_in_key_order!`]), as every write path does: a `DELETE … WHERE` alone locks in
//! the order of its scan, and met a batch writing the same keys in key order in a deadlock.

use diesel::dsl;
use diesel::prelude::*;
use diesel::QueryableByName;

use super::expired_sql;

use crate::schema::awareness_entries::dsl::*;

/// `locked`, the entries of `awareness_entries k` that `$selected` (a condition on `k`)
/// picks, locked in key order (`$lock`: `FOR UPDATE`, or `FOR UPDATE SKIP LOCKED` for the
/// pruning statements, which leave an entry a writer holds — it is being written, so it is
/// not expired for long — to a later round); and `gone`, those entries deleted and returned.
/// Two CTEs for a `WITH`.
macro_rules! delete_in_key_order {
    ($selected:expr, $lock:literal) => {
        concat!(
            "locked AS MATERIALIZED (SELECT k.document_id, k.client_id FROM awareness_entries k \
             WHERE ",
            $selected,
            " ORDER BY k.document_id, k.client_id ",
            $lock,
            "), gone AS (DELETE FROM awareness_entries e USING locked l \
             WHERE e.document_id = l.document_id AND e.client_id = l.client_id RETURNING e.*)"
        )
    };
}
pub(crate) use delete_in_key_order;

/// `remove`: one entry whatever its state.
#[dsl::auto_type(no_type_alias)]
pub(crate) fn remove<'a>(document: &'a str, client: &'a str) -> _ {
    dsl::delete(awareness_entries.find((document, client)))
}

/// `remove_all_for_connection`: every entry the connection `$1` last wrote, through the
/// `connection_id` index, returned with whether it was expired (`$2`: the timeout). Expired
/// ones are deleted too, as garbage, but absent for every read, so not reported.
pub(crate) const REMOVE_ALL_FOR_CONNECTION: &str = concat!(
    "WITH ",
    delete_in_key_order!("k.connection_id = $1", "FOR UPDATE"),
    " SELECT gone.*, ",
    expired_sql!("gone.", "$2"),
    " AS expired FROM gone"
);

/// `prune_expired`: deletes the expired entries (`$1`: the timeout); the count is the number
/// of rows.
pub(crate) const PRUNE_EXPIRED: &str = concat!(
    "WITH ",
    delete_in_key_order!(expired_sql!("k.", "$1"), "FOR UPDATE SKIP LOCKED"),
    " SELECT count(*) AS n FROM gone"
);

/// `take_expired`: deletes the expired entries and returns them (`$1`: the timeout), in one
/// statement.
pub(crate) const TAKE_EXPIRED: &str = concat!(
    "WITH ",
    delete_in_key_order!(expired_sql!("k.", "$1"), "FOR UPDATE SKIP LOCKED"),
    " SELECT gone.* FROM gone"
);

/// The row of [`PRUNE_EXPIRED`].
#[derive(QueryableByName)]
pub(crate) struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub(crate) n: i64,
}

#[cfg(test)]
mod tests {
    use super::super::text;
    use super::*;

    #[test]
    fn remove_deletes_one_key() {
        assert_eq!(
            text(&remove("d", "c")),
            "DELETE FROM \"awareness_entries\" WHERE ((\"awareness_entries\".\"document_id\" = $1) AND \
             (\"awareness_entries\".\"client_id\" = $2))"
        );
    }

    /// Every statement that deletes several entries locks them in key order first.
    #[test]
    fn multi_row_deletes_lock_in_key_order() {
        for sql in [REMOVE_ALL_FOR_CONNECTION, PRUNE_EXPIRED, TAKE_EXPIRED] {
            assert!(
                sql.starts_with("WITH locked AS MATERIALIZED (SELECT k.document_id, k.client_id"),
                "{sql}"
            );
            assert!(
                sql.contains(" ORDER BY k.document_id, k.client_id FOR UPDATE"),
                "{sql}"
            );
            assert!(sql.contains("USING locked l"), "{sql}");
        }
        assert!(PRUNE_EXPIRED.contains("k.last_seen <= now() - $1 ORDER BY"));
        assert!(TAKE_EXPIRED.contains("SKIP LOCKED"));
        assert!(!REMOVE_ALL_FOR_CONNECTION.contains("SKIP LOCKED"));
    }
}
