//! Blueprint execution: the named steps a Nexus runs over the current
//! target blueprint, and the report they produce.
//!
//! The executor wires the planner's decisions (what to write) to the
//! datastore's operations (writing it, guarded by the current target). It
//! never decides protocol policy itself and never writes SQL.
//!
//! ```
//! use baton_datastore::DataStore;
//! use baton_types::story::HandoffStory;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let log = slog::Logger::root(slog::Discard, slog::o!());
//! let db = baton_dev_db::DevDb::start(&log)?;
//! let ds = DataStore::new(&log, &db.url());
//! ds.migrate().await?;
//! // Generation 1 in control, generation 2 deployed.
//! let story = HandoffStory::new(1);
//! ds.records_initialize(&story.old_nexus.iter().copied().collect())
//!     .await?;
//! for blueprint in [&story.steady, &story.new_generation_deployed] {
//!     ds.blueprint_insert(blueprint).await?;
//!     ds.target_set(blueprint.id(), true).await?;
//! }
//! // An old Nexus executes the target: it writes the not_yet records.
//! let report = baton_executor::realize_blueprint(
//!     &log,
//!     &ds,
//!     &story.new_generation_deployed,
//!     Some(story.old_nexus[0]),
//! )
//! .await;
//! assert!(report.is_clean(), "{report:?}");
//! assert_eq!(ds.records_list().await?.len(), 6);
//! # Ok(()) }
//! ```

use baton_datastore::DataStore;
use baton_planner::{Classification, ClassifyError};
use baton_types::Blueprint;
use baton_uuid_kinds::{BlueprintUuid, OmicronZoneUuid};
use serde::Serialize;
use slog::{Logger, info, o, warn};

/// The name of the record step; contains `db_metadata_nexus`, as the CLI
/// contract requires.
pub const STEP_ENSURE_RECORDS: &str = "ensure db_metadata_nexus records";

/// The name of the cleanup step.
pub const STEP_CLEANUP_RECORDS: &str =
    "clean up db_metadata_nexus records of expunged Nexus zones";

/// The metric counting steps run, by `step` (`ensure_records`,
/// `cleanup_records`) and `outcome` (`success`, `warning`, `skipped`,
/// `failed`), through the `metrics` facade.
pub const METRIC_STEPS: &str = "baton_execution_steps_total";

/// How a step ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    /// It did what it should.
    Success,
    /// It could not, but execution goes on (the record step's failures).
    Warning,
    /// It did not apply (no Nexus identity).
    Skipped,
    /// It failed.
    Failed,
}

impl StepOutcome {
    /// The outcome's name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            StepOutcome::Success => "success",
            StepOutcome::Warning => "warning",
            StepOutcome::Skipped => "skipped",
            StepOutcome::Failed => "failed",
        }
    }
}

/// One step's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StepReport {
    /// The step's name.
    pub name: &'static str,
    /// How it ended.
    pub outcome: StepOutcome,
    /// Why, in words (`None` only when there is nothing to add).
    pub message: Option<String>,
}

/// What one execution did, step by step, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExecutionReport {
    /// The blueprint executed.
    pub blueprint_id: BlueprintUuid,
    /// Each step, in the order run.
    pub steps: Vec<StepReport>,
}

impl ExecutionReport {
    /// True when every step succeeded or was skipped.
    pub fn is_clean(&self) -> bool {
        self.steps.iter().all(|s| {
            matches!(s.outcome, StepOutcome::Success | StepOutcome::Skipped)
        })
    }

    /// The report of the named step.
    pub fn step(&self, name: &str) -> Option<&StepReport> {
        self.steps.iter().find(|s| s.name == name)
    }
}

/// Executes `blueprint` as Nexus `nexus_id` (or without an identity),
/// running every step in order even when an earlier one did not succeed.
pub async fn realize_blueprint(
    log: &Logger,
    datastore: &DataStore,
    blueprint: &Blueprint,
    nexus_id: Option<OmicronZoneUuid>,
) -> ExecutionReport {
    let classified = nexus_id.map(|id| baton_planner::classify(blueprint, id));
    realize_classified(log, datastore, blueprint, nexus_id, classified).await
}

/// [`realize_blueprint`] for a Nexus that already classified `blueprint`
/// (with [`baton_planner::decide_role`]), so it is not classified twice.
pub async fn realize_as(
    log: &Logger,
    datastore: &DataStore,
    blueprint: &Blueprint,
    classification: Classification,
) -> ExecutionReport {
    let nexus_id = classification.nexus_id;
    realize_classified(
        log,
        datastore,
        blueprint,
        Some(nexus_id),
        Some(Ok(classification)),
    )
    .await
}

async fn realize_classified(
    log: &Logger,
    datastore: &DataStore,
    blueprint: &Blueprint,
    nexus_id: Option<OmicronZoneUuid>,
    classified: Option<Result<Classification, ClassifyError>>,
) -> ExecutionReport {
    let log = log.new(o!(
        "blueprint_id" => blueprint.id().to_string(),
        "nexus_id" => nexus_id.map_or("none".to_owned(), |id| id.to_string()),
    ));
    let steps = vec![
        ensure_records(&log, datastore, blueprint, classified).await,
        cleanup_records(&log, datastore, blueprint, nexus_id).await,
    ];
    for step in &steps {
        let label = if step.name == STEP_ENSURE_RECORDS {
            "ensure_records"
        } else {
            "cleanup_records"
        };
        metrics::counter!(METRIC_STEPS, "step" => label,
            "outcome" => step.outcome.as_str())
        .increment(1);
        let message = step.message.as_deref().unwrap_or("");
        match step.outcome {
            StepOutcome::Success | StepOutcome::Skipped => info!(log,
                "step done"; "step" => step.name,
                "outcome" => ?step.outcome, "message" => message),
            StepOutcome::Warning | StepOutcome::Failed => warn!(log,
                "step did not succeed"; "step" => step.name,
                "outcome" => ?step.outcome, "message" => message),
        }
    }
    ExecutionReport {
        blueprint_id: blueprint.id(),
        steps,
    }
}

fn report(
    name: &'static str,
    outcome: StepOutcome,
    message: impl Into<String>,
) -> StepReport {
    StepReport {
        name,
        outcome,
        message: Some(message.into()),
    }
}

async fn ensure_records(
    log: &Logger,
    datastore: &DataStore,
    blueprint: &Blueprint,
    classified: Option<Result<Classification, ClassifyError>>,
) -> StepReport {
    use StepOutcome::*;
    let name = STEP_ENSURE_RECORDS;
    let Some(classified) = classified else {
        // Without an identity the active generation cannot be known
        // without racing a concurrent handoff, so nothing is written.
        return report(name, Skipped, "not running as Nexus");
    };
    let classification = match classified {
        Ok(c) => c,
        Err(e) => return report(name, Warning, e.to_string()),
    };
    let records = &classification.records;
    match datastore
        .records_ensure(blueprint.id(), classification.nexus_id, records)
        .await
    {
        Ok(outcome) => {
            info!(log, "records ensured";
                "inserted" => outcome.inserted,
                "active" => records.active.len(),
                "not_yet" => records.not_yet.len());
            report(
                name,
                Success,
                format!(
                    "{} active and {} not_yet record(s) wanted \
                     (generation {}); {} inserted",
                    records.active.len(),
                    records.not_yet.len(),
                    classification.active_generation,
                    outcome.inserted
                ),
            )
        }
        Err(e) => report(name, Warning, e.to_string()),
    }
}

async fn cleanup_records(
    log: &Logger,
    datastore: &DataStore,
    blueprint: &Blueprint,
    nexus_id: Option<OmicronZoneUuid>,
) -> StepReport {
    use StepOutcome::*;
    let name = STEP_CLEANUP_RECORDS;
    let Some(nexus_id) = nexus_id else {
        // Only the generation in control deletes records, and without an
        // identity there is no telling whether this caller is in it.
        return report(name, Skipped, "not running as Nexus");
    };
    let zones = baton_planner::records_to_clean_up(blueprint);
    if zones.is_empty() {
        return report(
            name,
            Success,
            "no expunged Nexus zone is ready for cleanup",
        );
    }
    match datastore
        .records_delete_expunged(blueprint.id(), nexus_id, &zones)
        .await
    {
        Ok(deleted) => {
            info!(log, "expunged records cleaned up"; "deleted" => deleted);
            report(
                name,
                Success,
                format!(
                    "{} expunged Nexus zone(s); {deleted} record(s) deleted",
                    zones.len()
                ),
            )
        }
        Err(e) => report(name, Failed, e.to_string()),
    }
}
