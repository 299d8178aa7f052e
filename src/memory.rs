//! The in-memory store: one process, no persistence.
//!
//! Laid out for constant-time joins and a small footprint (issue 18; figures in
//! docs/performance.md):
//! - every entry is one [`Slot`] in a slab, its strings (document, client, connection, owner,
//!   state as compact JSON text) back to back in one allocation;
//! - documents and connections are indexes over the slab (`hashbrown::HashTable<u32>`), and
//!   each keeps its count of *live* participants (a state, not expired), so a join reads two
//!   counters instead of scanning the document and the connection;
//! - every entry sits in one list ordered by `last_seen` (a write moves it to the tail). Expired
//!   entries are a prefix of that list: a `retired` boundary walks forward as time passes and
//!   takes them out of the counts (each entry once), and pruning walks the prefix only.

use std::hash::BuildHasher;
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use hashbrown::{DefaultHashBuilder, HashTable};

use crate::entry::{sort_by_key, AwarenessEntry, AwarenessUpdate, LiveState, SetOutcome};
use crate::error::{Error, Result};
use crate::storage::Storage;
use crate::store::StoreOptions;

/// An [`AwarenessStore`](crate::AwarenessStore) in process memory. Cheap to clone: clones share
/// the same entries.
#[derive(Debug, Clone, Default)]
pub struct MemoryAwarenessStore {
    inner: Arc<RwLock<Entries>>,
    options: StoreOptions,
}

/// No slot (end of a list, no boundary).
const NIL: u32 = u32::MAX;

const HAS_STATE: u8 = 1;
const HAS_OWNER: u8 = 2;
/// Expired as of the last count update: not in its document's and connection's live counts.
const RETIRED: u8 = 4;

#[derive(Debug, Clone, Copy)]
struct Links {
    prev: u32,
    next: u32,
}

const UNLINKED: Links = Links {
    prev: NIL,
    next: NIL,
};

#[derive(Debug, Clone, Copy)]
struct Ends {
    head: u32,
    tail: u32,
}

const EMPTY: Ends = Ends {
    head: NIL,
    tail: NIL,
};

/// One entry. `text` holds document, client, connection, owner and state back to back.
#[derive(Debug)]
struct Slot {
    text: Box<str>,
    clock: i64,
    last_seen: DateTime<Utc>,
    /// Its document's and connection's slab index.
    doc: u32,
    conn: u32,
    /// The list ordered by `last_seen`, and its connection's list.
    time: Links,
    by_conn: Links,
    doc_len: u16,
    client_len: u16,
    conn_len: u16,
    owner_len: u16,
    flags: u8,
}

impl Slot {
    fn document(&self) -> &str {
        &self.text[..usize::from(self.doc_len)]
    }

    fn client(&self) -> &str {
        let start = usize::from(self.doc_len);
        &self.text[start..start + usize::from(self.client_len)]
    }

    fn connection(&self) -> &str {
        let start = usize::from(self.doc_len) + usize::from(self.client_len);
        &self.text[start..start + usize::from(self.conn_len)]
    }

    fn owner(&self) -> Option<&str> {
        let start =
            usize::from(self.doc_len) + usize::from(self.client_len) + usize::from(self.conn_len);
        (self.flags & HAS_OWNER != 0)
            .then(|| &self.text[start..start + usize::from(self.owner_len)])
    }

    fn state_text(&self) -> Option<&str> {
        let start = usize::from(self.doc_len)
            + usize::from(self.client_len)
            + usize::from(self.conn_len)
            + usize::from(self.owner_len);
        (self.flags & HAS_STATE != 0).then(|| &self.text[start..])
    }

    fn has_state(&self) -> bool {
        self.flags & HAS_STATE != 0
    }

    /// In its document's and connection's live counts.
    fn counted(&self) -> bool {
        self.flags & (HAS_STATE | RETIRED) == HAS_STATE
    }

    fn fresh(&self, cutoff: DateTime<Utc>) -> bool {
        self.last_seen > cutoff
    }

    fn to_entry(&self) -> Result<AwarenessEntry> {
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
struct Doc {
    clients: HashTable<u32>,
    live: u32,
    /// Any of its slots: where its name is read from.
    member: u32,
}

/// A connection: its slots (the name is read from the first) and how many are live.
#[derive(Debug)]
struct Conn {
    entries: Ends,
    live: u32,
}

#[derive(Debug, Default)]
struct Entries {
    slots: Vec<Slot>,
    free_slots: Vec<u32>,
    len: usize,
    docs: Vec<Doc>,
    free_docs: Vec<u32>,
    doc_index: HashTable<u32>,
    conns: Vec<Conn>,
    free_conns: Vec<u32>,
    conn_index: HashTable<u32>,
    /// Every slot, oldest `last_seen` first.
    time: TimeList,
    hasher: DefaultHashBuilder,
}

#[derive(Debug)]
struct TimeList {
    ends: Ends,
    /// The first slot not retired (`NIL`: all are, or none exist).
    boundary: u32,
    /// The cutoff the counts were last brought to.
    retired_through: Option<DateTime<Utc>>,
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

fn index(i: u32) -> usize {
    i as usize
}

/// Slab index of a new element of `vec`, reusing a freed one.
fn allocate<T>(vec: &mut Vec<T>, free: &mut Vec<u32>, value: T) -> Result<u32> {
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
fn pack(update: &AwarenessUpdate) -> Result<(Box<str>, [u16; 4], u8)> {
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

impl Entries {
    fn hash(&self, text: &str) -> u64 {
        self.hasher.hash_one(text)
    }

    fn slot(&self, s: u32) -> &Slot {
        &self.slots[index(s)]
    }

    fn find_doc(&self, document_id: &str) -> Option<u32> {
        let Self {
            docs,
            slots,
            doc_index,
            ..
        } = self;
        doc_index
            .find(self.hash(document_id), |&d| {
                slots[index(docs[index(d)].member)].document() == document_id
            })
            .copied()
    }

    fn find_conn(&self, connection_id: &str) -> Option<u32> {
        let Self {
            conns,
            slots,
            conn_index,
            ..
        } = self;
        conn_index
            .find(self.hash(connection_id), |&c| {
                slots[index(conns[index(c)].entries.head)].connection() == connection_id
            })
            .copied()
    }

    fn find(&self, document_id: &str, client_id: &str) -> Option<u32> {
        let d = self.find_doc(document_id)?;
        let slots = &self.slots;
        self.docs[index(d)]
            .clients
            .find(self.hash(client_id), |&s| {
                slots[index(s)].client() == client_id
            })
            .copied()
    }

    /// Brings the live counts to `cutoff`: entries seen at or before it leave them. Moving
    /// forward (the usual case) touches each entry once in its life; a handle with a longer
    /// timeout on the same entries moves the boundary back.
    fn retire_through(&mut self, cutoff: DateTime<Utc>) {
        let backwards = self.time.retired_through.is_some_and(|w| cutoff < w);
        if backwards {
            let mut p = match self.time.boundary {
                NIL => self.time.ends.tail,
                b => self.slot(b).time.prev,
            };
            while p != NIL && self.slot(p).fresh(cutoff) {
                let slot = &mut self.slots[index(p)];
                slot.flags &= !RETIRED;
                let (counted, doc, conn, prev) =
                    (slot.counted(), slot.doc, slot.conn, slot.time.prev);
                if counted {
                    self.docs[index(doc)].live += 1;
                    self.conns[index(conn)].live += 1;
                }
                self.time.boundary = p;
                p = prev;
            }
        } else {
            let mut b = self.time.boundary;
            while b != NIL && !self.slot(b).fresh(cutoff) {
                self.uncount(b);
                let slot = &mut self.slots[index(b)];
                slot.flags |= RETIRED;
                b = slot.time.next;
            }
            self.time.boundary = b;
        }
        self.time.retired_through = Some(cutoff);
    }

    /// Takes slot `s` out of its document's and connection's live counts, if it is in them.
    fn uncount(&mut self, s: u32) {
        let slot = &self.slots[index(s)];
        if slot.counted() {
            let (doc, conn) = (slot.doc, slot.conn);
            self.docs[index(doc)].live -= 1;
            self.conns[index(conn)].live -= 1;
        }
    }

    fn unlink_time(&mut self, s: u32) {
        let Links { prev, next } = self.slot(s).time;
        if self.time.boundary == s {
            self.time.boundary = next;
        }
        match prev {
            NIL => self.time.ends.head = next,
            p => self.slots[index(p)].time.next = next,
        }
        match next {
            NIL => self.time.ends.tail = prev,
            n => self.slots[index(n)].time.prev = prev,
        }
        self.slots[index(s)].time = UNLINKED;
    }

    /// Appends `s`, just written (fresh), at the tail.
    fn push_time(&mut self, s: u32) {
        let tail = self.time.ends.tail;
        self.slots[index(s)].time = Links {
            prev: tail,
            next: NIL,
        };
        match tail {
            NIL => self.time.ends.head = s,
            t => self.slots[index(t)].time.next = s,
        }
        self.time.ends.tail = s;
        if self.time.boundary == NIL {
            self.time.boundary = s;
        }
    }

    /// Unlinks `s` from its connection, dropping the connection when it was its last slot.
    fn unlink_conn(&mut self, s: u32) {
        let c = self.slot(s).conn;
        let Links { prev, next } = self.slot(s).by_conn;
        if prev == NIL && next == NIL {
            let hash = self.hash(self.slot(s).connection());
            if let Ok(found) = self.conn_index.find_entry(hash, |&x| x == c) {
                found.remove();
            }
            self.conns[index(c)] = Conn {
                entries: EMPTY,
                live: 0,
            };
            self.free_conns.push(c);
        } else {
            let conn = &mut self.conns[index(c)];
            if prev == NIL {
                conn.entries.head = next;
            }
            if next == NIL {
                conn.entries.tail = prev;
            }
            if prev != NIL {
                self.slots[index(prev)].by_conn.next = next;
            }
            if next != NIL {
                self.slots[index(next)].by_conn.prev = prev;
            }
        }
        self.slots[index(s)].by_conn = UNLINKED;
    }

    /// Links `s` (its text written) to its connection, creating the connection if needed.
    fn link_conn(&mut self, s: u32) -> Result<()> {
        let name = self.slot(s).connection();
        let hash = self.hash(name);
        let c = match self.find_conn(name) {
            Some(c) => {
                let tail = self.conns[index(c)].entries.tail;
                self.slots[index(tail)].by_conn.next = s;
                self.slots[index(s)].by_conn = Links {
                    prev: tail,
                    next: NIL,
                };
                self.conns[index(c)].entries.tail = s;
                c
            }
            None => {
                let conn = Conn {
                    entries: Ends { head: s, tail: s },
                    live: 0,
                };
                let c = allocate(&mut self.conns, &mut self.free_conns, conn)?;
                self.slots[index(s)].by_conn = UNLINKED;
                let Self {
                    conns,
                    slots,
                    conn_index,
                    hasher,
                    ..
                } = self;
                conn_index.insert_unique(hash, c, |&x| {
                    hasher.hash_one(slots[index(conns[index(x)].entries.head)].connection())
                });
                c
            }
        };
        self.slots[index(s)].conn = c;
        Ok(())
    }

    /// Creates slot `s` in its document (text written), creating the document if needed.
    fn link_doc(&mut self, s: u32) -> Result<()> {
        let d = match self.find_doc(self.slot(s).document()) {
            Some(d) => d,
            None => {
                let doc = Doc {
                    clients: HashTable::new(),
                    live: 0,
                    member: s,
                };
                let d = allocate(&mut self.docs, &mut self.free_docs, doc)?;
                let hash = self.hash(self.slot(s).document());
                let Self {
                    docs,
                    slots,
                    doc_index,
                    hasher,
                    ..
                } = self;
                doc_index.insert_unique(hash, d, |&x| {
                    hasher.hash_one(slots[index(docs[index(x)].member)].document())
                });
                d
            }
        };
        self.slots[index(s)].doc = d;
        let hash = self.hash(self.slot(s).client());
        let Self {
            docs,
            slots,
            hasher,
            ..
        } = self;
        docs[index(d)]
            .clients
            .insert_unique(hash, s, |&x| hasher.hash_one(slots[index(x)].client()));
        Ok(())
    }

    /// Removes `s` from its document, dropping the document when it was its last slot.
    fn unlink_doc(&mut self, s: u32) {
        let d = self.slot(s).doc;
        let hash = self.hash(self.slot(s).client());
        let doc_hash = self.hash(self.slot(s).document());
        let doc = &mut self.docs[index(d)];
        if let Ok(found) = doc.clients.find_entry(hash, |&x| x == s) {
            found.remove();
        }
        if doc.clients.is_empty() {
            if let Ok(found) = self.doc_index.find_entry(doc_hash, |&x| x == d) {
                found.remove();
            }
            self.docs[index(d)] = Doc {
                clients: HashTable::new(),
                live: 0,
                member: NIL,
            };
            self.free_docs.push(d);
        } else if doc.member == s {
            if let Some(&other) = doc.clients.iter().next() {
                doc.member = other;
            }
        }
    }

    /// Removes slot `s` entirely.
    fn remove_slot(&mut self, s: u32) {
        self.uncount(s);
        self.unlink_time(s);
        self.unlink_doc(s);
        self.unlink_conn(s);
        let slot = &mut self.slots[index(s)];
        slot.text = Box::default();
        slot.flags = 0;
        self.free_slots.push(s);
        self.len -= 1;
    }

    /// Writes `update` (already allowed) at `now`, keeping every index and count.
    fn write(&mut self, update: &AwarenessUpdate, existing: Option<u32>) -> Result<()> {
        let (text, [doc_len, client_len, conn_len, owner_len], flags) = pack(update)?;
        // The list stays ordered by last_seen even if the wall clock steps back.
        let now = match self.time.ends.tail {
            NIL => Utc::now(),
            t => Utc::now().max(self.slot(t).last_seen),
        };
        let s = match existing {
            Some(s) => {
                self.uncount(s);
                self.unlink_time(s);
                let moves = self.slot(s).connection() != update.connection_id;
                if moves {
                    self.unlink_conn(s);
                }
                let slot = &mut self.slots[index(s)];
                slot.text = text;
                (slot.conn_len, slot.owner_len, slot.flags) = (conn_len, owner_len, flags);
                slot.clock = update.clock;
                slot.last_seen = now;
                if moves {
                    self.link_conn(s)?;
                }
                s
            }
            None => {
                let slot = Slot {
                    text,
                    clock: update.clock,
                    last_seen: now,
                    doc: NIL,
                    conn: NIL,
                    time: UNLINKED,
                    by_conn: UNLINKED,
                    doc_len,
                    client_len,
                    conn_len,
                    owner_len,
                    flags,
                };
                let s = allocate(&mut self.slots, &mut self.free_slots, slot)?;
                self.len += 1;
                self.link_doc(s)?;
                self.link_conn(s)?;
                s
            }
        };
        self.push_time(s);
        if self.slot(s).counted() {
            let (doc, conn) = (self.slot(s).doc, self.slot(s).conn);
            self.docs[index(doc)].live += 1;
            self.conns[index(conn)].live += 1;
        }
        Ok(())
    }

    /// Why `update` may not be applied over `existing` (the key's fresh entry, if any), checked
    /// in this order (the contract's numbers): ownership (4), then clocks (1-3), then the limits
    /// on joining participants (5). The counts must be retired through the same cutoff.
    fn refusal(
        &self,
        options: &StoreOptions,
        update: &AwarenessUpdate,
        existing: Option<&Slot>,
    ) -> Option<SetOutcome> {
        if let Some(existing) = existing {
            if existing.owner().is_some() && existing.owner() != update.owner.as_deref() {
                return Some(SetOutcome::Forbidden);
            }
            let wins = crate::entry::supersedes(
                Some((existing.clock, existing.has_state())),
                update.clock,
                update.state.is_some(),
            );
            if !wins {
                return Some(SetOutcome::Stale);
            }
        }
        let joins = update.state.is_some() && existing.is_none_or(|e| !e.has_state());
        if !joins {
            return None;
        }
        let in_document = self
            .find_doc(&update.document_id)
            .map_or(0, |d| self.docs[index(d)].live);
        let on_connection = self
            .find_conn(&update.connection_id)
            .map_or(0, |c| self.conns[index(c)].live);
        options.refuses_join(u64::from(in_document), u64::from(on_connection))
    }

    /// The live slots of a document (a state, seen after `cutoff`), by client id (byte order).
    fn live(&self, document_id: &str, cutoff: DateTime<Utc>) -> Vec<&Slot> {
        let Some(d) = self.find_doc(document_id) else {
            return Vec::new();
        };
        let mut live: Vec<&Slot> = self.docs[index(d)]
            .clients
            .iter()
            .map(|&s| self.slot(s))
            .filter(|s| s.has_state() && s.fresh(cutoff))
            .collect();
        live.sort_unstable_by(|a, b| a.client().cmp(b.client()));
        live
    }

    /// The slots seen at or before `cutoff`, oldest first.
    fn expired(&self, cutoff: DateTime<Utc>) -> Vec<u32> {
        let mut found = Vec::new();
        let mut s = self.time.ends.head;
        while s != NIL && !self.slot(s).fresh(cutoff) {
            found.push(s);
            s = self.slot(s).time.next;
        }
        found
    }
}

impl MemoryAwarenessStore {
    /// An empty store with default options (30 s timeout, 64 KiB states).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store with the given options.
    pub fn with_options(options: StoreOptions) -> Self {
        Self {
            inner: Arc::default(),
            options,
        }
    }

    /// Another handle on the same entries with other options (a second server with another
    /// timeout, or a test looking at the same data with a short timeout).
    pub fn view_with_options(&self, options: StoreOptions) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            options,
        }
    }

    /// Number of stored entries, expired and tombstones included.
    pub fn len(&self) -> usize {
        self.read(|e| e.len)
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read<T>(&self, f: impl FnOnce(&Entries) -> T) -> T {
        // Every mutation keeps the indexes consistent before it can fail or panic (allocation
        // aside), so a poisoned lock is usable.
        f(&self.inner.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn write<T>(&self, f: impl FnOnce(&mut Entries) -> T) -> T {
        f(&mut self.inner.write().unwrap_or_else(PoisonError::into_inner))
    }

    fn expiry_cutoff(&self) -> DateTime<Utc> {
        let timeout = TimeDelta::from_std(self.options.timeout).unwrap_or(TimeDelta::MAX);
        Utc::now()
            .checked_sub_signed(timeout)
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// Removes every expired entry, handing each slot to `keep` first.
    fn remove_expired<T>(&self, mut keep: impl FnMut(&Slot) -> Result<T>) -> Result<Vec<T>> {
        let cutoff = self.expiry_cutoff();
        self.write(|entries| {
            let expired = entries.expired(cutoff);
            let kept = expired
                .iter()
                .map(|&s| keep(entries.slot(s)))
                .collect::<Result<Vec<T>>>()?;
            for s in expired {
                entries.remove_slot(s);
            }
            Ok(kept)
        })
    }
}

crate::storage::awareness_store!(MemoryAwarenessStore, "memory", |store| store);

#[async_trait]
impl Storage for MemoryAwarenessStore {
    async fn get(&self, document_id: &str, client_id: &str) -> Result<Option<AwarenessEntry>> {
        let cutoff = self.expiry_cutoff();
        self.read(|e| {
            e.find(document_id, client_id)
                .map(|s| e.slot(s))
                .filter(|s| s.fresh(cutoff))
                .map(Slot::to_entry)
                .transpose()
        })
    }

    async fn get_all(&self, document_id: &str) -> Result<Vec<AwarenessEntry>> {
        let cutoff = self.expiry_cutoff();
        self.read(|e| {
            e.live(document_id, cutoff)
                .into_iter()
                .map(Slot::to_entry)
                .collect()
        })
    }

    async fn get_all_states(&self, document_id: &str) -> Result<Vec<LiveState>> {
        let cutoff = self.expiry_cutoff();
        Ok(self.read(|e| {
            e.live(document_id, cutoff)
                .into_iter()
                .filter_map(|s| Some(LiveState::new(s.client(), s.clock, s.state_text()?)))
                .collect()
        }))
    }

    async fn set(&self, update: &AwarenessUpdate) -> Result<SetOutcome> {
        let cutoff = self.expiry_cutoff();
        let options = self.options;
        self.write(|entries| {
            entries.retire_through(cutoff);
            let existing = entries.find(&update.document_id, &update.client_id);
            let fresh = existing
                .map(|s| entries.slot(s))
                .filter(|s| s.fresh(cutoff));
            if let Some(refused) = entries.refusal(&options, update, fresh) {
                return Ok(refused);
            }
            entries.write(update, existing)?;
            Ok(SetOutcome::Applied)
        })
    }

    async fn remove(&self, document_id: &str, client_id: &str) -> Result<bool> {
        Ok(self.write(|entries| {
            let found = entries.find(document_id, client_id);
            if let Some(s) = found {
                entries.remove_slot(s);
            }
            found.is_some()
        }))
    }

    async fn remove_all_for_connection(&self, connection_id: &str) -> Result<Vec<AwarenessEntry>> {
        let cutoff = self.expiry_cutoff();
        let mut removed = self.write(|entries| {
            let Some(c) = entries.find_conn(connection_id) else {
                return Ok(Vec::new());
            };
            let mut slots = Vec::new();
            let mut s = entries.conns[index(c)].entries.head;
            while s != NIL {
                slots.push(s);
                s = entries.slot(s).by_conn.next;
            }
            let removed = slots
                .iter()
                .map(|&s| entries.slot(s))
                .filter(|s| s.fresh(cutoff))
                .map(Slot::to_entry)
                .collect::<Result<Vec<_>>>()?;
            for s in slots {
                entries.remove_slot(s);
            }
            Ok::<_, Error>(removed)
        })?;
        sort_by_key(&mut removed);
        Ok(removed)
    }

    async fn get_expired(&self) -> Result<Vec<AwarenessEntry>> {
        let cutoff = self.expiry_cutoff();
        let mut expired = self.read(|e| {
            e.expired(cutoff)
                .into_iter()
                .map(|s| e.slot(s).to_entry())
                .collect::<Result<Vec<_>>>()
        })?;
        sort_by_key(&mut expired);
        Ok(expired)
    }

    async fn prune_expired(&self) -> Result<u64> {
        Ok(self.remove_expired(|_| Ok(()))?.len() as u64)
    }

    async fn take_expired(&self) -> Result<Vec<AwarenessEntry>> {
        let mut taken = self.remove_expired(Slot::to_entry)?;
        // The list is ordered by time; the contract orders by (document, client).
        sort_by_key(&mut taken);
        Ok(taken)
    }

    fn options(&self) -> StoreOptions {
        self.options
    }
}
