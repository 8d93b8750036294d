//! `Claim::transaction` as a service writes it: an async closure, no
//! boxing, no type spelled out; what it captures is used on every
//! attempt without a clone; a serialization failure retries the whole
//! body; an abort of the service's own rolls everything back.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use baton_datastore::diesel::QueryableByName;
use baton_datastore::diesel::sql_types::BigInt;
use baton_datastore::diesel_async::RunQueryDsl;
use baton_datastore::sql::{Bind, load_one, statement};
use baton_datastore::{TransactionError, TxError};

use crate::common::TestDb;

#[derive(QueryableByName)]
struct Total {
    #[diesel(sql_type = BigInt)]
    total: i64,
}

async fn make_table(t: &TestDb) {
    t.ds.run("make table", |conn| {
        Box::pin(statement("CREATE TABLE entry (v INT8)").execute(conn))
    })
    .await
    .unwrap();
}

async fn total(t: &TestDb) -> i64 {
    let total: Total =
        t.ds.run("total", |conn| {
            Box::pin(load_one(
                statement(
                    "SELECT COALESCE(SUM(v), 0)::INT8 AS total FROM entry",
                ),
                conn,
            ))
        })
        .await
        .unwrap();
    total.total
}

/// Two claims each read the total and then add a row, both reading
/// before either writes (a barrier on the first attempt): a write skew
/// SERIALIZABLE refuses, so one of them fails with 40001 and the retry
/// loop runs its body again. Both rows land, the bodies ran more than
/// twice in all, and the values they captured were only borrowed.
#[tokio::test]
async fn a_claim_transaction_retries_its_body_after_a_serialization_failure() {
    let t = TestDb::new().await;
    make_table(&t).await;
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let attempts = Arc::new(AtomicUsize::new(0));
    let writers: Vec<_> = [1_i64, 2]
        .into_iter()
        .map(|v| {
            let ds = t.ds.clone();
            let barrier = barrier.clone();
            let attempts = attempts.clone();
            let label = format!("writer {v}");
            tokio::spawn(async move {
                let mut claim = ds.claim("skewed write").await.unwrap();
                let mine = AtomicUsize::new(0);
                let outcome = claim
                    .transaction("read then add", async move |conn| {
                        let attempt = mine.fetch_add(1, Ordering::SeqCst) + 1;
                        attempts.fetch_add(1, Ordering::SeqCst);
                        let seen: Total = load_one(
                            statement(
                                "SELECT COALESCE(SUM(v), 0)::INT8 AS total \
                                 FROM entry",
                            ),
                            conn,
                        )
                        .await?;
                        if attempt == 1 {
                            barrier.wait().await;
                        }
                        statement("INSERT INTO entry VALUES ($1)")
                            .bind::<BigInt, _>(v + 10 * seen.total)
                            .execute(conn)
                            .await
                    })
                    .await;
                (label, outcome)
            })
        })
        .collect();
    for writer in writers {
        let (label, outcome) = writer.await.unwrap();
        assert_eq!(outcome.expect(&label), 1, "{label} inserted one row");
    }
    let attempts = AtomicUsize::load(&attempts, Ordering::SeqCst);
    assert!(attempts > 2, "no body was retried ({attempts} attempts)");
    // The later writer saw the earlier one's row: 1 + (2 + 10 * 1) or
    // 2 + (1 + 10 * 2). A write skew would leave 1 + 2.
    let total = total(&t).await;
    assert!(total == 13 || total == 23, "a write skew: total {total}");
}

/// A body that decides to roll back returns its own error, which comes
/// back as it was; nothing it wrote is left.
#[tokio::test]
async fn an_aborted_claim_transaction_leaves_nothing() {
    #[derive(Debug, PartialEq)]
    struct TooBig(i64);

    let t = TestDb::new().await;
    make_table(&t).await;
    let mut claim = t.ds.claim("bounded write").await.unwrap();
    let limit = 5_i64;
    let outcome = claim
        .transaction_with_abort("bounded write", async move |conn| {
            statement("INSERT INTO entry VALUES (7)")
                .execute(conn)
                .await?;
            let now: Total = load_one(
                statement("SELECT SUM(v)::INT8 AS total FROM entry"),
                conn,
            )
            .await?;
            if now.total > limit {
                return Err(TxError::Abort(TooBig(now.total)));
            }
            Ok(now.total)
        })
        .await;
    match outcome {
        Err(TransactionError::Aborted(e)) => assert_eq!(e, TooBig(7)),
        other => panic!("not the body's abort: {other:?}"),
    }
    drop(claim);
    assert_eq!(total(&t).await, 0);
}
