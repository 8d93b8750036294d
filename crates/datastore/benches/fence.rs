//! What the database fence costs a service's write: a claim and a
//! one-row insert, as a transaction (`Claim::transaction`) and as a plain
//! statement (autocommit), through a datastore serving a Nexus (fenced)
//! and through the same without a Nexus (unfenced), at 1 and 8 writers.
//!
//! The fence's work is at connection set-up (the shared fence lock and
//! the record check), so a write on a pooled connection pays nothing
//! more; this measures that claim against the unfenced one. Rounds
//! alternate fenced and unfenced on one server, so drift hits both.
//!
//! `cargo bench --bench fence` measures (`-- --quick`: fewer rounds);
//! `cargo test --bench fence` (CI's smoke run) runs one tiny round.

use std::time::{Duration, Instant};

use baton_datastore::diesel::sql_types::BigInt;
use baton_datastore::diesel_async::RunQueryDsl;
use baton_datastore::sql::{Bind, statement};
use baton_datastore::{DataStore, DataStoreConfig};
use baton_dev_db::DevDb;
use baton_uuid_kinds::OmicronZoneUuid;
use slog::{Logger, o};

fn log() -> Logger {
    Logger::root(slog::Discard, o!())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Write {
    Transaction,
    Autocommit,
}

/// Runs `writers` tasks of `ops` writes each; the mean time per write.
async fn round(
    ds: &DataStore,
    write: Write,
    writers: usize,
    ops: usize,
) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let ds = ds.clone();
            tokio::spawn(async move {
                for i in 0..ops {
                    let v = (w * ops + i) as i64;
                    let mut claim = ds.claim("bench write").await.expect("claim");
                    match write {
                        Write::Autocommit => {
                            statement("INSERT INTO bench_entry VALUES ($1)")
                                .bind::<BigInt, _>(v)
                                .execute(claim.connection())
                                .await
                                .expect("insert");
                        }
                        Write::Transaction => {
                            claim
                                .transaction(
                                    "bench transaction",
                                    async move |conn| {
                                        statement(
                                            "INSERT INTO bench_entry VALUES ($1)",
                                        )
                                        .bind::<BigInt, _>(v)
                                        .execute(conn)
                                        .await
                                    },
                                )
                                .await
                                .expect("transaction");
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("a writer");
    }
    started.elapsed() / (writers * ops) as u32
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let measuring = args.iter().any(|a| a == "--bench");
    let quick = args.iter().any(|a| a == "--quick");
    let (rounds, ops) = match (measuring, quick) {
        (false, _) => (1, 5),
        (true, true) => (5, 200),
        (true, false) => (15, 400),
    };
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let db = DevDb::builder()
        .template_cache(env!("CARGO_TARGET_TMPDIR"))
        .start(&log())
        .expect("a throwaway PostgreSQL starts");
    let nexus = OmicronZoneUuid::new_v4();
    let stores = |writers: usize| {
        let _inside = rt.enter();
        let config = DataStoreConfig {
            pool_size: writers as u32,
            ..DataStoreConfig::default()
        };
        let unfenced =
            DataStore::with_config(&log(), &db.url(), config.clone());
        let fenced = DataStore::with_config(
            &log(),
            &db.url(),
            DataStoreConfig {
                nexus_id: Some(nexus),
                ..config
            },
        );
        (unfenced, fenced)
    };
    rt.block_on(async {
        let (admin, _) = stores(1);
        admin.migrate().await.expect("migrations");
        admin
            .records_initialize(&[nexus].into())
            .await
            .expect("the Nexus's record");
        admin
            .run("bench table", |conn| {
                Box::pin(
                    statement("CREATE TABLE bench_entry (v INT8)")
                        .execute(conn),
                )
            })
            .await
            .expect("table");
    });
    println!(
        "\nThe database fence's cost: a claim and a one-row insert \
         ({rounds} alternating rounds of {ops} writes per writer; mean \
         time per write, median of the rounds)"
    );
    println!(
        "{:<28} {:>8} {:>12} {:>12} {:>8}",
        "write", "writers", "unfenced", "fenced", "ratio"
    );
    for write in [Write::Transaction, Write::Autocommit] {
        for writers in [1, 8] {
            let (unfenced, fenced) = stores(writers);
            let (mut a, mut b) = (Vec::new(), Vec::new());
            rt.block_on(async {
                // Warm both pools: each connection set up once (the
                // fenced one's set-up is where the fence costs).
                round(&unfenced, write, writers, 2).await;
                round(&fenced, write, writers, 2).await;
                for _ in 0..rounds {
                    a.push(round(&unfenced, write, writers, ops).await);
                    b.push(round(&fenced, write, writers, ops).await);
                }
            });
            let (a, b) = (median(a), median(b));
            println!(
                "{:<28} {:>8} {:>9.1} µs {:>9.1} µs {:>7.3}x",
                match write {
                    Write::Transaction => "claim + insert transaction",
                    Write::Autocommit => "claim + autocommit insert",
                },
                writers,
                a.as_secs_f64() * 1e6,
                b.as_secs_f64() * 1e6,
                b.as_secs_f64() / a.as_secs_f64()
            );
        }
    }
}
