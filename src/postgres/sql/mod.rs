//! Every statement the PostgreSQL store sends, in one place, each pinned by a `debug_query` test
//! so a change of its SQL is a visible, reviewed change (and the benchmark can run exactly the
//! same text through pgbench).
//!
//! - [`read`]: `get`, `get_all`, `get_expired`, `inspect_document`;
//! - [`write`]: `set` (one conditional upsert) and `set_many` (one statement per batch);
//! - [`delete`]: `remove`, `remove_all_for_connection`, `prune_expired`, `take_expired`;
//! - [`lease`]: the instance leases: renewal, the pruning round that takes over lapsed
//!   instances' entries, graceful shutdown;
//! - [`raw`]: the statements diesel's DSL cannot say (operator statistics, catalog queries of
//!   the schema validator), as SQL text;
//! - [`session`]: `NOTIFY`, `LISTEN`, the listener's probe, the session settings, the
//!   migration lock.
//!
//! Row types of the hand-written statements sit beside them (`lease::Departing`,
//! `lease::Renewed`, `write::SentRow`).
//!
//! What "expired" means is written here once: [`expired`], [`fresh`] (its negation) and
//! [`live`] (fresh and not a tombstone), with the same predicates as text ([`expired_sql!`],
//! [`fresh_sql!`], [`live_sql!`]) for every hand-written statement.

pub(crate) mod delete;
pub(crate) mod lease;
pub(crate) mod raw;
pub(crate) mod read;
pub(crate) mod session;
pub(crate) mod write;

use diesel::expression::{AppearsOnTable, Expression, SelectableExpression, ValidGrouping};
use diesel::pg::data_types::PgInterval;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Interval, Timestamptz};

use crate::schema::awareness_entries::dsl::*;

/// `(now() - $timeout)`: entries last seen at or before this are expired.
///
/// `now()` is the database's clock (the transaction's start time), so app servers with skewed
/// clocks agree on expiry. Written as a column comparison (`last_seen > now() - t`) rather than
/// `last_seen + t > now()` so it stays index-friendly. diesel has no `-` operator on a
/// zero-argument SQL function, hence this small expression type.
#[derive(Debug, Clone, Copy, QueryId, ValidGrouping)]
pub(crate) struct Cutoff(PgInterval);

impl Expression for Cutoff {
    type SqlType = Timestamptz;
}

impl QueryFragment<Pg> for Cutoff {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("(now() - ");
        out.push_bind_param::<Interval, _>(&self.0)?;
        out.push_sql(")");
        Ok(())
    }
}

impl<QS> AppearsOnTable<QS> for Cutoff {}
impl<QS> SelectableExpression<QS> for Cutoff {}

/// The expiry cutoff for `timeout`.
pub(crate) fn cutoff(timeout: PgInterval) -> Cutoff {
    Cutoff(timeout)
}

/// `last_seen <= now() - timeout`: the entry is expired, absent for every read.
pub(crate) type Expired = diesel::dsl::LtEq<last_seen, Cutoff>;

/// The entry is expired (see [`Expired`]).
pub(crate) fn expired(timeout: PgInterval) -> Expired {
    last_seen.le(cutoff(timeout))
}

/// `last_seen > now() - timeout`: the entry is not expired (a tombstone may be fresh).
pub(crate) type Fresh = diesel::dsl::Gt<last_seen, Cutoff>;

/// The entry is not expired (see [`Fresh`]).
pub(crate) fn fresh(timeout: PgInterval) -> Fresh {
    last_seen.gt(cutoff(timeout))
}

/// `state IS NOT NULL AND last_seen > now() - timeout`: a present participant.
pub(crate) type Live = diesel::dsl::And<diesel::dsl::IsNotNull<state>, Fresh>;

/// The entry is present: fresh and not a tombstone (see [`Live`]).
pub(crate) fn live(timeout: PgInterval) -> Live {
    state.is_not_null().and(fresh(timeout))
}

/// [`expired`] as SQL text: `expired_sql!()` for [`raw`] statements (columns unqualified, the
/// timeout as `$1`), `expired_sql!("e.", "p.timeout")` for a qualified row and another timeout
/// expression (the hand-written statements of [`write`] and [`lease`]).
macro_rules! expired_sql {
    () => {
        expired_sql!("", "$1")
    };
    ($row:literal, $timeout:literal) => {
        concat!($row, "last_seen <= now() - ", $timeout)
    };
}

/// [`fresh`] as SQL text; arguments as for [`expired_sql!`].
macro_rules! fresh_sql {
    () => {
        fresh_sql!("", "$1")
    };
    ($row:literal, $timeout:literal) => {
        concat!($row, "last_seen > now() - ", $timeout)
    };
}

/// [`live`] as SQL text; arguments as for [`expired_sql!`].
macro_rules! live_sql {
    () => {
        live_sql!("", "$1")
    };
    ($row:literal, $timeout:literal) => {
        concat!($row, "state IS NOT NULL AND ", fresh_sql!($row, $timeout))
    };
}

pub(crate) use {expired_sql, fresh_sql, live_sql};

/// The SQL text of `query`, without its binds (for the tests that pin each statement).
#[cfg(test)]
pub(crate) fn text<Q: QueryFragment<Pg>>(query: &Q) -> String {
    let sql = diesel::debug_query::<Pg, _>(query).to_string();
    sql.split(" -- binds").next().unwrap_or_default().to_owned()
}

#[cfg(test)]
pub(crate) fn thirty_seconds() -> PgInterval {
    PgInterval::from_microseconds(30_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The text forms say what the diesel predicates say.
    #[test]
    fn predicates_and_their_text_agree() {
        let bare = |text: &str| text.replace(['"', '(', ')'], "");
        let unqualified = |query: String| {
            bare(query.split(" WHERE ").nth(1).unwrap_or_default())
                .replace("awareness_entries.", "")
        };
        let expired_query = awareness_entries
            .filter(expired(thirty_seconds()))
            .select(client_id);
        assert_eq!(unqualified(text(&expired_query)), bare(expired_sql!()));
        let fresh_query = awareness_entries
            .filter(fresh(thirty_seconds()))
            .select(client_id);
        assert_eq!(unqualified(text(&fresh_query)), bare(fresh_sql!()));
        let live_query = awareness_entries
            .filter(live(thirty_seconds()))
            .select(client_id);
        assert_eq!(unqualified(text(&live_query)), bare(live_sql!()));
    }
}
