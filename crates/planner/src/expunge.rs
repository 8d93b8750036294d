//! Which old Nexus zones may be expunged once the handoff is done.

use std::collections::{BTreeMap, BTreeSet};

use baton_types::{Blueprint, Generation, NexusRecord, NexusRecordState};
use baton_uuid_kinds::OmicronZoneUuid;

/// The in-service Nexus zones that may be expunged: those whose generation
/// is below the generation of every `active` record.
///
/// Nothing may be expunged while there is no `active` record, or while an
/// `active` record belongs to a zone the blueprint does not know (its
/// generation, and so the safety of the answer, would be a guess).
pub fn expungeable_nexus_zones(
    blueprint: &Blueprint,
    records: &[NexusRecord],
) -> BTreeSet<OmicronZoneUuid> {
    let generations: BTreeMap<OmicronZoneUuid, Generation> = blueprint
        .nexus_zones()
        .map(|z| (z.zone_id, z.nexus_generation))
        .collect();
    let active_generations: Option<Vec<Generation>> = records
        .iter()
        .filter(|r| r.state == NexusRecordState::Active)
        .map(|r| generations.get(&r.nexus_id).copied())
        .collect();
    let Some(oldest_active) =
        active_generations.and_then(|g| g.into_iter().min())
    else {
        return BTreeSet::new();
    };
    blueprint
        .in_service_nexus_zones()
        .filter(|z| z.nexus_generation < oldest_active)
        .map(|z| z.zone_id)
        .collect()
}

/// Why the planner will not expunge a Nexus zone yet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExpungeRefusal {
    /// No record is `active`: nobody is known to be in control.
    #[error(
        "Nexus zone {zone_id} may not be expunged: no db_metadata_nexus \
         record is active, so no newer generation is known to be in control"
    )]
    NoActiveRecord {
        /// The zone.
        zone_id: OmicronZoneUuid,
    },
    /// An `active` record belongs to a zone the blueprint does not list.
    #[error(
        "Nexus zone {zone_id} may not be expunged: the active record of \
         Nexus {nexus_id} belongs to no Nexus zone of the blueprint, so the \
         generation in control is unknown"
    )]
    UnknownActiveRecord {
        /// The zone.
        zone_id: OmicronZoneUuid,
        /// The record's Nexus.
        nexus_id: OmicronZoneUuid,
    },
    /// The zone's generation still holds `active` records.
    #[error(
        "Nexus zone {zone_id} may not be expunged: it is of generation \
         {generation} and generation {active} still holds active records \
         (the handoff is not done)"
    )]
    HandoffNotDone {
        /// The zone.
        zone_id: OmicronZoneUuid,
        /// Its generation.
        generation: Generation,
        /// The oldest generation with an `active` record.
        active: Generation,
    },
    /// The blueprint's generation has not moved past the zone's: the
    /// handoff cannot have happened (checked when no records are known).
    #[error(
        "Nexus zone {zone_id} may not be expunged: it is of generation \
         {generation}, and the blueprint's nexus_generation is {blueprint}, \
         so no handoff past it can have happened"
    )]
    NotBumpedPast {
        /// The zone.
        zone_id: OmicronZoneUuid,
        /// Its generation.
        generation: Generation,
        /// The blueprint's top-level generation.
        blueprint: Generation,
    },
}

/// Why each of `zones` may not be expunged, by the rule of
/// [`expungeable_nexus_zones`]; empty when all may be. Zones that are not
/// in-service Nexus zones are not the planner's concern and never
/// refused.
///
/// With `records` `None` (a tool without a database), only what the
/// blueprint shows is checked: a zone whose generation is not below the
/// blueprint's `nexus_generation` cannot have been handed off from. The
/// caller must then say that the records were not checked.
pub fn expunge_refusals(
    blueprint: &Blueprint,
    records: Option<&[NexusRecord]>,
    zones: &[OmicronZoneUuid],
) -> Vec<ExpungeRefusal> {
    let asked: BTreeSet<OmicronZoneUuid> = zones.iter().copied().collect();
    let candidates: Vec<_> = blueprint
        .in_service_nexus_zones()
        .filter(|z| asked.contains(&z.zone_id))
        .collect();
    let Some(records) = records else {
        let top = blueprint.nexus_generation();
        return candidates
            .into_iter()
            .filter(|z| z.nexus_generation >= top)
            .map(|z| ExpungeRefusal::NotBumpedPast {
                zone_id: z.zone_id,
                generation: z.nexus_generation,
                blueprint: top,
            })
            .collect();
    };
    let generations: BTreeMap<OmicronZoneUuid, Generation> = blueprint
        .nexus_zones()
        .map(|z| (z.zone_id, z.nexus_generation))
        .collect();
    let active: Vec<_> = records
        .iter()
        .filter(|r| r.state == NexusRecordState::Active)
        .collect();
    let unknown = active
        .iter()
        .find(|r| !generations.contains_key(&r.nexus_id))
        .map(|r| r.nexus_id);
    let oldest = active
        .iter()
        .filter_map(|r| generations.get(&r.nexus_id).copied())
        .min();
    candidates
        .into_iter()
        .filter_map(|z| match (unknown, oldest) {
            (Some(nexus_id), _) => Some(ExpungeRefusal::UnknownActiveRecord {
                zone_id: z.zone_id,
                nexus_id,
            }),
            (None, None) => {
                Some(ExpungeRefusal::NoActiveRecord { zone_id: z.zone_id })
            }
            (None, Some(active)) => (z.nexus_generation >= active).then_some(
                ExpungeRefusal::HandoffNotDone {
                    zone_id: z.zone_id,
                    generation: z.nexus_generation,
                    active,
                },
            ),
        })
        .collect()
}
