//! Faults: an operation's server backend killed mid-statement, the server
//! stopped and restarted mid-execution and mid-handoff, the pool
//! exhausted. Each time the operation took effect whole or not at all,
//! the next attempt succeeds, and nothing is lost or duplicated.
//!
//! Each interrupted operation is made to wait mid-statement on a row lock
//! that the test holds open, so the fault lands at a known point.

use baton_test_utils::db::DataStoreTestExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use baton_datastore::{DataStore, DataStoreConfig};
use baton_executor::{STEP_ENSURE_RECORDS, StepOutcome, realize_blueprint};
use baton_test_utils::db::Hook;
use baton_types::{NexusRecord, NexusRecordState};
use baton_uuid_kinds::OmicronZoneUuid;
use tokio::sync::Notify;

use crate::common::{World, log, real_instances_hand_off_across};

use NexusRecordState::{Active, NotYet, Quiesced};

/// How the operation is interrupted once it waits on the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// `pg_terminate_backend` on the waiting backend.
    KillBackend,
    /// The whole server stopped (and, after, started again).
    RestartServer,
}

async fn states(ds: &DataStore) -> BTreeMap<OmicronZoneUuid, NexusRecordState> {
    ds.records_list()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.nexus_id, r.state))
        .collect()
}

/// Waits (bounded) until some backend waits on a lock.
async fn until_someone_waits(ds: &DataStore) {
    let waited = ds.until_lock_waiter(Duration::from_secs(10)).await;
    assert!(
        waited.unwrap(),
        "the operation never waited on the held lock"
    );
}

/// Runs `op` while the records are locked, interrupts it with `fault`
/// once it waits, and returns its result (after the server is back).
async fn interrupted<T: Send + 'static>(
    world: &mut World,
    fault: Fault,
    op: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let locked = Arc::new(Notify::new());
    let waiting = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let watcher = DataStore::new(&log(), &world.db.url());
    let hook: Hook = {
        let signals = (locked.clone(), waiting.clone(), release.clone());
        Arc::new(move || {
            let (locked, waiting, release) = signals.clone();
            let watcher = watcher.clone();
            Box::pin(async move {
                locked.notify_one();
                until_someone_waits(&watcher).await;
                if fault == Fault::KillBackend {
                    assert_eq!(
                        watcher.terminate_lock_waiters().await.unwrap(),
                        1
                    );
                }
                waiting.notify_one();
                release.notified().await;
            })
        })
    };
    let holder_ds = DataStore::new(&log(), &world.db.url());
    let holder =
        tokio::spawn(async move { holder_ds.hold_records_locked(hook).await });
    // The operation starts once the lock is held.
    locked.notified().await;
    let op = tokio::spawn(op);
    waiting.notified().await;
    if fault == Fault::RestartServer {
        world.db.stop_server().unwrap();
        let result = op.await.unwrap();
        release.notify_one();
        assert!(
            holder.await.unwrap().is_err(),
            "the holder's server went away"
        );
        world.db.restart().unwrap();
        result
    } else {
        let result = op.await.unwrap();
        release.notify_one();
        holder.await.unwrap().unwrap();
        result
    }
}

/// The caller's datastore: a short connect timeout, so an operation that
/// retries while the server is down gives up quickly.
fn caller(world: &World) -> DataStore {
    let config = DataStoreConfig {
        connect_timeout: Duration::from_secs(1),
        ..DataStoreConfig::default()
    };
    DataStore::with_config(&log(), &world.db.url(), config)
}

async fn execute_interrupted(fault: Fault) {
    let mut world = World::new().await;
    let story = world.story.clone();
    world.target(&story.new_generation_deployed).await;
    let before = states(&world.ds).await;
    let ds = caller(&world);
    let executor = ds.clone();
    let bp = story.new_generation_deployed.clone();
    let old = story.old_nexus[0];
    let report = interrupted(&mut world, fault, async move {
        realize_blueprint(&log(), &executor, &bp, Some(old)).await
    })
    .await;
    let step = report.step(STEP_ENSURE_RECORDS).unwrap();
    assert_eq!(step.outcome, StepOutcome::Warning, "{step:?}");
    // Nothing of the interrupted write took effect.
    assert_eq!(states(&ds).await, before, "{fault:?}: a partial write");
    // The next execution, on the same pool, succeeds once and completely.
    let report = realize_blueprint(
        &log(),
        &ds,
        &story.new_generation_deployed,
        Some(old),
    )
    .await;
    assert!(report.is_clean(), "{report:?}");
    let after = states(&ds).await;
    assert_eq!(after.len(), 6);
    assert!(
        story.new_nexus.iter().all(|id| after[id] == NotYet),
        "{after:?}"
    );
    assert!(
        story.old_nexus.iter().all(|id| after[id] == Active),
        "{after:?}"
    );
}

async fn handoff_interrupted(fault: Fault) {
    let mut world = World::new().await;
    let story = world.story.clone();
    let row = |nexus_id, state| NexusRecord {
        nexus_id,
        state,
        last_drained_blueprint_id: None,
    };
    let ready: Vec<NexusRecord> = story
        .old_nexus
        .iter()
        .map(|&id| row(id, Quiesced))
        .chain(story.new_nexus.iter().map(|&id| row(id, NotYet)))
        .collect();
    world.ds.records_replace(&ready).await.unwrap();
    let before = states(&world.ds).await;
    let ds = caller(&world);
    let new = story.new_nexus[0];
    let result =
        interrupted(
            &mut world,
            fault,
            async move { ds.attempt_handoff(new).await },
        )
        .await;
    let error = result.expect_err("the interrupted handoff fails");
    assert!(error.is_transient(), "{fault:?}: {error}");
    // Cut off with the statement sent: the caller is told it may have
    // taken effect (here it did not) and that a retry is safe.
    assert!(
        error
            .to_string()
            .contains("may or may not have taken effect"),
        "{fault:?}: {error}"
    );
    let ds = DataStore::new(&log(), &world.db.url());
    assert_eq!(states(&ds).await, before, "{fault:?}: a partial handoff");
    // Again: every not_yet row promoted, once.
    assert_eq!(ds.attempt_handoff(new).await.unwrap(), 3);
    let after = states(&ds).await;
    assert!(
        story.new_nexus.iter().all(|id| after[id] == Active),
        "{after:?}"
    );
    assert!(
        story.old_nexus.iter().all(|id| after[id] == Quiesced),
        "{after:?}"
    );
    // A retry (as after a commit whose answer was lost): a no-op success.
    assert_eq!(ds.attempt_handoff(new).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_mid_record_write_writes_nothing_and_the_retry_succeeds()
 {
    execute_interrupted(Fault::KillBackend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_mid_handoff_promotes_nothing_and_the_retry_succeeds()
{
    handoff_interrupted(Fault::KillBackend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_execution_loses_nothing() {
    execute_interrupted(Fault::RestartServer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_handoff_loses_nothing() {
    handoff_interrupted(Fault::RestartServer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_pool_fails_cleanly_and_recovers() {
    let world = World::new().await;
    let story = world.story.clone();
    world.target(&story.new_generation_deployed).await;
    let before = states(&world.ds).await;
    let config = DataStoreConfig {
        pool_size: 1,
        connect_timeout: Duration::from_millis(300),
        ..DataStoreConfig::default()
    };
    let ds = DataStore::with_config(&log(), &world.db.url(), config);
    let old = story.old_nexus[0];
    let held = ds.claim("long request").await.unwrap();
    let report = realize_blueprint(
        &log(),
        &ds,
        &story.new_generation_deployed,
        Some(old),
    )
    .await;
    let step = report.step(STEP_ENSURE_RECORDS).unwrap();
    assert_eq!(step.outcome, StepOutcome::Warning, "{step:?}");
    assert!(
        step.message.as_deref().unwrap_or("").contains("connection"),
        "{step:?}"
    );
    assert_eq!(
        states(&world.ds).await,
        before,
        "nothing written without a connection"
    );
    drop(held);
    let report = realize_blueprint(
        &log(),
        &ds,
        &story.new_generation_deployed,
        Some(old),
    )
    .await;
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(states(&world.ds).await.len(), 6);
    // More callers than connections queue and all finish.
    let runs: Vec<_> = (0..8)
        .map(|_| {
            let (ds, bp) = (ds.clone(), story.new_generation_deployed.clone());
            tokio::spawn(async move {
                realize_blueprint(&log(), &ds, &bp, Some(old))
                    .await
                    .is_clean()
            })
        })
        .collect();
    for run in runs {
        assert!(run.await.unwrap(), "a queued execution failed");
    }
}

/// The server goes away while the old generation is quiescing and the new
/// one waits to take over; once it is back, the instances carry on by
/// themselves and the handoff completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_instances_finish_the_handoff_after_a_server_restart() {
    let mut world = World::new().await;
    real_instances_hand_off_across(&mut world, |db| {
        db.stop_server().unwrap();
        db.restart().unwrap();
    })
    .await;
}
