//! Every shipped fixture (copied from the published handoff story) reads.

use baton_types::{Blueprint, ZoneType, parse_blueprint};

pub(crate) const FIXTURES: [(&str, &str); 4] = [
    ("01-steady.json", include_str!("fixtures/01-steady.json")),
    (
        "02-new-generation-deployed.json",
        include_str!("fixtures/02-new-generation-deployed.json"),
    ),
    (
        "03-handoff-started.json",
        include_str!("fixtures/03-handoff-started.json"),
    ),
    (
        "04-old-expunged.json",
        include_str!("fixtures/04-old-expunged.json"),
    ),
];

fn expected() -> serde_json::Value {
    serde_json::from_str(include_str!("fixtures/expected.json")).unwrap()
}

fn read(name: &str) -> Blueprint {
    let (_, text) = FIXTURES.iter().find(|(n, _)| *n == name).unwrap();
    parse_blueprint(text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_fixture_reads_with_the_expected_header() {
    let expected = expected();
    for (name, _) in FIXTURES {
        let bp = read(name);
        let want = &expected["documents"][name];
        assert_eq!(bp.id().to_string(), want["blueprint_id"], "{name}");
        assert_eq!(
            bp.parent_blueprint_id().map(|p| p.to_string()),
            want["parent_blueprint_id"].as_str().map(str::to_owned),
            "{name}"
        );
        assert_eq!(
            bp.nexus_generation().get(),
            want["nexus_generation"].as_u64().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn the_original_document_is_kept_byte_for_byte() {
    for (name, text) in FIXTURES {
        assert_eq!(read(name).document(), text, "{name}");
    }
}

#[test]
fn fixtures_hold_nexus_zones_of_both_generations() {
    let bp = read("03-handoff-started.json");
    let mut generations: Vec<u64> = bp
        .in_service_nexus_zones()
        .map(|z| z.nexus_generation.get())
        .collect();
    generations.sort_unstable();
    assert_eq!(generations, [1, 1, 1, 2, 2, 2]);
}

#[test]
fn expunged_zones_are_not_in_service() {
    let bp = read("04-old-expunged.json");
    let expected = expected();
    let old: Vec<&str> = expected["old_generation_nexus_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for zone in bp.nexus_zones() {
        let is_old = old.contains(&zone.zone_id.to_string().as_str());
        assert_eq!(!zone.disposition.is_in_service(), is_old, "{zone:?}");
        assert_eq!(zone.disposition.is_ready_for_cleanup(), is_old);
    }
}

#[test]
fn unknown_fields_are_ignored_and_unknown_zone_kinds_kept() {
    let (_, text) = FIXTURES[0];
    let mut doc: serde_json::Value = serde_json::from_str(text).unwrap();
    doc["a_field_from_the_future"] = serde_json::json!({"x": 1});
    let sled = doc["sleds"].as_object_mut().unwrap().values_mut().next();
    let zones = sled.unwrap()["zones"].as_array_mut().unwrap();
    zones[0]["zone_type"] =
        serde_json::json!({"type": "quantum_flux", "address": "[::1]:1"});
    let id = zones[0]["id"].as_str().unwrap().to_owned();
    let bp = parse_blueprint(&doc.to_string()).unwrap();
    let (_, zone) = bp.zones().find(|(_, z)| z.id.to_string() == id).unwrap();
    assert_eq!(zone.zone_type, ZoneType::Other("quantum_flux".into()));
    assert_eq!(zone.zone_type.kind(), "quantum_flux");
}

#[test]
fn the_generated_story_is_valid_stable_and_tells_the_same_handoff() {
    let story = baton_types::story::HandoffStory::new(7);
    let again = baton_types::story::HandoffStory::new(7);
    assert_eq!(story.steady, again.steady, "same seed, same ids");
    let generations: Vec<u64> = story
        .steps()
        .iter()
        .map(|(_, bp)| bp.nexus_generation().get())
        .collect();
    assert_eq!(generations, [1, 1, 2, 2]);
    for (name, bp) in story.steps() {
        bp.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        // The rendered document reads back as the same blueprint.
        assert_eq!(&parse_blueprint(bp.document()).unwrap(), bp, "{name}");
        assert!(bp.zones().count() >= 15 * 3, "{name}");
    }
    assert_eq!(story.old_nexus.len(), 3);
    assert_eq!(story.new_nexus.len(), 3);
    let in_service = |bp: &Blueprint| bp.in_service_nexus_zones().count();
    assert_eq!(in_service(&story.steady), 3);
    assert_eq!(in_service(&story.new_generation_deployed), 6);
    assert_eq!(in_service(&story.old_expunged), 3);
    assert_eq!(
        story.old_expunged.parent_blueprint_id(),
        Some(story.handoff_started.id())
    );
}
