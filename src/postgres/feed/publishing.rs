//! The change-feed publisher as a layer: a [`Storage`] around another, which hands the keys of
//! every change the inner storage applied to the feed's publisher task (a channel send, no
//! I/O). Without a publishing feed every method is a plain call through.
//!
//! The shape of tower-sessions' `CachingSessionStore`: the storage knows nothing of the feed.

use async_trait::async_trait;

use super::types::ChangeKind;
use super::Feed;
use crate::entry::{AwarenessEntry, AwarenessUpdate, Departed, SetOutcome};
use crate::error::Result;
use crate::storage::Storage;
use crate::store::StoreOptions;
use crate::who::RoomCount;

/// `inner`, publishing what it applies to `feed`.
#[derive(Clone)]
pub(crate) struct Publishing<S> {
    pub(crate) inner: S,
    pub(crate) feed: Feed,
}

impl<S> Publishing<S> {
    /// `inner` with a feed that publishes nothing (see `with_change_feed`).
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            feed: Feed::default(),
        }
    }
}

#[async_trait]
impl<S: Storage> Storage for Publishing<S> {
    async fn get(&self, document_id: &str, client_id: &str) -> Result<Option<AwarenessEntry>> {
        self.inner.get(document_id, client_id).await
    }

    async fn get_all(&self, document_id: &str) -> Result<Vec<AwarenessEntry>> {
        self.inner.get_all(document_id).await
    }

    async fn get_all_states(&self, document_id: &str) -> Result<Vec<crate::entry::LiveState>> {
        self.inner.get_all_states(document_id).await
    }

    async fn count(&self, document_id: &str) -> Result<u64> {
        self.inner.count(document_id).await
    }

    async fn rooms(&self, after: Option<&str>, limit: u32) -> Result<Vec<RoomCount>> {
        self.inner.rooms(after, limit).await
    }

    async fn set(&self, update: &AwarenessUpdate) -> Result<SetOutcome> {
        let outcome = self.inner.set(update).await?;
        if outcome.is_applied() {
            self.feed.publish_update(update);
        }
        Ok(outcome)
    }

    async fn set_many(&self, updates: &[AwarenessUpdate]) -> Result<Vec<SetOutcome>> {
        let outcomes = self.inner.set_many(updates).await?;
        for (update, outcome) in updates.iter().zip(&outcomes) {
            if outcome.is_applied() {
                self.feed.publish_update(update);
            }
        }
        Ok(outcomes)
    }

    async fn remove(&self, document_id: &str, client_id: &str) -> Result<bool> {
        let removed = self.inner.remove(document_id, client_id).await?;
        if removed {
            self.feed
                .publish(ChangeKind::Remove, document_id, vec![client_id.to_owned()]);
        }
        Ok(removed)
    }

    async fn remove_all_for_connection(&self, connection_id: &str) -> Result<Vec<AwarenessEntry>> {
        let removed = self.inner.remove_all_for_connection(connection_id).await?;
        self.feed.publish_entries(ChangeKind::Remove, &removed);
        Ok(removed)
    }

    async fn get_expired(&self) -> Result<Vec<AwarenessEntry>> {
        self.inner.get_expired().await
    }

    /// Publishing needs the keys a count does not give: with the feed on, the expired entries
    /// are taken (one statement too) and announced.
    async fn prune_expired(&self) -> Result<u64> {
        if !self.feed.is_publishing() {
            return self.inner.prune_expired().await;
        }
        let taken = self.take_expired().await?;
        Ok(u64::try_from(taken.len()).unwrap_or(u64::MAX))
    }

    async fn take_expired(&self) -> Result<Vec<AwarenessEntry>> {
        let taken = self.inner.take_expired().await?;
        self.feed.publish_entries(ChangeKind::Expire, &taken);
        Ok(taken)
    }

    /// Expired entries as [`ChangeKind::Expire`], a lapsed instance's as
    /// [`ChangeKind::Remove`].
    async fn take_departed(&self) -> Result<Departed> {
        let departed = self.inner.take_departed().await?;
        self.feed
            .publish_entries(ChangeKind::Expire, &departed.expired);
        self.feed
            .publish_entries(ChangeKind::Remove, &departed.abandoned);
        Ok(departed)
    }

    /// The instance's entries, as [`ChangeKind::Remove`].
    async fn shutdown(&self) -> Result<Vec<AwarenessEntry>> {
        let removed = self.inner.shutdown().await?;
        self.feed.publish_entries(ChangeKind::Remove, &removed);
        Ok(removed)
    }

    fn options(&self) -> StoreOptions {
        self.inner.options()
    }
}
