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
