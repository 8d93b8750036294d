//! Properties of `classify` over arbitrary blueprints of many sleds and
//! zones of every kind.
//!
//! Each property is a function of the classifier under test, so the same
//! properties are run against the real classifier (they must hold) and
//! against deliberately broken ones (each must be caught): a property that
//! cannot fail proves nothing.

use std::collections::BTreeSet;

use baton_planner::{Classification, ClassifyError, classify};
use baton_test_utils::strategies;
use baton_types::{
    Blueprint, BlueprintBuilder, SledConfig, ZoneDisposition, ZoneType,
};
use baton_uuid_kinds::OmicronZoneUuid;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};
use test_strategy::proptest;

type Classifier =
    fn(&Blueprint, OmicronZoneUuid) -> Result<Classification, ClassifyError>;

type Input = (Blueprint, OmicronZoneUuid);

/// Cases per property; the acceptance asks for at least 1,000.
const CASES: u32 = 1000;

fn input() -> impl Strategy<Value = Input> {
    strategies::blueprint_and_nexus(8, 15)
}

/// The same zones spread over the same sleds in another order.
fn reshuffled() -> impl Strategy<Value = (Input, Blueprint)> {
    input().prop_flat_map(|(bp, id)| {
        let zones: Vec<_> = bp.zones().map(|(_, z)| z.clone()).collect();
        let n = zones.len();
        let sleds: Vec<_> = bp.sleds().keys().copied().collect();
        let cuts = proptest::collection::vec(0..=n, sleds.len());
        (Just((bp, id)), Just(zones).prop_shuffle(), cuts).prop_map(
            move |((bp, id), zones, cuts)| {
                let shuffled = redistribute(&bp, &sleds, zones, cuts);
                ((bp, id), shuffled)
            },
        )
    })
}

fn redistribute(
    bp: &Blueprint,
    sleds: &[baton_uuid_kinds::SledUuid],
    zones: Vec<baton_types::ZoneConfig>,
    mut cuts: Vec<usize>,
) -> Blueprint {
    cuts.sort_unstable();
    let mut builder = BlueprintBuilder::child_of(bp, bp.id());
    let mut rest = zones.as_slice();
    let mut start = 0;
    for (i, sled_id) in sleds.iter().enumerate() {
        let end = if i + 1 == sleds.len() {
            zones.len()
        } else {
            cuts[i]
        };
        let take = end.saturating_sub(start).min(rest.len());
        let (here, later) = rest.split_at(take);
        rest = later;
        start += take;
        let state = bp.sleds()[sled_id].state;
        builder = builder.sled(
            *sled_id,
            SledConfig {
                state,
                zones: here.to_vec(),
            },
        );
    }
    builder.parent(bp.parent_blueprint_id()).build()
}

fn classified(
    f: Classifier,
    (bp, id): &Input,
) -> Result<Classification, TestCaseError> {
    f(bp, *id).map_err(|e| TestCaseError::fail(format!("classify: {e}")))
}

fn sets_are_disjoint(
    f: Classifier,
    input: &Input,
) -> Result<(), TestCaseError> {
    let c = classified(f, input)?;
    prop_assert!(c.records.active.is_disjoint(&c.records.not_yet), "{c:?}");
    Ok(())
}

fn only_in_service_nexus_zones(
    f: Classifier,
    input: &Input,
) -> Result<(), TestCaseError> {
    let c = classified(f, input)?;
    let in_service: BTreeSet<_> = input
        .0
        .in_service_nexus_zones()
        .map(|z| z.zone_id)
        .collect();
    for id in c.records.active.iter().chain(&c.records.not_yet) {
        prop_assert!(in_service.contains(id), "{id} is not in service");
    }
    Ok(())
}

fn executing_zone_is_active(
    f: Classifier,
    input: &Input,
) -> Result<(), TestCaseError> {
    let c = classified(f, input)?;
    prop_assert!(c.records.active.contains(&input.1), "{c:?}");
    Ok(())
}

fn generations_match_the_sets(
    f: Classifier,
    input: &Input,
) -> Result<(), TestCaseError> {
    let c = classified(f, input)?;
    for zone in input.0.in_service_nexus_zones() {
        if c.records.active.contains(&zone.zone_id) {
            prop_assert_eq!(zone.nexus_generation, c.active_generation);
        }
        if c.records.not_yet.contains(&zone.zone_id) {
            prop_assert_eq!(
                zone.nexus_generation.get(),
                c.active_generation.get() + 1
            );
        }
    }
    Ok(())
}

fn unclassified_zones_are_older_or_further_ahead(
    f: Classifier,
    input: &Input,
) -> Result<(), TestCaseError> {
    let c = classified(f, input)?;
    for zone in input.0.in_service_nexus_zones() {
        if !c.records.active.contains(&zone.zone_id)
            && !c.records.not_yet.contains(&zone.zone_id)
        {
            let (g, a) =
                (zone.nexus_generation.get(), c.active_generation.get());
            prop_assert!(
                g < a || g > a + 1,
                "{} at {} left out (active {})",
                zone.zone_id,
                zone.nexus_generation,
                c.active_generation
            );
        }
    }
    Ok(())
}

fn expunged_and_other_zones_never_appear(
    f: Classifier,
    input: &Input,
) -> Result<(), TestCaseError> {
    let c = classified(f, input)?;
    for (_, zone) in input.0.zones() {
        let eligible = zone.disposition == ZoneDisposition::InService
            && matches!(zone.zone_type, ZoneType::Nexus(_));
        // A duplicated id may have one eligible copy; judge by any copy.
        let has_eligible_twin = input.0.zones().any(|(_, z)| {
            z.id == zone.id
                && z.disposition.is_in_service()
                && matches!(z.zone_type, ZoneType::Nexus(_))
        });
        if !eligible && !has_eligible_twin {
            prop_assert!(!c.records.active.contains(&zone.id), "{zone:?}");
            prop_assert!(!c.records.not_yet.contains(&zone.id), "{zone:?}");
        }
    }
    Ok(())
}

fn order_does_not_matter(
    f: Classifier,
    (input, shuffled): &(Input, Blueprint),
) -> Result<(), TestCaseError> {
    let a = classified(f, input)?;
    let b = classified(f, &(shuffled.clone(), input.1))?;
    prop_assert_eq!(a, b);
    Ok(())
}

/// Written separately and naively on purpose: two passes of plain loops
/// over the raw sleds and zones, sorted vectors, no shared helpers.
#[allow(clippy::collapsible_if)] // spelled out on purpose
fn reference(
    bp: &Blueprint,
    me: OmicronZoneUuid,
) -> Option<(u64, Vec<String>, Vec<String>)> {
    let mut mine = None;
    for sled in bp.sleds().values() {
        for zone in &sled.zones {
            if zone.id == me && zone.disposition == ZoneDisposition::InService {
                if let ZoneType::Nexus(n) = &zone.zone_type {
                    mine = Some(n.nexus_generation.get());
                }
            }
        }
    }
    let mine = mine?;
    let mut active = Vec::new();
    let mut not_yet = Vec::new();
    for sled in bp.sleds().values() {
        for zone in &sled.zones {
            if zone.disposition != ZoneDisposition::InService {
                continue;
            }
            if let ZoneType::Nexus(n) = &zone.zone_type {
                let g = n.nexus_generation.get();
                if g == mine {
                    active.push(zone.id.to_string());
                }
                if g == mine + 1 {
                    not_yet.push(zone.id.to_string());
                }
            }
        }
    }
    for list in [&mut active, &mut not_yet] {
        list.sort();
        list.dedup();
    }
    Some((mine, active, not_yet))
}

fn equals_the_reference(
    f: Classifier,
    input: &Input,
) -> Result<(), TestCaseError> {
    let got = f(&input.0, input.1).ok().map(|c| {
        (
            c.active_generation.get(),
            c.records
                .active
                .iter()
                .map(|id| id.to_string())
                .collect::<Vec<_>>(),
            c.records
                .not_yet
                .iter()
                .map(|id| id.to_string())
                .collect::<Vec<_>>(),
        )
    });
    prop_assert_eq!(got, reference(&input.0, input.1));
    Ok(())
}

#[proptest(cases = CASES)]
fn classify_sets_are_disjoint(#[strategy(input())] input: Input) {
    sets_are_disjoint(classify, &input)?;
}

#[proptest(cases = CASES)]
fn classify_holds_only_in_service_nexus_zones(
    #[strategy(input())] input: Input,
) {
    only_in_service_nexus_zones(classify, &input)?;
}

#[proptest(cases = CASES)]
fn classify_puts_the_executing_zone_in_active(
    #[strategy(input())] input: Input,
) {
    executing_zone_is_active(classify, &input)?;
}

#[proptest(cases = CASES)]
fn classify_active_is_own_generation_not_yet_is_the_next(
    #[strategy(input())] input: Input,
) {
    generations_match_the_sets(classify, &input)?;
}

#[proptest(cases = CASES)]
fn classify_leaves_out_only_older_and_further_generations(
    #[strategy(input())] input: Input,
) {
    unclassified_zones_are_older_or_further_ahead(classify, &input)?;
}

#[proptest(cases = CASES)]
fn classify_ignores_expunged_and_non_nexus_zones(
    #[strategy(input())] input: Input,
) {
    expunged_and_other_zones_never_appear(classify, &input)?;
}

#[proptest(cases = CASES)]
fn classify_does_not_depend_on_sled_or_zone_order(
    #[strategy(reshuffled())] pair: (Input, Blueprint),
) {
    order_does_not_matter(classify, &pair)?;
}

#[proptest(cases = CASES)]
fn classify_equals_the_naive_reference(#[strategy(input())] input: Input) {
    equals_the_reference(classify, &input)?;
}

// ---- Broken classifiers: each property must catch at least one. ----

fn with(
    bp: &Blueprint,
    id: OmicronZoneUuid,
    edit: impl FnOnce(&Blueprint, &mut Classification),
) -> Result<Classification, ClassifyError> {
    let mut c = classify(bp, id)?;
    edit(bp, &mut c);
    Ok(c)
}

fn overlapping(
    bp: &Blueprint,
    id: OmicronZoneUuid,
) -> Result<Classification, ClassifyError> {
    with(bp, id, |_, c| {
        c.records.not_yet.extend(c.records.active.clone())
    })
}

fn counts_expunged(
    bp: &Blueprint,
    id: OmicronZoneUuid,
) -> Result<Classification, ClassifyError> {
    with(bp, id, |bp, c| {
        for z in bp.nexus_zones() {
            if z.nexus_generation == c.active_generation {
                c.records.active.insert(z.zone_id);
            }
        }
    })
}

fn counts_other_kinds(
    bp: &Blueprint,
    id: OmicronZoneUuid,
) -> Result<Classification, ClassifyError> {
    with(bp, id, |bp, c| {
        for (_, z) in bp.zones() {
            if z.disposition.is_in_service()
                && z.zone_type.nexus_generation().is_none()
            {
                c.records.not_yet.insert(z.id);
            }
        }
    })
}

fn forgets_itself(
    bp: &Blueprint,
    id: OmicronZoneUuid,
) -> Result<Classification, ClassifyError> {
    with(bp, id, |_, c| {
        c.records.active.remove(&c.nexus_id);
    })
}

fn older_counts_as_not_yet(
    bp: &Blueprint,
    id: OmicronZoneUuid,
) -> Result<Classification, ClassifyError> {
    with(bp, id, |bp, c| {
        for z in bp.in_service_nexus_zones() {
            if z.nexus_generation < c.active_generation {
                c.records.not_yet.insert(z.zone_id);
            }
        }
    })
}

fn every_newer_generation_as_not_yet(
    bp: &Blueprint,
    id: OmicronZoneUuid,
) -> Result<Classification, ClassifyError> {
    // The reference system's rule, which lets one handoff promote two
    // generations at once.
    with(bp, id, |bp, c| {
        for z in bp.in_service_nexus_zones() {
            if z.nexus_generation > c.active_generation {
                c.records.not_yet.insert(z.zone_id);
            }
        }
    })
}

fn uses_blueprint_generation(
    bp: &Blueprint,
    id: OmicronZoneUuid,
) -> Result<Classification, ClassifyError> {
    // The classic mistake: the blueprint's generation, not the zone's.
    with(bp, id, |bp, c| {
        let g = bp.nexus_generation();
        c.active_generation = g;
        c.records.active.clear();
        c.records.not_yet.clear();
        for z in bp.in_service_nexus_zones() {
            if z.nexus_generation == g {
                c.records.active.insert(z.zone_id);
            } else if z.nexus_generation > g {
                c.records.not_yet.insert(z.zone_id);
            }
        }
    })
}

fn drops_not_yet(
    bp: &Blueprint,
    id: OmicronZoneUuid,
) -> Result<Classification, ClassifyError> {
    with(bp, id, |_, c| c.records.not_yet.clear())
}

fn first_three_only(
    bp: &Blueprint,
    id: OmicronZoneUuid,
) -> Result<Classification, ClassifyError> {
    // Keeps the first three active zones found walking the sleds: depends
    // on where zones sit.
    with(bp, id, |bp, c| {
        let me = c.nexus_id;
        let kept: BTreeSet<_> = bp
            .in_service_nexus_zones()
            .filter(|z| {
                c.records.active.contains(&z.zone_id) && z.zone_id != me
            })
            .take(2)
            .map(|z| z.zone_id)
            .chain([me])
            .collect();
        c.records.active = kept;
    })
}

fn expect_caught<S: Strategy>(
    name: &str,
    strategy: S,
    property: impl Fn(&S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    match runner.run(&strategy, |v| property(&v)) {
        Err(TestError::Fail(reason, _)) => {
            eprintln!("{name}: caught ({reason})");
        }
        Err(other) => panic!("{name}: unexpected {other}"),
        Ok(()) => panic!("{name}: the broken classifier was not caught"),
    }
}

#[test]
fn each_property_catches_a_broken_classifier() {
    expect_caught("disjoint", input(), |i| sets_are_disjoint(overlapping, i));
    expect_caught("in service", input(), |i| {
        only_in_service_nexus_zones(counts_expunged, i)
    });
    expect_caught("executing zone", input(), |i| {
        executing_zone_is_active(forgets_itself, i)
    });
    expect_caught("generations", input(), |i| {
        generations_match_the_sets(older_counts_as_not_yet, i)
    });
    expect_caught("only the next generation", input(), |i| {
        generations_match_the_sets(every_newer_generation_as_not_yet, i)
    });
    expect_caught("older only", input(), |i| {
        unclassified_zones_are_older_or_further_ahead(drops_not_yet, i)
    });
    expect_caught("expunged", input(), |i| {
        expunged_and_other_zones_never_appear(counts_expunged, i)
    });
    expect_caught("other kinds", input(), |i| {
        expunged_and_other_zones_never_appear(counts_other_kinds, i)
    });
    expect_caught("order", reshuffled(), |p| {
        order_does_not_matter(first_three_only, p)
    });
    for (name, broken) in [
        (
            "reference: blueprint generation",
            uses_blueprint_generation as Classifier,
        ),
        ("reference: overlapping", overlapping),
        ("reference: drops not_yet", drops_not_yet),
        (
            "reference: every newer generation",
            every_newer_generation_as_not_yet,
        ),
    ] {
        expect_caught(name, input(), |i| equals_the_reference(broken, i));
    }
}
