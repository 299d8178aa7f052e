//! A connection's queue: the engine's side ([`Sender`]) and the server's ([`Outbox`]), bounded
//! by messages and by bytes. A connection that falls behind either bound is a slow consumer
//! and is ended (1008 "too slow"); the other connections are unaffected.
//!
//! Counting bytes matters because messages differ a thousandfold in size: a cursor move is a
//! few dozen bytes, one awareness state may be 64 KiB and a document update 1 MiB, so a bound of
//! 256 messages alone let one connection that stopped reading hold 256 MiB.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::batch::{Batch, Slot};
use super::options::{close_code, Disconnect};

/// What the engine hands a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A binary message to send (a y-websocket message).
    Message(Bytes),
    /// Close the connection; nothing follows.
    Close(Disconnect),
}

/// What the queue holds: a message, or the place of the awareness in the connection's
/// [`Slot`] (one place however many batches were merged there since).
#[derive(Debug)]
enum Item {
    Message(Bytes),
    Awareness,
}

/// The receiving side of a connection's queue: what to send it, in order.
#[derive(Debug)]
pub struct Outbox {
    messages: mpsc::Receiver<Item>,
    slot: Arc<Mutex<Slot>>,
    /// Messages taken from the slot and not handed out yet.
    ready: VecDeque<Bytes>,
    kick: watch::Receiver<Option<Disconnect>>,
    /// Bytes of the messages queued and not yet taken ([`next`](Self::next)).
    queued: Arc<AtomicUsize>,
    done: bool,
}

/// A connection's queue, bounded by `capacity` messages and `max_bytes` bytes: the engine's
/// side and the server's.
pub(crate) fn queue(capacity: usize, max_bytes: usize) -> (Sender, Outbox) {
    let (messages_tx, messages) = mpsc::channel(capacity);
    let (kick_tx, kick) = watch::channel(None);
    let queued = Arc::new(AtomicUsize::new(0));
    let slot = Arc::new(Mutex::new(Slot::default()));
    (
        Sender {
            messages: messages_tx,
            slot: slot.clone(),
            kick: Arc::new(kick_tx),
            queued: queued.clone(),
            max_bytes,
        },
        Outbox {
            messages,
            slot,
            ready: VecDeque::new(),
            kick,
            queued,
            done: false,
        },
    )
}

impl Outbox {
    /// The next thing to send, or `None` once the connection is closed. A
    /// [`Outgoing::Close`] comes last.
    pub async fn next(&mut self) -> Option<Outgoing> {
        loop {
            if self.done {
                return None;
            }
            if self.kick.borrow().is_none() {
                if let Some(message) = self.ready.pop_front() {
                    return Some(Outgoing::Message(message));
                }
            }
            let item = tokio::select! {
                biased;
                kicked = self.kick.wait_for(Option::is_some) => {
                    self.done = true;
                    return match kicked {
                        Ok(reason) => reason.clone().map(Outgoing::Close),
                        // Every sender is gone: the connection was released.
                        Err(_) => None,
                    };
                }
                item = self.messages.recv() => item,
            };
            if let Some(outgoing) = self.take(item) {
                return Some(outgoing);
            }
        }
    }

    /// The next thing to send if one is waiting now (a writer puts what is waiting on the
    /// socket before flushing it once); `None` when nothing is, or the connection is closing
    /// ([`next`](Self::next) then yields the close).
    pub fn try_next(&mut self) -> Option<Outgoing> {
        loop {
            if self.done || self.kick.borrow().is_some() {
                return None;
            }
            if let Some(message) = self.ready.pop_front() {
                return Some(Outgoing::Message(message));
            }
            let item = self.messages.try_recv().ok()?;
            if let Some(outgoing) = self.take(Some(item)) {
                return Some(outgoing);
            }
        }
    }

    /// What an item of the queue gives: a message, or what the slot holds.
    fn take(&mut self, item: Option<Item>) -> Option<Outgoing> {
        match item {
            Some(Item::Message(message)) => {
                self.queued.fetch_sub(message.len(), Ordering::Relaxed);
                Some(Outgoing::Message(message))
            }
            Some(Item::Awareness) => {
                let mut slot = held(&self.slot);
                self.queued.fetch_sub(slot.bytes(), Ordering::Relaxed);
                self.ready.extend(slot.take());
                drop(slot);
                self.ready.pop_front().map(Outgoing::Message)
            }
            None => {
                self.done = true;
                None
            }
        }
    }

    /// Bytes of the messages waiting in this queue.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Resolves once the engine has ended the connection (its next item is the
    /// [`Outgoing::Close`]): a writer stuck on a socket that stopped reading can give up then.
    pub fn closing(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut kick = self.kick.clone();
        async move {
            let _ = kick.wait_for(Option::is_some).await;
        }
    }
}

/// The sending side of a connection's queue, and the engine's way to end it.
#[derive(Debug, Clone)]
pub(crate) struct Sender {
    messages: mpsc::Sender<Item>,
    slot: Arc<Mutex<Slot>>,
    kick: Arc<watch::Sender<Option<Disconnect>>>,
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
}

impl Sender {
    /// Queues `message` for this connection (counted).
    pub(crate) fn send(&self, message: Bytes) {
        if self.queue(message) {
            ::metrics::counter!(crate::metrics::PRESENCE_SENT).increment(1);
        }
    }

    /// Queues `message`, uncounted; false when it was not queued (a bound reached: the
    /// connection is ended; or it is gone). An empty queue takes any one message, so a bound
    /// below the largest message slows nobody who keeps up.
    pub(crate) fn queue(&self, message: Bytes) -> bool {
        let len = message.len();
        let before = self.queued.fetch_add(len, Ordering::Relaxed);
        if before > 0 && before + len > self.max_bytes {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            self.too_slow("bytes");
            return false;
        }
        match self.messages.try_send(Item::Message(message)) {
            Ok(()) => true,
            Err(error) => {
                self.queued.fetch_sub(len, Ordering::Relaxed);
                self.refused(error)
            }
        }
    }

    /// Adds `batch` to the connection's awareness not yet taken, each client's entry over the
    /// one held of it; false when the connection is ended (a bound reached) or gone. Bytes
    /// count as they are held after merging: a connection that falls behind holds at most
    /// every client's last entry, not every move.
    pub(crate) fn queue_batch(&self, batch: &Arc<Batch>) -> bool {
        let mut slot = held(&self.slot);
        let was_empty = slot.is_empty();
        let had = slot.bytes();
        slot.add(batch);
        let has = slot.bytes();
        // The queue's bytes before this batch; after it, `before + has - had`.
        let before = if has >= had {
            self.queued.fetch_add(has - had, Ordering::Relaxed)
        } else {
            self.queued.fetch_sub(had - has, Ordering::Relaxed)
        };
        if before > 0 && before + has > had + self.max_bytes {
            drop(slot);
            self.too_slow("bytes");
            return false;
        }
        if !was_empty {
            return true;
        }
        match self.messages.try_send(Item::Awareness) {
            Ok(()) => true,
            Err(error) => self.refused(error),
        }
    }

    /// A message the channel did not take: the connection is too slow (full) or gone.
    fn refused(&self, error: mpsc::error::TrySendError<Item>) -> bool {
        if let mpsc::error::TrySendError::Full(_) = error {
            self.too_slow("messages");
        }
        // Closed: the connection is gone; its session cleans up.
        false
    }

    fn too_slow(&self, bound: &str) {
        self.disconnect(Disconnect::new(
            close_code::POLICY_VIOLATION,
            format!("too slow: the connection's send queue is full ({bound})"),
        ));
    }

    /// Ends the connection with `reason`, unless it was ended already.
    pub(crate) fn disconnect(&self, reason: Disconnect) {
        let label = match reason.code {
            close_code::POLICY_VIOLATION => "slow_consumer",
            close_code::GOING_AWAY => "shutdown",
            close_code::INVALID_DATA | close_code::UNSUPPORTED_DATA => "invalid",
            close_code::INTERNAL_ERROR => "store",
            _ => "other",
        };
        let first = self.kick.send_if_modified(|slot| {
            if slot.is_some() {
                return false;
            }
            *slot = Some(reason);
            true
        });
        if first {
            ::metrics::counter!(crate::metrics::PRESENCE_DISCONNECTS, "reason" => label)
                .increment(1);
        }
    }
}

/// Locks a connection's slot, through a poisoned lock (plain data; keep serving).
fn held(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
}
