//! Provider settings, loadable with any serde config loader or from environment variables.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};
use crate::memory::MemoryAwarenessStore;
use crate::postgres::secret::DatabaseUrl;
use crate::postgres::{
    ChangeFeedOptions, PostgresAwarenessStore, PostgresOptions, DEFAULT_CHANNEL,
};
use crate::store::{AwarenessStore, StoreOptions, DEFAULT_TIMEOUT};
use crate::validate::DEFAULT_MAX_STATE_BYTES;

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

/// Settings of the PostgreSQL provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresSettings {
    /// Connection URL (`postgres://user:password@host/db`). Falls back to `DATABASE_URL` in
    /// [`AwarenessSettings::from_env`]. Never printed with its password.
    pub url: Option<DatabaseUrl>,
    /// Most pooled connections.
    pub pool_size: u32,
    /// How long a call waits for a free pooled connection, in milliseconds
    /// ([`PostgresOptions::acquire_timeout`]; accepted under its old name `connect_timeout_ms`).
    #[serde(alias = "connect_timeout_ms")]
    pub acquire_timeout_ms: u64,
    /// Check the schema when building the store, failing fast when it differs.
    pub validate_on_start: bool,
    /// Apply pending migrations when building the store (needs DDL rights).
    pub migrate_on_start: bool,
    /// PostgreSQL `statement_timeout` of the store's connections, in milliseconds; 0 keeps the
    /// server's setting.
    pub statement_timeout_ms: u64,
    /// PostgreSQL `synchronous_commit` of the store's connections (default off: awareness is
    /// ephemeral; see docs/performance.md for the measured trade-off).
    pub synchronous_commit: bool,
    /// Coalesce concurrent `set`s into one statement while connections are busy
    /// ([`PostgresOptions::coalesce_writes`]).
    pub coalesce_writes: bool,
    /// Publish every applied change to the change feed (`NOTIFY`), so that other instances on
    /// the same database hear of it ([`ChangeFeedOptions::publish`]).
    pub change_feed: bool,
    /// The change feed's `NOTIFY` channel; every instance of one deployment uses the same.
    pub change_feed_channel: String,
    /// Run the store as an instance with a lease
    /// ([`PostgresAwarenessStore::start_instance`]), so that other instances remove its entries
    /// within `lease_ms` of a crash.
    pub instance: bool,
    /// The instance's name; empty (the default): a random id per process.
    pub instance_id: String,
    /// The instance's lease in milliseconds (renewed every third of it).
    pub lease_ms: u64,
    /// The URL leads to a transaction-mode pooler (PgBouncer, Supavisor, RDS Proxy)
    /// ([`PostgresOptions::transaction_pooler`]).
    pub transaction_pooler: bool,
    /// The change feed listener's own URL, direct or session-mode
    /// ([`ChangeFeedOptions::listen_url`]); required with `transaction_pooler` and a feed.
    pub listen_url: Option<DatabaseUrl>,
}

impl Default for PostgresSettings {
    fn default() -> Self {
        let defaults = PostgresOptions::default();
        Self {
            url: None,
            pool_size: defaults.pool_size,
            acquire_timeout_ms: millis(defaults.acquire_timeout),
            validate_on_start: defaults.validate_on_start,
            migrate_on_start: false,
            statement_timeout_ms: defaults.statement_timeout.map_or(0, millis),
            synchronous_commit: defaults.synchronous_commit,
            coalesce_writes: defaults.coalesce_writes,
            change_feed: false,
            change_feed_channel: DEFAULT_CHANNEL.to_owned(),
            instance: false,
            instance_id: String::new(),
            lease_ms: millis(crate::postgres::DEFAULT_LEASE),
            transaction_pooler: false,
            listen_url: None,
        }
    }
}

impl PostgresSettings {
    /// The [`InstanceOptions`](crate::postgres::InstanceOptions) these settings describe.
    pub fn instance_options(&self) -> crate::postgres::InstanceOptions {
        let options = crate::postgres::InstanceOptions::default()
            .with_lease(Duration::from_millis(self.lease_ms));
        if self.instance_id.is_empty() {
            options
        } else {
            options.with_instance_id(self.instance_id.clone())
        }
    }

    /// The [`PostgresOptions`] these settings describe, around `store`.
    pub fn options(&self, store: StoreOptions) -> PostgresOptions {
        PostgresOptions::default()
            .with_store(store)
            .with_pool_size(self.pool_size)
            .with_acquire_timeout(Duration::from_millis(self.acquire_timeout_ms))
            .with_validate_on_start(self.validate_on_start)
            .with_statement_timeout(
                (self.statement_timeout_ms > 0)
                    .then(|| Duration::from_millis(self.statement_timeout_ms)),
            )
            .with_synchronous_commit(self.synchronous_commit)
            .with_coalesce_writes(self.coalesce_writes)
            .with_transaction_pooler(self.transaction_pooler)
    }

    /// The [`ChangeFeedOptions`] these settings describe (a fresh `origin`).
    pub fn change_feed_options(&self) -> ChangeFeedOptions {
        let options = ChangeFeedOptions::default()
            .with_publish(self.change_feed)
            .with_channel(self.change_feed_channel.clone());
        match &self.listen_url {
            Some(url) => options.with_listen_url(url.expose()),
            None => options,
        }
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

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn env_keys_mirror_the_section() {
        let env: HashMap<&str, &str> = [
            ("SYNCKIT__AWARENESS__PROVIDER", "Postgres"),
            ("SYNCKIT__AWARENESS__TIMEOUT_MS", "15000"),
            ("SYNCKIT__AWARENESS__POSTGRES__POOL_SIZE", "3"),
            ("SYNCKIT__AWARENESS__POSTGRES__SYNCHRONOUS_COMMIT", "true"),
            ("SYNCKIT__AWARENESS__POSTGRES__STATEMENT_TIMEOUT_MS", "2500"),
            ("DATABASE_URL", "postgres://u:hunter2@h/db"),
        ]
        .into();
        let s = AwarenessSettings::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(s.provider, Provider::Postgresql);
        assert_eq!(s.timeout_ms, 15000);
        assert_eq!(s.postgres.pool_size, 3);
        assert!(s.postgres.synchronous_commit);
        assert_eq!(s.postgres.statement_timeout_ms, 2500);
        assert_eq!(
            s.postgres.url.as_ref().unwrap().expose(),
            "postgres://u:hunter2@h/db"
        );
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&s).unwrap().contains("hunter2"));
        let shown = s.to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("postgres.url=postgres://u:***@h/db"),
            "{shown}"
        );
        assert_eq!(s.store_options().timeout, Duration::from_secs(15));
    }

    #[test]
    fn defaults_and_errors() {
        let s = AwarenessSettings::from_lookup(|_| None).unwrap();
        assert_eq!(s, AwarenessSettings::default());
        assert_eq!(s.provider, Provider::Auto);
        assert_eq!(s.effective_provider(), Provider::Memory);
        assert_eq!(s.timeout_ms, 30_000);

        let err = AwarenessSettings::from_lookup(|k| {
            (k == "SYNCKIT__AWARENESS__PROVIDER").then(|| "redis".to_string())
        })
        .unwrap_err();
        assert!(matches!(err, Error::Config(_)));
        assert!(
            err.to_string().contains("auto, memory, postgresql"),
            "{err}"
        );

        let err = AwarenessSettings::from_lookup(|k| {
            (k == "SYNCKIT__AWARENESS__TIMEOUT_MS").then(|| "soon".to_string())
        })
        .unwrap_err();
        assert!(err.to_string().contains("TIMEOUT_MS"), "{err}");

        let s = AwarenessSettings {
            provider: Provider::Postgresql,
            ..Default::default()
        };
        assert!(matches!(s.validate(), Err(Error::Config(_))));
    }

    #[test]
    fn one_rule_for_the_provider() {
        let lookup = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let url_only =
            AwarenessSettings::from_lookup(lookup(&[("DATABASE_URL", "postgres://h/db")])).unwrap();
        assert_eq!(url_only.effective_provider(), Provider::Postgresql);
        let memory_chosen = AwarenessSettings::from_lookup(lookup(&[
            ("DATABASE_URL", "postgres://h/db"),
            ("SYNCKIT__AWARENESS__PROVIDER", "memory"),
        ]))
        .unwrap();
        assert_eq!(memory_chosen.effective_provider(), Provider::Memory);
        let old_name = AwarenessSettings::from_lookup(lookup(&[(
            "SYNCKIT__AWARENESS__POSTGRES__CONNECT_TIMEOUT_MS",
            "1234",
        )]))
        .unwrap();
        assert_eq!(old_name.postgres.acquire_timeout_ms, 1234);
        let feed = AwarenessSettings::from_lookup(lookup(&[
            ("SYNCKIT__AWARENESS__POSTGRES__COALESCE_WRITES", "true"),
            ("SYNCKIT__AWARENESS__POSTGRES__CHANGE_FEED", "true"),
            (
                "SYNCKIT__AWARENESS__POSTGRES__CHANGE_FEED_CHANNEL",
                "presence",
            ),
        ]))
        .unwrap();
        assert!(feed.postgres.options(feed.store_options()).coalesce_writes);
        assert!(!AwarenessSettings::default().postgres.coalesce_writes);
        let options = feed.postgres.change_feed_options();
        assert!(options.publish);
        assert_eq!(options.channel, "presence");
    }

    #[test]
    fn deserializes_from_toml_like_json() {
        let s: AwarenessSettings =
            serde_json::from_str(r#"{"postgres":{"connect_timeout_ms":700}}"#).unwrap();
        assert_eq!(s.postgres.acquire_timeout_ms, 700);
        let err = serde_json::from_str::<AwarenessSettings>(r#"{"provider":"mongo"}"#).unwrap_err();
        assert!(err.to_string().contains("valid providers"), "{err}");
        let s: AwarenessSettings = serde_json::from_str(r#"{"provider":"postgresql"}"#).unwrap();
        assert_eq!(s.provider, Provider::Postgresql);
    }
}
