//! `baton blueprint`: read, check, store, show and target blueprints,
//! and write children of them ([`author`]).

mod author;

use baton_datastore::{DataStore, Error as DbError};
use baton_types::{Blueprint, ZoneDisposition};
use baton_uuid_kinds::{BlueprintUuid, OmicronZoneUuid, SledUuid};
use camino::Utf8PathBuf;
use clap::{ArgAction, Subcommand};
use serde::Serialize;
use tabled::Tabled;

use crate::context::Context;
use crate::failure::Failure;
use crate::input::{is_file_argument, read_blueprint};
use crate::output;

/// Read, check, store and target blueprints.
#[derive(Debug, Subcommand)]
pub(crate) enum BlueprintCommand {
    /// Parse and check a blueprint; list every problem.
    Validate {
        /// The blueprint file (`-` reads stdin).
        file: Utf8PathBuf,
    },
    /// Store a blueprint and print its id.
    Import {
        /// The blueprint file (`-` reads stdin).
        file: Utf8PathBuf,
        /// Also make it the current target.
        #[arg(long)]
        set_target: bool,
        /// With --set-target: whether executors act on it.
        #[arg(long, default_value_t = true, action = ArgAction::Set)]
        enabled: bool,
    },
    /// A blueprint's id, parent, nexus_generation and Nexus zones (id,
    /// sled, generation, disposition), from a file (`-` reads stdin) or
    /// by the id of a stored one.
    Show {
        /// A blueprint file, or a stored blueprint's id.
        blueprint: String,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Every stored blueprint, oldest first.
    List {
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// The current target.
    #[command(subcommand)]
    Target(TargetCommand),
    /// Write a child of the current target (or of --from) with new Nexus
    /// zones at a generation; print it as Omicron JSON, or --import it.
    AddNexus(author::AddNexusArgs),
    /// Write a child with the top-level nexus_generation bumped by one,
    /// if the planner allows it (the new zones in service, each with a
    /// not_yet record); print it, or --import it.
    Bump(author::BumpArgs),
    /// Write a child with zones expunged (every Nexus zone of a
    /// generation, or the zones named), if the planner allows it (the
    /// handoff past them done); print it, or --import it.
    Expunge(author::ExpungeArgs),
}

/// The current target.
#[derive(Debug, Subcommand)]
pub(crate) enum TargetCommand {
    /// Make a stored blueprint the current target.
    Set {
        /// The blueprint.
        id: BlueprintUuid,
        /// Whether executors act on it.
        #[arg(long, default_value_t = true, action = ArgAction::Set)]
        enabled: bool,
    },
    /// Show the current target.
    Show {
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(
    ctx: &Context,
    command: BlueprintCommand,
) -> Result<(), Failure> {
    match command {
        BlueprintCommand::Validate { file } => validate(&file),
        // A file (or stdin) needs no database; an id is looked up in it.
        BlueprintCommand::Show { blueprint, json }
            if is_file_argument(&blueprint) =>
        {
            let bp = read_blueprint(&Utf8PathBuf::from(blueprint))?;
            show(&bp, json);
            Ok(())
        }
        BlueprintCommand::Show { blueprint, json } => {
            let id = blueprint.parse().map_err(|_| {
                Failure::bad_input(format!(
                    "{blueprint:?} is neither a file nor a blueprint id."
                ))
            })?;
            let ds = ctx.datastore()?;
            let bp =
                ctx.block_on(async { Ok(ds.blueprint_read(id).await?) })?;
            show(&bp, json);
            Ok(())
        }
        BlueprintCommand::Import {
            file,
            set_target,
            enabled,
        } => {
            let bp = read_blueprint(&file)?;
            let ds = ctx.datastore()?;
            ctx.block_on(import(&ds, &bp, set_target, enabled))?;
            output::line(&bp.id().to_string());
            Ok(())
        }
        BlueprintCommand::List { json } => {
            let ds = ctx.datastore()?;
            ctx.block_on(list(&ds, json))
        }
        BlueprintCommand::Target(TargetCommand::Set { id, enabled }) => {
            let ds = ctx.datastore()?;
            ctx.block_on(target_set(&ds, id, enabled))
        }
        BlueprintCommand::Target(TargetCommand::Show { json }) => {
            let ds = ctx.datastore()?;
            ctx.block_on(target_show(&ds, json))
        }
        BlueprintCommand::AddNexus(args) => author::add_nexus(ctx, args),
        BlueprintCommand::Bump(args) => author::bump(ctx, args),
        BlueprintCommand::Expunge(args) => author::expunge(ctx, args),
    }
}

fn validate(path: &Utf8PathBuf) -> Result<(), Failure> {
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

/// All or nothing: a refused target change leaves the blueprint
/// unstored too.
async fn import(
    ds: &DataStore,
    bp: &Blueprint,
    set_target: bool,
    enabled: bool,
) -> Result<(), Failure> {
    ds.blueprint_import(bp, set_target.then_some(enabled))
        .await?;
    Ok(())
}

async fn list(ds: &DataStore, json: bool) -> Result<(), Failure> {
    let stored = ds.blueprint_list().await?;
    if json {
        output::json(&stored);
        return Ok(());
    }
    #[derive(Tabled)]
    struct Row {
        #[tabled(rename = "BLUEPRINT")]
        id: String,
        #[tabled(rename = "PARENT")]
        parent: String,
        #[tabled(rename = "GEN")]
        generation: i64,
        #[tabled(rename = "COMMENT")]
        comment: String,
    }
    output::line(&output::table(
        stored.iter().map(|bp| Row {
            id: bp.id.to_string(),
            parent: bp
                .parent_blueprint_id
                .map_or("none".to_owned(), |p| p.to_string()),
            generation: bp.nexus_generation,
            comment: bp.comment.clone(),
        }),
        "no blueprints stored",
    ));
    Ok(())
}

async fn target_set(
    ds: &DataStore,
    id: BlueprintUuid,
    enabled: bool,
) -> Result<(), Failure> {
    let target = ds.target_set(id, enabled).await?;
    output::line(&format!(
        "blueprint {} is the target (version {}, {})",
        target.blueprint_id,
        target.version,
        enabled_word(target.enabled)
    ));
    Ok(())
}

fn enabled_word(enabled: bool) -> &'static str {
    if enabled { "enabled" } else { "disabled" }
}

#[derive(Serialize)]
struct TargetJson {
    version: i64,
    blueprint_id: String,
    enabled: bool,
    time_made_target: String,
}

async fn target_show(ds: &DataStore, json: bool) -> Result<(), Failure> {
    let target = ds.target_current().await?.ok_or(DbError::NoTarget)?;
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
            enabled_word(target.enabled),
            target.time_made_target.to_rfc3339()
        ));
    }
    Ok(())
}

#[derive(Serialize)]
struct ShownZone {
    id: OmicronZoneUuid,
    sled_id: SledUuid,
    nexus_generation: u64,
    disposition: &'static str,
    ready_for_cleanup: Option<bool>,
}

#[derive(Tabled)]
struct ZoneRow {
    #[tabled(rename = "NEXUS ZONE")]
    id: OmicronZoneUuid,
    #[tabled(rename = "SLED")]
    sled_id: SledUuid,
    #[tabled(rename = "GEN")]
    nexus_generation: u64,
    #[tabled(rename = "DISPOSITION")]
    disposition: String,
}

impl From<&ShownZone> for ZoneRow {
    fn from(z: &ShownZone) -> Self {
        ZoneRow {
            id: z.id,
            sled_id: z.sled_id,
            nexus_generation: z.nexus_generation,
            disposition: match z.ready_for_cleanup {
                Some(true) => format!("{} (ready for cleanup)", z.disposition),
                _ => z.disposition.to_owned(),
            },
        }
    }
}

#[derive(Serialize)]
struct Shown {
    id: BlueprintUuid,
    parent_blueprint_id: Option<BlueprintUuid>,
    nexus_generation: u64,
    nexus_zones: Vec<ShownZone>,
}

/// `blueprint show`: the blueprint's identity and its Nexus zones,
/// sorted by zone id.
fn show(bp: &Blueprint, json: bool) {
    let mut zones: Vec<ShownZone> = bp
        .nexus_zones()
        .map(|z| {
            let (disposition, ready) = match z.disposition {
                ZoneDisposition::InService => ("in_service", None),
                ZoneDisposition::Expunged {
                    ready_for_cleanup, ..
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
    output::line(&output::table(
        shown.nexus_zones.iter().map(ZoneRow::from),
        "no Nexus zones",
    ));
}
