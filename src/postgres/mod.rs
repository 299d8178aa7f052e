//! The PostgreSQL store and what it needs: pool set-up, SQL, error mapping.

mod connect;
mod feed;
mod options;
pub(crate) mod sql;
mod store;

pub use feed::{
    AwarenessChange, ChangeFeedOptions, ChangeFilter, ChangeKind, ChangeStream, FeedEvent,
    DEFAULT_CHANNEL,
};
pub use options::PostgresOptions;
pub use store::{PgPool, PostgresAwarenessStore};
