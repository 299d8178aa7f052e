//! The engine's settings ([`PresenceOptions`]), the close codes it asks for, and why it ends a
//! connection ([`Disconnect`]).

use std::time::Duration;

use super::tick::Tick;
use crate::error::Error;
use crate::postgres::{ChangeFeedOptions, InstanceOptions};
use crate::y_protocols::DecodeLimits;

/// WebSocket close codes (RFC 6455) the engine asks for.
pub mod close_code {
    /// The server is going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// A message type the engine does not handle.
    pub const UNSUPPORTED_DATA: u16 = 1003;
    /// A malformed message.
    pub const INVALID_DATA: u16 = 1007;
    /// The connection broke a rule (it fell too far behind, say).
    pub const POLICY_VIOLATION: u16 = 1008;
    /// The store failed.
    pub const INTERNAL_ERROR: u16 = 1011;
}

/// The default bound of a connection's queue in bytes ([`PresenceOptions::queue_bytes`]):
/// 4 MiB, four of the largest message a y-websocket server usually accepts.
pub const DEFAULT_QUEUE_BYTES: usize = 4 << 20;

/// Settings of a [`Presence`](super::Presence) engine: `PresenceOptions::default().with_queue_capacity(512)`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PresenceOptions {
    /// Limits for decoding incoming awareness updates (clients per message, state size).
    pub decode_limits: DecodeLimits,
    /// Messages queued per connection before it counts as a slow consumer and is
    /// disconnected (default 256).
    pub queue_capacity: usize,
    /// Bytes queued per connection before it counts as a slow consumer and is disconnected
    /// (default 4 MiB, [`DEFAULT_QUEUE_BYTES`]). An empty queue takes any one message.
    pub queue_bytes: usize,
    /// How often departed entries (expired, or left by a crashed instance) are taken and
    /// announced (default 1 s).
    pub prune_interval: Duration,
    /// The instance's lease (PostgreSQL): a crashed instance's clients are gone for everyone
    /// within `lease + prune_interval`. The default instance id is random per process.
    pub instance: InstanceOptions,
    /// The change feed (PostgreSQL). Publishing is always on; keep the default origin (unique
    /// per process) unless you know better. The engine's default publishes without a
    /// coalescing window (changes still batch while a `NOTIFY` is in flight): measured with
    /// `make bench-relay`, the 1 ms delay of the store's default cost 1.5 ms of p50
    /// cross-instance delivery for no measurable CPU saving at 256 updates/s.
    pub change_feed: ChangeFeedOptions,
    /// How often a held client's moves are saved to the table (PostgreSQL; default 1 s,
    /// [`DEFAULT_PERSIST_INTERVAL`]). A move of a client the connection already holds is relayed
    /// at once, locally and through the change feed, and written with the instance's other
    /// unsaved moves at the next tick, as one statement: the table (`get`, `get_all`, a client
    /// joining on another instance) may show a state up to this long behind. Joins, leaves and
    /// refusals are written as they happen. `Duration::ZERO` writes every move as it happens.
    pub persist_interval: Duration,
    /// Coalescing for busy rooms (default 30 ms, [`DEFAULT_AWARENESS_TICK`]): in a room with
    /// at least [`awareness_tick_from`](Self::awareness_tick_from) local connections, a move
    /// that comes less than a tick after the room's last one is held until the tick and sent
    /// with every other move of it, each client's latest state once, in one message per
    /// connection. Joins and leaves go at once (with the moves held before them); a move after
    /// a quiet tick goes at once. In every room, a connection that falls behind holds each
    /// client's latest entry, not every move. `Duration::ZERO` turns coalescing off: every
    /// change is its own message.
    pub awareness_tick: Duration,
    /// Local connections from which a room's moves wait for the tick (default 32,
    /// [`DEFAULT_AWARENESS_TICK_FROM`]): below, a move costs a handful of frames and goes at
    /// once.
    pub awareness_tick_from: usize,
}

/// [`PresenceOptions::awareness_tick`]'s default.
pub const DEFAULT_AWARENESS_TICK: Duration = Duration::from_millis(30);

/// [`PresenceOptions::awareness_tick_from`]'s default.
pub const DEFAULT_AWARENESS_TICK_FROM: usize = 32;

/// [`PresenceOptions::persist_interval`]'s default.
pub const DEFAULT_PERSIST_INTERVAL: Duration = Duration::from_secs(1);

impl Default for PresenceOptions {
    fn default() -> Self {
        Self {
            decode_limits: DecodeLimits::default(),
            queue_capacity: 256,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            prune_interval: Duration::from_secs(1),
            instance: InstanceOptions::default(),
            change_feed: ChangeFeedOptions::default().with_publish_delay(Duration::ZERO),
            persist_interval: DEFAULT_PERSIST_INTERVAL,
            awareness_tick: DEFAULT_AWARENESS_TICK,
            awareness_tick_from: DEFAULT_AWARENESS_TICK_FROM,
        }
    }
}

impl PresenceOptions {
    /// These options with other decode limits.
    pub fn with_decode_limits(mut self, limits: DecodeLimits) -> Self {
        self.decode_limits = limits;
        self
    }

    /// These options with another per-connection queue capacity (at least 1).
    pub fn with_queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// These options with another per-connection bound in bytes (at least 1).
    pub fn with_queue_bytes(mut self, bytes: usize) -> Self {
        self.queue_bytes = bytes;
        self
    }

    /// These options with another pruning period.
    pub fn with_prune_interval(mut self, interval: Duration) -> Self {
        self.prune_interval = interval;
        self
    }

    /// These options with other instance (lease) settings.
    pub fn with_instance(mut self, instance: InstanceOptions) -> Self {
        self.instance = instance;
        self
    }

    /// These options with another interval for saving moves (`Duration::ZERO`: every move is
    /// written as it happens).
    pub fn with_persist_interval(mut self, interval: Duration) -> Self {
        self.persist_interval = interval;
        self
    }

    /// These options with another coalescing tick for busy rooms (`Duration::ZERO`: off).
    pub fn with_awareness_tick(mut self, tick: Duration) -> Self {
        self.awareness_tick = tick;
        self
    }

    /// These options with another number of local connections from which a room's moves wait
    /// for the tick.
    pub fn with_awareness_tick_from(mut self, connections: usize) -> Self {
        self.awareness_tick_from = connections;
        self
    }

    /// The rooms' tick (`None`: coalescing off).
    pub(super) fn tick(&self) -> Option<Tick> {
        (!self.awareness_tick.is_zero()).then_some(Tick {
            every: self.awareness_tick,
            from_members: self.awareness_tick_from,
        })
    }

    /// These options with other change-feed settings.
    pub fn with_change_feed(mut self, change_feed: ChangeFeedOptions) -> Self {
        self.change_feed = change_feed;
        self
    }
}

/// Why the server should close a connection: a WebSocket close code ([`close_code`]) and a
/// reason the client can read (at most 123 bytes, as a close frame allows).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// The close code.
    pub code: u16,
    /// Why.
    pub reason: String,
}

impl Disconnect {
    /// A close with `code` and `reason` (cut to 123 bytes).
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        let mut reason: String = reason.into();
        while reason.len() > 123 {
            reason.pop();
        }
        Self { code, reason }
    }

    pub(crate) fn from_store(error: Error) -> Self {
        match error {
            Error::Codec(e) => Self::new(
                close_code::INVALID_DATA,
                format!("malformed awareness update: {e}"),
            ),
            e @ Error::InvalidInput { .. } => Self::new(close_code::INVALID_DATA, e.to_string()),
            e => {
                tracing::warn!(error = %e, "presence: store error; closing the connection");
                Self::new(close_code::INTERNAL_ERROR, "presence store unavailable")
            }
        }
    }
}

impl std::fmt::Display for Disconnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.reason, self.code)
    }
}

impl std::error::Error for Disconnect {}
