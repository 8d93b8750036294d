//! The database fence: once a Nexus's record says `quiesced`, nothing it
//! runs through its claims commits, whatever the process believes.
//!
//! A "process" here is a datastore serving a Nexus (`nexus_id` set) that
//! keeps a claim across the operator's mark, as a paused process does;
//! the real-process versions (SIGSTOP, a frozen proxy) are in the
//! `baton-ledger` tests.

use baton_datastore::diesel::sql_types::BigInt;
use baton_datastore::diesel_async::RunQueryDsl;
use baton_datastore::sql::{Bind, statement};
use baton_datastore::{DataStore, DataStoreConfig, Error};
use baton_types::NexusRecordState;
use baton_uuid_kinds::OmicronZoneUuid;

use crate::common::{TestDb, log, zone};

/// A datastore serving Nexus `id`, as `Nexus::start` opens it.
fn serving(t: &TestDb, id: OmicronZoneUuid) -> DataStore {
    DataStore::with_config(
        &log(),
        &t.db.url(),
        DataStoreConfig {
            nexus_id: Some(id),
            ..DataStoreConfig::default()
        },
    )
}

async fn make_table(t: &TestDb) {
    t.ds.run("make table", |conn| {
        Box::pin(statement("CREATE TABLE t (v INT8)").execute(conn))
    })
    .await
    .unwrap();
}

async fn insert(
    claim: &mut baton_datastore::Claim,
    v: i64,
) -> Result<usize, baton_datastore::diesel::result::Error> {
    statement("INSERT INTO t VALUES ($1)")
        .bind::<BigInt, _>(v)
        .execute(claim.connection())
        .await
}

async fn rows(t: &TestDb) -> Vec<i64> {
    #[derive(baton_datastore::diesel::QueryableByName)]
    struct V {
        #[diesel(sql_type = BigInt)]
        v: i64,
    }
    let rows: Vec<V> =
        t.ds.run("read", |conn| {
            Box::pin(statement("SELECT v FROM t ORDER BY v").load(conn))
        })
        .await
        .unwrap();
    rows.into_iter().map(|r| r.v).collect()
}

/// The paused process's claim, kept across the operator's mark: its next
/// statement fails (its session was ended), and every claim after it is
/// refused with the typed error naming the record's state.
#[tokio::test]
async fn a_nexus_forced_out_commits_nothing_after_the_mark() {
    let t = TestDb::new().await;
    make_table(&t).await;
    t.ds.records_initialize(&[zone(1)].into()).await.unwrap();
    let zombie = serving(&t, zone(1));
    let mut claim = zombie.claim("before the pause").await.unwrap();
    insert(&mut claim, 1).await.unwrap();

    // The operator forces it out while it is "paused" (holding the claim).
    let ended = t.ds.record_mark_quiesced(zone(1)).await.unwrap();
    assert_eq!(ended, 1, "its one fenced session was ended");

    // It "resumes": the write on its old claim fails, never commits.
    assert!(insert(&mut claim, 2).await.is_err());
    drop(claim);
    // A new claim: refused by the database, with the record's state.
    let err = zombie.claim("after the pause").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Fenced {
                nexus_id,
                state: Some(NexusRecordState::Quiesced),
            } if nexus_id == zone(1)
        ),
        "{err}"
    );
    assert!(!err.is_transient());
    assert!(err.to_string().contains("quiesced"), "{err}");
    assert_eq!(zombie.fenced(), Some(Some(NexusRecordState::Quiesced)));
    // And stays refused, without asking the server again.
    assert!(matches!(
        zombie.claim("again").await,
        Err(Error::Fenced { .. })
    ));
    assert_eq!(rows(&t).await, vec![1]);
}

/// A write in flight when the mark comes is rolled back with its
/// session: by commit order, nothing of it lands after the mark.
#[tokio::test]
async fn a_transaction_open_at_the_mark_is_rolled_back() {
    let t = TestDb::new().await;
    make_table(&t).await;
    t.ds.records_initialize(&[zone(1)].into()).await.unwrap();
    let zombie = serving(&t, zone(1));
    let mut claim = zombie.claim("long transaction").await.unwrap();
    let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
    let started_tx = std::sync::Mutex::new(Some(started_tx));
    let writer = tokio::spawn(async move {
        claim
            .transaction("insert then wait", async move |conn| {
                statement("INSERT INTO t VALUES (7)").execute(conn).await?;
                let started = started_tx.lock().unwrap().take();
                if let Some(started) = started {
                    let _ = started.send(());
                }
                // The process "pauses" inside its transaction.
                statement("SELECT pg_sleep(30)").execute(conn).await?;
                Ok(())
            })
            .await
    });
    started.await.unwrap();
    t.ds.record_mark_quiesced(zone(1)).await.unwrap();
    let outcome =
        tokio::time::timeout(std::time::Duration::from_secs(20), writer)
            .await
            .expect("the ended session's transaction fails at once")
            .unwrap();
    assert!(outcome.is_err(), "{outcome:?}");
    assert_eq!(rows(&t).await, Vec::<i64>::new());
}

/// A `not_yet` Nexus cannot even open a service connection, and the
/// refusal names its state; on a fresh system (no record at all) a
/// Nexus may.
#[tokio::test]
async fn only_an_active_record_or_an_empty_table_opens_a_claim() {
    let t = TestDb::new().await;
    make_table(&t).await;
    let fresh = serving(&t, zone(9));
    let mut claim = fresh.claim("rack setup").await.unwrap();
    insert(&mut claim, 1).await.unwrap();
    drop(claim);
    t.ds.records_initialize(&[zone(1)].into()).await.unwrap();
    let newcomer = serving(&t, zone(2));
    let err = newcomer.claim("too early").await.unwrap_err();
    assert!(matches!(err, Error::Fenced { state: None, .. }), "{err}");
}

/// The teeth: without the fence (a mutant), the paused process's old
/// session writes after the mark.
#[cfg(feature = "mutants")]
#[tokio::test]
async fn mutant_without_the_fence_a_forced_out_nexus_writes_after_the_mark() {
    use baton_datastore::Mutant;
    let t = TestDb::new().await;
    make_table(&t).await;
    t.ds.records_initialize(&[zone(1)].into()).await.unwrap();
    let zombie = DataStore::with_mutant(
        &log(),
        &t.db.url(),
        DataStoreConfig {
            nexus_id: Some(zone(1)),
            ..DataStoreConfig::default()
        },
        Mutant::NoFence,
    );
    let mut claim = zombie.claim("before the pause").await.unwrap();
    insert(&mut claim, 1).await.unwrap();
    let operator = DataStore::with_mutant(
        &log(),
        &t.db.url(),
        DataStoreConfig::default(),
        Mutant::NoFence,
    );
    operator.record_mark_quiesced(zone(1)).await.unwrap();
    insert(&mut claim, 2).await.unwrap();
    assert_eq!(rows(&t).await, vec![1, 2], "a write landed after the mark");
}
