//! The values a store keeps and receives.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schema::awareness_entries;

/// One client's awareness in one document, as stored.
#[derive(
    Debug, Clone, PartialEq, Serialize, Deserialize, Queryable, QueryableByName, Selectable,
)]
#[diesel(table_name = awareness_entries, check_for_backend(diesel::pg::Pg))]
pub struct AwarenessEntry {
    /// The shared document (room).
    pub document_id: String,
    /// The awareness participant (y-protocols' clientID), stable across reconnects.
    pub client_id: String,
    /// The server connection that last wrote this entry.
    pub connection_id: String,
    /// The client's state; `None` is a tombstone (the client left, the clock stays).
    pub state: Option<Value>,
    /// The client's awareness counter.
    #[diesel(column_name = clock_value)]
    pub clock: i64,
    /// When the entry was last written (the database's clock on PostgreSQL).
    pub last_seen: DateTime<Utc>,
    /// The principal that owns this client id while the entry is fresh (see
    /// [`AwarenessUpdate::owner`]); `None`: nobody owns it.
    pub owner: Option<String>,
    /// The server instance that last wrote the entry
    /// ([`PostgresAwarenessStore::start_instance`](crate::PostgresAwarenessStore::start_instance));
    /// `None` for a store not running as an instance (and always in memory).
    pub instance_id: Option<String>,
}

impl AwarenessEntry {
    /// True when the entry is a tombstone (the client left).
    pub fn is_tombstone(&self) -> bool {
        self.state.is_none()
    }

    /// The update a server broadcasts to tell peers this client is gone: the next clock and no
    /// state (what y-protocols' `removeAwarenessStates` sends), written as the entry's owner.
    pub fn leave_update(&self) -> AwarenessUpdate {
        AwarenessUpdate::leave(
            self.document_id.clone(),
            self.client_id.clone(),
            self.connection_id.clone(),
            self.clock.saturating_add(1),
        )
        .with_owner(self.owner.clone())
    }
}

/// The clock rule, written once (the contract's rule 1 and y-protocols' `applyAwarenessUpdate`):
/// an update at `clock` — with a state when `present`, else a leave — supersedes what is held at
/// `current` (its clock, and whether it has a state) when its clock is higher, or equal and it
/// is a leave over a state. Every Rust path decides with this function; the SQL statements say
/// the same (`postgres/sql/write.rs`, tested against the memory store by the conformance suite).
///
/// Where nothing is held, the store applies any update (`None` → true); y-protocols counts an
/// unknown client as clock 0 without a state, so its callers pass `Some((0, false))`.
pub(crate) fn supersedes<C: Ord>(current: Option<(C, bool)>, clock: C, present: bool) -> bool {
    match current {
        None => true,
        Some((held, held_present)) => held < clock || (held == clock && !present && held_present),
    }
}

/// Orders entries by (document, client) in byte order: how every multi-document result of every
/// store is returned.
pub(crate) fn sort_by_key(entries: &mut [AwarenessEntry]) {
    entries.sort_by(|a, b| (&a.document_id, &a.client_id).cmp(&(&b.document_id, &b.client_id)));
}

/// What one pruning round removed ([`AwarenessStore::take_departed`](crate::AwarenessStore::take_departed)).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Departed {
    /// Entries that expired (not written for the timeout), by (document, client).
    pub expired: Vec<AwarenessEntry>,
    /// Fresh entries of instances whose lease lapsed (their server crashed or lost the
    /// database), by (document, client): their participants are gone although their timeout
    /// has not passed.
    pub abandoned: Vec<AwarenessEntry>,
}

impl Departed {
    /// Every removed entry: the expired ones, then the abandoned ones.
    pub fn into_entries(self) -> impl Iterator<Item = AwarenessEntry> {
        self.expired.into_iter().chain(self.abandoned)
    }

    /// True when the round removed nothing.
    pub fn is_empty(&self) -> bool {
        self.expired.is_empty() && self.abandoned.is_empty()
    }
}

/// What a client sends: its new awareness state with a clock.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AwarenessUpdate {
    /// The shared document (room).
    pub document_id: String,
    /// The awareness participant.
    pub client_id: String,
    /// The server connection the update arrived on.
    pub connection_id: String,
    /// The client's awareness counter; must be >= 0.
    pub clock: i64,
    /// The new state; `None` means the client left.
    pub state: Option<Value>,
    /// The authenticated principal sending the update (the user id your server authenticated
    /// the connection as), or `None` when the server does not authenticate.
    ///
    /// The first write of a (document, client) records its owner; while that entry is fresh
    /// (tombstones included), an update from another owner — or from `None` over an owned
    /// entry — is [`SetOutcome::Forbidden`] and changes nothing. The same owner on a new
    /// connection (a reconnect) writes as usual. Once the entry is removed or expired, the
    /// client id is free again. Entries written with `None` belong to nobody: any writer may
    /// take them (and its owner then holds them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl AwarenessUpdate {
    /// An update carrying `state` (`None` = leave).
    pub fn new(
        document_id: impl Into<String>,
        client_id: impl Into<String>,
        connection_id: impl Into<String>,
        clock: i64,
        state: Option<Value>,
    ) -> Self {
        Self {
            document_id: document_id.into(),
            client_id: client_id.into(),
            connection_id: connection_id.into(),
            clock,
            state,
            owner: None,
        }
    }

    /// This update sent by `owner` (see [`owner`](Self::owner)).
    pub fn with_owner(mut self, owner: Option<String>) -> Self {
        self.owner = owner;
        self
    }

    /// A leave: the client is gone, its clock is kept as a tombstone.
    pub fn leave(
        document_id: impl Into<String>,
        client_id: impl Into<String>,
        connection_id: impl Into<String>,
        clock: i64,
    ) -> Self {
        Self::new(document_id, client_id, connection_id, clock, None)
    }
}

/// Whether a [`set`](crate::AwarenessStore::set) changed the store, and if not, why. Every
/// outcome but [`Applied`](Self::Applied) changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SetOutcome {
    /// The update replaced (or created) the entry.
    Applied,
    /// The update lost to the stored entry's clock.
    Stale,
    /// The client id is owned by another principal while its entry is fresh
    /// ([`AwarenessUpdate::owner`]): a spoofing attempt, or a collision of client ids.
    Forbidden,
    /// The update would add a participant to a document that already has
    /// [`max_clients_per_document`](crate::StoreOptions::max_clients_per_document) live ones.
    DocumentFull,
    /// The update would add a participant for a connection that already writes
    /// [`max_clients_per_connection`](crate::StoreOptions::max_clients_per_connection) live
    /// ones.
    ConnectionFull,
}

impl SetOutcome {
    /// True for [`SetOutcome::Applied`].
    pub fn is_applied(self) -> bool {
        matches!(self, SetOutcome::Applied)
    }

    /// The outcome's name as in metrics and traces: `applied`, `stale`, `forbidden`,
    /// `document_full`, `connection_full`.
    pub fn as_str(self) -> &'static str {
        match self {
            SetOutcome::Applied => "applied",
            SetOutcome::Stale => "stale",
            SetOutcome::Forbidden => "forbidden",
            SetOutcome::DocumentFull => "document_full",
            SetOutcome::ConnectionFull => "connection_full",
        }
    }
}

/// A live participant's state as JSON text, as the store holds it
/// ([`AwarenessStore::get_all_states`](crate::AwarenessStore::get_all_states)): for servers
/// that forward states without reading them (a y-protocols relay writes the text as it is).
/// The text is valid JSON of the same value that was set; its spacing and key order are the
/// store's (PostgreSQL's `jsonb` output, the memory store's compact form).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LiveState {
    /// The awareness participant.
    pub client_id: String,
    /// Its clock.
    pub clock: i64,
    /// Its state, as JSON text.
    pub state: String,
}

impl LiveState {
    /// A live state (for stores and tests building one).
    pub fn new(client_id: impl Into<String>, clock: i64, state: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            clock,
            state: state.into(),
        }
    }
}

/// A `jsonb` value read as its text, without parsing it: PostgreSQL sends `jsonb` as a version
/// byte (1) followed by the JSON text.
pub(crate) struct JsonText(String);

impl From<JsonText> for String {
    fn from(text: JsonText) -> Self {
        text.0
    }
}

impl From<(String, i64, JsonText)> for LiveState {
    fn from((client_id, clock, state): (String, i64, JsonText)) -> Self {
        Self::new(client_id, clock, state)
    }
}

impl diesel::deserialize::FromSql<diesel::sql_types::Jsonb, diesel::pg::Pg> for JsonText {
    fn from_sql(value: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
        match value.as_bytes().split_first() {
            Some((1, text)) => Ok(JsonText(String::from_utf8(text.to_vec())?)),
            Some((version, _)) => Err(format!("unsupported jsonb version {version}").into()),
            None => Err("empty jsonb value".into()),
        }
    }
}

impl diesel::deserialize::Queryable<diesel::sql_types::Jsonb, diesel::pg::Pg> for JsonText {
    type Row = JsonText;
    fn build(row: Self::Row) -> diesel::deserialize::Result<Self> {
        Ok(row)
    }
}
