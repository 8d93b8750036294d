//! The atomic handoff and its three refusals.

use baton_datastore::Error;
use baton_types::NexusRecordState;

use crate::common::{TestDb, mid_handoff, zone};

async fn handoff_ready_db() -> TestDb {
    let t = TestDb::new().await;
    mid_handoff(&t.ds, 2).await;
    t
}

#[tokio::test]
async fn handoff_refused_while_any_old_nexus_is_active() {
    let t = handoff_ready_db().await;
    t.ds.record_mark_quiesced(zone(1)).await.unwrap();
    let err = t.ds.attempt_handoff(zone(11)).await.unwrap_err();
    assert!(matches!(err, Error::HandoffStillActive(2)), "{err}");
    assert!(err.is_transient());
    assert!(
        err.to_string()
            .contains("2 Nexus instance(s) are still active")
    );
}

#[tokio::test]
async fn handoff_refused_for_an_unregistered_nexus() {
    let t = handoff_ready_db().await;
    for n in 1..=3 {
        t.ds.record_mark_quiesced(zone(n)).await.unwrap();
    }
    let err = t.ds.attempt_handoff(zone(99)).await.unwrap_err();
    assert!(matches!(err, Error::HandoffNotRegistered(id) if id == zone(99)));
    assert!(err.is_transient());
}

#[tokio::test]
async fn handoff_refused_for_a_nexus_in_the_wrong_state() {
    let t = handoff_ready_db().await;
    for n in 1..=3 {
        t.ds.record_mark_quiesced(zone(n)).await.unwrap();
    }
    let err = t.ds.attempt_handoff(zone(2)).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::HandoffWrongState {
                state: NexusRecordState::Quiesced,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_transient());
    let all = t.ds.records_list().await.unwrap();
    assert!(
        all.iter().all(|r| r.state != NexusRecordState::Active),
        "nothing promoted"
    );
}

#[tokio::test]
async fn handoff_promotes_every_not_yet_row_at_once() {
    let t = handoff_ready_db().await;
    for n in 1..=3 {
        t.ds.record_mark_quiesced(zone(n)).await.unwrap();
    }
    assert_eq!(t.ds.attempt_handoff(zone(12)).await.unwrap(), 3);
    let all = t.ds.records_list().await.unwrap();
    let active: Vec<_> = all
        .iter()
        .filter(|r| r.state == NexusRecordState::Active)
        .map(|r| r.nexus_id)
        .collect();
    assert_eq!(active, [11, 12, 13].map(zone));
    // A second caller finds itself active already, and a retry by the
    // first (as after a commit whose answer was lost): success, no change.
    assert_eq!(t.ds.attempt_handoff(zone(13)).await.unwrap(), 0);
    assert_eq!(t.ds.attempt_handoff(zone(12)).await.unwrap(), 0);
    assert_eq!(t.ds.records_list().await.unwrap(), all, "nothing changed");
}
