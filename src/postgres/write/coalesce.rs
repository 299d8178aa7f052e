//! Write coalescing ("natural batching", as group commit does it): concurrent `set` calls that
//! queue while every pooled connection is busy go out together as **one** `set_many`
//! statement, taken by whichever caller next gets a connection.
//!
//! - At most a few coalesced statements are in flight at once ([`Coalescer::new`]: a quarter
//!   of the pool, at least one); a `set` that arrives while they are all busy queues, and the
//!   next caller to get a slot takes the whole queue. On a database with few cores, a handful of
//!   statements carrying many rows each beats one statement per row on every connection.
//! - No timer: a `set` that finds a free slot and an empty queue runs at once, as the plain
//!   upsert — a lone writer waits for nothing.
//! - Each caller gets exactly its own outcome: the batch statement resolves every update as if
//!   the `set`s ran one after another in arrival order (`set_many`'s rules).
//! - Errors reach only the callers whose updates were in the failed statement. A caller waits
//!   for a slot at most the pool's acquire timeout, as it would for a connection, and then
//!   fails with [`Error::PoolTimeout`] unless a batch already carries its update.
//! - Cancellation: a batch holding other callers' updates runs on its own task, so dropping the
//!   caller that started it loses nobody's write or answer; a caller dropped while queued still
//!   has its update written (as a `set` already sent would be) and its answer is discarded.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::entry::{AwarenessUpdate, SetOutcome};
use crate::error::{Error, Result};

/// Most updates one coalesced statement carries; more wait for the next connection.
pub(crate) const MAX_BATCH: usize = 256;

/// The queue of `set`s waiting for a slot, and the slots.
#[derive(Debug)]
pub(crate) struct Coalescer {
    queue: Mutex<VecDeque<Queued>>,
    next_id: AtomicU64,
    /// One permit per statement that may be in flight.
    slots: Arc<Semaphore>,
}

#[derive(Debug)]
struct Queued {
    id: u64,
    update: AwarenessUpdate,
    reply: oneshot::Sender<Result<SetOutcome>>,
}

/// A caller's place in the queue.
pub(crate) struct Ticket {
    id: u64,
    reply: oneshot::Receiver<Result<SetOutcome>>,
}

/// What a caller holding a connection does next.
pub(crate) enum Turn {
    /// Its update was taken by another caller's batch: wait for the answer.
    Wait(Ticket),
    /// Only its own update was queued: run it here, alone.
    Alone(AwarenessUpdate),
    /// It took a batch with other callers' updates: run it on its own task, then wait.
    Send(Taken, Ticket),
}

/// Updates taken from the queue to go out in one statement.
pub(crate) struct Taken(Vec<Queued>);

impl Coalescer {
    /// A coalescer for a pool of `pool_size` connections: a quarter of them (at least one)
    /// may carry coalesced statements at once, the rest stay free for reads and other writes.
    pub(crate) fn new(pool_size: u32) -> Self {
        let slots = usize::try_from(pool_size / 4).unwrap_or(1).max(1);
        Self {
            queue: Mutex::default(),
            next_id: AtomicU64::new(0),
            slots: Arc::new(Semaphore::new(slots)),
        }
    }

    /// A free slot, when one is free now and nobody is queued: the caller goes alone.
    pub(crate) fn try_alone(&self) -> Option<OwnedSemaphorePermit> {
        if !self.is_idle() {
            return None;
        }
        Arc::clone(&self.slots).try_acquire_owned().ok()
    }

    /// Waits for a slot (`None` only if the semaphore were closed, which it never is).
    pub(crate) async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.slots).acquire_owned().await.ok()
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Queued>> {
        // Every critical section is a push or a drain, which cannot leave the queue half-done.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True when no `set` is waiting.
    pub(crate) fn is_idle(&self) -> bool {
        self.queue().is_empty()
    }

    /// Queues `update`.
    pub(crate) fn enqueue(&self, update: &AwarenessUpdate) -> Ticket {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        self.queue().push_back(Queued {
            id,
            update: update.clone(),
            reply,
        });
        Ticket { id, reply: answer }
    }

    /// Takes the caller's update back out if no batch took it yet (it waited too long for a
    /// slot): true when it was still queued, so the caller reports its own timeout.
    pub(crate) fn withdraw(&self, ticket: &Ticket) -> bool {
        let mut queue = self.queue();
        match queue.iter().position(|q| q.id == ticket.id) {
            Some(at) => {
                queue.remove(at);
                true
            }
            None => false,
        }
    }

    /// The caller got a slot: takes what is queued (at most [`MAX_BATCH`]).
    pub(crate) fn take(&self, ticket: Ticket) -> Turn {
        let taken: Vec<Queued> = {
            let mut queue = self.queue();
            let n = queue.len().min(MAX_BATCH);
            queue.drain(..n).collect()
        };
        match taken.as_slice() {
            [] => Turn::Wait(ticket),
            [only] if only.id == ticket.id => {
                let only = taken.into_iter().next().map(|q| q.update);
                match only {
                    Some(update) => Turn::Alone(update),
                    None => Turn::Wait(ticket),
                }
            }
            _ => Turn::Send(Taken(taken), ticket),
        }
    }
}

impl Ticket {
    /// The outcome of this caller's update, from whichever batch carried it.
    pub(crate) async fn outcome(self) -> Result<SetOutcome> {
        self.reply.await.unwrap_or_else(|_| {
            Err(Error::Connection(
                "the coalesced write carrying this update was abandoned (runtime shutting down)"
                    .into(),
            ))
        })
    }
}

impl Taken {
    /// Runs the batch through `write` (one `set_many` statement) and answers every caller in
    /// it; the slot is held until then.
    pub(crate) async fn run<W, F>(self, write: W, slot: Option<OwnedSemaphorePermit>)
    where
        W: FnOnce(Vec<AwarenessUpdate>) -> F,
        F: std::future::Future<Output = Result<Vec<SetOutcome>>>,
    {
        let (updates, replies): (Vec<AwarenessUpdate>, Vec<_>) =
            self.0.into_iter().map(|q| (q.update, q.reply)).unzip();
        let result = write(updates).await;
        drop(slot);
        match result {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // A caller that was dropped no longer listens.
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                for reply in replies {
                    let _ = reply.send(Err(replicate(&error)));
                }
            }
        }
    }
}

/// The same failure for each caller of a failed batch (`Error` is not `Clone`: it carries
/// diesel's error). Kinds are kept, so `is_connection_error` answers the same for each.
fn replicate(error: &Error) -> Error {
    use diesel::result::Error as DieselError;
    match error {
        Error::Database(DieselError::DatabaseError(kind, info)) => Error::Database(
            DieselError::DatabaseError(*kind, Box::new(info.message().to_owned())),
        ),
        Error::Connection(reason) => Error::Connection(reason.clone()),
        Error::ReadOnly(reason) => Error::ReadOnly(reason.clone()),
        Error::PreparedStatement(reason) => Error::PreparedStatement(reason.clone()),
        Error::PoolTimeout(waited) => Error::PoolTimeout(*waited),
        other => Error::Database(DieselError::QueryBuilderError(other.to_string().into())),
    }
}
