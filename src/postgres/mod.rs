//! The PostgreSQL store and what it needs: pool set-up, SQL, error mapping.

mod connect;
mod inspect;
mod options;
pub(crate) mod sql;
mod store;

pub use inspect::{DocumentActivity, InspectedEntry, StoreStats};
pub use options::PostgresOptions;
pub use store::{PgPool, PostgresAwarenessStore};
