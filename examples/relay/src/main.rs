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
mod config;
mod connection;
mod pages;
mod room;
mod rooms;
mod who;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use clap::Parser;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use synckit_awareness::presence::{Presence, PresenceOptions};
use synckit_awareness::y_protocols::DecodeLimits;
use synckit_awareness::{
    run_migrations_at, InstanceOptions, MemoryAwarenessStore, PostgresAwarenessStore,
    PostgresOptions, StoreOptions,
};
use tokio::sync::watch;

use crate::auth::{
    Access, Admission, AdmissionLimits, Authenticate, Jwks, JwtAuth, JwtOptions, Open,
};
use crate::config::{AccessArgs, Args, Command};
use crate::connection::Limits;
use synckit_relay::documents::{self, DocumentOptions, DocumentStore, Documents};

#[derive(Clone)]
struct App {
    presence: Presence,
    documents: Arc<Documents>,
    auth: Arc<dyn Authenticate>,
    admission: Admission,
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
        Some(Command::Token {
            principal,
            rooms,
            user,
            ttl,
        }) => token(&args, principal, rooms, user.clone(), *ttl),
        Some(Command::Compact) => compact(&args).await,
        None => run(args).await,
    };
    if let Err(error) = result {
        tracing::error!(%error, "synckit-relay failed");
        std::process::exit(1);
    }
}

fn token(
    args: &Args,
    principal: &str,
    rooms: &[(String, Access)],
    user: Option<serde_json::Value>,
    ttl: Duration,
) -> Result<(), Failure> {
    let secret = args
        .access
        .auth_secret
        .as_deref()
        .ok_or("set SYNCKIT_RELAY_AUTH_SECRET (or --auth-secret) to mint tokens")?;
    let auth = JwtAuth::new(Some(secret.as_bytes()), None, jwt_options(&args.access))?;
    println!("{}", auth.mint(principal, rooms, user, ttl)?);
    Ok(())
}

fn jwt_options(access: &AccessArgs) -> JwtOptions {
    JwtOptions {
        issuer: access.jwt_issuer.clone(),
        audience: access.jwt_audience.clone(),
        leeway: access.jwt_leeway,
        principal_claim: access.principal_claim.clone(),
        rooms_claim: access.rooms_claim.clone(),
        user_claim: access.user_claim.clone(),
        default_access: access.default_room_access.access(),
    }
}

/// JWTs when a secret or a JWKS is set, else open mode (said at start).
async fn authentication(access: &AccessArgs) -> Result<Arc<dyn Authenticate>, Failure> {
    let secret = access.auth_secret.as_deref().filter(|s| !s.is_empty());
    let jwks = match access.jwks.as_deref().filter(|s| !s.is_empty()) {
        Some(location) => {
            Some(Jwks::load(location, access.jwks_refetch_interval, access.jwks_max_age).await?)
        }
        None => None,
    };
    if secret.is_none() && jwks.is_none() {
        tracing::warn!("no SYNCKIT_RELAY_AUTH_SECRET or SYNCKIT_RELAY_JWKS: running open, every connection is anonymous and may write every room (anyone who can reach this port can)");
        return Ok(Arc::new(Open));
    }
    let auth = JwtAuth::new(secret.map(str::as_bytes), jwks, jwt_options(access))?;
    Ok(Arc::new(auth))
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
    let auth = authentication(&args.access).await?;
    let a = &args.access;
    let admission = Admission::new(AdmissionLimits {
        connections_per_principal: a.max_connections_per_principal,
        streams_per_principal: a.max_streams_per_principal,
        connections_per_address: a.max_connections_per_address,
        streams_per_address: a.max_streams_per_address,
        connections: a.max_connections,
        streams: a.max_streams,
    });
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
        admission,
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
        .route("/", get(pages::page))
        .route("/healthz", get(pages::healthz))
        .route("/metrics", get(pages::metrics_text))
        .route("/page.js", get(pages::script))
        .route("/rooms", get(who::rooms))
        .route("/rooms/{room}/presence", get(who::presence))
        .route("/rooms/{room}/presence/events", get(who::events))
        .route("/{room}", get(room::room))
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
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        signal().await;
        tracing::info!("shutting down: removing this instance's presence and closing connections");
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
