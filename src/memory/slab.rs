//! The slab's pieces: an entry's `Slot` (its strings in one allocation), the document and
//! connection indexes, the time-ordered list.

use std::hash::BuildHasher;

use chrono::{DateTime, Utc};
use hashbrown::{DefaultHashBuilder, HashTable};

use crate::entry::{AwarenessEntry, AwarenessUpdate};
use crate::error::{Error, Result};

/// No slot (end of a list, no boundary).
pub(super) const NIL: u32 = u32::MAX;

pub(super) const HAS_STATE: u8 = 1;
pub(super) const HAS_OWNER: u8 = 2;
/// Expired as of the last count update: not in its document's and connection's live counts.
pub(super) const RETIRED: u8 = 4;

#[derive(Debug, Clone, Copy)]
pub(super) struct Links {
    pub(super) prev: u32,
    pub(super) next: u32,
}

pub(super) const UNLINKED: Links = Links {
    prev: NIL,
    next: NIL,
};

#[derive(Debug, Clone, Copy)]
pub(super) struct Ends {
    pub(super) head: u32,
    pub(super) tail: u32,
}

pub(super) const EMPTY: Ends = Ends {
    head: NIL,
    tail: NIL,
};

/// One entry. `text` holds document, client, connection, owner and state back to back.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) text: Box<str>,
    pub(super) clock: i64,
    pub(super) last_seen: DateTime<Utc>,
    /// Its document's and connection's slab index.
    pub(super) doc: u32,
    pub(super) conn: u32,
    /// The list ordered by `last_seen`, and its connection's list.
    pub(super) time: Links,
    pub(super) by_conn: Links,
    pub(super) doc_len: u16,
    pub(super) client_len: u16,
    pub(super) conn_len: u16,
    pub(super) owner_len: u16,
    pub(super) flags: u8,
}

impl Slot {
    pub(super) fn document(&self) -> &str {
        &self.text[..usize::from(self.doc_len)]
    }

    pub(super) fn client(&self) -> &str {
        let start = usize::from(self.doc_len);
        &self.text[start..start + usize::from(self.client_len)]
    }

    pub(super) fn connection(&self) -> &str {
        let start = usize::from(self.doc_len) + usize::from(self.client_len);
        &self.text[start..start + usize::from(self.conn_len)]
    }

    pub(super) fn owner(&self) -> Option<&str> {
        let start =
            usize::from(self.doc_len) + usize::from(self.client_len) + usize::from(self.conn_len);
        (self.flags & HAS_OWNER != 0)
            .then(|| &self.text[start..start + usize::from(self.owner_len)])
    }

    pub(super) fn state_text(&self) -> Option<&str> {
        let start = usize::from(self.doc_len)
            + usize::from(self.client_len)
            + usize::from(self.conn_len)
            + usize::from(self.owner_len);
        (self.flags & HAS_STATE != 0).then(|| &self.text[start..])
    }

    pub(super) fn has_state(&self) -> bool {
        self.flags & HAS_STATE != 0
    }

    /// In its document's and connection's live counts.
    pub(super) fn counted(&self) -> bool {
        self.flags & (HAS_STATE | RETIRED) == HAS_STATE
    }

    pub(super) fn fresh(&self, cutoff: DateTime<Utc>) -> bool {
        self.last_seen > cutoff
    }

    pub(super) fn to_entry(&self) -> Result<AwarenessEntry> {
        let state = match self.state_text() {
            Some(text) => Some(serde_json::from_str(text).map_err(|e| {
                Error::Config(format!("memory store: a stored state does not parse: {e}"))
            })?),
            None => None,
        };
        Ok(AwarenessEntry {
            document_id: self.document().to_owned(),
            client_id: self.client().to_owned(),
            connection_id: self.connection().to_owned(),
            state,
            clock: self.clock,
            last_seen: self.last_seen,
            owner: self.owner().map(str::to_owned),
            instance_id: None,
        })
    }
}

/// A document: its clients (slot indexes, by client id) and how many are live.
#[derive(Debug)]
pub(super) struct Doc {
    pub(super) clients: HashTable<u32>,
    pub(super) live: u32,
    /// Any of its slots: where its name is read from.
    pub(super) member: u32,
}

/// A connection: its slots (the name is read from the first) and how many are live.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) entries: Ends,
    pub(super) live: u32,
}

#[derive(Debug, Default)]
pub(super) struct Entries {
    pub(super) slots: Vec<Slot>,
    pub(super) free_slots: Vec<u32>,
    pub(super) len: usize,
    pub(super) docs: Vec<Doc>,
    pub(super) free_docs: Vec<u32>,
    pub(super) doc_index: HashTable<u32>,
    pub(super) conns: Vec<Conn>,
    pub(super) free_conns: Vec<u32>,
    pub(super) conn_index: HashTable<u32>,
    /// Every slot, oldest `last_seen` first.
    pub(super) time: TimeList,
    pub(super) hasher: DefaultHashBuilder,
}

#[derive(Debug)]
pub(super) struct TimeList {
    pub(super) ends: Ends,
    /// The first slot not retired (`NIL`: all are, or none exist).
    pub(super) boundary: u32,
    /// The cutoff the counts were last brought to.
    pub(super) retired_through: Option<DateTime<Utc>>,
}

impl Default for TimeList {
    fn default() -> Self {
        Self {
            ends: EMPTY,
            boundary: NIL,
            retired_through: None,
        }
    }
}

pub(super) fn index(i: u32) -> usize {
    i as usize
}

/// Slab index of a new element of `vec`, reusing a freed one.
pub(super) fn allocate<T>(vec: &mut Vec<T>, free: &mut Vec<u32>, value: T) -> Result<u32> {
    if let Some(i) = free.pop() {
        vec[index(i)] = value;
        return Ok(i);
    }
    let i = u32::try_from(vec.len())
        .ok()
        .filter(|&i| i != NIL)
        .ok_or_else(|| Error::Config("memory store: more than 4 billion entries".into()))?;
    vec.push(value);
    Ok(i)
}

/// The slot's strings, back to back, and their lengths (ids are at most 256 bytes, validated).
pub(super) fn pack(update: &AwarenessUpdate) -> Result<(Box<str>, [u16; 4], u8)> {
    let state = match &update.state {
        Some(state) => Some(
            serde_json::to_string(state)
                .map_err(|e| Error::Config(format!("memory store: state to JSON: {e}")))?,
        ),
        None => None,
    };
    let owner = update.owner.as_deref();
    let parts = [
        update.document_id.as_str(),
        update.client_id.as_str(),
        update.connection_id.as_str(),
        owner.unwrap_or(""),
        state.as_deref().unwrap_or(""),
    ];
    let mut text = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    let mut lens = [0u16; 4];
    for (i, part) in parts.iter().enumerate() {
        if let Some(len) = lens.get_mut(i) {
            *len = u16::try_from(part.len())
                .map_err(|_| Error::Config("memory store: an id over 64 KiB".into()))?;
        }
        text.push_str(part);
    }
    let flags = (u8::from(state.is_some()) * HAS_STATE) | (u8::from(owner.is_some()) * HAS_OWNER);
    Ok((text.into_boxed_str(), lens, flags))
}

/// The slab's accessors (everything else `Entries` does is in `entries.rs`).
impl Entries {
    pub(super) fn hash(&self, text: &str) -> u64 {
        self.hasher.hash_one(text)
    }

    pub(super) fn slot(&self, s: u32) -> &Slot {
        &self.slots[index(s)]
    }
}
