//! Provider settings, loadable with any serde config loader or from environment variables.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};
use crate::memory::MemoryAwarenessStore;
use crate::postgres::{PostgresAwarenessStore, PostgresOptions};
use crate::secret::DatabaseUrl;
use crate::store::{AwarenessStore, StoreOptions, DEFAULT_TIMEOUT};
use crate::validate::DEFAULT_MAX_STATE_BYTES;

/// Prefix of the environment variables [`AwarenessSettings::from_env`] reads; mirrors the
/// `Awareness:*` configuration section (`Awareness:Provider` → `SYNCKIT__AWARENESS__PROVIDER`).
pub const ENV_PREFIX: &str = "SYNCKIT__AWARENESS__";

/// Which store to build.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// [`MemoryAwarenessStore`]: one process, nothing persisted. The default.
    #[default]
    Memory,
    /// [`PostgresAwarenessStore`].
    Postgresql,
}

impl FromStr for Provider {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "memory" | "inmemory" | "in-memory" => Ok(Provider::Memory),
            "postgresql" | "postgres" | "pg" => Ok(Provider::Postgresql),
            other => Err(Error::Config(format!(
                "unknown awareness provider {other:?}; valid providers: memory, postgresql (or postgres)"
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
    /// How long a call waits for a pooled connection, in milliseconds.
    pub connect_timeout_ms: u64,
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
}

impl Default for PostgresSettings {
    fn default() -> Self {
        let defaults = PostgresOptions::default();
        Self {
            url: None,
            pool_size: defaults.pool_size,
            connect_timeout_ms: millis(defaults.connect_timeout),
            validate_on_start: defaults.validate_on_start,
            migrate_on_start: false,
            statement_timeout_ms: defaults.statement_timeout.map_or(0, millis),
            synchronous_commit: defaults.synchronous_commit,
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
    /// `memory` (default) or `postgresql` (alias `postgres`).
    pub provider: Provider,
    /// Expiry timeout in milliseconds (default 30000, like `AWARENESS_TIMEOUT_MS`).
    pub timeout_ms: u64,
    /// Largest state accepted, in bytes of compact JSON (default 65536).
    pub max_state_bytes: usize,
    /// PostgreSQL provider settings.
    pub postgres: PostgresSettings,
}

impl Default for AwarenessSettings {
    fn default() -> Self {
        Self {
            provider: Provider::default(),
            timeout_ms: millis(DEFAULT_TIMEOUT),
            max_state_bytes: DEFAULT_MAX_STATE_BYTES,
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
    /// `…__POSTGRES__CONNECT_TIMEOUT_MS`, `…__POSTGRES__VALIDATE_ON_START`,
    /// `…__POSTGRES__MIGRATE_ON_START`, `…__POSTGRES__STATEMENT_TIMEOUT_MS`,
    /// `…__POSTGRES__SYNCHRONOUS_COMMIT`; unset keys keep their defaults.
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
        let pg = &mut settings.postgres;
        pg.url = var("POSTGRES__URL")
            .or_else(|| lookup("DATABASE_URL"))
            .map(DatabaseUrl::new);
        if let Some(v) = var("POSTGRES__POOL_SIZE") {
            pg.pool_size = parse("POSTGRES__POOL_SIZE", &v)?;
        }
        if let Some(v) = var("POSTGRES__CONNECT_TIMEOUT_MS") {
            pg.connect_timeout_ms = parse("POSTGRES__CONNECT_TIMEOUT_MS", &v)?;
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
        Ok(settings)
    }

    /// The store options these settings describe.
    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            timeout: Duration::from_millis(self.timeout_ms),
            max_state_bytes: self.max_state_bytes,
        }
    }

    /// Checks values a store cannot run with.
    pub fn validate(&self) -> Result<()> {
        if self.timeout_ms == 0 {
            return Err(Error::Config("timeout_ms must be greater than 0".into()));
        }
        if self.provider == Provider::Postgresql {
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

    /// Builds the configured store. For PostgreSQL: connects, applies migrations when
    /// `migrate_on_start`, and checks the schema when `validate_on_start`.
    pub async fn build(&self) -> Result<Arc<dyn AwarenessStore>> {
        self.validate()?;
        match self.provider {
            Provider::Memory => Ok(Arc::new(MemoryAwarenessStore::with_options(
                self.store_options(),
            ))),
            Provider::Postgresql => Ok(Arc::new(self.build_postgres().await?)),
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
        let options = PostgresOptions {
            store: self.store_options(),
            pool_size: self.postgres.pool_size,
            connect_timeout: Duration::from_millis(self.postgres.connect_timeout_ms),
            validate_on_start: false,
            statement_timeout: (self.postgres.statement_timeout_ms > 0)
                .then(|| Duration::from_millis(self.postgres.statement_timeout_ms)),
            synchronous_commit: self.postgres.synchronous_commit,
        };
        let store = PostgresAwarenessStore::connect(url.expose(), options).await?;
        if self.postgres.migrate_on_start {
            store.migrate(&[]).await?;
        }
        if self.postgres.validate_on_start {
            store.ensure_schema().await?;
        }
        Ok(store)
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
        assert_eq!(s.store_options().timeout, Duration::from_secs(15));
    }

    #[test]
    fn defaults_and_errors() {
        let s = AwarenessSettings::from_lookup(|_| None).unwrap();
        assert_eq!(s, AwarenessSettings::default());
        assert_eq!(s.provider, Provider::Memory);
        assert_eq!(s.timeout_ms, 30_000);

        let err = AwarenessSettings::from_lookup(|k| {
            (k == "SYNCKIT__AWARENESS__PROVIDER").then(|| "redis".to_string())
        })
        .unwrap_err();
        assert!(matches!(err, Error::Config(_)));
        assert!(err.to_string().contains("memory, postgresql"), "{err}");

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
    fn deserializes_from_toml_like_json() {
        let err = serde_json::from_str::<AwarenessSettings>(r#"{"provider":"mongo"}"#).unwrap_err();
        assert!(err.to_string().contains("valid providers"), "{err}");
        let s: AwarenessSettings = serde_json::from_str(r#"{"provider":"postgresql"}"#).unwrap();
        assert_eq!(s.provider, Provider::Postgresql);
    }
}
