//! The "Contention" table of `cargo xtask bench`, from the report that
//! `crates/datastore/benches/contention.rs` writes to
//! `target/tmp/baton-bench-contention.json`: the record step, its
//! transactional baseline and a `SELECT 1` floor with 1 to 64 executors
//! at once.

use std::fmt::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

/// The table from the report under `target` (the cargo target dir).
pub(crate) fn table(target: &Path) -> Result<String> {
    let path = target.join("tmp").join("baton-bench-contention.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let report: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    format(&report).with_context(|| {
        format!("{} is not a contention report", path.display())
    })
}

fn num(v: &Value, key: &str) -> Result<f64> {
    v[key]
        .as_f64()
        .with_context(|| format!("no number {key:?}"))
}

fn text<'v>(v: &'v Value, key: &str) -> Result<&'v str> {
    v[key]
        .as_str()
        .with_context(|| format!("no string {key:?}"))
}

fn list<'v>(v: &'v Value, key: &str) -> Result<&'v Vec<Value>> {
    v[key]
        .as_array()
        .with_context(|| format!("no list {key:?}"))
}

fn micros(us: f64) -> String {
    if us >= 1e3 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.0} µs")
    }
}

fn format(report: &Value) -> Result<String> {
    let mut out = String::new();
    let w = &mut out;
    writeln!(
        w,
        "\nContention: N executors at once, one connection each ({} run, \
         {} s measured per row, {} cores for client and server)",
        text(report, "mode")?,
        num(report, "measure_s")?,
        num(report, "cores")?,
    )?;
    writeln!(
        w,
        "{:>5}  {:<24}{:>9}{:>11}{:>11}{:>12}{:>6}{:>11}",
        "execs",
        "operation",
        "ops/s",
        "p50",
        "p99",
        "retries/op",
        "fail",
        "p50/floor"
    )?;
    for row in list(report, "rows")? {
        writeln!(
            w,
            "{:>5}  {:<24}{:>9.0}{:>11}{:>11}{:>12.4}{:>6}{:>10.2}x",
            num(row, "executors")?,
            text(row, "op")?,
            num(row, "throughput")?,
            micros(num(row, "p50_us")?),
            micros(num(row, "p99_us")?),
            num(row, "retries_per_op")?,
            num(row, "failures")?,
            num(row, "floor_multiple")?,
        )?;
    }
    writeln!(
        w,
        "{:>5}  {:>28}{:>32}",
        "execs", "Baton p50 / SELECT 1 p50", "Baton ops/s / baseline ops/s"
    )?;
    for row in list(report, "summary")? {
        writeln!(
            w,
            "{:>5}  {:>27.2}x{:>31.2}x",
            num(row, "executors")?,
            num(row, "baton_p50_floor_multiple")?,
            num(row, "baton_vs_baseline_throughput")?,
        )?;
    }
    let mut labels: Vec<&str> = Vec::new();
    for row in list(report, "rows")? {
        let label = text(row, "retry_label")?;
        if !labels.contains(&label) {
            labels.push(label);
        }
    }
    let seen = report["labels_counted"]
        .as_object()
        .context("no map \"labels_counted\"")?;
    let seen: Vec<String> =
        seen.iter().map(|(l, n)| format!("{l:?} {n}")).collect();
    writeln!(
        w,
        "retries: {} with op = {}; counted over the run: {}",
        text(report, "retry_counter")?,
        labels
            .iter()
            .map(|l| format!("{l:?}"))
            .collect::<Vec<_>>()
            .join(", "),
        if seen.is_empty() {
            "none".to_owned()
        } else {
            seen.join(", ")
        },
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::format;

    #[test]
    fn the_table_reads_the_report() {
        let report = serde_json::json!({
            "cores": 2,
            "labels_counted": {"baseline records ensure": 7},
            "measure_s": 3.0,
            "mode": "full",
            "retry_counter": "baton_serialization_retries_total",
            "rows": [
                {"executors": 64, "op": "select 1", "retry_label": "select 1",
                 "throughput": 27830.4, "p50_us": 850.2, "p99_us": 4110.0,
                 "retries_per_op": 0.0, "failures": 0, "floor_multiple": 1.0,
                 "ops": 83491, "retries": 0},
                {"executors": 64, "op": "record step (baton)",
                 "retry_label": "records ensure", "throughput": 8210.0,
                 "p50_us": 7940.0, "p99_us": 14850.0, "retries_per_op": 0.0,
                 "failures": 0, "floor_multiple": 9.3388, "ops": 24630,
                 "retries": 0},
                {"executors": 64, "op": "record step (baseline)",
                 "retry_label": "baseline records ensure",
                 "throughput": 3183.0, "p50_us": 19810.0, "p99_us": 26300.0,
                 "retries_per_op": 0.00073, "failures": 2,
                 "floor_multiple": 23.3, "ops": 9549, "retries": 7}
            ],
            "summary": [
                {"executors": 64, "baton_p50_floor_multiple": 9.3388,
                 "baton_vs_baseline_throughput": 2.5794}
            ]
        });
        let table = format(&report).unwrap();
        let want = "
Contention: N executors at once, one connection each (full run, 3 s measured per row, 2 cores for client and server)
execs  operation                   ops/s        p50        p99  retries/op  fail  p50/floor
   64  select 1                    27830     850 µs    4.11 ms      0.0000     0      1.00x
   64  record step (baton)          8210    7.94 ms   14.85 ms      0.0000     0      9.34x
   64  record step (baseline)       3183   19.81 ms   26.30 ms      0.0007     2     23.30x
execs      Baton p50 / SELECT 1 p50    Baton ops/s / baseline ops/s
   64                         9.34x                           2.58x
retries: baton_serialization_retries_total with op = \"select 1\", \"records ensure\", \"baseline records ensure\"; counted over the run: \"baseline records ensure\" 7
";
        assert_eq!(table, want, "got:\n{table}");
    }

    #[test]
    fn a_report_without_rows_is_an_error() {
        let report = serde_json::json!({"mode": "full", "measure_s": 3.0,
                                        "cores": 2});
        assert!(format(&report).is_err());
    }
}
