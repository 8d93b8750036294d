//! The handoff on a database that fails over on its own: PostgreSQL under
//! Patroni and etcd (`baton_dev_db::HaCluster`, synchronous replication,
//! Patroni's tightest documented timings), three generation-1 and three
//! generation-2 `baton-ledger` processes on the cluster's multi-host URL,
//! clients writing through the handoff, and one real fault injected at a
//! chosen phase of the handoff, then healed:
//!
//! - the leader killed (Patroni and its PostgreSQL, SIGKILL);
//! - the leader's PostgreSQL alone killed (SIGKILL of its postmaster and
//!   every backend), its Patroni left to restart it;
//! - the leader's Patroni alone killed, its PostgreSQL left running
//!   unmanaged: the other node is promoted, and the old primary cannot
//!   acknowledge a commit without its synchronous standby until a
//!   restarted Patroni demotes it;
//! - the synchronous standby killed while the primary keeps running;
//! - the same under `synchronous_mode_strict`, where no write may be
//!   acknowledged while the standby is down;
//! - etcd losing its quorum (two of three members killed), until no node
//!   takes writes, then restarted;
//! - the leader partitioned from etcd and from the services (freezing
//!   proxies, `etcd_via`), until it demoted itself and the other node was
//!   promoted, then healed.
//!
//! The clients keep a history of every write they asked for, each under
//! an id they chose: acknowledged (200), failed for sure (refused before
//! any statement ran, or never delivered), or ambiguous (no answer, a
//! reset, a timeout, or a database error whose commit may have happened).
//! After the run: the handoff completes once the cluster is healthy again;
//! every acknowledged write is in the final database (lost: 0) and no
//! write reported failed is; the checks of `handoff.rs` hold on the
//! surviving history (by commit time, no generation-1 row after the first
//! generation-2 row or after the migration, no row of an old Nexus after
//! its `quiesced` mark, no job cut short but by a failed write, the final
//! records); and a monitor sampling the records all along sees no two
//! generations `active` and no row leave `quiesced`.
//!
//! Each test picks its phase from a seed, printed, so the phases rotate
//! from run to run; `BATON_SEED` pins it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_datastore::DataStore;
use baton_datastore::diesel;
use baton_datastore::diesel::QueryableByName;
use baton_datastore::diesel::sql_types::{BigInt, Uuid};
use baton_dev_db::{HaCluster, Replication};
use baton_types::NexusRecordState;
use baton_types::story::HandoffStory;
use baton_uuid_kinds::OmicronZoneUuid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::clients::addr_of;
use crate::handoff::facts;
use crate::rig::{Ledger, import, log, rack_setup, runtime};
use crate::zombie::Proxy;

/// How long any one wait may take: a failover alone takes up to
/// Patroni's `ttl` (20 s), a rejoining node a few seconds more.
const PATIENCE: Duration = Duration::from_secs(90);
/// Clients writing at once.
const CLIENTS: usize = 3;

/// The fault injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// The leader's Patroni and PostgreSQL SIGKILLed; restarted once
    /// another node leads.
    LeaderKilled,
    /// The leader's PostgreSQL SIGKILLed (postmaster and backends), its
    /// Patroni left running: Patroni restarts it (or, past its
    /// timeouts, lets the standby take over).
    LeaderPostgresKilled,
    /// The leader's Patroni alone SIGKILLed, its PostgreSQL left running;
    /// its Patroni is restarted once the other node leads, and demotes
    /// it.
    PatroniKilled,
    /// The synchronous standby killed while the primary runs; restarted
    /// once the primary acknowledged writes without it.
    SyncStandbyKilled,
    /// The same under `synchronous_mode_strict`: commits stall until the
    /// standby is back, none is acknowledged without it.
    StrictStandbyKilled,
    /// Two of the three etcd members killed; restarted once no node
    /// takes writes.
    EtcdQuorumLost,
    /// The leader cut off from etcd and from the services (every byte
    /// held by freezing proxies, connections kept open); healed once it
    /// demoted itself and the other node was promoted.
    Partitioned,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::LeaderKilled => "leader killed",
            Fault::LeaderPostgresKilled => "leader's PostgreSQL killed",
            Fault::PatroniKilled => "leader's Patroni killed",
            Fault::SyncStandbyKilled => "synchronous standby killed",
            Fault::StrictStandbyKilled => {
                "synchronous standby killed (strict mode)"
            }
            Fault::EtcdQuorumLost => "etcd quorum lost",
            Fault::Partitioned => "leader partitioned",
        })
    }
}

/// The moment of the handoff the fault lands at, each seen from the
/// database or from the processes' JSON lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Generation 2's blueprint just made the target: the running
    /// generation is writing its `not_yet` records.
    Records,
    /// An old instance printed `quiescing`: draining.
    Drain,
    /// The first old record is `quiesced` in the database.
    QuiesceMarks,
    /// Every old record is `quiesced`: the new generation hands off now.
    Handoff,
    /// A new instance printed `migrating` (the one that migrates does).
    Migration,
}

impl Phase {
    const ALL: [Phase; 5] = [
        Phase::Records,
        Phase::Drain,
        Phase::QuiesceMarks,
        Phase::Handoff,
        Phase::Migration,
    ];
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Records => "records written",
            Phase::Drain => "drain",
            Phase::QuiesceMarks => "quiesce marks",
            Phase::Handoff => "handoff",
            Phase::Migration => "schema migration",
        })
    }
}

/// The seed: `BATON_SEED`, else the clock in five-minute steps (so the
/// tests of one run share it and the phases rotate between runs).
fn seed() -> u64 {
    match std::env::var("BATON_SEED") {
        Ok(s) => s.parse().expect("BATON_SEED is a number"),
        Err(_) => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_secs()
                / 300
        }
    }
}

/// The phase `fault` lands at under `seed`: the faults of one run at
/// different phases, every phase in turn over consecutive seeds.
fn phase_for(fault: Fault, seed: u64) -> Phase {
    let offset = match fault {
        Fault::LeaderKilled => 0,
        Fault::SyncStandbyKilled => 1,
        Fault::EtcdQuorumLost => 2,
        Fault::StrictStandbyKilled => 3,
        Fault::Partitioned => 4,
        // Six faults over five phases: this one shares a phase with
        // another in each run, and walks them all over five seeds.
        Fault::LeaderPostgresKilled => 2,
        Fault::PatroniKilled => 1,
    };
    Phase::ALL[((seed + offset) % Phase::ALL.len() as u64) as usize]
}

/// What a client learnt of one write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Acknowledged,
    /// It did not commit: refused before any statement, or never sent.
    Failed,
    /// It may or may not have committed.
    Ambiguous,
}

/// One write of the history.
#[derive(Clone, Debug)]
struct Op {
    id: uuid::Uuid,
    outcome: Outcome,
    sent: Instant,
    done: Instant,
}

/// Every write the clients asked for, in the order they ended.
#[derive(Default)]
struct History {
    ops: Mutex<Vec<Op>>,
    /// Writes sent, answered or not: when each was sent.
    begun: Mutex<Vec<Instant>>,
}

impl History {
    fn push(&self, op: Op) {
        self.ops.lock().expect("history").push(op);
    }

    fn begin(&self) -> Instant {
        let now = Instant::now();
        self.begun.lock().expect("history").push(now);
        now
    }

    /// Writes acknowledged after `at`, whenever sent.
    fn acknowledged_done_after(&self, at: Instant) -> usize {
        let ops = self.ops.lock().expect("history");
        ops.iter()
            .filter(|o| o.outcome == Outcome::Acknowledged && o.done > at)
            .count()
    }

    /// Writes sent before `at` and not answered by then (answered since,
    /// or not yet).
    fn outstanding_at(&self, at: Instant) -> usize {
        let sent = self.begun.lock().expect("history");
        let sent = sent.iter().filter(|&&b| b < at).count();
        let ops = self.ops.lock().expect("history");
        sent - ops.iter().filter(|o| o.done < at).count()
    }

    /// Writes sent after `at`, answered or not.
    fn begun_after(&self, at: Instant) -> usize {
        let begun = self.begun.lock().expect("history");
        begun.iter().filter(|&&b| b > at).count()
    }

    fn snapshot(&self) -> Vec<Op> {
        self.ops.lock().expect("history").clone()
    }

    /// Writes acknowledged whose request was sent after `at`.
    fn acknowledged_after(&self, at: Instant) -> usize {
        let ops = self.ops.lock().expect("history");
        ops.iter()
            .filter(|o| o.outcome == Outcome::Acknowledged && o.sent > at)
            .count()
    }
}

/// One HTTP exchange: the status and body, or what went wrong and whether
/// the request may have reached the service.
async fn exchange(
    addr: &str,
    head: String,
) -> Result<(u16, String), (&'static str, bool)> {
    let connect = TcpStream::connect(addr);
    let Ok(Ok(mut stream)) =
        tokio::time::timeout(Duration::from_secs(2), connect).await
    else {
        return Err(("no connection", false));
    };
    if stream.write_all(head.as_bytes()).await.is_err() {
        return Err(("reset while sending", true));
    }
    let mut response = Vec::new();
    let read = stream.read_to_end(&mut response);
    match tokio::time::timeout(Duration::from_secs(10), read).await {
        Err(_) => return Err(("timeout", true)),
        Ok(Err(_)) => return Err(("reset", true)),
        Ok(Ok(_)) => {}
    }
    let text = String::from_utf8_lossy(&response);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok());
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    // The service closes without an answer when its own time is up.
    status
        .map(|s| (s, body.to_owned()))
        .ok_or(("closed without an answer", true))
}

async fn ready(addr: &str) -> bool {
    let head = format!("GET /ready HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    matches!(exchange(addr, head).await, Ok((200, _)))
}

/// `POST /write?id=...`, classified. A 503 whose reason is the Nexus
/// itself (not running yet, quiescing, ended, fenced) or the service
/// starting ran no statement that could commit: failed. Any other error
/// (a database error may come after the commit was sent) is ambiguous.
async fn write(addr: &str, id: uuid::Uuid) -> Outcome {
    let head = format!(
        "POST /write?id={id} HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Length: 0\r\n\r\n"
    );
    match exchange(addr, head).await {
        Ok((200, _)) => Outcome::Acknowledged,
        Ok((503, body))
            if body.contains("\"error\":\"Nexus ")
                || body.contains("\"error\":\"starting\"")
                || body.contains("too many connections") =>
        {
            Outcome::Failed
        }
        Ok(_) => Outcome::Ambiguous,
        Err((_, false)) => Outcome::Failed,
        Err((_, true)) => Outcome::Ambiguous,
    }
}

/// A client following readiness: each write goes to an instance whose
/// `/ready` says 200, trying the instances in turn; it stops when told.
async fn client(
    addrs: Arc<Mutex<Vec<String>>>,
    first: usize,
    stop: Arc<AtomicBool>,
    history: Arc<History>,
) {
    let mut next = first;
    while !stop.load(Ordering::SeqCst) {
        let known = addrs.lock().expect("addrs").clone();
        let mut target = None;
        for _ in 0..known.len() {
            let addr = &known[next % known.len()];
            if ready(addr).await {
                target = Some(addr.clone());
                break;
            }
            next += 1;
        }
        let Some(addr) = target else {
            // Nobody ready (the handoff's window, or the database gone).
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let id = uuid::Uuid::new_v4();
        let sent = history.begin();
        let outcome = write(&addr, id).await;
        history.push(Op {
            id,
            outcome,
            sent,
            done: Instant::now(),
        });
        if outcome != Outcome::Acknowledged {
            next += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A number from the database, or `None` while it cannot answer.
async fn try_count(ds: &DataStore, sql: &'static str) -> Option<i64> {
    #[derive(QueryableByName)]
    struct N {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    use baton_datastore::diesel_async::RunQueryDsl;
    let query = async {
        let mut claim = ds.claim("ha test count").await.ok()?;
        let rows: Vec<N> =
            diesel::sql_query(sql).load(claim.connection()).await.ok()?;
        rows.into_iter().next().map(|r| r.n)
    };
    tokio::time::timeout(Duration::from_secs(5), query)
        .await
        .ok()
        .flatten()
}

/// Polls `done` until it holds; `Err` naming `what` after `patience`.
async fn wait_for<F, Fut>(
    what: &str,
    patience: Duration,
    mut done: F,
) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + patience;
    while !done().await {
        if Instant::now() >= deadline {
            return Err(format!(
                "gave up after {} s waiting for {what}",
                patience.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// [`wait_for`] from outside a runtime, panicking on the deadline.
fn must(what: &str, patience: Duration, mut done: impl FnMut() -> bool) {
    runtime().block_on(async {
        wait_for(what, patience, || std::future::ready(done()))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    });
}

/// Checks `holds` all through `period`; `Err` naming `what` the first
/// time it does not.
fn holds_for(
    what: &str,
    period: Duration,
    mut holds: impl FnMut() -> bool,
) -> Result<(), String> {
    let start = Instant::now();
    let end = start + period;
    runtime().block_on(async {
        while Instant::now() < end {
            if !holds() {
                return Err(format!(
                    "{what} stopped holding after {} ms",
                    start.elapsed().as_millis()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    })
}

/// How long a fault that should stop writes is held, checked all along.
const HOLD: Duration = Duration::from_secs(3);

/// The node that is the synchronous standby now.
fn sync_standby(cluster: &HaCluster) -> usize {
    let members = cluster.members().expect("the members");
    members
        .iter()
        .find(|m| m.role == "sync_standby")
        .and_then(|m| m.name.strip_prefix('n')?.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no sync standby: {members:?}"))
}

/// A `baton-ledger` at `schema` with an HTTP port for the clients.
fn spawn(url: &str, id: OmicronZoneUuid, schema: i64) -> Ledger {
    let mut command = Command::new(env!("CARGO_BIN_EXE_baton-ledger"));
    command
        .args(["--database-url", url, "--nexus-id", &id.to_string()])
        .args(["--schema-version", &schema.to_string()])
        .args(["--job-ms", "100", "--period-ms", "100"])
        .args(["--write-period-ms", "10", "--metrics-addr", "127.0.0.1:0"])
        // Every instance warns at each connection refused while the
        // cluster fails over: hundreds of lines that bury the test's own.
        .env("BATON_LOG", "error");
    Ledger::start(command, id, PATIENCE)
}

/// Samples the records until stopped: never two generations `active`
/// (invariant 1), a row once `quiesced` stays so or is gone (2). Returns
/// what it saw broken and how many samples it took.
fn monitor(
    url: String,
    story: &HandoffStory,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(Vec<String>, u64)> {
    let old: BTreeSet<OmicronZoneUuid> =
        story.old_nexus.iter().copied().collect();
    std::thread::spawn(move || {
        let rt = runtime();
        let ds = {
            let _inside = rt.enter();
            DataStore::new(&log(), &url)
        };
        rt.block_on(async {
            let mut broken = Vec::new();
            let mut quiesced = BTreeSet::new();
            let mut samples = 0;
            while !stop.load(Ordering::SeqCst) {
                let read = tokio::time::timeout(
                    Duration::from_secs(5),
                    ds.records_list(),
                );
                if let Ok(Ok(records)) = read.await {
                    samples += 1;
                    let generations: BTreeSet<bool> = records
                        .iter()
                        .filter(|r| r.state == NexusRecordState::Active)
                        .map(|r| old.contains(&r.nexus_id))
                        .collect();
                    if generations.len() > 1 {
                        broken.push(format!(
                            "invariant 1: both generations active: {records:?}"
                        ));
                    }
                    for id in &quiesced {
                        if let Some(r) =
                            records.iter().find(|r| r.nexus_id == *id)
                            && r.state != NexusRecordState::Quiesced
                        {
                            broken.push(format!(
                                "invariant 2: {id} left quiesced for {}",
                                r.state
                            ));
                        }
                    }
                    quiesced.extend(
                        records
                            .iter()
                            .filter(|r| r.state == NexusRecordState::Quiesced)
                            .map(|r| r.nexus_id),
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (broken, samples)
        })
    })
}

/// Whether node `node` takes writes now (a primary that answers).
fn writable(cluster: &HaCluster, node: usize) -> bool {
    let out = Command::new("psql")
        .arg(cluster.node_url(node))
        .args(["-Atqc", "SELECT NOT pg_is_in_recovery()"])
        .output();
    out.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "t")
}

/// Kills the synchronous standby's node; returns it and the moment its
/// PostgreSQL stopped answering (SIGKILL lands when the kernel delivers
/// it, not when `kill` returns).
fn kill_standby(cluster: &mut HaCluster) -> (usize, Instant) {
    let standby = sync_standby(cluster);
    cluster.kill_node(standby);
    must(
        &format!("node {standby}'s PostgreSQL to stop answering"),
        PATIENCE,
        || !answers(cluster, standby),
    );
    (standby, Instant::now())
}

/// Whether node `node`'s PostgreSQL answers a query.
fn answers(cluster: &HaCluster, node: usize) -> bool {
    Command::new("psql")
        .arg(cluster.node_url(node))
        .args(["-Atqc", "SELECT 1"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Injects `fault` and heals it; returns one line on what happened, and
/// any violation seen while it lasted.
fn inject(
    cluster: &mut HaCluster,
    fault: Fault,
    history: &History,
    partition: &[Proxy],
) -> (String, Vec<String>) {
    let started = Instant::now();
    let mut broken = Vec::new();
    let said = match fault {
        Fault::Partitioned => {
            let leader = cluster.leader();
            assert_eq!(
                leader,
                Some(0),
                "the node behind the proxies must lead: {}",
                cluster.describe()
            );
            partition.iter().for_each(Proxy::freeze);
            // Patroni demotes a leader that cannot renew its key; the
            // other node is promoted once the key expires. Never both
            // writable on the way.
            let mut both = false;
            let mut demoted = None;
            must(
                "node 0, cut off from etcd, to stop taking writes, and \
                 node 1 to take them",
                PATIENCE,
                || {
                    let (old, new) =
                        (writable(cluster, 0), writable(cluster, 1));
                    both |= old && new;
                    if !old && demoted.is_none() {
                        demoted = Some(started.elapsed());
                    }
                    !old && new
                },
            );
            if both {
                broken.push(
                    "nodes 0 and 1 both took writes: two histories".to_owned(),
                );
            }
            let promoted = started.elapsed();
            partition.iter().for_each(Proxy::thaw);
            format!(
                "node 0 cut off from etcd and the services; it refused \
                 writes after {} ms, node 1 took them after {} ms",
                demoted.unwrap_or_default().as_millis(),
                promoted.as_millis()
            )
        }
        Fault::LeaderKilled => {
            let leader = cluster.leader().expect("a leader to kill");
            cluster.kill_node(leader);
            let mut next = None;
            must(
                &format!("another node to lead after node {leader} was killed"),
                PATIENCE,
                || {
                    next = cluster.leader().filter(|&l| l != leader);
                    next.is_some()
                },
            );
            let failover = started.elapsed();
            cluster
                .start_node(leader)
                .expect("the killed node restarts");
            format!(
                "node {leader} killed, node {} led after {} ms",
                next.expect("a new leader"),
                failover.as_millis()
            )
        }
        Fault::LeaderPostgresKilled => {
            let leader = cluster.leader().expect("a leader to hit");
            cluster
                .kill_postgres(leader)
                .expect("the leader's PostgreSQL runs");
            must(
                &format!("node {leader}'s PostgreSQL to stop answering"),
                PATIENCE,
                || !answers(cluster, leader),
            );
            let down = started.elapsed();
            let mut taking = None;
            must(
                &format!(
                    "a node to take writes again after node {leader}'s \
                     PostgreSQL was killed"
                ),
                PATIENCE,
                || {
                    taking = (0..cluster.node_count())
                        .find(|&node| writable(cluster, node));
                    taking.is_some()
                },
            );
            format!(
                "node {leader}'s PostgreSQL killed (down after {} ms), node \
                 {} took writes after {} ms",
                down.as_millis(),
                taking.expect("a writable node"),
                started.elapsed().as_millis()
            )
        }
        Fault::PatroniKilled => {
            let leader = cluster.leader().expect("a leader to hit");
            cluster.kill_patroni(leader);
            // Nothing renews its key: the other node is promoted once it
            // expires. The old primary still says it is writable, but
            // each commit there waits for a synchronous standby that is
            // gone, so none is acknowledged (the history check says).
            let mut next = None;
            must(
                &format!(
                    "another node to lead after node {leader}'s Patroni \
                     was killed"
                ),
                PATIENCE,
                || {
                    next = cluster.leader().filter(|&l| l != leader);
                    next.is_some()
                },
            );
            let failover = started.elapsed();
            cluster
                .start_node(leader)
                .expect("the killed Patroni restarts");
            must(
                &format!(
                    "node {leader}'s restarted Patroni to demote its \
                     PostgreSQL"
                ),
                PATIENCE,
                || !writable(cluster, leader),
            );
            format!(
                "node {leader}'s Patroni killed, node {} led after {} ms, \
                 node {leader} demoted after {} ms",
                next.expect("a new leader"),
                failover.as_millis(),
                started.elapsed().as_millis()
            )
        }
        Fault::StrictStandbyKilled => {
            let (standby, gone) = kill_standby(cluster);
            // A write of the test's own, so that the check holds whether
            // or not a client is writing at this phase (none is while the
            // old generation drains and the new one waits).
            let mut probe = Command::new("psql")
                .arg(cluster.url())
                .args(["-Atqc", "INSERT INTO ha_probe DEFAULT VALUES"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("psql starts");
            let mut probe_ended = None;
            // None may be acknowledged while the standby is down: not a
            // write sent since, nor one in flight (its commit record never
            // reached the standby, or its acknowledgement would have come
            // before the standby stopped answering).
            let held = holds_for(
                "no write acknowledged without the synchronous standby",
                HOLD,
                || {
                    if probe_ended.is_none() {
                        probe_ended = probe.try_wait().ok().flatten();
                    }
                    history.acknowledged_done_after(gone) == 0
                        && probe_ended.is_none()
                },
            );
            let verdict = match &held {
                Ok(()) => "none acknowledged",
                Err(_) => "SOME ACKNOWLEDGED",
            };
            broken.extend(held.err());
            if let Some(status) = probe_ended {
                broken.push(format!(
                    "the probe write did not wait for the standby: psql \
                     ended {status} while it was down"
                ));
            }
            // Still waiting for the standby: its commit may land when the
            // standby is back, which is why nothing counts on it.
            let _ = probe.kill();
            let _ = probe.wait();
            let waiting =
                history.outstanding_at(gone) + history.begun_after(gone);
            cluster.start_node(standby).expect("the standby restarts");
            let restarted = Instant::now();
            must(
                "writes acknowledged again once the standby is back",
                PATIENCE,
                || history.acknowledged_done_after(restarted) >= 3,
            );
            format!(
                "standby node {standby} killed, {waiting} client write(s) \
                 and a probe write outstanding in the {} ms it was down, \
                 {verdict}; writes acknowledged again {} ms after its \
                 restart",
                HOLD.as_millis(),
                restarted.elapsed().as_millis()
            )
        }
        Fault::SyncStandbyKilled => {
            let (standby, gone) = kill_standby(cluster);
            // Patroni takes the dead standby out of the synchronous set,
            // and the primary acknowledges commits alone.
            must(
                "writes acknowledged by the primary without its dead \
                 synchronous standby",
                PATIENCE,
                || history.acknowledged_after(gone) >= 3,
            );
            let alone = gone.elapsed();
            cluster.start_node(standby).expect("the standby restarts");
            format!(
                "standby node {standby} killed, writes sent since \
                 acknowledged without it after {} ms",
                alone.as_millis()
            )
        }
        Fault::EtcdQuorumLost => {
            cluster.kill_etcd(1);
            cluster.kill_etcd(2);
            // A leader that cannot renew its key demotes itself: nobody
            // takes writes, rather than two histories.
            let nodes = cluster.node_count();
            must(
                "every node to refuse writes with etcd's quorum gone",
                PATIENCE,
                || (0..nodes).all(|n| !writable(cluster, n)),
            );
            let stopped = Instant::now();
            // Held a while, checked all along: no node takes writes, no
            // write sent since is acknowledged.
            let held = holds_for(
                "no node writable and no write acknowledged without an \
                 etcd quorum",
                HOLD,
                || {
                    (0..nodes).all(|n| !writable(cluster, n))
                        && history.acknowledged_after(stopped) == 0
                },
            );
            broken.extend(held.err());
            let begun = history.begun_after(stopped);
            cluster.start_etcd(1).expect("etcd member 1 restarts");
            cluster.start_etcd(2).expect("etcd member 2 restarts");
            format!(
                "etcd members 1 and 2 killed, no node took writes after {} ms \
                 nor for {} ms more ({begun} client write(s) sent then)",
                (stopped - started).as_millis(),
                stopped.elapsed().as_millis()
            )
        }
    };
    let leader = cluster
        .wait_healthy(PATIENCE)
        .unwrap_or_else(|e| panic!("the cluster to be healthy again: {e}"));
    let line = format!(
        "{said}; healthy again after {} ms, node {leader} leading",
        started.elapsed().as_millis()
    );
    (line, broken)
}

/// A deliberate bug, for the teeth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bug {
    None,
    /// The services' URL names only the first leader: they do not follow
    /// a failover. (Its test runs in the mutant build only.)
    #[cfg_attr(not(feature = "mutants"), allow(dead_code))]
    UrlNamesOneNode,
    /// Plain synchronous mode where strict mode is wanted: the primary
    /// goes on alone once its standby is gone.
    NotStrict,
}

/// What a run counted.
#[derive(Debug)]
struct Report {
    acknowledged: usize,
    lost: usize,
    violations: Vec<String>,
}

/// One handoff with `fault` injected at `phase`.
fn run(fault: Fault, phase: Phase, seed: u64, bug: Bug) -> Report {
    let began = Instant::now();
    println!("ha fault: {fault} at {phase}, seed {seed}, bug {bug:?}");
    let replication = match (fault, bug) {
        (Fault::StrictStandbyKilled, Bug::None) => Replication::Strict,
        _ => Replication::Synchronous,
    };
    let mut builder = HaCluster::builder().replication(replication);
    // The partition: node 0 reaches etcd, and the services reach node 0,
    // through proxies that can stop forwarding.
    let partition: Vec<Proxy> = if fault == Fault::Partitioned {
        (0..3)
            .map(|j| builder.etcd_addr(j))
            .chain([builder.postgres_addr(0)])
            .map(Proxy::start_tcp)
            .collect()
    } else {
        Vec::new()
    };
    if fault == Fault::Partitioned {
        builder = builder
            .etcd_via(0, partition[..3].iter().map(Proxy::addr).collect());
    }
    let mut cluster = builder.start(&log()).expect("an HA cluster");
    let url = cluster.url();
    let leader = cluster.leader().expect("a leader");
    let service_url = match bug {
        Bug::None | Bug::NotStrict if fault == Fault::Partitioned => {
            HaCluster::url_via(&[partition[3].addr(), cluster.postgres_addr(1)])
        }
        Bug::None | Bug::NotStrict => url.clone(),
        Bug::UrlNamesOneNode => {
            HaCluster::url_via(&[cluster.postgres_addr(leader)])
        }
    };
    let rt = runtime();
    let story = HandoffStory::new(seed);
    let ds = rack_setup(&rt, &url, &story);
    // The table of the strict-mode check's own writes.
    let created = Command::new("psql")
        .arg(&url)
        .args([
            "-Atqc",
            "CREATE TABLE ha_probe (at TIMESTAMPTZ DEFAULT now())",
        ])
        .output()
        .expect("psql runs");
    assert!(created.status.success(), "the probe table: {created:?}");
    let mut old: Vec<Ledger> = story
        .old_nexus
        .iter()
        .map(|id| spawn(&service_url, *id, 1))
        .collect();
    let addrs: Vec<String> = old.iter_mut().map(addr_of).collect();
    for ledger in &mut old {
        ledger.wait_state("running");
    }
    // The history needs the ids the clients choose: a build of the
    // ledger that ignores them would make every write look lost.
    let probe = uuid::Uuid::new_v4();
    let head = format!(
        "POST /write?id={probe} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    );
    let answer = rt.block_on(exchange(&addrs[0], head));
    assert!(
        matches!(&answer, Ok((200, body)) if body.contains(&probe.to_string())),
        "{} did not write under the id given (a stale build?): {answer:?}",
        env!("CARGO_BIN_EXE_baton-ledger")
    );
    let addrs = Arc::new(Mutex::new(addrs));

    let stop = Arc::new(AtomicBool::new(false));
    let history = Arc::new(History::default());
    let watch = monitor(url.clone(), &story, stop.clone());
    let clients = {
        let (addrs, stop, history) =
            (addrs.clone(), stop.clone(), history.clone());
        std::thread::spawn(move || {
            runtime().block_on(async {
                let tasks: Vec<_> = (0..CLIENTS)
                    .map(|i| {
                        let (a, s, h) =
                            (addrs.clone(), stop.clone(), history.clone());
                        tokio::spawn(client(a, i, s, h))
                    })
                    .collect();
                for task in tasks {
                    task.await.expect("a client");
                }
            })
        })
    };
    must("the clients' first writes", PATIENCE, || {
        history.acknowledged_after(began) >= 10
    });

    let mut broken = Vec::new();
    let fault_here = |cluster: &mut HaCluster, broken: &mut Vec<_>| {
        let (line, seen) = inject(cluster, fault, &history, &partition);
        println!("ha fault: {line}");
        broken.extend(seen);
    };

    // Generation 2 deployed: its records, then its processes.
    rt.block_on(import(&ds, &story.new_generation_deployed));
    if phase == Phase::Records {
        fault_here(&mut cluster, &mut broken);
    }
    rt.block_on(async {
        wait_for("the not_yet records of generation 2", PATIENCE, || async {
            try_count(
                &ds,
                "SELECT count(*) AS n FROM db_metadata_nexus \
                 WHERE state = 'not_yet'",
            )
            .await
                == Some(3)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    });
    let mut new: Vec<Ledger> = story
        .new_nexus
        .iter()
        .map(|id| spawn(&service_url, *id, 2))
        .collect();
    for ledger in &mut new {
        let addr = addr_of(ledger);
        addrs.lock().expect("addrs").push(addr);
        ledger.wait_state("waiting_for_handoff");
    }

    // The bump: the handoff starts.
    rt.block_on(import(&ds, &story.handoff_started));
    let quiesced = |n: i64| {
        let ds = &ds;
        move || async move {
            try_count(
                ds,
                "SELECT count(*) AS n FROM db_metadata_nexus \
                 WHERE state = 'quiesced'",
            )
            .await
            .is_some_and(|q| q >= n)
        }
    };
    match phase {
        Phase::Records => {}
        Phase::Drain => old[0].wait_state("quiescing"),
        Phase::QuiesceMarks => rt
            .block_on(wait_for("a quiesced mark", PATIENCE, quiesced(1)))
            .unwrap_or_else(|e| panic!("{e}")),
        Phase::Handoff => rt
            .block_on(wait_for("every quiesced mark", PATIENCE, quiesced(3)))
            .unwrap_or_else(|e| panic!("{e}")),
        // Whichever instance migrates printed `migrating` first.
        Phase::Migration => {
            must("a new instance to print migrating", PATIENCE, || {
                new.iter_mut().any(|l| l.printed("migrating"))
            })
        }
    }
    if phase != Phase::Records {
        fault_here(&mut cluster, &mut broken);
    }
    let healthy = Instant::now();

    // (a) The handoff completes on the healthy cluster: the old records
    // quiesced, the new active, the migration applied, generation 2
    // writing.
    let patience = match bug {
        Bug::None | Bug::NotStrict => PATIENCE,
        Bug::UrlNamesOneNode => Duration::from_secs(30),
    };
    let completed = rt.block_on(wait_for(
        "the handoff to complete on the healthy cluster (generation 1 \
         quiesced, generation 2 active, ledger schema 2 applied, 3 jobs \
         of generation 2 ended)",
        patience,
        || async {
            let records = try_count(
                &ds,
                "SELECT count(*) AS n FROM db_metadata_nexus WHERE \
                 state IN ('quiesced', 'active')",
            );
            let active = try_count(
                &ds,
                "SELECT count(*) AS n FROM db_metadata_nexus WHERE \
                 state = 'active'",
            );
            let jobs = try_count(
                &ds,
                "SELECT count(*) AS n FROM ledger_entry \
                 WHERE writer_schema = 2 AND kind = 'job_end'",
            );
            records.await == Some(6)
                && active.await == Some(3)
                && jobs.await.is_some_and(|n| n >= 3)
        },
    ));
    let mut database_faults = BTreeMap::new();
    if let Err(e) = &completed {
        broken.push(format!("{e}; the cluster: {}", cluster.describe()));
    } else {
        println!(
            "ha fault: the handoff completed {} ms after the cluster was \
             healthy",
            healthy.elapsed().as_millis()
        );
        for ledger in old {
            let id = ledger.id;
            let (status, last) = ledger.wait_exit();
            if !status.success() || last["state"] != "quiesced" {
                broken.push(format!("old ledger {id} ended {status}: {last}"));
            }
            database_faults
                .insert(id, last["write_errors"].as_u64().unwrap_or(0));
        }
        for ledger in &mut new {
            ledger.wait_state("running");
        }
        let after = Instant::now();
        must("writes acknowledged by generation 2", PATIENCE, || {
            history.acknowledged_after(after) >= 10
        });
    }
    stop.store(true, Ordering::SeqCst);
    clients.join().expect("the clients end");
    if completed.is_ok() {
        for ledger in new {
            let id = ledger.id;
            ledger.signal("-TERM");
            let (status, last) = ledger.wait_exit();
            if !status.success() || last["state"] != "stopped" {
                broken.push(format!("new ledger {id} ended {status}: {last}"));
            }
            database_faults
                .insert(id, last["write_errors"].as_u64().unwrap_or(0));
        }
    }
    let (seen, samples) = watch.join().expect("the monitor ends");
    broken.extend(seen);

    // (b) The history against the final database.
    let ops = history.snapshot();
    let present = rt.block_on(ids_present(&ds));
    let of = |o: Outcome| ops.iter().filter(move |op| op.outcome == o);
    let acknowledged = of(Outcome::Acknowledged).count();
    let lost: Vec<_> = of(Outcome::Acknowledged)
        .filter(|op| !present.contains(&op.id))
        .collect();
    let ambiguous = of(Outcome::Ambiguous).count();
    let landed = of(Outcome::Ambiguous)
        .filter(|op| present.contains(&op.id))
        .count();
    let failed = of(Outcome::Failed).count();
    let phantom = of(Outcome::Failed)
        .filter(|op| present.contains(&op.id))
        .count();
    if !lost.is_empty() {
        broken.push(format!(
            "{} acknowledged write(s) lost, e.g. {:?}",
            lost.len(),
            lost.first()
        ));
    }
    if phantom > 0 {
        broken.push(format!("{phantom} write(s) reported failed committed"));
    }
    // The longest time no client had a write acknowledged.
    let mut done: Vec<Instant> =
        of(Outcome::Acknowledged).map(|o| o.done).collect();
    done.sort();
    let gap = done
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();

    // (c) and (d): the checks of the handoff test on what survived.
    if completed.is_ok() {
        let mut facts = rt.block_on(facts(&ds, &story, BTreeSet::new(), 0));
        facts.database_faults = database_faults.clone();
        broken.extend(facts.violations());
    }
    let write_errors: u64 = database_faults.values().sum();
    println!(
        "ha fault summary: fault {fault}, phase {phase}, seed {seed}, bug \
         {bug:?}: acknowledged {acknowledged}, lost {}, ambiguous \
         {ambiguous} ({landed} committed), failed {failed} (phantom \
         {phantom}), invariant violations {}; service write errors \
         {write_errors}, longest wait for an acknowledgement {} ms, {} \
         record samples, {} s",
        lost.len(),
        broken.len(),
        gap.as_millis(),
        samples,
        began.elapsed().as_secs()
    );
    for v in &broken {
        println!("ha fault violation: {v}");
    }
    drop(cluster);
    Report {
        acknowledged,
        lost: lost.len(),
        violations: broken,
    }
}

/// Every entry id in the final database.
async fn ids_present(ds: &DataStore) -> BTreeSet<uuid::Uuid> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = Uuid)]
        id: uuid::Uuid,
    }
    use baton_datastore::diesel_async::RunQueryDsl;
    let mut claim = ds.claim("ha test ids").await.expect("a claim");
    let rows: Vec<Id> = diesel::sql_query("SELECT id FROM ledger_entry")
        .load(claim.connection())
        .await
        .expect("the entries");
    rows.into_iter().map(|r| r.id).collect()
}

/// Runs `fault` at the seed's phase; under `cargo xtask soak`
/// (`BATON_SOAK=N`) at N consecutive seeds, so every phase in turn.
fn check(fault: Fault) {
    let rounds: u64 = std::env::var("BATON_SOAK")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let first = seed();
    for seed in first..first + rounds {
        let phase = phase_for(fault, seed);
        let report = run(fault, phase, seed, Bug::None);
        assert!(report.acknowledged > 0, "no write acknowledged: {report:?}");
        assert_eq!(
            report.lost, 0,
            "{fault} at {phase} (seed {seed}): {report:?}"
        );
        assert_eq!(
            report.violations,
            Vec::<String>::new(),
            "{fault} at {phase} (seed {seed})"
        );
    }
}

#[test]
fn ha_leader_killed_mid_handoff_loses_nothing() {
    check(Fault::LeaderKilled);
}

#[test]
fn ha_leader_postgres_killed_mid_handoff_loses_nothing() {
    check(Fault::LeaderPostgresKilled);
}

#[test]
fn ha_patroni_killed_mid_handoff_loses_nothing() {
    check(Fault::PatroniKilled);
}

#[test]
fn ha_sync_standby_killed_mid_handoff_loses_nothing() {
    check(Fault::SyncStandbyKilled);
}

#[test]
fn ha_strict_sync_standby_killed_mid_handoff_stalls_writes() {
    check(Fault::StrictStandbyKilled);
}

#[test]
fn ha_leader_partitioned_mid_handoff_demotes_and_loses_nothing() {
    check(Fault::Partitioned);
}

#[test]
fn ha_etcd_quorum_lost_mid_handoff_stops_writes_and_loses_nothing() {
    check(Fault::EtcdQuorumLost);
}

/// The teeth: services whose URL names only the first leader do not
/// follow the failover, and the checks say so. It waits out a whole
/// failover and a handoff that never comes (over a minute), so it runs
/// with the mutant tests (`cargo xtask mutants` runs the tests named
/// `mutant`, in the build with the `mutants` feature), not in every run.
#[cfg(feature = "mutants")]
#[test]
fn mutant_ha_services_that_do_not_follow_the_leader_are_caught() {
    let report = run(
        Fault::LeaderKilled,
        Phase::Drain,
        seed(),
        Bug::UrlNamesOneNode,
    );
    println!("not following the leader: {:#?}", report.violations);
    assert!(
        !report.violations.is_empty(),
        "services stuck on the old leader went unnoticed: {report:?}"
    );
}

/// The teeth of the strict check: with plain synchronous mode the
/// primary acknowledges writes once Patroni dropped the dead standby, and
/// the check says so, during the drain too, when no client writes (the
/// probe write does).
#[test]
fn ha_writes_acknowledged_without_a_strict_standby_are_caught() {
    let report = run(
        Fault::StrictStandbyKilled,
        Phase::Drain,
        seed(),
        Bug::NotStrict,
    );
    println!("not strict: {:#?}", report.violations);
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.contains("without the synchronous standby")),
        "writes acknowledged without the standby went unnoticed: {report:?}"
    );
}
