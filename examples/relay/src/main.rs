//! `synckit-relay`: a y-websocket-compatible collaboration server whose awareness (presence)
//! lives in a synckit-awareness store. With `DATABASE_URL`, every instance on that database
//! shares presence through PostgreSQL and its change feed (no Redis); without, it runs alone on
//! the in-memory store. Documents (sync, message type 0) are kept in memory per instance only.
//!
//! `ws://HOST:PORT/<room>` (the room is the document_id), `GET /` and `GET /<room>` the page,
//! `GET /healthz` health as JSON. See README "Run a presence server".
#![forbid(unsafe_code)]

mod connection;
mod hub;
mod view;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use synckit_awareness::y_protocols::DecodeLimits;
use synckit_awareness::{
    AwarenessStore, ChangeFeedOptions, MemoryAwarenessStore, PostgresAwarenessStore,
    PostgresOptions, Pruner, StoreOptions,
};
use tokio::sync::{mpsc, watch};

use crate::hub::Hub;

/// A y-websocket presence server on synckit-awareness.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Port to listen on (0: any free port; the chosen one is printed).
    #[arg(long, env = "PORT", default_value_t = 1234)]
    port: u16,
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    host: IpAddr,
    /// PostgreSQL URL; without it (or empty) the relay runs alone on the in-memory store.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Awareness timeout: an entry not refreshed for this long is gone (y-protocols: 30s;
    /// Yjs clients refresh every 15s, so keep it above that).
    #[arg(long, env = "SYNCKIT_RELAY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// How often the pruner removes expired entries and announces them.
    #[arg(long, env = "SYNCKIT_RELAY_PRUNE_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    prune_interval: Duration,
    /// This instance's name, shown on the page (default: relay-<port>).
    #[arg(long, env = "SYNCKIT_RELAY_INSTANCE")]
    instance: Option<String>,
    /// Directory of the built page (`make relay-web`).
    #[arg(long, env = "SYNCKIT_RELAY_WEB_DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/web/dist"))]
    web_dir: PathBuf,
    /// Largest WebSocket message accepted; a larger one closes the connection (1009).
    #[arg(long, default_value_t = 1 << 20)]
    max_message_bytes: usize,
    /// Largest awareness state (JSON bytes) accepted.
    #[arg(long, default_value_t = 64 * 1024)]
    max_state_bytes: usize,
}

#[derive(Clone)]
struct App {
    hub: Arc<Hub>,
    store_kind: &'static str,
    web_dir: PathBuf,
    shutdown: watch::Receiver<bool>,
    active: Arc<AtomicUsize>,
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
    if let Err(error) = run(Args::parse()).await {
        tracing::error!(%error, "synckit-relay failed");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), Failure> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.host, args.port)).await?;
    let address = listener.local_addr()?;
    let instance = args
        .instance
        .clone()
        .unwrap_or_else(|| format!("relay-{}", address.port()));
    let options = StoreOptions::default()
        .with_timeout(args.timeout)
        .with_max_state_bytes(args.max_state_bytes);
    // An empty DATABASE_URL counts as unset.
    let database_url = args
        .database_url
        .as_deref()
        .filter(|u| !u.trim().is_empty());
    let (store, feed, store_kind): (Arc<dyn AwarenessStore>, _, _) = match database_url {
        Some(url) => {
            let store = PostgresAwarenessStore::connect(
                url,
                PostgresOptions::default()
                    .with_store(options)
                    .with_pool_size(8)
                    .with_validate_on_start(false),
            )
            .await?;
            store.migrate(&[]).await?;
            store.ensure_schema().await?;
            let store = store.with_change_feed(
                ChangeFeedOptions::default()
                    .with_publish(true)
                    .with_origin(format!("{instance}-{}", std::process::id())),
            )?;
            (Arc::new(store.clone()), Some(store), "postgres")
        }
        None => (
            Arc::new(MemoryAwarenessStore::with_options(options)),
            None,
            "memory",
        ),
    };
    let limits = DecodeLimits {
        max_state_bytes: args.max_state_bytes,
        ..DecodeLimits::default()
    };
    let hub = Arc::new(Hub::new(
        store.clone(),
        feed,
        instance.clone(),
        limits,
        args.max_message_bytes,
    ));

    // Expired entries: taken atomically by whichever instance's pruner comes first, so each
    // is announced once.
    let (expired_tx, mut expired_rx) = mpsc::unbounded_channel();
    let pruner = Pruner::spawn(store.clone(), args.prune_interval, move |entry| {
        let _ = expired_tx.send(entry);
    });
    let announcer = {
        let hub = hub.clone();
        tokio::spawn(async move {
            while let Some(first) = expired_rx.recv().await {
                let mut entries = vec![first];
                while let Ok(next) = expired_rx.try_recv() {
                    entries.push(next);
                }
                tracing::info!(count = entries.len(), "announcing expired clients");
                hub.announce_gone(entries).await;
            }
        })
    };

    let (shutdown_tx, shutdown) = watch::channel(false);
    let app = App {
        hub: hub.clone(),
        store_kind,
        web_dir: args.web_dir.clone(),
        shutdown,
        active: Arc::new(AtomicUsize::new(0)),
    };
    let active = app.active.clone();
    let router = Router::new()
        .route("/", get(page))
        .route("/healthz", get(healthz))
        .route("/page.js", get(script))
        .route("/{room}", get(room))
        .with_state(app);

    // Tests and scripts read this line for the port.
    println!(
        "synckit-relay {instance} listening on {address} ({store_kind} store, pid {})",
        std::process::id()
    );
    tracing::info!(%instance, %address, store = store_kind, timeout = ?args.timeout, prune_interval = ?args.prune_interval, "listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            signal().await;
            tracing::info!("shutting down: closing connections and announcing their leaves");
            let _ = shutdown_tx.send(true);
        })
        .await?;

    // Upgraded connections run outside the server: wait for each to announce its leaves.
    let deadline = Instant::now() + Duration::from_secs(10);
    while active.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pruner.shutdown().await;
    announcer.abort();
    // The change feed publishes from a task a millisecond after each write; let the last
    // leaves go out before the process (and with it the feed) ends.
    tokio::time::sleep(Duration::from_millis(300)).await;
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
    let (rooms, _) = app.hub.room_count().await;
    // Connections still open or still announcing their leaves.
    let connections = app.active.load(Ordering::SeqCst);
    let probe = tokio::time::timeout(
        Duration::from_secs(2),
        app.hub.store.get("synckit-relay-healthz", "0"),
    )
    .await;
    let (status, ok) = match probe {
        Ok(Ok(_)) => (StatusCode::OK, "ok"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "store unavailable"),
    };
    let body = serde_json::json!({
        "status": ok,
        "instance": app.hub.instance,
        "store": app.store_kind,
        "rooms": rooms,
        "connections": connections,
    });
    (status, Json(body)).into_response()
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
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        return page(State(app)).await;
    };
    if *app.shutdown.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let active = app.active.clone();
    active.fetch_add(1, Ordering::SeqCst);
    // Room names are document ids; the store refuses NUL and over-long ones when writing.
    upgrade
        // Frames up to the limit are ours to refuse with a reason; far larger ones are cut off.
        .max_message_size(app.hub.max_message_bytes.saturating_mul(4))
        .on_upgrade(move |socket| async move {
            connection::serve(app.hub.clone(), socket, room, app.shutdown.clone()).await;
            active.fetch_sub(1, Ordering::SeqCst);
        })
}
