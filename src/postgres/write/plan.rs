//! The write plan of `set_many` on PostgreSQL: a batch as statements whose rows are one per
//! key, in key order, so every statement takes its row locks in the one order every write
//! path uses (`document_id, client_id`, byte order; docs/ARCHITECTURE.md "Row locks in one
//! order").
//!
//! A batch of distinct keys is one statement. A batch that repeats a key goes in **rounds**:
//! round *n* sends the *n*-th pending update of every key that still has one, as a batch of
//! distinct keys. That is `set` in turn for each key, exactly (the contract's `set_many`), with
//! no lock taken out of key order: the earlier design sent one row per key and read the old
//! rows `FOR UPDATE` first to resolve the others, which locked existing rows before inserting
//! new keys that sort before them, and deadlocked against a concurrent batch inserting those.
//!
//! An update that cannot win is not sent: the clock rule ([`supersedes`]) orders a key's
//! updates like `(clock, is_leave)` with a strict `>`, so once an update of the key was applied
//! or found stale, the key holds at least its rank, and a later update that does not beat that
//! rank is stale without asking.

use std::collections::{BTreeMap, VecDeque};

use crate::entry::{supersedes, AwarenessUpdate, SetOutcome};
use crate::postgres::sql::write::BatchColumns;

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

/// The updates of one key.
#[derive(Debug)]
struct KeyGroup {
    /// Input positions of this key's updates not sent yet, in input order.
    pending: VecDeque<usize>,
    /// The rank the key is known to hold at least: the highest of its updates found applied
    /// or stale so far.
    floor: Option<Rank>,
}

/// A batch grouped by key (sorted by key), sent in rounds of distinct keys: one round when no
/// key repeats.
#[derive(Debug)]
pub(crate) struct WritePlan {
    groups: Vec<KeyGroup>,
    /// The group of each position of the round in flight.
    round: Vec<usize>,
}

impl WritePlan {
    /// Groups `updates` by key.
    pub(crate) fn new(updates: &[AwarenessUpdate]) -> Self {
        let mut by_key: BTreeMap<(&str, &str), VecDeque<usize>> = BTreeMap::new();
        for (i, update) in updates.iter().enumerate() {
            by_key
                .entry((&update.document_id, &update.client_id))
                .or_default()
                .push_back(i);
        }
        Self {
            groups: by_key
                .into_values()
                .map(|pending| KeyGroup {
                    pending,
                    floor: None,
                })
                .collect(),
            round: Vec::new(),
        }
    }

    /// The input positions of the next round: one per key that still has an update that can
    /// win, in key order. Updates that cannot win are marked stale in `outcomes` on the way.
    /// Empty when the batch is done.
    pub(crate) fn next_round(
        &mut self,
        updates: &[AwarenessUpdate],
        outcomes: &mut [SetOutcome],
    ) -> Vec<usize> {
        self.round.clear();
        let mut positions = Vec::new();
        for (g, group) in self.groups.iter_mut().enumerate() {
            while let Some(i) = group.pending.pop_front() {
                if group.floor.is_some() && !beats(&updates[i], group.floor) {
                    outcomes[i] = SetOutcome::Stale;
                    continue;
                }
                positions.push(i);
                self.round.push(g);
                break;
            }
        }
        positions
    }

    /// Records what the round's updates (`positions`, from [`next_round`](Self::next_round))
    /// came to, in the same order.
    pub(crate) fn record(
        &mut self,
        updates: &[AwarenessUpdate],
        positions: &[usize],
        decided: &[SetOutcome],
        outcomes: &mut [SetOutcome],
    ) {
        for ((&g, &i), &outcome) in self.round.iter().zip(positions).zip(decided) {
            outcomes[i] = outcome;
            let group = &mut self.groups[g];
            if matches!(outcome, SetOutcome::Applied | SetOutcome::Stale)
                && beats(&updates[i], group.floor)
            {
                group.floor = Some(rank(&updates[i]));
            }
        }
    }
}

/// The column arrays of a batch of distinct keys, in key order, and the input position of
/// each row.
pub(crate) fn columns<'a>(updates: &'a [AwarenessUpdate], positions: &[usize]) -> BatchColumns<'a> {
    let mut columns = BatchColumns::default();
    for &i in positions {
        let u = &updates[i];
        columns.document_ids.push(&u.document_id);
        columns.client_ids.push(&u.client_id);
        columns.connection_ids.push(&u.connection_id);
        columns.states.push(&u.state);
        columns.clocks.push(u.clock);
        columns.owners.push(u.owner.as_deref());
    }
    columns
}

#[cfg(test)]
mod tests {
    use super::*;
    use SetOutcome::{Applied as A, Forbidden as F, Stale as S};

    fn up(client: &str, clock: i64, leave: bool) -> AwarenessUpdate {
        let state = (!leave).then(|| serde_json::json!(clock));
        AwarenessUpdate::new("d", client, "k", clock, state)
    }

    /// Runs the plan against `decide` (what the database says of each sent update).
    fn run(
        updates: &[AwarenessUpdate],
        mut decide: impl FnMut(&AwarenessUpdate) -> SetOutcome,
    ) -> (Vec<SetOutcome>, Vec<Vec<String>>) {
        let mut plan = WritePlan::new(updates);
        let mut outcomes = vec![S; updates.len()];
        let mut rounds = Vec::new();
        loop {
            let round = plan.next_round(updates, &mut outcomes);
            if round.is_empty() {
                return (outcomes, rounds);
            }
            rounds.push(
                round
                    .iter()
                    .map(|&i| format!("{}{}", updates[i].client_id, updates[i].clock))
                    .collect(),
            );
            let decided: Vec<SetOutcome> = round.iter().map(|&i| decide(&updates[i])).collect();
            plan.record(updates, &round, &decided, &mut outcomes);
        }
    }

    #[test]
    fn distinct_keys_are_one_round_in_key_order() {
        let updates = [up("b", 1, false), up("c", 1, false), up("a", 1, true)];
        let (outcomes, rounds) = run(&updates, |_| A);
        assert_eq!(rounds, [["a1", "b1", "c1"]]);
        assert_eq!(outcomes, [A, A, A]);
    }

    #[test]
    fn repeated_keys_go_in_rounds_and_skip_what_cannot_win() {
        let updates = [
            up("b", 1, false),
            up("a", 5, false),
            up("b", 4, false),
            up("a", 3, false),
            up("a", 5, true),
            up("a", 5, true),
        ];
        // The database holds a at 2 and nothing for b: a5 applies, a3 cannot win (not sent),
        // the leave at 5 beats a5, the second leave cannot win.
        let (outcomes, rounds) = run(&updates, |u| {
            if u.clock >= 2 || u.client_id == "b" {
                A
            } else {
                S
            }
        });
        assert_eq!(rounds, [vec!["a5", "b1"], vec!["a5", "b4"]]);
        assert_eq!(outcomes, [A, A, A, S, A, S]);
    }

    #[test]
    fn a_refusal_sets_no_floor() {
        // a1 is refused (another principal holds a); a2 is still asked.
        let updates = [up("a", 1, false), up("a", 2, false)];
        let mut asked = 0;
        let (outcomes, rounds) = run(&updates, |_| {
            asked += 1;
            if asked == 1 {
                F
            } else {
                A
            }
        });
        assert_eq!(rounds.len(), 2);
        assert_eq!(outcomes, [F, A]);
    }
}
