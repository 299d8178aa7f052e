//! How writes are planned and grouped before they reach `sql::write`: [`plan`] decides which
//! update of each key a `set_many` statement sends and reads every update's outcome back;
//! [`coalesce`] queues concurrent `set`s into one `set_many` when connections are busy;
//! [`known`] picks which of `set`'s statements goes first.

pub(crate) mod coalesce;
pub(crate) mod known;
pub(crate) mod plan;
