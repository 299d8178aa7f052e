//! The writes: `set` as one conditional upsert and `set_many` as one statement per batch.
//!
//! Each returns a concrete (unboxed) query type with a static query id, which diesel-async
//! prepares once per connection and caches, so the hot path parses nothing after warm-up (the
//! upsert needs [`Prepared`] for that; see there).

use diesel::pg::data_types::PgInterval;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::upsert::excluded;

use super::{cutoff, expired, Cutoff, Prepared};
use crate::entry::AwarenessUpdate;
use crate::schema::awareness_entries::dsl::*;

/// The contract's rule 1 as one statement: insert, or replace the existing row only when it is
/// expired, older, or the same clock being left. `execute` returns 1 when applied, 0 when stale.
pub(crate) fn set<'a>(
    update: &'a AwarenessUpdate,
    timeout: PgInterval,
) -> impl QueryFragment<Pg> + QueryId + Send + 'a {
    use diesel::query_dsl::methods::FilterDsl;
    Prepared::<_, SetId>::new(
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
            .filter(applies(timeout)),
    )
}

/// [`set`]'s statement identity for the prepared-statement cache.
pub(crate) struct SetId;

/// The contract's rule 1 as the upsert's `DO UPDATE ... WHERE`: the existing row is expired,
/// older, or the same clock being left. Shared by [`set`] and [`SetMany`].
fn applies(
    timeout: PgInterval,
) -> impl AppearsOnTable<awareness_entries, SqlType = diesel::sql_types::Bool>
       + QueryFragment<Pg>
       + QueryId
       + Send {
    expired(timeout)
        .or(clock_value.lt(excluded(clock_value)))
        .or(clock_value
            .eq(excluded(clock_value))
            .and(excluded(state).is_null())
            .and(state.is_not_null()))
}

/// Column arrays of a batch for [`SetMany`]: one element per distinct key, sorted by key.
#[derive(Debug, Default)]
pub(crate) struct BatchColumns<'a> {
    pub(crate) document_ids: Vec<&'a str>,
    pub(crate) client_ids: Vec<&'a str>,
    pub(crate) connection_ids: Vec<&'a str>,
    pub(crate) states: Vec<&'a Option<serde_json::Value>>,
    pub(crate) clocks: Vec<i64>,
}

/// `set_many` as one statement: the conditional upsert of [`set`] over `unnest` of column
/// arrays (at most one row per key, see `batch.rs`), plus what the caller needs to resolve
/// duplicates of a key inside the batch.
///
/// * `locked` locks the existing rows of the batch's keys (`FOR UPDATE`, in key order, so two
///   batches lock in the same order) and reads their (clock, is-leave, expired). Under READ
///   COMMITTED a locked row is re-read at its newest version, and the lock keeps it until
///   commit, so these are exactly the rows the upsert then decides against.
/// * The `(SELECT count(*) FROM locked) >= 0` filter is an uncorrelated sub-select, run once before
///   the first row is inserted: it forces every lock to be taken before any write (data-changing
///   CTEs otherwise run in an unspecified order).
/// * `xmax = 0` in `RETURNING` is true for a freshly inserted row and false for an updated one
///   (PostgreSQL's well-known upsert idiom): it tells "no row" from "a row inserted concurrently
///   after `locked` read", the one case where the old clock cannot be known.
///
/// One row per input element, in input order: `(applied, inserted, old_clock, old_is_leave,
/// old_expired)`; the old columns are NULL when `locked` found no row.
#[derive(Debug)]
pub(crate) struct SetMany<'a, R> {
    columns: BatchColumns<'a>,
    cutoff: Cutoff,
    applies: R,
}

/// The batch statement for `columns` (see [`SetMany`]).
pub(crate) fn set_many(
    columns: BatchColumns<'_>,
    timeout: PgInterval,
) -> SetMany<'_, impl QueryFragment<Pg> + Send> {
    SetMany {
        columns,
        cutoff: cutoff(timeout),
        applies: applies(timeout),
    }
}

/// Marker type: [`SetMany`]'s SQL text never changes (six array binds whatever the batch
/// size), so one prepared statement per connection serves every batch.
pub(crate) struct SetManyId;

impl<R> QueryId for SetMany<'_, R> {
    type QueryId = SetManyId;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<R> diesel::query_builder::Query for SetMany<'_, R> {
    type SqlType = (
        diesel::sql_types::Bool,
        diesel::sql_types::Nullable<diesel::sql_types::Bool>,
        diesel::sql_types::Nullable<diesel::sql_types::BigInt>,
        diesel::sql_types::Nullable<diesel::sql_types::Bool>,
        diesel::sql_types::Nullable<diesel::sql_types::Bool>,
    );
}

impl<R: QueryFragment<Pg>> QueryFragment<Pg> for SetMany<'_, R> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        push_input(&self.columns, out.reborrow())?;
        out.push_sql(
            ", locked AS MATERIALIZED (SELECT e.document_id, e.client_id, e.clock_value, \
             e.state IS NULL AS is_leave, e.last_seen <= ",
        );
        self.cutoff.walk_ast(out.reborrow())?;
        out.push_sql(
            " AS expired \
             FROM \"awareness_entries\" e JOIN input USING (document_id, client_id) \
             ORDER BY e.document_id, e.client_id FOR UPDATE OF e), \
             applied AS (INSERT INTO \"awareness_entries\" (\"document_id\", \"client_id\", \
             \"connection_id\", \"state\", \"clock_value\", \"last_seen\") \
             SELECT document_id, client_id, connection_id, state, clock_value, CURRENT_TIMESTAMP \
             FROM input WHERE (SELECT count(*) FROM locked) >= 0 ORDER BY ord \
             ON CONFLICT (\"document_id\", \"client_id\") DO UPDATE SET \
             \"connection_id\" = excluded.\"connection_id\", \"state\" = excluded.\"state\", \
             \"clock_value\" = excluded.\"clock_value\", \"last_seen\" = excluded.\"last_seen\" \
             WHERE ",
        );
        self.applies.walk_ast(out.reborrow())?;
        out.push_sql(
            " \
             RETURNING document_id, client_id, xmax = 0 AS inserted) \
             SELECT applied.document_id IS NOT NULL, applied.inserted, \
             locked.clock_value, locked.is_leave, locked.expired \
             FROM input LEFT JOIN applied USING (document_id, client_id) \
             LEFT JOIN locked USING (document_id, client_id) ORDER BY input.ord",
        );
        Ok(())
    }
}

/// `set_many` for a batch whose keys are all distinct (the common case: coalesced heartbeats
/// of different clients): the conditional upsert of [`set`] over `unnest` of the column
/// arrays, and nothing else. With one update per key, an update applied exactly when the
/// upsert returned its row, so no old row needs reading or locking. Rows are written in key
/// order (the arrays are sorted), as [`SetMany`] locks them, so concurrent batches queue
/// rather than deadlock.
///
/// One row per input element, in input order: whether it applied.
#[derive(Debug)]
pub(crate) struct SetManyDistinct<'a, R> {
    columns: BatchColumns<'a>,
    applies: R,
}

/// The lean batch statement for `columns` whose keys are distinct (see [`SetManyDistinct`]).
pub(crate) fn set_many_distinct(
    columns: BatchColumns<'_>,
    timeout: PgInterval,
) -> SetManyDistinct<'_, impl QueryFragment<Pg> + Send> {
    SetManyDistinct {
        columns,
        applies: applies(timeout),
    }
}

/// Marker type: [`SetManyDistinct`]'s SQL text never changes.
pub(crate) struct SetManyDistinctId;

impl<R> QueryId for SetManyDistinct<'_, R> {
    type QueryId = SetManyDistinctId;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl<R> diesel::query_builder::Query for SetManyDistinct<'_, R> {
    type SqlType = diesel::sql_types::Bool;
}

impl<R: QueryFragment<Pg>> QueryFragment<Pg> for SetManyDistinct<'_, R> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        push_input(&self.columns, out.reborrow())?;
        out.push_sql(
            ", applied AS (INSERT INTO \"awareness_entries\" (\"document_id\", \"client_id\", \
             \"connection_id\", \"state\", \"clock_value\", \"last_seen\") \
             SELECT document_id, client_id, connection_id, state, clock_value, CURRENT_TIMESTAMP \
             FROM input ORDER BY ord \
             ON CONFLICT (\"document_id\", \"client_id\") DO UPDATE SET \
             \"connection_id\" = excluded.\"connection_id\", \"state\" = excluded.\"state\", \
             \"clock_value\" = excluded.\"clock_value\", \"last_seen\" = excluded.\"last_seen\" \
             WHERE ",
        );
        self.applies.walk_ast(out.reborrow())?;
        out.push_sql(
            " RETURNING document_id, client_id) \
             SELECT applied.document_id IS NOT NULL \
             FROM input LEFT JOIN applied USING (document_id, client_id) ORDER BY input.ord",
        );
        Ok(())
    }
}

/// `WITH input AS (…)`: the batch's column arrays as rows, ids in byte order (`COLLATE "C"`,
/// as the table's), numbered by `ord`.
fn push_input<'b>(c: &'b BatchColumns<'_>, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
    use diesel::sql_types::{Array, BigInt, Jsonb, Nullable, Text};
    out.push_sql(
        "WITH input AS (SELECT i.document_id COLLATE \"C\" AS document_id, \
         i.client_id COLLATE \"C\" AS client_id, i.connection_id, i.state, i.clock_value, i.ord \
         FROM unnest(",
    );
    out.push_bind_param::<Array<Text>, _>(&c.document_ids)?;
    out.push_sql("::text[], ");
    out.push_bind_param::<Array<Text>, _>(&c.client_ids)?;
    out.push_sql("::text[], ");
    out.push_bind_param::<Array<Text>, _>(&c.connection_ids)?;
    out.push_sql("::text[], ");
    out.push_bind_param::<Array<Nullable<Jsonb>>, _>(&c.states)?;
    out.push_sql("::jsonb[], ");
    out.push_bind_param::<Array<BigInt>, _>(&c.clocks)?;
    out.push_sql(
        "::bigint[]) WITH ORDINALITY \
         AS i(document_id, client_id, connection_id, state, clock_value, ord))",
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_is_one_conditional_upsert() {
        let update = AwarenessUpdate::new("doc", "client", "conn", 3, None);
        assert_eq!(
            super::super::text(&set(&update, super::super::thirty_seconds())),
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

    #[test]
    fn distinct_batches_skip_the_old_row_read() {
        let updates = [AwarenessUpdate::new("doc", "client", "conn", 3, None)];
        let plan = crate::postgres::batch::BatchPlan::new(&updates);
        let query = set_many_distinct(plan.columns(&updates), super::super::thirty_seconds());
        assert_eq!(
            super::super::text(&query),
            "WITH input AS (SELECT i.document_id COLLATE \"C\" AS document_id, i.client_id COLLATE \"C\" \
             AS client_id, i.connection_id, i.state, i.clock_value, i.ord FROM unnest($1::text[], \
             $2::text[], $3::text[], $4::jsonb[], $5::bigint[]) WITH ORDINALITY AS i(document_id, \
             client_id, connection_id, state, clock_value, ord)), applied AS (INSERT INTO \
             \"awareness_entries\" (\"document_id\", \"client_id\", \"connection_id\", \"state\", \
             \"clock_value\", \"last_seen\") SELECT document_id, client_id, connection_id, state, \
             clock_value, CURRENT_TIMESTAMP FROM input ORDER BY ord ON CONFLICT (\"document_id\", \
             \"client_id\") DO UPDATE SET \"connection_id\" = excluded.\"connection_id\", \"state\" = \
             excluded.\"state\", \"clock_value\" = excluded.\"clock_value\", \"last_seen\" = \
             excluded.\"last_seen\" WHERE (((\"awareness_entries\".\"last_seen\" <= (now() - $6)) OR \
             (\"awareness_entries\".\"clock_value\" < excluded.\"clock_value\")) OR \
             (((\"awareness_entries\".\"clock_value\" = excluded.\"clock_value\") AND (excluded.\"state\" IS \
             NULL)) AND (\"awareness_entries\".\"state\" IS NOT NULL))) RETURNING document_id, client_id) \
             SELECT applied.document_id IS NOT NULL FROM input LEFT JOIN applied USING (document_id, \
             client_id) ORDER BY input.ord"
        );
    }

    #[test]
    fn set_many_is_one_statement_with_array_binds() {
        let updates = [AwarenessUpdate::new("doc", "client", "conn", 3, None)];
        let plan = crate::postgres::batch::BatchPlan::new(&updates);
        let query = set_many(plan.columns(&updates), super::super::thirty_seconds());
        assert_eq!(
            super::super::text(&query),
            "WITH input AS (SELECT i.document_id COLLATE \"C\" AS document_id, i.client_id COLLATE \"C\" \
             AS client_id, i.connection_id, i.state, i.clock_value, i.ord FROM unnest($1::text[], \
             $2::text[], $3::text[], $4::jsonb[], $5::bigint[]) WITH ORDINALITY AS i(document_id, \
             client_id, connection_id, state, clock_value, ord)), locked AS MATERIALIZED (SELECT \
             e.document_id, e.client_id, e.clock_value, e.state IS NULL AS is_leave, e.last_seen <= \
             (now() - $6) AS expired FROM \"awareness_entries\" e JOIN input USING (document_id, \
             client_id) ORDER BY e.document_id, e.client_id FOR UPDATE OF e), applied AS (INSERT INTO \
             \"awareness_entries\" (\"document_id\", \"client_id\", \"connection_id\", \"state\", \
             \"clock_value\", \"last_seen\") SELECT document_id, client_id, connection_id, state, \
             clock_value, CURRENT_TIMESTAMP FROM input WHERE (SELECT count(*) FROM locked) >= 0 ORDER \
             BY ord ON CONFLICT (\"document_id\", \"client_id\") DO UPDATE SET \"connection_id\" = \
             excluded.\"connection_id\", \"state\" = excluded.\"state\", \"clock_value\" = \
             excluded.\"clock_value\", \"last_seen\" = excluded.\"last_seen\" WHERE \
             (((\"awareness_entries\".\"last_seen\" <= (now() - $7)) OR \
             (\"awareness_entries\".\"clock_value\" < excluded.\"clock_value\")) OR \
             (((\"awareness_entries\".\"clock_value\" = excluded.\"clock_value\") AND (excluded.\"state\" IS \
             NULL)) AND (\"awareness_entries\".\"state\" IS NOT NULL))) RETURNING document_id, client_id, \
             xmax = 0 AS inserted) SELECT applied.document_id IS NOT NULL, applied.inserted, \
             locked.clock_value, locked.is_leave, locked.expired FROM input LEFT JOIN applied USING \
             (document_id, client_id) LEFT JOIN locked USING (document_id, client_id) ORDER BY \
             input.ord"
        );
    }
}
