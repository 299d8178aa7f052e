//! Behind a transaction-mode pooler (PgBouncer `pool_mode = transaction`, Supavisor, RDS
//! Proxy, Neon's pooler): connections that send each statement unnamed, in one round trip
//! ([`connection`]), each driving its own socket ([`driver`]), their rows and binds as diesel reads and writes them ([`row`]), their
//! errors as diesel's ([`error`]), how they cancel a statement past its timeout
//! ([`cancel`]), and the pool of them ([`manager`]).

mod cancel;
mod connection;
mod driver;
mod error;
mod manager;
mod row;

pub use connection::UnnamedConnection;
pub use manager::{UnnamedManager, UnnamedPool};
