//! The PostgreSQL store and what it needs: pool set-up, SQL, error mapping.

mod connect;
mod feed;
mod inspect;
mod instance;
pub(crate) mod migrations;
mod options;
mod pool;
pub(crate) mod schema_check;
pub(crate) mod secret;
pub(crate) mod sql;
mod storage;
mod store;
pub(crate) mod tls;
pub(crate) mod unnamed;
mod who_events;
mod write;

pub use connect::{build_pool, connection_manager};
pub use feed::{
    AwarenessChange, ChangeFeedOptions, ChangeFilter, ChangeKind, ChangeStream, ChangedState,
    ChannelEvent, ChannelStream, FeedEvent, DEFAULT_CHANNEL,
};
pub use inspect::{DocumentActivity, InspectedEntry, StoreStats};
pub use instance::{InstanceOptions, DEFAULT_LEASE};
pub use options::PostgresOptions;
pub use pool::PgPool;
pub use store::PostgresAwarenessStore;
pub use unnamed::{UnnamedConnection, UnnamedManager, UnnamedPool};
pub use who_events::PresenceStream;
