//! Presence events across instances ([`PostgresAwarenessStore::presence_events`]): the change
//! feed turned into joined / updated / left, each told once, with the principal.
//!
//! The feed says which clients of a document were set, left, removed or expired; it does not
//! say whether a set is a join, nor who the client is. A subscription keeps the keys of the
//! participants it knows present (with their principal and instance): a set of an unknown
//! client is a join, read once by its primary key for its principal; a removal of a known one
//! is a leave, confirmed by the same read (another instance may have published the removal
//! after the client came back elsewhere); every other event changes nothing. The view starts
//! from a read made after the feed is subscribed (so nothing is missed in between) and is
//! read again on every [`FeedEvent::Resync`], the differences going out as joins and leaves.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use diesel::pg::data_types::PgInterval;

use diesel_async::RunQueryDsl;
use futures_util::stream::{self, BoxStream, StreamExt};

use super::feed::{AwarenessChange, ChangeFilter, ChangeKind, ChangeStream, FeedEvent};
use super::pool::{with_conn, Connections};
use super::sql;
use crate::entry::AwarenessEntry;
use crate::error::{Field, Result};
use crate::store::AwarenessStore;
use crate::who::{Participant, PresenceEvent, PresenceFilter};

/// The events of a presence subscription. It holds a clone of the store (it reads through
/// it): drop the stream to unsubscribe.
pub type PresenceStream = BoxStream<'static, PresenceEvent>;

/// How long a subscription waits before reading again after the database failed it.
const RETRY: Duration = Duration::from_millis(500);

type Key = (String, String);

/// Who a known participant is.
struct Known {
    principal: Option<String>,
    instance: Option<String>,
}

/// Where a subscription reads who is present: the store, and for every room at once its
/// connections and timeout.
#[derive(Clone)]
pub(super) struct Source {
    pub(super) store: Arc<dyn AwarenessStore>,
    pub(super) connections: Connections,
    pub(super) timeout: PgInterval,
}

struct Subscription {
    source: Source,
    changes: ChangeStream,
    filter: PresenceFilter,
    known: HashMap<Key, Known>,
    ready: VecDeque<PresenceEvent>,
}

/// The change-feed filter a presence subscription needs; bad input is refused here.
pub(super) fn feed_filter(filter: &PresenceFilter) -> Result<ChangeFilter> {
    match &filter.room {
        Some(room) => {
            crate::validate::check_id(Field::DocumentId, room)?;
            Ok(ChangeFilter::document(room.clone()))
        }
        None => Ok(ChangeFilter::all()),
    }
}

/// A presence subscription on `changes` (subscribed with [`feed_filter`] before this is
/// called, so nothing between the subscription and the first read is missed).
pub(super) async fn subscribe(
    source: Source,
    changes: ChangeStream,
    filter: PresenceFilter,
) -> Result<PresenceStream> {
    let mut subscription = Subscription {
        source,
        changes,
        filter,
        known: HashMap::new(),
        ready: VecDeque::new(),
    };
    for entry in present(&subscription.source, &subscription.filter).await? {
        subscription.remember(&entry);
    }
    Ok(stream::unfold(subscription, |mut subscription| async move {
        loop {
            if let Some(event) = subscription.ready.pop_front() {
                return Some((event, subscription));
            }
            let event = subscription.changes.next().await?;
            subscription.absorb(event).await;
        }
    })
    .boxed())
}

/// Who is present now, in the filter's room or everywhere.
async fn present(source: &Source, filter: &PresenceFilter) -> Result<Vec<AwarenessEntry>> {
    match &filter.room {
        Some(room) => source.store.get_all(room).await,
        None => with_conn!(source.connections, |conn| Ok(sql::read::live_everywhere(
            source.timeout
        )
        .load(conn)
        .await?)),
    }
}

impl Subscription {
    fn remember(&mut self, entry: &AwarenessEntry) {
        self.known.insert(
            (entry.document_id.clone(), entry.client_id.clone()),
            Known {
                principal: entry.owner.clone(),
                instance: entry.instance_id.clone(),
            },
        );
    }

    async fn absorb(&mut self, event: FeedEvent) {
        let change = match event {
            FeedEvent::Resync => return self.resync().await,
            FeedEvent::Change(change) => change,
        };
        if let Err(error) = self.apply(&change).await {
            tracing::warn!(%error, "presence events: cannot read a participant; reading the view again");
            self.resync().await;
        }
    }

    async fn apply(&mut self, change: &AwarenessChange) -> Result<()> {
        let document = &change.document_id;
        for (index, client) in change.client_ids.iter().enumerate() {
            let key = (document.clone(), client.clone());
            match (change.kind, self.known.get(&key)) {
                (ChangeKind::Set, Some(known)) => {
                    if !self.filter.updates {
                        continue;
                    }
                    let carried = change.state_of(index).and_then(|c| {
                        Some(Participant {
                            document_id: document.clone(),
                            client_id: client.clone(),
                            principal: known.principal.clone(),
                            instance: known.instance.clone(),
                            clock: c.clock,
                            state: c.state.clone()?,
                        })
                    });
                    let participant = match carried {
                        Some(participant) => Some(participant),
                        // Too large for the notification: read it.
                        None => self
                            .source
                            .store
                            .get(document, client)
                            .await?
                            .and_then(Participant::from_entry),
                    };
                    self.ready.extend(participant.map(PresenceEvent::Updated));
                }
                (ChangeKind::Set, None) => {
                    let entry = self.source.store.get(document, client).await?;
                    // Gone already: its leave follows, and is not told either.
                    if let Some(entry) = entry.filter(|e| !e.is_tombstone()) {
                        self.remember(&entry);
                        self.ready
                            .extend(Participant::from_entry(entry).map(PresenceEvent::Joined));
                    }
                }
                (_, Some(_)) => {
                    let back = self.source.store.get(document, client).await?;
                    if back.is_some_and(|e| !e.is_tombstone()) {
                        continue;
                    }
                    if let Some(known) = self.known.remove(&key) {
                        self.ready.push_back(PresenceEvent::Left {
                            document_id: key.0,
                            client_id: key.1,
                            principal: known.principal,
                        });
                    }
                }
                (_, None) => {}
            }
        }
        Ok(())
    }

    /// Reads who is present again (retrying while the database fails) and tells the
    /// difference with the view as joins and leaves, after a [`PresenceEvent::Resync`].
    async fn resync(&mut self) {
        let present = loop {
            match present(&self.source, &self.filter).await {
                Ok(present) => break present,
                Err(error) => {
                    tracing::warn!(%error, "presence events: cannot read who is present; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        };
        self.ready.push_back(PresenceEvent::Resync);
        let mut before = std::mem::take(&mut self.known);
        for entry in present {
            let key = (entry.document_id.clone(), entry.client_id.clone());
            self.remember(&entry);
            if before.remove(&key).is_none() {
                self.ready
                    .extend(Participant::from_entry(entry).map(PresenceEvent::Joined));
            }
        }
        let mut gone: Vec<_> = before.into_iter().collect();
        gone.sort_by(|a, b| a.0.cmp(&b.0));
        for ((document_id, client_id), known) in gone {
            self.ready.push_back(PresenceEvent::Left {
                document_id,
                client_id,
                principal: known.principal,
            });
        }
    }
}
