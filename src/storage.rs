//! What a store does, apart from what every store does around it.
//!
//! A backend implements [`Storage`]: only its storage work, on input already validated.
//! [`awareness_store!`] turns it into an [`AwarenessStore`](crate::AwarenessStore), adding in one
//! place what every operation of every store needs: input validation (bad input never reaches
//! storage) and one tracing span per call (see `trace.rs`). Layers such as the PostgreSQL
//! store's change-feed publisher implement `Storage` around another `Storage`.

use async_trait::async_trait;

use crate::entry::{AwarenessEntry, AwarenessUpdate, Departed, LiveState, SetOutcome};
use crate::error::Result;
use crate::store::StoreOptions;
use crate::who::RoomCount;

/// A store's storage work. Every method has the meaning of the
/// [`AwarenessStore`](crate::AwarenessStore) method of the same name; inputs are valid.
#[async_trait]
pub(crate) trait Storage: Send + Sync {
    async fn get(&self, document_id: &str, client_id: &str) -> Result<Option<AwarenessEntry>>;
    async fn get_all(&self, document_id: &str) -> Result<Vec<AwarenessEntry>>;
    async fn get_all_states(&self, document_id: &str) -> Result<Vec<LiveState>>;
    async fn count(&self, document_id: &str) -> Result<u64>;
    async fn rooms(&self, after: Option<&str>, limit: u32) -> Result<Vec<RoomCount>>;
    async fn set(&self, update: &AwarenessUpdate) -> Result<SetOutcome>;
    /// As one `set` after another, unless the storage can do better.
    async fn set_many(&self, updates: &[AwarenessUpdate]) -> Result<Vec<SetOutcome>> {
        let mut outcomes = Vec::with_capacity(updates.len());
        for update in updates {
            outcomes.push(self.set(update).await?);
        }
        Ok(outcomes)
    }
    async fn remove(&self, document_id: &str, client_id: &str) -> Result<bool>;
    async fn remove_all_for_connection(&self, connection_id: &str) -> Result<Vec<AwarenessEntry>>;
    async fn get_expired(&self) -> Result<Vec<AwarenessEntry>>;
    async fn prune_expired(&self) -> Result<u64>;
    async fn take_expired(&self) -> Result<Vec<AwarenessEntry>>;
    /// The expired entries, unless the storage knows instances.
    async fn take_departed(&self) -> Result<Departed> {
        Ok(Departed {
            expired: self.take_expired().await?,
            abandoned: Vec::new(),
        })
    }
    /// An instance's graceful stop: its lease and entries removed, the entries that were not
    /// expired returned. Nothing for a storage without instances.
    async fn shutdown(&self) -> Result<Vec<AwarenessEntry>> {
        Ok(Vec::new())
    }
    fn options(&self) -> StoreOptions;
}

/// `impl AwarenessStore for $store` from its [`Storage`] (`$storage`, an expression of `self`):
/// validation, then the storage work inside the operation's span.
macro_rules! awareness_store {
    ($store:ty, $name:literal, |$this:ident| $storage:expr) => {
        #[async_trait::async_trait]
        impl $crate::store::AwarenessStore for $store {
            async fn get(
                &self,
                document_id: &str,
                client_id: &str,
            ) -> $crate::error::Result<Option<$crate::entry::AwarenessEntry>> {
                let $this = self;
                let span = $crate::storage::span!("awareness.get", $name, document_id, client_id);
                $crate::trace::traced(span, async {
                    $crate::validate::check_id($crate::error::Field::DocumentId, document_id)?;
                    $crate::validate::check_id($crate::error::Field::ClientId, client_id)?;
                    $crate::storage::Storage::get($storage, document_id, client_id).await
                })
                .await
            }

            async fn get_all(
                &self,
                document_id: &str,
            ) -> $crate::error::Result<Vec<$crate::entry::AwarenessEntry>> {
                let $this = self;
                let span = $crate::storage::span!("awareness.get_all", $name, document_id);
                $crate::trace::traced(span, async {
                    $crate::validate::check_id($crate::error::Field::DocumentId, document_id)?;
                    $crate::storage::Storage::get_all($storage, document_id).await
                })
                .await
            }

            async fn get_all_states(
                &self,
                document_id: &str,
            ) -> $crate::error::Result<Vec<$crate::entry::LiveState>> {
                let $this = self;
                let span = $crate::storage::span!("awareness.get_all_states", $name, document_id);
                $crate::trace::traced(span, async {
                    $crate::validate::check_id($crate::error::Field::DocumentId, document_id)?;
                    $crate::storage::Storage::get_all_states($storage, document_id).await
                })
                .await
            }

            async fn count(&self, document_id: &str) -> $crate::error::Result<u64> {
                let $this = self;
                let span = $crate::storage::span!("awareness.count", $name, document_id);
                $crate::trace::traced(span, async {
                    $crate::validate::check_id($crate::error::Field::DocumentId, document_id)?;
                    $crate::storage::Storage::count($storage, document_id).await
                })
                .await
            }

            async fn rooms(
                &self,
                after: Option<&str>,
                limit: u32,
            ) -> $crate::error::Result<Vec<$crate::who::RoomCount>> {
                let $this = self;
                let span = $crate::storage::span!("awareness.rooms", $name, limit);
                $crate::trace::traced(span, async {
                    if let Some(after) = after {
                        $crate::validate::check_id($crate::error::Field::DocumentId, after)?;
                    }
                    $crate::storage::Storage::rooms($storage, after, limit).await
                })
                .await
            }

            async fn set(
                &self,
                update: &$crate::entry::AwarenessUpdate,
            ) -> $crate::error::Result<$crate::entry::SetOutcome> {
                let $this = self;
                let span = $crate::storage::span!(
                    "awareness.set",
                    $name,
                    document_id = update.document_id.as_str(),
                    client_id = update.client_id.as_str(),
                    clock = update.clock
                );
                $crate::trace::traced(span, async {
                    $crate::validate::check_update(
                        update,
                        $crate::storage::Storage::options($storage).max_state_bytes,
                    )?;
                    $crate::storage::Storage::set($storage, update).await
                })
                .await
            }

            async fn set_many(
                &self,
                updates: &[$crate::entry::AwarenessUpdate],
            ) -> $crate::error::Result<Vec<$crate::entry::SetOutcome>> {
                let $this = self;
                let span =
                    $crate::storage::span!("awareness.set_many", $name, updates = updates.len());
                $crate::trace::traced(span, async {
                    // Every update is checked before any is applied.
                    for update in updates {
                        $crate::validate::check_update(
                            update,
                            $crate::storage::Storage::options($storage).max_state_bytes,
                        )?;
                    }
                    if updates.is_empty() {
                        return Ok(Vec::new());
                    }
                    $crate::storage::Storage::set_many($storage, updates).await
                })
                .await
            }

            async fn remove(
                &self,
                document_id: &str,
                client_id: &str,
            ) -> $crate::error::Result<bool> {
                let $this = self;
                let span =
                    $crate::storage::span!("awareness.remove", $name, document_id, client_id);
                $crate::trace::traced(span, async {
                    $crate::validate::check_id($crate::error::Field::DocumentId, document_id)?;
                    $crate::validate::check_id($crate::error::Field::ClientId, client_id)?;
                    $crate::storage::Storage::remove($storage, document_id, client_id).await
                })
                .await
            }

            async fn remove_all_for_connection(
                &self,
                connection_id: &str,
            ) -> $crate::error::Result<Vec<$crate::entry::AwarenessEntry>> {
                let $this = self;
                let span = $crate::storage::span!(
                    "awareness.remove_all_for_connection",
                    $name,
                    connection_id
                );
                $crate::trace::traced(span, async {
                    $crate::validate::check_id($crate::error::Field::ConnectionId, connection_id)?;
                    $crate::storage::Storage::remove_all_for_connection($storage, connection_id)
                        .await
                })
                .await
            }

            async fn get_expired(
                &self,
            ) -> $crate::error::Result<Vec<$crate::entry::AwarenessEntry>> {
                let $this = self;
                let span = $crate::storage::span!("awareness.get_expired", $name);
                $crate::trace::traced(span, $crate::storage::Storage::get_expired($storage)).await
            }

            async fn prune_expired(&self) -> $crate::error::Result<u64> {
                let $this = self;
                let span = $crate::storage::span!("awareness.prune_expired", $name);
                $crate::trace::traced(span, $crate::storage::Storage::prune_expired($storage)).await
            }

            async fn take_expired(
                &self,
            ) -> $crate::error::Result<Vec<$crate::entry::AwarenessEntry>> {
                let $this = self;
                let span = $crate::storage::span!("awareness.take_expired", $name);
                $crate::trace::traced(span, $crate::storage::Storage::take_expired($storage)).await
            }

            async fn take_departed(&self) -> $crate::error::Result<$crate::entry::Departed> {
                let $this = self;
                let span = $crate::storage::span!("awareness.take_departed", $name);
                $crate::trace::traced(span, $crate::storage::Storage::take_departed($storage)).await
            }

            fn options(&self) -> $crate::store::StoreOptions {
                let $this = self;
                $crate::storage::Storage::options($storage)
            }
        }
    };
}

/// The span of one operation: its name, the store, the ids it concerns, and the fields
/// [`traced`](crate::trace::traced) fills in when it ends.
macro_rules! span {
    ($op:literal, $store:literal $(, $($field:tt)*)?) => {
        $crate::trace::Operation {
            name: match $op.split_once('.') {
                Some((_, name)) => name,
                None => $op,
            },
            store: $store,
            span: tracing::debug_span!(
                $op,
                store = $store,
                $($($field)*,)?
                outcome = tracing::field::Empty,
                rows = tracing::field::Empty,
                elapsed_us = tracing::field::Empty
            ),
        }
    };
}

pub(crate) use awareness_store;
pub(crate) use span;
