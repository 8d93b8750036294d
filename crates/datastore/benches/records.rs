//! The record step and the handoff against a local throwaway server:
//! Baton's single statements side by side with the same operations written
//! the transactional way, in the same run. Before measuring, it counts the
//! statements the server receives for each operation (`pg_stat_statements`)
//! and writes them to `target/tmp/baton-bench-statements.json` for
//! `cargo xtask bench` to print beside the times.

mod common;

use baton_test_utils::db::DataStoreTestExt;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use baton_datastore::{DataStore, Error};
use baton_types::{NexusRecord, NexusRecordState};
use criterion::{BenchmarkId, Criterion};

use common::Bench;

/// Concurrent executors measured: one Nexus alone, and a busy rack.
const EXECUTORS: [usize; 2] = [1, 8];

impl Bench {
    fn start() -> Bench {
        Bench::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime"),
        )
    }

    /// Just before the handoff: old quiesced, new `not_yet`.
    fn before_handoff(&self) -> Vec<NexusRecord> {
        self.records_with_old(NexusRecordState::Quiesced)
    }

    /// Statements the server receives for one run of `op`.
    fn statements<F, Fut>(&self, ds: &DataStore, op: F) -> i64
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), Error>>,
    {
        self.rt.block_on(async {
            // Warm the connection first so its set-up is not counted.
            ds.records_list().await.expect("records read");
            ds.statement_stats_reset().await.expect("stats reset");
            op().await.expect("the operation succeeds");
            ds.statement_stats_count().await.expect("stats read")
        })
    }

    fn count_statements(&self) -> BTreeMap<&'static str, i64> {
        let ds = self.datastore();
        let (bp, records, new) =
            (self.target(), &self.records, self.story.new_nexus[0]);
        let me = self.story.old_nexus[0];
        let before = self.before_handoff();
        let reset = || {
            self.rt
                .block_on(ds.records_replace(&before))
                .expect("records reset")
        };
        let mut counts = BTreeMap::new();
        // The record step runs as an old Nexus in control.
        self.rt
            .block_on(ds.records_replace(&self.in_control()))
            .expect("records set");
        counts.insert(
            "record step (baton)",
            self.statements(&ds, || async {
                ds.records_ensure(bp, me, records).await.map(drop)
            }),
        );
        counts.insert(
            "record step (baseline)",
            self.statements(&ds, || async {
                ds.baseline_records_ensure(bp, me, records, None)
                    .await
                    .map(drop)
            }),
        );
        reset();
        counts.insert(
            "handoff (baton)",
            self.statements(&ds, || async {
                ds.attempt_handoff(new).await.map(drop)
            }),
        );
        reset();
        counts.insert(
            "handoff (baseline)",
            self.statements(&ds, || async {
                ds.baseline_attempt_handoff(new).await.map(drop)
            }),
        );
        counts.insert(
            "access check",
            self.statements(&ds, || async {
                ds.access_facts_for(Some(new), &[]).await.map(drop)
            }),
        );
        counts.insert(
            "cleanup of expunged records",
            self.statements(&ds, || async {
                let none = std::collections::BTreeSet::new();
                // After the handoff above, the new generation is in control.
                ds.records_delete_expunged(bp, new, &none).await.map(drop)
            }),
        );
        counts
    }
}

/// Runs `iters` operations on each of `executors` datastores at once and
/// returns the wall time divided by the executors' count of sequential
/// operations: each executor's mean latency under that concurrency.
fn concurrent<F, Fut>(
    bench: &Bench,
    stores: &[DataStore],
    iters: u64,
    op: F,
) -> Duration
where
    F: Fn(DataStore) -> Fut,
    Fut: Future<Output = Result<(), Error>> + Send + 'static,
{
    bench.rt.block_on(async {
        let start = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for ds in stores {
            let runs: Vec<Fut> = (0..iters).map(|_| op(ds.clone())).collect();
            tasks.spawn(async move {
                for run in runs {
                    run.await.expect("the operation succeeds");
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("no executor panicked");
        }
        start.elapsed()
    })
}

fn record_step(c: &mut Criterion, bench: &Bench) {
    // The executing Nexus is in control, as in a running rack.
    bench
        .rt
        .block_on(bench.datastore().records_replace(&bench.in_control()))
        .expect("records set");
    let mut group = c.benchmark_group("record step");
    for executors in EXECUTORS {
        let stores: Vec<DataStore> =
            (0..executors).map(|_| bench.datastore()).collect();
        let (bp, records) = (bench.target(), bench.records.clone());
        let me = bench.story.old_nexus[0];
        // The rows exist after the first run, as they do in a running
        // rack, where every Nexus re-executes the target periodically.
        group.bench_function(BenchmarkId::new("baton", executors), |b| {
            b.iter_custom(|iters| {
                concurrent(bench, &stores, iters, |ds| {
                    let records = records.clone();
                    async move {
                        ds.records_ensure(bp, me, &records).await.map(drop)
                    }
                })
            })
        });
        group.bench_function(BenchmarkId::new("baseline", executors), |b| {
            b.iter_custom(|iters| {
                concurrent(bench, &stores, iters, |ds| {
                    let records = records.clone();
                    async move {
                        ds.baseline_records_ensure(bp, me, &records, None)
                            .await
                            .map(drop)
                    }
                })
            })
        });
    }
    group.finish();
}

fn handoff(c: &mut Criterion, bench: &Bench) {
    let ds = bench.datastore();
    let before = bench.before_handoff();
    let new = bench.story.new_nexus[0];
    let mut group = c.benchmark_group("handoff");
    // Each handoff needs the records put back first; only the handoff
    // itself is timed.
    let timed = |b: &mut criterion::Bencher, baseline: bool| {
        b.iter_custom(|iters| {
            bench.rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    ds.records_replace(&before).await.expect("records reset");
                    let start = Instant::now();
                    let promoted = if baseline {
                        ds.baseline_attempt_handoff(new).await
                    } else {
                        ds.attempt_handoff(new).await
                    };
                    total += start.elapsed();
                    assert_eq!(promoted.expect("the handoff succeeds"), 3);
                }
                total
            })
        })
    };
    group.bench_function("baton", |b| timed(b, false));
    group.bench_function("baseline", |b| timed(b, true));
    group.finish();
}

fn write_statement_counts(counts: &BTreeMap<&'static str, i64>) {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("baton-bench-statements.json");
    let text = serde_json::to_string_pretty(counts).expect("a map of counts");
    std::fs::write(&path, text).expect("the counts are written");
}

fn database(c: &mut Criterion) {
    let bench = Bench::start();
    let counts = bench.count_statements();
    for (op, n) in &counts {
        println!("statements: {op}: {n}");
    }
    write_statement_counts(&counts);
    record_step(c, &bench);
    handoff(c, &bench);
}

criterion::criterion_group!(benches, database);
criterion::criterion_main!(benches);
