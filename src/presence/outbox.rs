//! A connection's queue: the engine's side ([`Sender`]) and the server's ([`Outbox`]), bounded
//! by messages and by bytes. A connection that falls behind either bound is a slow consumer
//! and is ended (1008 "too slow"); the other connections are unaffected.
//!
//! Counting bytes matters because messages differ a thousandfold in size: a cursor move is a
//! few dozen bytes, one awareness state may be 64 KiB and a document update 1 MiB, so a bound of
//! 256 messages alone let one connection that stopped reading hold 256 MiB.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use super::options::{close_code, Disconnect};

/// What the engine hands a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A binary message to send (a y-websocket message).
    Message(Bytes),
    /// Close the connection; nothing follows.
    Close(Disconnect),
}

/// The receiving side of a connection's queue: what to send it, in order.
#[derive(Debug)]
pub struct Outbox {
    messages: mpsc::Receiver<Bytes>,
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
    (
        Sender {
            messages: messages_tx,
            kick: Arc::new(kick_tx),
            queued: queued.clone(),
            max_bytes,
        },
        Outbox {
            messages,
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
        if self.done {
            return None;
        }
        tokio::select! {
            biased;
            kicked = self.kick.wait_for(Option::is_some) => {
                self.done = true;
                match kicked {
                    Ok(reason) => reason.clone().map(Outgoing::Close),
                    // Every sender is gone: the connection was released.
                    Err(_) => None,
                }
            }
            message = self.messages.recv() => match message {
                Some(message) => {
                    self.queued.fetch_sub(message.len(), Ordering::Relaxed);
                    Some(Outgoing::Message(message))
                }
                None => {
                    self.done = true;
                    None
                }
            },
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
    messages: mpsc::Sender<Bytes>,
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
        match self.messages.try_send(message) {
            Ok(()) => true,
            Err(error) => {
                self.queued.fetch_sub(len, Ordering::Relaxed);
                if let mpsc::error::TrySendError::Full(_) = error {
                    self.too_slow("messages");
                }
                // Closed: the connection is gone; its session cleans up.
                false
            }
        }
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
