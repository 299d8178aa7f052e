//! The in-memory store: one process, no persistence.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::Value;

use crate::entry::{sort_by_key, AwarenessEntry, AwarenessUpdate, SetOutcome};
use crate::error::Result;
use crate::storage::Storage;
use crate::store::StoreOptions;

/// An [`AwarenessStore`](crate::AwarenessStore) in process memory. Cheap to clone: clones share
/// the same entries.
#[derive(Debug, Clone, Default)]
pub struct MemoryAwarenessStore {
    inner: Arc<RwLock<Entries>>,
    options: StoreOptions,
}

#[derive(Debug, Default)]
struct Entries {
    /// document -> client -> entry; BTreeMap keeps `get_all` ordered by client id for free.
    documents: HashMap<String, BTreeMap<String, Stored>>,
    /// connection -> (document, client) it owns, so a disconnect does not scan every entry.
    by_connection: HashMap<String, HashSet<(String, String)>>,
}

#[derive(Debug, Clone)]
struct Stored {
    connection_id: String,
    state: Option<Value>,
    clock: i64,
    last_seen: DateTime<Utc>,
    owner: Option<String>,
}

impl Stored {
    fn to_entry(&self, document_id: &str, client_id: &str) -> AwarenessEntry {
        AwarenessEntry {
            document_id: document_id.to_owned(),
            client_id: client_id.to_owned(),
            connection_id: self.connection_id.clone(),
            state: self.state.clone(),
            clock: self.clock,
            last_seen: self.last_seen,
            owner: self.owner.clone(),
            instance_id: None,
        }
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
        self.read(|e| e.documents.values().map(BTreeMap::len).sum())
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read<T>(&self, f: impl FnOnce(&Entries) -> T) -> T {
        // A panic while holding the lock cannot leave Entries half-updated in a way that breaks
        // the contract (each mutation is a single map operation), so a poisoned lock is usable.
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

    /// Removes every expired entry, handing each to `keep`.
    fn remove_expired(&self, mut keep: impl FnMut(&str, &str, Stored)) {
        let cutoff = self.expiry_cutoff();
        self.write(|entries| {
            let Entries {
                documents,
                by_connection,
            } = entries;
            documents.retain(|document_id, clients| {
                clients.retain(|client_id, stored| {
                    if stored.last_seen > cutoff {
                        return true;
                    }
                    unlink(by_connection, &stored.connection_id, document_id, client_id);
                    keep(document_id, client_id, stored.clone());
                    false
                });
                !clients.is_empty()
            });
        });
    }
}

fn unlink(
    by_connection: &mut HashMap<String, HashSet<(String, String)>>,
    connection_id: &str,
    document_id: &str,
    client_id: &str,
) {
    if let Some(keys) = by_connection.get_mut(connection_id) {
        keys.remove(&(document_id.to_owned(), client_id.to_owned()));
        if keys.is_empty() {
            by_connection.remove(connection_id);
        }
    }
}

/// The contract's rules 1-3 (clocks), for a live existing entry.
fn wins(update: &AwarenessUpdate, existing: &Stored) -> bool {
    crate::entry::supersedes(
        Some((existing.clock, existing.state.is_some())),
        update.clock,
        update.state.is_some(),
    )
}

/// Why `update` may not be applied over `existing` (the key's fresh entry, if any), checked in
/// this order (the contract's numbers): ownership (4), then clocks (1-3), then the limits on
/// joining participants (5).
fn refusal(
    entries: &Entries,
    options: &StoreOptions,
    cutoff: DateTime<Utc>,
    update: &AwarenessUpdate,
    existing: Option<&Stored>,
) -> Option<SetOutcome> {
    if let Some(existing) = existing {
        if existing.owner.is_some() && existing.owner != update.owner {
            return Some(SetOutcome::Forbidden);
        }
        if !wins(update, existing) {
            return Some(SetOutcome::Stale);
        }
    }
    let joins = update.state.is_some() && existing.is_none_or(|e| e.state.is_none());
    if !joins {
        return None;
    }
    let live = |s: &Stored| s.state.is_some() && s.last_seen > cutoff;
    let in_document = entries
        .documents
        .get(&update.document_id)
        .map_or(0, |clients| clients.values().filter(|s| live(s)).count());
    let on_connection = entries
        .by_connection
        .get(&update.connection_id)
        .map_or(0, |keys| {
            keys.iter()
                .filter(|(document_id, client_id)| {
                    entries
                        .documents
                        .get(document_id)
                        .and_then(|clients| clients.get(client_id))
                        .is_some_and(live)
                })
                .count()
        });
    options.refuses_join(in_document as u64, on_connection as u64)
}

crate::storage::awareness_store!(MemoryAwarenessStore, "memory", |store| store);

#[async_trait]
impl Storage for MemoryAwarenessStore {
    async fn get(&self, document_id: &str, client_id: &str) -> Result<Option<AwarenessEntry>> {
        let cutoff = self.expiry_cutoff();
        let found = self.read(|e| {
            e.documents
                .get(document_id)
                .and_then(|clients| clients.get(client_id))
                .filter(|s| s.last_seen > cutoff)
                .map(|s| s.to_entry(document_id, client_id))
        });
        Ok(found)
    }

    async fn get_all(&self, document_id: &str) -> Result<Vec<AwarenessEntry>> {
        let cutoff = self.expiry_cutoff();
        let live: Vec<AwarenessEntry> = self.read(|e| {
            e.documents
                .get(document_id)
                .map(|clients| {
                    clients
                        .iter()
                        .filter(|(_, s)| s.state.is_some() && s.last_seen > cutoff)
                        .map(|(client_id, s)| s.to_entry(document_id, client_id))
                        .collect()
                })
                .unwrap_or_default()
        });
        Ok(live)
    }

    async fn set(&self, update: &AwarenessUpdate) -> Result<SetOutcome> {
        let cutoff = self.expiry_cutoff();
        let options = self.options;
        let outcome = self.write(|entries| {
            let existing = entries
                .documents
                .get(&update.document_id)
                .and_then(|clients| clients.get(&update.client_id));
            let fresh = existing.filter(|e| e.last_seen > cutoff);
            if let Some(refused) = refusal(entries, &options, cutoff, update, fresh) {
                return refused;
            }
            let previous_connection = existing.map(|e| e.connection_id.clone());
            let clients = entries
                .documents
                .entry(update.document_id.clone())
                .or_default();
            clients.insert(
                update.client_id.clone(),
                Stored {
                    connection_id: update.connection_id.clone(),
                    state: update.state.clone(),
                    clock: update.clock,
                    last_seen: Utc::now(),
                    owner: update.owner.clone(),
                },
            );
            if previous_connection.as_deref() != Some(update.connection_id.as_str()) {
                if let Some(previous) = previous_connection {
                    unlink(
                        &mut entries.by_connection,
                        &previous,
                        &update.document_id,
                        &update.client_id,
                    );
                }
                entries
                    .by_connection
                    .entry(update.connection_id.clone())
                    .or_default()
                    .insert((update.document_id.clone(), update.client_id.clone()));
            }
            SetOutcome::Applied
        });
        Ok(outcome)
    }

    async fn remove(&self, document_id: &str, client_id: &str) -> Result<bool> {
        let removed = self.write(|entries| {
            let Some(clients) = entries.documents.get_mut(document_id) else {
                return false;
            };
            let Some(removed) = clients.remove(client_id) else {
                return false;
            };
            if clients.is_empty() {
                entries.documents.remove(document_id);
            }
            unlink(
                &mut entries.by_connection,
                &removed.connection_id,
                document_id,
                client_id,
            );
            true
        });
        Ok(removed)
    }

    async fn remove_all_for_connection(&self, connection_id: &str) -> Result<Vec<AwarenessEntry>> {
        let cutoff = self.expiry_cutoff();
        let mut removed = self.write(|entries| {
            let keys = entries
                .by_connection
                .remove(connection_id)
                .unwrap_or_default();
            let mut removed = Vec::new();
            for (document_id, client_id) in keys {
                let Some(clients) = entries.documents.get_mut(&document_id) else {
                    continue;
                };
                if let Some(stored) = clients.remove(&client_id) {
                    if stored.last_seen > cutoff {
                        removed.push(stored.to_entry(&document_id, &client_id));
                    }
                }
                if clients.is_empty() {
                    entries.documents.remove(&document_id);
                }
            }
            removed
        });
        sort_by_key(&mut removed);
        Ok(removed)
    }

    async fn get_expired(&self) -> Result<Vec<AwarenessEntry>> {
        let cutoff = self.expiry_cutoff();
        let mut expired: Vec<AwarenessEntry> = self.read(|e| {
            e.documents
                .iter()
                .flat_map(|(document_id, clients)| {
                    clients
                        .iter()
                        .filter(|(_, s)| s.last_seen <= cutoff)
                        .map(move |(client_id, s)| s.to_entry(document_id, client_id))
                })
                .collect()
        });
        sort_by_key(&mut expired);
        Ok(expired)
    }

    async fn prune_expired(&self) -> Result<u64> {
        let mut count = 0u64;
        self.remove_expired(|_, _, _| count += 1);
        Ok(count)
    }

    async fn take_expired(&self) -> Result<Vec<AwarenessEntry>> {
        let mut taken = Vec::new();
        self.remove_expired(|document_id, client_id, stored| {
            taken.push(stored.to_entry(document_id, client_id));
        });
        // The documents map is unordered; the contract orders by (document, client).
        sort_by_key(&mut taken);
        Ok(taken)
    }

    fn options(&self) -> StoreOptions {
        self.options
    }
}
