//! Zombies: an old `baton-ledger` instance paused (`SIGSTOP`) or cut off
//! (its connections through a proxy that stops forwarding), forced out by
//! the operator with `baton records quiesce --force`, the new generation
//! taking over and writing, then the zombie resumed. Both generations run
//! the same schema, so no migration stands in the old code's way: only
//! the database fence does. By the server's commit times, no row of the
//! zombie may commit after the force did.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use baton_datastore::DataStore;
use baton_datastore::diesel;
use baton_datastore::diesel::QueryableByName;
use baton_datastore::diesel::sql_types::{BigInt, Uuid};
use baton_datastore::diesel_async::RunQueryDsl;
use baton_types::story::HandoffStory;
use baton_uuid_kinds::{GenericUuid, OmicronZoneUuid};

use crate::handoff::{PATIENCE, count, deploy_generation_2_with};
use crate::rig::{Ledger, import, rack_at_generation_1, runtime, until};

/// How the zombie is taken out of time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// `SIGSTOP` while it runs, before the bump: mid-batch, a claim held.
    PausedRunning,
    /// `SIGSTOP` once it reports quiesce step 2 (draining its jobs).
    PausedDraining,
    /// Its connections go through a proxy that stops forwarding while
    /// it runs, and forwards again after the new generation wrote.
    CutOff,
}

/// What a run counted.
#[derive(Debug)]
struct Outcome {
    /// Rows of the zombie committed after the operator's mark.
    late: i64,
    /// Rows of the zombie in all.
    rows: i64,
    /// Rows of generation 2.
    new_rows: i64,
    /// The zombie's last line.
    last: serde_json::Value,
}

/// The `baton` binary, built beside `baton-ledger` by the workspace's
/// test build.
fn baton() -> PathBuf {
    let ledger = PathBuf::from(env!("CARGO_BIN_EXE_baton-ledger"));
    let baton = ledger.with_file_name("baton");
    assert!(
        baton.exists(),
        "{} is missing: build the workspace (cargo nextest run \
         --workspace builds it)",
        baton.display()
    );
    baton
}

fn spawn(url: &str, id: OmicronZoneUuid, mutant: Option<&str>) -> Ledger {
    let mut command = Command::new(env!("CARGO_BIN_EXE_baton-ledger"));
    if let Some(mutant) = mutant {
        command.env("BATON_LEDGER_MUTANT", mutant);
    }
    command
        .args(["--database-url", url, "--nexus-id", &id.to_string()])
        .args(["--schema-version", "1", "--job-ms", "100"])
        .args(["--period-ms", "100", "--write-period-ms", "10"]);
    Ledger::start(command, id, PATIENCE)
}

fn run(fault: Fault, mutant: Option<&str>) -> Outcome {
    println!("zombie: {fault:?}, mutant {mutant:?}");
    let rt = runtime();
    let story = HandoffStory::new(11);
    let (db, url, ds) = rack_at_generation_1(&rt, &story);
    let proxy = Proxy::start(db.dir().join(".s.PGSQL.5432").into());
    let zombie_id = story.old_nexus[0];
    let mut old: Vec<Ledger> = story
        .old_nexus
        .iter()
        .map(|&id| {
            let via = if id == zombie_id && fault == Fault::CutOff {
                proxy.url()
            } else {
                url.clone()
            };
            spawn(&via, id, mutant)
        })
        .collect();
    for ledger in &mut old {
        ledger.wait_state("running");
    }
    // The new generation at the same schema: only the fence stops a
    // zombie's writes.
    let mut new =
        deploy_generation_2_with(&rt, &ds, &story, |id| spawn(&url, id, None));
    // Every old instance has written (the zombie too), so that what it
    // writes after the force is measured against writes it did make.
    rt.block_on(async {
        until("every old instance to write", PATIENCE, || async {
            count(
                &ds,
                "SELECT count(DISTINCT nexus_id) AS n FROM ledger_entry",
            )
            .await
                >= 3
        })
        .await;
    });
    let mut zombie = old.remove(0);
    match fault {
        Fault::PausedRunning => zombie.signal("-STOP"),
        Fault::CutOff => proxy.freeze(),
        Fault::PausedDraining => {}
    }
    rt.block_on(import(&ds, &story.handoff_started));
    if fault == Fault::PausedDraining {
        zombie.wait_state("quiescing");
        zombie.signal("-STOP");
    }
    // The operator, once `baton status` calls it silent (no report for
    // the report interval), forces it out.
    let forced = force(&rt, &url, zombie_id);
    println!("baton records quiesce --force: {forced}");
    for ledger in old {
        let (status, last) = ledger.wait_exit();
        assert!(status.success(), "a peer exited {status}: {last}");
    }
    for ledger in &mut new {
        ledger.wait_state("running");
    }
    rt.block_on(async {
        until("generation 2 to write", PATIENCE, || async {
            count(&ds, "SELECT count(*) AS n FROM ledger_entry WHERE nexus_id IN (SELECT nexus_id FROM db_metadata_nexus WHERE state = 'active')").await >= 20
        })
        .await;
    });
    // The zombie wakes up, or its network heals.
    match fault {
        Fault::CutOff => proxy.thaw(),
        _ => zombie.signal("-CONT"),
    }
    // A fenced zombie ends at its next database call; one that can
    // still write (the mutant) goes on until its own lifecycle notices
    // its record and stops it.
    let (status, last) = zombie.wait_exit();
    println!("the zombie exited {status:?}: {last}");
    for ledger in new {
        ledger.signal("-TERM");
        let (status, last) = ledger.wait_exit();
        assert!(status.success(), "a new ledger exited {status}: {last}");
    }
    let outcome = rt.block_on(facts(&ds, &story, zombie_id));
    let outcome = Outcome { last, ..outcome };
    println!("{fault:?}: {outcome:?}");
    drop(db);
    outcome
}

/// `baton records quiesce --force`, retried while it is refused for a
/// report within the report interval (the zombie's last one, before it
/// fell silent); returns what it printed.
fn force(
    rt: &tokio::runtime::Runtime,
    url: &str,
    id: OmicronZoneUuid,
) -> String {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let out = Command::new(baton())
            .args(["--database-url", url, "records", "quiesce", "--force"])
            .args(["--nexus-id", &id.to_string()])
            .output()
            .expect("baton runs");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            return said;
        }
        assert!(said.contains("reported its status"), "{said}");
        assert!(
            std::time::Instant::now() < deadline,
            "still refused: {said}"
        );
        // A bounded retry on the report's age, the CLI's condition.
        rt.block_on(async {
            tokio::time::sleep(Duration::from_millis(250)).await;
        });
    }
}

async fn facts(
    ds: &DataStore,
    story: &HandoffStory,
    zombie: OmicronZoneUuid,
) -> Outcome {
    #[derive(QueryableByName)]
    struct Counts {
        #[diesel(sql_type = BigInt)]
        late: i64,
        #[diesel(sql_type = BigInt)]
        rows: i64,
        #[diesel(sql_type = BigInt)]
        new_rows: i64,
    }
    let mut claim = ds.claim("test facts").await.expect("claim");
    let counts: Vec<Counts> = baton_datastore::diesel::sql_query(
        "WITH mark AS (
             SELECT pg_xact_commit_timestamp(xmin) AS at
             FROM db_metadata_nexus WHERE nexus_id = $1
         )
         SELECT count(*) FILTER (WHERE nexus_id = $1 AND
                    pg_xact_commit_timestamp(xmin) > (SELECT at FROM mark))
                    AS late,
                count(*) FILTER (WHERE nexus_id = $1) AS rows,
                count(*) FILTER (WHERE nexus_id <> ALL ($2)) AS new_rows
         FROM ledger_entry",
    )
    .bind::<Uuid, _>(zombie.into_untyped_uuid())
    .bind::<baton_datastore::diesel::sql_types::Array<Uuid>, _>(
        story
            .old_nexus
            .iter()
            .map(|id| id.into_untyped_uuid())
            .collect::<Vec<_>>(),
    )
    .load(claim.connection())
    .await
    .expect("facts");
    let c = counts.into_iter().next().expect("one row");
    Outcome {
        late: c.late,
        rows: c.rows,
        new_rows: c.new_rows,
        last: serde_json::Value::Null,
    }
}

#[test]
fn a_paused_zombie_writes_nothing_after_it_is_forced_out() {
    for fault in [Fault::PausedRunning, Fault::PausedDraining] {
        let outcome = run(fault, None);
        assert!(outcome.rows > 0, "{fault:?}: the zombie never wrote");
        assert!(outcome.new_rows > 0, "{fault:?}: generation 2 never wrote");
        assert_eq!(outcome.late, 0, "{fault:?}: late rows: {outcome:?}");
        let state = &outcome.last["state"];
        assert!(
            state == "fenced" || state == "quiesced",
            "{fault:?}: the zombie ended {}",
            outcome.last
        );
    }
}

#[test]
fn a_cut_off_zombie_writes_nothing_after_it_is_forced_out() {
    let outcome = run(Fault::CutOff, None);
    assert!(outcome.rows > 0 && outcome.new_rows > 0, "{outcome:?}");
    assert_eq!(outcome.late, 0, "late rows: {outcome:?}");
}

/// The teeth: the same runs without the fence (a mutant, in the mutant
/// build) let the zombie write after the force.
#[cfg(feature = "mutants")]
#[test]
fn mutant_without_the_fence_zombies_write_after_the_force() {
    let mut seen = std::collections::BTreeSet::new();
    for fault in [Fault::PausedRunning, Fault::CutOff] {
        let outcome = run(fault, Some("no-fence"));
        println!("without the fence, {fault:?}: {} late rows", outcome.late);
        assert!(outcome.late > 0, "{fault:?}: {outcome:?}");
        seen.insert(format!("{fault:?}"));
    }
    assert_eq!(seen.len(), 2);
}

/// A TCP proxy to the server's Unix socket (or, [`Proxy::start_tcp`], to
/// a TCP address) that can stop forwarding (each direction holds what it
/// read until it thaws) while keeping every connection open: a
/// partition, as the client and the server each see it.
pub(crate) struct Proxy {
    port: u16,
    frozen: Arc<(Mutex<bool>, Condvar)>,
}

/// The server side of a proxied connection.
trait Upstream: Read + Write + Send + Sized + 'static {
    fn duplicate(&self) -> std::io::Result<Self>;
    fn close(&self);
}

impl Upstream for UnixStream {
    fn duplicate(&self) -> std::io::Result<Self> {
        self.try_clone()
    }
    fn close(&self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
}

impl Upstream for std::net::TcpStream {
    fn duplicate(&self) -> std::io::Result<Self> {
        self.try_clone()
    }
    fn close(&self) {
        let _ = self.shutdown(std::net::Shutdown::Both);
    }
}

impl Proxy {
    fn start(socket: PathBuf) -> Proxy {
        Proxy::start_with(move || UnixStream::connect(&socket))
    }

    /// A proxy to `target`, listening on a port of 127.0.0.1.
    pub(crate) fn start_tcp(target: std::net::SocketAddr) -> Proxy {
        Proxy::start_with(move || std::net::TcpStream::connect(target))
    }

    fn start_with<S: Upstream>(
        connect: impl Fn() -> std::io::Result<S> + Send + 'static,
    ) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
        let port = listener.local_addr().expect("bound").port();
        let frozen = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = frozen.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = connect() else {
                    continue;
                };
                let (c2, s2) = (
                    client.try_clone().expect("clone"),
                    server.duplicate().expect("clone"),
                );
                let (f1, f2) = (flag.clone(), flag.clone());
                std::thread::spawn(move || {
                    pump(client, server, f1, |to| to.close())
                });
                std::thread::spawn(move || {
                    pump(s2, c2, f2, |to| {
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    })
                });
            }
        });
        Proxy { port, frozen }
    }

    fn url(&self) -> String {
        format!("postgresql://baton@127.0.0.1:{}/baton", self.port)
    }

    /// The address it listens on.
    pub(crate) fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub(crate) fn freeze(&self) {
        *self.frozen.0.lock().unwrap() = true;
    }

    pub(crate) fn thaw(&self) {
        *self.frozen.0.lock().unwrap() = false;
        self.frozen.1.notify_all();
    }
}

/// Waits while the proxy is frozen.
fn wait_thawed(frozen: &(Mutex<bool>, Condvar)) {
    let mut f = frozen.0.lock().unwrap();
    while *f {
        f = frozen.1.wait(f).unwrap();
    }
}

/// Forwards `from` to `to`, holding what it read while the proxy is
/// frozen; `close` shuts `to` when `from` ends.
fn pump<R: Read, W: Write>(
    mut from: R,
    mut to: W,
    frozen: Arc<(Mutex<bool>, Condvar)>,
    close: impl FnOnce(&W),
) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf) {
        wait_thawed(&frozen);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    close(&to);
}
