//! The Nexus lifecycle against a real PostgreSQL.

use std::time::Duration;

use baton_datastore::DataStore;
use baton_dev_db::DevDb;
use baton_nexus::rehearsal::{RehearsalOptions, rehearse};
use baton_nexus::{Nexus, NexusConfig, NexusState};
use baton_types::NexusRecordState;
use baton_types::story::HandoffStory;
use baton_uuid_kinds::OmicronZoneUuid;
use slog::{Logger, o};

fn log() -> Logger {
    use slog::Drain;
    if std::env::var("BATON_TEST_LOG").is_ok() {
        let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
        let drain = slog_term::FullFormat::new(decorator).build().fuse();
        return Logger::root(drain, o!());
    }
    Logger::root(slog::Discard, o!())
}

async fn database() -> (DevDb, DataStore) {
    let db = DevDb::builder()
        .template_cache(env!("CARGO_TARGET_TMPDIR"))
        .start(&log())
        .unwrap();
    let ds = DataStore::new(&log(), &db.url());
    (db, ds)
}

fn config(n: u128) -> NexusConfig {
    NexusConfig::new(OmicronZoneUuid::from_u128(n)).faster(20)
}

/// Bounded only so that a bug fails the test instead of hanging it.
async fn until(nexus: &Nexus, want: NexusState) -> NexusState {
    tokio::time::timeout(
        Duration::from_secs(30),
        nexus.wait_for(|s| *s == want),
    )
    .await
    .expect("the state is reached in time")
}

#[tokio::test]
async fn a_fresh_database_is_migrated_then_used() {
    let (db, ds) = database().await;
    let nexus = Nexus::start(&log(), &db.url(), config(1));
    assert_eq!(
        until(&nexus, NexusState::Running).await,
        NexusState::Running
    );
    assert_eq!(
        ds.schema_version().await.unwrap(),
        baton_datastore::SCHEMA_VERSION
    );
    assert_eq!(nexus.stop().await, NexusState::Stopped);
}

#[tokio::test]
async fn a_quiesced_nexus_is_refused() {
    let (db, ds) = database().await;
    ds.migrate().await.unwrap();
    let id = OmicronZoneUuid::from_u128(1);
    ds.records_initialize(&[id].into()).await.unwrap();
    ds.record_mark_quiesced(id).await.unwrap();
    let nexus = Nexus::start(&log(), &db.url(), config(1));
    let state = until(&nexus, NexusState::Running).await;
    assert!(
        matches!(&state, NexusState::Refused(why) if why.contains("quiesced")),
        "{state:?}"
    );
}

#[tokio::test]
async fn a_nexus_without_a_record_waits_instead_of_crashing() {
    let (db, ds) = database().await;
    ds.migrate().await.unwrap();
    let other = OmicronZoneUuid::from_u128(1);
    ds.records_initialize(&[other].into()).await.unwrap();
    let nexus = Nexus::start(&log(), &db.url(), config(2));
    until(&nexus, NexusState::WaitingForRecord).await;
    // The reference system would exit here; this one keeps checking, so
    // once the situation changes (here: the table becomes empty, a fresh
    // system) it proceeds.
    ds.records_delete(&[other].into()).await.unwrap();
    assert_eq!(
        until(&nexus, NexusState::Running).await,
        NexusState::Running
    );
    assert_eq!(nexus.stop().await, NexusState::Stopped);
}

#[tokio::test]
async fn the_rehearsal_ends_with_the_new_generation_active() {
    let (db, _ds) = database().await;
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
    assert_eq!(stages.len(), 7, "{stages:?}");
}
