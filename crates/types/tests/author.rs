//! Writing a child blueprint from its parent's document: the edits, the
//! Omicron conventions they follow, and what is refused.

use baton_test_utils::strategies;
use baton_types::story::HandoffStory;
use baton_types::{
    AuthorError, Blueprint, BlueprintBuilder, ChildStamp, Expunged, Generation,
    SledState, ValidationProblem, ZoneDisposition, parse_blueprint,
};
use baton_uuid_kinds::{BlueprintUuid, OmicronZoneUuid, SledUuid};
use chrono::{TimeZone, Utc};
use serde_json::{Value, json};
use test_strategy::proptest;

fn fixture(name: &str) -> Blueprint {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    parse_blueprint(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
}

/// Ids from a counter: the same every run.
fn ids() -> impl FnMut() -> u128 {
    let mut n = 0xabc0_0000_0000_4000_8000_0000_0000_0000u128;
    move || {
        n += 1;
        n
    }
}

fn stamp() -> ChildStamp {
    ChildStamp {
        id: BlueprintUuid::from_u128(0xc41d),
        time_created: Utc.with_ymd_and_hms(2026, 12, 1, 9, 30, 0).unwrap(),
        creator: "author-test".into(),
        comment: None,
    }
}

fn gen_(n: u64) -> Generation {
    Generation::new(n).unwrap()
}

fn value(bp: &Blueprint) -> Value {
    serde_json::from_str(bp.document()).unwrap()
}

/// The child's document is the parent's with exactly the stamp changed
/// and whatever `edit` applies to the parent's JSON.
fn assert_only_edits(
    parent: &Blueprint,
    child: &Blueprint,
    edit: impl FnOnce(&mut Value),
) {
    let mut want = value(parent);
    want["id"] = json!(child.id());
    want["parent_blueprint_id"] = json!(parent.id());
    want["time_created"] = json!("2026-12-01T09:30:00.000000Z");
    want["creator"] = json!("author-test");
    want["comment"] = json!(child.comment());
    edit(&mut want);
    assert_eq!(value(child), want);
}

/// Reads back equal, from its own document and from the model rendered
/// afresh (parse, serialize, parse).
fn assert_round_trips(child: &Blueprint) {
    assert_eq!(&parse_blueprint(child.document()).unwrap(), child);
    let rendered = baton_test_utils::rendered_afresh(child);
    assert_eq!(&parse_blueprint(rendered.document()).unwrap(), child);
}

fn sled_key(bp: &Blueprint, zone: OmicronZoneUuid) -> String {
    bp.zones()
        .find(|(_, z)| z.id == zone)
        .map(|(sled, _)| sled.to_string())
        .unwrap()
}

#[test]
fn a_bump_changes_only_the_generation_and_keeps_the_parents_text() {
    let parent = fixture("02-new-generation-deployed.json");
    let mut draft = parent.draft_child().unwrap();
    assert_eq!(draft.bump_nexus_generation(), Ok(gen_(2)));
    let child = draft.finish(stamp()).unwrap();
    assert_eq!(child.comment(), "bump nexus_generation from 1 to 2");
    assert_eq!(child.check_follows(&parent), Ok(()));
    assert_only_edits(&parent, &child, |v| v["nexus_generation"] = json!(2));
    assert_round_trips(&child);
    // Same order and layout: only the six stamped or bumped lines differ.
    let (before, after) = (parent.document(), child.document());
    assert_eq!(before.lines().count(), after.lines().count());
    let changed = before
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(changed, 6, "{after}");
}

#[test]
fn new_nexus_zones_copy_a_nexus_shape_with_fresh_ids_and_addresses() {
    let parent = fixture("01-steady.json");
    let sleds: Vec<SledUuid> = parent.sleds().keys().copied().collect();
    let mut draft = parent.draft_child().unwrap();
    let mut fresh = ids();
    let added: Vec<OmicronZoneUuid> = sleds
        .iter()
        .map(|sled| draft.add_nexus(*sled, gen_(2), &mut fresh).unwrap())
        .collect();
    let child = draft.finish(stamp()).unwrap();
    assert_eq!(child.check_follows(&parent), Ok(()));
    assert_round_trips(&child);
    let new: Vec<_> = child
        .in_service_nexus_zones()
        .filter(|z| z.nexus_generation == gen_(2))
        .collect();
    assert_eq!(new.len(), 3);
    for (zone, sled) in added.iter().zip(&sleds) {
        assert!(new.iter().any(|z| z.zone_id == *zone && z.sled_id == *sled));
    }
    let doc = value(&child);
    let old = value(&parent);
    for (sled, zone_id) in sleds.iter().zip(&added) {
        let (was, now) = (
            &old["sleds"][sled.to_string()],
            &doc["sleds"][sled.to_string()],
        );
        // The sled's configuration moved on by one, and one more address
        // was allocated from its subnet, as Omicron's planner does.
        assert_eq!(now["sled_agent_generation"], json!(4));
        assert_eq!(now["last_allocated_ip_subnet_offset"], json!(48));
        let zones = now["zones"].as_array().unwrap();
        assert_eq!(zones.len(), was["zones"].as_array().unwrap().len() + 1);
        assert_eq!(&zones[..zones.len() - 1], was["zones"].as_array().unwrap());
        let zone = zones.last().unwrap();
        assert_eq!(zone["id"], json!(zone_id));
        assert_eq!(zone["disposition"], json!({"kind": "in_service"}));
        let net = now["subnet"]["net"].as_str().unwrap();
        let prefix = net.strip_suffix("::/64").unwrap();
        assert_eq!(
            zone["zone_type"]["internal_address"],
            json!(format!("[{prefix}::30]:12221"))
        );
        assert_eq!(zone["zone_type"]["nexus_generation"], json!(2));
        assert_eq!(zone["zone_type"]["nic"]["kind"]["id"], json!(zone_id));
        assert_eq!(
            zone["zone_type"]["nic"]["name"],
            json!(format!("nexus-{zone_id}"))
        );
        // The template: the generation-1 Nexus of the same sled.
        let template = was["zones"]
            .as_array()
            .unwrap()
            .iter()
            .find(|z| z["zone_type"]["type"] == "nexus")
            .unwrap();
        assert_eq!(zone["image_source"], template["image_source"]);
        assert_eq!(zone["filesystem_pool"], template["filesystem_pool"]);
        assert_ne!(
            zone["zone_type"]["nic"]["id"],
            template["zone_type"]["nic"]["id"]
        );
        assert_ne!(
            zone["zone_type"]["external_ip"]["id"],
            template["zone_type"]["external_ip"]["id"]
        );
    }
    // Each new id appears where it must only: the zone's id, its NIC's
    // owner and name, and the comment.
    let text = child.document();
    for zone in &added {
        assert_eq!(text.matches(&zone.to_string()).count(), 4, "{zone}");
        assert!(child.comment().contains(&zone.to_string()));
    }
}

#[test]
fn expunged_zones_are_expunged_as_of_their_sleds_new_generation() {
    let parent = fixture("03-handoff-started.json");
    let old: Vec<OmicronZoneUuid> = parent
        .in_service_nexus_zones()
        .filter(|z| z.nexus_generation == gen_(1))
        .map(|z| z.zone_id)
        .collect();
    let mut draft = parent.draft_child().unwrap();
    for zone in &old {
        assert_eq!(
            draft.expunge_zone(*zone, false),
            Ok(Expunged::Expunged {
                as_of_generation: 4
            })
        );
    }
    let child = draft.finish(stamp()).unwrap();
    assert_eq!(child.check_follows(&parent), Ok(()));
    assert_round_trips(&child);
    let parent_copy = parent.clone();
    assert_only_edits(&parent, &child, |v| {
        for zone in &old {
            let sled = &mut v["sleds"][sled_key(&parent_copy, *zone)];
            sled["sled_agent_generation"] = json!(4);
            for z in sled["zones"].as_array_mut().unwrap() {
                if z["id"] == json!(zone) {
                    z["disposition"] = json!({
                        "kind": "expunged",
                        "as_of_generation": 4,
                        "ready_for_cleanup": false,
                    });
                }
            }
        }
    });

    // Marking them ready later keeps the generation they were expunged
    // in and changes nothing a sled agent receives.
    let mut draft = child.draft_child().unwrap();
    for zone in &old {
        assert_eq!(
            draft.expunge_zone(*zone, true),
            Ok(Expunged::MarkedReadyForCleanup)
        );
    }
    // A grandchild: an id of its own (a blueprint is never its own
    // parent, which validation refuses).
    let grandchild = ChildStamp {
        id: BlueprintUuid::from_u128(0xc41e),
        ..stamp()
    };
    let ready = draft.finish(grandchild).unwrap();
    assert_eq!(ready.check_follows(&child), Ok(()));
    for zone in ready.nexus_zones().filter(|z| old.contains(&z.zone_id)) {
        assert_eq!(
            zone.disposition,
            ZoneDisposition::Expunged {
                as_of_generation: 4,
                ready_for_cleanup: true
            }
        );
    }
    for (sled, config) in value(&ready)["sleds"].as_object().unwrap() {
        assert_eq!(config["sled_agent_generation"], json!(4), "{sled}");
    }
    let err = ready.draft_child().unwrap().expunge_zone(old[0], true);
    assert_eq!(err, Err(AuthorError::AlreadyExpunged(old[0], true)));
}

#[test]
fn expunging_two_zones_of_a_sled_bumps_it_once() {
    let parent = fixture("03-handoff-started.json");
    let (sled, zones) = parent.sleds().iter().next().unwrap();
    let crucibles: Vec<_> = zones
        .zones
        .iter()
        .filter(|z| z.zone_type.kind() == "crucible")
        .map(|z| z.id)
        .take(2)
        .collect();
    let mut draft = parent.draft_child().unwrap();
    for zone in &crucibles {
        assert_eq!(
            draft.expunge_zone(*zone, true),
            Ok(Expunged::Expunged {
                as_of_generation: 4
            })
        );
    }
    let child = draft.finish(stamp()).unwrap();
    assert_eq!(
        value(&child)["sleds"][sled.to_string()]["sled_agent_generation"],
        json!(4)
    );
}

#[test]
fn what_cannot_be_written_is_refused_by_name() {
    let steady = fixture("01-steady.json");
    let sled = *steady.sleds().keys().next().unwrap();
    let mut fresh = ids();
    let mut draft = steady.draft_child().unwrap();
    let unknown = SledUuid::from_u128(9);
    assert_eq!(
        draft.add_nexus(unknown, gen_(2), &mut fresh),
        Err(AuthorError::UnknownSled {
            blueprint_id: steady.id(),
            sled_id: unknown
        })
    );
    assert!(matches!(
        draft.add_nexus(sled, gen_(3), &mut fresh),
        Err(AuthorError::GenerationTooFarAhead { .. })
    ));
    let zone = OmicronZoneUuid::from_u128(9);
    assert_eq!(
        draft.expunge_zone(zone, false),
        Err(AuthorError::UnknownZone {
            blueprint_id: steady.id(),
            zone_id: zone
        })
    );
    assert_eq!(
        draft.clone().finish(stamp()).unwrap_err(),
        AuthorError::NothingChanged
    );
    // Expunging every Nexus in control leaves nobody: invalid.
    for z in steady.in_service_nexus_zones().collect::<Vec<_>>() {
        draft.expunge_zone(z.zone_id, true).unwrap();
    }
    let AuthorError::Invalid(baton_types::ReadError::Invalid(invalid)) =
        draft.finish(stamp()).unwrap_err()
    else {
        panic!("expected an invalid child");
    };
    assert!(matches!(
        invalid.problems[..],
        [ValidationProblem::NoNexusAtBlueprintGeneration { .. }]
    ));

    let bumped = fixture("03-handoff-started.json");
    let sled = *bumped.sleds().keys().next().unwrap();
    assert!(matches!(
        bumped
            .draft_child()
            .unwrap()
            .add_nexus(sled, gen_(1), &mut fresh),
        Err(AuthorError::GenerationBehind { .. })
    ));
}

#[test]
fn no_zone_goes_on_a_decommissioned_sled() {
    let story = HandoffStory::new(3);
    let mut builder =
        BlueprintBuilder::child_of(&story.steady, BlueprintUuid::from_u128(77));
    let sled = *builder.sleds_mut().keys().next().unwrap();
    builder.sleds_mut().get_mut(&sled).unwrap().state =
        SledState::Decommissioned;
    let parent = builder.build();
    assert_eq!(
        parent
            .draft_child()
            .unwrap()
            .add_nexus(sled, gen_(2), &mut ids()),
        Err(AuthorError::SledNotActive(sled))
    );
}

/// Whatever the blueprint, an edit either is refused with a reason or
/// gives a valid child that follows its parent, keeps every zone and
/// reads back equal.
#[proptest(cases = 128)]
fn every_edit_gives_a_valid_following_child_or_a_reason(
    #[strategy(strategies::blueprint(4, 6))] parent: Blueprint,
    #[strategy(0usize..3)] edit: usize,
    #[strategy(0usize..64)] pick: usize,
    ready: bool,
) {
    proptest::prop_assume!(parent.validate().is_ok());
    let mut draft = parent.draft_child().unwrap();
    let sleds: Vec<SledUuid> = parent.sleds().keys().copied().collect();
    let zones: Vec<OmicronZoneUuid> =
        parent.zones().map(|(_, z)| z.id).collect();
    let outcome = match edit {
        0 => draft.bump_nexus_generation().map(|_| ()),
        1 if !sleds.is_empty() => draft
            .add_nexus(
                sleds[pick % sleds.len()],
                parent.nexus_generation(),
                &mut ids(),
            )
            .map(|_| ()),
        2 if !zones.is_empty() => draft
            .expunge_zone(zones[pick % zones.len()], ready)
            .map(|_| ()),
        _ => return Ok(()),
    };
    if outcome.is_err() {
        return Ok(());
    }
    match draft.finish(stamp()) {
        Ok(child) => {
            proptest::prop_assert!(child.validate().is_ok());
            proptest::prop_assert_eq!(child.check_follows(&parent), Ok(()));
            proptest::prop_assert_eq!(
                &parse_blueprint(child.document()).unwrap(),
                &child
            );
            for zone in &zones {
                proptest::prop_assert!(
                    child.zones().any(|(_, z)| z.id == *zone)
                );
            }
        }
        // A bump with no Nexus at the next generation, or the last Nexus
        // at the blueprint's generation expunged, is invalid; adding a
        // zone at the blueprint's generation never is.
        Err(AuthorError::Invalid(_)) => proptest::prop_assert_ne!(edit, 1),
        Err(other) => proptest::prop_assert!(false, "{other}"),
    }
}
