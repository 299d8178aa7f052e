//! Tracing of store operations: one span per call with ids, outcome and duration, never state
//! contents or connection strings.
//!
//! [`traced`] runs an operation inside its span and records, when the call ends, `outcome`
//! (from the result: [`Outcome`]), `rows` and `elapsed_us`, and the operation's metrics
//! (`crate::metrics`). With no subscriber interested, the span is disabled and nothing
//! allocates for tracing; with no metrics recorder, the metrics are no-op calls.

use std::future::Future;
use std::time::Instant;

use tracing::{Instrument, Span};

use crate::entry::{AwarenessEntry, Departed, SetOutcome};
use crate::error::Result;

/// What a successful operation reports in its span.
pub(crate) trait Outcome {
    /// `outcome` (`applied`, `stale`, `found`, `absent`, `removed`, `ok`) and `rows`, if any.
    fn outcome(&self) -> (&'static str, Option<usize>);

    /// The outcomes of the updates the operation decided (`set`, `set_many`), for metrics.
    fn updates(&self) -> &[SetOutcome] {
        &[]
    }
}

impl Outcome for Departed {
    fn outcome(&self) -> (&'static str, Option<usize>) {
        ("ok", Some(self.expired.len() + self.abandoned.len()))
    }
}

impl Outcome for Option<AwarenessEntry> {
    fn outcome(&self) -> (&'static str, Option<usize>) {
        (if self.is_some() { "found" } else { "absent" }, None)
    }
}

impl Outcome for Vec<AwarenessEntry> {
    fn outcome(&self) -> (&'static str, Option<usize>) {
        ("ok", Some(self.len()))
    }
}

impl Outcome for Vec<crate::who::RoomCount> {
    fn outcome(&self) -> (&'static str, Option<usize>) {
        ("ok", Some(self.len()))
    }
}

impl Outcome for Vec<crate::entry::LiveState> {
    fn outcome(&self) -> (&'static str, Option<usize>) {
        ("ok", Some(self.len()))
    }
}

impl Outcome for Vec<SetOutcome> {
    fn outcome(&self) -> (&'static str, Option<usize>) {
        ("ok", Some(self.len()))
    }

    fn updates(&self) -> &[SetOutcome] {
        self
    }
}

impl Outcome for SetOutcome {
    fn outcome(&self) -> (&'static str, Option<usize>) {
        (self.as_str(), None)
    }

    fn updates(&self) -> &[SetOutcome] {
        std::slice::from_ref(self)
    }
}

/// `remove`: whether an entry was there.
impl Outcome for bool {
    fn outcome(&self) -> (&'static str, Option<usize>) {
        (if *self { "removed" } else { "absent" }, None)
    }
}

/// `prune_expired`: how many entries were deleted.
impl Outcome for u64 {
    fn outcome(&self) -> (&'static str, Option<usize>) {
        ("ok", Some(usize::try_from(*self).unwrap_or(usize::MAX)))
    }
}

/// One store operation: its name (`get`, `set`, …), the store's, and its span.
pub(crate) struct Operation {
    pub(crate) name: &'static str,
    pub(crate) store: &'static str,
    pub(crate) span: Span,
}

/// Runs `operation` inside its span and records how it ended (`outcome = "error"` on
/// failure), in the span and in the metrics (`crate::metrics`).
pub(crate) async fn traced<T: Outcome>(
    op: Operation,
    operation: impl Future<Output = Result<T>>,
) -> Result<T> {
    let started = Instant::now();
    let span = op.span;
    let result = if span.is_disabled() {
        operation.await
    } else {
        operation.instrument(span.clone()).await
    };
    let (outcome, rows) = match &result {
        Ok(value) => value.outcome(),
        Err(_) => ("error", None),
    };
    let updates = result.as_ref().map_or(&[][..], Outcome::updates);
    crate::metrics::operation(op.name, op.store, outcome, started, updates);
    if span.is_disabled() {
        return result;
    }
    span.record("outcome", outcome);
    if let Some(rows) = rows {
        span.record("rows", rows as u64);
    }
    span.record(
        "elapsed_us",
        u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
    );
    result
}
