//! The rehearsal against a real PostgreSQL.

use baton_dev_db::DevDb;
use baton_rehearsal::rehearsal::{RehearsalOptions, rehearse};
use baton_types::NexusRecordState;
use baton_types::story::HandoffStory;

use baton_test_utils::log;

#[tokio::test]
async fn the_rehearsal_ends_with_the_new_generation_active() {
    let db = DevDb::builder()
        .template_cache(env!("CARGO_TARGET_TMPDIR"))
        .start(&log())
        .unwrap();
    let story = HandoffStory::new(1);
    let mut stages = Vec::new();
    let report = rehearse(
        &log(),
        &db.url(),
        &story,
        &RehearsalOptions::default(),
        |s| stages.push(s.name),
    )
    .await
    .unwrap();
    assert!(report.quiesced_before_active);
    let ids: Vec<_> = report.records.iter().map(|r| r.nexus_id).collect();
    assert_eq!(ids, story.new_nexus);
    assert!(
        report
            .records
            .iter()
            .all(|r| r.state == NexusRecordState::Active)
    );
    assert_eq!(
        stages,
        [
            "rack setup",
            "old generation running",
            "new generation deployed",
            "generation bumped",
            "old generation quiesced",
            "handoff",
            "old zones expunged",
        ]
    );
    // The throwaway server keeps commit times: the handoff is timed.
    let timeline = report.window.expect("the handoff is timed");
    assert!(report.last_old_write < report.first_new_write);
    assert!(timeline.window() > 0.0, "{timeline:?}");
}
