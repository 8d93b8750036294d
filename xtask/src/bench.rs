//! `cargo xtask bench`: runs every benchmark, then prints their tables:
//! criterion's saved estimates with the statement counts the database
//! benchmark wrote, the contention benchmark's figures, the handoff
//! window's and the failover times of a Patroni cluster (all three from
//! the JSON their harnesses write).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::{cargo, tidy};

const SLEDS: [&str; 4] = ["3", "32", "320", "3200"];

/// The benchmark targets, named: `--benches` would also take every
/// library and binary, whose test harness rejects criterion's flags.
const BENCHES: [&str; 14] = [
    "--bench",
    "blueprint",
    "--bench",
    "fence",
    "--bench",
    "records",
    "--bench",
    "handoff",
    "--bench",
    "contention",
    "--bench",
    "window",
    "--bench",
    "failover",
];

/// Compiles the benchmarks and runs each once (criterion's test mode), so
/// CI notices when one stops building or running, without timing anything.
pub(crate) fn smoke() -> Result<()> {
    let mut command = vec!["test", "--workspace", "--locked"];
    command.extend(BENCHES);
    cargo(&command)
}

pub(crate) fn run(quick: bool) -> Result<()> {
    let target = target_dir();
    let criterion = target.join("criterion");
    // Only this run's figures go into the table.
    if criterion.exists() {
        std::fs::remove_dir_all(&criterion)
            .with_context(|| format!("cannot clear {}", criterion.display()))?;
    }
    let started = Instant::now();
    let mut command = vec!["bench", "--workspace", "--locked"];
    command.extend(BENCHES);
    if quick {
        command.extend(["--", "--quick"]);
    }
    cargo(&command)?;
    let estimates = Estimates::read(&criterion)?;
    let statements = read_statements(&target)?;
    print!("{}", table(&estimates, &statements)?);
    print!("{}", crate::contention::table(&target)?);
    print!("\n{}", harness_table(&target, "window")?);
    print!("\n{}", harness_table(&target, "failover")?);
    println!(
        "\n{} run in {:.0} s (including the build); machine: {}",
        if quick { "quick" } else { "full" },
        started.elapsed().as_secs_f64(),
        machine()
    );
    Ok(())
}

/// A harness's table (the handoff window's, the failover's), as it
/// printed it.
fn harness_table(target: &Path, name: &str) -> Result<String> {
    let path = target.join("tmp").join(format!("baton-bench-{name}.json"));
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let report: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", path.display()))?;
    report["table"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{} has no table", path.display()))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| tidy::workspace_root().join("target"))
}

/// A benchmark's median time and throughput, by criterion's full id.
struct Estimates(BTreeMap<String, (f64, Option<Value>)>);

impl Estimates {
    fn read(criterion: &Path) -> Result<Estimates> {
        let mut found = BTreeMap::new();
        let mut dirs = vec![criterion.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir)
                .with_context(|| format!("cannot read {}", dir.display()))?
            {
                let path = entry?.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.ends_with("new/benchmark.json") {
                    let bench = json(&path)?;
                    let estimates =
                        json(&path.with_file_name("estimates.json"))?;
                    let id = bench["full_id"]
                        .as_str()
                        .context("benchmark.json without full_id")?
                        .to_owned();
                    let median = estimates["median"]["point_estimate"]
                        .as_f64()
                        .context("estimates.json without a median")?;
                    let throughput = bench.get("throughput").cloned();
                    found.insert(id, (median, throughput));
                }
            }
        }
        Ok(Estimates(found))
    }

    /// The median in nanoseconds.
    fn median(&self, id: &str) -> Result<f64> {
        self.0
            .get(id)
            .map(|(median, _)| *median)
            .with_context(|| format!("no result for benchmark {id:?}"))
    }

    fn throughput(&self, id: &str, kind: &str) -> Result<f64> {
        self.0
            .get(id)
            .and_then(|(_, t)| t.as_ref()?.get(kind)?.as_f64())
            .with_context(|| format!("benchmark {id:?} has no {kind} count"))
    }
}

fn json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", path.display()))
}

fn read_statements(target: &Path) -> Result<BTreeMap<String, i64>> {
    let path = target.join("tmp").join("baton-bench-statements.json");
    let value = json(&path)?;
    let map = value
        .as_object()
        .context("statement counts are not a map")?;
    map.iter()
        .map(|(k, v)| {
            let n = v.as_i64().context("a statement count is not a number")?;
            Ok((k.clone(), n))
        })
        .collect()
}

fn time(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.0} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn table(
    est: &Estimates,
    statements: &BTreeMap<String, i64>,
) -> Result<String> {
    use std::fmt::Write;
    let mut out = String::new();
    let w = &mut out;
    writeln!(w, "\nBlueprints (pure, no I/O): medians")?;
    writeln!(
        w,
        "{:<22}{:>12}{:>12}{:>12}{:>12}",
        "sleds", SLEDS[0], SLEDS[1], SLEDS[2], SLEDS[3]
    )?;
    let row = |w: &mut String,
               label: &str,
               f: &dyn Fn(&str) -> Result<String>|
     -> Result<()> {
        write!(w, "{label:<22}")?;
        for sleds in SLEDS {
            write!(w, "{:>12}", f(sleds)?)?;
        }
        writeln!(w)?;
        Ok(())
    };
    row(w, "zones", &|s| {
        Ok(format!(
            "{:.0}",
            est.throughput(&format!("classify/{s}"), "Elements")?
        ))
    })?;
    for op in ["classify", "validate"] {
        row(w, &format!("{op} (time)"), &|s| {
            Ok(time(est.median(&format!("{op}/{s}"))?))
        })?;
        row(w, &format!("{op} (ns/zone)"), &|s| {
            let id = format!("{op}/{s}");
            Ok(format!(
                "{:.1}",
                est.median(&id)? / est.throughput(&id, "Elements")?
            ))
        })?;
    }
    row(w, "parse (MB/s)", &|s| {
        let id = format!("parse/{s}");
        // bytes per nanosecond is GB/s; times 1,000 is MB/s.
        Ok(format!(
            "{:.0}",
            est.throughput(&id, "Bytes")? / est.median(&id)? * 1e3
        ))
    })?;
    row(w, "document (MB)", &|s| {
        Ok(format!(
            "{:.2}",
            est.throughput(&format!("parse/{s}"), "Bytes")? / 1e6
        ))
    })?;
    let per_zone = |s: &str| -> Result<f64> {
        let id = format!("classify/{s}");
        Ok(est.median(&id)? / est.throughput(&id, "Elements")?)
    };
    writeln!(
        w,
        "classify per zone, 3200 sleds / 32 sleds: {:.2}x",
        per_zone("3200")? / per_zone("32")?
    )?;

    let count = |name: &str| -> Result<i64> {
        statements
            .get(name)
            .copied()
            .with_context(|| format!("no statement count for {name:?}"))
    };
    writeln!(
        w,
        "\nDatabase (local PostgreSQL over a Unix socket): medians, Baton vs. the transactional baseline"
    )?;
    writeln!(
        w,
        "{:<26}{:>7}{:>11}{:>7}{:>11}{:>8}",
        "operation", "stmts", "Baton", "stmts", "baseline", "ratio"
    )?;
    let pairs = [
        (
            "record step, 1 executor",
            "record step",
            "record step/baton/1",
            "record step/baseline/1",
        ),
        (
            "record step, 8 executors",
            "record step",
            "record step/baton/8",
            "record step/baseline/8",
        ),
        ("handoff", "handoff", "handoff/baton", "handoff/baseline"),
    ];
    for (label, op, ours, theirs) in pairs {
        let (a, b) = (est.median(ours)?, est.median(theirs)?);
        writeln!(
            w,
            "{label:<26}{:>7}{:>11}{:>7}{:>11}{:>7.2}x",
            count(&format!("{op} (baton)"))?,
            time(a),
            count(&format!("{op} (baseline)"))?,
            time(b),
            b / a
        )?;
    }
    for op in ["access check", "cleanup of expunged records"] {
        writeln!(w, "{op:<26}{:>7}", count(op)?)?;
    }
    writeln!(w, "\nLifecycle (real Nexus instances)")?;
    writeln!(
        w,
        "last old Nexus quiesced -> first new Nexus ready: {} (median)",
        time(est.median("lifecycle/handoff")?)
    )?;
    Ok(out)
}

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "?".into());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpu}, {cores} cores")
}
