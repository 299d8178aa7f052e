//! Who is here (issue 26): what `count` and a page of `rooms` cost at a million entries
//! (100,000 rooms of 10 participants), beside a read the store already serves on every join
//! (`get_all` of a 10-participant room: the baseline) and beside the room list an application
//! without paging would write (every room's count in one `GROUP BY document_id`).
//! Its own database; sides interleaved run by run, medians; one task (a request path).

use std::sync::Arc;

use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use synckit_awareness::AwarenessStore;

use crate::pg::{fresh_database, psql};
use crate::stats::{median, run_tasks, Figure};
use crate::{open_store, rand, Config, Report};

const DB: &str = "synckit_bench_who";
const PER_ROOM: i64 = 10;
const PAGE: u32 = 100;

/// The room list without paging: every room's count (`$1`: the timeout).
const GROUP_BY: &str = "SELECT document_id, count(*) AS participants FROM awareness_entries \
     WHERE state IS NOT NULL AND last_seen > now() - $1 \
     GROUP BY document_id ORDER BY document_id";

#[derive(QueryableByName)]
struct Room {
    #[diesel(sql_type = diesel::sql_types::Text)]
    #[allow(dead_code)]
    document_id: String,
}

pub(crate) async fn who(cfg: &Config, report: &mut Report, admin_url: &str) {
    let entries: i64 = if cfg.quick { 100_000 } else { 1_000_000 };
    let rooms = entries / PER_ROOM;
    let url = fresh_database(admin_url, DB).await;
    psql(
        &url,
        &format!(
            "INSERT INTO awareness_entries (document_id, client_id, connection_id, state, clock_value) \
             SELECT lpad((k / {PER_ROOM})::text, 7, '0'), k::text, k::text, '{}'::jsonb, 1 \
             FROM generate_series(0, {}) k",
            crate::STATE,
            entries - 1
        ),
    );
    psql(&url, "VACUUM ANALYZE awareness_entries");
    let store = Arc::new(open_store(&url, 4, true).await);
    let calls = cfg.count(20_000, 1);
    let scans = (calls / 200).max(3);
    let room = move |t: usize, i: usize| format!("{:07}", rand(t, i) % rooms as u64);
    let (mut count, mut get_all, mut page, mut group_by) = (vec![], vec![], vec![], vec![]);
    for _ in 0..cfg.runs {
        let st = store.clone();
        count.push(
            run_tasks(1, calls, move |t, i| {
                let st = st.clone();
                async move {
                    let n = st.count(&room(t, i)).await.expect("count");
                    assert_eq!(n, PER_ROOM as u64);
                    1
                }
            })
            .await,
        );
        let st = store.clone();
        get_all.push(
            run_tasks(1, calls, move |t, i| {
                let st = st.clone();
                async move {
                    let got = st.get_all(&room(t, i)).await.expect("get_all");
                    assert_eq!(got.len(), PER_ROOM as usize);
                    got.len() as u64
                }
            })
            .await,
        );
        let st = store.clone();
        page.push(
            run_tasks(1, calls / 10, move |t, i| {
                let st = st.clone();
                async move {
                    let got = st.rooms(Some(&room(t, i)), PAGE).await.expect("rooms");
                    assert!(!got.is_empty());
                    got.len() as u64
                }
            })
            .await,
        );
        let st = store.clone();
        group_by.push(
            run_tasks(1, scans, move |_, _| {
                let st = st.clone();
                async move {
                    let mut conn = st.pool().get().await.expect("a connection");
                    let got: Vec<Room> = diesel::sql_query(GROUP_BY)
                        .bind::<diesel::sql_types::Interval, _>(
                            diesel::pg::data_types::PgInterval::from_microseconds(86_400_000_000),
                        )
                        .load(&mut *conn)
                        .await
                        .expect("GROUP BY");
                    assert_eq!(got.len(), rooms as usize);
                    got.len() as u64
                }
            })
            .await,
        );
    }
    let (count, get_all, page, group_by) = (
        median(count),
        median(get_all),
        median(page),
        median(group_by),
    );
    let label = if cfg.quick { "100k" } else { "1M" };
    for (op, system, figure) in [
        ("count", "store", count),
        ("get_all 10", "store", get_all),
        ("rooms page 100", "store", page),
        ("every room's count", "sql", group_by),
    ] {
        report.push(&format!("who: {op} ({label})"), system, 1, figure, true);
    }
    let per = |f: &Figure| 1e3 / f.ops_per_s;
    report.note(&format!(
        "who is here at {entries} entries in {rooms} rooms, one task: count {:.3} ms per call \
         ({:.2}x get_all of a 10-participant room, {:.3} ms); a page of {PAGE} rooms {:.3} ms \
         (every room's count in one GROUP BY: {:.1} ms, {:.0}x a page)",
        per(&count),
        per(&count) / per(&get_all),
        per(&get_all),
        per(&page),
        per(&group_by),
        per(&group_by) / per(&page),
    ));
    drop(store);
    psql(
        admin_url,
        &format!("DROP DATABASE IF EXISTS {DB} WITH (FORCE)"),
    );
}
