//! The writes on one connection: `set`'s two statements and `set_many`'s rounds (see
//! `plan.rs`), each statement sent again after a deadlock or serialization failure
//! (`retry.rs`) and every outcome recorded in [`KnownKeys`].

use diesel_async::RunQueryDsl;

use super::known::KnownKeys;
use super::plan::{columns, WritePlan};
use super::retry::retry_statement;
use crate::entry::{AwarenessUpdate, SetOutcome};
use crate::error::{Error, Result};
use crate::postgres::pool::StoreConn;
use crate::postgres::sql;
use crate::postgres::sql::write::WriteContext;

/// `set` on `conn`: the fast path, then, when it changed nothing, the full statement (see
/// `sql/write.rs`).
pub(crate) async fn set_on<C: StoreConn>(
    conn: &mut C,
    update: &AwarenessUpdate,
    context: WriteContext<'_>,
    known: &KnownKeys,
) -> Result<SetOutcome> {
    // One statement per call in the usual cases: the fast path for a likely heartbeat, the
    // full statement for everything else (write/known.rs).
    if known.fast_path_first(update)
        && retry_statement!(
            conn,
            sql::write::set_fast(update, context).execute(conn).await
        )? > 0
    {
        known.record(update, SetOutcome::Applied);
        return Ok(SetOutcome::Applied);
    }
    // `load`, not `get_result`: diesel-async's `get_result` returns at the first row, before
    // the server's ReadyForQuery, i.e. before the implicit commit; a crash in between would
    // lose an update reported applied (tests/faults.rs caught it). `load` reads to the end.
    let codes: Vec<i16> =
        retry_statement!(conn, sql::write::set_full(update, context).load(conn).await)?;
    let code = codes.into_iter().next().unwrap_or(-1);
    let outcome = sql::write::outcome(code).ok_or_else(|| unexpected("set", code))?;
    known.record(update, outcome);
    Ok(outcome)
}

fn unexpected(what: &str, code: i16) -> Error {
    Error::Database(diesel::result::Error::DeserializationError(
        format!("{what}: the database returned the unknown outcome code {code}").into(),
    ))
}

/// `set_many` on `conn`, in rounds of distinct keys (`plan.rs`): one round when no key
/// repeats.
pub(crate) async fn set_many_on<C: StoreConn>(
    conn: &mut C,
    updates: &[AwarenessUpdate],
    context: WriteContext<'_>,
    known: &KnownKeys,
) -> Result<Vec<SetOutcome>> {
    let mut plan = WritePlan::new(updates);
    let mut outcomes = vec![SetOutcome::Stale; updates.len()];
    loop {
        let round = plan.next_round(updates, &mut outcomes);
        let decided = match round.as_slice() {
            [] => return Ok(outcomes),
            [one] => vec![set_on(conn, &updates[*one], context, known).await?],
            _ => set_distinct(conn, updates, &round, context, known).await?,
        };
        plan.record(updates, &round, &decided, &mut outcomes);
    }
}

/// The updates at `positions` (distinct keys, in key order) as one statement: when they all
/// look like heartbeats (`known.rs`), the batch fast path first (`sql::write::set_many_fast`),
/// and whatever it did not apply through the full batch statement.
async fn set_distinct<C: StoreConn>(
    conn: &mut C,
    updates: &[AwarenessUpdate],
    positions: &[usize],
    context: WriteContext<'_>,
    known: &KnownKeys,
) -> Result<Vec<SetOutcome>> {
    let round: Vec<&AwarenessUpdate> = positions.iter().map(|&i| &updates[i]).collect();
    if !known.all_fast_path_first(round.iter().copied()) {
        return set_distinct_full(conn, updates, positions, context, known).await;
    }
    let applied_rows: Vec<i64> = retry_statement!(
        conn,
        sql::write::set_many_fast(columns(updates, positions), context)
            .load(conn)
            .await
    )?;
    let mut applied = vec![false; positions.len()];
    for row in applied_rows {
        if let Some(slot) = usize::try_from(row - 1)
            .ok()
            .and_then(|i| applied.get_mut(i))
        {
            *slot = true;
        }
    }
    known.record_all(
        round
            .iter()
            .zip(&applied)
            .filter(|(_, &applied)| applied)
            .map(|(update, _)| (*update, SetOutcome::Applied)),
    );
    let rest: Vec<usize> = positions
        .iter()
        .zip(&applied)
        .filter(|(_, &applied)| !applied)
        .map(|(&i, _)| i)
        .collect();
    if rest.is_empty() {
        return Ok(vec![SetOutcome::Applied; positions.len()]);
    }
    let mut rest_outcomes = set_distinct_full(conn, updates, &rest, context, known)
        .await?
        .into_iter();
    Ok(applied
        .into_iter()
        .map(|applied| {
            if applied {
                SetOutcome::Applied
            } else {
                rest_outcomes.next().unwrap_or(SetOutcome::Stale)
            }
        })
        .collect())
}

/// The updates at `positions` (distinct keys, in key order) as one full batch statement.
async fn set_distinct_full<C: StoreConn>(
    conn: &mut C,
    updates: &[AwarenessUpdate],
    positions: &[usize],
    context: WriteContext<'_>,
    known: &KnownKeys,
) -> Result<Vec<SetOutcome>> {
    let codes: Vec<i16> = retry_statement!(
        conn,
        sql::write::set_many_distinct(columns(updates, positions), context)
            .load(conn)
            .await
    )?;
    if codes.len() != positions.len() {
        return Err(Error::Database(
            diesel::result::Error::DeserializationError(
                "set_many: the database returned rows that do not match the batch".into(),
            ),
        ));
    }
    let outcomes = codes
        .into_iter()
        .map(|code| sql::write::outcome(code).ok_or_else(|| unexpected("set_many", code)))
        .collect::<Result<Vec<_>>>()?;
    known.record_all(
        positions
            .iter()
            .map(|&i| &updates[i])
            .zip(outcomes.iter().copied()),
    );
    Ok(outcomes)
}
