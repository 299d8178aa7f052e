//! `stats`: entry counts and table health.

use std::process::ExitCode;

use serde::Serialize;
use synckit_awareness::{DocumentActivity, StoreStats};

use super::connect::Target;
use super::failure::Failure;
use super::format::bytes;

/// How many of the busiest documents to show.
const BUSIEST: u32 = 5;

#[derive(Serialize)]
struct JsonStats<'a> {
    #[serde(flatten)]
    stats: &'a StoreStats,
    hot_update_ratio: Option<f64>,
    timeout_ms: u64,
    busiest_documents: &'a [DocumentActivity],
}

pub(crate) async fn run(target: &Target, json: bool) -> Result<ExitCode, Failure> {
    let store = target.store().await?;
    let stats = store.inspect_stats().await?;
    let busiest = store.inspect_busiest_documents(BUSIEST).await?;
    if json {
        let out = JsonStats {
            stats: &stats,
            hot_update_ratio: stats.hot_update_ratio(),
            timeout_ms: u64::try_from(target.timeout().as_millis()).unwrap_or(u64::MAX),
            busiest_documents: &busiest,
        };
        let text = serde_json::to_string(&out)
            .map_err(|e| Failure::problem(format!("cannot encode the statistics: {e}")))?;
        println!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", render(&stats, &busiest, target.timeout()));
    Ok(ExitCode::SUCCESS)
}

fn render(
    stats: &StoreStats,
    busiest: &[DocumentActivity],
    timeout: std::time::Duration,
) -> String {
    let mut out = String::new();
    let mut line = |label: &str, value: String| out.push_str(&format!("{label:<16} {value}\n"));
    line(
        "entries",
        format!(
            "{} (live {}, tombstones {}, expired {}; timeout {}; each entry counts once, \
             an expired one as expired whatever its state)",
            stats.total,
            stats.live,
            stats.tombstones,
            stats.expired,
            humantime::format_duration(timeout)
        ),
    );
    line(
        "documents",
        format!(
            "{} ({} with live entries)",
            stats.documents, stats.active_documents
        ),
    );
    if busiest.is_empty() {
        line("busiest", "-".into());
    }
    for (i, doc) in busiest.iter().enumerate() {
        line(
            if i == 0 { "busiest" } else { "" },
            format!(
                "{}: {} live, {} stored",
                doc.document_id, doc.live, doc.total
            ),
        );
    }
    line(
        "table size",
        format!(
            "{} (indexes {})",
            bytes(stats.table_bytes),
            bytes(stats.index_bytes)
        ),
    );
    line(
        "HOT updates",
        match stats.hot_update_ratio() {
            Some(ratio) => format!(
                "{:.1} % of {} updates",
                ratio * 100.0,
                stats.updates.unwrap_or(0)
            ),
            None => "- (no updates counted yet)".into(),
        },
    );
    line(
        "dead tuples",
        stats
            .dead_tuples
            .map_or_else(|| "-".into(), |n| n.to_string()),
    );
    line(
        "last autovacuum",
        stats.last_autovacuum.map_or_else(
            || "never".into(),
            |at| at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        ),
    );
    out
}
