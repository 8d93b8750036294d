//! Whether the blueprint's Nexus generation may move on.

use std::collections::BTreeMap;

use baton_types::{Blueprint, Generation, NexusRecord, NexusRecordState};
use baton_uuid_kinds::OmicronZoneUuid;

/// The planner's answer: bump now, or wait for the listed reasons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BumpDecision {
    /// Set the blueprint's `nexus_generation` to `to`.
    Bump {
        /// The current generation.
        from: Generation,
        /// The next one.
        to: Generation,
    },
    /// Not yet; every reason is listed.
    Wait(Vec<BumpWait>),
}

/// Something the bump waits on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BumpWait {
    /// Fewer new-generation zones are in service than wanted.
    #[error(
        "{found} in-service Nexus zone(s) at generation {generation}, \
         {wanted} wanted"
    )]
    NewZonesMissing {
        /// The next generation.
        generation: Generation,
        /// How many exist.
        found: usize,
        /// How many are wanted.
        wanted: usize,
    },
    /// New-generation zones whose record is missing or not `not_yet`.
    #[error(
        "Nexus zone(s) {} have no not_yet record yet",
        zones.iter().map(|z| z.to_string()).collect::<Vec<_>>().join(", ")
    )]
    RecordsMissing {
        /// The zones, sorted.
        zones: Vec<OmicronZoneUuid>,
    },
    /// The generation cannot grow any further.
    #[error("the Nexus generation is already the largest possible")]
    GenerationExhausted,
}

/// Decides whether to bump the blueprint's Nexus generation from G to
/// G+1: only when at least `redundancy` (and at least one) Nexus zones at
/// G+1 are in service and every one of them has a `not_yet` record.
pub fn decide_generation_bump(
    blueprint: &Blueprint,
    records: &[NexusRecord],
    redundancy: usize,
) -> BumpDecision {
    decide(blueprint, Some(records), redundancy)
}

/// The part of [`decide_generation_bump`] that needs no records: the new
/// zones' count. For a tool that has no database; a `Bump` here only
/// says the blueprint allows it, and the caller must say that the
/// records were not checked.
pub fn decide_generation_bump_without_records(
    blueprint: &Blueprint,
    redundancy: usize,
) -> BumpDecision {
    decide(blueprint, None, redundancy)
}

fn decide(
    blueprint: &Blueprint,
    records: Option<&[NexusRecord]>,
    redundancy: usize,
) -> BumpDecision {
    let from = blueprint.nexus_generation();
    let Ok(to) = from.next() else {
        return BumpDecision::Wait(vec![BumpWait::GenerationExhausted]);
    };
    let new_zones: Vec<OmicronZoneUuid> = blueprint
        .in_service_nexus_zones()
        .filter(|z| z.nexus_generation == to)
        .map(|z| z.zone_id)
        .collect();
    let mut waits = Vec::new();
    let wanted = redundancy.max(1);
    if new_zones.len() < wanted {
        waits.push(BumpWait::NewZonesMissing {
            generation: to,
            found: new_zones.len(),
            wanted,
        });
    }
    if let Some(records) = records {
        let states: BTreeMap<OmicronZoneUuid, NexusRecordState> =
            records.iter().map(|r| (r.nexus_id, r.state)).collect();
        let mut missing: Vec<OmicronZoneUuid> = new_zones
            .into_iter()
            .filter(|id| states.get(id) != Some(&NexusRecordState::NotYet))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            waits.push(BumpWait::RecordsMissing { zones: missing });
        }
    }
    if waits.is_empty() {
        BumpDecision::Bump { from, to }
    } else {
        BumpDecision::Wait(waits)
    }
}
