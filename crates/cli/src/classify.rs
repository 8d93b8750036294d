//! `baton classify`: the records an executing Nexus would write.

use baton_uuid_kinds::OmicronZoneUuid;
use camino::Utf8PathBuf;
use clap::Args;
use serde::Serialize;
use tabled::Tabled;

use crate::failure::Failure;
use crate::input::read_blueprint;
use crate::output;

/// Show the records an executing Nexus would write for a blueprint.
#[derive(Debug, Args)]
pub(crate) struct ClassifyArgs {
    /// The blueprint file (`-` reads stdin).
    #[arg(long)]
    blueprint: Utf8PathBuf,
    /// The executing Nexus's zone id.
    #[arg(long)]
    nexus_id: OmicronZoneUuid,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct ClassifyJson {
    nexus_id: OmicronZoneUuid,
    active_generation: u64,
    active: Vec<OmicronZoneUuid>,
    not_yet: Vec<OmicronZoneUuid>,
}

#[derive(Tabled)]
struct Row {
    #[tabled(rename = "RECORD")]
    state: &'static str,
    #[tabled(rename = "NEXUS ID")]
    id: OmicronZoneUuid,
}

pub(crate) fn run(args: ClassifyArgs) -> Result<(), Failure> {
    let ClassifyArgs {
        blueprint,
        nexus_id,
        json,
    } = args;
    let bp = read_blueprint(&blueprint)?;
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
    let rows = c
        .records
        .active
        .iter()
        .map(|id| ("active", id))
        .chain(c.records.not_yet.iter().map(|id| ("not_yet", id)))
        .map(|(state, id)| Row { state, id: *id });
    output::line(&output::table(rows, "no records"));
    Ok(())
}
