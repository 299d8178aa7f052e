//! The writes: `set` as one statement around the conditional upsert, and `set_many` as one
//! statement per batch.
//!
//! Every write decides, in its one statement, the contract's rules in order (docs/contract.md):
//!
//! 1. **ownership** — a fresh entry owned by a principal is written only by that principal
//!    (`owner`); expired entries are free;
//! 2. **clocks** — the existing fresh entry loses to a higher clock, or to a leave at its clock;
//! 3. **limits** — an update with a state for a client that has no live entry *joins*; it is
//!    refused when the document or the connection already holds its maximum of live
//!    participants.
//!
//! Rules 1 and 2 sit in the upsert's `DO UPDATE … WHERE` (the row is locked and re-read there,
//! so they are exact under any concurrency). Rule 3 filters the rows the upsert proposes, from
//! counts read in the statement's snapshot: two statements joining one document at the same
//! instant can both see room for one more (docs/contract.md says so); inside one batch, joins
//! are numbered so that a batch can never exceed a limit by itself.
//!
//! The batch statements return, per update, its outcome as a code (`SetOutcome::from_code`):
//! 0 applied, 1 stale, 2 forbidden, 3 document full, 4 connection full; their scalars are
//! bound once, in a `p` row every part of the statement reads. `set` returns only whether it
//! applied (the hot path stays one upsert), and a refused `set` reads its reason with
//! [`REFUSAL`]. Either way the reason of a refusal is worked out from a snapshot, so under a
//! race it may be the wrong one — never "applied" for an update that was not. The statements'
//! SQL text never changes, so each is prepared once per connection (static query ids).

use diesel::pg::data_types::PgInterval;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Interval, Jsonb, Nullable, SmallInt, Text};

use crate::entry::AwarenessUpdate;
use crate::store::StoreOptions;

/// `$alias` is live: a state, not expired (`p.timeout` is the expiry timeout).
macro_rules! live_row {
    ($alias:literal) => {
        concat!(
            $alias,
            ".state IS NOT NULL AND ",
            $alias,
            ".last_seen > now() - p.timeout"
        )
    };
}

/// The column list every write inserts, and the `DO UPDATE SET` of the upsert.
const INSERT_COLUMNS: &str = "INSERT INTO awareness_entries (document_id, client_id, \
     connection_id, state, clock_value, last_seen, owner, instance_id) ";

/// Rules 1 and 2 on the conflicting row (`awareness_entries`) and the proposed one
/// (`excluded`): expired, or owned by the writer (or nobody) and beaten on clocks.
const UPSERT: &str = concat!(
    " ON CONFLICT (document_id, client_id) DO UPDATE SET connection_id = excluded.connection_id, \
     state = excluded.state, clock_value = excluded.clock_value, last_seen = excluded.last_seen, \
     owner = excluded.owner, instance_id = excluded.instance_id \
     WHERE awareness_entries.last_seen <= now() - (SELECT timeout FROM p) \
     OR ((awareness_entries.owner IS NULL OR awareness_entries.owner = excluded.owner) \
     AND (awareness_entries.clock_value < excluded.clock_value \
     OR (awareness_entries.clock_value = excluded.clock_value AND excluded.state IS NULL \
     AND awareness_entries.state IS NOT NULL)))"
);

/// The code of an update `$u` that was not applied, as far as the key's fresh row `f` (NULL
/// columns when none) tells: 2 when another principal owns it, 1 when it wins on clocks.
macro_rules! refused_by_row {
    ($u:literal) => {
        concat!(
            "WHEN f.owner IS NOT NULL AND f.owner IS DISTINCT FROM ",
            $u,
            ".owner THEN 2 WHEN f.document_id IS NOT NULL AND NOT (f.clock_value < ",
            $u,
            ".clock_value OR (f.clock_value = ",
            $u,
            ".clock_value AND ",
            $u,
            ".state IS NULL AND f.state IS NOT NULL)) THEN 1 "
        )
    };
}

/// What each placeholder of [`SET_SQL`] binds, in order.
#[derive(Debug, Clone, Copy)]
enum Bind {
    Document,
    Client,
    Connection,
    State,
    Clock,
    Timeout,
    Owner,
    Instance,
    MaxDocument,
    MaxConnection,
}

/// `set` as one conditional upsert (see the module docs), with every parameter bound where it
/// is used ([`SET_BINDS`] says which value each `$n` is):
///
/// * the proposed row passes the `WHERE` of its `SELECT` when it cannot be a join refused by a
///   limit: a leave, no limit set, a row already there for the key (then the conflict branch
///   decides), or room in the document and the connection;
/// * the conflict branch applies rules 1 and 2, and rule 3 when the existing row is not a live
///   participant (a tombstone or expired) and the update has a state.
///
/// A heartbeat costs one primary-key probe more than the bare upsert. `execute` returns 1 when
/// applied, 0 when refused; the reason is read afterwards ([`REFUSAL`]).
const SET_SQL: &str = concat!(
    "INSERT INTO awareness_entries (document_id, client_id, connection_id, state, clock_value, \
     last_seen, owner, instance_id) \
     SELECT $1::text, $2::text, $3::text, $4::jsonb, $5::bigint, CURRENT_TIMESTAMP, $6::text, \
     $7::text WHERE $8::jsonb IS NULL OR ($9::bigint IS NULL AND $10::bigint IS NULL) \
     OR EXISTS (SELECT 1 FROM awareness_entries x WHERE x.document_id = $11 AND x.client_id = $12) \
     OR (($13::bigint IS NULL OR (SELECT count(*) FROM awareness_entries d \
     WHERE d.document_id = $14 AND d.state IS NOT NULL AND d.last_seen > now() - $15::interval) \
     < $16::bigint) \
     AND ($17::bigint IS NULL OR (SELECT count(*) FROM awareness_entries c \
     WHERE c.connection_id = $18 AND c.state IS NOT NULL AND c.last_seen > now() - $19::interval) \
     < $20::bigint)) \
     ON CONFLICT (document_id, client_id) DO UPDATE SET connection_id = excluded.connection_id, \
     state = excluded.state, clock_value = excluded.clock_value, last_seen = excluded.last_seen, \
     owner = excluded.owner, instance_id = excluded.instance_id \
     WHERE (awareness_entries.last_seen <= now() - $21::interval \
     OR ((awareness_entries.owner IS NULL OR awareness_entries.owner = excluded.owner) \
     AND (awareness_entries.clock_value < excluded.clock_value \
     OR (awareness_entries.clock_value = excluded.clock_value AND excluded.state IS NULL \
     AND awareness_entries.state IS NOT NULL)))) \
     AND (excluded.state IS NULL \
     OR (awareness_entries.state IS NOT NULL AND awareness_entries.last_seen > now() - $22::interval) \
     OR (($23::bigint IS NULL OR (SELECT count(*) FROM awareness_entries d \
     WHERE d.document_id = $24 AND d.state IS NOT NULL AND d.last_seen > now() - $25::interval) \
     < $26::bigint) \
     AND ($27::bigint IS NULL OR (SELECT count(*) FROM awareness_entries c \
     WHERE c.connection_id = $28 AND c.state IS NOT NULL AND c.last_seen > now() - $29::interval) \
     < $30::bigint)))"
);

/// The value of each placeholder of [`SET_SQL`], `$1` first.
const SET_BINDS: [Bind; 30] = {
    use Bind::*;
    [
        Document,
        Client,
        Connection,
        State,
        Clock,
        Owner,
        Instance,
        State,
        MaxDocument,
        MaxConnection,
        Document,
        Client,
        MaxDocument,
        Document,
        Timeout,
        MaxDocument,
        MaxConnection,
        Connection,
        Timeout,
        MaxConnection,
        Timeout,
        Timeout,
        MaxDocument,
        Document,
        Timeout,
        MaxDocument,
        MaxConnection,
        Connection,
        Timeout,
        MaxConnection,
    ]
};

/// [`SET_SQL`] cut at its binds, once.
static SET_PIECES: std::sync::LazyLock<Vec<String>> =
    std::sync::LazyLock::new(|| cut_at_binds(SET_SQL, SET_BINDS.len()));

/// Why a `set` that wrote nothing was refused, read right after it: the code of the key's
/// fresh row (2 forbidden, 1 stale; NULL when neither), whether the key holds a live
/// participant, and the live participants of the document and of the connection. `$1`
/// document, `$2` client, `$3` owner, `$4` clock, `$5` is-leave, `$6` timeout, `$7`
/// connection. A concurrent change between the two statements can make the reason wrong, never
/// the outcome (nothing was written).
pub(crate) const REFUSAL: &str = "SELECT (SELECT CASE WHEN f.owner IS NOT NULL \
     AND f.owner IS DISTINCT FROM $3 THEN 2::smallint WHEN NOT (f.clock_value < $4 \
     OR (f.clock_value = $4 AND $5 AND f.state IS NOT NULL)) THEN 1::smallint END \
     FROM awareness_entries f WHERE f.document_id = $1 AND f.client_id = $2 \
     AND f.last_seen > now() - $6) AS by_row, \
     EXISTS (SELECT 1 FROM awareness_entries l WHERE l.document_id = $1 AND l.client_id = $2 \
     AND l.state IS NOT NULL AND l.last_seen > now() - $6) AS live, \
     (SELECT count(*) FROM awareness_entries d WHERE d.document_id = $1 \
     AND d.state IS NOT NULL AND d.last_seen > now() - $6) AS in_document, \
     (SELECT count(*) FROM awareness_entries c WHERE c.connection_id = $7 \
     AND c.state IS NOT NULL AND c.last_seen > now() - $6) AS on_connection";

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

/// `set`: rules 1-3 and the write in one statement; `execute` returns 1 when applied.
pub(crate) fn set<'a>(update: &'a AwarenessUpdate, context: WriteContext<'a>) -> SetStatement<'a> {
    SetStatement { update, context }
}

/// The `set` statement for one update (see [`SET_SQL`]).
#[derive(Debug)]
pub(crate) struct SetStatement<'a> {
    update: &'a AwarenessUpdate,
    context: WriteContext<'a>,
}

/// [`set`]'s statement identity for the prepared-statement cache.
pub(crate) struct SetId;

impl QueryId for SetStatement<'_> {
    type QueryId = SetId;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Pg> for SetStatement<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let pieces = SET_PIECES.as_slice();
        let Some((last, pieces)) = pieces.split_last() else {
            return Err(diesel::result::Error::QueryBuilderError(
                "the set statement's SQL text could not be built".into(),
            ));
        };
        let (u, c) = (self.update, &self.context);
        for (piece, bind) in pieces.iter().zip(SET_BINDS) {
            out.push_sql(piece);
            match bind {
                Bind::Document => out.push_bind_param::<Text, _>(&u.document_id)?,
                Bind::Client => out.push_bind_param::<Text, _>(&u.client_id)?,
                Bind::Connection => out.push_bind_param::<Text, _>(&u.connection_id)?,
                Bind::State => out.push_bind_param::<Nullable<Jsonb>, _>(&u.state)?,
                Bind::Clock => out.push_bind_param::<BigInt, _>(&u.clock)?,
                Bind::Timeout => out.push_bind_param::<Interval, _>(&c.timeout)?,
                Bind::Owner => out.push_bind_param::<Nullable<Text>, _>(&u.owner)?,
                Bind::Instance => out.push_bind_param::<Nullable<Text>, _>(&c.instance_id)?,
                Bind::MaxDocument => out.push_bind_param::<Nullable<BigInt>, _>(&c.max_document)?,
                Bind::MaxConnection => {
                    out.push_bind_param::<Nullable<BigInt>, _>(&c.max_connection)?
                }
            }
        }
        out.push_sql(last);
        Ok(())
    }

    fn is_safe_to_cache_prepared(&self, _backend: &Pg) -> QueryResult<bool> {
        Ok(true)
    }
}

/// `sql` cut at its placeholders `$1`..`$binds`, in order: `binds + 1` pieces, or none when a
/// placeholder is missing or out of order.
fn cut_at_binds(sql: &str, binds: usize) -> Vec<String> {
    let mut pieces = Vec::with_capacity(binds + 1);
    let mut rest = sql;
    for n in 1..=binds {
        let placeholder = format!("${n}");
        let Some(at) = rest.find(&placeholder) else {
            return Vec::new();
        };
        let after = &rest[at + placeholder.len()..];
        if after.starts_with(|c: char| c.is_ascii_digit()) {
            return Vec::new();
        }
        pieces.push(rest[..at].to_owned());
        rest = after;
    }
    pieces.push(rest.to_owned());
    pieces
}

/// Column arrays of a batch: one element per distinct key, sorted by key.
#[derive(Debug, Default)]
pub(crate) struct BatchColumns<'a> {
    pub(crate) document_ids: Vec<&'a str>,
    pub(crate) client_ids: Vec<&'a str>,
    pub(crate) connection_ids: Vec<&'a str>,
    pub(crate) states: Vec<&'a Option<serde_json::Value>>,
    pub(crate) clocks: Vec<i64>,
    pub(crate) owners: Vec<Option<&'a str>>,
}

/// `set_many` as one statement: the upsert of [`set`] over `unnest` of column arrays (at most
/// one row per key, see `batch.rs`), plus what the caller needs to resolve duplicates of a key
/// inside the batch.
///
/// * `locked` locks the existing rows of the batch's keys (`FOR UPDATE`, in key order, so two
///   batches lock in the same order) and reads their (clock, is-leave, expired). Under READ
///   COMMITTED a locked row is re-read at its newest version, and the lock keeps it until
///   commit, so these are exactly the rows the upsert then decides against.
/// * The `(SELECT count(*) FROM locked) >= 0` filter is an uncorrelated sub-select, run once
///   before the first row is inserted: it forces every lock to be taken before any write
///   (data-changing CTEs otherwise run in an unspecified order).
/// * `xmax = 0` in `RETURNING` is true for a freshly inserted row and false for an updated one
///   (PostgreSQL's well-known upsert idiom): it tells "no row" from "a row inserted
///   concurrently after `locked` read", the one case where the old clock cannot be known.
///
/// One row per key, in key order: `(code, inserted, old_clock, old_is_leave, old_expired)`;
/// the old columns are NULL when `locked` found no row.
#[derive(Debug)]
pub(crate) struct SetMany<'a> {
    columns: BatchColumns<'a>,
    context: WriteContext<'a>,
    exact: bool,
}

/// The batch statement that resolves repeated keys (see [`SetMany`]).
pub(crate) fn set_many<'a>(columns: BatchColumns<'a>, context: WriteContext<'a>) -> SetMany<'a> {
    SetMany {
        columns,
        context,
        exact: true,
    }
}

/// `set_many` for a batch whose keys are all distinct (the common case: a y-protocols message,
/// or coalesced heartbeats of different clients): the upsert over `unnest` of the column
/// arrays and the outcome codes, without the `locked` read of old rows (with one update per
/// key, the code is the outcome). One row per key, in key order: the code.
pub(crate) fn set_many_distinct<'a>(
    columns: BatchColumns<'a>,
    context: WriteContext<'a>,
) -> SetMany<'a> {
    SetMany {
        columns,
        context,
        exact: false,
    }
}

/// Marker types: the batch statements' SQL texts never change (the same binds whatever the
/// batch size), so one prepared statement per connection serves every batch.
pub(crate) struct SetManyId;
pub(crate) struct SetManyDistinctId;

/// [`SetMany`] in its exact form, typed for loading.
#[derive(Debug)]
pub(crate) struct Exact<'a>(pub(crate) SetMany<'a>);

/// [`SetMany`] in its distinct form, typed for loading.
#[derive(Debug)]
pub(crate) struct Distinct<'a>(pub(crate) SetMany<'a>);

impl QueryId for Exact<'_> {
    type QueryId = SetManyId;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryId for Distinct<'_> {
    type QueryId = SetManyDistinctId;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl diesel::query_builder::Query for Exact<'_> {
    type SqlType = (
        SmallInt,
        Nullable<diesel::sql_types::Bool>,
        Nullable<BigInt>,
        Nullable<diesel::sql_types::Bool>,
        Nullable<diesel::sql_types::Bool>,
    );
}

impl diesel::query_builder::Query for Distinct<'_> {
    type SqlType = SmallInt;
}

impl QueryFragment<Pg> for Exact<'_> {
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.0.walk_ast(out)
    }
}

impl QueryFragment<Pg> for Distinct<'_> {
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.0.walk_ast(out)
    }
}

impl<'a> SetMany<'a> {
    /// This statement, typed by its form for loading.
    pub(crate) fn exact(self) -> Exact<'a> {
        Exact(self)
    }

    /// This statement, typed by its form for loading.
    pub(crate) fn distinct(self) -> Distinct<'a> {
        Distinct(self)
    }
}

impl QueryFragment<Pg> for SetMany<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let c = &self.columns;
        let x = &self.context;
        // The batch as rows, ids in byte order (`COLLATE "C"`, as the table's), numbered.
        out.push_sql(
            "WITH input AS (SELECT i.document_id COLLATE \"C\" AS document_id, \
             i.client_id COLLATE \"C\" AS client_id, i.connection_id COLLATE \"C\" AS connection_id, \
             i.state, i.clock_value, i.owner COLLATE \"C\" AS owner, i.ord FROM unnest(",
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
        out.push_sql("::bigint[], ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&c.owners)?;
        out.push_sql(
            "::text[]) WITH ORDINALITY \
             AS i(document_id, client_id, connection_id, state, clock_value, owner, ord)), \
             p AS (SELECT ",
        );
        out.push_bind_param::<Interval, _>(&x.timeout)?;
        out.push_sql("::interval AS timeout, ");
        out.push_bind_param::<Nullable<Text>, _>(&x.instance_id)?;
        out.push_sql("::text COLLATE \"C\" AS instance_id, ");
        out.push_bind_param::<Nullable<BigInt>, _>(&x.max_document)?;
        out.push_sql("::bigint AS max_document, ");
        out.push_bind_param::<Nullable<BigInt>, _>(&x.max_connection)?;
        out.push_sql(concat!(
            "::bigint AS max_connection), ",
            // Rule 3: which rows join, and how many live participants their documents and
            // connections hold (one count per document and per connection).
            "joining AS (SELECT input.*, input.state IS NOT NULL \
             AND (p.max_document IS NOT NULL OR p.max_connection IS NOT NULL) \
             AND NOT EXISTS (SELECT 1 FROM awareness_entries l \
             WHERE l.document_id = input.document_id AND l.client_id = input.client_id AND ",
            live_row!("l"),
            ") AS joins FROM input, p), \
             in_document AS (SELECT j.document_id, n.live \
             FROM (SELECT DISTINCT document_id FROM joining WHERE joins) j \
             CROSS JOIN LATERAL (SELECT count(*) AS live FROM awareness_entries d, p \
             WHERE d.document_id = j.document_id AND ",
            live_row!("d"),
            ") n), \
             on_connection AS (SELECT j.connection_id, n.live \
             FROM (SELECT DISTINCT connection_id FROM joining WHERE joins) j \
             CROSS JOIN LATERAL (SELECT count(*) AS live FROM awareness_entries c, p \
             WHERE c.connection_id = j.connection_id AND ",
            live_row!("c"),
            ") n), ",
            // The n-th join of a document (or connection) in the batch needs room for n.
            "counted AS (SELECT j.*, \
             j.joins AND p.max_document IS NOT NULL AND coalesce(d.live, 0) \
             + count(*) FILTER (WHERE j.joins) OVER (PARTITION BY j.document_id ORDER BY j.ord) \
             > p.max_document AS document_full, \
             j.joins AND p.max_connection IS NOT NULL AND coalesce(c.live, 0) \
             + count(*) FILTER (WHERE j.joins) OVER (PARTITION BY j.connection_id ORDER BY j.ord) \
             > p.max_connection AS connection_full \
             FROM joining j CROSS JOIN p \
             LEFT JOIN in_document d ON d.document_id = j.document_id \
             LEFT JOIN on_connection c ON c.connection_id = j.connection_id), "
        ));
        if self.exact {
            out.push_sql(
                "locked AS MATERIALIZED (SELECT e.document_id, e.client_id, e.clock_value, \
                 e.state IS NULL AS is_leave, e.last_seen <= now() - p.timeout AS expired \
                 FROM awareness_entries e JOIN input USING (document_id, client_id) CROSS JOIN p \
                 ORDER BY e.document_id, e.client_id FOR UPDATE OF e), ",
            );
        }
        out.push_sql("applied AS (");
        out.push_sql(INSERT_COLUMNS);
        out.push_sql(
            "SELECT u.document_id, u.client_id, u.connection_id, u.state, u.clock_value, \
             CURRENT_TIMESTAMP, u.owner, p.instance_id FROM counted u, p \
             WHERE NOT u.document_full AND NOT u.connection_full ",
        );
        if self.exact {
            out.push_sql("AND (SELECT count(*) FROM locked) >= 0 ");
        }
        out.push_sql("ORDER BY u.ord");
        out.push_sql(UPSERT);
        out.push_sql(concat!(
            " RETURNING document_id, client_id, xmax = 0 AS inserted) \
             SELECT (CASE WHEN a.document_id IS NOT NULL THEN 0 ",
            refused_by_row!("u"),
            "WHEN u.document_full THEN 3 WHEN u.connection_full THEN 4 ELSE 1 END)::smallint"
        ));
        if self.exact {
            out.push_sql(
                ", a.inserted, locked.clock_value, locked.is_leave, locked.expired \
                 FROM counted u CROSS JOIN p \
                 LEFT JOIN locked ON locked.document_id = u.document_id \
                 AND locked.client_id = u.client_id",
            );
        } else {
            out.push_sql(" FROM counted u CROSS JOIN p");
        }
        out.push_sql(
            " LEFT JOIN applied a ON a.document_id = u.document_id AND a.client_id = u.client_id \
             LEFT JOIN awareness_entries f ON f.document_id = u.document_id \
             AND f.client_id = u.client_id AND f.last_seen > now() - p.timeout \
             ORDER BY u.ord",
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> WriteContext<'static> {
        WriteContext::new(
            super::super::thirty_seconds(),
            Some("instance"),
            &StoreOptions::default(),
        )
    }

    #[test]
    fn set_text_has_its_binds_in_order() {
        assert_eq!(SET_PIECES.len(), SET_BINDS.len() + 1);
        assert!(cut_at_binds("a $1 b $2", 3).is_empty());
        assert!(cut_at_binds("a $10", 1).is_empty());
        let update = AwarenessUpdate::new("doc", "client", "conn", 3, None);
        assert_eq!(super::super::text(&set(&update, context())), SET_SQL);
    }

    /// Every use of a value is bound to that value.
    #[test]
    fn set_binds_match_what_each_placeholder_stands_for() {
        let update = AwarenessUpdate::new("doc", "client", "conn", 3, Some(serde_json::json!(1)))
            .with_owner(Some("owner".into()));
        let debug = diesel::debug_query::<Pg, _>(&set(&update, context())).to_string();
        let binds = debug.split(" -- binds: ").nth(1).unwrap_or_default();
        assert_eq!(
            binds.matches("\"doc\"").count(),
            SET_BINDS
                .iter()
                .filter(|b| matches!(b, Bind::Document))
                .count()
        );
        assert_eq!(binds.matches("\"owner\"").count(), 1);
        assert_eq!(binds.matches("\"instance\"").count(), 1);
        let uses = |want: fn(&Bind) -> bool| SET_BINDS.iter().filter(|b| want(b)).count();
        assert_eq!(
            binds.matches("Some(1000)").count(),
            uses(|b| matches!(b, Bind::MaxDocument))
        );
        assert_eq!(
            binds.matches("Some(64)").count(),
            uses(|b| matches!(b, Bind::MaxConnection))
        );
        assert_eq!(
            binds.matches("\"conn\"").count(),
            uses(|b| matches!(b, Bind::Connection))
        );
    }

    /// The batch statements carry the same upsert as `set`, and differ only by `locked`.
    #[test]
    fn batch_statements_share_the_upsert() {
        let updates = [AwarenessUpdate::new("doc", "client", "conn", 3, None)];
        let plan = crate::postgres::batch::BatchPlan::new(&updates);
        let exact = super::super::text(&set_many(plan.columns(&updates), context()).exact());
        let distinct =
            super::super::text(&set_many_distinct(plan.columns(&updates), context()).distinct());
        for sql in [&exact, &distinct] {
            assert!(sql.contains(UPSERT), "{sql}");
            assert!(sql.contains(INSERT_COLUMNS), "{sql}");
        }
        // `set` says the same rules: its DO UPDATE is the batch's with the timeout bound
        // instead of read from `p`, plus rule 3 for a conflicting row that is not live.
        let rules = UPSERT.replace("(SELECT timeout FROM p)", "$21::interval");
        let (_, set_rules) = SET_SQL.split_once(" ON CONFLICT").unwrap_or_default();
        let set_rules = format!(" ON CONFLICT{set_rules}");
        let (before_where, after_where) = rules.split_once(" WHERE ").unwrap_or_default();
        assert!(set_rules.starts_with(before_where), "{set_rules}");
        assert!(
            set_rules.contains(&format!(
                "WHERE ({after_where}) AND (excluded.state IS NULL"
            )),
            "{set_rules}"
        );
        assert!(SET_SQL.starts_with(INSERT_COLUMNS.trim_end()));
        assert!(exact.contains("FOR UPDATE OF e"));
        assert!(!distinct.contains("locked"));
        if std::env::var("PRINT_SQL").is_ok() {
            println!("{distinct}");
        }
        assert!(distinct.contains("$10::bigint AS max_connection"));
    }
}
