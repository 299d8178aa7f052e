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
//! `set` first tries its fast path, the heartbeat (`set::FAST_SQL`: one `UPDATE` of a live row
//! the writer may write and whose clock it beats, where no limit can apply); when that changes
//! nothing, its full statement (`set::FULL_SQL`) decides every rule in one statement. Each is
//! atomic on its own, and the fast path applies only what the full statement would apply at
//! the same instant, so a `set` takes effect in exactly one statement.
//!
//! The full statement and the batch statements return, per update, its outcome as a code
//! ([`outcome`]): 0 applied, 1 stale, 2 forbidden, 3 document full, 4 connection
//! full; their scalars are bound once, in a `p` row every part of the statement reads. The
//! reason of a refusal is worked out from the statement's snapshot, so under a race it may be
//! the wrong one — never "applied" for an update that was not. The statements' SQL text never
//! changes, so each is prepared once per connection (static query ids).

//!
//! Files: the statements of `set` in `write/set.rs`, those of `set_many` in
//! `write/set_many.rs`; what they share is here.

use diesel::pg::data_types::PgInterval;

use super::expired_sql;
use crate::entry::SetOutcome;
use crate::store::StoreOptions;

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

mod set;
mod set_many;

pub(crate) use set::{set_fast, set_full};
pub(crate) use set_many::{set_many_distinct, set_many_fast, BatchColumns};
