//! `baton handoff`: the new generation takes over.

use baton_uuid_kinds::OmicronZoneUuid;
use clap::Args;
use serde::Serialize;

use crate::context::Context;
use crate::failure::Failure;
use crate::output;

/// Attempt the handoff as a new-generation Nexus.
///
/// A Nexus already active succeeds with nothing to do, so a handoff
/// whose answer was lost (a connection cut while committing) is safe to
/// run again.
#[derive(Debug, Args)]
pub(crate) struct HandoffArgs {
    /// The Nexus taking over.
    #[arg(long)]
    nexus_id: OmicronZoneUuid,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct HandoffJson {
    nexus_id: String,
    handed_off: bool,
    promoted: Option<usize>,
    reason: Option<String>,
}

pub(crate) fn run(ctx: &Context, args: HandoffArgs) -> Result<(), Failure> {
    let HandoffArgs { nexus_id, json } = args;
    let ds = ctx.datastore()?;
    let result =
        ctx.block_on(async { Ok(ds.attempt_handoff(nexus_id).await) })?;
    if json {
        output::json(&HandoffJson {
            nexus_id: nexus_id.to_string(),
            handed_off: result.is_ok(),
            promoted: result.as_ref().ok().copied(),
            reason: result.as_ref().err().map(|e| e.to_string()),
        });
    }
    let promoted = result?;
    if !json {
        output::line(&if promoted == 0 {
            format!("Nexus {nexus_id} is already active: nothing to do")
        } else {
            format!("handoff done: {promoted} Nexus record(s) are now active")
        });
    }
    Ok(())
}
