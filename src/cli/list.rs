//! `list`: a document's entries as a table or as JSON lines.

use std::process::ExitCode;

use serde::Serialize;
use synckit_awareness::InspectedEntry;

use super::connect::Target;
use super::failure::Failure;
use super::format::{age, table, terminal_width};

/// One JSON line: the stored entry, its flags, and its age by the database's clock.
#[derive(Serialize)]
struct JsonEntry<'a> {
    #[serde(flatten)]
    inspected: &'a InspectedEntry,
    tombstone: bool,
    age_ms: u64,
}

pub(crate) async fn run(
    target: &Target,
    document: &str,
    all: bool,
    json: bool,
) -> Result<ExitCode, Failure> {
    let store = target.store().await?;
    let entries = store.inspect_document(document, all).await?;
    if json {
        for inspected in &entries {
            let line = JsonEntry {
                inspected,
                tombstone: inspected.entry.is_tombstone(),
                age_ms: u64::try_from(inspected.age.as_millis()).unwrap_or(u64::MAX),
            };
            let text = serde_json::to_string(&line)
                .map_err(|e| Failure::problem(format!("cannot encode an entry: {e}")))?;
            println!("{text}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        let what = if all { "entries" } else { "live entries" };
        println!("no {what} in document {document:?}");
        if !all {
            println!("(--all also shows tombstones and expired entries)");
        }
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", render(&entries, all, terminal_width()));
    Ok(ExitCode::SUCCESS)
}

fn render(entries: &[InspectedEntry], all: bool, width: Option<usize>) -> String {
    let mut header = vec!["CLIENT", "CONNECTION", "CLOCK", "LAST SEEN"];
    if all {
        header.push("STATUS");
    }
    header.push("STATE");
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|inspected| {
            let entry = &inspected.entry;
            let mut row = vec![
                entry.client_id.clone(),
                entry.connection_id.clone(),
                entry.clock.to_string(),
                age(inspected.age),
            ];
            if all {
                row.push(status(inspected).to_owned());
            }
            row.push(
                entry
                    .state
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), ToString::to_string),
            );
            row
        })
        .collect();
    table(&header, &rows, width)
}

/// One category per entry, the same three `stats` counts: an expired entry is `expired`
/// whatever its state (every read already treats it as absent); a tombstone's STATE shows `-`.
fn status(inspected: &InspectedEntry) -> &'static str {
    match (inspected.expired, inspected.entry.is_tombstone()) {
        (true, _) => "expired",
        (false, true) => "tombstone",
        (false, false) => "live",
    }
}
