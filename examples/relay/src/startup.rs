//! Start-up: what the flags build — the authentication, the admission limits, and the presence
//! engine with the documents (on PostgreSQL when `DATABASE_URL` is set, else in memory).

use std::sync::Arc;

use synckit_awareness::presence::{Presence, PresenceOptions};
use synckit_awareness::y_protocols::DecodeLimits;
use synckit_awareness::{
    run_migrations_at, InstanceOptions, MemoryAwarenessStore, PostgresAwarenessStore,
    PostgresOptions, StoreOptions,
};
use synckit_relay::documents::{self, DocumentOptions, DocumentStore, Documents};
use tokio::sync::watch;

use crate::auth::{Admission, AdmissionLimits, Authenticate, Jwks, JwtAuth, JwtOptions, Open};
use crate::config::{AccessArgs, Args};
use crate::{webhooks, Failure};

/// The presence engine and the documents, and which store they are on.
pub(crate) struct Engines {
    pub(crate) presence: Presence,
    pub(crate) store_kind: &'static str,
    pub(crate) documents: Arc<Documents>,
}

pub(crate) fn jwt_options(access: &AccessArgs) -> JwtOptions {
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
pub(crate) async fn authentication(access: &AccessArgs) -> Result<Arc<dyn Authenticate>, Failure> {
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

/// The limits per principal, per address and per relay.
pub(crate) fn admission(a: &AccessArgs) -> Admission {
    Admission::new(AdmissionLimits {
        connections_per_principal: a.max_connections_per_principal,
        streams_per_principal: a.max_streams_per_principal,
        connections_per_address: a.max_connections_per_address,
        streams_per_address: a.max_streams_per_address,
        connections: a.max_connections,
        streams: a.max_streams,
    })
}

fn limit(value: u32) -> Option<u32> {
    (value > 0).then_some(value)
}

/// The presence engine and the documents the flags ask for (migrating the database first).
pub(crate) async fn engines(
    args: &Args,
    instance: &str,
    shutdown: &watch::Receiver<bool>,
) -> Result<Engines, Failure> {
    let store_options = StoreOptions::default()
        .with_timeout(args.timeout)
        .with_max_state_bytes(args.max_state_bytes)
        .with_max_clients_per_document(limit(args.max_clients_per_document))
        .with_max_clients_per_connection(limit(args.max_clients_per_connection));
    let mut options = PresenceOptions::default();
    options.change_feed = options
        .change_feed
        .with_publish_pace(args.publish_pace)
        .with_notify_when_alone(args.notify_when_alone);
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
        .with_awareness_tick(args.awareness_tick)
        .with_awareness_tick_from(args.awareness_tick_from)
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
            // Registered before the first connection: every join is recorded.
            webhooks::start(
                &args.webhooks,
                args.timeout,
                store.pool().clone(),
                store.statement_pool().cloned(),
                shutdown.clone(),
            )
            .await?;
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
        None if webhooks::configured(&args.webhooks) => {
            return Err(
                "--webhook-url needs DATABASE_URL: events wait in PostgreSQL until delivered"
                    .into(),
            );
        }
        None => (
            Presence::in_memory(MemoryAwarenessStore::with_options(store_options), options)?,
            "memory",
            Arc::new(Documents::in_memory(document_options)),
        ),
    };
    Ok(Engines {
        presence,
        store_kind,
        documents,
    })
}
