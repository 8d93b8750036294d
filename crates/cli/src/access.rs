//! `baton access`: the start-up access decision for a Nexus.

use baton_uuid_kinds::OmicronZoneUuid;
use clap::Args;
use serde::Serialize;

use crate::context::Context;
use crate::failure::Failure;
use crate::output;

/// The start-up access decision for a Nexus.
#[derive(Debug, Args)]
pub(crate) struct AccessArgs {
    /// The Nexus asking.
    #[arg(long)]
    nexus_id: OmicronZoneUuid,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct AccessJson {
    nexus_id: String,
    decision: &'static str,
    reason: String,
}

pub(crate) fn run(ctx: &Context, args: AccessArgs) -> Result<(), Failure> {
    let AccessArgs { nexus_id, json } = args;
    let ds = ctx.datastore()?;
    let facts = ctx.block_on(async {
        Ok(ds.access_facts_for(Some(nexus_id), &[]).await?)
    })?;
    let baton_planner::Access { decision, reason } =
        baton_planner::decide_access(&facts);
    if json {
        output::json(&AccessJson {
            nexus_id: nexus_id.to_string(),
            decision: decision.as_str(),
            reason,
        });
    } else {
        output::line(&format!("{}: {reason}", decision.as_str()));
    }
    Ok(())
}
