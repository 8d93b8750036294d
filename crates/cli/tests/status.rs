//! `baton status`: what a handoff waits on, from the records, the target
//! and the instances' reports.

use baton_datastore::DataStore;
use baton_types::{Held, NexusState, NexusStatus};
use baton_uuid_kinds::OmicronZoneUuid;
use chrono::{TimeZone, Utc};
use expectorate::assert_contents;

use crate::common::{Env, fixture};

/// The generation-1 Nexus of the fixtures, and one of generation 2.
const OLD: [&str; 3] = [
    "e5121482-3929-4d22-a255-accb1a466884",
    "f38b2ffc-80a4-4f5a-91c9-bc701e7ea419",
    "f3f49249-dc28-4f90-a5ae-c7978306d03b",
];

/// Ages (`0.3 s`, `4 m 12 s`) become `<age>` and runs of spaces one, so
/// that a snapshot does not depend on the clock or on column widths.
fn masked(text: &str) -> String {
    let units = ["s", "m", "h"];
    text.lines()
        .map(|line| {
            let words: Vec<&str> =
                line.split(' ').filter(|w| !w.is_empty()).collect();
            let mut out: Vec<&str> = Vec::new();
            let mut i = 0;
            while i < words.len() {
                let is_age = |j: usize| {
                    words.get(j).is_some_and(|w| w.parse::<f64>().is_ok())
                        && words.get(j + 1).is_some_and(|u| units.contains(u))
                };
                if is_age(i) {
                    while is_age(i) {
                        i += 2;
                    }
                    out.push("<age>");
                } else {
                    out.push(words[i]);
                    i += 1;
                }
            }
            out.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn report(id: &str, step: u8, claim: Option<Held>, work: u64) -> NexusStatus {
    NexusStatus {
        nexus_id: id.parse::<OmicronZoneUuid>().unwrap(),
        state: NexusState::Quiescing { step },
        readiness: baton_types::Readiness::Draining,
        since: Utc.with_ymd_and_hms(2026, 11, 28, 9, 0, 0).unwrap(),
        work_in_flight: work,
        oldest_work: (work > 0).then(|| Held {
            op: "nightly job".to_owned(),
            age_ms: 61_000,
        }),
        claims_held: u64::from(claim.is_some()),
        oldest_claim: claim,
        last_drained_blueprint_id: None,
    }
}

/// The generation-2 Nexus of the fixtures.
const NEW: [&str; 3] = [
    "6bad6be2-8e7a-46e9-9f19-950499dd251d",
    "7dabe929-c4a3-44bf-86cd-75e9bb049a79",
    "d7a7a3cc-8c3d-4f16-9293-de8fc88b2875",
];

/// A report of `id` in `state`, with `work` units in flight.
fn reported(id: &str, state: NexusState, work: u64) -> NexusStatus {
    NexusStatus {
        readiness: state.readiness(),
        state,
        work_in_flight: work,
        oldest_work: (work > 0).then(|| Held {
            op: "a request".to_owned(),
            age_ms: 10,
        }),
        ..report(id, 1, None, 0)
    }
}

/// Writes these reports, as the instances would.
fn write_reports(env: &Env, reports: &[NexusStatus]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let ds = DataStore::new(&log, &env.db.url());
        let mut reporter = ds.reporter().await.unwrap();
        for report in reports {
            reporter.report(report).await.unwrap();
        }
    });
}

/// Through a whole handoff with reports that the records have since
/// overtaken, `baton status` says what is true: once said "waiting on
/// nothing: the handoff is done" before the bump, "running" with work 1
/// for quiesced instances, "waiting_for_handoff" for instances in
/// control, and "running" for instances whose records were cleaned up.
#[test]
fn status_follows_the_records_where_they_know_better() {
    let env = Env::new();
    let path = |name: &str| fixture(name).to_str().unwrap().to_owned();
    let import = |name: &str| {
        env.ok(&["blueprint", "import", &path(name), "--set-target"]);
    };
    import("01-steady.json");
    let mut init = vec!["records", "init"];
    init.extend(OLD.iter().flat_map(|id| ["--nexus-id", id]));
    env.ok(&init);
    let running: Vec<_> = OLD
        .iter()
        .map(|id| reported(id, NexusState::Running, 1))
        .collect();
    write_reports(&env, &running);

    // Generation 2 deployed and its records written: the bump is next.
    import("02-new-generation-deployed.json");
    env.ok(&["execute", "--nexus-id", OLD[0]]);
    let text = env.ok(&["status"]);
    assert_contents("tests/output/status-before-bump.txt", &masked(&text));
    let json = env.json(&["status", "--json"]);
    assert_eq!(json["done"], false);
    assert_eq!(json["waiting_on"][0]["waiting"], "bump");

    // The bump, the old generation forced out, the handoff: the new
    // instances' last reports still say they wait for it.
    let waiting: Vec<_> = NEW
        .iter()
        .map(|id| reported(id, NexusState::WaitingForHandoff, 0))
        .collect();
    write_reports(&env, &waiting);
    import("03-handoff-started.json");
    let mut quiesce = vec!["records", "quiesce", "--i-know-it-is-dead"];
    quiesce.extend(OLD.iter().flat_map(|id| ["--nexus-id", id]));
    env.ok(&quiesce);
    env.ok(&["handoff", "--nexus-id", NEW[0]]);
    let text = env.ok(&["status"]);
    assert_contents("tests/output/status-after-handoff.txt", &masked(&text));
    let json = env.json(&["status", "--json"]);
    for n in json["nexus"].as_array().unwrap() {
        let old = OLD.contains(&n["nexus_id"].as_str().unwrap());
        let want = if old { "quiesced" } else { "taking_over" };
        assert_eq!(n["phase"], want, "{n}");
        assert_eq!(n["work_in_flight"], serde_json::Value::Null, "{n}");
    }

    // The old zones expunged and their records cleaned up.
    import("04-old-expunged.json");
    env.ok(&["execute", "--nexus-id", NEW[0]]);
    let text = env.ok(&["status"]);
    assert_contents("tests/output/status-after-cleanup.txt", &masked(&text));
    let json = env.json(&["status", "--json"]);
    let gone = json["nexus"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["phase"] == "gone")
        .count();
    assert_eq!(gone, 3, "{json}");
}

/// Three old Nexus mid-drain after the bump: one holds a claim in step 4,
/// one waits for its work in step 2, one never reported.
#[test]
fn status_says_what_a_stuck_drain_waits_on() {
    let env = Env::new();
    let path = |name: &str| fixture(name).to_str().unwrap().to_owned();
    env.ok(&[
        "blueprint",
        "import",
        &path("01-steady.json"),
        "--set-target",
    ]);
    let mut init = vec!["records", "init"];
    init.extend(OLD.iter().flat_map(|id| ["--nexus-id", id]));
    env.ok(&init);
    env.ok(&[
        "blueprint",
        "import",
        &path("02-new-generation-deployed.json"),
        "--set-target",
    ]);
    env.ok(&["execute", "--nexus-id", OLD[0]]);
    env.ok(&[
        "blueprint",
        "import",
        &path("03-handoff-started.json"),
        "--set-target",
    ]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let log = slog::Logger::root(slog::Discard, slog::o!());
        let ds = DataStore::new(&log, &env.db.url());
        let claim = Held {
            op: "ledger job".to_owned(),
            age_ms: 252_000,
        };
        let mut reporter = ds.reporter().await.unwrap();
        reporter
            .report(&report(OLD[0], 4, Some(claim), 0))
            .await
            .unwrap();
        reporter.report(&report(OLD[1], 2, None, 1)).await.unwrap();
    });

    let text = env.ok(&["status"]);
    assert_contents("tests/output/status-stuck-drain.txt", &masked(&text));

    let json = env.json(&["status", "--json"]);
    assert_eq!(json["done"], false);
    assert_eq!(json["target"]["nexus_generation"], 2);
    assert_eq!(json["generation_in_control"], 1);
    let waits = json["waiting_on"].as_array().unwrap();
    let waited: Vec<&str> = waits
        .iter()
        .filter_map(|w| w["nexus_id"].as_str())
        .collect();
    assert_eq!(waited, OLD, "every old Nexus is waited on");
    let first = &waits[0]["reason"].as_str().unwrap();
    assert!(first.contains("quiesce step 4"), "{first}");
    assert!(first.contains("4 m 12 s (ledger job)"), "{first}");
    let nexus = json["nexus"].as_array().unwrap();
    let stuck = nexus.iter().find(|n| n["nexus_id"] == OLD[0]).unwrap();
    assert_eq!(stuck["step"], 4);
    assert_eq!(stuck["claims_held"], 1);
    assert_eq!(stuck["oldest_claim"]["op"], "ledger job");
    assert_eq!(stuck["oldest_claim"]["age_ms"], 252_000);
    let silent = nexus.iter().find(|n| n["nexus_id"] == OLD[2]).unwrap();
    assert_eq!(silent["phase"], serde_json::Value::Null);

    // A Nexus that just reported is alive: forcing it quiesced is
    // refused, naming when it reported, unless the operator says it is
    // dead.
    let err =
        env.fails(&["records", "quiesce", "--force", "--nexus-id", OLD[0]], 1);
    assert!(err.contains("reported its status"), "{err}");
    assert!(err.contains("quiescing step 4"), "{err}");
    env.ok(&[
        "records",
        "quiesce",
        "--force",
        "--i-know-it-is-dead",
        "--nexus-id",
        OLD[0],
    ]);
}

/// `--watch --json` redraws as one JSON object per line until nothing
/// waits; here something always does (no target), so it is stopped.
#[test]
fn status_watch_json_prints_one_object_per_line_per_redraw() {
    let env = Env::new();
    let (mut watch, mut lines) =
        env.spawn(&["status", "--watch", "--json", "--interval", "0.05"]);
    for _ in 0..3 {
        let line = lines.next().expect("a redraw").unwrap();
        let status: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(status["done"], false, "{line}");
        assert_eq!(status["waiting_on"][0]["waiting"], "execution", "{line}");
    }
    watch.kill().unwrap();
    watch.wait().unwrap();
}

/// Announcements are hints: 10,000 forged ones (any role may send
/// them) redraw nothing, and the one real change after them redraws
/// once. Here there is no target (the watch waits on execution) until
/// one is set, and then nothing waits, so the watch ends by itself: one
/// first draw, one redraw.
#[test]
fn status_watch_redraws_nothing_for_forged_announcements() {
    let env = Env::new();
    let (mut watch, mut lines) =
        env.spawn(&["status", "--watch", "--json", "--interval", "3600"]);
    let first = lines.next().expect("the first draw").unwrap();
    assert!(first.contains(r#""done":false"#), "{first}");
    let forged = "SELECT count(pg_notify('baton_handoff', \
        (ARRAY['target_set', 'records_added', 'drained', 'quiesced', \
        'handoff', 'records_removed', 'brand_new'])[1 + g % 7] || ' - ' || g)) \
        FROM generate_series(1, 10000) AS g";
    env.sql(forged);
    let steady = fixture("01-steady.json");
    env.ok(&[
        "blueprint",
        "import",
        steady.to_str().unwrap(),
        "--set-target",
    ]);
    // The watch ends once nothing waits: its stdout closes.
    let redraws: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(watch.wait().unwrap().success());
    eprintln!("redraws after the first: {}", redraws.len());
    assert_eq!(redraws.len(), 1, "{:?}", &redraws[..redraws.len().min(3)]);
    assert!(redraws[0].contains(r#""done":true"#), "{}", redraws[0]);
}

/// A report row that is not a report (not JSON) is shown as unreadable
/// for its Nexus, and blocks neither the others nor the operator: the
/// status reads, and `records quiesce --force` marks the others, and
/// that one too once its row is older than a report interval (its
/// arrival still counts as a sign of life).
#[test]
fn an_unreadable_report_blocks_no_one() {
    let env = Env::new();
    let steady = fixture("01-steady.json");
    env.ok(&[
        "blueprint",
        "import",
        steady.to_str().unwrap(),
        "--set-target",
    ]);
    let mut init = vec!["records", "init"];
    for id in OLD {
        init.extend(["--nexus-id", id]);
    }
    env.ok(&init);
    env.sql(&format!(
        "INSERT INTO baton_nexus_report (nexus_id, report, reported_at) \
         VALUES ('{}', 'not json', now())",
        OLD[0]
    ));
    let status = env.json(&["status", "--json"]);
    let nexus = status["nexus"].as_array().unwrap();
    assert!(
        nexus[0]["report_unreadable"]
            .as_str()
            .is_some_and(|why| why.contains("not a status report")),
        "{status}"
    );
    assert!(nexus[1].get("report_unreadable").is_none(), "{status}");
    assert!(env.ok(&["status"]).contains("report unreadable"));
    env.ok(&["records", "quiesce", "--nexus-id", OLD[1], "--force"]);
    let quiesce = ["records", "quiesce", "--nexus-id", OLD[0], "--force"];
    let err = env.fails(&quiesce, 1);
    assert!(err.contains("an unreadable report"), "{err}");
    env.sql(
        "UPDATE baton_nexus_report SET reported_at = now() - \
             interval '1 hour'",
    );
    env.ok(&quiesce);
}
