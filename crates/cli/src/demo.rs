//! `baton demo`: a whole handoff rehearsed on a throwaway PostgreSQL.

use std::time::Instant;

use baton_dev_db::DevDb;
use baton_rehearsal::rehearsal::{RehearsalOptions, rehearse};
use baton_rehearsal::timeline::{HandoffTimeline, PARTS};
use baton_types::NexusRecordState;
use baton_types::story::HandoffStory;

use crate::context::Context;
use crate::failure::Failure;
use crate::output;

/// The seed of the demo's ids (RFD 588), so every run shows the same ids.
const DEMO_SEED: u64 = 588;

pub(crate) fn run(ctx: &Context) -> Result<(), Failure> {
    let started = Instant::now();
    let log = &ctx.log;
    // Kept until the end: dropping it stops the server and removes it.
    let mut server = None;
    let url = match ctx.database_url.clone() {
        Some(url) => {
            baton_datastore::check_url(&url)?;
            refuse_unless_empty(ctx, &url)?;
            url
        }
        None => {
            output::line("starting a throwaway PostgreSQL ...");
            let db = DevDb::start(log)
                .map_err(|e| Failure::failed(format!("{e}.")))?;
            output::line(&format!("  ready in {}", db.dir()));
            let url = db.url();
            server = Some(db);
            url
        }
    };
    let options = RehearsalOptions::default();
    let story = HandoffStory::new(DEMO_SEED);
    let mut stage_number = 0;
    let report = ctx.block_on(async {
        rehearse(log, &url, &story, &options, |stage| {
            stage_number += 1;
            output::line(&format!(
                "\n== {stage_number}. {}: {}",
                stage.name, stage.summary
            ));
            // The last blueprint lists every zone, so every generation.
            let all = &story.old_expunged;
            output::line(&output::records_table(&stage.records, Some(all)));
        })
        .await
        .map_err(|e| Failure::failed(format!("the rehearsal failed: {e}.")))
    })?;
    let all_new_active = report
        .records
        .iter()
        .map(|r| (r.nexus_id, r.state))
        .eq(story
            .new_nexus
            .iter()
            .map(|id| (*id, NexusRecordState::Active)));
    output::line(&format!(
        "\nhandoff: the first new Nexus was ready {} ms after the last old \
         one quiesced, as this process saw the two (it covers the \
         \"handoff\" and \"schema migration\" parts below, which are timed \
         by the server's commit times); the old generation quiesced before \
         the new one became active: {}",
        report.handoff_time.as_millis(),
        if report.quiesced_before_active {
            "yes"
        } else {
            "NO"
        }
    ));
    output::line(&format!(
        "service: {} rows written through Baton's fenced pools; last \
         generation-1 write at {}, first generation-2 write at {}",
        report.writes,
        report.last_old_write.format("%H:%M:%S%.3f"),
        report.first_new_write.format("%H:%M:%S%.3f"),
    ));
    match &report.window {
        Ok(timeline) => output::line(&window(timeline)),
        Err(why) => {
            let gap = report.first_new_write - report.last_old_write;
            output::line(&format!(
                "window: the service could not write for {} ms; its parts \
                 cannot be told: {why}",
                gap.num_milliseconds()
            ));
        }
    }
    drop(server);
    output::line(&format!(
        "demo done in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let ordered = report.last_old_write < report.first_new_write;
    if all_new_active && report.quiesced_before_active && ordered {
        Ok(())
    } else {
        Err(Failure::failed(
            "the rehearsal ended without every remaining record active at \
             generation 2.",
        ))
    }
}

/// The handoff window and its parts, as the demo prints them.
fn window(timeline: &HandoffTimeline) -> String {
    let mut out = format!(
        "window: the service could not write for {:.1} ms, from its last \
         generation-1 write to its first generation-2 write (the server's \
         commit times);\n  {:.1} ms of it was the protocol's own (the rest: \
         work in flight draining, and the migration). The handoff from the \
         bump:",
        timeline.window(),
        timeline.protocol()
    );
    for (name, start, end) in PARTS {
        out.push_str(&format!(
            "\n  {:<72} {:>8.1} ms",
            format!("{name} ({start} -> {end})"),
            timeline.between(start, end)
        ));
    }
    out
}

/// `--database-url` must name an empty database (Baton's tables may be
/// there, migrated, but hold no record and no blueprint): the rehearsal
/// sets up a rack from scratch and leaves its state behind, so a second
/// run (or a database in use) would fail halfway.
fn refuse_unless_empty(ctx: &Context, url: &str) -> Result<(), Failure> {
    let held = ctx.block_on(async {
        let ds = baton_datastore::DataStore::new(&ctx.log, url);
        if ds.schema_version().await? == 0 {
            return Ok((0, 0));
        }
        let records = ds.records_list().await?.len();
        let blueprints = ds.blueprint_list().await?.len();
        Ok((records, blueprints))
    })?;
    if held != (0, 0) {
        return Err(Failure::bad_input(format!(
            "the database at {} already holds {} record(s) and {} \
             blueprint(s): baton demo needs an empty database, so drop \
             and create it again, or run baton demo without \
             --database-url (on a throwaway server of its own).",
            baton_datastore::redact_url(url),
            held.0,
            held.1
        )));
    }
    Ok(())
}
