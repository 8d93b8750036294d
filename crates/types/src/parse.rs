//! Reading Omicron-format blueprint JSON.
//!
//! Only the fields the handoff uses are read (the `Wire*` types below;
//! the list, with what each field means to Baton, is in the repository's
//! README, "Writing blueprints"); everything else in the document is
//! accepted and ignored, and the text itself is kept.

use std::collections::BTreeMap;

use baton_uuid_kinds::{BlueprintUuid, OmicronZoneUuid, SledUuid};
use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::validate::{Outline, OutlineZone, ValidationProblem};
use crate::{
    Blueprint, BlueprintBuilder, Generation, NexusZone, SledConfig, SledState,
    ValidationError, ZoneConfig, ZoneDisposition, ZoneType,
};

/// Why a document could not be read as a valid blueprint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// Not JSON, or JSON not in the blueprint's shape.
    #[error(
        "blueprint document is malformed at line {line}, column {column}: {message}"
    )]
    Malformed {
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What the parser expected.
        message: String,
    },
    /// Well-formed, but breaks the rules (every problem is listed).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
}

#[derive(Deserialize)]
struct WireBlueprint {
    id: BlueprintUuid,
    parent_blueprint_id: Option<BlueprintUuid>,
    nexus_generation: u64,
    sleds: BTreeMap<SledUuid, WireSled>,
    time_created: DateTime<Utc>,
    creator: String,
    comment: String,
}

#[derive(Deserialize)]
struct WireSled {
    state: WireSledState,
    zones: Vec<WireZone>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireSledState {
    Active,
    Decommissioned,
}

#[derive(Deserialize)]
struct WireZone {
    id: OmicronZoneUuid,
    disposition: WireDisposition,
    zone_type: WireZoneType,
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum WireDisposition {
    InService,
    Expunged {
        as_of_generation: u64,
        ready_for_cleanup: bool,
    },
}

/// The zone type's tag, and the one field of one kind that matters here.
#[derive(Deserialize)]
struct WireZoneType {
    #[serde(rename = "type")]
    kind: String,
    nexus_generation: Option<u64>,
}

/// Reads and validates one Omicron-format blueprint document.
///
/// Malformed JSON is reported with its line and column; a well-formed but
/// invalid blueprint with every problem found.
pub fn parse_blueprint(text: &str) -> Result<Blueprint, ReadError> {
    let wire: WireBlueprint =
        serde_json::from_str(text).map_err(|e| ReadError::Malformed {
            line: e.line(),
            column: e.column(),
            message: strip_position(&e.to_string()),
        })?;
    let id = wire.id;
    outline(&wire).check(id)?;
    Ok(into_builder(wire).build_from_document(text))
}

/// serde_json appends " at line L column C"; the error states it once.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

fn outline(wire: &WireBlueprint) -> Outline {
    let mut problems =
        crate::validate::text_problems(&wire.creator, &wire.comment);
    let mut zones = Vec::new();
    for (sled_id, sled) in &wire.sleds {
        for zone in &sled.zones {
            let is_nexus = zone.zone_type.kind == "nexus";
            if is_nexus && zone.zone_type.nexus_generation.is_none() {
                problems.push(ValidationProblem::MissingNexusGeneration {
                    zone_id: zone.id,
                });
            }
            zones.push(OutlineZone {
                sled_id: *sled_id,
                zone_id: zone.id,
                in_service: matches!(
                    zone.disposition,
                    WireDisposition::InService
                ),
                nexus_generation: zone
                    .zone_type
                    .nexus_generation
                    .filter(|_| is_nexus),
            });
        }
    }
    Outline {
        parent: wire.parent_blueprint_id,
        nexus_generation: wire.nexus_generation,
        zones,
        problems,
    }
}

/// Converts a document that passed the checks, so every generation is in
/// range and every Nexus zone has one.
fn into_builder(wire: WireBlueprint) -> BlueprintBuilder {
    let generation =
        |value: u64| Generation::new(value).expect("checked by the outline");
    let sleds = wire
        .sleds
        .into_iter()
        .map(|(id, sled)| {
            let zones = sled
                .zones
                .into_iter()
                .map(|zone| ZoneConfig {
                    id: zone.id,
                    disposition: match zone.disposition {
                        WireDisposition::InService => {
                            ZoneDisposition::InService
                        }
                        WireDisposition::Expunged {
                            as_of_generation,
                            ready_for_cleanup,
                        } => ZoneDisposition::Expunged {
                            as_of_generation,
                            ready_for_cleanup,
                        },
                    },
                    zone_type: match zone.zone_type.kind.as_str() {
                        "nexus" => ZoneType::Nexus(NexusZone {
                            nexus_generation: generation(
                                zone.zone_type
                                    .nexus_generation
                                    .expect("checked by the outline"),
                            ),
                        }),
                        other => ZoneType::from_kind(other),
                    },
                })
                .collect();
            let state = match sled.state {
                WireSledState::Active => SledState::Active,
                WireSledState::Decommissioned => SledState::Decommissioned,
            };
            (id, SledConfig { state, zones })
        })
        .collect();
    BlueprintBuilder::new(wire.id, generation(wire.nexus_generation))
        .parent(wire.parent_blueprint_id)
        .time_created(wire.time_created)
        .creator(wire.creator)
        .comment(wire.comment)
        .sleds(sleds)
}
