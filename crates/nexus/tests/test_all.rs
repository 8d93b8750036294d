//! The Nexus lifecycle against a real PostgreSQL.

use std::time::Duration;

use baton_datastore::DataStore;
use baton_dev_db::DevDb;
use baton_nexus::{
    Nexus, NexusConfig, NexusError, NexusState, Periods, Readiness,
};
use baton_types::NexusRecordState;
use baton_types::story::HandoffStory;
use baton_uuid_kinds::OmicronZoneUuid;

use baton_test_utils::log;

async fn database() -> (DevDb, DataStore) {
    baton_test_utils::db::database(env!("CARGO_TARGET_TMPDIR"), false).await
}

fn config(url: &str, id: OmicronZoneUuid) -> NexusConfig {
    NexusConfig::new(id, url)
        .with_periods(Periods::default().capped(Duration::from_millis(20)))
}

fn start(db: &DevDb, n: u128) -> Nexus {
    Nexus::start(&log(), config(&db.url(), OmicronZoneUuid::from_u128(n)))
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
    let nexus = start(&db, 1);
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
    let nexus = start(&db, 1);
    let state = until(&nexus, NexusState::Running).await;
    assert!(
        matches!(&state, NexusState::Refused { reason: why } if why.contains("quiesced")),
        "{state:?}"
    );
}

#[tokio::test]
async fn a_nexus_without_a_record_waits_instead_of_crashing() {
    let (db, ds) = database().await;
    ds.migrate().await.unwrap();
    let other = OmicronZoneUuid::from_u128(1);
    ds.records_initialize(&[other].into()).await.unwrap();
    let nexus = start(&db, 2);
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
async fn the_service_is_refused_the_database_until_the_nexus_runs() {
    let (db, ds) = database().await;
    ds.migrate().await.unwrap();
    let other = OmicronZoneUuid::from_u128(1);
    ds.records_initialize(&[other].into()).await.unwrap();
    let nexus = start(&db, 2);
    until(&nexus, NexusState::WaitingForRecord).await;
    let claim = nexus.claim("early").await;
    assert!(
        matches!(claim, Err(NexusError::NotYetRunning { .. })),
        "{claim:?}"
    );
    assert!(claim.unwrap_err().is_unavailable());
    let guard = nexus.work_guard("early");
    assert!(
        matches!(guard, Err(NexusError::NotYetRunning { .. })),
        "{guard:?}"
    );
    // Not yet, but it will take work once it is in control.
    assert_eq!(nexus.status().readiness, Readiness::Soon);
    nexus.stop().await;
    assert_eq!(nexus.status().readiness, Readiness::Ended);
}

/// The service's own work is what quiesce drains: a job's work guard
/// holds step 2, its claim holds step 4, and `quiesced` comes only after
/// both are gone.
#[tokio::test]
async fn quiesced_comes_only_after_the_services_job_ends() {
    let (db, ds) = database().await;
    let story = HandoffStory::new(3);
    ds.migrate().await.unwrap();
    ds.records_initialize(&story.old_nexus.iter().copied().collect())
        .await
        .unwrap();
    for bp in [&story.steady] {
        ds.blueprint_insert(bp).await.unwrap();
        ds.target_set(bp.id(), true).await.unwrap();
    }
    let old: Vec<Nexus> = story
        .old_nexus
        .iter()
        .map(|id| Nexus::start(&log(), config(&db.url(), *id)))
        .collect();
    for nexus in &old {
        until(nexus, NexusState::Running).await;
    }
    let busy = &old[0];
    assert_eq!(busy.status().readiness, Readiness::Ready);
    let guard = busy.work_guard("a long job").unwrap();
    let claim = busy.claim("a long job").await.unwrap();
    for bp in [&story.new_generation_deployed, &story.handoff_started] {
        ds.blueprint_insert(bp).await.unwrap();
        ds.target_set(bp.id(), true).await.unwrap();
    }

    // Step 2 waits for the guard. New work is refused; the job in
    // flight may still take claims.
    until(busy, NexusState::Quiescing { step: 2 }).await;
    let refused = busy.work_guard("new work");
    assert!(
        matches!(refused, Err(NexusError::Quiescing { step: 2, .. })),
        "{refused:?}"
    );
    // A load balancer sends new work elsewhere: the status says so, and
    // the refusal says another instance may serve it.
    assert_eq!(busy.status().readiness, Readiness::Draining);
    assert!(refused.unwrap_err().is_unavailable());
    drop(busy.claim("the job's next statement").await.unwrap());
    assert_eq!(busy.status().work_in_flight, 1);
    drop(guard);

    // Step 4 waits for the claim the job still holds; no new claims.
    until(busy, NexusState::Quiescing { step: 4 }).await;
    let refused = busy.claim("after step 4").await;
    assert!(
        matches!(refused, Err(NexusError::Quiescing { step: 4, .. })),
        "{refused:?}"
    );
    assert!(refused.unwrap_err().is_unavailable());
    let status = busy.status();
    assert_eq!(status.claims_held, 1);
    assert_eq!(
        status.oldest_claim.map(|c| c.op),
        Some("a long job".to_owned())
    );
    let record = ds.records_by_ids(&[busy.id()].into()).await.unwrap();
    assert_eq!(record[0].state, NexusRecordState::Active);
    assert_eq!(busy.state(), NexusState::Quiescing { step: 4 });

    drop(claim);
    assert_eq!(
        until(busy, NexusState::Quiesced).await,
        NexusState::Quiesced
    );
    let record = ds.records_by_ids(&[busy.id()].into()).await.unwrap();
    assert_eq!(record[0].state, NexusRecordState::Quiesced);
    let history = busy.history();
    assert!(
        history
            .windows(2)
            .any(|w| w[0] == NexusState::Quiescing { step: 4 }
                && w[1] == NexusState::Quiescing { step: 5 }),
        "{history:?}"
    );
}

/// A zero period must not panic inside the lifecycle (it once did, with
/// the state still saying Running).
#[tokio::test]
async fn a_zero_execution_period_still_runs_and_stops() {
    let (db, _ds) = database().await;
    let mut periods = Periods::default();
    periods.execution = Duration::ZERO;
    periods.retry_min = Duration::ZERO;
    let nexus = Nexus::start(
        &log(),
        NexusConfig::new(OmicronZoneUuid::from_u128(1), db.url())
            .with_periods(periods),
    );
    assert_eq!(
        until(&nexus, NexusState::Running).await,
        NexusState::Running
    );
    // Claims still work: the task is alive, not panicked.
    drop(nexus.claim("after start").await.unwrap());
    assert_eq!(nexus.stop().await, NexusState::Stopped);
}

/// The README's embedding example is `examples/embed.rs`, which the
/// build compiles: the two must not drift apart.
#[test]
fn the_readme_shows_the_embedding_example_verbatim() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let readme = std::fs::read_to_string(format!("{root}/README.md"))
        .expect("the README");
    let example = include_str!("../examples/embed.rs");
    let code =
        &example[example.find("use baton_datastore::diesel;").unwrap()..];
    assert!(
        readme.contains(&format!("```rust\n{code}```")),
        "README.md no longer shows crates/nexus/examples/embed.rs verbatim"
    );
}

/// `stop()` returns once the instance has let go of the database: while
/// its handle is still alive (a service that stops its Nexus, then
/// stops its database), the server soon lists no session of it, its
/// pools' idle connections, its listener and its reporter included.
/// Without the release, the pools keep their idle connections for as
/// long as the handle lives, and the wait below runs out.
#[tokio::test]
async fn stop_returns_once_every_connection_is_let_go() {
    let (db, ds) = database().await;
    let id = OmicronZoneUuid::from_u128(1);
    let nexus = Nexus::start(&log(), config(&db.url(), id));
    until(&nexus, NexusState::Running).await;
    // A claim or two, so its service pool has connections too, and a
    // report, so its reporter has one.
    for _ in 0..2 {
        let claim = nexus.claim("before the stop").await.unwrap();
        drop(claim);
    }
    let reported = async {
        while ds.reports_list().await.unwrap().readable.is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), reported)
        .await
        .expect("the Nexus reports itself");
    let before = ds.backends_of(id).await.unwrap();
    assert!(before.len() >= 3, "pools, listener, reporter: {before:?}");

    assert_eq!(nexus.stop().await, NexusState::Stopped);
    // The server ends a session a moment after its socket closes; the
    // bound only keeps a regression from hanging.
    let gone = async {
        loop {
            let left = ds.backends_of(id).await.unwrap();
            if left.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let waited = tokio::time::timeout(Duration::from_secs(5), gone).await;
    let left = ds.backends_of(id).await.unwrap();
    assert!(
        waited.is_ok(),
        "sessions of the stopped Nexus are still open: {left:?}"
    );
    // The handle is still alive here: the release, not a drop, did it.
    assert_eq!(nexus.state(), NexusState::Stopped);
}
