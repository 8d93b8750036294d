//! Where new Nexus zones go.

use std::collections::BTreeMap;

use baton_types::{Blueprint, Generation, SledState};
use baton_uuid_kinds::SledUuid;

/// The sleds for `count` new Nexus zones of `generation`, one at a time
/// on the active sled with the fewest in-service Nexus zones of that
/// generation so far (ties to the lowest sled id), so that a generation
/// is spread over the sleds as evenly as it can be. Empty when the
/// blueprint has no active sled.
pub fn place_nexus_zones(
    blueprint: &Blueprint,
    generation: Generation,
    count: usize,
) -> Vec<SledUuid> {
    let mut load: BTreeMap<SledUuid, usize> = blueprint
        .sleds()
        .iter()
        .filter(|(_, sled)| sled.state == SledState::Active)
        .map(|(id, _)| (*id, 0))
        .collect();
    for zone in blueprint.in_service_nexus_zones() {
        if zone.nexus_generation == generation
            && let Some(n) = load.get_mut(&zone.sled_id)
        {
            *n += 1;
        }
    }
    let mut placed = Vec::with_capacity(count);
    for _ in 0..count {
        let Some((sled, n)) = load.iter_mut().min_by_key(|(id, n)| (**n, **id))
        else {
            break;
        };
        *n += 1;
        placed.push(*sled);
    }
    placed
}
