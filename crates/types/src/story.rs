//! A handoff told in four blueprints, generated from a seed: the same seed
//! always gives the same ids, so tests and the demo can pin their output.
//!
//! Three sleds, each with about fifteen zones of several kinds and one
//! Nexus of generation 1; then a generation-2 Nexus added beside each; then
//! the blueprint's generation bumped to 2; then the old Nexus zones
//! expunged and ready for cleanup. The same steps as Omicron's fixtures.

use std::collections::BTreeMap;

use baton_uuid_kinds::{OmicronZoneUuid, SledUuid, TypedUuid, TypedUuidKind};
use chrono::{DateTime, TimeZone, Utc};

use crate::{
    Blueprint, BlueprintBuilder, Generation, NexusZone, SledConfig, SledState,
    ZoneConfig, ZoneDisposition, ZoneType,
};

/// How many sleds (and Nexus zones per generation) the story has.
pub const SLEDS: usize = 3;

/// The four blueprints of a handoff and the Nexus ids in them.
#[derive(Clone, Debug)]
pub struct HandoffStory {
    /// Generation 1 in control, three Nexus zones.
    pub steady: Blueprint,
    /// Three generation-2 Nexus zones added; still generation 1.
    pub new_generation_deployed: Blueprint,
    /// The blueprint's generation bumped to 2: the old ones must quiesce.
    pub handoff_started: Blueprint,
    /// The old Nexus zones expunged and ready for cleanup.
    pub old_expunged: Blueprint,
    /// The generation-1 Nexus ids, sorted.
    pub old_nexus: Vec<OmicronZoneUuid>,
    /// The generation-2 Nexus ids, sorted.
    pub new_nexus: Vec<OmicronZoneUuid>,
}

/// splitmix64: tiny, well distributed, and the same everywhere.
struct Ids(u64);

impl Ids {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A version-4-shaped UUID from the stream.
    fn next<T: TypedUuidKind>(&mut self) -> TypedUuid<T> {
        let raw =
            (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64());
        let v4 = (raw & !(0xf << 76)) | (0x4 << 76);
        let variant = (v4 & !(0x3 << 62)) | (0x2 << 62);
        TypedUuid::from_u128(variant)
    }
}

fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 12, minute, 0)
        .single()
        .expect("a valid time")
}

fn in_service(id: OmicronZoneUuid, zone_type: ZoneType) -> ZoneConfig {
    ZoneConfig {
        id,
        disposition: ZoneDisposition::InService,
        zone_type,
    }
}

fn nexus(id: OmicronZoneUuid, generation: u64) -> ZoneConfig {
    in_service(
        id,
        ZoneType::Nexus(NexusZone {
            nexus_generation: Generation::new(generation).expect("1 or 2"),
        }),
    )
}

impl HandoffStory {
    /// The story for `seed`.
    pub fn new(seed: u64) -> HandoffStory {
        let mut ids = Ids(seed);
        let mut sleds: BTreeMap<SledUuid, SledConfig> = BTreeMap::new();
        let mut old_nexus = Vec::new();
        for _ in 0..SLEDS {
            let mut zones = vec![in_service(ids.next(), ZoneType::InternalNtp)];
            for _ in 0..10 {
                zones.push(in_service(ids.next(), ZoneType::Crucible));
            }
            for kind in [
                ZoneType::CockroachDb,
                ZoneType::InternalDns,
                ZoneType::CruciblePantry,
            ] {
                zones.push(in_service(ids.next(), kind));
            }
            let id = ids.next();
            old_nexus.push(id);
            zones.push(nexus(id, 1));
            sleds.insert(
                ids.next(),
                SledConfig {
                    state: SledState::Active,
                    zones,
                },
            );
        }
        let steady = sleds
            .iter()
            .fold(
                BlueprintBuilder::new(ids.next(), Generation::FIRST),
                |b, (id, sled)| b.sled(*id, sled.clone()),
            )
            .time_created(at(0))
            .creator("baton-story")
            .comment("steady")
            .build();

        let mut builder = BlueprintBuilder::child_of(&steady, ids.next())
            .time_created(at(1))
            .creator("baton-story")
            .comment("new-generation-deployed");
        let mut new_nexus = Vec::new();
        for sled in builder.sleds_mut().values_mut() {
            let id = ids.next();
            new_nexus.push(id);
            sled.zones.push(nexus(id, 2));
        }
        let new_generation_deployed = builder.build();

        let handoff_started =
            BlueprintBuilder::child_of(&new_generation_deployed, ids.next())
                .nexus_generation(Generation::new(2).expect("2"))
                .time_created(at(2))
                .creator("baton-story")
                .comment("handoff-started")
                .build();

        let mut builder =
            BlueprintBuilder::child_of(&handoff_started, ids.next())
                .time_created(at(3))
                .creator("baton-story")
                .comment("old-expunged");
        for sled in builder.sleds_mut().values_mut() {
            for zone in &mut sled.zones {
                if old_nexus.contains(&zone.id) {
                    zone.disposition = ZoneDisposition::Expunged {
                        as_of_generation: 2,
                        ready_for_cleanup: true,
                    };
                }
            }
        }
        let old_expunged = builder.build();
        old_nexus.sort_unstable();
        new_nexus.sort_unstable();
        HandoffStory {
            steady,
            new_generation_deployed,
            handoff_started,
            old_expunged,
            old_nexus,
            new_nexus,
        }
    }

    /// The four blueprints in order, with their step names.
    pub fn steps(&self) -> [(&'static str, &Blueprint); 4] {
        [
            ("steady", &self.steady),
            ("new-generation-deployed", &self.new_generation_deployed),
            ("handoff-started", &self.handoff_started),
            ("old-expunged", &self.old_expunged),
        ]
    }
}

/// A large blueprint for measuring: `sleds` sleds of fifteen zones each,
/// one Nexus zone on each of the first thirty sleds (at most), their
/// generations alternating 1 and 2 so that classification has both
/// `active` and `not_yet` zones to find.
#[derive(Clone, Debug)]
pub struct Fleet {
    /// The blueprint (generation 1), with a rendered Omicron document.
    pub blueprint: Blueprint,
    /// A generation-1 Nexus to classify as.
    pub executing: OmicronZoneUuid,
    /// Zones in the blueprint.
    pub zones: usize,
}

/// Nexus zones in a fleet: one per sled, up to this many.
pub const FLEET_MAX_NEXUS: usize = 30;

impl Fleet {
    /// The fleet of `sleds` sleds for `seed`. `sleds` must be at least 1.
    pub fn new(seed: u64, sleds: usize) -> Fleet {
        let mut ids = Ids(seed);
        let mut builder = BlueprintBuilder::new(ids.next(), Generation::FIRST)
            .time_created(at(0))
            .creator("baton-fleet")
            .comment("fleet");
        let mut executing = None;
        let mut zones = 0;
        for sled in 0..sleds {
            let mut sled_zones =
                vec![in_service(ids.next(), ZoneType::InternalNtp)];
            for _ in 0..10 {
                sled_zones.push(in_service(ids.next(), ZoneType::Crucible));
            }
            sled_zones.push(in_service(ids.next(), ZoneType::Oximeter));
            sled_zones.push(in_service(ids.next(), ZoneType::CockroachDb));
            sled_zones.push(in_service(ids.next(), ZoneType::CruciblePantry));
            if sled < FLEET_MAX_NEXUS {
                let id = ids.next();
                let generation = 1 + (sled as u64 % 2);
                if generation == 1 {
                    executing.get_or_insert(id);
                }
                sled_zones.push(nexus(id, generation));
            } else {
                sled_zones.push(in_service(ids.next(), ZoneType::InternalDns));
            }
            zones += sled_zones.len();
            builder = builder.sled(
                ids.next(),
                SledConfig {
                    state: SledState::Active,
                    zones: sled_zones,
                },
            );
        }
        Fleet {
            blueprint: builder.build(),
            executing: executing.expect("a fleet has at least one sled"),
            zones,
        }
    }
}
