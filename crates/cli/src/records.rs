//! `baton records`: read and change the `db_metadata_nexus` records.

use std::collections::BTreeSet;
use std::time::Duration;

use baton_datastore::{DataStore, Error as DbError, Reports};
use baton_types::{Blueprint, NexusRecord, StoredReport};
use baton_uuid_kinds::OmicronZoneUuid;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde::Serialize;

use crate::context::Context;
use crate::failure::Failure;
use crate::output;

/// Read and change the db_metadata_nexus records.
#[derive(Debug, Subcommand)]
pub(crate) enum RecordsCommand {
    /// The db_metadata_nexus table, with each Nexus's generation in the
    /// current target.
    List {
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Rack setup: insert these Nexus ids as active (empty table only;
    /// exactly these rows, all active, is success: a retry).
    Init {
        /// A Nexus id (repeat the flag for more).
        #[arg(long = "nexus-id", required = true)]
        nexus_ids: Vec<OmicronZoneUuid>,
    },
    /// Mark Nexus instances quiesced, for ones that stopped answering
    /// without quiescing. Safe whether such a Nexus is dead, paused or
    /// cut off: the database fences it (the mark ends its fenced
    /// database sessions and commits only once none is left, and any
    /// session it opens afterwards is refused), so nothing it runs can
    /// commit after the mark, whenever it wakes up. Refused unless the
    /// target says each should quiesce (or --force), and, with or
    /// without --force, while it reported its status within the last
    /// report interval (5 s): that one is alive and should quiesce
    /// itself. Every id is checked before any is marked.
    Quiesce {
        /// A Nexus id (repeat the flag for more).
        #[arg(long = "nexus-id", required = true)]
        nexus_ids: Vec<OmicronZoneUuid>,
        /// Skip the target check: for a Nexus that must go although the
        /// target does not put it behind. The database fence still
        /// holds; its in-flight work is cut off, not drained.
        #[arg(long)]
        force: bool,
        /// Mark it even though it reported recently (it looks alive),
        /// and end every connection carrying its id too.
        #[arg(long)]
        i_know_it_is_dead: bool,
    },
}

pub(crate) fn run(
    ctx: &Context,
    command: RecordsCommand,
) -> Result<(), Failure> {
    let ds = ctx.datastore()?;
    ctx.block_on(async {
        match command {
            RecordsCommand::List { json } => list(&ds, json).await,
            RecordsCommand::Init { nexus_ids } => {
                let ids: BTreeSet<OmicronZoneUuid> =
                    nexus_ids.into_iter().collect();
                ds.records_initialize(&ids).await?;
                output::line(&format!(
                    "initialized {} active record(s)",
                    ids.len()
                ));
                Ok(())
            }
            RecordsCommand::Quiesce {
                nexus_ids,
                force,
                i_know_it_is_dead,
            } => {
                let ids: BTreeSet<OmicronZoneUuid> =
                    nexus_ids.into_iter().collect();
                quiesce(&ds, &ids, force, i_know_it_is_dead).await
            }
        }
    })
}

#[derive(Serialize)]
struct RecordJson {
    nexus_id: String,
    state: &'static str,
    /// The zone's generation in the current target; null when there is
    /// no target or it does not list the zone.
    generation: Option<u64>,
    last_drained_blueprint_id: Option<String>,
}

async fn list(ds: &DataStore, json: bool) -> Result<(), Failure> {
    let records = ds.records_list().await?;
    // Only for the generation column: a table without a target is fine.
    let target = ds.target_blueprint().await.ok().map(|(_, bp)| bp);
    if json {
        let rows: Vec<RecordJson> = records
            .iter()
            .map(|r: &NexusRecord| RecordJson {
                nexus_id: r.nexus_id.to_string(),
                state: r.state.as_str(),
                generation: output::generation_of(target.as_ref(), r.nexus_id),
                last_drained_blueprint_id: r
                    .last_drained_blueprint_id
                    .map(|id| id.to_string()),
            })
            .collect();
        output::json(&rows);
    } else {
        output::line(&output::records_table(&records, target.as_ref()));
    }
    Ok(())
}

async fn quiesce(
    ds: &DataStore,
    ids: &BTreeSet<OmicronZoneUuid>,
    force: bool,
    i_know_it_is_dead: bool,
) -> Result<(), Failure> {
    // Every check first, so that a refusal marks none of them; what the
    // checks read is read once for all the ids.
    let target = if force {
        None
    } else {
        Some(ds.target_blueprint().await.map(|(_, bp)| bp))
    };
    let reports = if i_know_it_is_dead {
        None
    } else {
        Some((ds.reports_list().await?, ds.database_now().await?))
    };
    for &id in ids {
        if let Some(target) = &target {
            quiesce_allowed(target, id)?;
        }
        if let Some((reports, now)) = &reports {
            not_reporting(reports, *now, id)?;
        }
    }
    for &id in ids {
        if i_know_it_is_dead {
            terminate(ds, id).await?;
        }
        let ended = ds.record_mark_quiesced(id).await?;
        output::line(&format!("Nexus {id} is quiesced"));
        output::note(&format!(
            "the database fences Nexus {id} out: {ended} of its fenced \
             session(s) ended, and nothing it runs can commit now"
        ));
    }
    Ok(())
}

/// The guard on `records quiesce`, with or without `--force`: a Nexus
/// that wrote its status report within the last report interval is
/// alive and should quiesce itself. Open connections are no reason to
/// refuse: a paused or cut-off process keeps them on the server, and the
/// mark ends its fenced ones itself.
fn not_reporting(
    reports: &Reports,
    now: DateTime<Utc>,
    nexus_id: OmicronZoneUuid,
) -> Result<(), Failure> {
    let interval = baton_nexus::Periods::default().report;
    // A report that cannot be read still says when it came.
    let Some(reported_at) = reports.reported_at(nexus_id) else {
        return Ok(());
    };
    let ago = (now - reported_at).num_milliseconds().max(0) as u64;
    if u128::from(ago) > interval.as_millis() {
        return Ok(());
    }
    let phase = match reports
        .readable
        .iter()
        .find(|r| r.report.nexus_id == nexus_id)
    {
        Some(StoredReport { report, .. }) => match report.state.step() {
            Some(step) => format!("{} step {step}", report.state.label()),
            None => report.state.label().to_owned(),
        },
        None => "an unreadable report".to_owned(),
    };
    Err(Failure::failed(format!(
        "refused to mark Nexus {nexus_id} quiesced: it looks alive, having \
         reported its status {} ago (at {}, {}), so it should quiesce \
         itself; --i-know-it-is-dead marks it anyway (safe: the database \
         fences it).",
        baton_planner::human_age(ago),
        reported_at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        phase
    )))
}

/// With `--i-know-it-is-dead`: also terminates the connections carrying
/// `nexus_id` that the fence does not end (its listener, its reporter)
/// and waits until the server has closed them.
async fn terminate(
    ds: &DataStore,
    nexus_id: OmicronZoneUuid,
) -> Result<(), Failure> {
    if ds.backends_of(nexus_id).await?.is_empty() {
        return Ok(());
    }
    let ended = ds.terminate_backends_of(nexus_id).await?;
    output::note(&format!(
        "terminated {ended} connection(s) of Nexus {nexus_id}; waiting for \
         the server to close them"
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = ds.backends_of(nexus_id).await?;
        if left.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            return Err(Failure::failed(format!(
                "refused to mark Nexus {nexus_id} quiesced: {} of its \
                 connection(s) are still open 10 s after being terminated \
                 (pids {}).",
                left.len(),
                left.iter()
                    .map(|b| b.pid.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The contract's guard on `records quiesce` without `--force`: the
/// planner allows it only when the current target shows this Nexus's
/// generation below the blueprint's.
fn quiesce_allowed(
    target: &Result<Blueprint, DbError>,
    nexus_id: OmicronZoneUuid,
) -> Result<(), Failure> {
    let refused = |why: String| {
        Failure::failed(format!(
            "refused to mark Nexus {nexus_id} quiesced: {why}; use --force \
             to bypass (its in-flight work is cut off rather than drained; \
             the database fence still holds)."
        ))
    };
    let bp = target.as_ref().map_err(|e| refused(e.to_string()))?;
    baton_planner::quiesce_allowed(bp, nexus_id)
        .map_err(|e| refused(e.to_string()))
}
