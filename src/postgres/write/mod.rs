//! How writes are planned, grouped and run before they reach `sql::write`: [`plan`] splits a
//! `set_many` into statements of distinct keys in key order; [`run`] sends them on a
//! connection; [`retry`] sends a statement again after a deadlock or serialization failure;
//! [`coalesce`] queues concurrent `set`s into one `set_many` when connections are busy;
//! [`known`] picks which of `set`'s statements goes first.

pub(crate) mod coalesce;
pub(crate) mod known;
pub(crate) mod plan;
pub(crate) mod retry;
pub(crate) mod run;
