//! `baton blueprint add-nexus | bump | expunge`: children written from a
//! fixture (no database) and from the current target (a real server),
//! the planner's refusals, bad input, and a whole handoff authored with
//! the commands alone.

use std::process::{Command, Output, Stdio};

use baton_types::{Blueprint, parse_blueprint};
use expectorate::assert_contents;
use serde_json::Value;

use crate::common::{Env, fixture};

const OLD: [&str; 3] = [
    "e5121482-3929-4d22-a255-accb1a466884",
    "f38b2ffc-80a4-4f5a-91c9-bc701e7ea419",
    "f3f49249-dc28-4f90-a5ae-c7978306d03b",
];
const STEADY: &str = "70eb9a0a-9626-4ae6-85e8-18fac0433cbd";

fn path(name: &str) -> String {
    fixture(name).to_str().unwrap().to_owned()
}

fn read(name: &str) -> Blueprint {
    parse_blueprint(&std::fs::read_to_string(fixture(name)).unwrap()).unwrap()
}

/// The binary with no database at all: no URL, and a local data
/// directory where nothing runs.
fn without_database(args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let empty = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .env_remove("BATON_DATABASE_URL")
        .env("BATON_DATA_DIR", empty.path().join("db"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    out
}

/// [`without_database`], and it must succeed.
fn printed(args: &[&str], stdin: Option<&str>) -> Output {
    let out = without_database(args, stdin);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    out
}

fn stdout(out: &Output) -> &str {
    std::str::from_utf8(&out.stdout).unwrap()
}

fn stderr(out: &Output) -> &str {
    std::str::from_utf8(&out.stderr).unwrap()
}

/// A child the command printed: it validates (through `baton blueprint
/// validate` too), follows its parent, and round-trips; its document
/// keeps every field of its parent's.
fn check_child(text: &str, parent: &Blueprint) -> Blueprint {
    let validated =
        without_database(&["blueprint", "validate", "-"], Some(text));
    assert_eq!(validated.status.code(), Some(0), "{}", stderr(&validated));
    let child = parse_blueprint(text).unwrap();
    assert_eq!(child.check_follows(parent), Ok(()));
    assert_eq!(child.parent_blueprint_id(), Some(parent.id()));
    assert_ne!(child.id(), parent.id());
    assert_eq!(child.creator(), "baton-cli");
    // Parse, serialize (the model rendered afresh), parse: the same.
    let rendered = baton_test_utils::rendered_afresh(&child);
    assert_eq!(parse_blueprint(rendered.document()).unwrap(), child);
    assert_eq!(parse_blueprint(child.document()).unwrap(), child);
    let before: Value = serde_json::from_str(parent.document()).unwrap();
    let after: Value = serde_json::from_str(text).unwrap();
    assert_keeps(&before, &after, "");
    child
}

/// Every field of `parent` is in `child`; every array of it is a prefix
/// of the child's (zones are only appended).
fn assert_keeps(parent: &Value, child: &Value, at: &str) {
    match (parent, child) {
        (Value::Object(p), Value::Object(c)) => {
            for (key, value) in p {
                let inner = format!("{at}/{key}");
                let Some(kept) = c.get(key) else {
                    panic!("{inner} is gone from the child");
                };
                assert_keeps(value, kept, &inner);
            }
        }
        (Value::Array(p), Value::Array(c)) => {
            assert!(p.len() <= c.len(), "{at} lost elements");
            for (i, (a, b)) in p.iter().zip(c).enumerate() {
                assert_keeps(a, b, &format!("{at}/{i}"));
            }
        }
        _ => {}
    }
}

fn nexus_at(bp: &Blueprint, generation: u64) -> Vec<String> {
    let mut ids: Vec<String> = bp
        .in_service_nexus_zones()
        .filter(|z| z.nexus_generation.get() == generation)
        .map(|z| z.zone_id.to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn add_nexus_on_a_fixture_spreads_the_new_generation_over_the_sleds() {
    let parent = read("01-steady.json");
    let out = printed(
        &[
            "blueprint",
            "add-nexus",
            "--from",
            &path("01-steady.json"),
            "--generation",
            "2",
            "--count",
            "3",
        ],
        None,
    );
    assert_eq!(stderr(&out), "");
    let child = check_child(stdout(&out), &parent);
    let new: Vec<_> = child
        .in_service_nexus_zones()
        .filter(|z| z.nexus_generation.get() == 2)
        .collect();
    let mut sleds: Vec<_> = new.iter().map(|z| z.sled_id).collect();
    sleds.sort();
    sleds.dedup();
    assert_eq!(sleds.len(), 3, "one per sled: {new:?}");
    assert!(
        child
            .comment()
            .starts_with("add 3 Nexus zone(s) at generation 2: ")
    );

    // From stdin, two on one sled named twice.
    let sled = parent.sleds().keys().next().unwrap().to_string();
    let text = std::fs::read_to_string(fixture("01-steady.json")).unwrap();
    let out = printed(
        &[
            "blueprint",
            "add-nexus",
            "--from",
            "-",
            "--sled",
            &sled,
            "--sled",
            &sled,
            "--comment",
            "two more",
        ],
        Some(&text),
    );
    let child = check_child(stdout(&out), &parent);
    assert_eq!(child.comment(), "two more");
    let on_sled = child
        .in_service_nexus_zones()
        .filter(|z| z.nexus_generation.get() == 2)
        .filter(|z| z.sled_id.to_string() == sled)
        .count();
    assert_eq!(on_sled, 2);
}

#[test]
fn bump_on_a_fixture_without_a_database_says_what_it_did_not_check() {
    let parent = read("02-new-generation-deployed.json");
    let out = printed(
        &[
            "blueprint",
            "bump",
            "--from",
            &path("02-new-generation-deployed.json"),
        ],
        None,
    );
    assert!(
        stderr(&out).contains("not checked: whether every generation-2")
            && stderr(&out).contains("no database"),
        "{}",
        stderr(&out)
    );
    let child = check_child(stdout(&out), &parent);
    assert_eq!(child.nexus_generation().get(), 2);
    assert_eq!(child.comment(), "bump nexus_generation from 1 to 2");
}

#[test]
fn expunge_on_a_fixture_sets_as_of_generation_to_the_sleds_new_one() {
    let parent = read("03-handoff-started.json");
    let out = printed(
        &[
            "blueprint",
            "expunge",
            "--from",
            &path("03-handoff-started.json"),
            "--nexus-generation",
            "1",
            "--ready-for-cleanup",
        ],
        None,
    );
    assert!(stderr(&out).contains("not checked: whether the handoff is done"));
    let child = check_child(stdout(&out), &parent);
    let doc: Value = serde_json::from_str(stdout(&out)).unwrap();
    for sled in doc["sleds"].as_object().unwrap().values() {
        // The fixture's sleds are at sled_agent_generation 3.
        assert_eq!(sled["sled_agent_generation"], 4);
        for zone in sled["zones"].as_array().unwrap() {
            if OLD.contains(&zone["id"].as_str().unwrap()) {
                assert_eq!(
                    zone["disposition"],
                    serde_json::json!({
                        "kind": "expunged",
                        "as_of_generation": 4,
                        "ready_for_cleanup": true,
                    })
                );
            }
        }
    }
    assert_eq!(nexus_at(&child, 1), Vec::<String>::new());

    // One zone by id, not ready: then marked ready in a grandchild.
    let out = printed(
        &[
            "blueprint",
            "expunge",
            "--from",
            &path("03-handoff-started.json"),
            "--zone",
            OLD[0],
        ],
        None,
    );
    let child = check_child(stdout(&out), &parent);
    let out = printed(
        &[
            "blueprint",
            "expunge",
            "--from",
            "-",
            "--zone",
            OLD[0],
            "--ready-for-cleanup",
        ],
        Some(child.document()),
    );
    // Nothing left to check: the zone was expunged already.
    assert_eq!(stderr(&out), "");
    let grandchild = check_child(stdout(&out), &child);
    let zone = grandchild
        .nexus_zones()
        .find(|z| z.zone_id.to_string() == OLD[0])
        .unwrap();
    assert!(zone.disposition.is_ready_for_cleanup());
}

#[test]
fn the_planner_refusals_exit_1_with_its_reason() {
    // No new zones: a fixture is enough to know.
    let out = without_database(
        &["blueprint", "bump", "--from", &path("01-steady.json")],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains(
            "the planner will not bump blueprint \
             70eb9a0a-9626-4ae6-85e8-18fac0433cbd's nexus_generation from 1: \
             0 in-service Nexus zone(s) at generation 2, 3 wanted."
        ),
        "{}",
        stderr(&out)
    );
    // Expunging a generation the blueprint has not moved past.
    let out = without_database(
        &[
            "blueprint",
            "expunge",
            "--from",
            &path("02-new-generation-deployed.json"),
            "--nexus-generation",
            "1",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no handoff past it can have happened"));

    // The records need the database: new zones without not_yet records,
    // and old zones still active.
    let env = Env::new();
    env.ok(&[
        "blueprint",
        "import",
        &path("02-new-generation-deployed.json"),
        "--set-target",
    ]);
    let init: Vec<&str> =
        OLD.iter().flat_map(|id| ["--nexus-id", id]).collect();
    env.ok(&[&["records", "init"], init.as_slice()].concat());
    let err = env.fails(&["blueprint", "bump"], 1);
    assert!(err.contains("have no not_yet record yet"), "{err}");
    env.ok(&["blueprint", "import", &path("03-handoff-started.json")]);
    let err = env.fails(
        &[
            "blueprint",
            "expunge",
            "--from",
            "1919e93a-d117-45ad-8988-93101c593af5",
            "--nexus-generation",
            "1",
        ],
        1,
    );
    assert!(err.contains("the handoff is not done"), "{err}");
    // Refused, nothing was stored.
    let stored = env.json(&["blueprint", "list", "--json"]);
    assert_eq!(stored.as_array().unwrap().len(), 2);
}

#[test]
fn bad_input_exits_2_with_one_sentence_naming_the_cause() {
    let steady = path("01-steady.json");
    let deployed = path("02-new-generation-deployed.json");
    let sled = "11111111-1111-4111-8111-111111111111";
    let cases: Vec<Vec<&str>> = vec![
        vec!["add-nexus", "--from", "/no/such/file.json"],
        vec!["add-nexus", "--from", &steady, "--generation", "3"],
        vec!["add-nexus", "--from", &deployed, "--generation", "0"],
        vec!["add-nexus", "--from", &steady, "--sled", sled],
        vec!["add-nexus", "--from", &steady, "--count", "0"],
        vec!["expunge", "--from", &steady, "--zone", sled],
        vec!["expunge", "--from", &steady, "--nexus-generation", "5"],
        vec!["expunge", "--from", &steady],
        vec!["bump", "--from", &steady, "--set-target"],
    ];
    let mut shown = String::new();
    for case in cases {
        let args = [&["blueprint"], case.as_slice()].concat();
        let out = without_database(&args, None);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?}");
        let err = stderr(&out)
            .replace(fixture("").to_str().unwrap().trim_end_matches('/'), "$F");
        shown.push_str(&format!(
            "$ baton {}\n{}\n",
            args.join(" ").replace(
                fixture("").to_str().unwrap().trim_end_matches('/'),
                "$F"
            ),
            err.lines().next().unwrap_or("")
        ));
    }
    assert_contents("tests/output/authoring-bad-input.txt", &shown);
    // With a database: no target yet, and --import without one.
    let env = Env::new();
    let err = env.fails(&["blueprint", "bump"], 1);
    assert!(err.contains("no current target"), "{err}");
    let out = without_database(
        &["blueprint", "bump", "--from", &deployed, "--import"],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no database to use"));
}

/// The ids of a stored or printed blueprint's in-service Nexus zones of
/// `generation`, through `blueprint show --json`.
fn shown_nexus(env: &Env, blueprint: &str, generation: u64) -> Vec<String> {
    let shown = env.json(&["blueprint", "show", blueprint, "--json"]);
    let mut ids: Vec<String> = shown["nexus_zones"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|z| z["nexus_generation"] == generation)
        .filter(|z| z["disposition"] == "in_service")
        .map(|z| z["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn target(env: &Env) -> String {
    env.json(&["blueprint", "target", "show", "--json"])["blueprint_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_whole_handoff_authored_with_the_commands_ends_with_generation_2_active() {
    let env = Env::new();
    env.ok(&[
        "blueprint",
        "import",
        &path("01-steady.json"),
        "--set-target",
    ]);
    let init: Vec<&str> =
        OLD.iter().flat_map(|id| ["--nexus-id", id]).collect();
    env.ok(&[&["records", "init"], init.as_slice()].concat());

    // Printed from the target (and from a stored id): valid children.
    let steady = read("01-steady.json");
    let printed = env.ok(&["blueprint", "add-nexus", "--count", "1"]);
    check_child(printed.trim_end(), &steady);
    let printed = env.ok(&["blueprint", "add-nexus", "--from", STEADY]);
    let child = check_child(printed.trim_end(), &steady);
    assert_eq!(nexus_at(&child, 2).len(), 3);

    // Deploy generation 2: three zones, imported and made the target.
    let deployed = env.ok(&[
        "blueprint",
        "add-nexus",
        "--generation",
        "2",
        "--count",
        "3",
        "--import",
        "--set-target",
    ]);
    let deployed = deployed.trim();
    assert_eq!(target(&env), deployed);
    let new = shown_nexus(&env, deployed, 2);
    assert_eq!(new.len(), 3);

    // The old Nexus executes: the new zones get their not_yet records.
    env.ok(&["execute", "--nexus-id", OLD[1]]);
    let bumped = env.ok(&["blueprint", "bump", "--import", "--set-target"]);
    let bumped = bumped.trim();
    assert_eq!(target(&env), bumped);
    let shown = env.json(&["blueprint", "show", bumped, "--json"]);
    assert_eq!(shown["nexus_generation"], 2);
    assert_eq!(shown["parent_blueprint_id"], deployed);

    // The old generation quiesces (the target puts it behind), and a new
    // Nexus takes over.
    for id in OLD {
        env.ok(&["records", "quiesce", "--nexus-id", id]);
    }
    env.ok(&["handoff", "--nexus-id", &new[0]]);

    // Printed first, then imported: the old zones expunged, ready.
    let printed = env.ok(&[
        "blueprint",
        "expunge",
        "--nexus-generation",
        "1",
        "--ready-for-cleanup",
    ]);
    let expunged = parse_blueprint(printed.trim_end()).unwrap();
    assert_eq!(nexus_at(&expunged, 1), Vec::<String>::new());
    let expunged = env.ok(&[
        "blueprint",
        "expunge",
        "--nexus-generation",
        "1",
        "--ready-for-cleanup",
        "--import",
        "--set-target",
    ]);
    let expunged = expunged.trim();
    assert_eq!(target(&env), expunged);

    // A new Nexus's execution deletes the old records.
    env.ok(&["execute", "--nexus-id", &new[0]]);
    let records = env.records();
    let want: Vec<(String, String)> = new
        .iter()
        .map(|id| (id.clone(), "active".to_owned()))
        .collect();
    assert_eq!(records, want);
    let list = env.json(&["blueprint", "list", "--json"]);
    // Four blueprints, each the child of the one before.
    let parent_of = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|bp| bp["id"] == id)
            .map(|bp| bp["parent_blueprint_id"].clone())
    };
    assert_eq!(list.as_array().unwrap().len(), 4);
    assert_eq!(parent_of(deployed), Some(Value::from(STEADY)));
    assert_eq!(parent_of(bumped), Some(Value::from(deployed)));
    assert_eq!(parent_of(expunged), Some(Value::from(bumped)));
}
