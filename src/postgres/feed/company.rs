//! Whether this process's feed is alone on its channel: no other listener has said hello (or
//! published anything) for a while. Every listener says hello on the channel when it starts
//! listening and every [`ChangeFeedOptions::hello_every`](super::ChangeFeedOptions::hello_every)
//! after (its period in the hello), so a listener of any process — an instance or a plain
//! subscriber — is heard as it starts, and its silence for [`QUIET_HELLOS`] of its periods
//! means it is gone. A
//! publisher with [`notify_when_alone`](super::ChangeFeedOptions::notify_when_alone) off hands
//! its changes to its own subscribers instead of sending a `NOTIFY` while it is alone.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Hello periods of silence after which the others are taken to be gone (two and a half: one
/// late hello is not mistaken for a departure).
const QUIET_HELLOS: f64 = 2.5;

/// How long a listener saying hello every `every` is taken to be there after each hello.
pub(super) fn quiet_after(every: Duration) -> Duration {
    every.mul_f64(QUIET_HELLOS)
}

/// What this process's listener heard, and since when it listens.
#[derive(Debug, Default)]
pub(super) struct Company {
    heard: Mutex<Heard>,
}

#[derive(Debug, Default)]
struct Heard {
    /// When the listener (re)started listening; `None` while it is not listening.
    listening_since: Option<Instant>,
    /// Until when another origin is taken to be there (from its last hello or change).
    other_until: Option<Instant>,
}

impl Company {
    fn heard(&self) -> std::sync::MutexGuard<'_, Heard> {
        self.heard.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The listener listens (again) from now: whoever else listens is heard within a hello
    /// period.
    pub(super) fn listening(&self) {
        self.heard().listening_since = Some(Instant::now());
    }

    /// The listener lost its connection: nothing can be said until it listens again.
    pub(super) fn deaf(&self) {
        self.heard().listening_since = None;
    }

    /// Another origin was heard just now: it is taken to be there for `quiet` more (its
    /// hello period's [`QUIET_HELLOS`] when it said hello).
    pub(super) fn heard_other(&self, quiet: Duration) {
        let until = Instant::now() + quiet;
        let mut heard = self.heard();
        heard.other_until = Some(heard.other_until.map_or(until, |u| u.max(until)));
    }

    /// True when the listener has listened for `quiet` (every other listener of the same
    /// period said hello meanwhile) and no one else heard is still taken to be there.
    pub(super) fn alone(&self, quiet: Duration) -> bool {
        let heard = self.heard();
        heard
            .listening_since
            .is_some_and(|since| since.elapsed() >= quiet)
            && heard
                .other_until
                .is_none_or(|until| Instant::now() >= until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alone_only_after_listening_and_hearing_no_one_for_the_quiet_time() {
        let company = Company::default();
        let quiet = Duration::from_millis(40);
        assert!(!company.alone(quiet), "not listening: cannot say");
        company.listening();
        assert!(
            !company.alone(quiet),
            "just started: others may not have said hello"
        );
        std::thread::sleep(quiet);
        assert!(company.alone(quiet));
        company.heard_other(quiet * 2);
        assert!(!company.alone(quiet), "someone said hello");
        std::thread::sleep(quiet);
        assert!(
            !company.alone(quiet),
            "its own, longer period has not passed"
        );
        std::thread::sleep(quiet);
        assert!(company.alone(quiet), "silent for its quiet time: gone");
        company.deaf();
        assert!(!company.alone(quiet), "reconnecting: cannot say");
    }
}
