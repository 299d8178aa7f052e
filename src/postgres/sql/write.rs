//! The writes: `set` as one statement around the conditional upsert, and `set_many` as one
//! statement per batch.
//!
//! Every write decides, in its one statement, the contract's rules (docs/contract.md, numbered
//! as there), checked in this order:
//!
//! - rule 4, **ownership** — a fresh entry owned by a principal is written only by that
//!   principal (`owner`); expired entries are free;
//! - rules 1-3, **clocks** — the existing fresh entry loses to a higher clock, or to a leave at
//!   its clock (`entry::supersedes` says the same in Rust);
//! - rule 5, **limits** — an update with a state for a client that has no live entry *joins*; it
//!   is refused when the document or the connection already holds its maximum of live
//!   participants.
//!
//! Rules 1-4 sit in the upsert's `DO UPDATE … WHERE` (the row is locked and re-read there,
//! so they are exact under any concurrency). Rule 5 filters the rows the upsert proposes, from
//! counts read in the statement's snapshot: two statements joining one document at the same
//! instant can both see room for one more (docs/contract.md says so); inside one batch, joins
//! are numbered so that a batch can never exceed a limit by itself.
//!
//! `set` first tries its fast path, the heartbeat ([`FAST_SQL`]: one `UPDATE` of a live row
//! the writer may write and whose clock it beats, where no limit can apply); when that changes
//! nothing, its full statement ([`FULL_SQL`]) decides every rule in one statement. Each is
//! atomic on its own, and the fast path applies only what the full statement would apply at
//! the same instant, so a `set` takes effect in exactly one statement.
//!
//! The full statement and the batch statements return, per update, its outcome as a code
//! ([`outcome`]): 0 applied, 1 stale, 2 forbidden, 3 document full, 4 connection
//! full; their scalars are bound once, in a `p` row every part of the statement reads. The
//! reason of a refusal is worked out from the statement's snapshot, so under a race it may be
//! the wrong one — never "applied" for an update that was not. The statements' SQL text never
//! changes, so each is prepared once per connection (static query ids).

use diesel::pg::data_types::PgInterval;
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{Array, BigInt, Interval, Jsonb, Nullable, SmallInt, Text};

use super::{expired_sql, fresh_sql, live_sql};
use crate::entry::{AwarenessUpdate, SetOutcome};
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
const INSERT_COLUMNS: &str = "INSERT INTO awareness_entries (document_id, client_id, \
     connection_id, state, clock_value, last_seen, owner, instance_id) ";

/// Rules 1 and 2 on the conflicting row (`awareness_entries`) and the proposed one
/// (`excluded`): expired, or owned by the writer (or nobody) and beaten on clocks.
const UPSERT: &str = concat!(
    " ON CONFLICT (document_id, client_id) DO UPDATE SET connection_id = excluded.connection_id, \
     state = excluded.state, clock_value = excluded.clock_value, last_seen = excluded.last_seen, \
     owner = excluded.owner, instance_id = excluded.instance_id WHERE ",
    expired_sql!("awareness_entries.", "(SELECT timeout FROM p)"),
    " OR ((awareness_entries.owner IS NULL OR awareness_entries.owner = excluded.owner) \
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

/// What a placeholder of a `set` statement binds.
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

/// `set`'s full statement (see the module docs): rules 1-3, the write and the outcome code in
/// one statement, for every case the fast path ([`FAST_SQL`]) leaves. Binds: `$1` document, `$2` client, `$3`
/// connection, `$4` state, `$5` clock, `$6` timeout, `$7` owner, `$8` instance, `$9` and `$10`
/// the limits per document and per connection (NULL: none).
const FULL_SQL: &str = concat!(
    "WITH p AS (SELECT $1::text COLLATE \"C\" AS document_id, $2::text COLLATE \"C\" AS client_id, \
     $3::text COLLATE \"C\" AS connection_id, $4::jsonb AS state, $5::bigint AS clock_value, \
     $6::interval AS timeout, $7::text COLLATE \"C\" AS owner, $8::text COLLATE \"C\" AS instance_id, \
     $9::bigint AS max_document, $10::bigint AS max_connection), ",
    // The key's fresh row, read once: whether the update joins, and why it was refused.
    "f AS MATERIALIZED (SELECT f.document_id, f.owner, f.clock_value, f.state \
     FROM awareness_entries f, p WHERE f.document_id = p.document_id \
     AND f.client_id = p.client_id AND ",
    fresh_sql!("f.", "p.timeout"),
    "), ",
    // Rule 5: a leave, a client already live, or room in the document and the connection.
    "joining AS MATERIALIZED (SELECT p.state IS NOT NULL \
     AND (p.max_document IS NOT NULL OR p.max_connection IS NOT NULL) \
     AND NOT EXISTS (SELECT 1 FROM f WHERE f.state IS NOT NULL) AS joins FROM p), \
     room AS (SELECT NOT joining.joins OR p.max_document IS NULL \
     OR (SELECT count(*) FROM awareness_entries d WHERE d.document_id = p.document_id AND ",
    live_sql!("d.", "p.timeout"),
    ") < p.max_document AS in_document, NOT joining.joins OR p.max_connection IS NULL \
     OR (SELECT count(*) FROM awareness_entries c WHERE c.connection_id = p.connection_id AND ",
    live_sql!("c.", "p.timeout"),
    ") < p.max_connection AS on_connection FROM p, joining), \
     applied AS (",
);

/// The rest of [`FULL_SQL`] after [`INSERT_COLUMNS`].
const FULL_SQL_TAIL: &str = concat!(
    "SELECT p.document_id, p.client_id, p.connection_id, p.state, p.clock_value, \
     CURRENT_TIMESTAMP, p.owner, p.instance_id FROM p, room \
     WHERE room.in_document AND room.on_connection",
    "{UPSERT}",
    " RETURNING 1) \
     SELECT (CASE WHEN EXISTS (SELECT 1 FROM applied) THEN 0 ",
    refused_by_row!("p"),
    "WHEN NOT room.in_document THEN 3 WHEN NOT room.on_connection THEN 4 ELSE 1 END)::smallint \
     FROM p CROSS JOIN room LEFT JOIN f ON true"
);

/// The whole full statement, built once.
static FULL_TEXT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{FULL_SQL}{INSERT_COLUMNS}{}",
        FULL_SQL_TAIL.replace("{UPSERT}", UPSERT)
    )
});

/// The value of each placeholder of [`FULL_TEXT`], `$1` first.
const FULL_BINDS: [Bind; 10] = {
    use Bind::*;
    [
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
    ]
};

/// [`FULL_TEXT`] cut at its binds, once.
static FULL_PIECES: std::sync::LazyLock<Vec<String>> =
    std::sync::LazyLock::new(|| cut_at_binds(&FULL_TEXT, FULL_BINDS.len()));

/// `set`'s fast path, the heartbeat: one `UPDATE` of the key's live row (a leave may also
/// update a fresh tombstone), applied when its owner is the writer's (or nobody) and it loses
/// on clocks — rules 1 and 2. Limits never refuse such an update (it adds no participant), so
/// none is counted. Returns the row count: 1 applied; 0 means the full statement decides
/// ([`FULL_SQL`]: an insert, a join, an expired row, or a refusal and its reason).
const FAST_SQL: &str = concat!(
    "UPDATE awareness_entries SET connection_id = $1, state = $2, \
     clock_value = $3, last_seen = CURRENT_TIMESTAMP, owner = $4, instance_id = $5 \
     WHERE document_id = $6 AND client_id = $7 AND ",
    fresh_sql!("", "$8::interval"),
    " AND (state IS NOT NULL OR $9::jsonb IS NULL) AND (owner IS NULL OR owner = $10) \
     AND (clock_value < $11 OR (clock_value = $12 AND $13::jsonb IS NULL AND state IS NOT NULL))"
);

/// The value of each placeholder of [`FAST_SQL`], `$1` first.
const FAST_BINDS: [Bind; 13] = {
    use Bind::*;
    [
        Connection, State, Clock, Owner, Instance, Document, Client, Timeout, State, Owner, Clock,
        Clock, State,
    ]
};

/// [`FAST_SQL`] cut at its binds, once.
static FAST_PIECES: std::sync::LazyLock<Vec<String>> =
    std::sync::LazyLock::new(|| cut_at_binds(FAST_SQL, FAST_BINDS.len()));

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

/// `set`'s fast path (see [`FAST_SQL`]); `execute` returns 1 when applied.
pub(crate) fn set_fast<'a>(update: &'a AwarenessUpdate, context: WriteContext<'a>) -> SetFast<'a> {
    SetFast(Statement { update, context })
}

/// `set`'s full statement (see [`FULL_SQL`]); loads the outcome code.
pub(crate) fn set_full<'a>(update: &'a AwarenessUpdate, context: WriteContext<'a>) -> SetFull<'a> {
    SetFull(Statement { update, context })
}

/// One update and its context, written into a statement cut at its binds.
#[derive(Debug)]
struct Statement<'a> {
    update: &'a AwarenessUpdate,
    context: WriteContext<'a>,
}

impl Statement<'_> {
    fn walk<'b>(
        &'b self,
        pieces: &'b [String],
        binds: &[Bind],
        mut out: AstPass<'_, 'b, Pg>,
    ) -> QueryResult<()> {
        let Some((last, pieces)) = pieces.split_last() else {
            return Err(diesel::result::Error::QueryBuilderError(
                "a set statement's SQL text could not be built".into(),
            ));
        };
        let (u, c) = (self.update, &self.context);
        for (piece, bind) in pieces.iter().zip(binds) {
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
}

/// [`set_fast`]'s statement.
#[derive(Debug)]
pub(crate) struct SetFast<'a>(Statement<'a>);

/// [`set_full`]'s statement.
#[derive(Debug)]
pub(crate) struct SetFull<'a>(Statement<'a>);

/// `impl QueryId` with a static id (`$id`, a marker type) for statements whose SQL text never
/// changes, so diesel-async prepares each once per connection.
macro_rules! static_query_id {
    ($($statement:ident => $id:ident),* $(,)?) => {
        $(
            #[doc = concat!("[`", stringify!($statement), "`]'s identity for the prepared-statement cache.")]
            pub(crate) struct $id;

            impl QueryId for $statement<'_> {
                type QueryId = $id;
                const HAS_STATIC_QUERY_ID: bool = true;
            }
        )*
    };
}

static_query_id!(SetFast => SetFastId, SetFull => SetFullId);

impl diesel::query_builder::Query for SetFull<'_> {
    type SqlType = SmallInt;
}

impl QueryFragment<Pg> for SetFast<'_> {
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.0.walk(&FAST_PIECES, &FAST_BINDS, out)
    }

    fn is_safe_to_cache_prepared(&self, _backend: &Pg) -> QueryResult<bool> {
        Ok(true)
    }
}

impl QueryFragment<Pg> for SetFull<'_> {
    fn walk_ast<'b>(&'b self, out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.0.walk(&FULL_PIECES, &FULL_BINDS, out)
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

impl BatchColumns<'_> {
    /// `unnest(…) WITH ORDINALITY AS i(document_id, client_id, connection_id, state,
    /// clock_value, owner, ord)`: the batch as rows, numbered from 1 in column order.
    fn walk_unnest<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("unnest(");
        out.push_bind_param::<Array<Text>, _>(&self.document_ids)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Text>, _>(&self.client_ids)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Text>, _>(&self.connection_ids)?;
        out.push_sql("::text[], ");
        out.push_bind_param::<Array<Nullable<Jsonb>>, _>(&self.states)?;
        out.push_sql("::jsonb[], ");
        out.push_bind_param::<Array<BigInt>, _>(&self.clocks)?;
        out.push_sql("::bigint[], ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.owners)?;
        out.push_sql(
            "::text[]) WITH ORDINALITY \
             AS i(document_id, client_id, connection_id, state, clock_value, owner, ord)",
        );
        Ok(())
    }
}

/// A batch of distinct keys as one statement (`set_many`, one round of it: see
/// `write/plan.rs`): the upsert of `set` over `unnest` of column arrays, in key order (so
/// its row locks are taken in key order, as every write path's), and the outcome codes. One
/// row per key, in key order: the code.
#[derive(Debug)]
pub(crate) struct SetMany<'a> {
    columns: BatchColumns<'a>,
    context: WriteContext<'a>,
}

/// See [`SetMany`].
pub(crate) fn set_many_distinct<'a>(
    columns: BatchColumns<'a>,
    context: WriteContext<'a>,
) -> SetMany<'a> {
    SetMany { columns, context }
}

// The batch statement's SQL text never changes (the same binds whatever the batch size), so
// one prepared statement per connection serves every batch.
static_query_id!(SetMany => SetManyId);

impl diesel::query_builder::Query for SetMany<'_> {
    type SqlType = SmallInt;
}

impl QueryFragment<Pg> for SetMany<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let c = &self.columns;
        let x = &self.context;
        // The batch as rows, ids in byte order (`COLLATE "C"`, as the table's), numbered.
        out.push_sql(
            "WITH input AS (SELECT i.document_id COLLATE \"C\" AS document_id, \
             i.client_id COLLATE \"C\" AS client_id, i.connection_id COLLATE \"C\" AS connection_id, \
             i.state, i.clock_value, i.owner COLLATE \"C\" AS owner, i.ord FROM ",
        );
        c.walk_unnest(&mut out)?;
        out.push_sql(
            "), \
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
            live_sql!("l.", "p.timeout"),
            ") AS joins FROM input, p), \
             in_document AS (SELECT j.document_id, n.live \
             FROM (SELECT DISTINCT document_id FROM joining WHERE joins) j \
             CROSS JOIN LATERAL (SELECT count(*) AS live FROM awareness_entries d, p \
             WHERE d.document_id = j.document_id AND ",
            live_sql!("d.", "p.timeout"),
            ") n), \
             on_connection AS (SELECT j.connection_id, n.live \
             FROM (SELECT DISTINCT connection_id FROM joining WHERE joins) j \
             CROSS JOIN LATERAL (SELECT count(*) AS live FROM awareness_entries c, p \
             WHERE c.connection_id = j.connection_id AND ",
            live_sql!("c.", "p.timeout"),
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
        out.push_sql("applied AS (");
        out.push_sql(INSERT_COLUMNS);
        out.push_sql(
            "SELECT u.document_id, u.client_id, u.connection_id, u.state, u.clock_value, \
             CURRENT_TIMESTAMP, u.owner, p.instance_id FROM counted u, p \
             WHERE NOT u.document_full AND NOT u.connection_full ",
        );
        out.push_sql("ORDER BY u.ord");
        out.push_sql(UPSERT);
        out.push_sql(concat!(
            " RETURNING document_id, client_id) \
             SELECT (CASE WHEN a.document_id IS NOT NULL THEN 0 ",
            refused_by_row!("u"),
            "WHEN u.document_full THEN 3 WHEN u.connection_full THEN 4 ELSE 1 END)::smallint \
             FROM counted u CROSS JOIN p",
            " LEFT JOIN applied a ON a.document_id = u.document_id AND a.client_id = u.client_id \
             LEFT JOIN awareness_entries f ON f.document_id = u.document_id \
             AND f.client_id = u.client_id AND ",
            fresh_sql!("f.", "p.timeout"),
            " ORDER BY u.ord",
        ));
        Ok(())
    }
}

/// The fast path of a batch whose keys are distinct and all likely heartbeats (see
/// `write/known.rs`): [`FAST_SQL`] over `unnest` — one `UPDATE` of the keys' live rows that
/// the writer may write and whose clocks it beats (rules 1, 2 and 4; no limit can refuse an
/// update of a live participant). Returns the position (1-based, in the order of the
/// columns) of every row it updated; the caller sends the others through the full batch
/// statement.
#[derive(Debug)]
pub(crate) struct SetManyFast<'a> {
    columns: BatchColumns<'a>,
    context: WriteContext<'a>,
}

/// See [`SetManyFast`].
pub(crate) fn set_many_fast<'a>(
    columns: BatchColumns<'a>,
    context: WriteContext<'a>,
) -> SetManyFast<'a> {
    SetManyFast { columns, context }
}

static_query_id!(SetManyFast => SetManyFastId);

/// The batch fast path's rules on a row `e` and its update `i` ([`FAST_SQL`]'s, over rows):
/// live (a leave may also update a fresh tombstone), owned by the writer or nobody, beaten on
/// clocks.
macro_rules! fast_batch_rules {
    () => {
        "e.last_seen > now() - p.timeout AND (e.state IS NOT NULL OR i.state IS NULL) \
         AND (e.owner IS NULL OR e.owner = i.owner COLLATE \"C\") \
         AND (e.clock_value < i.clock_value OR (e.clock_value = i.clock_value \
         AND i.state IS NULL AND e.state IS NOT NULL))"
    };
}

impl diesel::query_builder::Query for SetManyFast<'_> {
    type SqlType = BigInt;
}

impl QueryFragment<Pg> for SetManyFast<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        let c = &self.columns;
        let x = &self.context;
        // The rows are locked first, in key order (`l`), then updated: an `UPDATE … FROM`
        // locks in the order of its join, which the planner picks.
        out.push_sql("WITH i AS (SELECT * FROM ");
        c.walk_unnest(&mut out)?;
        out.push_sql("), p AS (SELECT ");
        out.push_bind_param::<Interval, _>(&x.timeout)?;
        out.push_sql(concat!(
            "::interval AS timeout), \
             l AS MATERIALIZED (SELECT e.document_id, e.client_id, i.ord \
             FROM awareness_entries e JOIN i ON e.document_id = i.document_id COLLATE \"C\" \
             AND e.client_id = i.client_id COLLATE \"C\" CROSS JOIN p WHERE ",
            fast_batch_rules!(),
            " ORDER BY e.document_id, e.client_id FOR UPDATE OF e) \
             UPDATE awareness_entries e SET connection_id = i.connection_id, state = i.state, \
             clock_value = i.clock_value, last_seen = CURRENT_TIMESTAMP, owner = i.owner, \
             instance_id = ",
        ));
        out.push_bind_param::<Nullable<Text>, _>(&x.instance_id)?;
        out.push_sql(concat!(
            " FROM l JOIN i ON i.ord = l.ord CROSS JOIN p \
             WHERE e.document_id = l.document_id AND e.client_id = l.client_id AND ",
            fast_batch_rules!(),
            " RETURNING i.ord"
        ));
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
    fn set_texts_have_their_binds_in_order() {
        assert_eq!(FAST_PIECES.len(), FAST_BINDS.len() + 1);
        assert_eq!(FULL_PIECES.len(), FULL_BINDS.len() + 1);
        assert!(cut_at_binds("a $1 b $2", 3).is_empty());
        assert!(cut_at_binds("a $10", 1).is_empty());
        let update = AwarenessUpdate::new("doc", "client", "conn", 3, None);
        assert_eq!(super::super::text(&set_fast(&update, context())), FAST_SQL);
        assert_eq!(
            super::super::text(&set_full(&update, context())),
            *FULL_TEXT
        );
    }

    /// Every use of a value is bound to that value.
    #[test]
    fn set_binds_match_what_each_placeholder_stands_for() {
        let update = AwarenessUpdate::new("doc", "client", "conn", 3, Some(serde_json::json!(1)))
            .with_owner(Some("owner".into()));
        for (debug, binds) in [
            (
                diesel::debug_query::<Pg, _>(&set_fast(&update, context())).to_string(),
                &FAST_BINDS[..],
            ),
            (
                diesel::debug_query::<Pg, _>(&set_full(&update, context())).to_string(),
                &FULL_BINDS[..],
            ),
        ] {
            let values = debug.split(" -- binds: ").nth(1).unwrap_or_default();
            let uses = |want: fn(&Bind) -> bool| binds.iter().filter(|b| want(b)).count();
            assert_eq!(
                values.matches("\"doc\"").count(),
                uses(|b| matches!(b, Bind::Document))
            );
            assert_eq!(
                values.matches("\"owner\"").count(),
                uses(|b| matches!(b, Bind::Owner))
            );
            assert_eq!(
                values.matches("\"conn\"").count(),
                uses(|b| matches!(b, Bind::Connection))
            );
        }
    }

    /// The fast path's conditions are rules 1 and 2 for a live row (and a leave over a fresh
    /// tombstone), as the full statement's upsert says them.
    #[test]
    fn the_fast_path_says_the_upserts_rules() {
        for rule in [
            "(owner IS NULL OR owner = $10)",
            "(clock_value < $11 OR (clock_value = $12 AND $13::jsonb IS NULL AND state IS NOT NULL))",
            "last_seen > now() - $8::interval",
        ] {
            assert!(FAST_SQL.contains(rule), "{rule}");
        }
        assert!(UPSERT.contains(
            "(awareness_entries.owner IS NULL OR awareness_entries.owner = excluded.owner)"
        ));
    }

    /// The batch statement carries the same upsert as `set`; the batch fast path locks its
    /// rows in key order before it updates them.
    #[test]
    fn batch_statements_share_the_upsert_and_lock_in_key_order() {
        let updates = [AwarenessUpdate::new("doc", "client", "conn", 3, None)];
        let columns = || crate::postgres::write::plan::columns(&updates, &[0]);
        let batch = super::super::text(&set_many_distinct(columns(), context()));
        for sql in [&batch, &*FULL_TEXT] {
            assert!(sql.contains(UPSERT), "{sql}");
            assert!(sql.contains(INSERT_COLUMNS), "{sql}");
        }
        assert!(batch.contains("ORDER BY u.ord"), "{batch}");
        assert!(batch.contains("$10::bigint AS max_connection"));
        let fast = super::super::text(&set_many_fast(columns(), context()));
        assert!(
            fast.contains("ORDER BY e.document_id, e.client_id FOR UPDATE OF e) UPDATE"),
            "{fast}"
        );
    }
}
