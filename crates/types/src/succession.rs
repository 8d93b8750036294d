//! What a child blueprint may change from its parent.
//!
//! Each blueprint is checked alone by [`Blueprint::validate`]; these rules
//! need the parent too. Expungement is permanent, and a Nexus zone's
//! generation is an immutable label. A child that broke either rule could
//! make the executing Nexus write records for a dead zone, or put two
//! generations in control. Baton's stress test showed this: a buggy
//! target writer copied an old target's zones into a new child, brought
//! back expunged zones, and two generations ended up active.

use std::collections::BTreeMap;

use baton_uuid_kinds::{BlueprintUuid, OmicronZoneUuid};

use crate::{Blueprint, Generation};

/// One way a child breaks from its parent, naming the ids.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SuccessionProblem {
    /// The child does not name the parent as its parent.
    #[error("its parent is {found:?}, not blueprint {parent}")]
    NotTheParent {
        /// The blueprint it was checked against.
        parent: BlueprintUuid,
        /// The child's `parent_blueprint_id`.
        found: Option<BlueprintUuid>,
    },
    /// A zone expunged in the parent is in service again.
    #[error("zone {zone_id} is expunged in the parent but in service again")]
    Unexpunged {
        /// The zone.
        zone_id: OmicronZoneUuid,
    },
    /// A Nexus zone's generation changed.
    #[error(
        "Nexus zone {zone_id} changed generation from {from} to {to}; a \
         zone's generation never changes"
    )]
    GenerationRelabelled {
        /// The zone.
        zone_id: OmicronZoneUuid,
        /// In the parent.
        from: Generation,
        /// In the child.
        to: Generation,
    },
    /// The top-level generation went down or jumped more than one.
    #[error(
        "the blueprint's nexus_generation goes from {from} to {to}; it may \
         only stay or go up by one"
    )]
    GenerationStep {
        /// In the parent.
        from: Generation,
        /// In the child.
        to: Generation,
    },
}

/// Every way `child` breaks from `parent`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "blueprint {child} cannot follow blueprint {parent}: {}",
    problems.iter().map(|p| format!("{p}.")).collect::<Vec<_>>().join(" ")
)]
pub struct SuccessionError {
    /// The parent.
    pub parent: BlueprintUuid,
    /// The child.
    pub child: BlueprintUuid,
    /// Every problem, in zone order.
    pub problems: Vec<SuccessionProblem>,
}

impl Blueprint {
    /// Checks that this blueprint may follow `parent` as its child.
    pub fn check_follows(
        &self,
        parent: &Blueprint,
    ) -> Result<(), SuccessionError> {
        let mut problems = Vec::new();
        if self.parent_blueprint_id() != Some(parent.id()) {
            problems.push(SuccessionProblem::NotTheParent {
                parent: parent.id(),
                found: self.parent_blueprint_id(),
            });
        }
        let (from, to) = (parent.nexus_generation(), self.nexus_generation());
        if to < from || to.get() > from.get() + 1 {
            problems.push(SuccessionProblem::GenerationStep { from, to });
        }
        let before: BTreeMap<OmicronZoneUuid, _> =
            parent.zones().map(|(_, z)| (z.id, z)).collect();
        let mut after: Vec<_> = self.zones().map(|(_, z)| z).collect();
        after.sort_by_key(|z| z.id);
        after.dedup_by_key(|z| z.id);
        for zone in after {
            let Some(old) = before.get(&zone.id) else {
                continue;
            };
            if !old.disposition.is_in_service()
                && zone.disposition.is_in_service()
            {
                problems
                    .push(SuccessionProblem::Unexpunged { zone_id: zone.id });
            }
            if let (Some(from), Some(to)) = (
                old.zone_type.nexus_generation(),
                zone.zone_type.nexus_generation(),
            ) && from != to
            {
                problems.push(SuccessionProblem::GenerationRelabelled {
                    zone_id: zone.id,
                    from,
                    to,
                });
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SuccessionError {
                parent: parent.id(),
                child: self.id(),
                problems,
            })
        }
    }
}
