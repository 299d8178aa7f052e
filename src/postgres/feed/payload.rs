//! The NOTIFY payload: keys only, coalesced, split below PostgreSQL's 8000-byte limit.
//!
//! Layout (JSON): `{"o":origin,"s":sequence,"e":[[kind,document_id,[client_id,...]],...]}`.
//! The sequence number makes every payload of a publisher distinct: PostgreSQL drops a
//! notification identical to one already sent in the same transaction, which would otherwise
//! lose the last of `set`, `remove`, `set` on one key split across payloads.

use std::collections::HashMap;

use serde::Deserialize;

use super::{AwarenessChange, ChangeKind};

/// Longest payload sent, in bytes. PostgreSQL refuses payloads of 8000 bytes or more; the
/// margin is for nothing in particular but costs nothing either.
pub(crate) const MAX_PAYLOAD_BYTES: usize = 7900;
/// `{"o":,"s":,"e":[]}` plus the longest u64.
const ENVELOPE_BYTES: usize = 18 + 20;

/// Changes waiting to be published, coalesced without reordering any (document, client):
/// a change merges into the document's latest group only when that group has the same kind.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    groups: Vec<Group>,
    /// Index in `groups` of each document's latest group.
    latest: HashMap<String, usize>,
}

#[derive(Debug)]
struct Group {
    kind: ChangeKind,
    document_id: String,
    client_ids: Vec<String>,
}

impl Batch {
    /// Adds changes of `kind` to `client_ids` in `document_id`.
    pub(crate) fn add(&mut self, kind: ChangeKind, document_id: String, client_ids: Vec<String>) {
        let index = match self.latest.get(&document_id) {
            Some(&i) if self.groups[i].kind == kind => i,
            _ => {
                self.groups.push(Group {
                    kind,
                    document_id: document_id.clone(),
                    client_ids: Vec::new(),
                });
                self.latest.insert(document_id, self.groups.len() - 1);
                self.groups.len() - 1
            }
        };
        let group = &mut self.groups[index];
        for client in client_ids {
            // Same kind, nothing later for this document: a repeat adds nothing.
            if !group.client_ids.contains(&client) {
                group.client_ids.push(client);
            }
        }
    }

    /// Number of (document, client) keys held.
    pub(crate) fn len(&self) -> usize {
        self.groups.iter().map(|g| g.client_ids.len()).sum()
    }

    /// The payloads for this batch, in order, each under [`MAX_PAYLOAD_BYTES`]; numbers them
    /// from `*sequence` on.
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
            let mut chunk: Vec<String> = Vec::new();
            let mut chunk_bytes = 0;
            for client in &group.client_ids {
                let client = json(client);
                loop {
                    // prefix + clients + commas between them + `]]` + comma before the entry.
                    let entry = prefix.len()
                        + chunk_bytes
                        + chunk.len()
                        + client.len()
                        + 2
                        + usize::from(!writer.body.is_empty());
                    if writer.fits(entry) || (chunk.is_empty() && writer.body.is_empty()) {
                        // (An entry alone always fits: ids are at most 256 bytes.)
                        chunk_bytes += client.len();
                        chunk.push(client);
                        break;
                    }
                    if !chunk.is_empty() {
                        writer.push_entry(&prefix, &chunk);
                        chunk.clear();
                        chunk_bytes = 0;
                    }
                    writer.finish_payload();
                }
            }
            if !chunk.is_empty() {
                writer.push_entry(&prefix, &chunk);
            }
        }
        writer.finish_payload();
        writer.done
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

    fn push_entry(&mut self, prefix: &str, clients: &[String]) {
        if !self.body.is_empty() {
            self.body.push(',');
        }
        self.body.push_str(prefix);
        self.body.push_str(&clients.join(","));
        self.body.push_str("]]");
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

fn json(text: &str) -> String {
    // Serializing a &str cannot fail.
    serde_json::to_string(text).unwrap_or_default()
}

#[derive(Deserialize)]
struct Payload {
    o: String,
    e: Vec<(ChangeKind, String, Vec<String>)>,
}

/// The changes one payload carries; `None` when it is not one of ours.
pub(crate) fn parse(payload: &str) -> Option<Vec<AwarenessChange>> {
    let payload: Payload = serde_json::from_str(payload).ok()?;
    Some(
        payload
            .e
            .into_iter()
            .map(|(kind, document_id, client_ids)| AwarenessChange {
                document_id,
                client_ids,
                kind,
                origin: payload.o.clone(),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("client-{i}")).collect()
    }

    #[test]
    fn coalesces_without_reordering_a_key() {
        let mut batch = Batch::default();
        batch.add(ChangeKind::Set, "d".into(), vec!["a".into()]);
        batch.add(ChangeKind::Set, "e".into(), vec!["a".into()]);
        batch.add(ChangeKind::Set, "d".into(), vec!["b".into(), "a".into()]);
        batch.add(ChangeKind::Remove, "d".into(), vec!["a".into()]);
        batch.add(ChangeKind::Set, "d".into(), vec!["a".into()]);
        let payloads = batch.into_payloads("me", &mut 7);
        assert_eq!(
            payloads,
            [
                r#"{"o":"me","s":7,"e":[["set","d",["a","b"]],["set","e",["a"]],["remove","d",["a"]],["set","d",["a"]]]}"#
            ]
        );
        let changes = parse(&payloads[0]).expect("ours");
        assert_eq!(changes.len(), 4);
        assert_eq!(changes[2].kind, ChangeKind::Remove);
        assert_eq!(changes[2].origin, "me");
    }

    #[test]
    fn splits_below_the_limit_and_keeps_every_key_in_order() {
        let long_doc = "é\"".repeat(80);
        let mut batch = Batch::default();
        batch.add(ChangeKind::Expire, long_doc.clone(), ids(0..1500));
        batch.add(ChangeKind::Leave, "x".into(), ids(0..3));
        let mut sequence = 0;
        let payloads = batch.into_payloads(&"o".repeat(256), &mut sequence);
        assert!(payloads.len() > 1);
        assert_eq!(sequence, payloads.len() as u64);
        let mut seen = Vec::new();
        for p in &payloads {
            assert!(p.len() <= MAX_PAYLOAD_BYTES, "{} bytes", p.len());
            for change in parse(p).expect("ours") {
                seen.extend(change.client_ids.into_iter().map(|c| (change.kind, c)));
            }
        }
        let expected: Vec<_> = ids(0..1500)
            .into_iter()
            .map(|c| (ChangeKind::Expire, c))
            .chain(ids(0..3).into_iter().map(|c| (ChangeKind::Leave, c)))
            .collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn foreign_payloads_are_not_ours() {
        assert!(parse("hello").is_none());
        assert!(parse(r#"{"o":"x","e":[["bogus","d",[]]]}"#).is_none());
    }
}
