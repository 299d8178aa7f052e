//! Provider settings, loadable with any serde config loader or from environment variables.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};
use crate::memory::MemoryAwarenessStore;
use crate::postgres::secret::DatabaseUrl;
use crate::postgres::PostgresAwarenessStore;
use crate::store::{AwarenessStore, StoreOptions, DEFAULT_TIMEOUT};
use crate::validate::DEFAULT_MAX_STATE_BYTES;

mod postgres;

use postgres::millis;
pub use postgres::PostgresSettings;

/// Prefix of the environment variables [`AwarenessSettings::from_env`] reads; mirrors the
/// `Awareness:*` configuration section (`Awareness:Provider` → `SYNCKIT__AWARENESS__PROVIDER`).
pub const ENV_PREFIX: &str = "SYNCKIT__AWARENESS__";

/// Which store to build.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// The default: PostgreSQL when a URL is configured (`postgres.url`, or `DATABASE_URL`
    /// in [`AwarenessSettings::from_env`]), else memory.
    #[default]
    Auto,
    /// [`MemoryAwarenessStore`]: one process, nothing persisted.
    Memory,
    /// [`PostgresAwarenessStore`].
    Postgresql,
}

impl FromStr for Provider {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(Provider::Auto),
            "memory" | "inmemory" | "in-memory" => Ok(Provider::Memory),
            "postgresql" | "postgres" | "pg" => Ok(Provider::Postgresql),
            other => Err(Error::Config(format!(
                "unknown awareness provider {other:?}; valid providers: auto, memory, postgresql (or postgres)"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for Provider {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::Auto => "auto",
            Provider::Memory => "memory",
            Provider::Postgresql => "postgresql",
        })
    }
}

/// The `Awareness` configuration section.
///
/// ```
/// use synckit_awareness::{AwarenessSettings, Provider};
/// let settings: AwarenessSettings = serde_json::from_str(
///     r#"{ "provider": "postgres", "timeout_ms": 15000,
///          "postgres": { "url": "postgres://app:secret@db/app", "pool_size": 4 } }"#,
/// ).unwrap();
/// assert_eq!(settings.provider, Provider::Postgresql);
/// assert!(!format!("{settings:?}").contains("secret"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AwarenessSettings {
    /// `auto` (default: PostgreSQL when a URL is set, else memory), `memory` or `postgresql`
    /// (alias `postgres`).
    pub provider: Provider,
    /// Expiry timeout in milliseconds (default 30000, like `AWARENESS_TIMEOUT_MS`).
    pub timeout_ms: u64,
    /// Largest state accepted, in bytes of compact JSON (default 65536).
    pub max_state_bytes: usize,
    /// Most live participants per document (default 1000); 0: no limit.
    pub max_clients_per_document: u32,
    /// Most live participants per connection (default 64); 0: no limit.
    pub max_clients_per_connection: u32,
    /// PostgreSQL provider settings.
    pub postgres: PostgresSettings,
}

impl Default for AwarenessSettings {
    fn default() -> Self {
        Self {
            provider: Provider::default(),
            timeout_ms: millis(DEFAULT_TIMEOUT),
            max_state_bytes: DEFAULT_MAX_STATE_BYTES,
            max_clients_per_document: crate::store::DEFAULT_MAX_CLIENTS_PER_DOCUMENT,
            max_clients_per_connection: crate::store::DEFAULT_MAX_CLIENTS_PER_CONNECTION,
            postgres: PostgresSettings::default(),
        }
    }
}

impl AwarenessSettings {
    /// Reads `SYNCKIT__AWARENESS__PROVIDER`, `…__TIMEOUT_MS`, `…__MAX_STATE_BYTES`,
    /// `…__POSTGRES__URL` (else `DATABASE_URL`), `…__POSTGRES__POOL_SIZE`,
    /// `…__POSTGRES__ACQUIRE_TIMEOUT_MS` (old name `…__CONNECT_TIMEOUT_MS`),
    /// `…__POSTGRES__VALIDATE_ON_START`, `…__POSTGRES__MIGRATE_ON_START`,
    /// `…__POSTGRES__STATEMENT_TIMEOUT_MS`, `…__POSTGRES__SYNCHRONOUS_COMMIT`,
    /// `…__POSTGRES__COALESCE_WRITES`, `…__POSTGRES__CHANGE_FEED`,
    /// `…__POSTGRES__CHANGE_FEED_CHANNEL`, `…__MAX_CLIENTS_PER_DOCUMENT`,
    /// `…__MAX_CLIENTS_PER_CONNECTION`, `…__POSTGRES__INSTANCE`, `…__POSTGRES__INSTANCE_ID`,
    /// `…__POSTGRES__LEASE_MS`; unset keys keep their
    /// defaults. With the provider unset (`auto`), a URL selects PostgreSQL.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Like [`from_env`](Self::from_env), reading variables through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let var = |key: &str| lookup(&format!("{ENV_PREFIX}{key}"));
        let mut settings = Self::default();
        if let Some(v) = var("PROVIDER") {
            settings.provider = v.parse()?;
        }
        if let Some(v) = var("TIMEOUT_MS") {
            settings.timeout_ms = parse("TIMEOUT_MS", &v)?;
        }
        if let Some(v) = var("MAX_STATE_BYTES") {
            settings.max_state_bytes = parse("MAX_STATE_BYTES", &v)?;
        }
        if let Some(v) = var("MAX_CLIENTS_PER_DOCUMENT") {
            settings.max_clients_per_document = parse("MAX_CLIENTS_PER_DOCUMENT", &v)?;
        }
        if let Some(v) = var("MAX_CLIENTS_PER_CONNECTION") {
            settings.max_clients_per_connection = parse("MAX_CLIENTS_PER_CONNECTION", &v)?;
        }
        let pg = &mut settings.postgres;
        pg.url = var("POSTGRES__URL")
            .or_else(|| lookup("DATABASE_URL"))
            .map(DatabaseUrl::new);
        if let Some(v) = var("POSTGRES__POOL_SIZE") {
            pg.pool_size = parse("POSTGRES__POOL_SIZE", &v)?;
        }
        for key in [
            "POSTGRES__CONNECT_TIMEOUT_MS",
            "POSTGRES__ACQUIRE_TIMEOUT_MS",
        ] {
            if let Some(v) = var(key) {
                pg.acquire_timeout_ms = parse(key, &v)?;
            }
        }
        if let Some(v) = var("POSTGRES__VALIDATE_ON_START") {
            pg.validate_on_start = parse("POSTGRES__VALIDATE_ON_START", &v)?;
        }
        if let Some(v) = var("POSTGRES__MIGRATE_ON_START") {
            pg.migrate_on_start = parse("POSTGRES__MIGRATE_ON_START", &v)?;
        }
        if let Some(v) = var("POSTGRES__STATEMENT_TIMEOUT_MS") {
            pg.statement_timeout_ms = parse("POSTGRES__STATEMENT_TIMEOUT_MS", &v)?;
        }
        if let Some(v) = var("POSTGRES__SYNCHRONOUS_COMMIT") {
            pg.synchronous_commit = parse("POSTGRES__SYNCHRONOUS_COMMIT", &v)?;
        }
        if let Some(v) = var("POSTGRES__COALESCE_WRITES") {
            pg.coalesce_writes = parse("POSTGRES__COALESCE_WRITES", &v)?;
        }
        if let Some(v) = var("POSTGRES__CHANGE_FEED") {
            pg.change_feed = parse("POSTGRES__CHANGE_FEED", &v)?;
        }
        if let Some(v) = var("POSTGRES__CHANGE_FEED_CHANNEL") {
            pg.change_feed_channel = v;
        }
        if let Some(v) = var("POSTGRES__INSTANCE") {
            pg.instance = parse("POSTGRES__INSTANCE", &v)?;
        }
        if let Some(v) = var("POSTGRES__INSTANCE_ID") {
            pg.instance_id = v;
        }
        if let Some(v) = var("POSTGRES__LEASE_MS") {
            pg.lease_ms = parse("POSTGRES__LEASE_MS", &v)?;
        }
        if let Some(v) = var("POSTGRES__TRANSACTION_POOLER") {
            pg.transaction_pooler = parse("POSTGRES__TRANSACTION_POOLER", &v)?;
        }
        if let Some(v) = var("POSTGRES__LISTEN_URL").filter(|v| !v.is_empty()) {
            pg.listen_url = Some(DatabaseUrl::new(v));
        }
        Ok(settings)
    }

    /// The store options these settings describe.
    pub fn store_options(&self) -> StoreOptions {
        let limit = |max: u32| (max > 0).then_some(max);
        StoreOptions::default()
            .with_timeout(Duration::from_millis(self.timeout_ms))
            .with_max_state_bytes(self.max_state_bytes)
            .with_max_clients_per_document(limit(self.max_clients_per_document))
            .with_max_clients_per_connection(limit(self.max_clients_per_connection))
    }

    /// The store [`build`](Self::build) makes: the configured provider, where `auto` means
    /// PostgreSQL when a URL is set and memory otherwise.
    pub fn effective_provider(&self) -> Provider {
        match (self.provider, &self.postgres.url) {
            (Provider::Auto, Some(_)) => Provider::Postgresql,
            (Provider::Auto, None) => Provider::Memory,
            (chosen, _) => chosen,
        }
    }

    /// Checks values a store cannot run with.
    pub fn validate(&self) -> Result<()> {
        if self.timeout_ms == 0 {
            return Err(Error::Config("timeout_ms must be greater than 0".into()));
        }
        if self.effective_provider() == Provider::Postgresql {
            if self.postgres.url.is_none() {
                return Err(Error::Config(format!(
                    "provider postgresql needs a URL: set postgres.url, {ENV_PREFIX}POSTGRES__URL or DATABASE_URL"
                )));
            }
            if self.postgres.pool_size == 0 {
                return Err(Error::Config(
                    "postgres.pool_size must be at least 1".into(),
                ));
            }
        }
        Ok(())
    }

    /// Builds the store of [`effective_provider`](Self::effective_provider). For PostgreSQL:
    /// connects, applies migrations when `migrate_on_start`, checks the schema when
    /// `validate_on_start`, and starts publishing to the change feed when `change_feed`.
    pub async fn build(&self) -> Result<Arc<dyn AwarenessStore>> {
        self.validate()?;
        match self.effective_provider() {
            Provider::Postgresql => Ok(Arc::new(self.build_postgres().await?)),
            _ => {
                if self.postgres.url.is_some() {
                    tracing::info!(
                        "a PostgreSQL URL is set, but the provider is `memory`: using the \
                         in-memory store ({ENV_PREFIX}PROVIDER=postgresql or `auto` uses the URL)"
                    );
                }
                Ok(Arc::new(MemoryAwarenessStore::with_options(
                    self.store_options(),
                )))
            }
        }
    }

    /// Builds a [`PostgresAwarenessStore`] whatever the provider says (for tools that need
    /// PostgreSQL-only operations such as migrations).
    pub async fn build_postgres(&self) -> Result<PostgresAwarenessStore> {
        let url = self.postgres.url.as_ref().ok_or_else(|| {
            Error::Config(format!(
                "no PostgreSQL URL: set postgres.url, {ENV_PREFIX}POSTGRES__URL or DATABASE_URL"
            ))
        })?;
        // The schema is checked after the migrations below, not on connecting.
        let options = self
            .postgres
            .options(self.store_options())
            .with_validate_on_start(false);
        let store = PostgresAwarenessStore::connect(url.expose(), options).await?;
        if self.postgres.migrate_on_start {
            store.migrate(&[]).await?;
        }
        if self.postgres.validate_on_start {
            store.ensure_schema().await?;
        }
        let store = if self.postgres.change_feed {
            store.with_change_feed(self.postgres.change_feed_options())?
        } else {
            store
        };
        if self.postgres.instance {
            store
                .start_instance(self.postgres.instance_options())
                .await?;
        }
        Ok(store)
    }
}

/// One line, for a start-up log: every setting, the URL without its password.
impl fmt::Display for AwarenessSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "provider={} (effective: {}) timeout_ms={} max_state_bytes={} \
             max_clients_per_document={} max_clients_per_connection={}",
            self.provider,
            self.effective_provider(),
            self.timeout_ms,
            self.max_state_bytes,
            self.max_clients_per_document,
            self.max_clients_per_connection
        )?;
        let pg = &self.postgres;
        match &pg.url {
            Some(url) => write!(f, " postgres.url={url}")?,
            None => f.write_str(" postgres.url=(none)")?,
        }
        write!(
            f,
            " postgres.pool_size={} postgres.acquire_timeout_ms={} postgres.validate_on_start={} \
             postgres.migrate_on_start={} postgres.statement_timeout_ms={} \
             postgres.synchronous_commit={} postgres.coalesce_writes={} postgres.change_feed={} \
             postgres.change_feed_channel={} postgres.instance={} postgres.instance_id={} \
             postgres.lease_ms={} postgres.transaction_pooler={}",
            pg.pool_size,
            pg.acquire_timeout_ms,
            pg.validate_on_start,
            pg.migrate_on_start,
            pg.statement_timeout_ms,
            pg.synchronous_commit,
            pg.coalesce_writes,
            pg.change_feed,
            pg.change_feed_channel,
            pg.instance,
            if pg.instance_id.is_empty() {
                "(random)"
            } else {
                &pg.instance_id
            },
            pg.lease_ms,
            pg.transaction_pooler
        )?;
        match &pg.listen_url {
            Some(url) => write!(f, " postgres.listen_url={url}"),
            None => Ok(()),
        }
    }
}

fn parse<T: FromStr>(key: &str, value: &str) -> Result<T>
where
    T::Err: fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|e| Error::Config(format!("{ENV_PREFIX}{key}={value:?} is not valid: {e}")))
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
