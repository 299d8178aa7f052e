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
//! and `GET /rooms/<room>/presence[/events]` who is here (`who.rs`). The operator's guide is
//! examples/relay/README.md.
//!
//! Files by concern: `config.rs` flags, `startup.rs` what they build, `routes.rs` the routes,
//! `room.rs` + `connection.rs` a WebSocket, `who.rs` + `rooms.rs` who is here, `pages.rs` the
//! page, health and metrics, `auth/` who may do what, `commands.rs` the subcommands,
//! `shutdown.rs` the signal and the drain.
#![forbid(unsafe_code)]

mod agents;
mod auth;
mod commands;
mod config;
mod connection;
mod pages;
mod room;
mod rooms;
mod routes;
mod shutdown;
mod startup;
mod webhooks;
mod who;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use clap::Parser;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use synckit_awareness::presence::Presence;
use synckit_relay::documents::Documents;
use tokio::sync::watch;

use crate::auth::{Admission, Authenticate};
use crate::commands::{compact, token};
use crate::config::{Args, Command};
use crate::connection::Limits;
use crate::startup::{admission, authentication, engines, Engines};

#[derive(Clone)]
struct App {
    presence: Presence,
    agents: Arc<agents::Agents>,
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

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if args.worker_threads > 0 {
        runtime.worker_threads(args.worker_threads);
    }
    let runtime = match runtime.build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "synckit-relay cannot start its runtime");
            std::process::exit(1);
        }
    };
    let result = runtime.block_on(async move {
        match &args.command {
            Some(Command::Token {
                principal,
                rooms,
                user,
                ttl,
            }) => token(&args, principal, rooms, user.clone(), *ttl),
            Some(Command::Compact) => compact(&args).await,
            None => run(args).await,
        }
    });
    if let Err(error) = result {
        tracing::error!(%error, "synckit-relay failed");
        std::process::exit(1);
    }
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
    let (shutdown_tx, shutdown) = watch::channel(false);
    let Engines {
        presence,
        store_kind,
        documents,
    } = engines(&args, &instance, &shutdown).await?;
    let admission = admission(&args.access);
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
        agents: agents::Agents::new(presence.clone(), shutdown.clone(), args.max_state_bytes),
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
    let router = routes::router(app);

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
    .with_graceful_shutdown(shutdown::stop(stopping, shutdown_tx))
    .await?;

    shutdown::drain(&active).await;
    upkeep.abort();
    tracing::info!(
        remaining = active.load(Ordering::SeqCst),
        "stopped; change feed closed"
    );
    Ok(())
}
