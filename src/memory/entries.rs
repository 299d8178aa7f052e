//! `Entries`: the slab with its indexes, and every operation on it.

use std::hash::BuildHasher;

use chrono::{DateTime, Utc};
use hashbrown::HashTable;

use crate::entry::{AwarenessUpdate, SetOutcome};
use crate::error::Result;
use crate::store::StoreOptions;

use super::slab::*;

impl Entries {
    pub(super) fn find_doc(&self, document_id: &str) -> Option<u32> {
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

    pub(super) fn find_conn(&self, connection_id: &str) -> Option<u32> {
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

    pub(super) fn find(&self, document_id: &str, client_id: &str) -> Option<u32> {
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
    pub(super) fn retire_through(&mut self, cutoff: DateTime<Utc>) {
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
    pub(super) fn uncount(&mut self, s: u32) {
        let slot = &self.slots[index(s)];
        if slot.counted() {
            let (doc, conn) = (slot.doc, slot.conn);
            self.docs[index(doc)].live -= 1;
            self.conns[index(conn)].live -= 1;
        }
    }

    pub(super) fn unlink_time(&mut self, s: u32) {
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
    pub(super) fn push_time(&mut self, s: u32) {
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
    pub(super) fn unlink_conn(&mut self, s: u32) {
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
    pub(super) fn link_conn(&mut self, s: u32) -> Result<()> {
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
    pub(super) fn link_doc(&mut self, s: u32) -> Result<()> {
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
    pub(super) fn unlink_doc(&mut self, s: u32) {
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
    pub(super) fn remove_slot(&mut self, s: u32) {
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
    pub(super) fn write(&mut self, update: &AwarenessUpdate, existing: Option<u32>) -> Result<()> {
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
    pub(super) fn refusal(
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
    pub(super) fn live(&self, document_id: &str, cutoff: DateTime<Utc>) -> Vec<&Slot> {
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
    pub(super) fn expired(&self, cutoff: DateTime<Utc>) -> Vec<u32> {
        let mut found = Vec::new();
        let mut s = self.time.ends.head;
        while s != NIL && !self.slot(s).fresh(cutoff) {
            found.push(s);
            s = self.slot(s).time.next;
        }
        found
    }
}
