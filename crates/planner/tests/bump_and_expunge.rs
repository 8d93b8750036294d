//! The generation bump and expunge decisions, and `is_quiescing`, on
//! blueprints that tell a handoff step by step.

use baton_planner::{
    BumpDecision, BumpWait, ClassifyError, ExpungeRefusal,
    decide_generation_bump, decide_generation_bump_without_records,
    expunge_refusals, expungeable_nexus_zones, is_quiescing, place_nexus_zones,
};
use baton_types::{
    Blueprint, BlueprintBuilder, Generation, NexusRecord, NexusRecordState,
    NexusZone, SledConfig, SledState, ZoneConfig, ZoneDisposition, ZoneType,
};
use baton_uuid_kinds::{BlueprintUuid, OmicronZoneUuid, SledUuid};

fn id<T: baton_uuid_kinds::TypedUuidKind>(
    n: u128,
) -> baton_uuid_kinds::TypedUuid<T> {
    baton_uuid_kinds::TypedUuid::from_u128(n)
}

fn nexus(n: u128, generation: u64) -> ZoneConfig {
    ZoneConfig {
        id: id(n),
        disposition: ZoneDisposition::InService,
        zone_type: ZoneType::Nexus(NexusZone {
            nexus_generation: Generation::new(generation).unwrap(),
        }),
    }
}

/// Three old Nexus zones (1, 2, 3) at generation 1 and `new` zones (11..)
/// at generation 2, one sled each, with a crucible zone beside.
fn blueprint(top: u64, new: u128) -> Blueprint {
    let mut builder = BlueprintBuilder::new(
        BlueprintUuid::from_u128(100 + top as u128),
        Generation::new(top).unwrap(),
    );
    for n in 1..=3u128 {
        let mut zones = vec![nexus(n, 1)];
        if n <= new {
            zones.push(nexus(10 + n, 2));
        }
        zones.push(ZoneConfig {
            id: id(50 + n),
            disposition: ZoneDisposition::InService,
            zone_type: ZoneType::Crucible,
        });
        builder = builder.sled(
            SledUuid::from_u128(n),
            SledConfig {
                state: SledState::Active,
                zones,
            },
        );
    }
    builder.build()
}

fn record(n: u128, state: NexusRecordState) -> NexusRecord {
    NexusRecord {
        nexus_id: id(n),
        state,
        last_drained_blueprint_id: None,
    }
}

#[test]
fn bump_waits_for_new_zones() {
    let bp = blueprint(1, 0);
    let decision = decide_generation_bump(&bp, &[], 3);
    assert_eq!(
        decision,
        BumpDecision::Wait(vec![BumpWait::NewZonesMissing {
            generation: Generation::new(2).unwrap(),
            found: 0,
            wanted: 3,
        }])
    );
}

#[test]
fn bump_waits_for_not_yet_records_of_every_new_zone() {
    let bp = blueprint(1, 3);
    let records = [
        record(11, NexusRecordState::NotYet),
        record(12, NexusRecordState::Active),
    ];
    let decision = decide_generation_bump(&bp, &records, 3);
    assert_eq!(
        decision,
        BumpDecision::Wait(vec![BumpWait::RecordsMissing {
            zones: vec![id(12), id(13)],
        }])
    );
}

#[test]
fn bump_reports_every_reason_at_once() {
    let bp = blueprint(1, 2);
    let BumpDecision::Wait(waits) = decide_generation_bump(&bp, &[], 3) else {
        panic!("bumped without records");
    };
    assert_eq!(waits.len(), 2, "{waits:?}");
}

#[test]
fn bump_when_every_new_zone_is_not_yet() {
    let bp = blueprint(1, 3);
    let records: Vec<_> = (11..=13)
        .map(|n| record(n, NexusRecordState::NotYet))
        .collect();
    assert_eq!(
        decide_generation_bump(&bp, &records, 3),
        BumpDecision::Bump {
            from: Generation::FIRST,
            to: Generation::new(2).unwrap()
        }
    );
}

#[test]
fn bump_needs_at_least_one_zone_even_with_no_redundancy() {
    let bp = blueprint(1, 0);
    assert!(matches!(
        decide_generation_bump(&bp, &[], 0),
        BumpDecision::Wait(_)
    ));
}

#[test]
fn quiescing_is_own_generation_below_the_blueprint() {
    let before = blueprint(1, 3);
    let after = blueprint(2, 3);
    assert!(!is_quiescing(&before, id(1)).unwrap());
    assert!(is_quiescing(&after, id(1)).unwrap());
    assert!(!is_quiescing(&after, id(11)).unwrap());
    assert_eq!(
        is_quiescing(&after, id(99)),
        Err(ClassifyError::NoSuchZone {
            nexus_id: id(99),
            blueprint_id: after.id()
        })
    );
}

#[test]
fn nothing_is_expunged_before_the_handoff() {
    let bp = blueprint(2, 3);
    let mut records: Vec<_> = (1..=3)
        .map(|n| record(n, NexusRecordState::Active))
        .collect();
    records.extend((11..=13).map(|n| record(n, NexusRecordState::NotYet)));
    assert!(expungeable_nexus_zones(&bp, &records).is_empty());
    records[0].state = NexusRecordState::Quiesced;
    assert!(expungeable_nexus_zones(&bp, &records).is_empty());
}

#[test]
fn old_zones_are_expunged_after_the_handoff() {
    let bp = blueprint(2, 3);
    let mut records: Vec<_> = (1..=3)
        .map(|n| record(n, NexusRecordState::Quiesced))
        .collect();
    records.extend((11..=13).map(|n| record(n, NexusRecordState::Active)));
    let zones: Vec<OmicronZoneUuid> =
        expungeable_nexus_zones(&bp, &records).into_iter().collect();
    assert_eq!(zones, vec![id(1), id(2), id(3)]);
}

#[test]
fn nothing_is_expunged_with_no_active_record_or_an_unknown_one() {
    let bp = blueprint(2, 3);
    assert!(expungeable_nexus_zones(&bp, &[]).is_empty());
    let records = [record(999, NexusRecordState::Active)];
    assert!(expungeable_nexus_zones(&bp, &records).is_empty());
}

#[test]
fn bump_without_records_checks_the_new_zones_only() {
    let three = blueprint(1, 3);
    assert_eq!(
        decide_generation_bump_without_records(&three, 3),
        BumpDecision::Bump {
            from: Generation::FIRST,
            to: Generation::new(2).unwrap()
        }
    );
    let two = blueprint(1, 2);
    assert_eq!(
        decide_generation_bump_without_records(&two, 3),
        BumpDecision::Wait(vec![BumpWait::NewZonesMissing {
            generation: Generation::new(2).unwrap(),
            found: 2,
            wanted: 3,
        }])
    );
}

#[test]
fn expunge_refusals_say_why_the_rule_refuses() {
    let old = [id(1), id(2), id(3)];
    let bumped = blueprint(2, 3);
    let g = |n| Generation::new(n).unwrap();
    // Before the handoff: generation 1 still active.
    let before: Vec<_> = (1..=3)
        .map(|n| record(n, NexusRecordState::Active))
        .chain((11..=13).map(|n| record(n, NexusRecordState::NotYet)))
        .collect();
    let refusals = expunge_refusals(&bumped, Some(&before), &old);
    assert_eq!(refusals.len(), 3);
    assert_eq!(
        refusals[0],
        ExpungeRefusal::HandoffNotDone {
            zone_id: id(1),
            generation: g(1),
            active: g(1)
        }
    );
    assert!(expungeable_nexus_zones(&bumped, &before).is_empty());
    // After it: nothing refused, as the rule says.
    let after: Vec<_> = (1..=3)
        .map(|n| record(n, NexusRecordState::Quiesced))
        .chain((11..=13).map(|n| record(n, NexusRecordState::Active)))
        .collect();
    assert_eq!(expunge_refusals(&bumped, Some(&after), &old), vec![]);
    assert_eq!(
        expungeable_nexus_zones(&bumped, &after),
        old.into_iter().collect()
    );
    // The new generation itself is never expungeable by the rule.
    assert_eq!(expunge_refusals(&bumped, Some(&after), &[id(11)]).len(), 1);
    // Nobody active, or an active record of an unknown zone.
    assert_eq!(
        expunge_refusals(&bumped, Some(&[]), &[id(1)]),
        vec![ExpungeRefusal::NoActiveRecord { zone_id: id(1) }]
    );
    let stranger = [record(99, NexusRecordState::Active)];
    assert_eq!(
        expunge_refusals(&bumped, Some(&stranger), &[id(1)]),
        vec![ExpungeRefusal::UnknownActiveRecord {
            zone_id: id(1),
            nexus_id: id(99)
        }]
    );
    // Zones that are not in-service Nexus zones are not the planner's.
    assert_eq!(expunge_refusals(&bumped, Some(&[]), &[id(51)]), vec![]);
}

#[test]
fn expunge_without_records_needs_the_generation_bumped_past() {
    let old = [id(1)];
    assert_eq!(
        expunge_refusals(&blueprint(1, 3), None, &old),
        vec![ExpungeRefusal::NotBumpedPast {
            zone_id: id(1),
            generation: Generation::FIRST,
            blueprint: Generation::FIRST,
        }]
    );
    assert_eq!(expunge_refusals(&blueprint(2, 3), None, &old), vec![]);
}

#[test]
fn new_zones_spread_over_the_sleds_with_the_fewest() {
    let g2 = Generation::new(2).unwrap();
    // Sled 1 already has a generation-2 zone: the others come first.
    let bp = blueprint(1, 1);
    assert_eq!(
        place_nexus_zones(&bp, g2, 4),
        vec![
            SledUuid::from_u128(2),
            SledUuid::from_u128(3),
            SledUuid::from_u128(1),
            SledUuid::from_u128(2),
        ]
    );
    let empty = BlueprintBuilder::new(BlueprintUuid::from_u128(5), g2).build();
    assert_eq!(place_nexus_zones(&empty, g2, 2), vec![]);
}
