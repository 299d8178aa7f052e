//! Who is here in memory: a document's live count and the room list
//! ([`AwarenessStore::count`](crate::AwarenessStore::count),
//! [`AwarenessStore::rooms`](crate::AwarenessStore::rooms)).

use chrono::{DateTime, Utc};

use super::slab::{index, Entries};
use crate::who::RoomCount;

impl Entries {
    /// How many of a document's entries are live (a state, seen after `cutoff`).
    pub(super) fn live_count(&self, document_id: &str, cutoff: DateTime<Utc>) -> u64 {
        self.find_doc(document_id)
            .map_or(0, |d| self.live_in(d, cutoff))
    }

    fn live_in(&self, d: u32, cutoff: DateTime<Utc>) -> u64 {
        let live = self.docs[index(d)]
            .clients
            .iter()
            .filter(|&&s| {
                let slot = self.slot(s);
                slot.has_state() && slot.fresh(cutoff)
            })
            .count();
        u64::try_from(live).unwrap_or(u64::MAX)
    }

    /// The documents after `after` with live entries, by id (byte order), at most `limit`:
    /// every document is looked at (the memory store keeps no order of documents).
    pub(super) fn rooms(
        &self,
        after: Option<&str>,
        limit: u32,
        cutoff: DateTime<Utc>,
    ) -> Vec<RoomCount> {
        let mut rooms: Vec<RoomCount> = self
            .doc_index
            .iter()
            .filter_map(|&d| {
                let name = self.slot(self.docs[index(d)].member).document();
                if after.is_some_and(|after| name <= after) {
                    return None;
                }
                let participants = i64::try_from(self.live_in(d, cutoff)).unwrap_or(i64::MAX);
                (participants > 0).then(|| RoomCount {
                    document_id: name.to_owned(),
                    participants,
                })
            })
            .collect();
        rooms.sort_unstable_by(|a, b| a.document_id.cmp(&b.document_id));
        rooms.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        rooms
    }
}
