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

mod set;
mod set_many;
mod upsert;

pub(crate) use set::{set_fast, set_full};
pub(crate) use set_many::{set_many_distinct, set_many_fast, BatchColumns};
pub(crate) use upsert::{outcome, WriteContext};
