//! The rules a blueprint must follow, checked all at once.
//!
//! Both a parsed document and a blueprint built in code are reduced to an
//! [`Outline`] (raw numbers, no ranges assumed), so there is one checker and
//! it can report a generation out of range beside every other problem.

use std::fmt;

use baton_uuid_kinds::{BlueprintUuid, OmicronZoneUuid, SledUuid};

use crate::{Generation, GenerationError};

/// One thing wrong with a blueprint, naming the ids involved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValidationProblem {
    /// Zone ids are unique across the whole blueprint.
    #[error("zone {zone_id} appears {count} times (on sleds {})", join(sleds))]
    DuplicateZoneId {
        /// The repeated id.
        zone_id: OmicronZoneUuid,
        /// How many times it appears.
        count: usize,
        /// The sleds it appears on (a sled may repeat).
        sleds: Vec<SledUuid>,
    },
    /// A generation field is 0 or above `i64::MAX`.
    #[error("{field}: {error}")]
    GenerationOutOfRange {
        /// Which field, with the zone id where there is one.
        field: String,
        /// What is wrong with it.
        error: GenerationError,
    },
    /// A Nexus zone more than one generation ahead of the blueprint.
    #[error(
        "Nexus zone {zone_id} has generation {zone_generation}, more than \
         one above the blueprint's nexus_generation {blueprint_generation}"
    )]
    NexusGenerationTooFarAhead {
        /// The zone.
        zone_id: OmicronZoneUuid,
        /// Its generation.
        zone_generation: u64,
        /// The blueprint's top-level generation.
        blueprint_generation: u64,
    },
    /// Nobody could be in control.
    #[error(
        "blueprint {blueprint_id} has no in-service Nexus zone at its \
         nexus_generation {generation}"
    )]
    NoNexusAtBlueprintGeneration {
        /// The blueprint.
        blueprint_id: BlueprintUuid,
        /// Its top-level generation.
        generation: u64,
    },
    /// A Nexus zone without its generation.
    #[error("Nexus zone {zone_id} has no nexus_generation")]
    MissingNexusGeneration {
        /// The zone.
        zone_id: OmicronZoneUuid,
    },
    /// A blueprint cannot follow itself: the chain of parents would be
    /// a loop.
    #[error("blueprint {blueprint_id} names itself as its parent")]
    OwnParent {
        /// The blueprint.
        blueprint_id: BlueprintUuid,
    },
    /// A text field the database cannot store: PostgreSQL's text type
    /// holds no NUL character (a `\u0000` escape in the JSON).
    #[error(
        "the blueprint's {field} contains a NUL character (\\u0000), which \
         the database cannot store"
    )]
    UnstorableText {
        /// Which field (`creator` or `comment`).
        field: &'static str,
    },
}

/// The problems of the blueprint's free-text fields.
pub(crate) fn text_problems(
    creator: &str,
    comment: &str,
) -> Vec<ValidationProblem> {
    [("creator", creator), ("comment", comment)]
        .into_iter()
        .filter(|(_, text)| text.contains('\0'))
        .map(|(field, _)| ValidationProblem::UnstorableText { field })
        .collect()
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(T::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every problem found in one blueprint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "blueprint {blueprint_id} is invalid ({} problem{}): {}",
    problems.len(),
    if problems.len() == 1 { "" } else { "s" },
    problems.iter().map(|p| format!("{p}.")).collect::<Vec<_>>().join(" ")
)]
pub struct ValidationError {
    /// The blueprint.
    pub blueprint_id: BlueprintUuid,
    /// Every problem, in a stable order.
    pub problems: Vec<ValidationProblem>,
}

/// A zone as the checker sees it.
pub(crate) struct OutlineZone {
    pub sled_id: SledUuid,
    pub zone_id: OmicronZoneUuid,
    pub in_service: bool,
    /// For a Nexus zone, its generation as written (maybe out of range).
    pub nexus_generation: Option<u64>,
}

/// The parts of a blueprint the rules speak of.
pub(crate) struct Outline {
    /// The blueprint's parent as written.
    pub parent: Option<BlueprintUuid>,
    /// The blueprint's top-level generation as written.
    pub nexus_generation: u64,
    pub zones: Vec<OutlineZone>,
    /// Problems found while reading, reported first.
    pub problems: Vec<ValidationProblem>,
}

impl Outline {
    pub(crate) fn check(
        self,
        blueprint_id: BlueprintUuid,
    ) -> Result<(), ValidationError> {
        let mut problems = self.problems;
        if self.parent == Some(blueprint_id) {
            problems.push(ValidationProblem::OwnParent { blueprint_id });
        }
        problems.extend(duplicate_zones(&self.zones));
        let top = self.nexus_generation;
        if let Err(error) = Generation::new(top) {
            problems.push(ValidationProblem::GenerationOutOfRange {
                field: "blueprint nexus_generation".to_owned(),
                error,
            });
        }
        for zone in &self.zones {
            let Some(generation) = zone.nexus_generation else {
                continue;
            };
            if let Err(error) = Generation::new(generation) {
                problems.push(ValidationProblem::GenerationOutOfRange {
                    field: format!(
                        "Nexus zone {} nexus_generation",
                        zone.zone_id
                    ),
                    error,
                });
            } else if generation > top.saturating_add(1) {
                problems.push(ValidationProblem::NexusGenerationTooFarAhead {
                    zone_id: zone.zone_id,
                    zone_generation: generation,
                    blueprint_generation: top,
                });
            }
        }
        let has_nexus_at_top = self
            .zones
            .iter()
            .any(|z| z.in_service && z.nexus_generation == Some(top));
        if !has_nexus_at_top {
            problems.push(ValidationProblem::NoNexusAtBlueprintGeneration {
                blueprint_id,
                generation: top,
            });
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ValidationError {
                blueprint_id,
                problems,
            })
        }
    }
}

fn duplicate_zones(
    zones: &[OutlineZone],
) -> impl Iterator<Item = ValidationProblem> {
    // Sorting flat (id, position) pairs keeps this cheap on a fleet of
    // tens of thousands of zones: no allocation per zone, and the position
    // keeps each duplicate's sleds in document order.
    let mut ids: Vec<(OmicronZoneUuid, usize)> = zones
        .iter()
        .enumerate()
        .map(|(position, zone)| (zone.zone_id, position))
        .collect();
    ids.sort_unstable();
    ids.chunk_by(|a, b| a.0 == b.0)
        .filter(|same| same.len() > 1)
        .map(|same| ValidationProblem::DuplicateZoneId {
            zone_id: same[0].0,
            count: same.len(),
            sleds: same.iter().map(|&(_, at)| zones[at].sled_id).collect(),
        })
        .collect::<Vec<_>>()
        .into_iter()
}
