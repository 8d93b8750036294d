//! Cancel safety: a transaction future dropped at any await point (a
//! timeout, a `select!`) leaves nothing behind for the next caller of a
//! pool of one connection: no open transaction, no uncommitted rows, no
//! claim counted by the fence.

use std::time::Duration;

use baton_datastore::diesel::QueryableByName;
use baton_datastore::diesel::sql_types::BigInt;
use baton_datastore::diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use baton_datastore::{DataStore, DataStoreConfig, TxError};
use tokio::sync::mpsc;

use crate::common::TestDb;
// The derives below name `diesel`: the one Baton re-exports.
use baton_datastore::diesel;

#[derive(QueryableByName)]
struct N {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

async fn count(ds: &DataStore, sql: &'static str) -> i64 {
    let mut claim = ds.claim("count").await.unwrap();
    let rows: Vec<N> = diesel::sql_query(sql)
        .load(claim.connection())
        .await
        .unwrap();
    rows.into_iter().next().map_or(0, |r| r.n)
}

/// A pool of one connection with a scratch table, and another process's
/// datastore to look from.
async fn one_connection() -> (TestDb, DataStore) {
    let t = TestDb::with_config(DataStoreConfig {
        pool_size: 1,
        ..DataStoreConfig::default()
    })
    .await;
    let observer = t.another(DataStoreConfig::default());
    t.ds.claim("setup")
        .await
        .unwrap()
        .connection()
        .batch_execute("CREATE TABLE scratch (n INT8)")
        .await
        .unwrap();
    (t, observer)
}

/// After a cancelled transaction that wrote `n = 1`: no claim is counted,
/// and the next caller of the one-connection pool writes `n = 2` in a
/// transaction of its own, visible at once to another process, while the
/// cancelled write is gone.
async fn next_caller_is_unaffected(
    t: &TestDb,
    observer: &DataStore,
    what: &str,
) {
    assert_eq!(t.ds.outstanding_claims(), 0, "{what}: claim leaked");
    t.ds.claim("next caller")
        .await
        .unwrap()
        .connection()
        .batch_execute("INSERT INTO scratch VALUES (2)")
        .await
        .unwrap();
    assert_eq!(
        count(observer, "SELECT count(*) AS n FROM scratch WHERE n = 2").await,
        1,
        "{what}: the next caller's write ran inside the cancelled \
         transaction"
    );
    assert_eq!(
        count(observer, "SELECT count(*) AS n FROM scratch WHERE n = 1").await,
        0,
        "{what}: the cancelled transaction's write survived"
    );
}

/// Where in the transaction the future is dropped.
#[derive(Clone, Copy, Debug)]
enum Point {
    /// Between two statements, the transaction open and idle.
    BetweenStatements,
    /// While the server runs a statement.
    InsideAStatement,
}

async fn cancel_at(point: Point) {
    let (t, observer) = one_connection().await;

    let (reached, mut at) = mpsc::channel(1);
    let ds = t.ds.clone();
    let task = tokio::spawn(async move {
        ds.transaction("to be cancelled", move |conn| {
            let reached = reached.clone();
            Box::pin(async move {
                conn.batch_execute("INSERT INTO scratch VALUES (1)").await?;
                match point {
                    Point::BetweenStatements => {
                        let _ = reached.send(()).await;
                        std::future::pending::<()>().await;
                    }
                    Point::InsideAStatement => {
                        let _ = reached.send(()).await;
                        conn.batch_execute("SELECT pg_sleep(30)").await?;
                    }
                }
                Ok::<_, TxError<()>>(())
            })
        })
        .await
    });
    at.recv().await.expect("the body reached the point");
    if let Point::InsideAStatement = point {
        // The statement is on the server once its backend says so.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while count(
            &observer,
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE query LIKE 'SELECT pg_sleep%' AND state = 'active'",
        )
        .await
            == 0
        {
            assert!(std::time::Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    next_caller_is_unaffected(&t, &observer, &format!("{point:?}")).await;
}

#[tokio::test]
async fn a_transaction_dropped_between_statements_leaves_nothing() {
    cancel_at(Point::BetweenStatements).await;
}

#[tokio::test]
async fn a_transaction_dropped_inside_a_statement_leaves_nothing() {
    cancel_at(Point::InsideAStatement).await;
}

#[tokio::test]
async fn a_claim_dropped_while_waiting_for_a_connection_is_not_counted() {
    let t = TestDb::with_config(DataStoreConfig {
        pool_size: 1,
        ..DataStoreConfig::default()
    })
    .await;
    let held = t.ds.claim("holder").await.unwrap();
    let ds = t.ds.clone();
    let waiting = tokio::spawn(async move { ds.claim("waiter").await });
    // Counted as soon as it is asked for, then dropped mid-wait.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while t.ds.outstanding_claims() < 2 {
        assert!(std::time::Instant::now() < deadline);
        tokio::task::yield_now().await;
    }
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    assert_eq!(t.ds.outstanding_claims(), 1);
    drop(held);
    assert_eq!(t.ds.outstanding_claims(), 0);
}

/// The same on a claim the caller holds: a transaction on it dropped
/// midway, then the claim dropped, leaves the pool's one connection
/// clean for the next caller.
#[tokio::test]
async fn a_transaction_on_a_held_claim_dropped_midway_leaves_nothing() {
    let (t, observer) = one_connection().await;
    let (reached, mut at) = mpsc::channel(1);
    let ds = t.ds.clone();
    let task = tokio::spawn(async move {
        let mut claim = ds.claim("held").await.unwrap();
        claim
            .transaction("to be cancelled", async move |conn| {
                conn.batch_execute("INSERT INTO scratch VALUES (1)").await?;
                let _ = reached.send(()).await;
                std::future::pending::<()>().await;
                Ok(())
            })
            .await
    });
    at.recv().await.expect("the body reached the point");
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    next_caller_is_unaffected(&t, &observer, "held claim").await;
}
