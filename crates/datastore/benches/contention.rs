//! The record step under contention: many executors, each with its own
//! connection, running the same operation against the same rows at once.
//!
//! Every Nexus of a rack executes the current target periodically, and
//! each execution starts with the record step. `records.rs` times one
//! step at a time with criterion; what it cannot show is how the step
//! behaves when dozens of executors hit the same rows together: whether
//! throughput keeps growing with concurrency, how the tail latency moves,
//! and how often PostgreSQL's SERIALIZABLE isolation makes an attempt
//! fail and be retried. This benchmark measures exactly that, for 1, 8,
//! 32 and 64 concurrent executors, each a `DataStore` of its own with a
//! pool of one connection, all in one multi-threaded tokio runtime:
//!
//! - Baton's record step, `records_ensure`: one guarded statement;
//! - the transactional baseline, `baseline_records_ensure`: the same
//!   work as BEGIN, reads, a compare in Rust, an insert and COMMIT;
//! - `SELECT 1` through the same retry wrapper: the floor, what one round
//!   trip to the server costs at that concurrency, so the record step's
//!   latency can be read as a multiple of it.
//!
//! The executing Nexus rotates over the active generation, and the rows
//! already exist (a running rack re-executes a target it has executed
//! before), so every executor reads and conflicts on the same six rows.
//!
//! Each executor runs its operation in a closed loop: a warm-up, then a
//! fixed measured period in which every operation started is timed (its
//! retries and their backoff included). Per operation and concurrency it
//! reports throughput (all executors together), p50 and p99 latency, and
//! the serialization retries per operation, read from the datastore's
//! `baton_serialization_retries_total` counter through a small `metrics`
//! recorder installed here. An operation that still fails after its
//! retries is counted as a failure and reported, not a panic.
//!
//! Modes, from the arguments: with `--bench` (as `cargo bench` passes),
//! the full run, 3 s measured per cell; with `--quick` as well, 0.3 s.
//! Without `--bench` (`cargo test --bench contention`, CI's smoke run) it
//! runs a few operations at 1 and 8 executors to prove that everything
//! works, and prints no timings. Other arguments are ignored. A timed run
//! prints a table and writes the figures to
//! `target/tmp/baton-bench-contention.json` for `cargo xtask bench`.
//!
//! The figures are for this machine: client and server share its cores,
//! so at high concurrency they measure the whole box, not PostgreSQL
//! alone.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_datastore::diesel;
use baton_datastore::diesel::QueryableByName;
use baton_datastore::diesel::sql_types::Integer;
use baton_datastore::sql::{load_one, statement};
use baton_datastore::{DataStore, Error};
use baton_test_utils::db::DataStoreTestExt;
use baton_types::RecordsToEnsure;
use baton_uuid_kinds::{BlueprintUuid, OmicronZoneUuid};
use metrics::{
    Counter, CounterFn, Gauge, Histogram, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use serde_json::json;
use tokio::sync::Barrier;

use common::Bench;

/// Concurrent executors in a timed run.
const EXECUTORS: [usize; 4] = [1, 8, 32, 64];
/// Concurrent executors in the smoke run.
const SMOKE_EXECUTORS: [usize; 2] = [1, 8];
/// Operations per executor in the smoke run.
const SMOKE_OPS: usize = 4;

/// The operation label of the floor's statement, for the retry counter.
const FLOOR_LABEL: &str = "select 1";

/// How long each executor runs, or how many operations.
#[derive(Clone, Copy, Debug)]
enum Plan {
    Timed {
        name: &'static str,
        warmup: Duration,
        measure: Duration,
    },
    /// The smoke run: this many operations, nothing claimed about time.
    Smoke,
}

impl Plan {
    fn from_args(args: &[String]) -> Plan {
        let has = |flag: &str| args.iter().any(|a| a == flag);
        match (has("--bench"), has("--quick")) {
            (false, _) => Plan::Smoke,
            (true, false) => Plan::Timed {
                name: "full",
                warmup: Duration::from_millis(500),
                measure: Duration::from_secs(3),
            },
            (true, true) => Plan::Timed {
                name: "quick",
                warmup: Duration::from_millis(100),
                measure: Duration::from_millis(300),
            },
        }
    }
}

/// The three operations measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Floor,
    Baton,
    Baseline,
}

impl Op {
    const ALL: [Op; 3] = [Op::Floor, Op::Baton, Op::Baseline];

    fn name(self) -> &'static str {
        match self {
            Op::Floor => "select 1",
            Op::Baton => "record step (baton)",
            Op::Baseline => "record step (baseline)",
        }
    }

    /// The `op` label the datastore counts this operation's retries
    /// under (its name in `DataStore::run`/`transaction`).
    fn label(self) -> &'static str {
        match self {
            Op::Floor => FLOOR_LABEL,
            Op::Baton => "records ensure",
            Op::Baseline => "baseline records ensure",
        }
    }
}

// ---------------------------------------------------------------------
// Counting serialization retries.

tokio::task_local! {
    /// The retries of the executor whose task is running: the datastore
    /// bumps the counter inside the operation's own future, so the
    /// recorder can tell which executor retried.
    static EXECUTOR_RETRIES: Arc<AtomicU64>;
}

/// A `metrics` recorder that counts one counter,
/// `baton_serialization_retries_total`, by its `op` label and by the
/// executor that retried; every other metric goes nowhere.
#[derive(Default)]
struct RetryRecorder {
    by_label: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
}

/// One registration of the counter: the label's total and, inside an
/// executor's task, that executor's count.
struct RetryCounter {
    label: Arc<AtomicU64>,
    executor: Option<Arc<AtomicU64>>,
}

impl CounterFn for RetryCounter {
    fn increment(&self, value: u64) {
        self.label.fetch_add(value, Ordering::Relaxed);
        if let Some(executor) = &self.executor {
            executor.fetch_add(value, Ordering::Relaxed);
        }
    }

    fn absolute(&self, value: u64) {
        // Not used by the datastore; kept monotonic if it ever is.
        self.label.fetch_max(value, Ordering::Relaxed);
    }
}

impl RetryRecorder {
    /// Every label counted so far, with its total.
    fn totals(&self) -> BTreeMap<String, u64> {
        let map = self.by_label.lock().unwrap();
        map.iter()
            .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
            .collect()
    }
}

impl Recorder for RetryRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        if key.name() != baton_datastore::SERIALIZATION_RETRIES {
            return Counter::noop();
        }
        let op = key
            .labels()
            .find(|l| l.key() == "op")
            .map(|l| l.value().to_owned())
            .unwrap_or_default();
        let label =
            self.by_label.lock().unwrap().entry(op).or_default().clone();
        let executor = EXECUTOR_RETRIES.try_with(Arc::clone).ok();
        Counter::from_arc(Arc::new(RetryCounter { label, executor }))
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

// ---------------------------------------------------------------------
// The database and the operations.

#[derive(QueryableByName)]
struct One {
    #[diesel(sql_type = Integer)]
    #[allow(dead_code)]
    n: i32,
}

/// The shared set-up on a multi-threaded runtime (the executors run in
/// parallel), with every record already there and generation 1 active:
/// what the record step finds in a running rack.
fn start() -> Bench {
    let bench = Bench::new(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime"),
    );
    bench
        .rt
        .block_on(bench.datastore().records_replace(&bench.in_control()))
        .expect("records set");
    bench
}

/// What one executor needs to run an operation.
struct Work {
    op: Op,
    target: BlueprintUuid,
    /// The active generation: the executing Nexus rotates over it.
    active: Vec<OmicronZoneUuid>,
    records: RecordsToEnsure,
}

impl Work {
    /// The operation once, as executor `executor`'s `n`th run.
    async fn once(
        &self,
        ds: &DataStore,
        executor: usize,
        n: usize,
    ) -> Result<(), Error> {
        let me = self.active[(executor + n) % self.active.len()];
        match self.op {
            Op::Floor => ds
                .run(FLOOR_LABEL, |conn| {
                    Box::pin(load_one::<_, One>(
                        statement("SELECT 1 AS n"),
                        conn,
                    ))
                })
                .await
                .map(drop),
            Op::Baton => ds
                .records_ensure(self.target, me, &self.records)
                .await
                .map(drop),
            Op::Baseline => ds
                .baseline_records_ensure(self.target, me, &self.records, None)
                .await
                .map(drop),
        }
    }
}

/// One executor's measured operations.
#[derive(Default)]
struct Samples {
    /// Latency of each successful measured operation.
    latencies: Vec<Duration>,
    /// Measured operations that failed after their retries.
    failures: u64,
    /// The first failure's message.
    first_failure: Option<String>,
    /// Serialization retries of the measured operations.
    retries: u64,
}

impl Samples {
    fn record(
        &mut self,
        outcome: Result<(), Error>,
        latency: Duration,
        retried: u64,
    ) {
        self.retries += retried;
        match outcome {
            Ok(()) => self.latencies.push(latency),
            Err(e) => {
                self.failures += 1;
                self.first_failure.get_or_insert(format!("{e}"));
            }
        }
    }
}

/// Runs `work` in a loop on `ds` as executor `executor`, after every
/// executor has connected.
async fn executor(
    ds: DataStore,
    work: Arc<Work>,
    executor: usize,
    plan: Plan,
    ready: Arc<Barrier>,
) -> Samples {
    let retries = EXECUTOR_RETRIES.with(Arc::clone);
    // The connection is opened before anyone starts the clock.
    let _ = work.once(&ds, executor, 0).await;
    ready.wait().await;
    let mut samples = Samples::default();
    match plan {
        Plan::Smoke => {
            for n in 1..=SMOKE_OPS {
                let before = retries.load(Ordering::Relaxed);
                let started = Instant::now();
                let outcome = work.once(&ds, executor, n).await;
                let retried = retries.load(Ordering::Relaxed) - before;
                samples.record(outcome, started.elapsed(), retried);
            }
        }
        Plan::Timed {
            warmup, measure, ..
        } => {
            let begin = Instant::now();
            let (measured, end) = (begin + warmup, begin + warmup + measure);
            let mut n = 1;
            loop {
                let before = retries.load(Ordering::Relaxed);
                let started = Instant::now();
                if started >= end {
                    break;
                }
                let outcome = work.once(&ds, executor, n).await;
                let latency = started.elapsed();
                let retried = retries.load(Ordering::Relaxed) - before;
                if started >= measured {
                    samples.record(outcome, latency, retried);
                }
                n += 1;
            }
        }
    }
    samples
}

/// The figures of one operation at one concurrency.
struct Cell {
    op: Op,
    executors: usize,
    ops: usize,
    failures: u64,
    first_failure: Option<String>,
    /// Operations per second, all executors together (timed runs).
    throughput: f64,
    p50: Duration,
    p99: Duration,
    retries: u64,
    /// Counted under each `op` label while this cell ran, warm-up
    /// included.
    labels: BTreeMap<String, u64>,
    /// The datastores' own count of retries while this cell ran, warm-up
    /// included: serialization failures and lost connections alike, a
    /// check that the recorder saw every serialization retry.
    datastore_retries: u64,
}

impl Cell {
    fn retries_per_op(&self) -> f64 {
        self.retries as f64 / (self.ops as u64 + self.failures).max(1) as f64
    }
}

/// Nearest-rank percentile of sorted latencies.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn run_cell(
    bench: &Bench,
    recorder: &RetryRecorder,
    stores: &[DataStore],
    op: Op,
    plan: Plan,
) -> Cell {
    let work = Arc::new(Work {
        op,
        target: bench.target(),
        active: bench.story.old_nexus.clone(),
        records: bench.records.clone(),
    });
    let labels_before = recorder.totals();
    let own_retries = || stores.iter().map(DataStore::retries).sum::<u64>();
    let own_before = own_retries();
    let ready = Arc::new(Barrier::new(stores.len()));
    let all: Vec<Samples> = bench.rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for (i, ds) in stores.iter().enumerate() {
            let run =
                executor(ds.clone(), work.clone(), i, plan, ready.clone());
            tasks.spawn(EXECUTOR_RETRIES.scope(Arc::default(), run));
        }
        let mut all = Vec::new();
        while let Some(done) = tasks.join_next().await {
            all.push(done.expect("no executor panicked"));
        }
        all
    });
    let datastore_retries = own_retries() - own_before;
    let labels = recorder
        .totals()
        .into_iter()
        .filter_map(|(label, total)| {
            let counted =
                total - labels_before.get(&label).copied().unwrap_or(0);
            (counted > 0).then_some((label, counted))
        })
        .collect();
    let mut latencies: Vec<Duration> = all
        .iter()
        .flat_map(|s| s.latencies.iter().copied())
        .collect();
    latencies.sort_unstable();
    let ops = latencies.len();
    let throughput = match plan {
        Plan::Timed { measure, .. } => ops as f64 / measure.as_secs_f64(),
        Plan::Smoke => 0.0,
    };
    Cell {
        op,
        executors: stores.len(),
        ops,
        failures: all.iter().map(|s| s.failures).sum(),
        first_failure: all.iter().find_map(|s| s.first_failure.clone()),
        throughput,
        p50: percentile(&latencies, 0.50),
        p99: percentile(&latencies, 0.99),
        retries: all.iter().map(|s| s.retries).sum(),
        labels,
        datastore_retries,
    }
}

// ---------------------------------------------------------------------
// Reporting.

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn time(d: Duration) -> String {
    let us = micros(d);
    if us >= 1e3 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.0} µs")
    }
}

/// The cell of `op` at `executors`.
fn find(cells: &[Cell], op: Op, executors: usize) -> &Cell {
    cells
        .iter()
        .find(|c| c.op == op && c.executors == executors)
        .expect("every cell was run")
}

/// This cell's p50 as a multiple of the floor's at the same concurrency.
fn floor_multiple(cells: &[Cell], cell: &Cell) -> f64 {
    let floor = find(cells, Op::Floor, cell.executors);
    micros(cell.p50) / micros(floor.p50).max(f64::MIN_POSITIVE)
}

/// Baton's throughput over the baseline's at `executors`.
fn baton_vs_baseline(cells: &[Cell], executors: usize) -> f64 {
    let baton = find(cells, Op::Baton, executors).throughput;
    let baseline = find(cells, Op::Baseline, executors).throughput;
    baton / baseline.max(f64::MIN_POSITIVE)
}

/// Every label counted over the run, summed over cells.
fn labels_counted(cells: &[Cell]) -> BTreeMap<String, u64> {
    let mut all = BTreeMap::new();
    for cell in cells {
        for (label, n) in &cell.labels {
            *all.entry(label.clone()).or_insert(0) += n;
        }
    }
    all
}

fn table(cells: &[Cell], plan: Plan) -> String {
    use std::fmt::Write;
    let Plan::Timed {
        name,
        warmup,
        measure,
    } = plan
    else {
        unreachable!("only timed runs print a table");
    };
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "\nContention: the record step with N executors at once, one \
         connection each ({name} run: {:.1} s warm-up, {:.1} s measured \
         per row; {} cores shared by client and server)",
        warmup.as_secs_f64(),
        measure.as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let _ = writeln!(
        w,
        "{:>5}  {:<24}{:>8}{:>10}{:>10}{:>10}{:>9}{:>12}{:>6}{:>11}",
        "execs",
        "operation",
        "ops",
        "ops/s",
        "p50",
        "p99",
        "retries",
        "retries/op",
        "fail",
        "p50/floor",
    );
    for executors in EXECUTORS {
        for op in Op::ALL {
            let c = find(cells, op, executors);
            let _ = writeln!(
                w,
                "{:>5}  {:<24}{:>8}{:>10.0}{:>10}{:>10}{:>9}{:>12.4}{:>6}{:>10.2}x",
                executors,
                op.name(),
                c.ops,
                c.throughput,
                time(c.p50),
                time(c.p99),
                c.retries,
                c.retries_per_op(),
                c.failures,
                floor_multiple(cells, c),
            );
        }
    }
    let _ = writeln!(
        w,
        "\n{:>5}  {:>28}{:>30}",
        "execs", "Baton p50 / SELECT 1 p50", "Baton ops/s / baseline ops/s"
    );
    for executors in EXECUTORS {
        let _ = writeln!(
            w,
            "{:>5}  {:>27.2}x{:>29.2}x",
            executors,
            floor_multiple(cells, find(cells, Op::Baton, executors)),
            baton_vs_baseline(cells, executors),
        );
    }
    let _ = writeln!(
        w,
        "\nretries: counter {}, label op = {:?} (Baton), {:?} (baseline), \
         {:?} (floor); measured operations only",
        baton_datastore::SERIALIZATION_RETRIES,
        Op::Baton.label(),
        Op::Baseline.label(),
        Op::Floor.label(),
    );
    let counted = labels_counted(cells);
    let _ = if counted.is_empty() {
        writeln!(w, "labels counted over the run, warm-up included: none")
    } else {
        let list: Vec<String> =
            counted.iter().map(|(l, n)| format!("{l:?} {n}")).collect();
        writeln!(
            w,
            "labels counted over the run, warm-up included: {}",
            list.join(", ")
        )
    };
    let _ = writeln!(
        w,
        "the datastores' own retry count over the run, warm-up included \
         (serialization failures and lost connections): {}",
        cells.iter().map(|c| c.datastore_retries).sum::<u64>()
    );
    for c in cells.iter().filter(|c| c.failures > 0) {
        let _ = writeln!(
            w,
            "failures: {} at {} executors: {} (first: {})",
            c.op.name(),
            c.executors,
            c.failures,
            c.first_failure.as_deref().unwrap_or("?"),
        );
    }
    out
}

fn to_json(cells: &[Cell], plan: Plan) -> serde_json::Value {
    let (mode, warmup, measure) = match plan {
        Plan::Timed {
            name,
            warmup,
            measure,
        } => (name, warmup.as_secs_f64(), measure.as_secs_f64()),
        Plan::Smoke => ("smoke", 0.0, 0.0),
    };
    let rows: Vec<serde_json::Value> = cells
        .iter()
        .map(|c| {
            json!({
                "executors": c.executors,
                "op": c.op.name(),
                "retry_label": c.op.label(),
                "ops": c.ops,
                "failures": c.failures,
                "throughput": c.throughput,
                "p50_us": micros(c.p50),
                "p99_us": micros(c.p99),
                "retries": c.retries,
                "retries_per_op": c.retries_per_op(),
                "floor_multiple": floor_multiple(cells, c),
            })
        })
        .collect();
    let executors: Vec<usize> = {
        let mut e: Vec<usize> = cells.iter().map(|c| c.executors).collect();
        e.dedup();
        e
    };
    let summary: Vec<serde_json::Value> = executors
        .iter()
        .map(|&n| {
            json!({
                "executors": n,
                "baton_p50_floor_multiple":
                    floor_multiple(cells, find(cells, Op::Baton, n)),
                "baton_vs_baseline_throughput": baton_vs_baseline(cells, n),
            })
        })
        .collect();
    json!({
        "mode": mode,
        "warmup_s": warmup,
        "measure_s": measure,
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "retry_counter": baton_datastore::SERIALIZATION_RETRIES,
        "labels_counted": labels_counted(cells),
        "datastore_retries":
            cells.iter().map(|c| c.datastore_retries).sum::<u64>(),
        "rows": rows,
        "summary": summary,
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `--list`, as criterion answers it: one benchmark, no tests.
    if args.iter().any(|a| a == "--list") {
        println!("contention: benchmark");
        return;
    }
    let plan = Plan::from_args(&args);
    let recorder: &'static RetryRecorder =
        Box::leak(Box::new(RetryRecorder::default()));
    metrics::set_global_recorder(recorder)
        .expect("no other metrics recorder in this process");
    let bench = start();
    let counts: &[usize] = match plan {
        Plan::Timed { .. } => &EXECUTORS,
        Plan::Smoke => &SMOKE_EXECUTORS,
    };
    let mut cells = Vec::new();
    for &executors in counts {
        let stores: Vec<DataStore> =
            (0..executors).map(|_| bench.datastore()).collect();
        for op in Op::ALL {
            let cell = run_cell(&bench, recorder, &stores, op, plan);
            if let Plan::Timed { .. } = plan {
                eprintln!(
                    "contention: {executors} executors, {}: {} ops",
                    op.name(),
                    cell.ops
                );
            }
            cells.push(cell);
        }
        drop(stores);
    }
    let report = to_json(&cells, plan);
    match plan {
        Plan::Smoke => {
            // Proof that it runs, not a measurement: every operation
            // must have succeeded, and the report must build.
            for c in &cells {
                assert_eq!(
                    c.failures,
                    0,
                    "{} at {} executors failed: {:?}",
                    c.op.name(),
                    c.executors,
                    c.first_failure
                );
                assert_eq!(c.ops, c.executors * SMOKE_OPS);
            }
            assert!(report["rows"].as_array().is_some_and(|r| r.len() == 6));
            println!(
                "contention: smoke run ok ({} operations at 1 and 8 \
                 executors; run `cargo bench --bench contention` to time)",
                cells.iter().map(|c| c.ops).sum::<usize>()
            );
        }
        Plan::Timed { .. } => {
            print!("{}", table(&cells, plan));
            let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join("baton-bench-contention.json");
            let text =
                serde_json::to_string_pretty(&report).expect("a JSON report");
            std::fs::write(&path, text).expect("the report is written");
            println!("written to {}", path.display());
        }
    }
}
