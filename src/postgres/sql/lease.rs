//! The instance statements: a lease row per running instance in `awareness_instances`, pushed
//! forward by its owner and taken over (with its entries) by any pruner once it lapses. The
//! database's clock decides, as for expiry.

use diesel::QueryableByName;

use super::delete::delete_in_key_order;
use super::expired_sql;

/// Registers or renews an instance's lease in one statement. `$1`: the instance, `$2`: the
/// lease. Returns whether the row was inserted: on a renewal, that means another instance had
/// taken the lease over (and removed the entries) in between.
pub(crate) const RENEW: &str = "INSERT INTO awareness_instances (instance_id, lease_expires_at) \
     VALUES ($1, now() + $2) ON CONFLICT (instance_id) DO UPDATE \
     SET lease_expires_at = excluded.lease_expires_at \
     RETURNING xmax = 0 AS registered";

/// The lease half of a pruning round, run every round: deletes the lapsed leases and returns
/// the instances that hold entries but no valid lease (`orphan`), and in one more row the
/// live instance with the smallest id (`leader`: the one that looks for expired entries).
/// Costs a few index probes whatever the table holds: the distinct `instance_id`s are read
/// from the partial `instance_id` index by a skip scan (one probe per instance), not from the
/// table.
///
/// (The lapsed leases' `DELETE` and the check share one snapshot: a lease it deletes is seen
/// by the check as lapsed, so its instance is returned, and it is never the leader.)
pub(crate) const ORPHANED_INSTANCES: &str = "WITH RECURSIVE ids AS (\
     (SELECT instance_id FROM awareness_entries WHERE instance_id IS NOT NULL \
     ORDER BY instance_id LIMIT 1) \
     UNION ALL SELECT (SELECT e.instance_id FROM awareness_entries e \
     WHERE e.instance_id > ids.instance_id ORDER BY e.instance_id LIMIT 1) \
     FROM ids WHERE ids.instance_id IS NOT NULL), \
     lapsed AS (DELETE FROM awareness_instances WHERE instance_id IN \
     (SELECT instance_id FROM awareness_instances WHERE lease_expires_at <= now() \
     ORDER BY instance_id FOR UPDATE SKIP LOCKED)) \
     SELECT ids.instance_id AS orphan, NULL::text AS leader FROM ids \
     WHERE ids.instance_id IS NOT NULL AND NOT EXISTS \
     (SELECT 1 FROM awareness_instances i WHERE i.instance_id = ids.instance_id \
     AND i.lease_expires_at > now()) \
     UNION ALL SELECT NULL, (SELECT min(instance_id) FROM awareness_instances \
     WHERE lease_expires_at > now())";

/// Deletes and returns the entries of the instances `$1` (from [`ORPHANED_INSTANCES`]) that
/// still hold no valid lease, with whether each was expired. `$2`: the expiry timeout. Runs
/// only when an instance is gone.
///
/// Each row is deleted, and so returned, by exactly one statement however many pruners race
/// (a row another holds is skipped, and it is gone or rewritten by the time a later round
/// looks). Rows are locked in key order, as by every write path. An entry written by an
/// instance after its lease lapsed and was taken over has no lease to point to either, so a
/// later round removes it.
pub(crate) const TAKE_ABANDONED: &str = concat!(
    "WITH ",
    delete_in_key_order!(
        "k.instance_id = ANY($1) AND NOT EXISTS (SELECT 1 FROM awareness_instances i \
         WHERE i.instance_id = k.instance_id AND i.lease_expires_at > now())",
        "FOR UPDATE SKIP LOCKED"
    ),
    " SELECT gone.*, ",
    expired_sql!("gone.", "$2"),
    " AS expired FROM gone ORDER BY gone.document_id, gone.client_id"
);

/// The expiry half's check: seconds until the first entry expires (negative: one has; NULL:
/// the table is empty). `$1`: the expiry timeout. One scan of the table, run only when the
/// previous check said something could have expired by now — not every round.
pub(crate) const SECONDS_TO_FIRST_EXPIRY: &str = "SELECT extract(epoch FROM \
     min(last_seen) + $1 - now())::float8 AS seconds FROM awareness_entries";

/// A row of [`ORPHANED_INSTANCES`]: an orphaned instance, or the leader.
#[derive(QueryableByName)]
pub(crate) struct Orphaned {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub(crate) orphan: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    pub(crate) leader: Option<String>,
}

/// The row of [`SECONDS_TO_FIRST_EXPIRY`].
#[derive(QueryableByName)]
pub(crate) struct FirstExpiry {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Double>)]
    pub(crate) seconds: Option<f64>,
}

/// A graceful shutdown: deletes the instance's lease and entries, and returns the entries
/// with whether each was expired. `$1`: the instance, `$2`: the expiry timeout.
pub(crate) const SHUTDOWN: &str = concat!(
    "WITH lease AS (DELETE FROM awareness_instances WHERE instance_id = $1), ",
    delete_in_key_order!("k.instance_id = $1", "FOR UPDATE"),
    " SELECT gone.*, ",
    expired_sql!("gone.", "$2"),
    " AS expired FROM gone ORDER BY gone.document_id, gone.client_id"
);

/// A row of [`TAKE_ABANDONED`] and [`SHUTDOWN`]: an entry removed, with whether it was expired.
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
