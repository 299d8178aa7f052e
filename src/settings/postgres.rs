//! The PostgreSQL provider's settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::postgres::secret::DatabaseUrl;
use crate::postgres::{ChangeFeedOptions, PostgresOptions, DEFAULT_CHANNEL};
use crate::store::StoreOptions;

/// Settings of the PostgreSQL provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresSettings {
    /// Connection URL (`postgres://user:password@host/db`). Falls back to `DATABASE_URL` in
    /// [`AwarenessSettings::from_env`](crate::AwarenessSettings::from_env). Never printed with its password.
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
    /// ([`PostgresAwarenessStore::start_instance`](crate::PostgresAwarenessStore::start_instance)), so that other instances remove its entries
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

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
