//! Wake-ups: each rare state change of the handoff is announced once,
//! on commit, and nothing else is: not the steady record step, not a
//! change that was refused or changed no row, not a change made by a
//! datastore with notifications off.
//!
//! "Nothing else" is shown without waiting for silence: after the
//! statements that must stay quiet, a change that must be announced is
//! made, and the next announcement the listener gets has to be that one.

use baton_datastore::{
    DataStoreConfig, Error, Event, EventKind, Listener, Migration,
    SchemaComponent,
};
use baton_uuid_kinds::OmicronZoneUuid;

use crate::common::{
    TestDb, blueprint, handoff_zones, mid_handoff, mid_handoff_records,
    store_and_target, zone,
};

async fn next(listener: &mut Listener) -> Event {
    listener
        .next()
        .await
        .expect("the listening connection stays up")
}

fn is(event: &Event, kind: EventKind, nexus: Option<OmicronZoneUuid>) {
    assert_eq!((event.kind, event.nexus_id), (kind, nexus), "{event:?}");
}

#[tokio::test]
async fn each_rare_change_is_announced_once_and_nothing_else() {
    let t = TestDb::new().await;
    let ds = &t.ds;
    let mut listener = ds.listen().await.unwrap();
    ds.records_initialize(&[1, 2, 3].map(zone).into())
        .await
        .unwrap();

    let bp = blueprint(1, None, 2, handoff_zones(true));
    store_and_target(ds, &bp).await;
    let target = next(&mut listener).await;
    is(&target, EventKind::TargetSet, None);

    // The record step that inserts the new generation's rows announces
    // them; run again with every row there, it stays quiet.
    let records = mid_handoff_records();
    ds.records_ensure(bp.id(), zone(1), &records).await.unwrap();
    is(
        &next(&mut listener).await,
        EventKind::RecordsAdded,
        Some(zone(1)),
    );
    for _ in 0..3 {
        ds.records_ensure(bp.id(), zone(2), &records).await.unwrap();
    }
    // Refused changes stay quiet too: a handoff while generation 1 is
    // active, a drained mark for a Nexus that is not active.
    ds.attempt_handoff(zone(11)).await.unwrap_err();
    assert_eq!(
        ds.record_update_last_drained(zone(11), bp.id())
            .await
            .unwrap(),
        0
    );

    ds.record_update_last_drained(zone(1), bp.id())
        .await
        .unwrap();
    is(
        &next(&mut listener).await,
        EventKind::Drained,
        Some(zone(1)),
    );
    for n in 1..=3 {
        ds.record_mark_quiesced(zone(n)).await.unwrap();
        is(
            &next(&mut listener).await,
            EventKind::Quiesced,
            Some(zone(n)),
        );
    }
    assert_eq!(ds.attempt_handoff(zone(12)).await.unwrap(), 3);
    let handoff = next(&mut listener).await;
    is(&handoff, EventKind::Handoff, Some(zone(12)));
    // A retried handoff (already active) changes nothing: quiet.
    assert_eq!(ds.attempt_handoff(zone(12)).await.unwrap(), 0);
    // Removing no row is quiet; removing one is announced.
    assert_eq!(ds.records_delete(&[zone(99)].into()).await.unwrap(), 0);
    assert_eq!(ds.records_delete(&[zone(1)].into()).await.unwrap(), 1);
    is(&next(&mut listener).await, EventKind::RecordsRemoved, None);

    let component = SchemaComponent::new(
        "svc",
        vec![Migration::new(1, "t", "CREATE TABLE svc_t (id INT8)")],
    )
    .unwrap();
    ds.migrate_with(std::slice::from_ref(&component))
        .await
        .unwrap();
    is(&next(&mut listener).await, EventKind::Migrated, None);
    // Nothing pending: quiet; then a target change is the next event.
    ds.migrate_with(&[component]).await.unwrap();
    ds.target_set(bp.id(), false).await.unwrap();
    let last = next(&mut listener).await;
    is(&last, EventKind::TargetSet, None);
    // Each announcement names its own transaction.
    assert!(last.transaction > handoff.transaction);
    assert!(handoff.transaction > target.transaction);
}

#[tokio::test]
async fn a_datastore_with_notifications_off_announces_nothing() {
    let t = TestDb::new().await;
    let quiet = t.another(DataStoreConfig {
        notifications: false,
        ..DataStoreConfig::default()
    });
    assert!(!quiet.notifies() && t.ds.notifies());
    let mut listener = t.ds.listen().await.unwrap();
    quiet
        .records_initialize(&[1, 2, 3].map(zone).into())
        .await
        .unwrap();
    let bp = blueprint(1, None, 2, handoff_zones(true));
    store_and_target(&quiet, &bp).await;
    quiet
        .records_ensure(bp.id(), zone(1), &mid_handoff_records())
        .await
        .unwrap();
    quiet
        .record_update_last_drained(zone(1), bp.id())
        .await
        .unwrap();
    for n in 1..=3 {
        quiet.record_mark_quiesced(zone(n)).await.unwrap();
    }
    assert_eq!(quiet.attempt_handoff(zone(11)).await.unwrap(), 3);
    // The first announcement is the first change by a notifying store.
    t.ds.target_set(bp.id(), false).await.unwrap();
    is(&next(&mut listener).await, EventKind::TargetSet, None);
}

#[tokio::test]
async fn a_listener_whose_connection_is_gone_says_so() {
    let mut t = TestDb::new().await;
    let mut listener = t.ds.listen().await.unwrap();
    t.db.stop_server().unwrap();
    assert_eq!(listener.next().await, None);
}

#[tokio::test]
async fn the_cleanup_is_announced_only_when_it_deletes() {
    let t = TestDb::new().await;
    let ds = &t.ds;
    mid_handoff(ds, 2).await;
    let expunged = blueprint(2, Some(1), 2, handoff_zones(false));
    ds.blueprint_insert(&expunged).await.unwrap();
    ds.target_set(expunged.id(), true).await.unwrap();
    let mut listener = ds.listen().await.unwrap();
    // Zone 2, still active, cleans up zone 1's record.
    let one = [zone(1)].into();
    assert_eq!(
        ds.records_delete_expunged(expunged.id(), zone(2), &one)
            .await
            .unwrap(),
        1
    );
    is(
        &next(&mut listener).await,
        EventKind::RecordsRemoved,
        Some(zone(2)),
    );
    // Again: nothing left to delete, nothing announced; the next
    // announcement is the target change after it.
    assert_eq!(
        ds.records_delete_expunged(expunged.id(), zone(2), &one)
            .await
            .unwrap(),
        0
    );
    ds.target_set(expunged.id(), false).await.unwrap();
    is(&next(&mut listener).await, EventKind::TargetSet, None);
}

#[tokio::test]
async fn a_quiesced_datastore_opens_no_listener() {
    let t = TestDb::new().await;
    t.ds.quiesce();
    assert!(matches!(t.ds.listen().await, Err(Error::Quiesced)));
}
