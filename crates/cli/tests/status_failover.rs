//! `baton status` during a failover of a real Patroni cluster: between
//! the leader's death and its standby's promotion no host takes a
//! read-write session, and the operator reads that, with the hosts
//! tried, rather than a driver's error; `--watch` says so and goes on
//! until a primary answers.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use baton_dev_db::HaCluster;
use expectorate::assert_contents;
use slog::{Logger, o};

use crate::common::{baton_at as baton, psql};

/// `baton status --watch` every 0.2 s, its stdout's lines as they come.
fn watch(url: &str) -> (Child, Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["status", "--watch", "--interval", "0.2"])
        .env("BATON_DATABASE_URL", url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (send, receive) = channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    (child, receive)
}

/// Whether node `url`'s server is still a standby (in recovery).
fn in_recovery(url: &str) -> String {
    let out = Command::new(psql())
        .args(["-X", "-A", "-t", "-d", url, "-c"])
        .arg("SELECT pg_is_in_recovery()")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn status_during_a_failover_names_the_hosts_tried_and_the_failover() {
    let log = Logger::root(slog::Discard, o!());
    // Two nodes, synchronous, Patroni's tightest timings: the standby is
    // promoted about 20 s (the leader key's ttl) after the leader dies.
    let mut cluster = HaCluster::start(&log).unwrap();
    let url = cluster.url();
    let migrated = baton(&url, &["db", "migrate"]);
    assert!(migrated.status.success(), "{migrated:?}");
    let before = baton(&url, &["status"]);
    assert!(before.status.success(), "{before:?}");

    // An operator watching through the failover.
    let (mut watching, watched) = watch(&url);
    let first = watched.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(first.starts_with("-- "), "{first}");

    let leader = cluster.wait_healthy(Duration::from_secs(60)).unwrap();
    // Node 0 bootstraps the cluster and leads it: the URL names the
    // leader first, so the standby's is the last reason heard.
    assert_eq!(leader, 0, "{}", cluster.describe());
    let standby = 1;
    cluster.kill_node(leader);
    let during = baton(&url, &["status"]);
    // It ran before the promotion: the standby was still one after it.
    assert_eq!(
        in_recovery(&cluster.node_url(standby)),
        "t",
        "the standby was promoted before `baton status` ended; the \
         cluster: {}",
        cluster.describe()
    );
    assert_eq!(during.status.code(), Some(1), "{during:?}");
    let said = String::from_utf8(during.stderr).unwrap();
    let tried = format!(
        "tried {}, {};",
        cluster.postgres_addr(0),
        cluster.postgres_addr(1)
    );
    assert!(said.contains(&tried), "{said}");
    assert!(said.contains("a failover may be under way"), "{said}");
    // The addresses are the cluster's own, a random block: masked.
    let masked = said
        .replace(&cluster.postgres_addr(leader).to_string(), "LEADER")
        .replace(&cluster.postgres_addr(standby).to_string(), "STANDBY");
    assert_contents("tests/output/status-during-failover.txt", &masked);

    // The watch said so too, and went on until a primary answered.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut said_so = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = watched.recv_timeout(left).unwrap_or_else(|e| {
            panic!(
                "`baton status --watch`: no {} within 90 s of the kill \
                 ({e}); the cluster: {}",
                if said_so {
                    "status after the failover"
                } else {
                    "line"
                },
                cluster.describe()
            )
        });
        if line.contains(&tried) && line.contains("a failover may be under way")
        {
            said_so = true;
        } else if said_so && line.starts_with("target: none") {
            break;
        }
    }
    watching.kill().unwrap();
    watching.wait().unwrap();

    // Once the standby leads, the same URL answers again.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let after = baton(&url, &["status"]);
        if after.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no primary answered 90 s after the kill: {after:?}; the \
             cluster: {}",
            cluster.describe()
        );
        // Polling a condition, not sleeping in its place.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(Duration::from_millis(200));
    }
}
