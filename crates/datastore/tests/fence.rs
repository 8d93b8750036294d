//! The drain fence.

use baton_test_utils::db::DataStoreTestExt;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use std::sync::Arc;

use baton_datastore::Error;
use baton_test_utils::db::Hook;
use baton_types::NexusRecordState;
use tokio::sync::Notify;

use crate::common::{TestDb, zone};

/// Polls a future exactly once: a condition check, no waiting.
fn poll_once<F: Future>(fut: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

#[tokio::test]
async fn claims_are_refused_after_quiesce() {
    let t = TestDb::new().await;
    t.ds.records_initialize(&[zone(1)].into()).await.unwrap();
    t.ds.quiesce();
    assert!(t.ds.is_quiesced());
    assert!(matches!(t.ds.claim("test").await, Err(Error::Quiesced)));
    let err = t.ds.records_list().await.unwrap_err();
    assert!(matches!(err, Error::Quiesced), "{err}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn the_drain_waiter_blocks_while_a_claim_is_held_and_resolves_after() {
    let t = TestDb::new().await;
    let claim = t.ds.claim("in-flight work").await.unwrap();
    t.ds.quiesce();
    assert_eq!(t.ds.outstanding_claims(), 1);
    let mut waiter = pin!(t.ds.wait_for_drain());
    assert!(
        poll_once(waiter.as_mut()).is_pending(),
        "resolved with a claim out"
    );
    drop(claim);
    assert_eq!(t.ds.outstanding_claims(), 0);
    // Bounded only so a bug fails instead of hanging.
    tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter resolves once the claim is released");
}

#[tokio::test]
async fn marking_self_quiesced_uses_the_reserved_claim_only_when_drained() {
    let t = TestDb::new().await;
    t.ds.records_initialize(&[zone(1)].into()).await.unwrap();
    let err = t.ds.record_mark_self_quiesced(zone(1)).await.unwrap_err();
    assert!(
        matches!(err, Error::FenceNotDrained(_)),
        "before quiesce: {err}"
    );
    let claim = t.ds.claim("in-flight").await.unwrap();
    t.ds.quiesce();
    let err = t.ds.record_mark_self_quiesced(zone(1)).await.unwrap_err();
    assert!(
        matches!(err, Error::FenceNotDrained(_)),
        "claim held: {err}"
    );
    drop(claim);
    t.ds.wait_for_drain().await;
    t.ds.record_mark_self_quiesced(zone(1)).await.unwrap();
    let err = t.ds.record_mark_self_quiesced(zone(1)).await.unwrap_err();
    assert!(matches!(err, Error::FenceNotDrained(_)), "only once: {err}");
    let other = t.another(Default::default());
    let rows = other.records_list().await.unwrap();
    assert_eq!(rows[0].state, NexusRecordState::Quiesced);
}

/// Marking oneself `quiesced` can meet a serialization failure: here the
/// row is updated by a concurrent transaction that commits while the mark
/// waits for it. The mark is retried on the reserved claim (the only
/// connection left) and succeeds; it used to end the quiesce with an
/// error, which the lifecycle benchmark caught as a Nexus ending Failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marking_self_quiesced_retries_a_serialization_failure() {
    let t = TestDb::new().await;
    t.ds.records_initialize(&[zone(1)].into()).await.unwrap();
    let nexus = t.another(Default::default());
    nexus.quiesce();
    let watcher = t.another(Default::default());
    let locked = Arc::new(Notify::new());
    let signal = locked.clone();
    let hook: Hook = Arc::new(move || {
        let (watcher, signal) = (watcher.clone(), signal.clone());
        Box::pin(async move {
            signal.notify_one();
            // Commit only once the mark waits on the held row lock.
            let waited = watcher.until_lock_waiter(Duration::from_secs(10));
            assert!(
                waited.await.unwrap(),
                "the mark never waited on the held lock"
            );
        })
    });
    let holder = t.ds.clone();
    let held =
        tokio::spawn(async move { holder.hold_records_locked(hook).await });
    // The mark starts once the holder has the row locked.
    locked.notified().await;
    let marked = nexus.record_mark_self_quiesced(zone(1)).await;
    held.await.unwrap().unwrap();
    marked.unwrap();
    assert!(nexus.retries() >= 1, "the mark never met a conflict");
    let rows = t.ds.records_list().await.unwrap();
    assert_eq!(rows[0].state, NexusRecordState::Quiesced);
}
