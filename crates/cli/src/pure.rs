//! The commands that need no database: `blueprint validate`, `classify`.

use std::io::Read;

use baton_types::{Blueprint, ReadError, parse_blueprint};
use baton_uuid_kinds::OmicronZoneUuid;
use camino::Utf8PathBuf;
use serde::Serialize;

use crate::commands::Failure;
use crate::output;

/// Reads a blueprint file (or stdin for `-`), as bad input on any error.
pub(crate) fn read_blueprint(path: &Utf8PathBuf) -> Result<Blueprint, Failure> {
    let text = if path == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| {
            Failure::bad_input(format!(
                "cannot read a blueprint from stdin: {e}."
            ))
        })?;
        text
    } else {
        std::fs::read_to_string(path).map_err(|e| {
            Failure::bad_input(format!(
                "cannot read blueprint file {path}: {e}."
            ))
        })?
    };
    parse_blueprint(&text).map_err(|e| Failure::bad_input(describe(path, &e)))
}

/// One sentence per problem, so a reader sees every one.
fn describe(path: &Utf8PathBuf, error: &ReadError) -> String {
    match error {
        ReadError::Malformed { .. } => format!("{path}: {error}."),
        ReadError::Invalid(invalid) => {
            let mut text = format!(
                "{path}: blueprint {} is invalid ({} problem{}):",
                invalid.blueprint_id,
                invalid.problems.len(),
                if invalid.problems.len() == 1 { "" } else { "s" },
            );
            for problem in &invalid.problems {
                text.push_str(&format!("\n  - {problem}."));
            }
            text
        }
    }
}

pub(crate) fn validate(path: &Utf8PathBuf) -> Result<(), Failure> {
    let bp = read_blueprint(path)?;
    output::line(&format!(
        "blueprint {} is valid: nexus_generation {}, {} sled(s), {} zone(s), \
         {} in-service Nexus zone(s)",
        bp.id(),
        bp.nexus_generation(),
        bp.sleds().len(),
        bp.zones().count(),
        bp.in_service_nexus_zones().count(),
    ));
    Ok(())
}

#[derive(Serialize)]
struct ClassifyJson {
    nexus_id: OmicronZoneUuid,
    active_generation: u64,
    active: Vec<OmicronZoneUuid>,
    not_yet: Vec<OmicronZoneUuid>,
}

pub(crate) fn classify(
    path: &Utf8PathBuf,
    nexus_id: OmicronZoneUuid,
    json: bool,
) -> Result<(), Failure> {
    let bp = read_blueprint(path)?;
    let c = baton_planner::classify(&bp, nexus_id)
        .map_err(|e| Failure::bad_input(format!("{e}.")))?;
    if json {
        output::json(&ClassifyJson {
            nexus_id,
            active_generation: c.active_generation.get(),
            // BTreeSets iterate in ascending order, as the contract asks.
            active: c.records.active.into_iter().collect(),
            not_yet: c.records.not_yet.into_iter().collect(),
        });
        return Ok(());
    }
    output::line(&format!(
        "blueprint {} as seen by Nexus {nexus_id}: active generation {}",
        bp.id(),
        c.active_generation
    ));
    output::line("RECORD    NEXUS ID");
    for (state, ids) in [
        ("active", &c.records.active),
        ("not_yet", &c.records.not_yet),
    ] {
        for id in ids {
            output::line(&format!("{state:<9} {id}"));
        }
    }
    Ok(())
}

/// True when `argument` names a file to read (or stdin), not a stored
/// blueprint's id: anything that exists as a path, `-`, or does not
/// parse as a UUID.
pub(crate) fn is_file_argument(argument: &str) -> bool {
    argument == "-"
        || std::path::Path::new(argument).exists()
        || argument.parse::<baton_uuid_kinds::BlueprintUuid>().is_err()
}

#[derive(Serialize)]
struct ShownZone {
    id: OmicronZoneUuid,
    sled_id: baton_uuid_kinds::SledUuid,
    nexus_generation: u64,
    disposition: &'static str,
    ready_for_cleanup: Option<bool>,
}

#[derive(Serialize)]
struct Shown {
    id: baton_uuid_kinds::BlueprintUuid,
    parent_blueprint_id: Option<baton_uuid_kinds::BlueprintUuid>,
    nexus_generation: u64,
    nexus_zones: Vec<ShownZone>,
}

/// `blueprint show`: the blueprint's identity and its Nexus zones,
/// sorted by zone id.
pub(crate) fn show(bp: &Blueprint, json: bool) {
    let mut zones: Vec<ShownZone> = bp
        .nexus_zones()
        .map(|z| {
            let (disposition, ready) = match z.disposition {
                baton_types::ZoneDisposition::InService => ("in_service", None),
                baton_types::ZoneDisposition::Expunged {
                    ready_for_cleanup,
                    ..
                } => ("expunged", Some(ready_for_cleanup)),
            };
            ShownZone {
                id: z.zone_id,
                sled_id: z.sled_id,
                nexus_generation: z.nexus_generation.get(),
                disposition,
                ready_for_cleanup: ready,
            }
        })
        .collect();
    zones.sort_by_key(|z| z.id);
    let shown = Shown {
        id: bp.id(),
        parent_blueprint_id: bp.parent_blueprint_id(),
        nexus_generation: bp.nexus_generation().get(),
        nexus_zones: zones,
    };
    if json {
        output::json(&shown);
        return;
    }
    let parent = shown
        .parent_blueprint_id
        .map_or("none".to_owned(), |p| p.to_string());
    output::line(&format!(
        "blueprint {}  parent {parent}  nexus_generation {}",
        shown.id, shown.nexus_generation
    ));
    output::line(&format!(
        "{:<36}  {:<36}  {:>3}  DISPOSITION",
        "NEXUS ZONE", "SLED", "GEN"
    ));
    for z in &shown.nexus_zones {
        let disposition = match z.ready_for_cleanup {
            None => "in_service".to_owned(),
            Some(true) => "expunged (ready for cleanup)".to_owned(),
            Some(false) => "expunged".to_owned(),
        };
        output::line(&format!(
            "{:<36}  {:<36}  {:>3}  {disposition}",
            z.id, z.sled_id, z.nexus_generation
        ));
    }
}
