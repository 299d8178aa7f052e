//! The relay's flags and environment variables (clap): every setting in one place, each with
//! its default and what it costs.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::auth::Access;

/// A y-websocket presence server on synckit-awareness.
#[derive(Debug, Parser)]
#[command(version, about)]
pub(crate) struct Args {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    /// Port to listen on (0: any free port; the chosen one is printed).
    #[arg(long, env = "PORT", default_value_t = 1234)]
    pub(crate) port: u16,
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub(crate) host: IpAddr,
    /// Threads that run the connections (0: one per core, or TOKIO_WORKER_THREADS). One thread
    /// wakes no other: measured on two cores it spent 0.74x the CPU per delivery of two at 8
    /// rooms x 8 clients, 0.86x at 16 x 16 and 0.79x in one room of 150, with the same p99
    /// (docs/performance.md). Raise it when one instance must use more than a core; or run
    /// more instances.
    #[arg(long, env = "SYNCKIT_RELAY_WORKER_THREADS", default_value_t = 1)]
    pub(crate) worker_threads: usize,
    /// PostgreSQL URL; without it (or empty) the relay runs alone on the in-memory store.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub(crate) database_url: Option<String>,
    /// Who may do what (docs/access.md): tokens, rooms, limits per principal.
    #[command(flatten)]
    pub(crate) access: AccessArgs,
    /// Webhooks on joins and leaves (README "Webhooks").
    #[command(flatten)]
    pub(crate) webhooks: WebhookArgs,
    /// Awareness timeout: an entry not refreshed for this long is gone (y-protocols: 30s;
    /// Yjs clients refresh every 15s, so keep it above that).
    #[arg(long, env = "SYNCKIT_RELAY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,
    /// How often departed entries (expired, or a crashed instance's) are removed and announced.
    #[arg(long, env = "SYNCKIT_RELAY_PRUNE_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub(crate) prune_interval: Duration,
    /// The instance's lease (PostgreSQL): a crashed instance's clients are gone for everyone
    /// within lease + prune interval.
    #[arg(long, env = "SYNCKIT_RELAY_LEASE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) lease: Duration,
    /// This instance's name, shown on the page (default: relay-<port>). Presence never depends
    /// on it: every process gets a unique instance id and feed origin.
    #[arg(long, env = "SYNCKIT_RELAY_INSTANCE")]
    pub(crate) instance: Option<String>,
    /// Directory of the built page (`make relay-web`).
    #[arg(long, env = "SYNCKIT_RELAY_WEB_DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/web/dist"))]
    pub(crate) web_dir: PathBuf,
    /// Largest WebSocket message accepted; a larger one closes the connection (1009).
    #[arg(long, env = "SYNCKIT_RELAY_MAX_MESSAGE_BYTES", default_value_t = 1 << 20)]
    pub(crate) max_message_bytes: usize,
    /// Largest awareness state (JSON bytes) accepted.
    #[arg(long, env = "SYNCKIT_RELAY_MAX_STATE_BYTES", default_value_t = 64 * 1024)]
    pub(crate) max_state_bytes: usize,
    /// Most live participants per document (0: no limit).
    #[arg(
        long,
        env = "SYNCKIT_RELAY_MAX_CLIENTS_PER_DOCUMENT",
        default_value_t = 1000
    )]
    pub(crate) max_clients_per_document: u32,
    /// Most live participants one connection may write (0: no limit).
    #[arg(
        long,
        env = "SYNCKIT_RELAY_MAX_CLIENTS_PER_CONNECTION",
        default_value_t = 4
    )]
    pub(crate) max_clients_per_connection: u32,
    /// Messages queued per connection; a connection that falls further behind is closed (1008).
    #[arg(long, env = "SYNCKIT_RELAY_QUEUE", default_value_t = 256)]
    pub(crate) queue_capacity: usize,
    /// Bytes queued per connection; a connection that falls further behind is closed (1008).
    #[arg(long, env = "SYNCKIT_RELAY_QUEUE_BYTES", default_value_t = synckit_awareness::presence::DEFAULT_QUEUE_BYTES)]
    pub(crate) queue_bytes: usize,
    /// How often each instance saves its clients' latest moves to the awareness table (0s:
    /// every move is written as it happens). Moves are relayed at once either way; the table
    /// lags by at most this.
    #[arg(long, env = "SYNCKIT_RELAY_PERSIST_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub(crate) persist_interval: Duration,
    /// The least time between two of an instance's presence notifications (0s: none). Moves
    /// that come sooner wait for the rest of it and go together in one `NOTIFY`.
    #[arg(long, env = "SYNCKIT_RELAY_PUBLISH_PACE", default_value = "0s", value_parser = humantime::parse_duration)]
    pub(crate) publish_pace: Duration,
    /// Send presence notifications even while no other instance listens. Off by default: an
    /// instance that has heard no other listener's hello for 5 s hands its changes to its
    /// own subscribers without a `NOTIFY` (one instance alone costs PostgreSQL nothing per
    /// move). Turn it on while a process of an older version listens to the channel (it says
    /// no hello).
    #[arg(long, env = "SYNCKIT_RELAY_NOTIFY_WHEN_ALONE")]
    pub(crate) notify_when_alone: bool,
    /// Coalescing for busy rooms: in a room with at least `--awareness-tick-from` connections on
    /// this instance, moves that come within this of the room's last one go out together at the
    /// tick, each client's latest state once (0s: off, every move is its own message). Joins
    /// and leaves never wait.
    #[arg(long, env = "SYNCKIT_RELAY_AWARENESS_TICK", default_value = "30ms", value_parser = humantime::parse_duration)]
    pub(crate) awareness_tick: Duration,
    /// Connections on this instance from which a room's moves wait for the tick.
    #[arg(long, env = "SYNCKIT_RELAY_AWARENESS_TICK_FROM", default_value_t = synckit_awareness::presence::DEFAULT_AWARENESS_TICK_FROM)]
    pub(crate) awareness_tick_from: usize,
    /// How often idle connections are pinged.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) ping_interval: Duration,
    /// A connection that sends nothing (not even a pong) for this long is closed.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) pong_timeout: Duration,
    /// Largest document update (a client's sync step 2 or update) accepted; a larger one is
    /// refused with a reason (y-websocket permission-denied) and the connection stays open.
    #[arg(long, env = "SYNCKIT_RELAY_MAX_UPDATE_BYTES", default_value_t = 1 << 20)]
    pub(crate) max_update_bytes: usize,
    /// A document whose stored bytes (snapshot + rows) would pass this refuses further updates
    /// with a reason; it can still be read.
    #[arg(long, env = "SYNCKIT_RELAY_MAX_DOCUMENT_BYTES", default_value_t = 64 << 20)]
    pub(crate) max_document_bytes: usize,
    /// A document's appended rows are folded into its snapshot once there are this many
    /// (0: never).
    #[arg(long, env = "SYNCKIT_RELAY_COMPACT_AFTER", default_value_t = 500)]
    pub(crate) compact_after: usize,
    /// Wait before the listener (presence and documents share its session) first tries to
    /// reconnect after losing its connection (then doubling up to 1 s); it then catches every
    /// open room up from the database.
    #[arg(long, alias = "documents-reconnect-delay", env = "SYNCKIT_RELAY_LISTENER_RECONNECT_DELAY", default_value = "50ms", value_parser = humantime::parse_duration)]
    pub(crate) listener_reconnect_delay: Duration,
    /// PostgreSQL connections in the pool.
    #[arg(long, env = "SYNCKIT_RELAY_POOL_SIZE", default_value_t = 8)]
    pub(crate) pool_size: u32,
    /// DATABASE_URL leads to a transaction-mode pooler (PgBouncer, Supavisor, RDS Proxy):
    /// needs --listen-url (docs/poolers.md).
    #[arg(long, env = "SYNCKIT_RELAY_TRANSACTION_POOLER")]
    pub(crate) transaction_pooler: bool,
    /// A direct (or session-mode) URL of the same database, for the change feed's listener and
    /// the migrations, when DATABASE_URL goes through a transaction-mode pooler.
    #[arg(long, env = "SYNCKIT_RELAY_LISTEN_URL", hide_env_values = true)]
    pub(crate) listen_url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Folds every document's rows into its snapshot now (DATABASE_URL), e.g. before a backup;
    /// safe while relays run. Prints what it folded.
    Compact,
    /// Prints an HS256 JWT the relay accepts (needs --auth-secret; carries --jwt-issuer and
    /// --jwt-audience when set).
    Token {
        /// Who the token's holder is (the principal claim, `sub` by default).
        #[arg(long)]
        principal: String,
        /// A room pattern and its access, `PATTERN=write` or `PATTERN=read` (a pattern is a room
        /// name, or a prefix ending in `*`; `*` alone is every room); repeat for more.
        #[arg(long = "room", value_parser = room_grant)]
        rooms: Vec<(String, Access)>,
        /// What others see as this user's `state.user` (JSON), e.g. '{"name":"Alice"}'.
        #[arg(long, value_parser = json_value)]
        user: Option<serde_json::Value>,
        /// How long it is valid.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

/// Tokens and limits (docs/access.md).
#[derive(Debug, clap::Args)]
pub(crate) struct AccessArgs {
    /// Shared secret (at least 32 bytes) for HS256 JWTs. With it or --jwks every request needs
    /// a token; with neither the relay runs open (anonymous, every room writable).
    #[arg(long, env = "SYNCKIT_RELAY_AUTH_SECRET", hide_env_values = true)]
    pub(crate) auth_secret: Option<String>,
    /// The identity provider's JWKS: an https:// URL (http:// on loopback only) or a file;
    /// RS256/384/512, PS256/384/512, ES256/384 and EdDSA keys picked by `kid`.
    #[arg(long, env = "SYNCKIT_RELAY_JWKS")]
    pub(crate) jwks: Option<String>,
    /// Least time between two JWKS fetches caused by a token with an unknown `kid`.
    #[arg(long, env = "SYNCKIT_RELAY_JWKS_REFETCH_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) jwks_refetch_interval: Duration,
    /// A JWKS older than this is fetched again before use (a withdrawn key stops verifying).
    #[arg(long, env = "SYNCKIT_RELAY_JWKS_MAX_AGE", default_value = "1h", value_parser = humantime::parse_duration)]
    pub(crate) jwks_max_age: Duration,
    /// Required `iss` claim.
    #[arg(long, env = "SYNCKIT_RELAY_JWT_ISSUER")]
    pub(crate) jwt_issuer: Option<String>,
    /// Required `aud` claim (without it, a token that names an audience is refused).
    #[arg(long, env = "SYNCKIT_RELAY_JWT_AUDIENCE")]
    pub(crate) jwt_audience: Option<String>,
    /// Clock leeway for `exp` and `nbf`; a connection ends at `exp` + leeway.
    #[arg(long, env = "SYNCKIT_RELAY_JWT_LEEWAY", default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) jwt_leeway: Duration,
    /// The claim naming the principal.
    #[arg(long, env = "SYNCKIT_RELAY_PRINCIPAL_CLAIM", default_value = "sub")]
    pub(crate) principal_claim: String,
    /// The claim naming the rooms: `{ "<room or prefix*>": "write" | "read" }`.
    #[arg(long, env = "SYNCKIT_RELAY_ROOMS_CLAIM", default_value = "rooms")]
    pub(crate) rooms_claim: String,
    /// The claim holding what others see as the connection's `state.user`.
    #[arg(long, env = "SYNCKIT_RELAY_USER_CLAIM", default_value = "user")]
    pub(crate) user_claim: String,
    /// What a token without the rooms claim may open: none (the default: nothing), read or
    /// write (every room).
    #[arg(long, env = "SYNCKIT_RELAY_DEFAULT_ROOM_ACCESS", value_enum, default_value_t = RoomAccess::None)]
    pub(crate) default_room_access: RoomAccess,
    /// Most WebSocket connections one principal holds at once on this relay (0: no limit).
    #[arg(
        long,
        env = "SYNCKIT_RELAY_MAX_CONNECTIONS_PER_PRINCIPAL",
        default_value_t = 64
    )]
    pub(crate) max_connections_per_principal: usize,
    /// Most presence event streams one principal holds at once (0: no limit).
    #[arg(
        long,
        env = "SYNCKIT_RELAY_MAX_STREAMS_PER_PRINCIPAL",
        default_value_t = 8
    )]
    pub(crate) max_streams_per_principal: usize,
    /// Most WebSocket connections one client address holds at once, for anonymous callers
    /// (open mode; 0: no limit, the default: behind a proxy they all share its address).
    #[arg(
        long,
        env = "SYNCKIT_RELAY_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 0
    )]
    pub(crate) max_connections_per_address: usize,
    /// Most presence event streams one client address holds at once, for anonymous callers
    /// (0: no limit, the default).
    #[arg(
        long,
        env = "SYNCKIT_RELAY_MAX_STREAMS_PER_ADDRESS",
        default_value_t = 0
    )]
    pub(crate) max_streams_per_address: usize,
    /// Most WebSocket connections on this relay (about 16 KB each when idle; 0: no limit).
    #[arg(long, env = "SYNCKIT_RELAY_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub(crate) max_connections: usize,
    /// Most presence event streams on this relay (about 27 KB each; 0: no limit).
    #[arg(long, env = "SYNCKIT_RELAY_MAX_STREAMS", default_value_t = 1_000)]
    pub(crate) max_streams: usize,
}

fn room_grant(value: &str) -> Result<(String, Access), String> {
    let (pattern, access) = value
        .rsplit_once('=')
        .ok_or("expected PATTERN=write or PATTERN=read")?;
    let access = Access::parse(access).ok_or("the access is write or read")?;
    if pattern.is_empty() {
        return Err("the pattern is empty".into());
    }
    Ok((pattern.to_owned(), access))
}

fn json_value(value: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(value).map_err(|e| format!("not JSON: {e}"))
}

/// `--default-room-access`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RoomAccess {
    /// No room (secure by default).
    None,
    /// Every room, read-only.
    Read,
    /// Every room, read-write.
    Write,
}

impl RoomAccess {
    pub(crate) fn access(self) -> Option<Access> {
        match self {
            Self::None => None,
            Self::Read => Some(Access::Read),
            Self::Write => Some(Access::Write),
        }
    }
}

/// Webhooks: `presence.joined` / `presence.left` posted to each URL, signed as Standard Webhooks
/// 1.0 says, once across every instance on the database, retried until delivered or dropped.
#[derive(Debug, clap::Args)]
pub(crate) struct WebhookArgs {
    /// A URL to post joins and leaves to (repeat the flag, or separate with commas). Needs
    /// DATABASE_URL: the events wait in the database until delivered.
    #[arg(
        long = "webhook-url",
        env = "SYNCKIT_RELAY_WEBHOOK_URL",
        value_delimiter = ','
    )]
    pub(crate) urls: Vec<String>,
    /// The signing secret, `whsec_` followed by base64 (receivers verify with the Standard
    /// Webhooks libraries).
    #[arg(long, env = "SYNCKIT_RELAY_WEBHOOK_SECRET", hide_env_values = true)]
    pub(crate) webhook_secret: Option<String>,
    /// How long one attempt may take; a slower answer counts as a failure.
    #[arg(long, env = "SYNCKIT_RELAY_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) webhook_timeout: Duration,
    /// Wait before the first retry; each further retry waits twice as long as the one before.
    #[arg(long, env = "SYNCKIT_RELAY_WEBHOOK_RETRY_MIN", default_value = "1s", value_parser = humantime::parse_duration)]
    pub(crate) webhook_retry_min: Duration,
    /// The longest wait between two attempts.
    #[arg(long, env = "SYNCKIT_RELAY_WEBHOOK_RETRY_MAX", default_value = "10m", value_parser = humantime::parse_duration)]
    pub(crate) webhook_retry_max: Duration,
    /// An event not delivered within this long is dropped (counted).
    #[arg(long, env = "SYNCKIT_RELAY_WEBHOOK_MAX_AGE", default_value = "24h", value_parser = humantime::parse_duration)]
    pub(crate) webhook_max_age: Duration,
    /// Events waiting per URL at most; past it the oldest are dropped (counted).
    #[arg(
        long,
        env = "SYNCKIT_RELAY_WEBHOOK_MAX_PENDING",
        default_value_t = 10_000
    )]
    pub(crate) webhook_max_pending: u32,
    /// How often each instance looks for events to send.
    #[arg(long, env = "SYNCKIT_RELAY_WEBHOOK_POLL", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub(crate) webhook_poll: Duration,
    /// Events of different rooms sent at once per URL (a room's events go one at a time).
    #[arg(long, env = "SYNCKIT_RELAY_WEBHOOK_CONCURRENCY", default_value_t = 16)]
    pub(crate) webhook_concurrency: u32,
}
