//! Blueprint execution against a real PostgreSQL.

use baton_datastore::DataStore;
use baton_dev_db::DevDb;
use baton_executor::{
    STEP_CLEANUP_RECORDS, STEP_ENSURE_RECORDS, StepOutcome, realize_blueprint,
};
use baton_types::{
    Blueprint, BlueprintBuilder, Generation, NexusRecordState, NexusZone,
    SledConfig, SledState, ZoneConfig, ZoneDisposition, ZoneType,
};
use baton_uuid_kinds::{BlueprintUuid, OmicronZoneUuid, SledUuid};

use baton_test_utils::log;

async fn database() -> (DevDb, DataStore) {
    baton_test_utils::db::database(env!("CARGO_TARGET_TMPDIR"), true).await
}

fn zone(n: u128) -> OmicronZoneUuid {
    OmicronZoneUuid::from_u128(n)
}

/// Blueprint `n`: old Nexus 1..=3 at generation 1 (expunged and ready for
/// cleanup if `old_expunged`), new 11..=13 at generation 2.
fn blueprint(
    n: u128,
    parent: Option<u128>,
    top: u64,
    old_expunged: bool,
) -> Blueprint {
    let nexus = |id: u128, generation: u64, in_service: bool| ZoneConfig {
        id: zone(id),
        disposition: if in_service {
            ZoneDisposition::InService
        } else {
            ZoneDisposition::Expunged {
                as_of_generation: 3,
                ready_for_cleanup: true,
            }
        },
        zone_type: ZoneType::Nexus(NexusZone {
            nexus_generation: Generation::new(generation).unwrap(),
        }),
    };
    let mut zones: Vec<ZoneConfig> =
        (1..=3).map(|i| nexus(i, 1, !old_expunged)).collect();
    zones.extend((11..=13).map(|i| nexus(i, 2, true)));
    BlueprintBuilder::new(
        BlueprintUuid::from_u128(n),
        Generation::new(top).unwrap(),
    )
    .parent(parent.map(BlueprintUuid::from_u128))
    .sled(
        SledUuid::from_u128(1),
        SledConfig {
            state: SledState::Active,
            zones,
        },
    )
    .build()
}

async fn target(ds: &DataStore, bp: &Blueprint) {
    ds.blueprint_insert(bp).await.unwrap();
    ds.target_set(bp.id(), true).await.unwrap();
}

#[tokio::test]
async fn records_step_is_skipped_without_a_nexus_identity() {
    let (_db, ds) = database().await;
    let bp = blueprint(1, None, 1, false);
    target(&ds, &bp).await;
    let report = realize_blueprint(&log(), &ds, &bp, None).await;
    let step = report.step(STEP_ENSURE_RECORDS).unwrap();
    assert_eq!(step.outcome, StepOutcome::Skipped);
    assert_eq!(step.message.as_deref(), Some("not running as Nexus"));
    assert!(report.is_clean());
    assert!(
        ds.records_list().await.unwrap().is_empty(),
        "nothing written"
    );
}

#[tokio::test]
async fn executing_the_target_writes_active_and_not_yet() {
    let (_db, ds) = database().await;
    let bp = blueprint(1, None, 1, false);
    target(&ds, &bp).await;
    let report = realize_blueprint(&log(), &ds, &bp, Some(zone(2))).await;
    assert!(report.is_clean(), "{report:?}");
    let names: Vec<_> = report.steps.iter().map(|s| s.name).collect();
    assert_eq!(names, [STEP_ENSURE_RECORDS, STEP_CLEANUP_RECORDS]);
    let records = ds.records_list().await.unwrap();
    let active = records
        .iter()
        .filter(|r| r.state == NexusRecordState::Active)
        .count();
    let not_yet = records
        .iter()
        .filter(|r| r.state == NexusRecordState::NotYet)
        .count();
    assert_eq!((active, not_yet), (3, 3));
}

#[tokio::test]
async fn a_stale_blueprint_warns_writes_nothing_and_later_steps_still_run() {
    let (_db, ds) = database().await;
    let old = blueprint(1, None, 1, false);
    let new = blueprint(2, Some(1), 1, false);
    target(&ds, &old).await;
    target(&ds, &new).await;
    let report = realize_blueprint(&log(), &ds, &old, Some(zone(1))).await;
    let records = report.step(STEP_ENSURE_RECORDS).unwrap();
    assert_eq!(records.outcome, StepOutcome::Warning);
    let message = records.message.clone().unwrap();
    assert!(message.contains(&old.id().to_string()), "{message}");
    assert!(message.contains(&new.id().to_string()), "{message}");
    assert!(
        report.step(STEP_CLEANUP_RECORDS).is_some(),
        "cleanup still ran"
    );
    assert!(!report.is_clean());
    assert!(ds.records_list().await.unwrap().is_empty());
}

#[tokio::test]
async fn executing_as_a_nexus_not_in_the_blueprint_is_a_warning() {
    let (_db, ds) = database().await;
    let bp = blueprint(1, None, 1, false);
    target(&ds, &bp).await;
    let report = realize_blueprint(&log(), &ds, &bp, Some(zone(99))).await;
    let step = report.step(STEP_ENSURE_RECORDS).unwrap();
    assert_eq!(step.outcome, StepOutcome::Warning);
    assert!(
        step.message
            .as_deref()
            .unwrap()
            .contains("no in-service zone")
    );
}

#[tokio::test]
async fn cleanup_deletes_the_records_of_expunged_zones() {
    let (_db, ds) = database().await;
    let before = blueprint(1, None, 2, false);
    target(&ds, &before).await;
    realize_blueprint(&log(), &ds, &before, Some(zone(1))).await;
    assert_eq!(ds.records_list().await.unwrap().len(), 6);
    // The old generation steps down and the new one takes over: only a
    // Nexus in control runs the cleanup.
    for old in [1, 2, 3] {
        ds.record_mark_quiesced(zone(old)).await.unwrap();
    }
    ds.attempt_handoff(zone(11)).await.unwrap();
    let after = blueprint(2, Some(1), 2, true);
    target(&ds, &after).await;
    let report = realize_blueprint(&log(), &ds, &after, Some(zone(11))).await;
    assert!(report.is_clean(), "{report:?}");
    let left: Vec<_> = ds
        .records_list()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.nexus_id)
        .collect();
    assert_eq!(left, [11, 12, 13].map(zone));
}

/// Only a Nexus in control writes: a new-generation Nexus (its record
/// `not_yet`) or one with no record at all writes nothing, even from the
/// current target, and the report says why. (Issue: `baton execute
/// --nexus-id` of a generation-2 Nexus once wrote generation 2 `active`
/// beside generation 1.)
#[tokio::test]
async fn a_nexus_not_in_control_writes_no_record_and_cleans_up_nothing() {
    let (_db, ds) = database().await;
    let bp = blueprint(1, None, 2, false);
    target(&ds, &bp).await;
    realize_blueprint(&log(), &ds, &bp, Some(zone(1))).await;
    let before = ds.records_list().await.unwrap();
    assert_eq!(before.len(), 6);

    // The next blueprint lists the new zones as generation 1's successors
    // and expunges the old ones, but a not_yet Nexus executes it.
    let after = blueprint(2, Some(1), 2, true);
    target(&ds, &after).await;
    let report = realize_blueprint(&log(), &ds, &after, Some(zone(11))).await;
    assert!(!report.is_clean(), "{report:?}");
    let text = format!("{report:?}");
    assert!(text.contains("not in control"), "{text}");
    assert_eq!(ds.records_list().await.unwrap(), before, "nothing changed");

    // And a Nexus with no record at all, while records exist.
    let report = realize_blueprint(&log(), &ds, &after, Some(zone(99))).await;
    assert!(!report.is_clean(), "{report:?}");
    assert_eq!(ds.records_list().await.unwrap(), before, "nothing changed");
}
