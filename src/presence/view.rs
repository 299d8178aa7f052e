//! What one room's local connections have been told about each participant: a mirror of their
//! y-protocols `meta` (clock) and `states` (present or not), kept so that the engine sends only
//! what they will accept, recognises the echoes they send back, and notices when they would
//! ignore a participant (the rejoin-after-leave race).

use std::collections::HashMap;

use crate::entry::supersedes;

/// One participant as the room's clients last heard of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) clock: u64,
    pub(crate) present: bool,
}

/// The room's participants as its local clients see them.
#[derive(Debug, Default)]
pub(crate) struct View {
    clients: HashMap<u64, Seen>,
}

/// What to do with a participant's state or leave at some clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The clients will apply it (y-protocols' rule): send it.
    Forward,
    /// They already have it, or something newer: send nothing.
    Ignore,
    /// A state the clients will ignore because they were told the participant left at
    /// `leave_clock` (>= this clock): the rejoin-after-leave race. The participant's owner must
    /// receive that leave so that it re-announces itself at `leave_clock + 1`.
    Hidden {
        /// The clock of the leave the clients saw.
        leave_clock: u64,
    },
}

impl View {
    /// What the clients were told of `client`, if anything.
    pub(crate) fn seen(&self, client: u64) -> Option<Seen> {
        self.clients.get(&client).copied()
    }

    /// Applies y-protocols' `applyAwarenessUpdate` rule to a participant's state (`present`) or
    /// leave at `clock`, as the local clients will. A participant never heard of counts as
    /// clock 0 without a state.
    pub(crate) fn observe(&mut self, client: u64, clock: u64, present: bool) -> Verdict {
        let seen = self.seen(client);
        let current = seen.map_or((0, false), |s| (s.clock, s.present));
        if supersedes(Some(current), clock, present) {
            self.clients.insert(client, Seen { clock, present });
            Verdict::Forward
        } else if present && seen.is_some() && !current.1 {
            Verdict::Hidden {
                leave_clock: current.0,
            }
        } else {
            Verdict::Ignore
        }
    }

    /// The participant's entry is gone from the store (removed or expired) and nobody wrote a
    /// leave: if the clients see it present at clock `k`, they are told it left at `k + 1`
    /// (returned), which they accept.
    pub(crate) fn gone(&mut self, client: u64) -> Option<u64> {
        let seen = self.clients.get_mut(&client)?;
        if !seen.present {
            return None;
        }
        seen.clock = seen.clock.saturating_add(1);
        seen.present = false;
        Some(seen.clock)
    }

    /// The participants the clients see present, in id order.
    pub(crate) fn present(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, s)| s.present)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_y_protocols_rule() {
        let mut view = View::default();
        assert_eq!(
            view.observe(1, 0, true),
            Verdict::Ignore,
            "clock 0 never wins"
        );
        assert_eq!(view.observe(1, 1, true), Verdict::Forward);
        assert_eq!(view.observe(1, 1, true), Verdict::Ignore);
        assert_eq!(view.observe(1, 2, true), Verdict::Forward);
        assert_eq!(
            view.observe(1, 2, false),
            Verdict::Forward,
            "same-clock leave"
        );
        assert_eq!(view.observe(1, 2, false), Verdict::Ignore);
        assert_eq!(view.present(), Vec::<u64>::new());
    }

    #[test]
    fn a_rejoin_at_or_below_the_leave_clock_is_hidden() {
        let mut view = View::default();
        view.observe(7, 4, true);
        assert_eq!(view.gone(7), Some(5));
        assert_eq!(view.gone(7), None, "told once");
        assert_eq!(view.observe(7, 4, true), Verdict::Hidden { leave_clock: 5 });
        assert_eq!(view.observe(7, 5, true), Verdict::Hidden { leave_clock: 5 });
        assert_eq!(view.observe(7, 6, true), Verdict::Forward);
        assert_eq!(view.present(), vec![7]);
    }

    #[test]
    fn unknown_participants_are_not_hidden() {
        let mut view = View::default();
        assert_eq!(view.gone(3), None);
        assert_eq!(view.observe(3, 2, true), Verdict::Forward);
    }
}
