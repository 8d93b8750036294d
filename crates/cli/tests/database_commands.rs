//! The database commands through the real binary, against a real server.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use expectorate::assert_contents;
use serde_json::json;

use crate::common::{self, Env};

const OLD: [&str; 3] = [
    "e5121482-3929-4d22-a255-accb1a466884",
    "f38b2ffc-80a4-4f5a-91c9-bc701e7ea419",
    "f3f49249-dc28-4f90-a5ae-c7978306d03b",
];
const NEW: [&str; 3] = [
    "6bad6be2-8e7a-46e9-9f19-950499dd251d",
    "7dabe929-c4a3-44bf-86cd-75e9bb049a79",
    "d7a7a3cc-8c3d-4f16-9293-de8fc88b2875",
];
const BP: [&str; 4] = [
    "70eb9a0a-9626-4ae6-85e8-18fac0433cbd",
    "14aa4e71-9d3c-4dec-80a6-1f933d6c51e3",
    "1919e93a-d117-45ad-8988-93101c593af5",
    "e4163207-d094-4996-82f0-ee99731c9452",
];

/// The story's `n`th fixture (0 to 3).
fn fixture(n: usize) -> PathBuf {
    common::fixture(
        [
            "01-steady.json",
            "02-new-generation-deployed.json",
            "03-handoff-started.json",
            "04-old-expunged.json",
        ][n],
    )
}

impl Env {
    fn import(&self, n: usize) {
        let id = self.ok(&[
            "blueprint",
            "import",
            fixture(n).to_str().unwrap(),
            "--set-target",
        ]);
        assert_eq!(id.trim(), BP[n]);
    }
}

fn expect(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<_> = pairs
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort();
    v
}

fn all(
    ids: &[&'static str],
    state: &'static str,
) -> Vec<(&'static str, &'static str)> {
    ids.iter().map(|id| (*id, state)).collect()
}

#[test]
fn the_fixture_story_driven_by_hand_gives_the_predicted_records() {
    let env = Env::new();
    let old_exec = OLD[1];
    let new_exec = NEW[0];

    // Rack setup and the steady state.
    env.import(0);
    let init: Vec<&str> =
        OLD.iter().flat_map(|id| ["--nexus-id", id]).collect();
    env.ok(&[&["records", "init"], init.as_slice()].concat());
    env.ok(&["execute", "--nexus-id", old_exec]);
    assert_eq!(env.records(), expect(&all(&OLD, "active")));

    // New zones deployed: the old Nexus writes not_yet for them.
    env.import(1);
    env.ok(&["execute", "--nexus-id", old_exec]);
    let mid = [all(&OLD, "active"), all(&NEW, "not_yet")].concat();
    assert_eq!(env.records(), expect(&mid));

    // A stale blueprint writes nothing and exits 1.
    let before = env.records();
    let err = env.fails(
        &["execute", "--nexus-id", old_exec, "--blueprint-id", BP[0]],
        1,
    );
    assert!(err.contains("step"), "{err}");
    assert_eq!(env.records(), before);

    // Without an identity the records step is skipped, exit 0.
    let report = env.json(&["execute", "--no-nexus-id", "--json"]);
    let step = &report["steps"][0];
    assert!(step["name"].as_str().unwrap().contains("db_metadata_nexus"));
    assert_eq!(step["outcome"], "skipped");
    assert_eq!(step["message"], "not running as Nexus");

    // Quiescing is refused before the bump, allowed after.
    let err = env.fails(&["records", "quiesce", "--nexus-id", OLD[0]], 1);
    assert!(err.contains("--force"), "{err}");
    env.import(2);
    env.ok(&["execute", "--nexus-id", old_exec]);
    assert_eq!(env.records(), expect(&mid), "old still active, new not_yet");
    let access = env.json(&["access", "--nexus-id", new_exec, "--json"]);
    assert_eq!(access["decision"], "needs_handoff");
    let refused = env.fails(&["handoff", "--nexus-id", new_exec], 1);
    assert!(
        refused.contains("3 Nexus instance(s) are still active"),
        "{refused}"
    );
    for id in OLD {
        env.ok(&["records", "quiesce", "--nexus-id", id]);
    }
    let done = env.json(&["handoff", "--nexus-id", new_exec, "--json"]);
    assert_eq!(
        done,
        json!({"nexus_id": new_exec, "handed_off": true, "promoted": 3, "reason": null})
    );
    let after = [all(&OLD, "quiesced"), all(&NEW, "active")].concat();
    assert_eq!(env.records(), expect(&after));
    let access = env.json(&["access", "--nexus-id", OLD[0], "--json"]);
    assert_eq!(access["decision"], "refuse");

    // Old zones expunged: a new Nexus's execution cleans up their rows.
    env.import(3);
    env.ok(&["execute", "--nexus-id", new_exec]);
    assert_eq!(env.records(), expect(&all(&NEW, "active")));
    assert_contents(
        "tests/output/records-after-handoff.txt",
        &env.ok(&["records", "list"]),
    );
    assert_contents(
        "tests/output/execute-after-handoff.json",
        &env.ok(&["execute", "--nexus-id", new_exec, "--json"]),
    );
}

#[test]
fn target_commands_follow_the_rules() {
    let env = Env::new();
    let err = env.fails(&["blueprint", "target", "show"], 1);
    assert!(
        err.contains("no blueprint has been made the target"),
        "{err}"
    );
    env.ok(&["blueprint", "import", fixture(0).to_str().unwrap()]);
    env.ok(&["blueprint", "import", fixture(0).to_str().unwrap()]);
    env.ok(&["blueprint", "import", fixture(2).to_str().unwrap()]);
    env.ok(&["blueprint", "target", "set", BP[0]]);
    let err = env.fails(&["blueprint", "target", "set", BP[2]], 1);
    assert!(
        err.contains(BP[2]) && err.contains(BP[0]),
        "names both ids: {err}"
    );
    env.ok(&["blueprint", "target", "set", BP[0], "--enabled", "false"]);
    let shown = env.json(&["blueprint", "target", "show", "--json"]);
    assert_eq!(shown["version"], 2);
    assert_eq!(shown["blueprint_id"], BP[0]);
    assert_eq!(shown["enabled"], false);
    let time = shown["time_made_target"].as_str().unwrap();
    assert!(chrono_like(time), "{time}");
    let err = env.fails(
        &[
            "blueprint",
            "target",
            "set",
            "11111111-1111-4111-8111-111111111111",
        ],
        2,
    );
    assert!(err.contains("no blueprint"), "{err}");
}

/// RFC 3339 at a glance: date, 'T', time, and an offset.
fn chrono_like(s: &str) -> bool {
    s.len() >= 20
        && &s[4..5] == "-"
        && &s[10..11] == "T"
        && (s.ends_with('Z') || s.contains('+'))
}

#[test]
fn records_init_refuses_a_second_time_and_quiesce_force_needs_a_known_id() {
    let env = Env::new();
    env.ok(&["records", "init", "--nexus-id", OLD[0]]);
    let err = env.fails(&["records", "init", "--nexus-id", OLD[1]], 1);
    assert!(err.contains("already holds 1 record"), "{err}");
    let err =
        env.fails(&["records", "quiesce", "--nexus-id", NEW[0], "--force"], 2);
    assert!(err.contains(NEW[0]), "{err}");
    env.ok(&["records", "quiesce", "--nexus-id", OLD[0], "--force"]);
    assert_eq!(env.records(), expect(&[(OLD[0], "quiesced")]));
}

#[test]
fn bad_input_exits_2_and_changes_nothing() {
    let env = Env::new();
    env.import(0);
    let before = env.records();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{ \"id\": ").unwrap();
    let err = env.fails(
        &["blueprint", "import", bad.to_str().unwrap(), "--set-target"],
        2,
    );
    assert!(err.contains("line 1"), "{err}");
    env.fails(&["execute", "--nexus-id", "not-a-uuid"], 2);
    env.fails(&["execute"], 2);
    env.fails(&["execute", "--nexus-id", OLD[0], "--no-nexus-id"], 2);
    let err = env.fails(
        &[
            "execute",
            "--no-nexus-id",
            "--blueprint-id",
            "22222222-2222-4222-8222-222222222222",
        ],
        2,
    );
    assert!(err.contains("no blueprint"), "{err}");
    assert_eq!(env.records(), before);
    assert_eq!(
        env.json(&["blueprint", "target", "show", "--json"])["version"],
        1
    );
}

#[test]
fn access_reports_the_decision_as_a_query() {
    let env = Env::new();
    let fresh = env.json(&["access", "--nexus-id", OLD[0], "--json"]);
    assert_eq!(fresh["decision"], "ready", "empty table: a fresh system");
    assert_eq!(fresh["nexus_id"], OLD[0]);
    env.ok(&["records", "init", "--nexus-id", OLD[0]]);
    let other = env.json(&["access", "--nexus-id", OLD[1], "--json"]);
    assert_eq!(other["decision"], "try_later");
    assert!(
        env.ok(&["access", "--nexus-id", OLD[1]])
            .starts_with("try_later: ")
    );
}

#[test]
fn db_start_gives_a_local_database_the_other_commands_find() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db");
    let baton = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(args)
            .env("BATON_DATA_DIR", &data)
            .env_remove("BATON_DATABASE_URL")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let none = baton(&["records", "list"]);
    assert_eq!(none.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&none.stderr).contains("baton db start"));
    let started = baton(&["db", "start"]);
    assert_eq!(started.status.code(), Some(0), "{started:?}");
    let url = String::from_utf8(started.stdout).unwrap();
    assert!(url.starts_with("postgresql://"), "{url}");
    let again = baton(&["db", "start"]);
    assert_eq!(String::from_utf8(again.stdout).unwrap(), url, "idempotent");
    let listed = baton(&["records", "list", "--json"]);
    assert_eq!(listed.status.code(), Some(0), "{listed:?}");
    assert_eq!(String::from_utf8(listed.stdout).unwrap().trim(), "[]");
    let migrated = baton(&["db", "migrate"]);
    assert_eq!(
        String::from_utf8(migrated.stdout).unwrap().trim(),
        "schema version 3"
    );
    let stopped = baton(&["db", "stop"]);
    assert_eq!(stopped.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&stopped.stdout).contains("stopped"));
    assert_eq!(baton(&["records", "list"]).status.code(), Some(2));
}

#[test]
fn demo_runs_a_whole_handoff_on_the_given_database() {
    let env = Env::new();
    let out = env.ok(&["demo"]);
    assert!(out.contains("old generation quiesced"), "{out}");
    assert!(
        out.contains("quiesced before the new one became active: yes"),
        "{out}"
    );
    let records = env.records();
    assert_eq!(records.len(), 3);
    assert!(records.iter().all(|(_, state)| state == "active"));
    // The demo's ids come from a seeded generator, so they are stable.
    assert_contents(
        "tests/output/records-after-demo.txt",
        &env.ok(&["records", "list"]),
    );
}

/// A silent Nexus whose connections linger on the server (a paused or
/// cut-off process keeps them) is marked with --force: the database
/// fences it, so its open connections are no reason to refuse.
/// `--i-know-it-is-dead` also ends the connections the fence does not.
#[test]
fn records_quiesce_force_marks_a_silent_nexus_whose_connections_linger() {
    let env = Env::new();
    env.ok(&[
        "records",
        "init",
        "--nexus-id",
        OLD[0],
        "--nexus-id",
        OLD[1],
    ]);
    // A lingering "Nexus" connection: a psql session carrying its id.
    let psql = common::psql();
    let linger = |id: &str| {
        Command::new(&psql)
            .arg(format!("{}?application_name={id}", env.db.url()))
            .args(["-c", "SELECT pg_sleep(60)"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut first, mut second) = (linger(OLD[0]), linger(OLD[1]));
    // Wait until the server lists both.
    let deadline =
        std::time::Instant::now() + std::time::Duration::from_secs(10);
    let query = format!(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE application_name IN ('{}', '{}')",
        OLD[0], OLD[1]
    );
    while Command::new(&psql)
        .args([&env.db.url(), "-tAc", &query])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() != "2")
        .unwrap_or(true)
    {
        assert!(std::time::Instant::now() < deadline, "psql never connected");
    }
    let out = env.ok(&["records", "quiesce", "--nexus-id", OLD[0], "--force"]);
    assert!(out.contains("is quiesced"), "{out}");
    assert_eq!(
        env.records(),
        expect(&[(OLD[0], "quiesced"), (OLD[1], "active")])
    );
    env.ok(&[
        "records",
        "quiesce",
        "--nexus-id",
        OLD[1],
        "--force",
        "--i-know-it-is-dead",
    ]);
    assert_eq!(
        env.records(),
        expect(&[(OLD[0], "quiesced"), (OLD[1], "quiesced")])
    );
    // The unfenced connection of the first stays (the fence ends only
    // fenced sessions); --i-know-it-is-dead ended the second's.
    assert!(!second.wait().unwrap().success());
    first.kill().unwrap();
    let _ = first.wait();
}

/// A tool executing as a generation-2 Nexus whose record does not exist
/// yet once wrote three generation-2 rows `active` beside generation 1's.
/// Only a Nexus in control writes records now.
#[test]
fn execute_as_a_nexus_not_in_control_writes_nothing() {
    let env = Env::new();
    let f0 = fixture(0);
    let f1 = fixture(1);
    env.ok(&["blueprint", "import", f0.to_str().unwrap(), "--set-target"]);
    let mut init = vec!["records", "init"];
    for id in OLD {
        init.extend(["--nexus-id", id]);
    }
    env.ok(&init);
    env.ok(&["blueprint", "import", f1.to_str().unwrap(), "--set-target"]);
    let out = env.fails(&["execute", "--nexus-id", NEW[0]], 1);
    assert!(out.contains("not in control"), "{out}");
    assert_eq!(env.records(), expect(&all(&OLD, "active")));

    // The Nexus in control writes the not_yet rows, as before.
    env.ok(&["execute", "--nexus-id", OLD[0]]);
    let want = [all(&OLD, "active"), all(&NEW, "not_yet")].concat();
    assert_eq!(env.records(), expect(&want));
}

#[test]
fn blueprint_show_finds_a_stored_blueprint_by_id() {
    let env = Env::new();
    let f = fixture(3);
    env.ok(&["blueprint", "import", f.to_str().unwrap()]);
    let shown = env.json(&["blueprint", "show", BP[3], "--json"]);
    assert_eq!(shown["id"], BP[3]);
    let expunged = shown["nexus_zones"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|z| z["disposition"] == "expunged")
        .count();
    assert_eq!(expunged, 3, "{shown}");
    // An id that is stored nowhere is bad input.
    let missing = "00000000-0000-0000-0000-000000000000";
    let err = env.fails(&["blueprint", "show", missing], 2);
    assert!(err.contains(missing), "{err}");
}

#[test]
fn a_connection_failure_names_the_servers_reason_at_once() {
    let env = Env::new();
    let baton = |url: &str| {
        Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(["records", "list"])
            .env("BATON_DATABASE_URL", url)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let cases = [
        ("postgresql://baton@host:notaport/db", 2, "URL is malformed"),
        (
            &env.db.url_for("no_such_db") as &str,
            1,
            "database \"no_such_db\" does not exist (SQLSTATE 3D000) \
             (retrying will not help",
        ),
        (
            "postgresql://baton@%2Fno%2Fsuch%2Fdir/baton",
            1,
            "no server socket where the URL points",
        ),
    ];
    for (url, code, reason) in cases {
        let out = baton(url);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{url}: {err}");
        assert!(err.contains(reason), "{url}: {err}");
        assert!(!err.contains("Timed out"), "{url}: {err}");
    }
}

#[test]
fn execute_refuses_a_disabled_target_and_a_schema_from_the_future() {
    let env = Env::new();
    let steady = common::fixture("01-steady.json");
    let steady = steady.to_str().unwrap();
    env.ok(&[
        "blueprint",
        "import",
        steady,
        "--set-target",
        "--enabled",
        "false",
    ]);
    let err = env.fails(&["execute", "--nexus-id", OLD[0]], 1);
    assert!(err.contains("is disabled"), "{err}");
    assert_eq!(env.records(), vec![], "nothing was written");
    let id = env.ok(&["blueprint", "list", "--json"]);
    let id = serde_json::from_str::<serde_json::Value>(&id).unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    env.ok(&["blueprint", "target", "set", &id, "--enabled", "true"]);
    // A newer Baton migrated this database: this build must not use it.
    let sql = "INSERT INTO baton_schema_version (version, name) \
               VALUES (1000, 'from the future')";
    env.sql(sql);
    let err = env.fails(&["execute", "--nexus-id", OLD[0]], 1);
    assert!(err.contains("access check says refuse"), "{err}");
    assert_eq!(env.records(), vec![], "nothing was written");
}

/// `db migrate` from several processes at once on fresh databases: every
/// one succeeds (the migration lock serializes them), many times over.
#[test]
fn concurrent_migrations_from_several_processes_all_succeed() {
    let env = Env::new();
    for round in 0..5 {
        let name = format!("concurrent_{round}");
        let created = Command::new(common::psql())
            .arg(env.db.url())
            .args(["-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!("CREATE DATABASE {name}"))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(created.success());
        let url = env.db.url_for(&name);
        let children: Vec<_> = (0..6)
            .map(|_| {
                Command::new(env!("CARGO_BIN_EXE_baton"))
                    .args(["db", "migrate"])
                    .env("BATON_DATABASE_URL", &url)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert_eq!(out.status.code(), Some(0), "{round}: {out:?}");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                "schema version 3"
            );
        }
    }
}

/// `baton demo --database-url` needs an empty database: on one that
/// already holds records or blueprints (a second run, or one in use) it
/// refuses at once, naming why, and changes nothing.
#[test]
fn demo_refuses_a_database_that_is_not_empty() {
    let env = Env::new();
    env.ok(&["records", "init", "--nexus-id", OLD[0]]);
    let err = env.fails(&["demo"], 2);
    assert!(err.contains("already holds 1 record(s)"), "{err}");
    assert!(err.contains("needs an empty database"), "{err}");
    assert_eq!(env.records(), expect(&[(OLD[0], "active")]));
}
