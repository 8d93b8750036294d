//! `baton blueprint add-nexus | bump | expunge`: write a child of the
//! current target (or of a given blueprint) with one kind of change, and
//! print it as Omicron JSON or store it.
//!
//! The editing is `baton_types`' ([`Blueprint::draft_child`]); whether a
//! bump or an expungement is allowed is the planner's. This module only
//! gathers the facts (the parent, the records when there is a database)
//! and reports.

use baton_datastore::DataStore;
use baton_planner::{BumpDecision, BumpWait, ExpungeRefusal};
use baton_types::{
    AuthorError, Blueprint, ChildDraft, ChildStamp, Generation, NexusRecord,
};
use baton_uuid_kinds::{BlueprintUuid, GenericUuid, OmicronZoneUuid, SledUuid};
use camino::Utf8PathBuf;
use clap::{ArgAction, Args};

use crate::context::Context;
use crate::failure::Failure;
use crate::input::{is_file_argument, read_blueprint};
use crate::output;

/// Where the child's parent comes from, and what becomes of the child.
#[derive(Debug, Args)]
pub(crate) struct ChildArgs {
    /// The parent: a blueprint file (`-` reads stdin) or a stored
    /// blueprint's id. Default: the current target.
    #[arg(long, value_name = "FILE|ID")]
    from: Option<String>,
    /// Store the child (as `blueprint import` does) and print its id
    /// instead of its document.
    #[arg(long)]
    import: bool,
    /// With --import: also make it the current target, in the same
    /// transaction (refused, nothing is stored).
    #[arg(long, requires = "import")]
    set_target: bool,
    /// With --set-target: whether executors act on it.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    enabled: bool,
    /// The child's comment. Default: what changed.
    #[arg(long)]
    comment: Option<String>,
    /// The child's creator.
    #[arg(long, default_value = "baton-cli")]
    creator: String,
}

/// `blueprint add-nexus`.
#[derive(Debug, Args)]
pub(crate) struct AddNexusArgs {
    /// The new zones' Nexus generation. Default: one above the parent's
    /// nexus_generation.
    #[arg(long, value_parser = generation)]
    generation: Option<Generation>,
    /// How many zones, spread over the active sleds (those with the
    /// fewest zones of that generation first). Default: as many as the
    /// parent has in service at its nexus_generation.
    #[arg(long, conflicts_with = "sled")]
    count: Option<usize>,
    /// Put a zone on this sled (repeat for more; a sled named twice
    /// gets two).
    #[arg(long)]
    sled: Vec<SledUuid>,
    #[command(flatten)]
    child: ChildArgs,
}

/// `blueprint bump`.
#[derive(Debug, Args)]
pub(crate) struct BumpArgs {
    /// How many in-service Nexus zones of the next generation the bump
    /// needs. Default: as many as the parent has in service at its
    /// nexus_generation.
    #[arg(long)]
    redundancy: Option<usize>,
    #[command(flatten)]
    child: ChildArgs,
}

/// `blueprint expunge`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which")
    .required(true)
    .multiple(false)
    .args(["nexus_generation", "zone"]))]
pub(crate) struct ExpungeArgs {
    /// Expunge every Nexus zone of this generation (in service, or with
    /// --ready-for-cleanup, expunged and not yet ready).
    #[arg(long, value_parser = generation)]
    nexus_generation: Option<Generation>,
    /// Expunge this zone (repeat for more); any kind of zone.
    #[arg(long)]
    zone: Vec<OmicronZoneUuid>,
    /// Mark the zones ready for cleanup (their records may be deleted):
    /// say so only once they are shut down for good. An already
    /// expunged zone is then only marked.
    #[arg(long)]
    ready_for_cleanup: bool,
    #[command(flatten)]
    child: ChildArgs,
}

/// A generation on the command line: 1 to `i64::MAX`.
fn generation(text: &str) -> Result<Generation, String> {
    let value: u64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a generation number"))?;
    Generation::new(value).map_err(|e| e.to_string())
}

/// The parent and the database, if there is one to use.
struct Parent {
    blueprint: Blueprint,
    ds: Option<DataStore>,
}

impl Parent {
    /// The current target (needs the database), a file (the database is
    /// used if there is one), or a stored blueprint (needs it).
    fn resolve(ctx: &Context, from: Option<&str>) -> Result<Parent, Failure> {
        let (blueprint, ds) = match from {
            None => {
                let ds = ctx.datastore()?;
                let (_, bp) = ctx.block_on(async {
                    ds.target_blueprint().await.map_err(|e| match e {
                        baton_datastore::Error::NoTarget => Failure::failed(
                            "there is no current target to write a child \
                             of; pass --from FILE|ID.",
                        ),
                        other => other.into(),
                    })
                })?;
                (bp, Some(ds))
            }
            Some(arg) if is_file_argument(arg) => {
                let bp = read_blueprint(&Utf8PathBuf::from(arg))?;
                (bp, ctx.datastore_if_any()?)
            }
            Some(arg) => {
                let id: BlueprintUuid = arg.parse().map_err(|_| {
                    Failure::bad_input(format!(
                        "{arg:?} is neither a file nor a blueprint id."
                    ))
                })?;
                let ds = ctx.datastore()?;
                let bp =
                    ctx.block_on(async { Ok(ds.blueprint_read(id).await?) })?;
                (bp, Some(ds))
            }
        };
        Ok(Parent { blueprint, ds })
    }

    /// The records, when there is a database.
    fn records(
        &self,
        ctx: &Context,
    ) -> Result<Option<Vec<NexusRecord>>, Failure> {
        match &self.ds {
            Some(ds) => ctx
                .block_on(async { Ok(ds.records_list().await?) })
                .map(Some),
            None => Ok(None),
        }
    }

    /// In-service Nexus zones at the parent's nexus_generation.
    fn in_control_count(&self) -> usize {
        let top = self.blueprint.nexus_generation();
        self.blueprint
            .in_service_nexus_zones()
            .filter(|z| z.nexus_generation == top)
            .count()
    }
}

/// Fresh random ids, as Omicron makes them.
fn random_id() -> u128 {
    OmicronZoneUuid::new_v4().into_untyped_uuid().as_u128()
}

fn authoring(e: AuthorError) -> Failure {
    Failure::bad_input(sentence(e.to_string()))
}

fn sentence(text: String) -> String {
    if text.ends_with('.') {
        text
    } else {
        format!("{text}.")
    }
}

/// Says what could not be checked for want of a database.
fn not_checked(what: &str) {
    output::note(&format!(
        "note: not checked: {what}: there is no database (pass \
         --database-url, or start the local one with `baton db start`)."
    ));
}

pub(crate) fn add_nexus(
    ctx: &Context,
    args: AddNexusArgs,
) -> Result<(), Failure> {
    let parent = Parent::resolve(ctx, args.child.from.as_deref())?;
    let bp = &parent.blueprint;
    let generation = match args.generation {
        Some(g) => g,
        None => bp.nexus_generation().next().map_err(|_| {
            authoring(AuthorError::GenerationExhausted(
                "the blueprint's nexus_generation",
            ))
        })?,
    };
    let sleds = if args.sled.is_empty() {
        let count = args.count.unwrap_or_else(|| parent.in_control_count());
        if count == 0 {
            return Err(Failure::bad_input(
                "--count 0 adds nothing; ask for at least one zone.",
            ));
        }
        let sleds = baton_planner::place_nexus_zones(bp, generation, count);
        if sleds.is_empty() {
            return Err(Failure::bad_input(format!(
                "blueprint {} has no active sled to put a Nexus zone on.",
                bp.id()
            )));
        }
        sleds
    } else {
        args.sled
    };
    let mut draft = bp.draft_child().map_err(authoring)?;
    let mut ids = random_id;
    for sled in sleds {
        draft
            .add_nexus(sled, generation, &mut ids)
            .map_err(authoring)?;
    }
    finish(ctx, &parent, draft, args.child)
}

pub(crate) fn bump(ctx: &Context, args: BumpArgs) -> Result<(), Failure> {
    let parent = Parent::resolve(ctx, args.child.from.as_deref())?;
    let bp = &parent.blueprint;
    let redundancy =
        args.redundancy.unwrap_or_else(|| parent.in_control_count());
    let records = parent.records(ctx)?;
    let decision = match &records {
        Some(records) => {
            baton_planner::decide_generation_bump(bp, records, redundancy)
        }
        None => baton_planner::decide_generation_bump_without_records(
            bp, redundancy,
        ),
    };
    match decision {
        BumpDecision::Bump { to, .. } => {
            if records.is_none() {
                not_checked(&format!(
                    "whether every generation-{to} Nexus zone has a not_yet \
                     record"
                ));
            }
        }
        BumpDecision::Wait(waits) => {
            let from = bp.nexus_generation();
            return Err(Failure::failed(format!(
                "the planner will not bump blueprint {}'s nexus_generation \
                 from {from}: {}.",
                bp.id(),
                waits
                    .iter()
                    .map(BumpWait::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )));
        }
    }
    let mut draft = bp.draft_child().map_err(authoring)?;
    draft.bump_nexus_generation().map_err(authoring)?;
    finish(ctx, &parent, draft, args.child)
}

pub(crate) fn expunge(ctx: &Context, args: ExpungeArgs) -> Result<(), Failure> {
    let parent = Parent::resolve(ctx, args.child.from.as_deref())?;
    let bp = &parent.blueprint;
    let zones: Vec<OmicronZoneUuid> = match args.nexus_generation {
        Some(generation) => {
            let zones: Vec<_> = bp
                .nexus_zones()
                .filter(|z| z.nexus_generation == generation)
                .filter(|z| {
                    z.disposition.is_in_service()
                        || (args.ready_for_cleanup
                            && !z.disposition.is_ready_for_cleanup())
                })
                .map(|z| z.zone_id)
                .collect();
            if zones.is_empty() {
                return Err(Failure::bad_input(format!(
                    "blueprint {} has no Nexus zone of generation \
                     {generation} left to expunge{}.",
                    bp.id(),
                    if args.ready_for_cleanup {
                        " or mark ready for cleanup"
                    } else {
                        ""
                    }
                )));
            }
            zones
        }
        None => args.zone,
    };
    let records = parent.records(ctx)?;
    let refusals =
        baton_planner::expunge_refusals(bp, records.as_deref(), &zones);
    if !refusals.is_empty() {
        return Err(Failure::failed(format!(
            "the planner will not expunge: {}.",
            refusals
                .iter()
                .map(ExpungeRefusal::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )));
    }
    let nexus_in_service = bp
        .in_service_nexus_zones()
        .any(|z| zones.contains(&z.zone_id));
    if records.is_none() && nexus_in_service {
        not_checked(
            "whether the handoff is done (every active record of a newer \
             generation)",
        );
    }
    let mut draft = bp.draft_child().map_err(authoring)?;
    for zone in zones {
        draft
            .expunge_zone(zone, args.ready_for_cleanup)
            .map_err(authoring)?;
    }
    finish(ctx, &parent, draft, args.child)
}

/// Stamps the child and prints its document, or stores it and prints
/// its id.
fn finish(
    ctx: &Context,
    parent: &Parent,
    draft: ChildDraft<'_>,
    args: ChildArgs,
) -> Result<(), Failure> {
    let child = draft
        .finish(ChildStamp {
            id: BlueprintUuid::new_v4(),
            time_created: chrono::Utc::now(),
            creator: args.creator,
            comment: args.comment,
        })
        .map_err(authoring)?;
    if !args.import {
        output::line(child.document());
        return Ok(());
    }
    let ds = match &parent.ds {
        Some(ds) => ds,
        None => &ctx.datastore()?,
    };
    ctx.block_on(async {
        ds.blueprint_import(&child, args.set_target.then_some(args.enabled))
            .await?;
        Ok(())
    })?;
    output::line(&child.id().to_string());
    Ok(())
}
