//! The records: initialize, the conditional write, reads, updates,
//! deletes, and the guarded cleanup.

use baton_test_utils::db::DataStoreTestExt;
use std::collections::BTreeSet;

use baton_datastore::Error;
use baton_types::RecordsToEnsure;
use baton_types::{NexusRecord, NexusRecordState};

use NexusRecordState::{Active, NotYet, Quiesced};
use baton_uuid_kinds::GenericUuid;

use crate::common::{
    TestDb, blueprint, handoff_zones, mid_handoff, mid_handoff_records, nexus,
    store_and_target, zone,
};

fn ids(ns: &[u128]) -> BTreeSet<baton_uuid_kinds::OmicronZoneUuid> {
    ns.iter().map(|n| zone(*n)).collect()
}

fn wanted(active: &[u128], not_yet: &[u128]) -> RecordsToEnsure {
    RecordsToEnsure {
        active: ids(active),
        not_yet: ids(not_yet),
    }
}

fn states(records: &[NexusRecord]) -> Vec<(u128, NexusRecordState)> {
    records
        .iter()
        .map(|r| (r.nexus_id.as_untyped_uuid().as_u128(), r.state))
        .collect()
}

#[tokio::test]
async fn records_initialize_only_on_an_empty_table() {
    let t = TestDb::new().await;
    t.ds.records_initialize(&ids(&[1, 2, 3])).await.unwrap();
    let all = t.ds.records_list().await.unwrap();
    assert_eq!(states(&all), [(1, Active), (2, Active), (3, Active)]);
    let err = t.ds.records_initialize(&ids(&[4])).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyInitialized(3)), "{err}");
    // A subset, or the same ids once one has moved on, is refused too.
    let err = t.ds.records_initialize(&ids(&[1, 2])).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyInitialized(3)), "{err}");
    assert_eq!(t.ds.records_list().await.unwrap(), all, "nothing written");
    // Exactly these rows, all active: a retry of this very call.
    t.ds.records_initialize(&ids(&[1, 2, 3])).await.unwrap();
    t.ds.record_mark_quiesced(zone(3)).await.unwrap();
    let err = t.ds.records_initialize(&ids(&[1, 2, 3])).await.unwrap_err();
    assert!(matches!(err, Error::AlreadyInitialized(3)), "{err}");
}

#[tokio::test]
async fn records_are_created_with_expunged_zones_skipped() {
    let t = TestDb::new().await;
    // The planner's answer for a blueprint where zone 3 is expunged.
    let mut zones = handoff_zones(true);
    zones[2] = nexus(3, 1, false);
    let bp = blueprint(1, None, 1, zones);
    store_and_target(&t.ds, &bp).await;
    let c = baton_planner_like_classify(&bp, 1);
    assert!(!c.active.contains(&zone(3)));
    let out = t.ds.records_ensure(bp.id(), zone(1), &c).await.unwrap();
    assert_eq!(out.inserted, 5);
    assert_eq!(
        states(&t.ds.records_list().await.unwrap()),
        [
            (1, Active),
            (2, Active),
            (11, NotYet),
            (12, NotYet),
            (13, NotYet)
        ]
    );
}

/// What the planner would answer (active: the executing Nexus's
/// generation; not_yet: newer), spelled out so this crate's tests do not
/// depend on the planner.
fn baton_planner_like_classify(
    bp: &baton_types::Blueprint,
    me: u128,
) -> RecordsToEnsure {
    let mine = bp
        .in_service_nexus_zones()
        .find(|z| z.zone_id == zone(me))
        .unwrap()
        .nexus_generation;
    let mut out = RecordsToEnsure::default();
    for z in bp.in_service_nexus_zones() {
        if z.nexus_generation == mine {
            out.active.insert(z.zone_id);
        } else if z.nexus_generation > mine {
            out.not_yet.insert(z.zone_id);
        }
    }
    out
}

#[tokio::test]
async fn during_a_quiesce_old_zones_still_get_active_and_new_not_yet() {
    let t = TestDb::new().await;
    // Top-level generation 2: the handoff has started, but the executing
    // old Nexus classifies by its own zone's generation.
    let bp = blueprint(1, None, 2, handoff_zones(true));
    store_and_target(&t.ds, &bp).await;
    t.ds.records_ensure(bp.id(), zone(1), &mid_handoff_records())
        .await
        .unwrap();
    assert_eq!(
        states(&t.ds.records_list().await.unwrap()),
        [
            (1, Active),
            (2, Active),
            (3, Active),
            (11, NotYet),
            (12, NotYet),
            (13, NotYet)
        ]
    );
}

#[tokio::test]
async fn rerunning_never_changes_an_existing_row_quiesced_included() {
    let t = TestDb::new().await;
    let bp = mid_handoff(&t.ds, 2).await;
    let want = mid_handoff_records();
    t.ds.record_update_last_drained(zone(2), bp.id())
        .await
        .unwrap();
    // Zone 2, still active, re-executes.
    t.ds.record_mark_quiesced(zone(1)).await.unwrap();
    let before = t.ds.records_list().await.unwrap();
    let again = t.ds.records_ensure(bp.id(), zone(2), &want).await.unwrap();
    assert_eq!(again.inserted, 0, "all rows existed: success, no insert");
    // Even a classification that would demote or promote changes nothing.
    let reversed = wanted(&[11, 12, 13], &[1, 2, 3]);
    t.ds.records_ensure(bp.id(), zone(2), &reversed)
        .await
        .unwrap();
    assert_eq!(t.ds.records_list().await.unwrap(), before);
    assert_eq!(before[0].state, Quiesced);
    assert_eq!(before[1].last_drained_blueprint_id, Some(bp.id()));
}

#[tokio::test]
async fn a_non_target_blueprint_writes_nothing_and_the_target_then_succeeds() {
    let t = TestDb::new().await;
    let old = blueprint(1, None, 1, handoff_zones(true));
    let new = blueprint(2, Some(1), 1, handoff_zones(true));
    store_and_target(&t.ds, &old).await;
    store_and_target(&t.ds, &new).await;
    let want = mid_handoff_records();
    let err =
        t.ds.records_ensure(old.id(), zone(1), &want)
            .await
            .unwrap_err();
    assert!(
        matches!(&err, Error::TargetChanged { blueprint_id, current }
            if *blueprint_id == old.id() && *current == Some(new.id())),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&old.id().to_string())
            && text.contains(&new.id().to_string())
    );
    assert!(
        t.ds.records_list().await.unwrap().is_empty(),
        "nothing written"
    );
    let ok = t.ds.records_ensure(new.id(), zone(1), &want).await.unwrap();
    assert_eq!(ok.inserted, 6);
}

#[tokio::test]
async fn records_ensure_with_no_target_at_all_writes_nothing() {
    let t = TestDb::new().await;
    let bp = blueprint(1, None, 1, handoff_zones(true));
    t.ds.blueprint_insert(&bp).await.unwrap();
    let err =
        t.ds.records_ensure(bp.id(), zone(1), &wanted(&[1], &[]))
            .await
            .unwrap_err();
    assert!(
        matches!(err, Error::TargetChanged { current: None, .. }),
        "{err}"
    );
    assert!(t.ds.records_list().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_conditional_record_write_is_one_statement() {
    let config = baton_datastore::DataStoreConfig {
        pool_size: 1,
        ..Default::default()
    };
    let t = TestDb::with_config(config).await;
    let bp = blueprint(1, None, 2, handoff_zones(true));
    store_and_target(&t.ds, &bp).await;
    let want = mid_handoff_records();
    t.ds.statement_stats_reset().await.unwrap();
    assert_eq!(t.ds.statement_stats_count().await.unwrap(), 0);
    t.ds.records_ensure(bp.id(), zone(1), &want).await.unwrap();
    assert_eq!(t.ds.statement_stats_count().await.unwrap(), 1, "first run");
    t.ds.statement_stats_reset().await.unwrap();
    t.ds.records_ensure(bp.id(), zone(1), &want).await.unwrap();
    assert_eq!(
        t.ds.statement_stats_count().await.unwrap(),
        1,
        "idempotent run"
    );
    // And the counter does count: the transactional baseline is several.
    t.ds.statement_stats_reset().await.unwrap();
    t.ds.baseline_records_ensure(bp.id(), zone(2), &want, None)
        .await
        .unwrap();
    assert!(t.ds.statement_stats_count().await.unwrap() >= 4);
}

#[tokio::test]
async fn records_read_by_ids_and_by_states() {
    let t = TestDb::new().await;
    mid_handoff(&t.ds, 1).await;
    t.ds.record_mark_quiesced(zone(3)).await.unwrap();
    let by_ids = t.ds.records_by_ids(&ids(&[2, 12, 99])).await.unwrap();
    assert_eq!(states(&by_ids), [(2, Active), (12, NotYet)]);
    let by_states = t.ds.records_by_states(&[Active, Quiesced]).await.unwrap();
    assert_eq!(
        states(&by_states),
        [(1, Active), (2, Active), (3, Quiesced)]
    );
    assert!(t.ds.records_by_states(&[]).await.unwrap().is_empty());
}

#[tokio::test]
async fn last_drained_is_set_only_while_active() {
    let t = TestDb::new().await;
    let bp = mid_handoff(&t.ds, 1).await;
    assert_eq!(
        t.ds.record_update_last_drained(zone(1), bp.id())
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        t.ds.record_update_last_drained(zone(11), bp.id())
            .await
            .unwrap(),
        0
    );
    t.ds.record_mark_quiesced(zone(2)).await.unwrap();
    assert_eq!(
        t.ds.record_update_last_drained(zone(2), bp.id())
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        t.ds.record_update_last_drained(zone(99), bp.id())
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn mark_quiesced_of_an_unknown_nexus_is_not_registered() {
    let t = TestDb::new().await;
    let err = t.ds.record_mark_quiesced(zone(7)).await.unwrap_err();
    assert!(
        matches!(err, Error::NotRegistered(id) if id == zone(7)),
        "{err}"
    );
}

#[tokio::test]
async fn delete_is_idempotent() {
    let t = TestDb::new().await;
    t.ds.records_initialize(&ids(&[1, 2])).await.unwrap();
    assert_eq!(t.ds.records_delete(&ids(&[1, 5])).await.unwrap(), 1);
    assert_eq!(t.ds.records_delete(&ids(&[1, 5])).await.unwrap(), 0);
    assert_eq!(states(&t.ds.records_list().await.unwrap()), [(2, Active)]);
}

#[tokio::test]
async fn delete_expunged_only_from_the_current_target() {
    let t = TestDb::new().await;
    let old = mid_handoff(&t.ds, 2).await;
    let expunged = blueprint(2, Some(1), 2, handoff_zones(false));
    t.ds.blueprint_insert(&expunged).await.unwrap();
    let err =
        t.ds.records_delete_expunged(expunged.id(), zone(2), &ids(&[1, 2, 3]))
            .await
            .unwrap_err();
    assert!(matches!(err, Error::TargetChanged { .. }), "{err}");
    assert_eq!(
        t.ds.records_list().await.unwrap().len(),
        6,
        "nothing deleted"
    );
    t.ds.target_set(expunged.id(), true).await.unwrap();
    let n =
        t.ds.records_delete_expunged(expunged.id(), zone(2), &ids(&[1, 2, 3]))
            .await
            .unwrap();
    assert_eq!(n, 3);
    let err =
        t.ds.records_delete_expunged(old.id(), zone(2), &ids(&[11]))
            .await
            .unwrap_err();
    assert!(matches!(err, Error::TargetChanged { .. }));
    assert_eq!(t.ds.records_list().await.unwrap().len(), 3);
}
