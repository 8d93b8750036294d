//! The handoff window as the service's users feel it: from the last
//! write of generation 1 to the first write of generation 2.
//!
//! Each handoff runs real `baton-ledger` processes (three of generation
//! 1 on ledger schema 1, three of generation 2 on schema 2) on a fresh
//! throwaway server, at the ledger's and Baton's production defaults
//! from the bump on. The set-up before the bump is shortened: the
//! harness writes generation 2's `not_yet` records itself instead of
//! waiting up to a minute for an old instance's execution period.
//!
//! Every time comes from the server's commit timestamps
//! (`track_commit_timestamp=on`): of the ledger's append-only rows, and
//! of the handoff's announced changes (each announcement carries its
//! transaction id, whose commit time the server keeps even after the
//! row changes again). The harness listens for the announcements in
//! both modes; in polling mode the instances themselves do not
//! (`baton-ledger --poll-only`), so every wait of theirs ends only at
//! its period.
//!
//! `cargo bench -p baton-ledger --bench window` runs the full set (ten
//! handoffs each way; the polling ones five at a time, each on its own
//! server, since they mostly wait); with `--quick`, and when run as a
//! test (`cargo test --bench window`, the CI smoke run), two with
//! wake-ups and one polling. The results go to stdout and to
//! `target/tmp/baton-bench-window.json` for `cargo xtask bench`.

#[path = "../tests/rig.rs"]
mod rig;

use std::process::Command;
use std::time::Duration;

use baton_datastore::DataStore;
use baton_datastore::diesel;
use baton_datastore::diesel::QueryableByName;
use baton_datastore::diesel::sql_types::{
    Array, BigInt, Nullable, Timestamptz, Uuid,
};
use baton_datastore::sql::{Bind, load_one, statement};
use baton_rehearsal::timeline::{
    HandoffTimeline, HandoffWatch, PARTS, TimelineEvent,
};
use baton_types::RecordsToEnsure;
use baton_types::story::HandoffStory;
use baton_uuid_kinds::{GenericUuid, OmicronZoneUuid};
use chrono::{DateTime, Utc};
use serde_json::json;

use rig::{Ledger, rack_at_generation_1, runtime};

/// How long any one wait may take: polling at production periods takes
/// minutes at worst (a 60 s execution period, retries up to 3 min).
const PATIENCE: Duration = Duration::from_secs(600);

/// The ledger's defaults (see its `--help`), printed with the results.
const WRITE_PERIOD_MS: u64 = 100;
const JOB_MS: u64 = 1000;

#[derive(QueryableByName)]
struct At {
    #[diesel(sql_type = Nullable<Timestamptz>)]
    at: Option<DateTime<Utc>>,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// The commit time of the ledger rows of `ids`: the last (`max`) or the
/// first (`min`).
async fn write_commit(
    ds: &DataStore,
    ids: &[OmicronZoneUuid],
    last: bool,
) -> Option<DateTime<Utc>> {
    let ids: Vec<uuid::Uuid> =
        ids.iter().map(|id| id.into_untyped_uuid()).collect();
    let sql = if last {
        "SELECT max(pg_xact_commit_timestamp(xmin)) AS at FROM ledger_entry \
         WHERE nexus_id = ANY ($1)"
    } else {
        "SELECT min(pg_xact_commit_timestamp(xmin)) AS at FROM ledger_entry \
         WHERE nexus_id = ANY ($1)"
    };
    let row: At = ds
        .run("ledger write commit", |conn| {
            Box::pin(load_one(
                statement(sql).bind::<Array<Uuid>, _>(ids.clone()),
                conn,
            ))
        })
        .await
        .expect("the ledger's rows");
    row.at
}

async fn jobs_ended(ds: &DataStore) -> i64 {
    let row: Count = ds
        .run("jobs ended", |conn| {
            Box::pin(load_one(
                statement(
                    "SELECT count(*) AS n FROM ledger_entry \
                     WHERE kind = 'job_end'",
                ),
                conn,
            ))
        })
        .await
        .expect("the ledger's rows");
    row.n
}

fn spawn(
    url: &str,
    id: OmicronZoneUuid,
    schema: i64,
    poll_only: bool,
) -> Ledger {
    let mut command = Command::new(env!("CARGO_BIN_EXE_baton-ledger"));
    command
        .args(["--database-url", url, "--nexus-id", &id.to_string()])
        .args(["--schema-version", &schema.to_string()]);
    if poll_only {
        command.arg("--poll-only");
    }
    Ledger::start(command, id, PATIENCE)
}

/// One whole handoff; its timeline.
fn one_handoff(seed: u64, poll_only: bool) -> HandoffTimeline {
    let rt = runtime();
    let story = HandoffStory::new(seed);
    let (db, url, ds) = rack_at_generation_1(&rt, &story);
    let old_ids = story.old_nexus.clone();
    let new_ids = story.new_nexus.clone();
    let mut old: Vec<Ledger> = old_ids
        .iter()
        .map(|id| spawn(&url, *id, 1, poll_only))
        .collect();
    for ledger in &mut old {
        ledger.wait_state("running");
    }
    // Generation 2 deployed; its records written here rather than at an
    // old instance's next execution (up to a minute away when polling).
    rt.block_on(async {
        let bp = story.new_generation_deployed.id();
        rig::import(&ds, &story.new_generation_deployed).await;
        let records = RecordsToEnsure {
            active: old_ids.iter().copied().collect(),
            not_yet: new_ids.iter().copied().collect(),
        };
        ds.records_ensure(bp, old_ids[0], &records)
            .await
            .expect("the not_yet records");
    });
    let mut new: Vec<Ledger> = new_ids
        .iter()
        .map(|id| spawn(&url, *id, 2, poll_only))
        .collect();
    for ledger in &mut new {
        ledger.wait_state("waiting_for_handoff");
    }
    let watch = rt.block_on(async {
        // Generation 1 at work, its jobs coming and going.
        rig::until("generation 1 to finish some jobs", PATIENCE, || async {
            jobs_ended(&ds).await >= 3
        })
        .await;
        let mut watch = HandoffWatch::start(&ds).await.expect("a listener");
        ds.blueprint_insert(&story.handoff_started)
            .await
            .expect("stored");
        ds.target_set(story.handoff_started.id(), true)
            .await
            .expect("the bump");
        watch
            .until_handed_off(&old_ids, true, PATIENCE)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        watch
    });
    for ledger in old {
        let id = ledger.id;
        let (status, last) = ledger.wait_exit();
        assert!(status.success(), "old ledger {id} exited {status}: {last}");
        assert_eq!(last["state"], "quiesced", "old ledger {id}: {last}");
    }
    for ledger in &mut new {
        ledger.wait_state("running");
    }
    let timeline = rt.block_on(async {
        rig::until("generation 2 to write", PATIENCE, || async {
            write_commit(&ds, &new_ids, false).await.is_some()
        })
        .await;
        let last_old = write_commit(&ds, &old_ids, true).await.expect("rows");
        let first_new = write_commit(&ds, &new_ids, false).await.expect("rows");
        watch
            .timeline(last_old, first_new)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    });
    for ledger in &new {
        ledger.signal("-TERM");
    }
    for ledger in new {
        let (status, last) = ledger.wait_exit();
        assert!(status.success(), "new ledger exited {status}: {last}");
    }
    drop(db);
    timeline
}

/// `count` handoffs, `lanes` at a time, seeds from `first`.
fn handoffs(
    count: u64,
    lanes: u64,
    poll_only: bool,
    first: u64,
) -> Vec<HandoffTimeline> {
    let mode = if poll_only { "polling" } else { "wake-ups" };
    let mut all = Vec::new();
    let mut next = 0;
    while next < count {
        let batch: Vec<u64> = (next..count.min(next + lanes)).collect();
        next += batch.len() as u64;
        let threads: Vec<_> = batch
            .into_iter()
            .map(|i| {
                std::thread::spawn(move || {
                    (i, one_handoff(first + i, poll_only))
                })
            })
            .collect();
        for thread in threads {
            let (i, timeline) = thread.join().expect("a handoff ran");
            eprintln!(
                "{mode} handoff {}/{count}: window {:.1} ms, protocol {:.1} ms",
                i + 1,
                timeline.window(),
                timeline.protocol()
            );
            all.push(timeline);
        }
    }
    all
}

/// Median and worst (largest).
fn stats(mut values: Vec<f64>) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    (median, values[n - 1])
}

fn show(ms: f64) -> String {
    if ms.abs() >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{ms:.1} ms")
    }
}

/// The rows of the table: a name, and a figure of one timeline.
type Row = (String, Box<dyn Fn(&HandoffTimeline) -> f64>);

fn rows() -> Vec<Row> {
    let mut rows: Vec<Row> = PARTS
        .iter()
        .map(|&(name, start, end)| {
            let row: Row = (
                format!("{name} ({start} -> {end})"),
                Box::new(move |t: &HandoffTimeline| t.between(start, end)),
            );
            row
        })
        .collect();
    rows.push((
        "window starts (bump -> last generation-1 write)".to_owned(),
        Box::new(|t: &HandoffTimeline| t.at(TimelineEvent::LastOldWrite)),
    ));
    rows.push((
        "WINDOW (last generation-1 write -> first generation-2 write)"
            .to_owned(),
        Box::new(HandoffTimeline::window),
    ));
    rows.push((
        "window minus drain and migration".to_owned(),
        Box::new(HandoffTimeline::protocol),
    ));
    rows
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench")
        && !args.iter().any(|a| a == "--quick");
    let (wakeups, polling, lanes) = if full { (10, 10, 5) } else { (2, 1, 1) };
    let started = std::time::Instant::now();
    let woken = handoffs(wakeups, 1, false, 100);
    let polled = handoffs(polling, lanes, true, 200);
    let mut table = format!(
        "Handoff window: baton-ledger processes, 3 old and 3 new, at \
         production settings (ledger write period {WRITE_PERIOD_MS} ms, \
         jobs {JOB_MS} ms; execution every 60 s, drain re-check 5 s, \
         retries 250 ms to 3 min); server commit times, from the bump\n\
         {:<74} {:>19}   {:>19}\n{:<74} {:>9} {:>9}   {:>9} {:>9}\n",
        "",
        format!("wake-ups (n={wakeups})"),
        format!("polling (n={polling})"),
        "part (start event -> end event)",
        "median",
        "worst",
        "median",
        "worst",
    );
    let mut json_rows = Vec::new();
    for (name, figure) in rows() {
        let (wm, ww) = stats(woken.iter().map(&figure).collect());
        let (pm, pw) = stats(polled.iter().map(&figure).collect());
        table.push_str(&format!(
            "{name:<74} {:>9} {:>9}   {:>9} {:>9}\n",
            show(wm),
            show(ww),
            show(pm),
            show(pw)
        ));
        json_rows.push(json!({
            "row": name,
            "wakeups_median_ms": wm, "wakeups_worst_ms": ww,
            "polling_median_ms": pm, "polling_worst_ms": pw,
        }));
    }
    print!("{table}");
    println!("({:.0} s)", started.elapsed().as_secs_f64());
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("baton-bench-window.json");
    let text = serde_json::to_string_pretty(&json!({
        "full": full,
        "wakeups": wakeups,
        "polling": polling,
        "polling_lanes": lanes,
        "write_period_ms": WRITE_PERIOD_MS,
        "job_ms": JOB_MS,
        "rows": json_rows,
        "table": table,
    }))
    .expect("JSON");
    std::fs::write(&path, text).expect("the results are written");
}
