//! Every metric the crate records, through the [`metrics`] facade: install a recorder
//! (`metrics-exporter-prometheus`, an OpenTelemetry bridge, …) in your server and they appear;
//! without one, each call site costs a no-op call. docs/metrics.md lists them.

use std::time::Instant;

use crate::entry::SetOutcome;

/// Counter: store operations, by `operation` (`get`, `set`, …), `store` (`memory`,
/// `postgres`) and `outcome` (`applied`, `stale`, `found`, `absent`, `removed`, `ok`, `error`).
pub const OPERATIONS: &str = "synckit_awareness_operations_total";
/// Histogram, seconds: duration of store operations, by `operation` and `store`.
pub const OPERATION_DURATION: &str = "synckit_awareness_operation_duration_seconds";
/// Counter: updates decided by `set`, `set_many` and the y-protocols path, by `store` and
/// `outcome` (`applied`, `stale`, `forbidden`, `document_full`, `connection_full`).
pub const UPDATES: &str = "synckit_awareness_updates_total";
/// Counter: PostgreSQL write statements sent again after the server failed them to break a
/// deadlock or a serialization conflict, by `kind` (`deadlock`, `serialization`). Every write
/// path locks rows in one order, so this stays at zero unless something outside the crate
/// locks the same rows.
pub const WRITE_RETRIES: &str = "synckit_awareness_write_retries_total";
/// Histogram, seconds: time waiting for a pooled PostgreSQL connection.
pub const POOL_WAIT: &str = "synckit_awareness_pool_wait_seconds";
/// Gauge: open pooled connections (sampled at checkouts, at most every 100 ms).
pub const POOL_CONNECTIONS: &str = "synckit_awareness_pool_connections";
/// Gauge: idle pooled connections (sampled at checkouts, at most every 100 ms).
pub const POOL_IDLE: &str = "synckit_awareness_pool_idle_connections";
/// Counter: change-feed keys published (one per changed client), by `kind`.
pub const FEED_PUBLISHED: &str = "synckit_awareness_feed_published_total";
/// Counter: change-feed notifications sent (each carries up to ~8000 bytes of keys).
pub const FEED_NOTIFICATIONS: &str = "synckit_awareness_feed_notifications_total";
/// Histogram, seconds: from a change being applied to its notification being committed (the
/// publisher's batching window plus the `NOTIFY` round trip).
pub const FEED_PUBLISH_LAG: &str = "synckit_awareness_feed_publish_lag_seconds";
/// Counter: change-feed batches handed to this process's own subscribers instead of being sent
/// with `NOTIFY` (each would have been one `NOTIFY` statement), because no other listener was
/// heard
/// ([`ChangeFeedOptions::notify_when_alone`](crate::ChangeFeedOptions::notify_when_alone) off).
pub const FEED_LOCAL: &str = "synckit_awareness_feed_local_total";
/// Counter: changes delivered by this process's listener (before subscriber filters).
pub const FEED_DELIVERED: &str = "synckit_awareness_feed_delivered_total";
/// Counter: times the listener lost its connection and told subscribers to resync.
pub const FEED_RESYNCS: &str = "synckit_awareness_feed_resyncs_total";
/// Counter: entries removed by pruning rounds, by `reason` (`expired`, or `abandoned`: the
/// fresh entries of an instance whose lease lapsed).
pub const PRUNED: &str = "synckit_awareness_pruned_total";
/// Counter: pruning rounds that failed (the database was unreachable, say).
pub const PRUNE_FAILURES: &str = "synckit_awareness_prune_failures_total";
/// Counter: lease take-overs, by `side`: `taken` (this process's pruner removed a lapsed
/// instance's entries; one per instance) or `lost` (this instance found its own lease taken
/// over and registered again).
pub const LEASE_TAKEOVERS: &str = "synckit_awareness_lease_takeovers_total";
/// Counter: lease renewals of this process's instance, by `result` (`ok`, `error`).
pub const LEASE_RENEWALS: &str = "synckit_awareness_lease_renewals_total";
/// Gauge: connections served by this process's [`Presence`](crate::presence::Presence) engine.
pub const PRESENCE_CONNECTIONS: &str = "synckit_awareness_presence_connections";
/// Gauge: rooms (documents) with at least one local connection in the presence engine.
pub const PRESENCE_ROOMS: &str = "synckit_awareness_presence_rooms";
/// Counter: awareness clients received by the presence engine and not written, by `reason`
/// (`echo`: a state or leave the sender was sent itself; `foreign`: a client another local
/// connection holds; `unavailable`: the database could not be reached, the connection stays).
pub const PRESENCE_DROPPED: &str = "synckit_awareness_presence_dropped_total";
/// Counter: connections the presence engine closed, by `reason` (`slow_consumer`, `invalid`,
/// `store`, `shutdown`).
pub const PRESENCE_DISCONNECTS: &str = "synckit_awareness_presence_disconnects_total";
/// Counter: awareness messages the presence engine queued for its connections.
pub const PRESENCE_SENT: &str = "synckit_awareness_presence_messages_sent_total";

/// Every metric name, for documentation and tests.
pub const ALL: &[&str] = &[
    OPERATIONS,
    OPERATION_DURATION,
    UPDATES,
    WRITE_RETRIES,
    POOL_WAIT,
    POOL_CONNECTIONS,
    POOL_IDLE,
    FEED_PUBLISHED,
    FEED_NOTIFICATIONS,
    FEED_LOCAL,
    FEED_PUBLISH_LAG,
    FEED_DELIVERED,
    FEED_RESYNCS,
    PRUNED,
    PRUNE_FAILURES,
    LEASE_TAKEOVERS,
    LEASE_RENEWALS,
    PRESENCE_CONNECTIONS,
    PRESENCE_ROOMS,
    PRESENCE_DROPPED,
    PRESENCE_DISCONNECTS,
    PRESENCE_SENT,
];

/// One finished store operation.
pub(crate) fn operation(
    operation: &'static str,
    store: &'static str,
    outcome: &'static str,
    started: Instant,
    updates: &[SetOutcome],
) {
    ::metrics::counter!(OPERATIONS, "operation" => operation, "store" => store, "outcome" => outcome)
        .increment(1);
    ::metrics::histogram!(OPERATION_DURATION, "operation" => operation, "store" => store)
        .record(started.elapsed().as_secs_f64());
    for outcome in updates {
        ::metrics::counter!(UPDATES, "store" => store, "outcome" => outcome.as_str()).increment(1);
    }
}

/// A pooled connection was handed out (or not) after waiting since `started`.
pub(crate) fn pool_wait(started: Instant) {
    ::metrics::histogram!(POOL_WAIT).record(started.elapsed().as_secs_f64());
}

pub(crate) fn pool_gauges(connections: u32, idle: u32) {
    ::metrics::gauge!(POOL_CONNECTIONS).set(f64::from(connections));
    ::metrics::gauge!(POOL_IDLE).set(f64::from(idle));
}
