//! The bad-input corpus: broken blueprints and wrong ids through the real
//! binary. Each case exits 2 (or 1 where the contract says the operation
//! ran and failed), says what is wrong in a sentence on stderr, prints
//! nothing on stdout, never panics, and leaves the database exactly as it
//! was: records, target and stored blueprints compared before and after.

use serde_json::Value;

use crate::common::{Env, fixture, steady};

const OLD: &str = "e5121482-3929-4d22-a255-accb1a466884";
const UNKNOWN: &str = "22222222-2222-4222-8222-222222222222";
const STEADY: &str = "70eb9a0a-9626-4ae6-85e8-18fac0433cbd";
const EXPUNGED_BP_ID: &str = "e4163207-d094-4996-82f0-ee99731c9452";

/// The first zone of the first sled, and the first Nexus zone.
fn first_zone(doc: &mut Value) -> &mut Value {
    let sled = doc["sleds"]
        .as_object_mut()
        .unwrap()
        .values_mut()
        .next()
        .unwrap();
    &mut sled["zones"][0]
}

fn first_nexus(doc: &mut Value) -> &mut Value {
    doc["sleds"]
        .as_object_mut()
        .unwrap()
        .values_mut()
        .flat_map(|s| s["zones"].as_array_mut().unwrap().iter_mut())
        .find(|z| z["zone_type"]["type"] == "nexus")
        .unwrap()
}

/// Broken documents: (what is wrong, the text, a phrase stderr must hold).
fn broken_documents() -> Vec<(&'static str, String, &'static str)> {
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut doc = steady();
        f(&mut doc);
        serde_json::to_string_pretty(&doc).unwrap()
    };
    let text = std::fs::read_to_string(fixture("01-steady.json")).unwrap();
    vec![
        (
            "truncated JSON",
            text[..text.len() / 2].to_owned(),
            "malformed",
        ),
        ("empty file", String::new(), "malformed"),
        ("not JSON", "\u{1}\u{2}binary\u{0}".to_owned(), "malformed"),
        (
            "an array, not an object",
            "[1, 2, 3]".to_owned(),
            "malformed",
        ),
        (
            "wrong type: generation as text",
            edit(&|d| d["nexus_generation"] = "two".into()),
            "malformed",
        ),
        (
            "missing field: sleds",
            edit(&|d| {
                d.as_object_mut().unwrap().remove("sleds");
            }),
            "sleds",
        ),
        (
            "missing field: id",
            edit(&|d| {
                d.as_object_mut().unwrap().remove("id");
            }),
            "id",
        ),
        (
            "id not a UUID",
            edit(&|d| d["id"] = "blueprint-1".into()),
            "malformed",
        ),
        (
            "zones as an object",
            edit(&|d| {
                let sled = d["sleds"]
                    .as_object_mut()
                    .unwrap()
                    .values_mut()
                    .next()
                    .unwrap();
                sled["zones"] = serde_json::json!({});
            }),
            "malformed",
        ),
        (
            "unknown disposition",
            edit(&|d| {
                first_zone(d)["disposition"] =
                    serde_json::json!({"kind": "vanished"})
            }),
            "malformed",
        ),
        (
            "generation 0",
            edit(&|d| d["nexus_generation"] = 0.into()),
            "generation",
        ),
        (
            "generation above i64::MAX",
            edit(&|d| {
                d["nexus_generation"] =
                    serde_json::json!(9_223_372_036_854_775_808u64)
            }),
            "generation",
        ),
        (
            "Nexus zone generation negative",
            edit(&|d| {
                first_nexus(d)["zone_type"]["nexus_generation"] = (-1).into()
            }),
            "malformed",
        ),
        (
            "Nexus zone skipping ahead",
            edit(&|d| {
                first_nexus(d)["zone_type"]["nexus_generation"] = 3.into()
            }),
            "more than one above",
        ),
        (
            "duplicate zone ids",
            edit(&|d| {
                let copy = first_zone(d).clone();
                let sled = d["sleds"]
                    .as_object_mut()
                    .unwrap()
                    .values_mut()
                    .last()
                    .unwrap();
                sled["zones"].as_array_mut().unwrap().push(copy);
            }),
            "appears 2 times",
        ),
        (
            "no Nexus at the blueprint's generation",
            edit(&|d| d["nexus_generation"] = 2.into()),
            "no in-service Nexus zone",
        ),
        (
            "its own parent",
            edit(&|d| d["parent_blueprint_id"] = d["id"].clone()),
            "names itself as its parent",
        ),
    ]
}

/// A child of the steady blueprint that relabels a Nexus zone's
/// generation: valid alone, but it may not follow its parent.
const RELABELLED: &str = "33333333-3333-4333-8333-333333333333";

fn relabelled_child() -> String {
    let mut doc = steady();
    doc["parent_blueprint_id"] = STEADY.into();
    doc["id"] = RELABELLED.into();
    first_nexus(&mut doc)["zone_type"]["nexus_generation"] = 2.into();
    serde_json::to_string_pretty(&doc).unwrap()
}

/// A database mid-story, and a directory for the broken documents.
struct Corpus {
    env: Env,
    dir: tempfile::TempDir,
}

impl Corpus {
    /// The steady blueprint imported and the target, the old records in
    /// place, and a stored child that may not follow it.
    fn new() -> Corpus {
        let corpus = Corpus {
            env: Env::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        let env = &corpus.env;
        env.ok(&[
            "blueprint",
            "import",
            fixture("01-steady.json").to_str().unwrap(),
            "--set-target",
        ]);
        env.ok(&[
            "blueprint",
            "import",
            fixture("04-old-expunged.json").to_str().unwrap(),
        ]);
        env.ok(&["execute", "--nexus-id", OLD]);
        let child = corpus.file("relabelled.json", &relabelled_child());
        env.ok(&["blueprint", "import", &child]);
        corpus
    }

    /// Everything the database holds that a command could change.
    fn snapshot(&self) -> String {
        [
            self.env.ok(&["records", "list", "--json"]),
            self.env.ok(&["blueprint", "target", "show", "--json"]),
            self.env.ok(&["blueprint", "list", "--json"]),
        ]
        .join("\n")
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }

    /// Runs a bad case: the exit code, a phrase on stderr, nothing on
    /// stdout, no panic, and the database unchanged.
    fn refuse(&self, what: &str, args: &[&str], code: i32, phrase: &str) {
        let before = self.snapshot();
        let out = self.env.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{what}: {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        assert!(
            stderr.contains(phrase),
            "{what}: stderr lacks {phrase:?}: {stderr}"
        );
        let said = stderr.trim();
        assert!(
            said.len() > 20 && said.ends_with('.'),
            "{what}: not plain sentences: {said:?}"
        );
        if code == 2 {
            assert!(stdout.is_empty(), "{what}: stdout {stdout:?}");
        }
        assert_eq!(self.snapshot(), before, "{what}: the database changed");
    }
}

#[test]
fn every_case_of_the_bad_input_corpus_is_refused_and_changes_nothing() {
    let env = Corpus::new();
    let mut cases = 0;
    for (i, (what, text, phrase)) in broken_documents().into_iter().enumerate()
    {
        let file = env.file(&format!("bad-{i}.json"), &text);
        env.refuse(
            what,
            &["blueprint", "import", &file, "--set-target"],
            2,
            phrase,
        );
        env.refuse(what, &["blueprint", "validate", &file], 2, phrase);
        env.refuse(
            what,
            &["classify", "--blueprint", &file, "--nexus-id", OLD],
            2,
            phrase,
        );
        cases += 3;
    }
    let steady = fixture("01-steady.json");
    let steady = steady.to_str().unwrap();
    let expunged = fixture("04-old-expunged.json");
    let expunged = expunged.to_str().unwrap();
    let missing = env.dir.path().join("no-such-file.json");
    let relabelled = env.file("relabelled-again.json", &relabelled_child());
    let others: Vec<(&str, Vec<&str>, i32, &str)> = vec![
        (
            "a file that does not exist",
            vec!["blueprint", "import", missing.to_str().unwrap()],
            2,
            "no-such-file.json",
        ),
        (
            "executing Nexus absent",
            vec!["classify", "--blueprint", steady, "--nexus-id", UNKNOWN],
            2,
            UNKNOWN,
        ),
        (
            "executing Nexus expunged",
            vec!["classify", "--blueprint", expunged, "--nexus-id", OLD],
            2,
            "expunged",
        ),
        (
            "target set to an unknown id",
            vec!["blueprint", "target", "set", UNKNOWN],
            2,
            UNKNOWN,
        ),
        (
            "target set to a non-UUID",
            vec!["blueprint", "target", "set", "latest"],
            2,
            "latest",
        ),
        (
            "target set to a blueprint that is not a child",
            vec!["blueprint", "target", "set", EXPUNGED_BP_ID],
            1,
            STEADY,
        ),
        (
            "target set to a child that relabels a generation",
            vec!["blueprint", "target", "set", RELABELLED],
            2,
            "changed generation",
        ),
        (
            "import as target a child that relabels a generation",
            vec!["blueprint", "import", &relabelled, "--set-target"],
            2,
            "changed generation",
        ),
        (
            "execute an unknown blueprint",
            vec!["execute", "--no-nexus-id", "--blueprint-id", UNKNOWN],
            2,
            UNKNOWN,
        ),
        (
            "execute as an unknown Nexus",
            vec!["execute", "--nexus-id", UNKNOWN],
            1,
            UNKNOWN,
        ),
        (
            "quiesce a record that does not exist",
            vec!["records", "quiesce", "--nexus-id", UNKNOWN, "--force"],
            2,
            UNKNOWN,
        ),
        (
            "quiesce an active Nexus without --force",
            vec!["records", "quiesce", "--nexus-id", OLD],
            1,
            OLD,
        ),
        (
            "records init with records present",
            vec!["records", "init", "--nexus-id", UNKNOWN],
            1,
            "record",
        ),
        (
            "records init with a non-UUID",
            vec!["records", "init", "--nexus-id", "nexus-1"],
            2,
            "nexus-1",
        ),
        (
            "handoff by an unknown Nexus",
            vec!["handoff", "--nexus-id", UNKNOWN],
            1,
            "active",
        ),
        (
            "access with a non-UUID",
            vec!["access", "--nexus-id", "x"],
            2,
            "x",
        ),
        (
            "an unknown flag",
            vec!["records", "list", "--everything"],
            2,
            "--everything",
        ),
        (
            "a bad boolean",
            vec![
                "blueprint",
                "import",
                steady,
                "--set-target",
                "--enabled",
                "maybe",
            ],
            2,
            "maybe",
        ),
    ];
    for (what, args, code, phrase) in &others {
        env.refuse(what, args, *code, phrase);
        cases += 1;
    }
    eprintln!(
        "bad-input corpus: {cases} cases refused, database unchanged after each"
    );
    assert!(cases >= 60, "only {cases} cases");
}

/// No value of a numeric flag makes `baton` panic: `status --interval`
/// takes 0.05 to 86400 seconds and refuses anything else with exit 2,
/// naming the flag (it panicked on 1e20, and 1e-9 redrew ~5,000 times a
/// second).
#[test]
fn every_numeric_flag_beyond_its_bounds_is_refused_without_a_panic() {
    let env = Env::new();
    let extremes = [
        "1e20",
        "18446744073709551616",
        "1e-9",
        "0",
        "-1",
        "NaN",
        "inf",
        "-inf",
        "",
        "two",
        "0.04",
        "86400.5",
    ];
    for value in extremes {
        for watch in [false, true] {
            let interval = format!("--interval={value}");
            let mut args = vec!["status", interval.as_str()];
            if watch {
                args.push("--watch");
            }
            let err = env.fails(&args, 2);
            assert!(err.contains("--interval"), "{args:?}: {err}");
        }
    }
    // The bounds themselves are taken.
    for value in ["0.05", "86400"] {
        env.ok(&["status", "--interval", value]);
    }
}

/// First-run and access errors say the true cause: a database never
/// migrated says to run `baton db migrate`; a role without USAGE on the
/// schema is told so, not that the record table is empty.
#[test]
fn first_run_and_access_errors_name_the_true_cause() {
    let fresh = crate::common::Env::unmigrated();
    let err = fresh.fails(&["records", "list"], 1);
    assert!(err.contains("baton db migrate"), "{err}");

    let env = Env::new();
    env.ok(&["records", "init", "--nexus-id", OLD]);
    env.sql(
        "CREATE ROLE outsider LOGIN; REVOKE ALL ON SCHEMA public FROM PUBLIC",
    );
    let url = env.db.url().replacen("://baton@", "://outsider@", 1);
    assert_ne!(url, env.db.url());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["access", "--nexus-id", OLD, "--database-url", &url])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string()
        + &String::from_utf8_lossy(&out.stderr);
    assert!(!said.contains("empty"), "{said}");
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("USAGE"), "{said}");
}

/// A database URL no retry can fix is bad input: exit 2, naming its bad
/// part (an empty URL once read "invalid configuration (retrying may
/// help ...)", a bad escape went to a name lookup, and the rest read only
/// "invalid connection string"); `db start` and `db stop` refuse a
/// `--database-url` they would ignore.
#[test]
fn malformed_database_urls_are_bad_input_naming_the_bad_part() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_baton"))
            .args(args)
            .env_remove("BATON_DATABASE_URL")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (url, said) in [
        ("", "the database URL is empty"),
        (
            "postgresql://alice:pw@%zz/baton",
            "the host `%zz` has a bad",
        ),
        (
            "postgresql://u@h:notaport/db",
            "the port `notaport` of host `h`",
        ),
        ("mysql://x/y", "the scheme `mysql://`"),
    ] {
        let (code, err) = run(&["--database-url", url, "records", "list"]);
        assert_eq!(code, Some(2), "{url:?}: {err}");
        assert!(err.contains(said), "{url:?}: {err}");
        assert!(!err.contains("pw"), "{url:?}: {err}");
    }
    for command in ["start", "stop"] {
        let (code, err) =
            run(&["--database-url", "postgresql://u@h/db", "db", command]);
        assert_eq!(code, Some(2), "db {command}: {err}");
        assert!(err.contains("takes no --database-url"), "{err}");
    }
}
