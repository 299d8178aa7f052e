//! The NOTIFY payload: keys (and the states sets wrote, where they fit), coalesced, split below
//! PostgreSQL's 8000-byte limit.
//!
//! Layout (JSON): `{"o":origin,"s":sequence,"e":[[kind,document_id,[client_id,...],states?],...]}`
//! where the optional `states` is `[[clock,state]|null,...]`, one per client id (`null`: not
//! carried, re-read it). The sequence number makes every payload of a publisher distinct:
//! PostgreSQL drops a notification identical to one already sent in the same transaction, which
//! would otherwise lose the last of `set`, `remove`, `set` on one key split across payloads.

use std::collections::HashMap;

use serde::Deserialize;

use super::types::{AwarenessChange, ChangeKind, ChangedState};
use crate::entry::AwarenessUpdate;

/// Longest payload sent, in bytes. PostgreSQL refuses payloads of 8000 bytes or more; the
/// margin is for nothing in particular but costs nothing either.
pub(crate) const MAX_PAYLOAD_BYTES: usize = 7900;
/// `{"o":,"s":,"e":[]}` plus the longest u64.
const ENVELOPE_BYTES: usize = 18 + 20;

/// Changes waiting to be published, coalesced without reordering any (document, client):
/// a change merges into the document's latest group only when that group has the same kind.
#[derive(Debug, Default)]
pub(crate) struct Notifications {
    groups: Vec<Group>,
    /// Index in `groups` of each document's latest group.
    latest: HashMap<String, usize>,
}

#[derive(Debug)]
struct Group {
    kind: ChangeKind,
    document_id: String,
    client_ids: Vec<String>,
    /// One per client id.
    states: Vec<Option<ChangedState>>,
}

impl Notifications {
    /// Adds changes of `kind` to `client_ids` in `document_id`, with the states they wrote
    /// (`states` empty, or one per client id).
    pub(crate) fn add(
        &mut self,
        kind: ChangeKind,
        document_id: String,
        client_ids: Vec<String>,
        states: Vec<Option<ChangedState>>,
    ) {
        let index = match self.latest.get(&document_id) {
            Some(&i) if self.groups[i].kind == kind => i,
            _ => {
                self.groups.push(Group {
                    kind,
                    document_id: document_id.clone(),
                    client_ids: Vec::new(),
                    states: Vec::new(),
                });
                self.latest.insert(document_id, self.groups.len() - 1);
                self.groups.len() - 1
            }
        };
        let group = &mut self.groups[index];
        let mut states = states.into_iter();
        for client in client_ids {
            let state = states.next().flatten();
            // Same kind, nothing later for this document: a repeat only brings a newer state.
            match group.client_ids.iter().position(|c| *c == client) {
                Some(at) => group.states[at] = state,
                None => {
                    group.client_ids.push(client);
                    group.states.push(state);
                }
            }
        }
    }

    /// Number of (document, client) keys held.
    pub(crate) fn len(&self) -> usize {
        self.groups.iter().map(|g| g.client_ids.len()).sum()
    }

    /// The changes of this batch as a listener would read them back from its payloads, for
    /// this process's own subscribers (alone on the channel): no JSON written or parsed, and
    /// every state carried whatever its size.
    pub(crate) fn into_changes(self, origin: &str) -> Vec<AwarenessChange> {
        self.groups
            .into_iter()
            .map(|group| AwarenessChange {
                states: if group.states.iter().any(Option::is_some) {
                    group.states
                } else {
                    Vec::new()
                },
                document_id: group.document_id,
                client_ids: group.client_ids,
                kind: group.kind,
                origin: origin.to_owned(),
            })
            .collect()
    }

    /// The payloads for this batch, in order, each under [`MAX_PAYLOAD_BYTES`]; numbers them
    /// from `*sequence` on. A state too large to fit in a payload of its own is left out
    /// (`null`: subscribers re-read it).
    pub(crate) fn into_payloads(self, origin: &str, sequence: &mut u64) -> Vec<String> {
        let mut writer = Writer {
            origin: json(origin),
            sequence,
            body: String::new(),
            done: Vec::new(),
        };
        for group in self.groups {
            let prefix = format!(
                "[{},{},[",
                json(group.kind.as_str()),
                json(&group.document_id)
            );
            let carry = group.states.iter().any(Option::is_some);
            let mut chunk = Chunk::default();
            for (client, state) in group.client_ids.iter().zip(&group.states) {
                let id = json(client);
                let mut state = if carry {
                    state_json(state.as_ref())
                } else {
                    String::new()
                };
                loop {
                    let entry = prefix.len()
                        + chunk.bytes_with(&id, &state)
                        + usize::from(!writer.body.is_empty());
                    if writer.fits(entry) {
                        chunk.push(id, state);
                        break;
                    }
                    if chunk.ids.is_empty() && writer.body.is_empty() {
                        if state != "null" && carry {
                            // Too large even alone: carry the key only.
                            state = "null".to_owned();
                            continue;
                        }
                        // (A key alone always fits: ids are at most 256 bytes.)
                        chunk.push(id, state);
                        break;
                    }
                    if !chunk.ids.is_empty() {
                        writer.push_entry(&prefix, &chunk, carry);
                        chunk = Chunk::default();
                    }
                    writer.finish_payload();
                }
            }
            if !chunk.ids.is_empty() {
                writer.push_entry(&prefix, &chunk, carry);
            }
        }
        writer.finish_payload();
        writer.done
    }
}

/// The ids (and states) of one entry being filled, as JSON texts.
#[derive(Default)]
struct Chunk {
    ids: Vec<String>,
    states: Vec<String>,
    bytes: usize,
}

impl Chunk {
    /// The entry's length after the prefix with one more client: ids and states, a comma
    /// before each, and the closing brackets.
    fn bytes_with(&self, id: &str, state: &str) -> usize {
        self.bytes + id.len() + state.len() + 2 * (self.ids.len() + 1) + 4
    }

    fn push(&mut self, id: String, state: String) {
        self.bytes += id.len() + state.len();
        self.ids.push(id);
        self.states.push(state);
    }
}

struct Writer<'a> {
    origin: String,
    sequence: &'a mut u64,
    body: String,
    done: Vec<String>,
}

impl Writer<'_> {
    fn fits(&self, extra: usize) -> bool {
        ENVELOPE_BYTES + self.origin.len() + self.body.len() + extra <= MAX_PAYLOAD_BYTES
    }

    fn push_entry(&mut self, prefix: &str, chunk: &Chunk, carry: bool) {
        if !self.body.is_empty() {
            self.body.push(',');
        }
        self.body.push_str(prefix);
        self.body.push_str(&chunk.ids.join(","));
        self.body.push(']');
        if carry {
            self.body.push_str(",[");
            self.body.push_str(&chunk.states.join(","));
            self.body.push(']');
        }
        self.body.push(']');
    }

    fn finish_payload(&mut self) {
        if self.body.is_empty() {
            return;
        }
        let payload = format!(
            "{{\"o\":{},\"s\":{},\"e\":[{}]}}",
            self.origin, self.sequence, self.body
        );
        *self.sequence = self.sequence.wrapping_add(1);
        self.body.clear();
        self.done.push(payload);
    }
}

/// Whether a set of `update` goes out with its state in a payload of its own (`false`: too
/// large, only its key would be sent and subscribers would re-read it). Conservative by a few
/// bytes (escapes in ids counted as if each id were quoted twice).
pub(crate) fn carries_alone(origin: &str, update: &AwarenessUpdate) -> bool {
    let state = state_json(Some(&ChangedState {
        clock: update.clock,
        state: update.state.clone(),
    }));
    let fixed =
        ENVELOPE_BYTES + 2 * (origin.len() + update.document_id.len() + update.client_id.len());
    fixed + state.len() + 32 <= MAX_PAYLOAD_BYTES
}

fn json(text: &str) -> String {
    // Serializing a &str cannot fail.
    serde_json::to_string(text).unwrap_or_default()
}

/// `[clock,state]`, or `null` when not carried.
fn state_json(state: Option<&ChangedState>) -> String {
    match state {
        // Serializing an i64 and a Value cannot fail.
        Some(s) => serde_json::to_string(&(s.clock, &s.state)).unwrap_or_else(|_| "null".into()),
        None => "null".to_owned(),
    }
}

#[derive(Deserialize)]
struct Payload {
    o: String,
    e: Vec<Entry>,
    /// A hello's period in milliseconds (older versions ignore the field, and send none).
    #[serde(default)]
    h: Option<u64>,
}

#[derive(Deserialize)]
struct Entry(
    ChangeKind,
    String,
    Vec<String>,
    #[serde(default)] Vec<Option<(i64, Option<serde_json::Value>)>>,
);

/// The changes one payload carries; `None` when it is not one of ours.
#[cfg(test)]
pub(crate) fn parse(payload: &str) -> Option<Vec<AwarenessChange>> {
    parse_with_origin(payload).map(|parsed| parsed.changes)
}

/// One payload read: who sent it, what it carries, and for a hello, its sender's period.
pub(crate) struct Parsed {
    pub(crate) origin: String,
    pub(crate) changes: Vec<AwarenessChange>,
    pub(crate) hello_every: Option<std::time::Duration>,
}

/// A listener's hello (see `company.rs`): a payload of `origin` carrying no change and its
/// period, which every version's listener reads as an empty one.
pub(crate) fn hello(origin: &str, every: std::time::Duration) -> String {
    format!(
        "{{\"o\":{},\"s\":0,\"e\":[],\"h\":{}}}",
        json(origin),
        every.as_millis()
    )
}

/// The origin of one payload and the changes it carries (none for a hello); `None` when it is
/// not one of ours.
pub(crate) fn parse_with_origin(payload: &str) -> Option<Parsed> {
    let payload: Payload = serde_json::from_str(payload).ok()?;
    let changes = payload
        .e
        .into_iter()
        .map(|Entry(kind, document_id, client_ids, states)| {
            let states = if states.len() == client_ids.len() {
                states
                    .into_iter()
                    .map(|s| s.map(|(clock, state)| ChangedState { clock, state }))
                    .collect()
            } else {
                Vec::new()
            };
            AwarenessChange {
                document_id,
                client_ids,
                kind,
                origin: payload.o.clone(),
                states,
            }
        })
        .collect();
    Some(Parsed {
        origin: payload.o,
        changes,
        hello_every: payload.h.map(std::time::Duration::from_millis),
    })
}

#[cfg(test)]
#[path = "payload_tests.rs"]
mod tests;
