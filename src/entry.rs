//! The values a store keeps and receives.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::schema::awareness_entries;

/// One client's awareness in one document, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Queryable, Selectable)]
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
}

impl AwarenessEntry {
    /// True when the entry is a tombstone (the client left).
    pub fn is_tombstone(&self) -> bool {
        self.state.is_none()
    }

    /// The update a server broadcasts to tell peers this client is gone: the next clock and no
    /// state (what y-protocols' `removeAwarenessStates` sends).
    pub fn leave_update(&self) -> AwarenessUpdate {
        AwarenessUpdate::leave(
            self.document_id.clone(),
            self.client_id.clone(),
            self.connection_id.clone(),
            self.clock.saturating_add(1),
        )
    }
}

/// Orders entries by (document, client) in byte order: how every multi-document result of every
/// store is returned.
pub(crate) fn sort_by_key(entries: &mut [AwarenessEntry]) {
    entries.sort_by(|a, b| (&a.document_id, &a.client_id).cmp(&(&b.document_id, &b.client_id)));
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
        }
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

/// Whether a [`set`](crate::AwarenessStore::set) changed the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetOutcome {
    /// The update replaced (or created) the entry.
    Applied,
    /// The update lost to the stored entry's clock; nothing changed.
    Stale,
}

impl SetOutcome {
    /// True for [`SetOutcome::Applied`].
    pub fn is_applied(self) -> bool {
        matches!(self, SetOutcome::Applied)
    }
}
