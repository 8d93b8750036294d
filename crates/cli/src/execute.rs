//! `baton execute`: one execution of the target (or a stored blueprint).

use baton_datastore::DataStore;
use baton_executor::{StepOutcome, realize_blueprint};
use baton_planner::AccessDecision;
use baton_types::Blueprint;
use baton_uuid_kinds::{BlueprintUuid, OmicronZoneUuid};
use clap::Args;
use slog::Logger;

use crate::context::Context;
use crate::failure::Failure;
use crate::output;

/// Execute the current target (or a stored blueprint) once.
#[derive(Debug, Args)]
#[group(skip)]
#[command(group = clap::ArgGroup::new("identity")
    .required(true)
    .multiple(false)
    .args(["nexus_id", "no_nexus_id"]))]
pub(crate) struct ExecuteArgs {
    /// Execute as this Nexus.
    #[arg(long)]
    nexus_id: Option<OmicronZoneUuid>,
    /// Execute without a Nexus identity (records are then not written).
    #[arg(long)]
    no_nexus_id: bool,
    /// Execute this stored blueprint instead of the current target.
    #[arg(long)]
    blueprint_id: Option<BlueprintUuid>,
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(ctx: &Context, args: ExecuteArgs) -> Result<(), Failure> {
    let ds = ctx.datastore()?;
    ctx.block_on(execute(&ctx.log, &ds, args))
}

async fn execute(
    log: &Logger,
    ds: &DataStore,
    args: ExecuteArgs,
) -> Result<(), Failure> {
    // A database this build must not use is not executed against.
    let facts = ds.access_facts_for(args.nexus_id, &[]).await?;
    let baton_planner::Access { decision, reason } =
        baton_planner::decide_access(&facts);
    if decision == AccessDecision::Refuse {
        return Err(Failure::failed(format!(
            "refused to execute: the access check says refuse: {reason}"
        )));
    }
    // The target is read once: for the blueprint to execute (unless one
    // is named) and for whether it is enabled.
    let (target, bp): (_, Blueprint) = match args.blueprint_id {
        Some(id) => (ds.target_current().await?, ds.blueprint_read(id).await?),
        None => {
            let (target, bp) = ds.target_blueprint().await?;
            (Some(target), bp)
        }
    };
    if let Some(target) = target
        && target.blueprint_id == bp.id()
        && !target.enabled
    {
        return Err(Failure::failed(format!(
            "refused to execute: the target, blueprint {}, is disabled, so \
             executors do not act on it; `baton blueprint target set {} \
             --enabled true` enables it.",
            target.blueprint_id, target.blueprint_id
        )));
    }
    let report = realize_blueprint(log, ds, &bp, args.nexus_id).await;
    if args.json {
        output::json(&report);
    } else {
        output::line(&format!("executed blueprint {}", report.blueprint_id));
        for step in &report.steps {
            output::line(&format!(
                "  {:<8} {}: {}",
                step.outcome.as_str(),
                step.name,
                step.message.as_deref().unwrap_or("")
            ));
        }
    }
    if report.is_clean() {
        return Ok(());
    }
    let failed: Vec<String> = report
        .steps
        .iter()
        .filter(|s| {
            !matches!(s.outcome, StepOutcome::Success | StepOutcome::Skipped)
        })
        .map(|s| {
            let message = s.message.as_deref().unwrap_or("no message");
            format!("{}: {}", s.name, message.trim_end_matches('.'))
        })
        .collect();
    Err(Failure::failed(format!(
        "execution finished with {} step(s) that did not succeed: {}.",
        failed.len(),
        failed.join("; ")
    )))
}
