//! Which records an executing Nexus writes for a blueprint.

use std::collections::BTreeSet;

use baton_types::{Blueprint, Generation, RecordsToEnsure};
use baton_uuid_kinds::{BlueprintUuid, OmicronZoneUuid};

/// The records a Nexus executing a blueprint should ensure exist.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classification {
    /// The executing Nexus.
    pub nexus_id: OmicronZoneUuid,
    /// Its own zone's generation: the generation in control as far as it
    /// knows (not the blueprint's, which runs one ahead during a handoff).
    pub active_generation: Generation,
    /// The records to write: `active` for the in-service Nexus zones at
    /// the active generation, `not_yet` for those at the next one (one
    /// above).
    pub records: RecordsToEnsure,
}

/// Why a Nexus cannot classify a blueprint: it has no in-service zone in
/// it. Neither case goes away by retrying with the same blueprint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    /// No Nexus zone in the blueprint has this id.
    #[error(
        "executing Nexus has no in-service zone in this blueprint: \
         blueprint {blueprint_id} has no Nexus zone {nexus_id}"
    )]
    NoSuchZone {
        /// The executing Nexus.
        nexus_id: OmicronZoneUuid,
        /// The blueprint.
        blueprint_id: BlueprintUuid,
    },
    /// The Nexus zone is expunged in the blueprint.
    #[error(
        "executing Nexus has no in-service zone in this blueprint: \
         Nexus zone {nexus_id} is expunged in blueprint {blueprint_id}"
    )]
    NotInService {
        /// The executing Nexus.
        nexus_id: OmicronZoneUuid,
        /// The blueprint.
        blueprint_id: BlueprintUuid,
    },
}

/// The generation of `nexus_id`'s own in-service zone.
fn own_generation(
    blueprint: &Blueprint,
    nexus_id: OmicronZoneUuid,
) -> Result<Generation, ClassifyError> {
    let zone = blueprint
        .nexus_zones()
        .filter(|z| z.zone_id == nexus_id)
        // With duplicate ids (an invalid blueprint) an in-service copy wins.
        .max_by_key(|z| z.disposition.is_in_service());
    match zone {
        None => Err(ClassifyError::NoSuchZone {
            nexus_id,
            blueprint_id: blueprint.id(),
        }),
        Some(z) if !z.disposition.is_in_service() => {
            Err(ClassifyError::NotInService {
                nexus_id,
                blueprint_id: blueprint.id(),
            })
        }
        Some(z) => Ok(z.nexus_generation),
    }
}

/// Classifies every in-service Nexus zone for the executing `nexus_id`:
/// its own generation is `active`, the next generation `not_yet`; older
/// ones get no record, and so do generations more than one ahead (see
/// below); expunged zones and other kinds are ignored.
///
/// Baton departs from the reference rule ("every newer generation is
/// `not_yet`") here on purpose. The handoff promotes *every* `not_yet`
/// row, and the rows carry no generation. If generation G+2 is deployed
/// while G is still in control, G would write `not_yet` rows for both G+1
/// and G+2, and the G+1 handoff would make both active at once. Baton's
/// model-based test found that sequence (`tests/model`). A zone two or more
/// generations ahead gets its record from the generation before it, once
/// that one is in control.
pub fn classify(
    blueprint: &Blueprint,
    nexus_id: OmicronZoneUuid,
) -> Result<Classification, ClassifyError> {
    let active_generation = own_generation(blueprint, nexus_id)?;
    let next_generation = active_generation.next().ok();
    let mut active = BTreeSet::new();
    let mut not_yet = BTreeSet::new();
    for zone in blueprint.in_service_nexus_zones() {
        if zone.nexus_generation == active_generation {
            active.insert(zone.zone_id);
        } else if Some(zone.nexus_generation) == next_generation {
            not_yet.insert(zone.zone_id);
        }
    }
    Ok(Classification {
        nexus_id,
        active_generation,
        records: RecordsToEnsure { active, not_yet },
    })
}

/// What a running Nexus does with the current target blueprint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Its generation is the blueprint's: it is in control and executes
    /// the blueprint, writing these records.
    Execute(Classification),
    /// Its generation is below the blueprint's: the system wants a newer
    /// generation in control, so it must quiesce.
    Quiesce {
        /// Its own zone's generation.
        own: Generation,
        /// The blueprint's generation.
        wanted: Generation,
    },
}

/// Decides, from one look at the blueprint, whether `nexus_id` executes
/// it or quiesces (what [`is_quiescing`] and [`classify`] answer
/// separately).
pub fn decide_role(
    blueprint: &Blueprint,
    nexus_id: OmicronZoneUuid,
) -> Result<Role, ClassifyError> {
    let classification = classify(blueprint, nexus_id)?;
    let own = classification.active_generation;
    let wanted = blueprint.nexus_generation();
    Ok(if own < wanted {
        Role::Quiesce { own, wanted }
    } else {
        Role::Execute(classification)
    })
}

/// True when `nexus_id`'s generation is below the blueprint's: the system
/// wants a newer generation in control, so this Nexus must quiesce.
pub fn is_quiescing(
    blueprint: &Blueprint,
    nexus_id: OmicronZoneUuid,
) -> Result<bool, ClassifyError> {
    Ok(own_generation(blueprint, nexus_id)? < blueprint.nexus_generation())
}
