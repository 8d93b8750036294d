//! Proptest strategies for blueprints of many sleds and zones of every
//! kind, for the property tests of crates that take blueprints.

use baton_types::{
    Blueprint, BlueprintBuilder, Generation, NexusZone, SledConfig, SledState,
    ZoneConfig, ZoneDisposition, ZoneType,
};
use baton_uuid_kinds::{BlueprintUuid, OmicronZoneUuid, SledUuid};
use proptest::collection::vec;
use proptest::prelude::*;

/// The largest top-level generation generated: small numbers make
/// collisions between zone generations likely, which is where bugs live.
const MAX_TOP_GENERATION: u64 = 6;

/// Any generation, 1 to [`Generation::MAX`].
pub fn generation() -> impl Strategy<Value = Generation> {
    (1..=Generation::MAX.get())
        .prop_map(|g| Generation::new(g).expect("within 1..=MAX"))
}

/// A disposition, mostly in service.
pub fn disposition() -> impl Strategy<Value = ZoneDisposition> {
    prop_oneof![
        3 => Just(ZoneDisposition::InService),
        1 => (1u64..20, any::<bool>()).prop_map(|(g, ready)| {
            ZoneDisposition::Expunged {
                as_of_generation: g,
                ready_for_cleanup: ready,
            }
        }),
    ]
}

/// A zone type of any kind, Nexus zones at generations up to `top + 1`.
pub fn zone_type(top: Generation) -> impl Strategy<Value = ZoneType> {
    let simple: Vec<ZoneType> = ZoneType::simple_kinds().collect();
    prop_oneof![
        2 => (1..=top.get() + 1).prop_map(|g| ZoneType::Nexus(NexusZone {
            nexus_generation: Generation::new(g).expect("small and positive"),
        })),
        3 => proptest::sample::select(simple),
        1 => "[a-z_]{3,12}"
            .prop_filter("not a known kind", |k| {
                k != "nexus" && matches!(ZoneType::from_kind(k), ZoneType::Other(_))
            })
            .prop_map(ZoneType::Other),
    ]
}

/// A zone with a fresh random id.
pub fn zone(top: Generation) -> impl Strategy<Value = ZoneConfig> {
    (any::<OmicronZoneUuid>(), disposition(), zone_type(top)).prop_map(
        |(id, disposition, zone_type)| ZoneConfig {
            id,
            disposition,
            zone_type,
        },
    )
}

/// A sled with up to `max_zones` zones.
pub fn sled(
    top: Generation,
    max_zones: usize,
) -> impl Strategy<Value = SledConfig> {
    let state = prop_oneof![
        4 => Just(SledState::Active),
        1 => Just(SledState::Decommissioned),
    ];
    (state, vec(zone(top), 0..=max_zones))
        .prop_map(|(state, zones)| SledConfig { state, zones })
}

/// A blueprint of up to `max_sleds` sleds with up to `max_zones` zones
/// each. It may break the validation rules (no Nexus at the top
/// generation, say); callers that need a valid one filter.
pub fn blueprint(
    max_sleds: usize,
    max_zones: usize,
) -> impl Strategy<Value = Blueprint> {
    (1..=MAX_TOP_GENERATION)
        .prop_map(|g| Generation::new(g).expect("small and positive"))
        .prop_flat_map(move |top| {
            (
                any::<BlueprintUuid>(),
                proptest::option::of(any::<BlueprintUuid>()),
                Just(top),
                vec((any::<SledUuid>(), sled(top, max_zones)), 0..=max_sleds),
            )
        })
        .prop_map(|(id, parent, top, sleds)| {
            sleds
                .into_iter()
                .fold(
                    BlueprintBuilder::new(id, top).parent(parent),
                    |builder, (sled_id, sled)| builder.sled(sled_id, sled),
                )
                .build()
        })
}

/// A blueprint with the id of one of its in-service Nexus zones (the
/// usual case for an executing Nexus).
pub fn blueprint_and_nexus(
    max_sleds: usize,
    max_zones: usize,
) -> impl Strategy<Value = (Blueprint, OmicronZoneUuid)> {
    blueprint(max_sleds, max_zones)
        .prop_filter("needs an in-service Nexus zone", |bp| {
            bp.in_service_nexus_zones().next().is_some()
        })
        .prop_flat_map(|bp| {
            let ids: Vec<OmicronZoneUuid> =
                bp.in_service_nexus_zones().map(|z| z.zone_id).collect();
            (Just(bp), proptest::sample::select(ids))
        })
}
