//! The PostgreSQL store and what it needs: pool set-up, SQL, error mapping.

mod batch;
mod connect;
mod options;
pub(crate) mod sql;
mod store;

pub use options::PostgresOptions;
pub use store::{PgPool, PostgresAwarenessStore};
