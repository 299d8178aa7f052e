//! The write plan of `set_many` on PostgreSQL: which update of each key the one statement sends, and how the
//! outcome of every update in the batch follows from what the statement reports.
//!
//! The clock rule ([`supersedes`]) orders updates of one key like `(clock, is_leave)` with a
//! strict `>`: applying
//! `u1..un` in order over an existing entry `E` is a running maximum. So only the first update
//! reaching the key's maximum can be the final write (it is the one sent), and an earlier
//! update applied exactly when it beat `E` and every update before it. `ON CONFLICT` cannot
//! touch one row twice in a statement, which is why only one update per key is sent.

use std::collections::BTreeMap;

use crate::entry::{supersedes, AwarenessUpdate, SetOutcome};
use crate::postgres::sql::write::{BatchColumns, SentRow};

/// What an update of one key wrote: its clock, and whether it is a leave.
type Rank = (i64, bool);

fn rank(update: &AwarenessUpdate) -> Rank {
    (update.clock, update.state.is_none())
}

/// Whether `update` beats what is held at `held` (nothing: `None`): the clock rule
/// ([`supersedes`]).
fn beats(update: &AwarenessUpdate, held: Option<Rank>) -> bool {
    supersedes(
        held.map(|(clock, is_leave)| (clock, !is_leave)),
        update.clock,
        update.state.is_some(),
    )
}

/// The updates of one key, by input position.
#[derive(Debug)]
struct KeyGroup {
    /// Input positions of this key's updates, in input order.
    positions: Vec<usize>,
    /// The position sent to the database: the first one with the key's highest rank.
    sent: usize,
}

/// A batch split into one row per key (sorted by key, so concurrent batches lock rows in the
/// same order) and the bookkeeping to resolve every update's outcome.
#[derive(Debug)]
pub(crate) struct WritePlan {
    groups: Vec<KeyGroup>,
}

/// The existing entry an update of the key was decided against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existing {
    /// No live entry (none, or expired): every update with a higher rank than the previous ones
    /// applies.
    Absent,
    /// A live entry of this rank.
    Live(Rank),
    /// A row that appeared concurrently after the statement's snapshot: its rank is unknown.
    Unknown,
}

impl WritePlan {
    /// Groups `updates` by key.
    pub(crate) fn new(updates: &[AwarenessUpdate]) -> Self {
        let mut by_key: BTreeMap<(&str, &str), KeyGroup> = BTreeMap::new();
        for (i, update) in updates.iter().enumerate() {
            let group = by_key
                .entry((&update.document_id, &update.client_id))
                .or_insert(KeyGroup {
                    positions: Vec::new(),
                    sent: i,
                });
            if beats(update, Some(rank(&updates[group.sent]))) {
                group.sent = i;
            }
            group.positions.push(i);
        }
        Self {
            groups: by_key.into_values().collect(),
        }
    }

    /// True when some key's updates come from different owners: such a batch is applied one
    /// update after another (its outcomes depend on which owner came first; a server sending
    /// one client id for two principals in one batch is rare enough not to need one statement).
    pub(crate) fn has_mixed_owners(&self, updates: &[AwarenessUpdate]) -> bool {
        self.groups.iter().any(|group| {
            let owner = &updates[group.sent].owner;
            group.positions.iter().any(|&i| &updates[i].owner != owner)
        })
    }

    /// True when no key occurs twice: every update is sent, and the lean statement
    /// ([`Distinct`](crate::postgres::sql::write::Distinct)) decides each exactly.
    pub(crate) fn is_distinct(&self) -> bool {
        self.groups.iter().all(|group| group.positions.len() == 1)
    }

    /// Every update's outcome, in input order, from the lean statement's rows (each key's
    /// outcome code, in the order of [`columns`](Self::columns)), for a batch that
    /// [`is_distinct`](Self::is_distinct). `None` when the rows do not match the plan.
    pub(crate) fn outcomes_distinct(&self, codes: &[i16]) -> Option<Vec<SetOutcome>> {
        if codes.len() != self.groups.len() || !self.is_distinct() {
            return None;
        }
        let mut outcomes = vec![SetOutcome::Stale; self.groups.len()];
        for (group, &code) in self.groups.iter().zip(codes) {
            outcomes[group.sent] = crate::postgres::sql::write::outcome(code)?;
        }
        Some(outcomes)
    }

    /// The input position of each row of [`columns`](Self::columns), in order.
    pub(crate) fn sent_positions(&self) -> Vec<usize> {
        self.groups.iter().map(|group| group.sent).collect()
    }

    /// The column arrays to send: one row per key, in key order.
    pub(crate) fn columns<'a>(&self, updates: &'a [AwarenessUpdate]) -> BatchColumns<'a> {
        let mut columns = BatchColumns::default();
        for group in &self.groups {
            let u = &updates[group.sent];
            columns.document_ids.push(&u.document_id);
            columns.client_ids.push(&u.client_id);
            columns.connection_ids.push(&u.connection_id);
            columns.states.push(&u.state);
            columns.clocks.push(u.clock);
            columns.owners.push(u.owner.as_deref());
        }
        columns
    }

    /// Every update's outcome, in input order, from the statement's rows (one per key, in the
    /// order of [`columns`](Self::columns)). `None` when the rows do not match the plan.
    pub(crate) fn outcomes(
        &self,
        updates: &[AwarenessUpdate],
        rows: &[SentRow],
    ) -> Option<Vec<SetOutcome>> {
        if rows.len() != self.groups.len() {
            return None;
        }
        let mut outcomes = vec![SetOutcome::Stale; updates.len()];
        for (group, &(code, inserted, clock, is_leave, expired)) in self.groups.iter().zip(rows) {
            match crate::postgres::sql::write::outcome(code)? {
                SetOutcome::Applied => {}
                // The existing entry ranks at or above the key's maximum: every update is stale.
                SetOutcome::Stale => continue,
                // Another principal owns the key, or the key's highest update could not join:
                // the key's other updates (same owner, same key) are refused alike.
                refused => {
                    for &i in &group.positions {
                        outcomes[i] = refused;
                    }
                    continue;
                }
            }
            let existing = match (clock, is_leave, expired) {
                (Some(_), _, Some(true)) => Existing::Absent,
                (Some(clock), Some(is_leave), _) => Existing::Live((clock, is_leave)),
                (Some(_), _, _) => return None,
                (None, _, _) if inserted == Some(true) => Existing::Absent,
                (None, _, _) => Existing::Unknown,
            };
            resolve_group(updates, group, existing, &mut outcomes);
        }
        Some(outcomes)
    }
}

/// Outcomes of one key's updates when the sent one applied over `existing`.
fn resolve_group(
    updates: &[AwarenessUpdate],
    group: &KeyGroup,
    existing: Existing,
    outcomes: &mut [SetOutcome],
) {
    let mut highest = match existing {
        Existing::Absent => None,
        Existing::Live(rank) => Some(rank),
        Existing::Unknown => {
            // Earlier updates may or may not have beaten the unknown row: report them stale,
            // never an "applied" that could sit below a clock already applied.
            outcomes[group.sent] = SetOutcome::Applied;
            return;
        }
    };
    for &i in &group.positions {
        if beats(&updates[i], highest) {
            outcomes[i] = SetOutcome::Applied;
            highest = Some(rank(&updates[i]));
        }
        if i == group.sent {
            // Later updates rank at or below the sent one: stale.
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SetOutcome::{Applied as A, Stale as S};

    fn up(client: &str, clock: i64, leave: bool) -> AwarenessUpdate {
        let state = (!leave).then(|| serde_json::json!(clock));
        AwarenessUpdate::new("d", client, "k", clock, state)
    }

    #[test]
    fn sends_the_first_update_reaching_each_keys_maximum_in_key_order() {
        let updates = [
            up("b", 1, false),
            up("a", 3, false),
            up("b", 4, false),
            up("a", 3, true),
            up("b", 4, false),
            up("a", 3, true),
        ];
        let plan = WritePlan::new(&updates);
        let columns = plan.columns(&updates);
        assert_eq!(columns.client_ids, ["a", "b"]);
        assert_eq!(columns.clocks, [3, 4]);
        assert_eq!(plan.groups[0].sent, 3);
        assert_eq!(plan.groups[1].sent, 2);
    }

    #[test]
    fn distinct_batches_map_rows_back_to_input_order() {
        let updates = [up("b", 1, false), up("c", 1, false), up("a", 1, true)];
        let plan = WritePlan::new(&updates);
        assert!(plan.is_distinct());
        // Rows come in key order: a, b, c.
        assert_eq!(
            plan.outcomes_distinct(&[0, 1, 2]).unwrap(),
            [S, SetOutcome::Forbidden, A]
        );
        assert!(plan.outcomes_distinct(&[0]).is_none());
        assert!(plan.outcomes_distinct(&[0, 0, 9]).is_none());
        assert!(!WritePlan::new(&[up("a", 1, false), up("a", 2, false)]).is_distinct());
    }

    #[test]
    fn outcomes_follow_the_running_maximum() {
        let updates = [
            up("a", 1, false),
            up("a", 5, false),
            up("a", 3, false),
            up("a", 5, true),
            up("a", 5, true),
        ];
        let plan = WritePlan::new(&updates);
        // Existing live entry at clock 2: 1 is stale, 5 applies, 3 stale, leave 5 applies.
        let rows = [(0, Some(false), Some(2), Some(false), Some(false))];
        assert_eq!(plan.outcomes(&updates, &rows).unwrap(), [S, A, S, A, S]);
        // No entry: the first update applies too.
        let rows = [(0, Some(true), None, None, None)];
        assert_eq!(plan.outcomes(&updates, &rows).unwrap(), [A, A, S, A, S]);
        // Expired entry at a high clock counts as absent.
        let rows = [(0, Some(false), Some(9), Some(false), Some(true))];
        assert_eq!(plan.outcomes(&updates, &rows).unwrap(), [A, A, S, A, S]);
        // A row inserted concurrently: only the sent update is known to have applied.
        let rows = [(0, Some(false), None, None, None)];
        assert_eq!(plan.outcomes(&updates, &rows).unwrap(), [S, S, S, A, S]);
        // The sent update lost: everything is stale.
        let rows = [(1, None, Some(7), Some(false), Some(false))];
        assert_eq!(plan.outcomes(&updates, &rows).unwrap(), [S, S, S, S, S]);
        // Owned by someone else: every update of the key is forbidden.
        let rows = [(2, None, Some(7), Some(false), Some(false))];
        assert_eq!(
            plan.outcomes(&updates, &rows).unwrap(),
            [SetOutcome::Forbidden; 5]
        );
        assert!(plan.outcomes(&updates, &[]).is_none());
    }
}
