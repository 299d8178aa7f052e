//! Awareness on its way to a room's connections: a [`Batch`] is encoded once per room and
//! shared by every recipient; a recipient's [`Slot`] holds what its writer has not taken yet,
//! each client's latest entry only, so a connection that falls behind gets one message with
//! every client's last state instead of a queue that grows with every move.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::y_protocols::codec::{awareness_message_of, encode_client};
use crate::y_protocols::AwarenessClientUpdate;

/// One client's entry, encoded (id, clock, JSON state).
#[derive(Debug, Clone)]
pub(super) struct Piece {
    pub(super) client_id: u64,
    pub(super) clock: u64,
    /// A state (true) or a leave.
    pub(super) present: bool,
    pub(super) bytes: Bytes,
}

/// Entries sent together, and the one message that holds them.
#[derive(Debug)]
pub(super) struct Batch {
    pieces: Vec<Piece>,
    message: Bytes,
}

impl Batch {
    /// `clients` encoded (a client that cannot be encoded is left out, logged); `None` when
    /// nothing is left.
    pub(super) fn encode(clients: &[AwarenessClientUpdate]) -> Option<Arc<Self>> {
        let mut json = String::new();
        let pieces = clients
            .iter()
            .filter_map(|client| {
                let mut out = Vec::with_capacity(32);
                match encode_client(&mut out, &mut json, client) {
                    Ok(()) => Some(Piece {
                        client_id: client.client_id,
                        clock: client.clock,
                        present: client.state.is_some(),
                        bytes: out.into(),
                    }),
                    Err(error) => {
                        // Every id and clock here came through the codec or the store's checks.
                        tracing::error!(%error, "presence: cannot encode an awareness entry");
                        None
                    }
                }
            })
            .collect();
        Self::of(pieces)
    }

    /// A batch of `pieces`; `None` when there are none.
    pub(super) fn of(pieces: Vec<Piece>) -> Option<Arc<Self>> {
        if pieces.is_empty() {
            return None;
        }
        let message = awareness_message_of(pieces.iter().map(|p| &p.bytes[..])).into();
        Some(Arc::new(Self { pieces, message }))
    }
}

/// Entries of one stretch, one per client.
#[derive(Debug, Default)]
struct Merged {
    pieces: Vec<Piece>,
    index: HashMap<u64, usize>,
    bytes: usize,
}

impl Merged {
    fn from_batch(batch: &Batch) -> Self {
        let mut merged = Self::default();
        for piece in &batch.pieces {
            merged.put(piece.clone());
        }
        merged
    }

    /// Whether `piece` would turn a client's presence around here (a join after its leave, a
    /// leave after its state): both must reach the recipient, so it starts a new stretch.
    fn flips(&self, piece: &Piece) -> bool {
        self.index
            .get(&piece.client_id)
            .is_some_and(|&i| self.pieces[i].present != piece.present)
    }

    /// Puts `piece` in, over an older entry of the same client.
    fn put(&mut self, piece: Piece) {
        match self.index.get(&piece.client_id) {
            Some(&i) => {
                let old = &mut self.pieces[i];
                if piece.clock >= old.clock {
                    self.bytes = self.bytes - old.bytes.len() + piece.bytes.len();
                    *old = piece;
                }
            }
            None => {
                self.bytes += piece.bytes.len();
                self.index.insert(piece.client_id, self.pieces.len());
                self.pieces.push(piece);
            }
        }
    }
}

#[derive(Debug)]
enum Segment {
    /// One batch as the room encoded it: sent as it is.
    Shared(Arc<Batch>),
    Merged(Merged),
}

impl Segment {
    fn bytes(&self) -> usize {
        match self {
            Self::Shared(batch) => batch.message.len(),
            Self::Merged(merged) => merged.bytes,
        }
    }
}

/// What a recipient was sent and its writer has not taken yet.
#[derive(Debug, Default)]
pub(super) struct Slot {
    segments: Vec<Segment>,
}

impl Slot {
    pub(super) fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Bytes held (entries; a message adds a few bytes of header).
    pub(super) fn bytes(&self) -> usize {
        self.segments.iter().map(Segment::bytes).sum()
    }

    /// Adds `batch`: each client's entry replaces the one held of it, unless it turns the
    /// client's presence around (a join and a leave are never merged away).
    pub(super) fn add(&mut self, batch: &Arc<Batch>) {
        let Some(last) = self.segments.last_mut() else {
            self.segments.push(Segment::Shared(batch.clone()));
            return;
        };
        if let Segment::Shared(shared) = last {
            *last = Segment::Merged(Merged::from_batch(shared));
        }
        for piece in &batch.pieces {
            let flips = match self.segments.last() {
                Some(Segment::Merged(merged)) => merged.flips(piece),
                _ => false,
            };
            if flips {
                self.segments.push(Segment::Merged(Merged::default()));
            }
            if let Some(Segment::Merged(merged)) = self.segments.last_mut() {
                merged.put(piece.clone());
            }
        }
    }

    /// Everything held, as messages to send in order; the slot is empty afterwards.
    pub(super) fn take(&mut self) -> Vec<Bytes> {
        self.segments
            .drain(..)
            .map(|segment| match segment {
                Segment::Shared(batch) => batch.message.clone(),
                Segment::Merged(merged) => {
                    awareness_message_of(merged.pieces.iter().map(|p| &p.bytes[..])).into()
                }
            })
            .collect()
    }
}
