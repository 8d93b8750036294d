//! Each rule, broken on purpose, is reported with the ids involved, and
//! every problem is reported, not only the first.

use baton_types::{ReadError, ValidationProblem, parse_blueprint};
use serde_json::{Value, json};

use crate::fixtures::FIXTURES;

fn steady() -> Value {
    serde_json::from_str(FIXTURES[0].1).unwrap()
}

fn zones(doc: &mut Value) -> Vec<&mut Value> {
    doc["sleds"]
        .as_object_mut()
        .unwrap()
        .values_mut()
        .flat_map(|s| s["zones"].as_array_mut().unwrap().iter_mut())
        .collect()
}

fn problems(doc: &Value) -> Vec<ValidationProblem> {
    match parse_blueprint(&doc.to_string()) {
        Err(ReadError::Invalid(e)) => e.problems,
        other => panic!("expected invalid, got {other:?}"),
    }
}

fn nexus_ids(doc: &mut Value) -> Vec<String> {
    zones(doc)
        .into_iter()
        .filter(|z| z["zone_type"]["type"] == "nexus")
        .map(|z| z["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn duplicate_zone_id_is_named() {
    let mut doc = steady();
    let first = zones(&mut doc)[0]["id"].clone();
    zones(&mut doc)[1]["id"] = first.clone();
    let found = problems(&doc);
    assert!(
        matches!(&found[..], [ValidationProblem::DuplicateZoneId { zone_id, count: 2, .. }]
            if zone_id.to_string() == first),
        "{found:?}"
    );
}

#[test]
fn generation_zero_and_too_large_are_refused() {
    for bad in [json!(0), json!(i64::MAX as u64 + 1)] {
        let mut doc = steady();
        doc["nexus_generation"] = bad.clone();
        let found = problems(&doc);
        assert!(
            found.iter().any(|p| matches!(
                p,
                ValidationProblem::GenerationOutOfRange { field, .. }
                    if field == "blueprint nexus_generation"
            )),
            "{bad}: {found:?}"
        );
    }
}

#[test]
fn zone_generation_out_of_range_names_the_zone() {
    let mut doc = steady();
    let id = nexus_ids(&mut doc)[0].clone();
    for zone in zones(&mut doc) {
        if zone["id"] == id.as_str() {
            zone["zone_type"]["nexus_generation"] = json!(0);
        }
    }
    let text = parse_blueprint(&doc.to_string()).unwrap_err().to_string();
    assert!(text.contains(&id), "{text}");
    assert!(text.contains("generation 0 is not allowed"), "{text}");
}

#[test]
fn nexus_zone_two_generations_ahead_is_refused() {
    let mut doc = steady();
    let id = nexus_ids(&mut doc)[0].clone();
    for zone in zones(&mut doc) {
        if zone["id"] == id.as_str() {
            zone["zone_type"]["nexus_generation"] = json!(3);
        }
    }
    let found = problems(&doc);
    assert_eq!(
        found,
        [ValidationProblem::NexusGenerationTooFarAhead {
            zone_id: id.parse().unwrap(),
            zone_generation: 3,
            blueprint_generation: 1,
        }]
    );
}

#[test]
fn no_in_service_nexus_at_the_blueprint_generation_is_refused() {
    let mut doc = steady();
    doc["nexus_generation"] = json!(2);
    let found = problems(&doc);
    assert!(
        matches!(
            &found[..],
            [ValidationProblem::NoNexusAtBlueprintGeneration {
                generation: 2,
                ..
            }]
        ),
        "{found:?}"
    );
}

#[test]
fn expunged_nexus_zones_do_not_count_as_the_blueprint_generation() {
    let mut doc = steady();
    for zone in zones(&mut doc) {
        if zone["zone_type"]["type"] == "nexus" {
            zone["disposition"] = json!({
                "kind": "expunged", "as_of_generation": 2,
                "ready_for_cleanup": false
            });
        }
    }
    let found = problems(&doc);
    assert!(
        matches!(
            &found[..],
            [ValidationProblem::NoNexusAtBlueprintGeneration { .. }]
        ),
        "{found:?}"
    );
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let mut doc = steady();
    let ids = nexus_ids(&mut doc);
    let first = zones(&mut doc)[0]["id"].clone();
    zones(&mut doc)[1]["id"] = first;
    for zone in zones(&mut doc) {
        if zone["id"] == ids[0].as_str() {
            zone["zone_type"]["nexus_generation"] = json!(0);
        }
        if zone["id"] == ids[1].as_str() {
            zone["zone_type"]["nexus_generation"] = json!(9);
        }
    }
    doc["nexus_generation"] = json!(4);
    let found = problems(&doc);
    let kinds: Vec<&str> = found
        .iter()
        .map(|p| match p {
            ValidationProblem::DuplicateZoneId { .. } => "duplicate",
            ValidationProblem::GenerationOutOfRange { .. } => "range",
            ValidationProblem::NexusGenerationTooFarAhead { .. } => "ahead",
            ValidationProblem::NoNexusAtBlueprintGeneration { .. } => "none",
            ValidationProblem::MissingNexusGeneration { .. } => "missing",
            ValidationProblem::UnstorableText { .. } => "text",
            ValidationProblem::OwnParent { .. } => "own parent",
        })
        .collect();
    assert_eq!(kinds, ["duplicate", "range", "ahead", "none"], "{found:?}");
}

#[test]
fn a_blueprint_that_is_its_own_parent_is_refused() {
    let mut doc = steady();
    doc["parent_blueprint_id"] = doc["id"].clone();
    let found = problems(&doc);
    assert!(
        matches!(&found[..], [ValidationProblem::OwnParent { .. }]),
        "{found:?}"
    );
}

#[test]
fn nexus_zone_without_generation_is_named() {
    let mut doc = steady();
    let id = nexus_ids(&mut doc)[0].clone();
    for zone in zones(&mut doc) {
        if zone["id"] == id.as_str() {
            zone["zone_type"]
                .as_object_mut()
                .unwrap()
                .remove("nexus_generation");
        }
    }
    assert!(problems(&doc).contains(
        &ValidationProblem::MissingNexusGeneration {
            zone_id: id.parse().unwrap()
        }
    ));
}

/// PostgreSQL's text type cannot hold a NUL character: such a blueprint
/// is refused by `validate`, not by a failed insert.
#[test]
fn a_nul_in_a_text_field_is_refused() {
    let mut doc = steady();
    doc["creator"] = Value::from("op\u{0}erator");
    doc["comment"] = Value::from("fine");
    assert_eq!(
        problems(&doc),
        [ValidationProblem::UnstorableText { field: "creator" }]
    );
    doc["comment"] = Value::from("\u{0}");
    let found = problems(&doc);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[1].to_string().contains("comment contains a NUL"));
    // The same document without the NULs is valid.
    doc["creator"] = Value::from("operator");
    doc["comment"] = Value::from("fine");
    assert!(parse_blueprint(&doc.to_string()).is_ok());
}

#[test]
fn malformed_json_names_line_and_column() {
    let err =
        parse_blueprint("{\n  \"comment\": \"a\",\n  oops\n}").unwrap_err();
    match err {
        ReadError::Malformed { line, column, .. } => {
            assert_eq!((line, column), (3, 3));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn wrong_type_names_line_and_column() {
    let mut doc = steady();
    doc["nexus_generation"] = json!("one");
    let text = serde_json::to_string_pretty(&doc).unwrap();
    let err = parse_blueprint(&text).unwrap_err();
    let line = text.lines().position(|l| l.contains("\"one\"")).unwrap() + 1;
    assert!(
        matches!(err, ReadError::Malformed { line: l, .. } if l == line),
        "{err:?}"
    );
}
