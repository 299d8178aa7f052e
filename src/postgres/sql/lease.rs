//! The instance statements: a lease row per running instance in `awareness_instances`, pushed
//! forward by its owner and taken over (with its entries) by any pruner once it lapses. The
//! database's clock decides, as for expiry.

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
pub(crate) const TAKE_DEPARTED: &str = "WITH lapsed AS (DELETE FROM awareness_instances \
     WHERE lease_expires_at <= now() RETURNING instance_id), \
     gone AS (DELETE FROM awareness_entries e WHERE e.last_seen <= now() - $1 \
     OR (e.instance_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM awareness_instances i \
     WHERE i.instance_id = e.instance_id AND i.lease_expires_at > now())) RETURNING e.*) \
     SELECT gone.*, gone.last_seen <= now() - $1 AS expired FROM gone \
     ORDER BY gone.document_id, gone.client_id";

/// A graceful shutdown: deletes the instance's lease and entries, and returns the entries
/// with whether each was expired. `$1`: the instance, `$2`: the expiry timeout.
pub(crate) const SHUTDOWN: &str = "WITH lease AS (DELETE FROM awareness_instances \
     WHERE instance_id = $1), \
     gone AS (DELETE FROM awareness_entries WHERE instance_id = $1 RETURNING *) \
     SELECT gone.*, gone.last_seen <= now() - $2 AS expired FROM gone \
     ORDER BY gone.document_id, gone.client_id";
