//! `baton-ledger --metrics-addr`: Baton's metrics over HTTP in the
//! Prometheus text format, scraped as `curl` would.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use baton_types::story::HandoffStory;

use crate::handoff::{
    Ledger, PATIENCE, import, rack_at_generation_1, runtime, until,
};

/// `GET /metrics` over plain HTTP/1.1; the status line and the body.
fn scrape(addr: &str, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("the metrics port");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n")
        .expect("request sent");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// The address the ledger printed, from its first line.
pub(crate) fn metrics_addr(ledger: &Ledger) -> String {
    let line = ledger
        .seen
        .iter()
        .find(|l| l.get("metrics_addr").is_some())
        .unwrap_or_else(|| panic!("no metrics_addr line in {:?}", ledger.seen));
    line["metrics_addr"].as_str().expect("a string").to_owned()
}

/// Scrapes until every line in `wanted` is in the output (the ledger
/// updates its metrics on its own schedule).
fn scrape_until(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    wanted: &[&str],
) -> String {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let (status, body) = scrape(addr, "/metrics");
        assert_eq!(status, "HTTP/1.1 200 OK");
        let missing: Vec<&&str> =
            wanted.iter().filter(|w| !body.contains(**w)).collect();
        if missing.is_empty() {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed {missing:?}; the last scrape:\n{body}"
        );
        rt.block_on(async {
            tokio::time::sleep(Duration::from_millis(50)).await
        });
    }
}

#[test]
fn a_running_and_a_waiting_ledger_export_their_metrics() {
    let rt = runtime();
    let story = HandoffStory::new(12);
    let (_db, url, ds) = rack_at_generation_1(&rt, &story);
    let port_zero = ["--metrics-addr", "127.0.0.1:0"];
    let mut old =
        Ledger::spawn_with(&url, story.old_nexus[0], 1, None, &port_zero);
    old.wait_state("running");
    let addr = metrics_addr(&old);
    let body = scrape_until(
        &rt,
        &addr,
        &[
            "baton_nexus_phase{phase=\"running\"} 1",
            "baton_nexus_phase{phase=\"starting\"} 0",
            "baton_nexus_quiesce_step 0",
            "baton_execution_steps_total{step=\"ensure_records\",outcome=\"success\"}",
            "baton_execution_steps_total{step=\"cleanup_records\",outcome=\"success\"}",
            "baton_work_in_flight",
            "baton_claims_held",
        ],
    );
    assert!(body.contains("# TYPE baton_nexus_phase gauge"), "{body}");
    for line in body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(line.starts_with("baton_"), "not a baton_ metric: {line}");
    }
    let (status, _) = scrape(&addr, "/other");
    assert!(status.contains("404"), "{status}");
    // A running instance takes new work: `/ready` says 200.
    let (status, body) = scrape(&addr, "/ready");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert_eq!(body, "{\"readiness\":\"ready\",\"reason\":\"running\"}\n");

    // A generation-2 Nexus waiting for the handoff counts its attempts.
    rt.block_on(async {
        import(&ds, &story.new_generation_deployed).await;
        until("the not_yet records", || async {
            ds.records_list().await.expect("records").len() == 6
        })
        .await;
    });
    let mut new =
        Ledger::spawn_with(&url, story.new_nexus[0], 2, None, &port_zero);
    new.wait_state("waiting_for_handoff");
    // Not in control yet: `/ready` says 503, "soon", and why.
    let (status, body) = scrape(&metrics_addr(&new), "/ready");
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable", "{body}");
    assert_eq!(
        body,
        "{\"readiness\":\"soon\",\"reason\":\"waiting_for_handoff\"}\n"
    );
    scrape_until(
        &rt,
        &metrics_addr(&new),
        &[
            "baton_nexus_phase{phase=\"waiting_for_handoff\"} 1",
            "baton_handoff_attempts_total{outcome=\"not_yet_possible\"}",
        ],
    );
}

/// Idle clients cannot starve the endpoint: each is closed once it has
/// sent no request for the idle timeout (5 s), beyond the connection cap
/// (32) the next is told 503 and closed at once, and a scrape after the
/// flood is answered. (Before: idle connections were held forever, each
/// a descriptor, and under a low descriptor limit the accept loop spun.)
#[test]
fn idle_clients_are_closed_and_never_starve_a_scrape() {
    let rt = runtime();
    let story = HandoffStory::new(13);
    let (_db, url, _ds) = rack_at_generation_1(&rt, &story);
    let port_zero = ["--metrics-addr", "127.0.0.1:0"];
    let mut ledger =
        Ledger::spawn_with(&url, story.old_nexus[0], 1, None, &port_zero);
    ledger.wait_state("running");
    let addr = metrics_addr(&ledger);
    let mut idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&addr).expect("connects"))
        .collect();
    // Every idle client is closed by the server: a read ends (0 bytes, or
    // the 503 answer and then the end), within a bounded wait.
    let mut refused = 0;
    for stream in &mut idle {
        stream
            .set_read_timeout(Some(PATIENCE))
            .expect("a read timeout");
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .expect("the server closes an idle connection");
        if answer.starts_with("HTTP/1.1 503") {
            refused += 1;
        } else {
            assert_eq!(answer, "", "an idle client got {answer:?}");
        }
    }
    // The cap: at most 32 were served; the others were refused at once.
    assert!(refused >= 100 - 32, "only {refused} of 100 were refused");
    let (status, body) = scrape(&addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(body.contains("baton_nexus_phase"), "{body}");
}
