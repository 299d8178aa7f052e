//! The room list a token may see: `GET /rooms` holds only the rooms its `rooms` claim lets it
//! read. Each pattern is a range of the store's byte-ordered room list (an exact name, or
//! every name from a prefix on while it starts with it), so a narrow token costs a few indexed
//! reads, never a walk of every room.

use std::collections::BTreeMap;

use serde::Serialize;
use synckit_awareness::{AwarenessStore, Result};

use crate::auth::{Pattern, Scopes};

/// One room of the list: its name and live participants on every instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    /// The room (document id).
    pub document_id: String,
    /// Its live participants.
    pub participants: i64,
}

/// The first `limit` rooms after `after` (byte order) that `scopes` may read.
pub async fn readable_rooms(
    store: &dyn AwarenessStore,
    scopes: &Scopes,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<Listed>> {
    let wanted = usize::try_from(limit).unwrap_or(usize::MAX);
    let after_all = after.unwrap_or("");
    let mut found = BTreeMap::new();
    if scopes.reads_everything() {
        for room in store.rooms(after, limit).await? {
            found.insert(room.document_id, room.participants);
        }
    }
    for pattern in scopes.patterns().filter(|_| !scopes.reads_everything()) {
        let (name, prefix) = match pattern {
            Pattern::Exact(name) => (name.as_str(), false),
            Pattern::Prefix(prefix) => (prefix.as_str(), true),
        };
        // The room named exactly the pattern (or its prefix): rooms() starts after a name.
        if name > after_all {
            let participants = store.count(name).await?;
            if participants > 0 {
                found.insert(
                    name.to_owned(),
                    i64::try_from(participants).unwrap_or(i64::MAX),
                );
            }
        }
        if !prefix {
            continue;
        }
        let mut cursor = name.max(after_all).to_owned();
        let mut taken = 0;
        'pages: loop {
            let page = store.rooms(Some(&cursor), limit).await?;
            let full = page.len() == wanted;
            for room in page {
                if !room.document_id.starts_with(name) {
                    break 'pages;
                }
                cursor.clone_from(&room.document_id);
                found.insert(room.document_id, room.participants);
                taken += 1;
            }
            if !full || taken >= wanted {
                break;
            }
        }
    }
    Ok(found
        .into_iter()
        .take(wanted)
        .map(|(document_id, participants)| Listed {
            document_id,
            participants,
        })
        .collect())
}
