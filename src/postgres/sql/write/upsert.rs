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

/// What a write needs besides its updates: the expiry timeout, the writing instance, the
/// limits, and the `synchronous_commit` the write's transaction takes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WriteContext<'a> {
    pub(crate) timeout: PgInterval,
    pub(crate) instance_id: Option<&'a str>,
    pub(crate) max_document: Option<i64>,
    pub(crate) max_connection: Option<i64>,
    /// `Some("off")` / `Some("on")`: set for the statement's own transaction (behind a
    /// transaction-mode pooler, where no session setting can say it); `None`: the session's.
    pub(crate) synchronous_commit: Option<&'static str>,
}

/// The column every write statement's parameter row (`p`) carries so that its transaction
/// commits as the store's options say: `set_config(…, true)` lasts until the commit, which is
/// when PostgreSQL reads `synchronous_commit`. `$1` and `$2` both bind
/// [`WriteContext::synchronous_commit`] (NULL: nothing is set). A volatile function in a
/// `WITH` query keeps it from being inlined, so it is evaluated when `p` is read.
pub(super) const COMMIT_SETTING: [&str; 3] = [
    "(",
    "::text IS NULL OR set_config('synchronous_commit', ",
    "::text, true) IS NOT NULL) AS commit_setting",
];

/// Writes [`COMMIT_SETTING`] with `context`'s binds.
pub(super) fn walk_commit_setting<'b>(
    context: &'b WriteContext<'_>,
    out: &mut diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
) -> diesel::QueryResult<()> {
    use diesel::sql_types::{Nullable, Text};
    out.push_sql(COMMIT_SETTING[0]);
    out.push_bind_param::<Nullable<Text>, _>(&context.synchronous_commit)?;
    out.push_sql(COMMIT_SETTING[1]);
    out.push_bind_param::<Nullable<Text>, _>(&context.synchronous_commit)?;
    out.push_sql(COMMIT_SETTING[2]);
    Ok(())
}

impl<'a> WriteContext<'a> {
    pub(crate) fn new(
        timeout: PgInterval,
        instance_id: Option<&'a str>,
        options: &StoreOptions,
        synchronous_commit: Option<&'static str>,
    ) -> Self {
        Self {
            timeout,
            instance_id,
            max_document: options.max_clients_per_document.map(i64::from),
            max_connection: options.max_clients_per_connection.map(i64::from),
            synchronous_commit,
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
        Some("off"),
    )
}
