//! What every write statement shares: the insert's columns, the conditional upsert (rules 1,
//! 2 and 4), the outcome codes, and the context a write runs in.

use diesel::pg::data_types::PgInterval;

use crate::entry::SetOutcome;
use crate::postgres::sql::expired_sql;
use crate::store::StoreOptions;

/// The outcome for the code the full and batch statements return.
pub(crate) fn outcome(code: i16) -> Option<SetOutcome> {
    Some(match code {
        0 => SetOutcome::Applied,
        1 => SetOutcome::Stale,
        2 => SetOutcome::Forbidden,
        3 => SetOutcome::DocumentFull,
        4 => SetOutcome::ConnectionFull,
        _ => return None,
    })
}

/// The column list every write inserts, and the `DO UPDATE SET` of the upsert.
pub(super) const INSERT_COLUMNS: &str = "INSERT INTO awareness_entries (document_id, client_id, \
     connection_id, state, clock_value, last_seen, owner, instance_id) ";

/// Rules 1 and 2 on the conflicting row (`awareness_entries`) and the proposed one
/// (`excluded`): expired, or owned by the writer (or nobody) and beaten on clocks.
pub(super) const UPSERT: &str = concat!(
    " ON CONFLICT (document_id, client_id) DO UPDATE SET connection_id = excluded.connection_id, \
     state = excluded.state, clock_value = excluded.clock_value, last_seen = excluded.last_seen, \
     owner = excluded.owner, instance_id = excluded.instance_id WHERE ",
    expired_sql!("awareness_entries.", "(SELECT timeout FROM p)"),
    " OR ((awareness_entries.owner IS NULL OR awareness_entries.owner = excluded.owner) \
     AND (awareness_entries.clock_value < excluded.clock_value \
     OR (awareness_entries.clock_value = excluded.clock_value AND excluded.state IS NULL \
     AND awareness_entries.state IS NOT NULL)))"
);

/// What a write needs besides its updates: the expiry timeout, the writing instance and
/// the limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriteContext<'a> {
    pub(crate) timeout: PgInterval,
    pub(crate) instance_id: Option<&'a str>,
    pub(crate) max_document: Option<i64>,
    pub(crate) max_connection: Option<i64>,
}

impl<'a> WriteContext<'a> {
    pub(crate) fn new(
        timeout: PgInterval,
        instance_id: Option<&'a str>,
        options: &StoreOptions,
    ) -> Self {
        Self {
            timeout,
            instance_id,
            max_document: options.max_clients_per_document.map(i64::from),
            max_connection: options.max_clients_per_connection.map(i64::from),
        }
    }
}

/// The context the statement tests build their statements with.
#[cfg(test)]
pub(super) fn test_context() -> WriteContext<'static> {
    WriteContext::new(
        crate::postgres::sql::thirty_seconds(),
        Some("instance"),
        &StoreOptions::default(),
    )
}
