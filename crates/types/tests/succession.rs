//! A child blueprint may not bring back an expunged zone, relabel a Nexus
//! zone's generation, or move the top-level generation other than by one.

use baton_types::story::HandoffStory;
use baton_types::{
    Blueprint, BlueprintBuilder, Generation, SuccessionProblem,
    ZoneDisposition, ZoneType, parse_blueprint,
};
use baton_uuid_kinds::BlueprintUuid;

fn child(
    parent: &Blueprint,
    edit: impl FnOnce(&mut BlueprintBuilder),
) -> Blueprint {
    let mut builder =
        BlueprintBuilder::child_of(parent, BlueprintUuid::from_u128(0xc41d));
    edit(&mut builder);
    builder.build()
}

fn problems(child: &Blueprint, parent: &Blueprint) -> Vec<SuccessionProblem> {
    child
        .check_follows(parent)
        .err()
        .map(|e| e.problems)
        .unwrap_or_default()
}

#[test]
fn every_step_of_the_story_and_the_fixtures_follows_its_parent() {
    let story = HandoffStory::new(7);
    let steps = story.steps();
    for pair in steps.windows(2) {
        let ((_, parent), (name, child)) = (pair[0], pair[1]);
        assert_eq!(child.check_follows(parent), Ok(()), "{name}");
    }
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let read = |name: &str| {
        parse_blueprint(&std::fs::read_to_string(dir.join(name)).unwrap())
            .unwrap()
    };
    let fixtures = [
        read("01-steady.json"),
        read("02-new-generation-deployed.json"),
        read("03-handoff-started.json"),
        read("04-old-expunged.json"),
    ];
    for pair in fixtures.windows(2) {
        assert_eq!(pair[1].check_follows(&pair[0]), Ok(()));
    }
}

#[test]
fn an_expunged_zone_never_comes_back() {
    let story = HandoffStory::new(7);
    let parent = &story.old_expunged;
    let back = child(parent, |b| {
        for sled in b.sleds_mut().values_mut() {
            for zone in &mut sled.zones {
                zone.disposition = ZoneDisposition::InService;
            }
        }
    });
    let found = problems(&back, parent);
    assert_eq!(found.len(), 3, "{found:?}");
    for (problem, id) in found.iter().zip(&story.old_nexus) {
        assert_eq!(*problem, SuccessionProblem::Unexpunged { zone_id: *id });
    }
    let message = back.check_follows(parent).unwrap_err().to_string();
    assert!(message.contains("in service again"), "{message}");
}

#[test]
fn a_nexus_zone_keeps_its_generation() {
    let story = HandoffStory::new(7);
    let parent = &story.new_generation_deployed;
    let relabelled = child(parent, |b| {
        for sled in b.sleds_mut().values_mut() {
            for zone in &mut sled.zones {
                if let ZoneType::Nexus(n) = &mut zone.zone_type
                    && n.nexus_generation == Generation::new(2).unwrap()
                {
                    n.nexus_generation = Generation::new(1).unwrap();
                }
            }
        }
    });
    let found = problems(&relabelled, parent);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(
        found.iter().all(|p| matches!(
            p,
            SuccessionProblem::GenerationRelabelled { .. }
        ))
    );
}

#[test]
fn the_top_generation_moves_up_by_one_at_most() {
    let story = HandoffStory::new(7);
    let parent = &story.handoff_started;
    let down = child(parent, |b| {
        *b = b.clone().nexus_generation(Generation::FIRST);
    });
    assert!(matches!(
        problems(&down, parent).as_slice(),
        [SuccessionProblem::GenerationStep { .. }]
    ));
    let jump = child(parent, |b| {
        *b = b.clone().nexus_generation(Generation::new(4).unwrap());
    });
    assert!(
        problems(&jump, parent)
            .iter()
            .any(|p| matches!(p, SuccessionProblem::GenerationStep { .. }))
    );
}

#[test]
fn a_child_names_its_parent() {
    let story = HandoffStory::new(7);
    let orphan = child(&story.steady, |b| *b = b.clone().parent(None));
    assert_eq!(
        problems(&orphan, &story.steady),
        vec![SuccessionProblem::NotTheParent {
            parent: story.steady.id(),
            found: None
        }]
    );
}
