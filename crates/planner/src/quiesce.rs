//! The quiesce decisions: when an old Nexus's peers have drained, which
//! records the cleanup may delete, and when an operator may mark a Nexus
//! quiesced.

use std::collections::BTreeSet;

use baton_types::{Blueprint, Generation, NexusRecord, NexusRecordState};
use baton_uuid_kinds::{BlueprintUuid, OmicronZoneUuid};

use crate::{ClassifyError, classify};

/// Where quiesce step 3 stands for one Nexus: have all in-service peers of
/// its generation drained against the same target?
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerDrain {
    /// Every peer recorded the drained blueprint (or one already
    /// quiesced, which it does only after step 3): go on to step 4.
    Drained,
    /// These peers have not yet recorded the drained blueprint.
    Waiting {
        /// The peers still to record it.
        peers: BTreeSet<OmicronZoneUuid>,
    },
    /// There is no current target to compare with; wait.
    NoTarget,
    /// The target moved on since this Nexus drained: record the new one
    /// as drained and check again.
    TargetMoved {
        /// The new target.
        to: BlueprintUuid,
    },
}

/// Decides quiesce step 3 for `nexus_id`, which recorded `drained` as its
/// last drained blueprint, from the current target blueprint (`None`:
/// there is none) and the records.
///
/// The peers are the in-service Nexus zones of `nexus_id`'s own
/// generation in the drained blueprint, itself included. Records of zones
/// that are not peers are ignored; a peer without a record has nothing to
/// drain.
pub fn peers_drained(
    nexus_id: OmicronZoneUuid,
    drained: BlueprintUuid,
    target: Option<&Blueprint>,
    records: &[NexusRecord],
) -> PeerDrain {
    let Some(blueprint) = target else {
        return PeerDrain::NoTarget;
    };
    if blueprint.id() != drained {
        return PeerDrain::TargetMoved { to: blueprint.id() };
    }
    let own = blueprint
        .in_service_nexus_zones()
        .find(|z| z.zone_id == nexus_id)
        .map(|z| z.nexus_generation);
    let peers: BTreeSet<OmicronZoneUuid> = blueprint
        .in_service_nexus_zones()
        .filter(|z| Some(z.nexus_generation) == own)
        .map(|z| z.zone_id)
        .collect();
    let records = records.iter().filter(|r| peers.contains(&r.nexus_id));
    let mut waiting = BTreeSet::new();
    for record in records {
        if record.state == NexusRecordState::Quiesced {
            return PeerDrain::Drained;
        }
        if record.last_drained_blueprint_id != Some(drained) {
            waiting.insert(record.nexus_id);
        }
    }
    if waiting.is_empty() {
        PeerDrain::Drained
    } else {
        PeerDrain::Waiting { peers: waiting }
    }
}

/// The Nexus zones whose records the cleanup step may delete: expunged
/// and ready for cleanup in the blueprint.
pub fn records_to_clean_up(blueprint: &Blueprint) -> BTreeSet<OmicronZoneUuid> {
    blueprint
        .nexus_zones()
        .filter(|z| z.disposition.is_ready_for_cleanup())
        .map(|z| z.zone_id)
        .collect()
}

/// Why an operator may not mark a Nexus quiesced (without forcing it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuiesceRefusal {
    /// The Nexus has no in-service zone in the target blueprint.
    #[error(transparent)]
    NotInBlueprint(#[from] ClassifyError),
    /// Its generation is not below the blueprint's: nothing wants it to
    /// hand over.
    #[error(
        "its generation {own} is not below the target blueprint \
         {blueprint_id}'s nexus_generation {wanted}"
    )]
    NotBelowTarget {
        /// The target blueprint.
        blueprint_id: BlueprintUuid,
        /// The Nexus's own generation.
        own: Generation,
        /// The blueprint's generation.
        wanted: Generation,
    },
}

/// The guard on an operator's `quiesced` mark: allowed only when the
/// current target blueprint shows `nexus_id`'s generation below the
/// blueprint's, so that a newer generation is there to take over.
pub fn quiesce_allowed(
    target: &Blueprint,
    nexus_id: OmicronZoneUuid,
) -> Result<(), QuiesceRefusal> {
    let own = classify(target, nexus_id)?.active_generation;
    let wanted = target.nexus_generation();
    if own < wanted {
        Ok(())
    } else {
        Err(QuiesceRefusal::NotBelowTarget {
            blueprint_id: target.id(),
            own,
            wanted,
        })
    }
}
