//! `baton classify` and `baton blueprint validate`, through the binary.

use std::process::{Command, Output, Stdio};

use expectorate::assert_contents;

use crate::common::{fixtures, steady};
use serde_json::{Value, json};

fn baton(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("the baton binary runs")
}

fn baton_stdin(args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the baton binary runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn expected() -> Value {
    let path = fixtures().join("expected.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Never a panic or a backtrace, whatever the input.
fn assert_no_panic(out: &Output) {
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("RUST_BACKTRACE"), "{err}");
}

#[test]
fn classify_json_matches_expected_for_every_document_and_id() {
    let expected = expected();
    let mut checked = 0;
    for (name, doc) in expected["documents"].as_object().unwrap() {
        let file = fixtures().join(name);
        for (id, want) in doc["classify"].as_object().unwrap() {
            let out = baton(&[
                "classify",
                "--blueprint",
                file.to_str().unwrap(),
                "--nexus-id",
                id,
                "--json",
            ]);
            assert_no_panic(&out);
            if let Some(message) = want.get("error") {
                assert_eq!(out.status.code(), Some(2), "{name} {id}");
                assert!(out.stdout.is_empty(), "{name} {id}");
                let err = text(&out.stderr);
                assert!(err.contains(message.as_str().unwrap()), "{err}");
                assert!(err.contains(id.as_str()), "{err}");
            } else {
                assert_eq!(out.status.code(), Some(0), "{name} {id}");
                let got: Value = serde_json::from_slice(&out.stdout).unwrap();
                let mut want = want.clone();
                want["nexus_id"] = json!(id);
                assert_eq!(got, want, "{name} {id}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 8, "every document and id in expected.json");
}

#[test]
fn classify_prints_a_table_without_json() {
    let file = fixtures().join("03-handoff-started.json");
    let out = baton(&[
        "classify",
        "--blueprint",
        file.to_str().unwrap(),
        "--nexus-id",
        "6bad6be2-8e7a-46e9-9f19-950499dd251d",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_contents("tests/output/classify-table.txt", &text(&out.stdout));
}

#[test]
fn classify_with_a_bad_id_is_a_usage_error() {
    let file = fixtures().join("01-steady.json");
    let out = baton(&[
        "classify",
        "--blueprint",
        file.to_str().unwrap(),
        "--nexus-id",
        "not-a-uuid",
    ]);
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--nexus-id"));
}

#[test]
fn validate_accepts_every_fixture() {
    for name in [
        "01-steady.json",
        "02-new-generation-deployed.json",
        "03-handoff-started.json",
        "04-old-expunged.json",
    ] {
        let file = fixtures().join(name);
        let out = baton(&["blueprint", "validate", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{name}: {out:?}");
        assert!(text(&out.stdout).contains("is valid"));
    }
}

fn edit_zones(doc: &mut Value, mut f: impl FnMut(usize, &mut Value)) {
    let mut index = 0;
    for sled in doc["sleds"].as_object_mut().unwrap().values_mut() {
        for zone in sled["zones"].as_array_mut().unwrap() {
            f(index, zone);
            index += 1;
        }
    }
}

fn validate_stdin(doc: &str) -> Output {
    let out = baton_stdin(&["blueprint", "validate", "-"], doc);
    assert_no_panic(&out);
    out
}

#[test]
fn validate_refuses_each_invalid_case_with_the_ids() {
    let mut cases: Vec<(&str, Value, String)> = Vec::new();

    let mut doc = steady();
    let mut first = Value::Null;
    edit_zones(&mut doc, |i, z| match i {
        0 => first = z["id"].clone(),
        1 => z["id"] = first.clone(),
        _ => {}
    });
    let dup = first.as_str().unwrap().to_owned();
    cases.push(("duplicate zone id", doc, dup));

    for bad in [json!(0), json!(i64::MAX as u64 + 1)] {
        let mut doc = steady();
        doc["nexus_generation"] = bad.clone();
        cases.push(("generation out of range", doc, bad.to_string()));
    }

    let mut doc = steady();
    let mut ahead = String::new();
    edit_zones(&mut doc, |_, z| {
        if z["zone_type"]["type"] == "nexus" && ahead.is_empty() {
            z["zone_type"]["nexus_generation"] = json!(3);
            ahead = z["id"].as_str().unwrap().to_owned();
        }
    });
    cases.push(("nexus zone too far ahead", doc, ahead));

    let mut doc = steady();
    doc["nexus_generation"] = json!(2);
    let id = doc["id"].as_str().unwrap().to_owned();
    cases.push(("no nexus at the blueprint generation", doc, id));

    for (what, doc, needle) in cases {
        let out = validate_stdin(&doc.to_string());
        assert_eq!(out.status.code(), Some(2), "{what}");
        let err = text(&out.stderr);
        assert!(err.contains(&needle), "{what}: {err}");
        assert!(out.stdout.is_empty(), "{what}");
    }
}

#[test]
fn validate_lists_every_problem() {
    let mut doc = steady();
    let mut first = Value::Null;
    edit_zones(&mut doc, |i, z| match i {
        0 => first = z["id"].clone(),
        1 => z["id"] = first.clone(),
        _ if z["zone_type"]["type"] == "nexus" => {
            z["zone_type"]["nexus_generation"] = json!(0)
        }
        _ => {}
    });
    doc["nexus_generation"] = json!(4);
    let out = validate_stdin(&serde_json::to_string_pretty(&doc).unwrap());
    assert_eq!(out.status.code(), Some(2));
    assert_contents(
        "tests/output/validate-every-problem.txt",
        &text(&out.stderr),
    );
}

#[test]
fn validate_names_line_and_column_of_malformed_json() {
    let out = validate_stdin("{\n  \"comment\": \"x\",\n  ]\n}\n");
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("line 3, column 3"), "{err}");
}

#[test]
fn validate_of_a_missing_file_is_bad_input() {
    let out = baton(&["blueprint", "validate", "/nonexistent/bp.json"]);
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/bp.json"));
}

#[test]
fn blueprint_show_lists_the_nexus_zones_of_a_file() {
    let file = fixtures().join("02-new-generation-deployed.json");
    let out = baton(&["blueprint", "show", file.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["id"], "14aa4e71-9d3c-4dec-80a6-1f933d6c51e3");
    assert_eq!(
        shown["parent_blueprint_id"],
        "70eb9a0a-9626-4ae6-85e8-18fac0433cbd"
    );
    let zones = shown["nexus_zones"].as_array().unwrap();
    assert_eq!(zones.len(), 6);
    let generations: Vec<u64> = zones
        .iter()
        .map(|z| z["nexus_generation"].as_u64().unwrap())
        .collect();
    assert_eq!(generations.iter().filter(|g| **g == 2).count(), 3);
    assert!(zones.iter().all(|z| z["disposition"] == "in_service"));
    let table = baton(&["blueprint", "show", file.to_str().unwrap()]);
    assert!(
        text(&table.stdout).contains("6bad6be2-8e7a-46e9-9f19-950499dd251d"),
        "{table:?}"
    );
}

#[test]
fn blueprint_show_of_neither_a_file_nor_an_id_is_bad_input() {
    let out = baton(&["blueprint", "show", "no-such-file.json"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("no-such-file.json"), "{out:?}");
}

#[test]
fn a_bogus_log_level_is_bad_input_not_ignored() {
    let file = fixtures().join("01-steady.json");
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["blueprint", "validate", file.to_str().unwrap()])
        .env("BATON_LOG", "bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("BATON_LOG"), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
}

#[test]
fn blueprint_input_is_bounded_and_only_from_files_or_stdin() {
    let dir = camino_tempfile::Utf8TempDir::new().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let big = dir.path().join("big.json");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(17 * 1024 * 1024)
        .unwrap();
    for (path, reason) in [
        ("/dev/zero", "is not a regular file"),
        (fifo.as_str(), "is not a regular file"),
        (big.as_str(), "is larger than 16 MiB"),
    ] {
        let out = baton(&["blueprint", "validate", path]);
        assert_eq!(out.status.code(), Some(2), "{path}: {out:?}");
        assert!(text(&out.stderr).contains(reason), "{path}: {out:?}");
    }
    // Endless stdin is cut off at the limit, not read until memory ends.
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["blueprint", "validate", "-"])
        .stdin(std::fs::File::open("/dev/zero").unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("stdin is larger than 16 MiB"));
}
