//! The instance statements: a lease row per running instance in `awareness_instances`, pushed
//! forward by its owner and taken over (with its entries) by any pruner once it lapses. The
//! database's clock decides, as for expiry.

use diesel::QueryableByName;

use super::expired_sql;

/// Registers or renews an instance's lease in one statement. `$1`: the instance, `$2`: the
/// lease. Returns whether the row was inserted: on a renewal, that means another instance had
/// taken the lease over (and removed the entries) in between.
pub(crate) const RENEW: &str = "INSERT INTO awareness_instances (instance_id, lease_expires_at) \
     VALUES ($1, now() + $2) ON CONFLICT (instance_id) DO UPDATE \
     SET lease_expires_at = excluded.lease_expires_at \
     RETURNING xmax = 0 AS registered";

/// One pruning round in one statement: deletes the lapsed leases, every expired entry and
/// every entry of an instance holding no valid lease, and returns the entries with whether
/// each was expired. `$1`: the expiry timeout.
///
/// Each row is deleted, and so returned, by exactly one statement however many pruners race
/// (a row deleted by another is skipped). An entry written by an instance after its lease
/// lapsed and was taken over has no lease to point to either, so the next round removes it.
pub(crate) const TAKE_DEPARTED: &str = concat!(
    "WITH lapsed AS (DELETE FROM awareness_instances \
     WHERE lease_expires_at <= now() RETURNING instance_id), \
     gone AS (DELETE FROM awareness_entries e WHERE ",
    expired_sql!("e.", "$1"),
    " OR (e.instance_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM awareness_instances i \
     WHERE i.instance_id = e.instance_id AND i.lease_expires_at > now())) RETURNING e.*) \
     SELECT gone.*, ",
    expired_sql!("gone.", "$1"),
    " AS expired FROM gone ORDER BY gone.document_id, gone.client_id"
);

/// A graceful shutdown: deletes the instance's lease and entries, and returns the entries
/// with whether each was expired. `$1`: the instance, `$2`: the expiry timeout.
pub(crate) const SHUTDOWN: &str = concat!(
    "WITH lease AS (DELETE FROM awareness_instances \
     WHERE instance_id = $1), \
     gone AS (DELETE FROM awareness_entries WHERE instance_id = $1 RETURNING *) \
     SELECT gone.*, ",
    expired_sql!("gone.", "$2"),
    " AS expired FROM gone ORDER BY gone.document_id, gone.client_id"
);

/// A row of [`TAKE_DEPARTED`] and [`SHUTDOWN`]: an entry removed, with whether it was expired.
#[derive(QueryableByName)]
pub(crate) struct Departing {
    #[diesel(embed)]
    pub(crate) entry: crate::entry::AwarenessEntry,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub(crate) expired: bool,
}

/// The row of [`RENEW`]: whether the lease was inserted rather than renewed.
#[derive(QueryableByName)]
pub(crate) struct Renewed {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    pub(crate) registered: bool,
}
