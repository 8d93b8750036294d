//! The decisions that used to live beside the I/O: the access table,
//! execute-or-quiesce, quiesce step 3, the cleanup's choice and the
//! operator's quiesce guard. Each is checked against a direct reading of
//! the protocol over arbitrary inputs.

use std::collections::BTreeSet;

use baton_planner::{
    Access, AccessDecision, PeerDrain, QuiesceRefusal, Role, classify,
    decide_access, decide_role, is_quiescing, peers_drained, quiesce_allowed,
    records_to_clean_up,
};
use baton_test_utils::strategies;
use baton_types::story::HandoffStory;
use baton_types::{
    AccessFacts, NexusRecord, NexusRecordState, SchemaComparison, SchemaFact,
};
use baton_uuid_kinds::OmicronZoneUuid;
use proptest::prelude::*;
use test_strategy::proptest;

use AccessDecision::*;

/// The protocol's table: for each record situation, the decision when
/// the schema is up to date, older, newer.
const TABLE: [(&str, [AccessDecision; 3]); 5] = [
    ("empty", [Ready, UpdateSchema, Refuse]),
    ("missing", [TryLater, TryLater, Refuse]),
    ("not_yet", [NeedsHandoff, NeedsHandoff, Refuse]),
    ("active", [Ready, UpdateSchema, Refuse]),
    ("quiesced", [Refuse, Refuse, Refuse]),
];

fn facts(
    situation: &str,
    nexus_id: Option<OmicronZoneUuid>,
    applied: i64,
) -> AccessFacts {
    let (records, own_state) = match situation {
        "empty" => (0, None),
        "missing" => (4, None),
        "not_yet" => (4, Some(NexusRecordState::NotYet)),
        "active" => (4, Some(NexusRecordState::Active)),
        "quiesced" => (4, Some(NexusRecordState::Quiesced)),
        other => panic!("{other}"),
    };
    AccessFacts {
        nexus_id,
        records,
        own_state,
        schemas: vec![SchemaFact {
            component: "baton".to_owned(),
            applied,
            wanted: 5,
        }],
        drift: Vec::new(),
    }
}

#[test]
fn schema_drift_is_refused_whatever_else_holds() {
    let id = HandoffStory::new(1).old_nexus[0];
    for situation in ["empty", "missing", "not_yet", "active", "quiesced"] {
        for nexus_id in [Some(id), None] {
            let mut f = facts(situation, nexus_id, 5);
            f.drift = vec!["table bp_target is missing".to_owned()];
            let Access { decision, reason } = decide_access(&f);
            assert_eq!(decision, AccessDecision::Refuse, "{situation}");
            assert!(reason.contains("bp_target is missing"), "{reason}");
            assert!(!reason.contains("empty"), "{reason}");
        }
    }
}

#[test]
fn every_cell_of_the_access_table() {
    let id = HandoffStory::new(1).old_nexus[0];
    for (situation, decisions) in TABLE {
        // Applied 5, 4, 6 against a wanted 5: up to date, older, newer.
        for (applied, want) in [5, 4, 6].into_iter().zip(decisions) {
            let Access {
                decision: got,
                reason,
            } = decide_access(&facts(situation, Some(id), applied));
            assert_eq!(got, want, "{situation} / applied {applied}: {reason}");
            assert!(!reason.is_empty());
        }
    }
}

#[test]
fn no_identity_skips_the_record_check() {
    for (applied, want) in [(5, Ready), (4, UpdateSchema), (6, Refuse)] {
        for situation in ["empty", "missing", "quiesced"] {
            let facts = facts(situation, None, applied);
            assert_eq!(
                decide_access(&facts).decision,
                want,
                "{situation}/{applied}"
            );
        }
    }
}

/// One component newer refuses whatever the others say; else one older
/// asks for migrations; the reason names each differing component.
#[proptest(cases = 500)]
fn several_components_combine(
    #[strategy(proptest::collection::vec((0i64..4, 1i64..4), 1..5))]
    versions: Vec<(i64, i64)>,
) {
    let mut f = facts("active", Some(HandoffStory::new(2).old_nexus[0]), 0);
    f.schemas = versions
        .iter()
        .enumerate()
        .map(|(i, (applied, wanted))| SchemaFact {
            component: format!("c{i}"),
            applied: *applied,
            wanted: *wanted,
        })
        .collect();
    let newer = versions.iter().any(|(a, w)| a > w);
    let older = versions.iter().any(|(a, w)| a < w);
    let Access { decision, reason } = decide_access(&f);
    let want = match (newer, older) {
        (true, _) => Refuse,
        (false, true) => UpdateSchema,
        (false, false) => Ready,
    };
    prop_assert_eq!(decision, want, "{}", reason);
    let want_schema = match (newer, older) {
        (true, _) => SchemaComparison::Newer,
        (false, true) => SchemaComparison::Older,
        (false, false) => SchemaComparison::UpToDate,
    };
    prop_assert_eq!(f.schema(), want_schema);
    for (i, (a, w)) in versions.iter().enumerate() {
        if a != w {
            let mention = format!("c{i} at {a}, wanted {w}");
            prop_assert!(reason.contains(&mention), "{reason}");
        }
    }
}

/// `decide_role` is `is_quiescing` and `classify` answered at once.
#[proptest(cases = 1000)]
fn the_role_agrees_with_classify_and_is_quiescing(
    #[strategy(strategies::blueprint_and_nexus(6, 12))] input: (
        baton_types::Blueprint,
        OmicronZoneUuid,
    ),
) {
    let (bp, id) = input;
    let role = decide_role(&bp, id).unwrap();
    let quiescing = is_quiescing(&bp, id).unwrap();
    match role {
        Role::Quiesce { own, wanted } => {
            prop_assert!(quiescing);
            prop_assert_eq!(own, classify(&bp, id).unwrap().active_generation);
            prop_assert_eq!(wanted, bp.nexus_generation());
            prop_assert!(quiesce_allowed(&bp, id).is_ok());
        }
        Role::Execute(c) => {
            prop_assert!(!quiescing);
            prop_assert_eq!(c, classify(&bp, id).unwrap());
            let refused = matches!(
                quiesce_allowed(&bp, id),
                Err(QuiesceRefusal::NotBelowTarget { .. })
            );
            prop_assert!(refused);
        }
    }
}

#[test]
fn quiesce_is_allowed_only_once_the_generation_is_bumped() {
    let story = HandoffStory::new(3);
    let old = story.old_nexus[0];
    let new = story.new_nexus[0];
    for bp in [&story.steady, &story.new_generation_deployed] {
        let err = quiesce_allowed(bp, old).unwrap_err();
        assert!(err.to_string().contains("is not below"), "{err}");
    }
    assert_eq!(quiesce_allowed(&story.handoff_started, old), Ok(()));
    assert!(quiesce_allowed(&story.handoff_started, new).is_err());
    // Expunged: not in the blueprint any more.
    let err = quiesce_allowed(&story.old_expunged, old).unwrap_err();
    assert!(matches!(err, QuiesceRefusal::NotInBlueprint(_)), "{err}");
}

fn record(
    nexus_id: OmicronZoneUuid,
    state: NexusRecordState,
    drained: Option<baton_uuid_kinds::BlueprintUuid>,
) -> NexusRecord {
    NexusRecord {
        nexus_id,
        state,
        last_drained_blueprint_id: drained,
    }
}

#[test]
fn step_3_waits_for_every_peer_of_its_own_generation() {
    let story = HandoffStory::new(4);
    let bp = &story.handoff_started;
    let drained = Some(bp.id());
    let [a, b, c] =
        [story.old_nexus[0], story.old_nexus[1], story.old_nexus[2]];
    let mut records: Vec<NexusRecord> = story
        .old_nexus
        .iter()
        .map(|id| record(*id, NexusRecordState::Active, None))
        .chain(
            story
                .new_nexus
                .iter()
                .map(|id| record(*id, NexusRecordState::NotYet, None)),
        )
        .collect();
    records[0].last_drained_blueprint_id = drained;
    assert_eq!(
        peers_drained(a, bp.id(), Some(bp), &records),
        PeerDrain::Waiting {
            peers: BTreeSet::from([b, c])
        }
    );
    records[1].last_drained_blueprint_id = drained;
    records[2].last_drained_blueprint_id = drained;
    // The new generation's records never drained: not peers.
    assert_eq!(
        peers_drained(a, bp.id(), Some(bp), &records),
        PeerDrain::Drained
    );
    // A peer that already quiesced got past step 3 itself.
    records[1].last_drained_blueprint_id = None;
    assert!(matches!(
        peers_drained(a, bp.id(), Some(bp), &records),
        PeerDrain::Waiting { .. }
    ));
    records[2].state = NexusRecordState::Quiesced;
    assert_eq!(
        peers_drained(a, bp.id(), Some(bp), &records),
        PeerDrain::Drained
    );
    // The target moved, or there is none.
    let other = &story.old_expunged;
    assert_eq!(
        peers_drained(a, bp.id(), Some(other), &records),
        PeerDrain::TargetMoved { to: other.id() }
    );
    assert_eq!(
        peers_drained(a, bp.id(), None, &records),
        PeerDrain::NoTarget
    );
}

/// Over arbitrary blueprints and records: `Drained` exactly when every
/// peer's record (same generation, in service) names the drained
/// blueprint or some peer has quiesced.
#[proptest(cases = 1000)]
fn step_3_property(
    #[strategy(strategies::blueprint_and_nexus(6, 12))] input: (
        baton_types::Blueprint,
        OmicronZoneUuid,
    ),
    #[strategy(proptest::collection::vec((0u8..3, 0u8..3), 0..20))] marks: Vec<
        (u8, u8),
    >,
) {
    let (bp, id) = input;
    let zones: Vec<_> = bp.nexus_zones().collect();
    let own = classify(&bp, id).unwrap().active_generation;
    let records: Vec<NexusRecord> = zones
        .iter()
        .zip(&marks)
        .map(|(z, (state, drained))| {
            record(
                z.zone_id,
                NexusRecordState::ALL[usize::from(*state)],
                (*drained == 0).then(|| bp.id()),
            )
        })
        .collect();
    let peer = |r: &&NexusRecord| {
        bp.in_service_nexus_zones()
            .any(|z| z.zone_id == r.nexus_id && z.nexus_generation == own)
    };
    let any_quiesced = records
        .iter()
        .filter(peer)
        .any(|r| r.state == NexusRecordState::Quiesced);
    let waiting: BTreeSet<_> = records
        .iter()
        .filter(peer)
        .filter(|r| r.last_drained_blueprint_id != Some(bp.id()))
        .map(|r| r.nexus_id)
        .collect();
    let got = peers_drained(id, bp.id(), Some(&bp), &records);
    if any_quiesced || waiting.is_empty() {
        prop_assert_eq!(got, PeerDrain::Drained);
    } else {
        prop_assert_eq!(got, PeerDrain::Waiting { peers: waiting });
    }
}

/// The cleanup deletes exactly the Nexus zones expunged and ready for
/// cleanup; never an in-service one.
#[proptest(cases = 1000)]
fn the_cleanup_takes_only_zones_ready_for_cleanup(
    #[strategy(strategies::blueprint(6, 12))] bp: baton_types::Blueprint,
) {
    let chosen = records_to_clean_up(&bp);
    for zone in bp.nexus_zones() {
        prop_assert_eq!(
            chosen.contains(&zone.zone_id),
            zone.disposition.is_ready_for_cleanup(),
            "{:?}",
            zone
        );
        if zone.disposition.is_in_service() {
            prop_assert!(!chosen.contains(&zone.zone_id));
        }
    }
    prop_assert!(chosen.len() <= bp.nexus_zones().count());
}
