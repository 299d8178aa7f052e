//! The PostgreSQL store and what it needs: pool set-up, SQL, error mapping.

mod batch;
mod coalesce;
mod connect;
mod feed;
mod inspect;
mod instance;
pub(crate) mod migrations;
mod options;
mod publishing;
pub(crate) mod schema_check;
pub(crate) mod secret;
pub(crate) mod sql;
mod store;
pub(crate) mod tls;

pub use connect::{build_pool, connection_manager};
pub use feed::{
    AwarenessChange, ChangeFeedOptions, ChangeFilter, ChangeKind, ChangeStream, ChangedState,
    FeedEvent, DEFAULT_CHANNEL,
};
pub use inspect::{DocumentActivity, InspectedEntry, StoreStats};
pub use instance::{InstanceOptions, DEFAULT_LEASE};
pub use options::PostgresOptions;
pub use store::{PgPool, PostgresAwarenessStore};
