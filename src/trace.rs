//! Tracing of store operations: one span per call with ids, outcome and duration, never state
//! contents or connection strings.
//!
//! [`traced`] runs an operation inside its span and records, when the call ends, `outcome`
//! (from the result: [`Outcome`]), `rows` and `elapsed_us`. With no subscriber interested, the
//! span is disabled and nothing reads the clock or allocates for tracing.

use std::future::Future;
use std::time::Instant;

use tracing::{Instrument, Span};

use crate::entry::{AwarenessEntry, SetOutcome};
use crate::error::Result;

/// What a successful operation reports in its span.
pub(crate) trait Outcome {
    /// `outcome` (`applied`, `stale`, `found`, `absent`, `removed`, `ok`) and `rows`, if any.
    fn outcome(&self) -> (&'static str, Option<usize>);
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

impl Outcome for Vec<SetOutcome> {
    fn outcome(&self) -> (&'static str, Option<usize>) {
        ("ok", Some(self.len()))
    }
}

impl Outcome for SetOutcome {
    fn outcome(&self) -> (&'static str, Option<usize>) {
        (
            if self.is_applied() {
                "applied"
            } else {
                "stale"
            },
            None,
        )
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

/// Runs `operation` inside `span` and records how it ended (`outcome = "error"` on failure).
pub(crate) async fn traced<T: Outcome>(
    span: Span,
    operation: impl Future<Output = Result<T>>,
) -> Result<T> {
    if span.is_disabled() {
        return operation.await;
    }
    let started = Instant::now();
    let result = operation.instrument(span.clone()).await;
    let (outcome, rows) = match &result {
        Ok(value) => value.outcome(),
        Err(_) => ("error", None),
    };
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
