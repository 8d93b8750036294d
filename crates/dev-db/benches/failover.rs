//! How long the service cannot write when the primary of a Patroni
//! cluster dies: from the `SIGKILL` to the first committed write on the
//! new primary, through the cluster's multi-host URL
//! (`target_session_attrs=read-write&connect_timeout=2`).
//!
//! A real cluster ([`HaCluster`]: three etcd members, two PostgreSQL
//! nodes under Patroni, `synchronous_mode`, all on loopback addresses)
//! per Patroni setting: its defaults (`ttl` 30, `loop_wait` 10,
//! `retry_timeout` 10) and the tightest it documents as safe (20, 1, 3).
//! Each round waits for a healthy cluster (a leader and a synchronous
//! standby), writes through it for a random part of Patroni's loop (the
//! leader renews its key once a loop, and the failover's length depends
//! on when it last did), kills the leader and starts the clock, then
//! writes one row per try until a try commits:
//!
//! - *leader node killed*: the leader's Patroni and its PostgreSQL with
//!   every backend, all with `SIGKILL` ([`HaCluster::kill_node`]), as a
//!   crash of its machine would. The standby is promoted once the
//!   leader's key in etcd expires. The killed node is then started
//!   again and rejoins as a standby before the next round.
//! - *leader's postgres killed*: its postmaster and backends only
//!   ([`HaCluster::kill_postgres`]); its Patroni stays, and either starts
//!   it again or lets the standby take over.
//!
//! The client is `psql`, one process per try (a fresh connection, as a
//! pool opening a new one would), with a backoff of 10 ms doubling to
//! 50 ms after a failed try: the figures are seconds, so a try's own
//! cost (a few milliseconds to start `psql`) and the backoff are within
//! their resolution. A try's row returns the address of the server that
//! committed it (`inet_server_addr()`), so the end point is known to be
//! a primary's commit and the table says which node took it.
//!
//! `cargo bench -p baton-dev-db --bench failover` runs three rounds of
//! each fault at each setting; `--quick` one of each. Run as a test
//! (`cargo test --bench failover`, CI's smoke run) it runs one round of
//! each fault at the tightest setting only. `--rounds N` or
//! `BATON_BENCH_FAILOVER_ROUNDS=N` sets the rounds. The results go to
//! stdout and to `target/tmp/baton-bench-failover.json` for `cargo xtask
//! bench`. No figure here is asserted on.

use std::fmt::Write as _;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use baton_dev_db::{HaCluster, PatroniTimings, PgBinaries};
use camino::Utf8PathBuf;
use serde_json::json;
use slog::{Logger, o};

/// How long one round may wait for its first write, and a cluster for
/// health: a failover at Patroni's defaults takes up to `ttl` plus
/// `loop_wait` (40 s); a rejoin after `pg_rewind` a few loops more.
const PATIENCE: Duration = Duration::from_secs(180);

/// The backoff after a failed try: the first, and its cap.
const BACKOFF_FIRST: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_millis(50);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// [`HaCluster::kill_node`] of the leader.
    Node,
    /// [`HaCluster::kill_postgres`] of the leader.
    Postgres,
}

impl Fault {
    fn label(self) -> &'static str {
        match self {
            Fault::Node => "leader node killed (Patroni + postgres)",
            Fault::Postgres => "leader's postgres killed (Patroni stays)",
        }
    }
}

/// One round's outcome.
struct Round {
    /// From the kill to the first committed write's acknowledgement.
    elapsed: Duration,
    /// Tries made, the committed one included.
    tries: u32,
    /// Whether the write landed on the node that was killed.
    same_node: bool,
    /// Why the try before the committed one failed.
    last_error: String,
}

/// The client: `psql` with the cluster's multi-host URL.
struct Writer {
    psql: Utf8PathBuf,
    url: String,
}

impl Writer {
    /// One try: a connection, one statement. The committing server's
    /// address, or why the try failed (psql's own words).
    fn exec(&self, sql: &str) -> Result<String, String> {
        let output = Command::new(&self.psql)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .arg("-d")
            .arg(&self.url)
            .arg("-c")
            .arg(sql)
            .env("LC_ALL", "C")
            .env("PGAPPNAME", "baton-bench-failover")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.psql))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            let err = String::from_utf8_lossy(&output.stderr);
            Err(err.split_whitespace().collect::<Vec<_>>().join(" "))
        }
    }

    fn write(&self, tag: &str) -> Result<String, String> {
        self.exec(&format!(
            "INSERT INTO failover_probe (tag) VALUES ('{tag}') \
             RETURNING host(inet_server_addr())"
        ))
    }
}

/// Waits `d` before the next try. Each loop that calls this is bounded
/// by a deadline; the pause is the backoff between tries, not a wait in
/// place of a condition.
fn pause(d: Duration) {
    #[allow(clippy::disallowed_methods)]
    std::thread::sleep(d);
}

/// Writes one row per try from now until one commits, or fails naming
/// the cluster's state and the last try's error.
fn first_write(
    cluster: &HaCluster,
    writer: &Writer,
    killed_at: Instant,
    tag: &str,
) -> Result<(Duration, u32, String, String), String> {
    let deadline = killed_at + PATIENCE;
    let mut backoff = BACKOFF_FIRST;
    let mut tries = 0;
    let mut last_error = String::new();
    loop {
        tries += 1;
        match writer.write(tag) {
            Ok(server) => {
                return Ok((killed_at.elapsed(), tries, server, last_error));
            }
            Err(e) => last_error = e,
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no write committed within {} s of the kill ({tries} \
                 tries); the last try: {last_error}; the cluster: {}",
                PATIENCE.as_secs(),
                cluster.describe()
            ));
        }
        pause(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One round: a healthy cluster, writes through it for a random part of
/// Patroni's loop, the kill, the first write after it; then the cluster
/// made whole again.
fn round(
    cluster: &mut HaCluster,
    writer: &Writer,
    fault: Fault,
    tag: &str,
    loop_wait: u32,
) -> Result<Round, String> {
    let leader = cluster
        .wait_healthy(PATIENCE)
        .map_err(|e| format!("the cluster is not healthy before {tag}: {e}"))?;
    // A steady client writes for a random part of Patroni's loop before
    // the kill: the leader renews its key once per loop, and the time to
    // the failover depends on how long before the kill it last did.
    // Killing as soon as the cluster turns healthy (which happens in the
    // leader's loop) would measure one phase of that loop only.
    let steady = Instant::now() + jitter(loop_wait);
    let mut before = 0;
    while before == 0 || Instant::now() < steady {
        writer
            .write(&format!("{tag} before"))
            .map_err(|e| format!("a write before {tag} failed: {e}"))?;
        before += 1;
    }
    let killed_host = cluster.postgres_addr(leader).ip().to_string();
    let killed_at = Instant::now();
    match fault {
        Fault::Node => cluster.kill_node(leader),
        Fault::Postgres => cluster
            .kill_postgres(leader)
            .map_err(|e| format!("cannot kill the leader's postgres: {e}"))?,
    }
    let (elapsed, tries, server, last_error) =
        first_write(cluster, writer, killed_at, tag)?;
    if fault == Fault::Node {
        cluster
            .start_node(leader)
            .map_err(|e| format!("cannot start node {leader} again: {e}"))?;
    }
    Ok(Round {
        elapsed,
        tries,
        same_node: server == killed_host,
        last_error,
    })
}

/// A time in `[0, loop_wait)` seconds, picked anew each call.
fn jitter(loop_wait: u32) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64 ^ d.as_secs())
        .unwrap_or(0);
    // xorshift, to spread the clock's low bits.
    let mut x = nanos | 1;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    Duration::from_millis(x % (u64::from(loop_wait) * 1000).max(1))
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    };
    (v[0], median, v[n - 1])
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

struct Setting {
    name: &'static str,
    timings: PatroniTimings,
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    let quick = args.iter().any(|a| a == "--quick");
    let flag = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1).cloned());
    let rounds: u32 = match flag
        .or_else(|| std::env::var("BATON_BENCH_FAILOVER_ROUNDS").ok())
    {
        Some(n) => {
            n.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                format!("rounds must be a positive count: {n}")
            })?
        }
        None if bench && !quick => 3,
        None => 1,
    };
    let tightest = Setting {
        name: "tightest",
        timings: PatroniTimings::TIGHTEST,
    };
    let defaults = Setting {
        name: "defaults",
        timings: PatroniTimings::DEFAULTS,
    };
    // As a test (CI's smoke run): the tightest setting only, to stay short.
    let settings = if bench {
        vec![tightest, defaults]
    } else {
        vec![tightest]
    };
    let bins = PgBinaries::find().map_err(|e| e.to_string())?;
    let psql = bins.bin_dir().join("psql");
    let log = Logger::root(slog::Discard, o!());
    let started = Instant::now();
    let mut table = format!(
        "Failover: SIGKILL of the leader -> first committed write on the \
         new primary, through the multi-host URL (psql, a new connection \
         per try, backoff {} to {} ms); 2 PostgreSQL nodes under Patroni, \
         synchronous_mode, 3 etcd members; {rounds} round(s) each\n\
         {:<42} {:<24} {:>9} {:>9} {:>9}  {}\n",
        BACKOFF_FIRST.as_millis(),
        BACKOFF_MAX.as_millis(),
        "fault",
        "Patroni ttl/loop/retry",
        "min",
        "median",
        "max",
        "new primary (rounds)",
    );
    let mut json_rows = Vec::new();
    for setting in &settings {
        let t = setting.timings;
        let cluster_started = Instant::now();
        let mut cluster =
            HaCluster::builder().timings(t).start(&log).map_err(|e| {
                format!("cannot start the {} cluster: {e}", setting.name)
            })?;
        let boot = cluster_started.elapsed();
        let writer = Writer {
            psql: psql.clone(),
            url: cluster.url(),
        };
        writer
            .exec(
                "CREATE TABLE IF NOT EXISTS failover_probe (id bigserial \
                 PRIMARY KEY, tag text NOT NULL, at timestamptz NOT NULL \
                 DEFAULT clock_timestamp())",
            )
            .map_err(|e| format!("cannot create the probe table: {e}"))?;
        let mut results: Vec<(Fault, Vec<Round>)> =
            vec![(Fault::Node, Vec::new()), (Fault::Postgres, Vec::new())];
        for r in 0..rounds {
            for (fault, done) in &mut results {
                let tag = format!("{} {fault:?} round {r}", setting.name);
                let outcome =
                    round(&mut cluster, &writer, *fault, &tag, t.loop_wait)?;
                println!(
                    "{tag}: first write {} after the kill ({} tries, on the \
                     {} node; the try before it: {})",
                    secs(outcome.elapsed),
                    outcome.tries,
                    if outcome.same_node { "killed" } else { "other" },
                    if outcome.last_error.is_empty() {
                        "none"
                    } else {
                        &outcome.last_error
                    },
                );
                done.push(outcome);
            }
        }
        for (fault, done) in &results {
            let (min, median, max) =
                stats(done.iter().map(|r| r.elapsed).collect());
            let same = done.iter().filter(|r| r.same_node).count();
            let other = done.len() - same;
            let on = match (same, other) {
                (0, n) => format!("the other node ({n})"),
                (n, 0) => format!("the killed node ({n})"),
                (s, o) => format!("killed node ({s}), other ({o})"),
            };
            let timings = format!(
                "{} {}/{}/{}",
                setting.name, t.ttl, t.loop_wait, t.retry_timeout
            );
            writeln!(
                table,
                "{:<42} {:<24} {:>9} {:>9} {:>9}  {on}",
                fault.label(),
                timings,
                secs(min),
                secs(median),
                secs(max),
            )
            .map_err(|e| e.to_string())?;
            json_rows.push(json!({
                "fault": fault.label(),
                "setting": setting.name,
                "ttl": t.ttl,
                "loop_wait": t.loop_wait,
                "retry_timeout": t.retry_timeout,
                "rounds": done.len(),
                "seconds": done.iter().map(|r| r.elapsed.as_secs_f64()).collect::<Vec<_>>(),
                "tries": done.iter().map(|r| r.tries).collect::<Vec<_>>(),
                "on_killed_node": same,
                "min_s": min.as_secs_f64(),
                "median_s": median.as_secs_f64(),
                "max_s": max.as_secs_f64(),
            }));
        }
        println!(
            "{} cluster: started in {}, rounds done {} after",
            setting.name,
            secs(boot),
            secs(cluster_started.elapsed())
        );
    }
    print!("{table}");
    println!("({:.0} s)", started.elapsed().as_secs_f64());
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("baton-bench-failover.json");
    let text = serde_json::to_string_pretty(&json!({
        "rounds": rounds,
        "rows": json_rows,
        "table": table,
    }))
    .map_err(|e| e.to_string())?;
    std::fs::write(&path, text)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("failover benchmark: {e}");
            ExitCode::FAILURE
        }
    }
}
