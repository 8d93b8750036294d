//! The commands that use the database.

use std::collections::BTreeSet;
use std::time::Duration;

use baton_datastore::{DataStore, Error as DbError};
use baton_dev_db::{PersistentDb, default_data_dir};
use baton_executor::{StepOutcome, realize_blueprint};
use baton_types::{Blueprint, NexusRecord};
use baton_uuid_kinds::OmicronZoneUuid;
use serde::Serialize;
use slog::Logger;

use crate::commands::{
    BlueprintCommand, Command, DbCommand, ExecuteArgs, Failure, RecordsCommand,
    TargetCommand,
};
use crate::{output, pure};

/// Runs a database command on a fresh runtime.
pub(crate) fn run(
    url: Option<String>,
    command: Command,
) -> Result<(), Failure> {
    let runtime = crate::runtime()?;
    let log = crate::logger();
    runtime.block_on(async move {
        match command {
            Command::Db(db) => db_command(&log, url, db).await,
            command => {
                let url = resolve_url(url)?;
                let ds = DataStore::new(&log, &url);
                dispatch(&log, &ds, command).await
            }
        }
    })
}

/// The URL given, else the local database if it runs, else a sentence
/// saying how to get one.
fn resolve_url(url: Option<String>) -> Result<String, Failure> {
    if let Some(url) = url {
        return Ok(url);
    }
    let local = PersistentDb::new(default_data_dir());
    if local.is_running().unwrap_or(false) {
        return Ok(local.url());
    }
    Err(Failure::bad_input(format!(
        "no database to use: pass --database-url URL (or set \
         BATON_DATABASE_URL), or start the local one with `baton db start` \
         (data directory {})",
        local.dir()
    )))
}

/// Unknown ids are bad input (2); everything else that the operation ran
/// into is a failure (1).
fn failure(e: DbError) -> Failure {
    match e {
        DbError::BlueprintNotFound(_) | DbError::NotRegistered(_) => {
            Failure::bad_input(format!("{e}."))
        }
        e => Failure::failed(format!("{e}.")),
    }
}

async fn db_command(
    log: &Logger,
    url: Option<String>,
    command: DbCommand,
) -> Result<(), Failure> {
    let local = |dir: Option<camino::Utf8PathBuf>| {
        PersistentDb::new(dir.unwrap_or_else(default_data_dir))
    };
    match command {
        DbCommand::Start { data_dir } => {
            let db = local(data_dir);
            let url =
                db.start().map_err(|e| Failure::failed(format!("{e}.")))?;
            DataStore::new(log, &url).migrate().await.map_err(failure)?;
            output::line(&url);
        }
        DbCommand::Stop { data_dir } => {
            let db = local(data_dir);
            let was_running =
                db.stop().map_err(|e| Failure::failed(format!("{e}.")))?;
            output::line(&if was_running {
                format!("stopped the local PostgreSQL in {}", db.dir())
            } else {
                format!("no local PostgreSQL runs in {}", db.dir())
            });
        }
        DbCommand::Migrate => {
            let url = resolve_url(url)?;
            let version =
                DataStore::new(log, &url).migrate().await.map_err(failure)?;
            output::line(&format!("schema version {version}"));
        }
    }
    Ok(())
}

async fn dispatch(
    log: &Logger,
    ds: &DataStore,
    command: Command,
) -> Result<(), Failure> {
    match command {
        Command::Blueprint(BlueprintCommand::Import {
            file,
            set_target,
            enabled,
        }) => {
            let bp = pure::read_blueprint(&file)?;
            if set_target {
                check_follows_target(ds, &bp).await?;
            }
            ds.blueprint_insert(&bp).await.map_err(failure)?;
            if set_target {
                ds.target_set(bp.id(), enabled).await.map_err(failure)?;
            }
            output::line(&bp.id().to_string());
        }
        Command::Blueprint(BlueprintCommand::Show { blueprint, json }) => {
            let id = blueprint.parse().map_err(|_| {
                Failure::bad_input(format!(
                    "{blueprint:?} is neither a file nor a blueprint id."
                ))
            })?;
            let bp = ds.blueprint_read(id).await.map_err(failure)?;
            pure::show(&bp, json);
        }
        Command::Blueprint(BlueprintCommand::List { json }) => {
            let stored = ds.blueprint_list().await.map_err(failure)?;
            if json {
                output::json(&stored);
            } else {
                for bp in &stored {
                    let parent = bp
                        .parent_blueprint_id
                        .map_or("none".to_owned(), |p| p.to_string());
                    output::line(&format!(
                        "{}  parent {parent}  generation {}  {}",
                        bp.id, bp.nexus_generation, bp.comment
                    ));
                }
            }
        }
        Command::Blueprint(BlueprintCommand::Target(TargetCommand::Set {
            id,
            enabled,
        })) => {
            match ds.blueprint_read(id).await {
                Ok(bp) => check_follows_target(ds, &bp).await?,
                // An unknown id: the datastore says so below.
                Err(DbError::BlueprintNotFound(_)) => {}
                Err(e) => return Err(failure(e)),
            }
            let target = ds.target_set(id, enabled).await.map_err(failure)?;
            output::line(&format!(
                "blueprint {} is the target (version {}, {})",
                target.blueprint_id,
                target.version,
                if target.enabled {
                    "enabled"
                } else {
                    "disabled"
                }
            ));
        }
        Command::Blueprint(BlueprintCommand::Target(TargetCommand::Show {
            json,
        })) => {
            let target = ds
                .target_current()
                .await
                .map_err(failure)?
                .ok_or_else(|| failure(DbError::NoTarget))?;
            if json {
                output::json(&TargetJson {
                    version: target.version,
                    blueprint_id: target.blueprint_id.to_string(),
                    enabled: target.enabled,
                    time_made_target: target.time_made_target.to_rfc3339(),
                });
            } else {
                output::line(&format!(
                    "target: blueprint {} (version {}, {}, since {})",
                    target.blueprint_id,
                    target.version,
                    if target.enabled {
                        "enabled"
                    } else {
                        "disabled"
                    },
                    target.time_made_target.to_rfc3339()
                ));
            }
        }
        Command::Execute(args) => execute(log, ds, args).await?,
        Command::Records(RecordsCommand::List { json }) => {
            let records = ds.records_list().await.map_err(failure)?;
            if json {
                output::json(
                    &records.iter().map(RecordJson::from).collect::<Vec<_>>(),
                );
            } else {
                let target = ds.target_blueprint().await.ok().map(|(_, bp)| bp);
                output::line(&output::records_table(&records, target.as_ref()));
            }
        }
        Command::Records(RecordsCommand::Init { nexus_ids }) => {
            let ids: BTreeSet<OmicronZoneUuid> =
                nexus_ids.into_iter().collect();
            ds.records_initialize(&ids).await.map_err(failure)?;
            output::line(&format!(
                "initialized {} active record(s)",
                ids.len()
            ));
        }
        Command::Records(RecordsCommand::Quiesce {
            nexus_id,
            force,
            i_know_it_is_dead,
        }) => {
            if !force {
                quiesce_allowed(ds, nexus_id).await?;
            }
            not_connected(ds, nexus_id, i_know_it_is_dead).await?;
            ds.record_mark_quiesced(nexus_id).await.map_err(failure)?;
            output::line(&format!("Nexus {nexus_id} is quiesced"));
        }
        Command::Handoff { nexus_id, json } => {
            let result = ds.attempt_handoff(nexus_id).await;
            if json {
                output::json(&HandoffJson {
                    nexus_id: nexus_id.to_string(),
                    handed_off: result.is_ok(),
                    promoted: result.as_ref().ok().copied(),
                    reason: result.as_ref().err().map(|e| e.to_string()),
                });
            }
            let promoted = result.map_err(failure)?;
            if !json {
                output::line(&format!(
                    "handoff done: {promoted} Nexus record(s) are now active"
                ));
            }
        }
        Command::Access { nexus_id, json } => {
            let facts = ds
                .access_facts_for(Some(nexus_id), &[])
                .await
                .map_err(failure)?;
            let (decision, reason) = baton_planner::decide_access(&facts);
            if json {
                output::json(&AccessJson {
                    nexus_id: nexus_id.to_string(),
                    decision: decision.as_str(),
                    reason,
                });
            } else {
                output::line(&format!("{}: {reason}", decision.as_str()));
            }
        }
        // `commands::run` sends these elsewhere before a database is
        // opened.
        Command::Db(_)
        | Command::Classify { .. }
        | Command::Demo
        | Command::Blueprint(BlueprintCommand::Validate { .. }) => {
            unreachable!("handled without a datastore")
        }
    }
    Ok(())
}

/// The guard on `records quiesce`, with or without `--force`: a Nexus
/// whose id is the `application_name` of an open connection is alive
/// (every Nexus connection carries it), and marking a live Nexus
/// `quiesced` would let two generations write at once. With
/// `--i-know-it-is-dead`, those connections are terminated first, and
/// the mark waits until the server has closed them.
async fn not_connected(
    ds: &DataStore,
    nexus_id: OmicronZoneUuid,
    i_know_it_is_dead: bool,
) -> Result<(), Failure> {
    let backends = ds.backends_of(nexus_id).await.map_err(failure)?;
    if backends.is_empty() {
        return Ok(());
    }
    let evidence: Vec<String> = backends
        .iter()
        .map(|b| {
            format!(
                "backend pid {} from {} connected {}",
                b.pid,
                b.client_addr.as_deref().unwrap_or("a local socket"),
                b.backend_start.map_or(
                    "at an unknown time".to_owned(),
                    |t| format!("at {}", t.format("%Y-%m-%dT%H:%M:%SZ"))
                )
            )
        })
        .collect();
    if !i_know_it_is_dead {
        return Err(Failure::failed(format!(
            "refused to mark Nexus {nexus_id} quiesced: it looks alive, with \
             {} open database connection(s) carrying its id ({}). Stop it \
             first; if it is really dead, --i-know-it-is-dead terminates \
             those connections and then marks it.",
            backends.len(),
            evidence.join("; ")
        )));
    }
    let ended = ds.terminate_backends_of(nexus_id).await.map_err(failure)?;
    output::note(&format!(
        "terminated {ended} connection(s) of Nexus {nexus_id}; waiting for \
         the server to close them"
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = ds.backends_of(nexus_id).await.map_err(failure)?;
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
async fn quiesce_allowed(
    ds: &DataStore,
    nexus_id: OmicronZoneUuid,
) -> Result<(), Failure> {
    let refused = |why: String| {
        Failure::failed(format!(
            "refused to mark Nexus {nexus_id} quiesced: {why}; use --force \
             to bypass (dangerous: it skips the drain fence)."
        ))
    };
    let (_, bp) = ds
        .target_blueprint()
        .await
        .map_err(|e| refused(e.to_string()))?;
    baton_planner::quiesce_allowed(&bp, nexus_id)
        .map_err(|e| refused(e.to_string()))
}

async fn execute(
    log: &Logger,
    ds: &DataStore,
    args: ExecuteArgs,
) -> Result<(), Failure> {
    let bp: Blueprint = match args.blueprint_id {
        Some(id) => ds.blueprint_read(id).await.map_err(failure)?,
        None => ds.target_blueprint().await.map_err(failure)?.1,
    };
    let report = realize_blueprint(log, ds, &bp, args.nexus_id).await;
    if args.json {
        output::json(&report);
    } else {
        output::line(&format!("executed blueprint {}", report.blueprint_id));
        for step in &report.steps {
            output::line(&format!(
                "  {:<8} {}: {}",
                format!("{:?}", step.outcome).to_lowercase(),
                step.name,
                step.message.as_deref().unwrap_or("")
            ));
        }
    }
    if report.is_clean() {
        Ok(())
    } else {
        let failed: Vec<String> = report
            .steps
            .iter()
            .filter(|s| {
                !matches!(
                    s.outcome,
                    StepOutcome::Success | StepOutcome::Skipped
                )
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
}

/// Refuses, as bad input and before anything is written, a child of the
/// current target that breaks from it: an expunged zone back in service, a
/// relabelled Nexus generation, a generation moved by more than one. (A
/// blueprint that is not a child of the target is the datastore's to
/// refuse.)
async fn check_follows_target(
    ds: &DataStore,
    bp: &Blueprint,
) -> Result<(), Failure> {
    let current = match ds.target_blueprint().await {
        Ok((_, current)) => current,
        Err(DbError::NoTarget) => return Ok(()),
        Err(e) => return Err(failure(e)),
    };
    if bp.parent_blueprint_id() != Some(current.id()) {
        return Ok(());
    }
    bp.check_follows(&current)
        .map_err(|e| Failure::bad_input(format!("{e}")))
}

#[derive(Serialize)]
struct TargetJson {
    version: i64,
    blueprint_id: String,
    enabled: bool,
    time_made_target: String,
}

#[derive(Serialize)]
struct RecordJson {
    nexus_id: String,
    state: &'static str,
    last_drained_blueprint_id: Option<String>,
}

impl From<&NexusRecord> for RecordJson {
    fn from(r: &NexusRecord) -> Self {
        RecordJson {
            nexus_id: r.nexus_id.to_string(),
            state: r.state.as_str(),
            last_drained_blueprint_id: r
                .last_drained_blueprint_id
                .map(|id| id.to_string()),
        }
    }
}

#[derive(Serialize)]
struct HandoffJson {
    nexus_id: String,
    handed_off: bool,
    promoted: Option<usize>,
    reason: Option<String>,
}

#[derive(Serialize)]
struct AccessJson {
    nexus_id: String,
    decision: &'static str,
    reason: String,
}
