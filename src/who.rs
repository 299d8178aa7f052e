//! Who is here, for the rest of an application: a room's participants and count
//! ([`AwarenessStore::get_all`](crate::AwarenessStore::get_all),
//! [`AwarenessStore::count`](crate::AwarenessStore::count)), the rooms with their counts
//! ([`AwarenessStore::rooms`](crate::AwarenessStore::rooms)), and the presence events of one
//! room or all ([`PostgresAwarenessStore::presence_events`](crate::PostgresAwarenessStore::presence_events)).
//!
//! On PostgreSQL the answers cover every instance on the database: the table holds every
//! instance's participants.

use serde::Serialize;
use serde_json::Value;

use crate::entry::AwarenessEntry;

/// A room (document) and how many live participants it has
/// ([`AwarenessStore::rooms`](crate::AwarenessStore::rooms)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, diesel::QueryableByName)]
pub struct RoomCount {
    /// The document.
    #[diesel(sql_type = diesel::sql_types::Text)]
    pub document_id: String,
    /// Its live participants (fresh entries with a state), on every instance.
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub participants: i64,
}

/// A live participant as a presence event carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Participant {
    /// The room.
    pub document_id: String,
    /// The awareness client id.
    pub client_id: String,
    /// Who wrote it ([`AwarenessEntry::owner`]); `None`: an anonymous writer.
    pub principal: Option<String>,
    /// The instance that wrote it ([`AwarenessEntry::instance_id`]) when it joined.
    pub instance: Option<String>,
    /// Its clock.
    pub clock: i64,
    /// Its state.
    pub state: Value,
}

impl Participant {
    /// The participant of a live entry; `None` for a tombstone.
    pub fn from_entry(entry: AwarenessEntry) -> Option<Self> {
        Some(Self {
            state: entry.state?,
            document_id: entry.document_id,
            client_id: entry.client_id,
            principal: entry.owner,
            instance: entry.instance_id,
            clock: entry.clock,
        })
    }
}

/// What happened to who is in a room. Each participant's joining and leaving is told once per
/// subscription, whichever instance it was connected to and whatever removed it (its client's
/// leave, its connection closing, expiry, its instance's lapsed lease).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")] // the names `name()` gives
#[non_exhaustive]
pub enum PresenceEvent {
    /// A participant arrived (or was found present after a [`PresenceEvent::Resync`]).
    Joined(Participant),
    /// A participant present before changed its state (cursor, selection, name, …); the
    /// principal and instance are those it joined with.
    Updated(Participant),
    /// A participant is gone.
    Left {
        /// The room.
        document_id: String,
        /// The awareness client id.
        client_id: String,
        /// Who it was.
        principal: Option<String>,
    },
    /// Events may have been missed (the feed's listener reconnected, or this subscriber fell
    /// behind): the subscription re-read who is here, and the `Joined` and `Left` events that
    /// follow bring a subscriber's view up to date.
    Resync,
}

impl PresenceEvent {
    /// The event's name, as in its JSON's `event` field: `joined`, `updated`, `left`, `resync`
    /// (a Server-Sent Event's `event:` line, say).
    pub fn name(&self) -> &'static str {
        match self {
            PresenceEvent::Joined(_) => "joined",
            PresenceEvent::Updated(_) => "updated",
            PresenceEvent::Left { .. } => "left",
            PresenceEvent::Resync => "resync",
        }
    }

    /// The event's room; `None` for [`PresenceEvent::Resync`].
    pub fn document_id(&self) -> Option<&str> {
        match self {
            PresenceEvent::Joined(p) | PresenceEvent::Updated(p) => Some(&p.document_id),
            PresenceEvent::Left { document_id, .. } => Some(document_id),
            PresenceEvent::Resync => None,
        }
    }
}

/// Which presence events a subscription yields
/// ([`PostgresAwarenessStore::presence_events`](crate::PostgresAwarenessStore::presence_events)):
/// one room or all, with or without updates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceFilter {
    pub(crate) room: Option<String>,
    pub(crate) updates: bool,
}

impl PresenceFilter {
    /// Joins and leaves in every room. The subscription reads every live participant's key
    /// once when it starts (a sequential scan: what a view of every room costs) and keeps them
    /// in memory; prefer [`PresenceFilter::room`] where one room will do.
    pub fn all() -> Self {
        Self::default()
    }

    /// Joins and leaves in one room (a primary-key range read when it starts).
    pub fn room(room: impl Into<String>) -> Self {
        Self {
            room: Some(room.into()),
            updates: false,
        }
    }

    /// Also [`PresenceEvent::Updated`] for every applied state change (one per cursor move).
    pub fn with_updates(mut self) -> Self {
        self.updates = true;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `name()` says what the JSON's `event` field says.
    #[test]
    fn names_agree_with_the_json_tag() {
        let participant = Participant {
            document_id: "d".into(),
            client_id: "1".into(),
            principal: None,
            instance: None,
            clock: 1,
            state: serde_json::json!({}),
        };
        let left = PresenceEvent::Left {
            document_id: "d".into(),
            client_id: "1".into(),
            principal: None,
        };
        for event in [
            PresenceEvent::Joined(participant.clone()),
            PresenceEvent::Updated(participant),
            left,
            PresenceEvent::Resync,
        ] {
            let json = serde_json::to_value(&event).expect("serialise");
            assert_eq!(json["event"], event.name());
        }
    }
}
