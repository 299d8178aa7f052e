//! Every statement the webhooks send (`relay_webhook_endpoints`, `relay_webhook_deliveries`;
//! the relay's migration 2026-12-07-000000_relay_webhooks, whose trigger records the events).
//! Every statement that touches several deliveries locks them with `SKIP LOCKED`, so no
//! statement here waits for another's row locks: none can deadlock.

use diesel::sql_types::{BigInt, Integer, Text};
use diesel::QueryableByName;

/// Registers (or renews) an endpoint: `$1` its URL, `$2` the store's entry timeout in ms.
/// From then on the trigger records every join and leave for it.
pub(crate) const RENEW: &str = r#"INSERT INTO relay_webhook_endpoints (url, entry_timeout, renewed_at)
VALUES ($1, $2 * interval '1 millisecond', now())
ON CONFLICT (url) DO UPDATE SET entry_timeout = excluded.entry_timeout, renewed_at = now()"#;

/// Forgets endpoints no instance renewed for `$1` ms (every instance delivering to one was
/// reconfigured or is gone) and their waiting events.
pub(crate) const FORGET: &str = r#"WITH stale AS (
    DELETE FROM relay_webhook_endpoints
    WHERE renewed_at < now() - $1 * interval '1 millisecond'
    RETURNING url
)
DELETE FROM relay_webhook_deliveries d
WHERE d.id IN (
    SELECT id FROM relay_webhook_deliveries WHERE url IN (SELECT url FROM stale)
    ORDER BY id FOR UPDATE SKIP LOCKED
)"#;

/// Claims up to `$2` events of `$1` for `$3` ms: each room's oldest event only (a room's
/// events go in order, one at a time), when it is due and no live claim holds it. Counts the
/// attempt.
pub(crate) const CLAIM: &str = r#"WITH heads AS (
    SELECT DISTINCT ON (document_id) id FROM relay_webhook_deliveries
    WHERE url = $1
    ORDER BY document_id, id
), due AS (
    SELECT d.id FROM relay_webhook_deliveries d JOIN heads ON heads.id = d.id
    WHERE d.next_attempt_at <= now() AND (d.claimed_until IS NULL OR d.claimed_until <= now())
    ORDER BY d.id
    LIMIT $2
    FOR UPDATE OF d SKIP LOCKED
)
UPDATE relay_webhook_deliveries d
SET claimed_until = now() + $3 * interval '1 millisecond', attempts = d.attempts + 1
FROM due WHERE d.id = due.id
RETURNING d.id, d.payload::text AS body, d.attempts"#;

/// Event `$1` was delivered.
pub(crate) const DELIVERED: &str = "DELETE FROM relay_webhook_deliveries WHERE id = $1";

/// Event `$1` failed: next attempt in `$2` ms, `$3` why.
pub(crate) const FAILED: &str = r#"UPDATE relay_webhook_deliveries
SET claimed_until = NULL, next_attempt_at = now() + $2 * interval '1 millisecond', last_error = $3
WHERE id = $1"#;

/// Drops `$1`'s events older than `$2` ms and, past the newest `$3`, the oldest; says how
/// many of each and how many wait after.
pub(crate) const TRIM: &str = r#"WITH ranked AS (
    SELECT id, created_at < now() - $2 * interval '1 millisecond' AS expired,
           row_number() OVER (ORDER BY id DESC) AS newer
    FROM relay_webhook_deliveries WHERE url = $1
), locked AS (
    SELECT d.id, ranked.expired FROM relay_webhook_deliveries d JOIN ranked ON ranked.id = d.id
    WHERE ranked.expired OR ranked.newer > $3
    ORDER BY d.id FOR UPDATE OF d SKIP LOCKED
), gone AS (
    DELETE FROM relay_webhook_deliveries d USING locked WHERE d.id = locked.id
    RETURNING locked.expired
)
SELECT count(*) FILTER (WHERE expired) AS expired,
       count(*) FILTER (WHERE NOT expired) AS overflow,
       (SELECT count(*) FROM ranked) - count(*) AS pending
FROM gone"#;

/// An event claimed for sending.
#[derive(Debug, QueryableByName)]
pub(crate) struct Claimed {
    #[diesel(sql_type = BigInt)]
    pub(crate) id: i64,
    /// The JSON body, exactly as it is signed and sent (the same on every attempt).
    #[diesel(sql_type = Text)]
    pub(crate) body: String,
    /// Attempts so far, this one included.
    #[diesel(sql_type = Integer)]
    pub(crate) attempts: i32,
}

/// What [`TRIM`] dropped and left.
#[derive(Debug, QueryableByName)]
pub(crate) struct Trimmed {
    #[diesel(sql_type = BigInt)]
    pub(crate) expired: i64,
    #[diesel(sql_type = BigInt)]
    pub(crate) overflow: i64,
    #[diesel(sql_type = BigInt)]
    pub(crate) pending: i64,
}
