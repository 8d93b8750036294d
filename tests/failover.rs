//! A database failover mid-handoff loses nothing acknowledged: a primary
//! with a synchronous standby is killed as a crash would (`-m
//! immediate`) while an operation of the handoff is in flight, the
//! standby is promoted, and the clients, on a URL naming both servers
//! for read-write sessions, reconnect to it. Every operation is retried
//! until it succeeds (each is idempotent or recognises its own earlier
//! success), and the end state holds every acknowledged operation and
//! never two generations active.

use std::collections::BTreeSet;
use std::sync::mpsc;

use baton_datastore::{DataStore, Error};
use baton_dev_db::DevDb;
use baton_planner::classify;
use baton_types::NexusRecordState::{Active, NotYet, Quiesced};
use baton_types::story::HandoffStory;

use crate::common::{log, soak_factor};

/// The handoff's operations, in order, as an operator's tools and the
/// Nexus instances would run them.
#[derive(Clone, Copy, Debug)]
enum Op {
    DeployNewGeneration,
    WriteNotYetRecords,
    Bump,
    Quiesce(usize),
    Handoff,
}

const OPS: [Op; 7] = [
    Op::DeployNewGeneration,
    Op::WriteNotYetRecords,
    Op::Bump,
    Op::Quiesce(0),
    Op::Quiesce(1),
    Op::Quiesce(2),
    Op::Handoff,
];

async fn run(
    ds: &DataStore,
    story: &HandoffStory,
    op: Op,
) -> Result<(), Error> {
    match op {
        Op::DeployNewGeneration => ds
            .blueprint_import(&story.new_generation_deployed, Some(true))
            .await
            .map(drop),
        Op::WriteNotYetRecords => {
            let bp = &story.new_generation_deployed;
            let executing = story.old_nexus[0];
            let c = classify(bp, executing).expect("an old Nexus");
            ds.records_ensure(bp.id(), executing, &c.records)
                .await
                .map(drop)
        }
        Op::Bump => ds
            .blueprint_import(&story.handoff_started, Some(true))
            .await
            .map(drop),
        Op::Quiesce(n) => {
            ds.record_mark_quiesced(story.old_nexus[n]).await.map(drop)
        }
        Op::Handoff => ds.attempt_handoff(story.new_nexus[0]).await.map(drop),
    }
}

/// Runs `attempt` until it succeeds, as a client across a failover must:
/// an operation cut off by the crash (even while committing) is safe to
/// run again. Every failure must be transient; `failures` counts them.
async fn retried<T, F, Fut>(what: &str, failures: &mut u32, attempt: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(e) => {
                assert!(e.is_transient(), "{what}: {e}");
                *failures += 1;
                assert!(*failures < 10_000, "{what} never succeeded: {e}");
                tokio::task::yield_now().await;
            }
        }
    }
}

/// A primary with a synchronous standby, migrated, with the
/// generation-1 records as at rack setup; the datastore on the URL that
/// follows a promotion.
async fn rack_with_a_standby() -> (HandoffStory, DevDb, DataStore) {
    let story = HandoffStory::new(588);
    let db = DevDb::builder()
        .template_cache(env!("CARGO_TARGET_TMPDIR"))
        .standby()
        .start(&log())
        .expect("a primary and its standby");
    let ds = DataStore::new(&log(), &db.failover_url().expect("a standby"));
    ds.migrate().await.unwrap();
    let old: BTreeSet<_> = story.old_nexus.iter().copied().collect();
    ds.records_initialize(&old).await.unwrap();
    (story, db, ds)
}

/// The whole handoff with the primary killed while operation `kill_at`
/// is in flight.
async fn handoff_across_a_failover(kill_at: usize) {
    let (story, mut db, ds) = rack_with_a_standby().await;
    ds.blueprint_import(&story.steady, Some(true))
        .await
        .unwrap();

    // The killer waits for its cue, then crashes the primary and
    // promotes the standby while the operation runs.
    let (cue, cued) = mpsc::channel::<()>();
    let killer = std::thread::spawn(move || {
        cued.recv().expect("the cue");
        db.kill_primary().expect("killed");
        db.promote_standby().expect("promoted");
        db
    });
    let mut acknowledged = Vec::new();
    let mut failures = 0;
    for (i, op) in OPS.into_iter().enumerate() {
        if i == kill_at {
            cue.send(()).unwrap();
        }
        retried(&format!("{op:?}"), &mut failures, || run(&ds, &story, op))
            .await;
        acknowledged.push(op);
    }
    let db = killer.join().expect("the killer");

    // Everything acknowledged is there, on the promoted standby.
    assert_eq!(acknowledged.len(), OPS.len());
    let target = ds.target_current().await.unwrap().unwrap();
    assert_eq!(target.blueprint_id, story.handoff_started.id());
    let records = ds.records_list().await.unwrap();
    for id in &story.old_nexus {
        assert!(
            records
                .iter()
                .any(|r| r.nexus_id == *id && r.state == Quiesced),
            "kill at {kill_at}: old Nexus {id} lost its quiesced mark: {records:?}"
        );
    }
    for id in &story.new_nexus {
        assert!(
            records
                .iter()
                .any(|r| r.nexus_id == *id && r.state == Active),
            "kill at {kill_at}: new Nexus {id} is not active: {records:?}"
        );
    }
    assert!(records.iter().all(|r| r.state != NotYet));
    // Never two generations active: only the new ones are.
    let active: Vec<_> = records.iter().filter(|r| r.state == Active).collect();
    assert_eq!(active.len(), story.new_nexus.len(), "{records:?}");
    println!(
        "primary killed at {:?}: {failures} attempt(s) cut off and retried, \
         {} operation(s) acknowledged, 0 lost",
        OPS[kill_at],
        acknowledged.len()
    );
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_during_any_handoff_operation_loses_nothing_acknowledged() {
    // Each kill point once in CI, more often under `cargo xtask soak`.
    for _ in 0..soak_factor() {
        for kill_at in 0..OPS.len() {
            handoff_across_a_failover(kill_at).await;
        }
    }
}

/// What asynchronous replication can lose, shown deterministically: with
/// the standby not synchronous and down while an old Nexus marks itself
/// quiesced, the primary acknowledges the mark, then crashes, and the
/// promoted standby never had it. The protocol stays safe (no second
/// generation became active: the handoff is refused, since the old
/// record still says `active`), and the operator's recovery is the
/// guarded `baton records quiesce --force` of the Nexus, which is gone
/// (no connection, no recent report); after it the handoff proceeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asynchronous_replication_can_lose_a_quiesced_mark_and_the_operator_recovers()
 {
    let (story, mut db, ds) = rack_with_a_standby().await;
    for op in OPS.into_iter().take(3) {
        run(&ds, &story, op).await.unwrap();
    }
    for n in 0..2 {
        run(&ds, &story, Op::Quiesce(n)).await.unwrap();
    }
    // Asynchronous, and the standby down: the last mark is acknowledged
    // by the primary alone.
    db.set_synchronous(false).unwrap();
    db.stop_standby_server();
    run(&ds, &story, Op::Quiesce(2)).await.unwrap();
    let lost = story.old_nexus[2];
    let db = tokio::task::spawn_blocking(move || {
        db.kill_primary().unwrap();
        db.start_standby_server().unwrap();
        db.promote_standby().unwrap();
        db
    })
    .await
    .unwrap();

    // The acknowledged mark is gone; the handoff is refused, not unsafe.
    let state = |records: &[baton_types::NexusRecord], id| {
        records.iter().find(|r| r.nexus_id == id).map(|r| r.state)
    };
    let mut records = Err(Error::NoTarget);
    for _ in 0..1000 {
        records = ds.records_list().await;
        if records.is_ok() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let records = records.expect("the promoted standby answers");
    assert_eq!(state(&records, lost), Some(Active), "the mark was not lost");
    let refused = ds.attempt_handoff(story.new_nexus[0]).await.unwrap_err();
    assert!(matches!(refused, Error::HandoffStillActive(1)), "{refused}");
    // The operator's recovery: mark the dead Nexus quiesced again.
    ds.record_mark_quiesced(lost).await.unwrap();
    assert_eq!(ds.attempt_handoff(story.new_nexus[0]).await.unwrap(), 3);
    drop(db);
}

/// A failover while the schema is being migrated: the migration is
/// retried on the promoted standby, and the schema ends whole, at the
/// latest version, without drift (each migration commits its tables and
/// its version row together).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_mid_migration_leaves_a_whole_schema() {
    let mut db = DevDb::builder()
        .template_cache(env!("CARGO_TARGET_TMPDIR"))
        .standby()
        .start(&log())
        .expect("a primary and its standby");
    let ds = DataStore::new(&log(), &db.failover_url().expect("a standby"));
    let killer = std::thread::spawn(move || {
        db.kill_primary().expect("killed");
        db.promote_standby().expect("promoted");
        db
    });
    let mut failures = 0;
    let version = retried("migrate", &mut failures, || ds.migrate()).await;
    let db = killer.join().expect("the killer");
    assert_eq!(version, baton_datastore::SCHEMA_VERSION);
    let (recorded, drift) = ds.schema_state().await.unwrap();
    assert_eq!(recorded, baton_datastore::SCHEMA_VERSION);
    assert_eq!(drift, Vec::<String>::new());
    assert_eq!(ds.schema_mismatches().await.unwrap(), Vec::<String>::new());
    println!("migration across a failover: {failures} attempt(s) cut off");
    drop(db);
}

/// Real Nexus instances, the old generation quiescing and the new one
/// waiting, when the primary crashes and the standby is promoted: the
/// instances reconnect by themselves and the handoff completes, the old
/// generation quiesced and the new one active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_instances_finish_the_handoff_across_a_failover() {
    let mut world = crate::common::World::with_standby().await;
    crate::common::real_instances_hand_off_across(&mut world, |db| {
        db.kill_primary().unwrap();
        db.promote_standby().unwrap();
    })
    .await;
}
