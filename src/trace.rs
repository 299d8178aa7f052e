//! Tracing of store operations: one span per call with ids, outcome and duration, never state
//! contents or connection strings.
//!
//! Each operation carries `#[tracing::instrument(name = "awareness.<op>", level = "debug",
//! skip_all, fields(...))]` and an [`Op`] guard that fills in `outcome` and `elapsed_us` when the
//! call ends. With no subscriber interested, the span is disabled and the guard neither reads
//! the clock nor allocates.

use std::time::Instant;

use tracing::Span;

/// Fills the current span's `outcome` (default `"error"`), `rows` and `elapsed_us` on drop.
pub(crate) struct Op {
    span: Span,
    started: Option<Instant>,
    outcome: &'static str,
    rows: Option<u64>,
}

impl Op {
    /// Starts timing the current span, if anything listens to it.
    pub(crate) fn start() -> Self {
        let span = Span::current();
        // When the operation's own span is disabled, the current span may be a caller's;
        // time only our own (the one declaring `elapsed_us`).
        let ours = !span.is_disabled() && span.field("elapsed_us").is_some();
        let started = ours.then(Instant::now);
        Self {
            span,
            started,
            outcome: "error",
            rows: None,
        }
    }

    /// The call succeeded with this outcome (`applied`, `stale`, `found`, `absent`, ...).
    pub(crate) fn done(&mut self, outcome: &'static str) {
        self.outcome = outcome;
    }

    /// The call succeeded and touched or returned `rows` entries.
    pub(crate) fn rows(&mut self, rows: usize) {
        self.outcome = "ok";
        self.rows = Some(rows as u64);
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        if let Some(started) = self.started {
            self.span.record("outcome", self.outcome);
            if let Some(rows) = self.rows {
                self.span.record("rows", rows);
            }
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.span.record("elapsed_us", micros);
        }
    }
}
