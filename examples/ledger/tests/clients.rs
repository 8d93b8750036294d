//! Clients through a handoff, with real processes: each `baton-ledger`
//! serves `GET /ready` and `POST /write`, and clients keep writing while
//! generation 1 drains and generation 2 takes over. Clients that follow
//! readiness (ask `/ready`, and on a 503 or a refused connection try
//! another instance, backing off, for up to 2 s) see no failed request;
//! clients that stay with one instance and never retry elsewhere do.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use baton_datastore::diesel;
use baton_datastore::diesel::QueryableByName;
use baton_datastore::diesel::sql_types::{Nullable, Timestamptz};
use baton_types::story::HandoffStory;
use chrono::{DateTime, Utc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::handoff::{
    Ledger, deploy_generation_2_with, import, rack_at_generation_1, runtime,
};

/// Clients writing at once.
const CLIENTS: usize = 4;
/// How long a following client keeps trying one request elsewhere.
const GIVE_UP: Duration = Duration::from_secs(2);
/// Successful writes wanted after generation 2 runs, before stopping.
const AFTER: u64 = 40;

/// One HTTP request; the status code, or `None` when the instance
/// cannot be reached or does not answer (gone, or not listening).
async fn request(addr: &str, method: &str, path: &str) -> Option<u16> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n\
             Content-Length: 0\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response);
        text.split(' ').nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .ok()
        .flatten()
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    successes: Vec<Instant>,
    failed: u64,
}

/// A client that follows readiness: each request goes to an instance
/// whose `/ready` says 200; a 503 or no answer sends it to the next
/// instance, with a backoff after each round, until [`GIVE_UP`].
async fn following(
    addrs: Arc<Vec<String>>,
    first: usize,
    ctx: Arc<Ctx>,
) -> Seen {
    let mut seen = Seen::default();
    let mut next = first;
    while !ctx.stop.load(Ordering::SeqCst) {
        let began = Instant::now();
        let mut backoff = Duration::from_millis(5);
        let ok = loop {
            let mut answered = None;
            for _ in 0..addrs.len() {
                let addr = &addrs[next % addrs.len()];
                if request(addr, "GET", "/ready").await == Some(200) {
                    answered = request(addr, "POST", "/write").await;
                    if answered == Some(200) {
                        break;
                    }
                }
                next += 1;
            }
            match answered {
                Some(200) => break true,
                // The request's own error: another instance would not help.
                Some(500) => break false,
                _ if began.elapsed() >= GIVE_UP => break false,
                _ => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(20));
                }
            }
        };
        ctx.record(&mut seen, ok);
    }
    seen
}

/// A client that does not follow readiness: it stays with one instance
/// and never tries another; anything but 200 is a failed request.
async fn pinned(addrs: Arc<Vec<String>>, first: usize, ctx: Arc<Ctx>) -> Seen {
    let mut seen = Seen::default();
    let addr = &addrs[first];
    while !ctx.stop.load(Ordering::SeqCst) {
        let ok = request(addr, "POST", "/write").await == Some(200);
        ctx.record(&mut seen, ok);
        if !ok {
            // Not a retry elsewhere: the same instance, a moment later.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    seen
}

/// What the clients share with the test.
#[derive(Default)]
struct Ctx {
    stop: AtomicBool,
    successes: AtomicU64,
}

impl Ctx {
    fn record(&self, seen: &mut Seen, ok: bool) {
        if ok {
            seen.successes.push(Instant::now());
            self.successes.fetch_add(1, Ordering::SeqCst);
        } else {
            seen.failed += 1;
        }
    }
}

/// What a run measured.
struct Outcome {
    failed: u64,
    successes: usize,
    longest_gap: Duration,
    window: chrono::TimeDelta,
}

#[derive(QueryableByName)]
struct Window {
    #[diesel(sql_type = Nullable<Timestamptz>)]
    last_old: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    first_new: Option<DateTime<Utc>>,
}

/// The address a ledger printed on its first line.
pub(crate) fn addr_of(ledger: &mut Ledger) -> String {
    ledger.wait_state("starting");
    crate::metrics::metrics_addr(ledger)
}

/// A whole handoff of three old and three new processes with
/// [`CLIENTS`] clients writing through it, following readiness or not.
fn handoff_with_clients(seed: u64, follow: bool) -> Outcome {
    let rt = runtime();
    let story = HandoffStory::new(seed);
    let (_db, url, ds) = rack_at_generation_1(&rt, &story);
    let http = ["--metrics-addr", "127.0.0.1:0"];
    let mut old: Vec<Ledger> = story
        .old_nexus
        .iter()
        .map(|id| Ledger::spawn_with(&url, *id, 1, None, &http))
        .collect();
    let mut addrs: Vec<String> = old.iter_mut().map(addr_of).collect();
    for ledger in &mut old {
        ledger.wait_state("running");
    }
    let mut new = deploy_generation_2_with(&rt, &ds, &story, |id| {
        Ledger::spawn_with(&url, id, 2, None, &http)
    });
    addrs.extend(new.iter_mut().map(addr_of));
    let addrs = Arc::new(addrs);

    let ctx = Arc::new(Ctx::default());
    let clients = {
        let (addrs, ctx) = (addrs.clone(), ctx.clone());
        std::thread::spawn(move || {
            runtime().block_on(async {
                let tasks: Vec<_> = (0..CLIENTS)
                    .map(|i| {
                        // Each starts at an old instance.
                        let first = i % 3;
                        let (addrs, ctx) = (addrs.clone(), ctx.clone());
                        tokio::spawn(async move {
                            if follow {
                                following(addrs, first, ctx).await
                            } else {
                                pinned(addrs, first, ctx).await
                            }
                        })
                    })
                    .collect();
                let mut all = Vec::new();
                for task in tasks {
                    all.push(task.await.expect("a client"));
                }
                all
            })
        })
    };
    rt.block_on(async {
        crate::handoff::until("the clients to write", || async {
            ctx.successes.load(Ordering::SeqCst) >= 20
        })
        .await;
        import(&ds, &story.handoff_started).await;
    });
    for ledger in old {
        let id = ledger.id;
        let (status, last) = ledger.wait_exit();
        assert!(status.success(), "old ledger {id} exited {status}: {last}");
        assert_eq!(last["state"], "quiesced", "old ledger {id}");
    }
    for ledger in &mut new {
        ledger.wait_state("running");
    }
    let at_handoff = ctx.successes.load(Ordering::SeqCst);
    // Following clients keep writing to generation 2; pinned ones have
    // nowhere to write, so the wait ends at the deadline for them.
    let deadline = Instant::now() + Duration::from_secs(5);
    rt.block_on(async {
        while ctx.successes.load(Ordering::SeqCst) < at_handoff + AFTER
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    ctx.stop.store(true, Ordering::SeqCst);
    let seen = clients.join().expect("the clients end");
    for ledger in new {
        ledger.signal("-TERM");
        let (status, last) = ledger.wait_exit();
        assert!(status.success(), "new ledger exited {status}: {last}");
    }

    let window = rt.block_on(async {
        use baton_datastore::diesel_async::RunQueryDsl;
        let mut claim = ds.claim("test window").await.expect("claim");
        let rows: Vec<Window> = diesel::sql_query(
            "SELECT \
             max(pg_xact_commit_timestamp(xmin)) \
               FILTER (WHERE writer_schema = 1) AS last_old, \
             min(pg_xact_commit_timestamp(xmin)) \
               FILTER (WHERE writer_schema = 2) AS first_new \
             FROM ledger_entry",
        )
        .load(claim.connection())
        .await
        .expect("the window");
        let w = rows.into_iter().next().expect("one row");
        w.first_new.expect("generation 2 wrote")
            - w.last_old.expect("generation 1 wrote")
    });
    let longest_gap = seen
        .iter()
        .flat_map(|s| s.successes.windows(2).map(|w| w[1] - w[0]))
        .max()
        .unwrap_or_default();
    Outcome {
        failed: seen.iter().map(|s| s.failed).sum(),
        successes: seen.iter().map(|s| s.successes.len()).sum(),
        longest_gap,
        window,
    }
}

#[test]
fn clients_that_follow_readiness_see_no_failed_request() {
    let outcome = handoff_with_clients(31, true);
    println!(
        "following readiness: {} failed request(s), {} written; longest \
         gap between a client's successful writes {} ms; handoff window \
         (last generation-1 commit to first generation-2 commit) {} ms",
        outcome.failed,
        outcome.successes,
        outcome.longest_gap.as_millis(),
        outcome.window.num_milliseconds(),
    );
    assert_eq!(outcome.failed, 0, "a client following readiness failed");
    assert!(outcome.successes > 0);
}

/// The counter-demonstration: the same handoff, clients that stay with
/// the instance they started with. Its drain refuses them (503), then
/// it is gone, and nothing sends them elsewhere.
#[test]
fn clients_that_ignore_readiness_fail_requests() {
    let outcome = handoff_with_clients(32, false);
    println!(
        "ignoring readiness: {} failed request(s), {} written; handoff \
         window {} ms",
        outcome.failed,
        outcome.successes,
        outcome.window.num_milliseconds(),
    );
    assert!(
        outcome.failed > 0,
        "clients pinned to old instances never failed"
    );
}
