//! What this instance's clients have been told about each participant of a room: a mirror of
//! their y-protocols `meta` (clock) and `states` (present or not), kept so that the relay sends
//! only what they will accept and notices when they would ignore a participant.

use std::collections::HashMap;

/// One participant as the room's clients last heard of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    clock: u64,
    present: bool,
}

/// The room's participants as its local clients see them.
#[derive(Debug, Default)]
pub struct View {
    clients: HashMap<u64, Seen>,
}

/// What to do with a participant's state or leave at some clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
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
    /// Applies y-protocols' `applyAwarenessUpdate` rule to a participant's state (`present`) or
    /// leave at `clock`, as the local clients will: `currClock < clock`, or the same clock with a
    /// leave over a present state. A participant never heard of counts as clock 0.
    pub fn observe(&mut self, client: u64, clock: u64, present: bool) -> Verdict {
        let seen = self.clients.get(&client).copied();
        let (current, has) = seen.map_or((0, false), |s| (s.clock, s.present));
        if current < clock || (current == clock && !present && has) {
            self.clients.insert(client, Seen { clock, present });
            Verdict::Forward
        } else if present && seen.is_some() && !has {
            Verdict::Hidden {
                leave_clock: current,
            }
        } else {
            Verdict::Ignore
        }
    }

    /// The participant's entry is gone from the store (removed or expired) and nobody wrote a
    /// leave: if the clients see it present at clock `k`, they are told it left at `k + 1`
    /// (returned), which they accept.
    pub fn gone(&mut self, client: u64) -> Option<u64> {
        let seen = self.clients.get_mut(&client)?;
        if !seen.present {
            return None;
        }
        seen.clock = seen.clock.saturating_add(1);
        seen.present = false;
        Some(seen.clock)
    }

    /// The clock of a participant the clients see present.
    pub fn present_clock(&self, client: u64) -> Option<u64> {
        self.clients
            .get(&client)
            .filter(|s| s.present)
            .map(|s| s.clock)
    }

    /// The participants the clients see present.
    pub fn present(&self) -> Vec<u64> {
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
