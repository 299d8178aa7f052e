//! `synckit-relay`: a y-websocket-compatible collaboration server whose awareness (presence) is
//! synckit-awareness's presence engine. With `DATABASE_URL`, every instance on that database
//! shares presence through PostgreSQL and its change feed (no Redis); without, it runs alone on
//! the in-memory store. Documents (sync, message type 0) are stored in the same database (every
//! update appended before it is relayed, other instances told through LISTEN/NOTIFY, compacted
//! into snapshots): shared by every instance and kept across restarts; without a database they
//! live in memory while their room is open.
//!
//! `ws://HOST:PORT/<room>[?token=…]` (the room is the document_id), `GET /` and `GET /<room>`
//! the page, `GET /healthz` health as JSON, `GET /metrics` Prometheus metrics, `GET /rooms`
//! and `GET /rooms/<room>/presence[/events]` who is here (`who.rs`). See README "Run a
//! presence server".
#![forbid(unsafe_code)]

mod auth;
mod connection;
mod who;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use clap::{Parser, Subcommand};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use synckit_awareness::presence::{Presence, PresenceOptions};
use synckit_awareness::y_protocols::DecodeLimits;
use synckit_awareness::{
    run_migrations_at, InstanceOptions, MemoryAwarenessStore, PostgresAwarenessStore,
    PostgresOptions, StoreOptions,
};
use tokio::sync::watch;

use crate::auth::{Authenticate, Open, SignedToken};
use crate::connection::Limits;
use synckit_relay::documents::{self, DocumentOptions, DocumentStore, Documents};

/// A y-websocket presence server on synckit-awareness.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Port to listen on (0: any free port; the chosen one is printed).
    #[arg(long, env = "PORT", default_value_t = 1234)]
    port: u16,
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    host: IpAddr,
    /// PostgreSQL URL; without it (or empty) the relay runs alone on the in-memory store.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Secret (at least 16 bytes) for signed tokens: connections must carry `?token=…`
    /// (`synckit-relay token`). Without it the relay runs open (anonymous connections).
    #[arg(long, env = "SYNCKIT_RELAY_AUTH_SECRET", hide_env_values = true)]
    auth_secret: Option<String>,
    /// Awareness timeout: an entry not refreshed for this long is gone (y-protocols: 30s;
    /// Yjs clients refresh every 15s, so keep it above that).
    #[arg(long, env = "SYNCKIT_RELAY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// How often departed entries (expired, or a crashed instance's) are removed and announced.
    #[arg(long, env = "SYNCKIT_RELAY_PRUNE_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    prune_interval: Duration,
    /// The instance's lease (PostgreSQL): a crashed instance's clients are gone for everyone
    /// within lease + prune interval.
    #[arg(long, env = "SYNCKIT_RELAY_LEASE", default_value = "10s", value_parser = humantime::parse_duration)]
    lease: Duration,
    /// This instance's name, shown on the page (default: relay-<port>). Presence never depends
    /// on it: every process gets a unique instance id and feed origin.
    #[arg(long, env = "SYNCKIT_RELAY_INSTANCE")]
    instance: Option<String>,
    /// Directory of the built page (`make relay-web`).
    #[arg(long, env = "SYNCKIT_RELAY_WEB_DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/web/dist"))]
    web_dir: PathBuf,
    /// Largest WebSocket message accepted; a larger one closes the connection (1009).
    #[arg(long, env = "SYNCKIT_RELAY_MAX_MESSAGE_BYTES", default_value_t = 1 << 20)]
    max_message_bytes: usize,
    /// Largest awareness state (JSON bytes) accepted.
    #[arg(long, env = "SYNCKIT_RELAY_MAX_STATE_BYTES", default_value_t = 64 * 1024)]
    max_state_bytes: usize,
    /// Most live participants per document (0: no limit).
    #[arg(
        long,
        env = "SYNCKIT_RELAY_MAX_CLIENTS_PER_DOCUMENT",
        default_value_t = 1000
    )]
    max_clients_per_document: u32,
    /// Most live participants one connection may write (0: no limit).
    #[arg(
        long,
        env = "SYNCKIT_RELAY_MAX_CLIENTS_PER_CONNECTION",
        default_value_t = 4
    )]
    max_clients_per_connection: u32,
    /// Messages queued per connection; a connection that falls further behind is closed (1008).
    #[arg(long, env = "SYNCKIT_RELAY_QUEUE", default_value_t = 256)]
    queue_capacity: usize,
    /// Bytes queued per connection; a connection that falls further behind is closed (1008).
    #[arg(long, env = "SYNCKIT_RELAY_QUEUE_BYTES", default_value_t = synckit_awareness::presence::DEFAULT_QUEUE_BYTES)]
    queue_bytes: usize,
    /// How often each instance saves its clients' latest moves to the awareness table (0s:
    /// every move is written as it happens). Moves are relayed at once either way; the table
    /// lags by at most this.
    #[arg(long, env = "SYNCKIT_RELAY_PERSIST_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    persist_interval: Duration,
    /// The least time between two of an instance's presence notifications (0s: none). Moves
    /// that come sooner wait for the rest of it and go together in one `NOTIFY`.
    #[arg(long, env = "SYNCKIT_RELAY_PUBLISH_PACE", default_value = "0s", value_parser = humantime::parse_duration)]
    publish_pace: Duration,
    /// How often idle connections are pinged.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    ping_interval: Duration,
    /// A connection that sends nothing (not even a pong) for this long is closed.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pong_timeout: Duration,
    /// Largest document update (a client's sync step 2 or update) accepted; a larger one is
    /// refused with a reason (y-websocket permission-denied) and the connection stays open.
    #[arg(long, env = "SYNCKIT_RELAY_MAX_UPDATE_BYTES", default_value_t = 1 << 20)]
    max_update_bytes: usize,
    /// A document whose stored bytes (snapshot + rows) would pass this refuses further updates
    /// with a reason; it can still be read.
    #[arg(long, env = "SYNCKIT_RELAY_MAX_DOCUMENT_BYTES", default_value_t = 64 << 20)]
    max_document_bytes: usize,
    /// A document's appended rows are folded into its snapshot once there are this many
    /// (0: never).
    #[arg(long, env = "SYNCKIT_RELAY_COMPACT_AFTER", default_value_t = 500)]
    compact_after: usize,
    /// Wait before the listener (presence and documents share its session) first tries to
    /// reconnect after losing its connection (then doubling up to 1 s); it then catches every
    /// open room up from the database.
    #[arg(long, alias = "documents-reconnect-delay", env = "SYNCKIT_RELAY_LISTENER_RECONNECT_DELAY", default_value = "50ms", value_parser = humantime::parse_duration)]
    listener_reconnect_delay: Duration,
    /// PostgreSQL connections in the pool.
    #[arg(long, env = "SYNCKIT_RELAY_POOL_SIZE", default_value_t = 8)]
    pool_size: u32,
    /// DATABASE_URL leads to a transaction-mode pooler (PgBouncer, Supavisor, RDS Proxy):
    /// needs --listen-url (README "Behind PgBouncer / Supavisor / RDS Proxy").
    #[arg(long, env = "SYNCKIT_RELAY_TRANSACTION_POOLER")]
    transaction_pooler: bool,
    /// A direct (or session-mode) URL of the same database, for the change feed's listener and
    /// the migrations, when DATABASE_URL goes through a transaction-mode pooler.
    #[arg(long, env = "SYNCKIT_RELAY_LISTEN_URL", hide_env_values = true)]
    listen_url: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Folds every document's rows into its snapshot now (DATABASE_URL), e.g. before a backup;
    /// safe while relays run. Prints what it folded.
    Compact,
    /// Prints a signed token for a principal (needs the auth secret).
    Token {
        /// Who the token's holder is (1-128 of A-Z a-z 0-9 _ - @ : +).
        #[arg(long)]
        principal: String,
        /// How long it is valid.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

#[derive(Clone)]
struct App {
    presence: Presence,
    documents: Arc<Documents>,
    auth: Arc<dyn Authenticate>,
    limits: Limits,
    instance: String,
    store_kind: &'static str,
    web_dir: PathBuf,
    shutdown: watch::Receiver<bool>,
    active: Arc<AtomicUsize>,
    metrics: PrometheusHandle,
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let result = match &args.command {
        Some(Command::Token { principal, ttl }) => token(&args, principal, *ttl),
        Some(Command::Compact) => compact(&args).await,
        None => run(args).await,
    };
    if let Err(error) = result {
        tracing::error!(%error, "synckit-relay failed");
        std::process::exit(1);
    }
}

fn token(args: &Args, principal: &str, ttl: Duration) -> Result<(), Failure> {
    let secret = args
        .auth_secret
        .as_deref()
        .ok_or("set SYNCKIT_RELAY_AUTH_SECRET (or --auth-secret) to mint tokens")?;
    println!("{}", SignedToken::new(secret)?.mint(principal, ttl)?);
    Ok(())
}

async fn compact(args: &Args) -> Result<(), Failure> {
    let url = args
        .database_url
        .as_deref()
        .filter(|u| !u.trim().is_empty())
        .ok_or("set DATABASE_URL (or --database-url) to compact the documents in it")?;
    let pool = synckit_awareness::build_pool(
        url,
        &PostgresOptions::default()
            .with_pool_size(1)
            .with_transaction_pooler(args.transaction_pooler),
    )
    .await?;
    let store = DocumentStore::new(pool).with_transaction_pooler(args.transaction_pooler);
    let (mut documents, mut rows, mut row_bytes, mut snapshot_bytes) = (0, 0, 0, 0);
    for document in store.documents_with_rows().await? {
        if let Some(done) = store.compact(&document).await? {
            documents += 1;
            rows += done.rows;
            row_bytes += done.row_bytes;
            snapshot_bytes += done.snapshot_bytes;
        }
    }
    println!("compacted {documents} documents: {rows} rows ({row_bytes} bytes) into snapshots of {snapshot_bytes} bytes");
    Ok(())
}

fn limit(value: u32) -> Option<u32> {
    (value > 0).then_some(value)
}

async fn run(args: Args) -> Result<(), Failure> {
    let metrics = PrometheusBuilder::new().install_recorder()?;
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.host, args.port)).await?;
    let address = listener.local_addr()?;
    let instance = args
        .instance
        .clone()
        .unwrap_or_else(|| format!("relay-{}", address.port()));
    let auth: Arc<dyn Authenticate> = match args.auth_secret.as_deref().filter(|s| !s.is_empty()) {
        Some(secret) => Arc::new(SignedToken::new(secret)?),
        None => {
            tracing::warn!("no SYNCKIT_RELAY_AUTH_SECRET: running open, every connection is anonymous (anyone who can reach this port can write presence)");
            Arc::new(Open)
        }
    };
    let store_options = StoreOptions::default()
        .with_timeout(args.timeout)
        .with_max_state_bytes(args.max_state_bytes)
        .with_max_clients_per_document(limit(args.max_clients_per_document))
        .with_max_clients_per_connection(limit(args.max_clients_per_connection));
    let mut options = PresenceOptions::default();
    options.change_feed = options.change_feed.with_publish_pace(args.publish_pace);
    if let Some(url) = args.listen_url.as_deref().filter(|u| !u.trim().is_empty()) {
        let change_feed = options.change_feed.clone().with_listen_url(url);
        options = options.with_change_feed(change_feed);
    }
    let options = options
        .with_decode_limits(DecodeLimits::default().with_max_state_bytes(args.max_state_bytes))
        .with_queue_capacity(args.queue_capacity)
        .with_queue_bytes(args.queue_bytes)
        .with_prune_interval(args.prune_interval)
        .with_persist_interval(args.persist_interval)
        .with_instance(InstanceOptions::default().with_lease(args.lease));
    // An empty DATABASE_URL counts as unset.
    let database_url = args
        .database_url
        .as_deref()
        .filter(|u| !u.trim().is_empty());
    let document_options = DocumentOptions {
        max_update_bytes: args.max_update_bytes,
        max_document_bytes: args.max_document_bytes,
        compact_after: args.compact_after,
    };
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (presence, store_kind, documents) = match database_url {
        Some(url) => {
            let store = PostgresAwarenessStore::connect(
                url,
                PostgresOptions::default()
                    .with_store(store_options)
                    .with_pool_size(args.pool_size)
                    .with_validate_on_start(false)
                    .with_transaction_pooler(args.transaction_pooler),
            )
            .await?;
            if args.transaction_pooler {
                // Migrations hold a session-level lock: on the direct URL.
                let direct = args.listen_url.as_deref().ok_or(
                    "--transaction-pooler needs --listen-url (a direct URL of the same database)",
                )?;
                run_migrations_at(direct, &[&documents::MIGRATIONS]).await?;
            } else {
                store.migrate(&[&documents::MIGRATIONS]).await?;
            }
            store.ensure_schema().await?;
            let documents = Arc::new(Documents::on_postgres(
                DocumentStore::new(store.pool().clone())
                    .with_transaction_pooler(args.transaction_pooler)
                    .with_statement_pool(store.statement_pool().cloned()),
                document_options,
            ));
            // One listening session per instance for presence and documents alike, named
            // after the instance (cut to PostgreSQL's 63 bytes: a long --instance still starts).
            let mut listener_name = format!("synckit-relay-listener:{instance}");
            while listener_name.len() > 63 {
                listener_name.pop();
            }
            let change_feed = options
                .change_feed
                .clone()
                .with_also_listen(documents::CHANNEL)
                .with_listener_name(listener_name)
                .with_reconnect_delay(args.listener_reconnect_delay);
            let presence =
                Presence::on_postgres(store, options.with_change_feed(change_feed)).await?;
            let notifications = presence
                .postgres()
                .ok_or("the presence engine runs on PostgreSQL here")?
                .subscribe_channel(documents::CHANNEL)
                .await?;
            documents::listen(documents.clone(), notifications, shutdown.clone());
            (presence, "postgres", documents)
        }
        None => (
            Presence::in_memory(MemoryAwarenessStore::with_options(store_options), options)?,
            "memory",
            Arc::new(Documents::in_memory(document_options)),
        ),
    };
    // Histograms need upkeep (bucket draining) now and then.
    let upkeep = {
        let metrics = metrics.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                metrics.run_upkeep();
            }
        })
    };

    let app = App {
        presence: presence.clone(),
        documents,
        auth,
        limits: Limits {
            max_message_bytes: args.max_message_bytes,
            ping_every: args.ping_interval,
            pong_timeout: args.pong_timeout,
            send_timeout: Duration::from_secs(10),
        },
        instance: instance.clone(),
        store_kind,
        web_dir: args.web_dir.clone(),
        shutdown,
        active: Arc::new(AtomicUsize::new(0)),
        metrics,
    };
    let active = app.active.clone();
    let router = Router::new()
        .route("/", get(page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/page.js", get(script))
        .route("/rooms", get(who::rooms))
        .route("/rooms/{room}/presence", get(who::presence))
        .route("/rooms/{room}/presence/events", get(who::events))
        .route("/{room}", get(room))
        .with_state(app);

    // Tests and scripts read this line for the port.
    println!(
        "synckit-relay {instance} listening on {address} ({store_kind} store, pid {}, instance id {})",
        std::process::id(),
        presence.instance_id()
    );
    tracing::info!(%instance, instance_id = presence.instance_id(), %address, store = store_kind, timeout = ?args.timeout, prune_interval = ?args.prune_interval, "listening");
    let stopping = presence.clone();
    // Small messages go out at once: without TCP_NODELAY, Nagle's algorithm holds a frame
    // back until the previous one is acknowledged (a delayed ACK: ~40 ms at p99 here).
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::warn!(%error, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            signal().await;
            tracing::info!(
                "shutting down: removing this instance's presence and closing connections"
            );
            let _ = shutdown_tx.send(true);
            // Removes every entry of this instance in one statement and publishes it, so
            // the other instances announce the leaves at once.
            if let Err(error) = stopping.shutdown().await {
                tracing::warn!(%error, "presence shutdown failed; the entries expire instead");
            }
        })
        .await?;

    // Upgraded connections run outside the server: wait for each to close.
    let deadline = Instant::now() + Duration::from_secs(10);
    while active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    upkeep.abort();
    tracing::info!(
        remaining = active.load(Ordering::SeqCst),
        "stopped; change feed closed"
    );
    Ok(())
}

async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

async fn healthz(State(app): State<App>) -> Response {
    let (rooms, _) = app.presence.counts();
    // Connections still open or still announcing their leaves.
    let connections = app.active.load(Ordering::SeqCst);
    let probe = tokio::time::timeout(
        Duration::from_secs(2),
        app.presence.store().get("synckit-relay-healthz", "0"),
    )
    .await;
    let (status, ok) = match probe {
        Ok(Ok(_)) => (StatusCode::OK, "ok"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "store unavailable"),
    };
    let body = serde_json::json!({
        "status": ok,
        "instance": app.instance,
        "instance_id": app.presence.instance_id(),
        "store": app.store_kind,
        "rooms": rooms,
        "documents": app.documents.len(),
        "connections": connections,
    });
    (status, Json(body)).into_response()
}

async fn metrics_text(State(app): State<App>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
        .into_response()
}

async fn page(State(app): State<App>) -> Response {
    static_file(&app, "index.html", "text/html; charset=utf-8").await
}

async fn script(State(app): State<App>) -> Response {
    static_file(&app, "page.js", "text/javascript; charset=utf-8").await
}

async fn static_file(app: &App, name: &str, content_type: &'static str) -> Response {
    match tokio::fs::read(app.web_dir.join(name)).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type)], bytes).into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the page is not built ({} missing): run `make relay-web`",
                app.web_dir.join(name).display()
            ),
        )
            .into_response(),
    }
}

/// `ws://…/<room>`: a y-websocket connection; a plain GET gets the page for that room.
async fn room(
    State(app): State<App>,
    Path(room): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        return page(State(app)).await;
    };
    if *app.shutdown.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let principal = match app
        .auth
        .authenticate(&room, query.get("token").map(String::as_str))
    {
        Ok(principal) => principal,
        Err(reason) => {
            tracing::info!(%room, %reason, "connection refused: not authenticated");
            return (StatusCode::UNAUTHORIZED, reason).into_response();
        }
    };
    let active = app.active.clone();
    active.fetch_add(1, Ordering::SeqCst);
    upgrade
        // Frames up to the limit are ours to refuse with a reason; far larger ones are cut off.
        .max_message_size(app.limits.max_message_bytes.saturating_mul(4))
        // tungstenite reserves 128 KiB per connection for reading by default: an idle
        // connection needs a few KiB (the buffer grows for larger messages).
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            connection::serve(
                app.presence.clone(),
                app.documents.clone(),
                app.limits,
                socket,
                room,
                principal,
                app.shutdown.clone(),
            )
            .await;
            active.fetch_sub(1, Ordering::SeqCst);
        })
}
