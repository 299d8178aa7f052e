//! The statements the PostgreSQL store sends, built with diesel so tests can pin their SQL
//! (`debug_query`) and the benchmark can run exactly the same text through pgbench.
//!
//! Every function returns a concrete (unboxed) query type: diesel-async caches the prepared
//! statement of such queries per connection, so the hot path parses nothing after warm-up.

use diesel::expression::{AppearsOnTable, Expression, SelectableExpression, ValidGrouping};
use diesel::pg::data_types::PgInterval;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Interval, Timestamptz};
use diesel::upsert::excluded;

use crate::entry::AwarenessUpdate;
use crate::schema::awareness_entries::dsl::*;

/// `(now() - $timeout)`: entries last seen at or before this are expired.
///
/// `now()` is the database's clock (the transaction's start time), so app servers with skewed
/// clocks agree on expiry. Written as a column comparison (`last_seen > now() - t`) rather than
/// `last_seen + t > now()` so it stays index-friendly. diesel has no `-` operator on a
/// zero-argument SQL function, hence this small expression type.
#[derive(Debug, Clone, Copy, QueryId, ValidGrouping)]
pub(crate) struct Cutoff(PgInterval);

pub(crate) fn cutoff(timeout: PgInterval) -> Cutoff {
    Cutoff(timeout)
}

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

/// The contract's rule 1 as one statement: insert, or replace the existing row only when it is
/// expired, older, or the same clock being left. `execute` returns 1 when applied, 0 when stale.
pub(crate) fn set<'a>(
    update: &'a AwarenessUpdate,
    timeout: PgInterval,
) -> impl QueryFragment<Pg> + QueryId + Send + 'a {
    use diesel::query_dsl::methods::FilterDsl;
    diesel::insert_into(awareness_entries)
        .values((
            document_id.eq(&update.document_id),
            client_id.eq(&update.client_id),
            connection_id.eq(&update.connection_id),
            state.eq(&update.state),
            clock_value.eq(update.clock),
            last_seen.eq(diesel::dsl::now),
        ))
        .on_conflict((document_id, client_id))
        .do_update()
        .set((
            connection_id.eq(excluded(connection_id)),
            state.eq(excluded(state)),
            clock_value.eq(excluded(clock_value)),
            last_seen.eq(excluded(last_seen)),
        ))
        .filter(
            last_seen
                .le(cutoff(timeout))
                .or(clock_value.lt(excluded(clock_value)))
                .or(clock_value
                    .eq(excluded(clock_value))
                    .and(excluded(state).is_null())
                    .and(state.is_not_null())),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_is_one_conditional_upsert() {
        let update = AwarenessUpdate::new("doc", "client", "conn", 3, None);
        let sql =
            diesel::debug_query::<Pg, _>(&set(&update, PgInterval::from_microseconds(30_000_000)))
                .to_string();
        let sql = sql.split(" -- binds").next().unwrap_or_default();
        assert_eq!(
            sql,
            "INSERT INTO \"awareness_entries\" (\"document_id\", \"client_id\", \"connection_id\", \
             \"state\", \"clock_value\", \"last_seen\") VALUES ($1, $2, $3, $4, $5, CURRENT_TIMESTAMP) \
             ON CONFLICT (\"document_id\", \"client_id\") DO UPDATE SET \
             \"connection_id\" = excluded.\"connection_id\", \"state\" = excluded.\"state\", \
             \"clock_value\" = excluded.\"clock_value\", \"last_seen\" = excluded.\"last_seen\" \
             WHERE (((\"awareness_entries\".\"last_seen\" <= (now() - $6)) \
             OR (\"awareness_entries\".\"clock_value\" < excluded.\"clock_value\")) \
             OR (((\"awareness_entries\".\"clock_value\" = excluded.\"clock_value\") \
             AND (excluded.\"state\" IS NULL)) AND (\"awareness_entries\".\"state\" IS NOT NULL)))"
        );
    }
}
