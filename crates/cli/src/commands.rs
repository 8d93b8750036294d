//! The command line: arguments, and which module runs each command.

use baton_uuid_kinds::{BlueprintUuid, OmicronZoneUuid};
use camino::Utf8PathBuf;
use clap::{ArgAction, Args as ClapArgs, Parser, Subcommand};

use crate::{database, demo, pure};

/// Hand control of a database safely from one Nexus generation to the next.
#[derive(Debug, Parser)]
#[command(
    name = "baton",
    version,
    about,
    after_help = "Exit status: 0 success; 1 the operation ran and failed \
(or finished with a warning or a failed step); 2 bad input or usage.\n\n\
Environment: BATON_DATABASE_URL (the database, as --database-url); \
BATON_LOG (error, the default, warning, info or debug: logs on stderr).\n\n\
Without a database URL, the database commands use the local PostgreSQL \
that `baton db start` runs in its default data directory."
)]
pub(crate) struct Args {
    /// PostgreSQL URL (a Unix socket works too:
    /// postgresql://USER@%2Fpath%2Fto%2Fdir/DB). Default: the local
    /// database started by `baton db start`, if it runs.
    #[arg(long, global = true, env = "BATON_DATABASE_URL")]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Start, stop or migrate the local database.
    #[command(subcommand)]
    Db(DbCommand),
    /// Read, check, store and target blueprints.
    #[command(subcommand)]
    Blueprint(BlueprintCommand),
    /// Show the records an executing Nexus would write for a blueprint.
    Classify {
        /// The blueprint file (`-` reads stdin).
        #[arg(long)]
        blueprint: Utf8PathBuf,
        /// The executing Nexus's zone id.
        #[arg(long)]
        nexus_id: OmicronZoneUuid,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Execute the current target (or a stored blueprint) once.
    Execute(ExecuteArgs),
    /// Read and change the db_metadata_nexus records.
    #[command(subcommand)]
    Records(RecordsCommand),
    /// Attempt the handoff as a new-generation Nexus.
    Handoff {
        /// The Nexus taking over.
        #[arg(long)]
        nexus_id: OmicronZoneUuid,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// The start-up access decision for a Nexus.
    Access {
        /// The Nexus asking.
        #[arg(long)]
        nexus_id: OmicronZoneUuid,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Rehearse a complete handoff on a throwaway PostgreSQL.
    Demo,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DbCommand {
    /// Start the local PostgreSQL (idempotent), apply migrations, print
    /// its URL.
    Start {
        /// Where it keeps its data.
        #[arg(long)]
        data_dir: Option<Utf8PathBuf>,
    },
    /// Stop the local PostgreSQL; the data stays.
    Stop {
        /// Where it keeps its data.
        #[arg(long)]
        data_dir: Option<Utf8PathBuf>,
    },
    /// Apply pending schema migrations (idempotent).
    Migrate,
}

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
}

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

#[derive(Debug, ClapArgs)]
#[group(skip)]
#[command(group = clap::ArgGroup::new("identity")
    .required(true)
    .multiple(false)
    .args(["nexus_id", "no_nexus_id"]))]
pub(crate) struct ExecuteArgs {
    /// Execute as this Nexus.
    #[arg(long)]
    pub nexus_id: Option<OmicronZoneUuid>,
    /// Execute without a Nexus identity (records are then not written).
    #[arg(long)]
    pub no_nexus_id: bool,
    /// Execute this stored blueprint instead of the current target.
    #[arg(long)]
    pub blueprint_id: Option<BlueprintUuid>,
    /// Print one JSON document.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RecordsCommand {
    /// The db_metadata_nexus table.
    List {
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Rack setup: insert these Nexus ids as active (empty table only).
    Init {
        /// A Nexus id (repeat the flag for more).
        #[arg(long = "nexus-id", required = true)]
        nexus_ids: Vec<OmicronZoneUuid>,
    },
    /// Mark a Nexus quiesced, for one that died without quiescing.
    /// Refused unless the target says it should quiesce (or --force),
    /// and, with or without --force, while a database connection with
    /// that Nexus's id as application_name is open.
    Quiesce {
        /// The Nexus.
        #[arg(long)]
        nexus_id: OmicronZoneUuid,
        /// Skip the target check (and the drain fence): dangerous.
        #[arg(long)]
        force: bool,
        /// The Nexus is dead: terminate any connection still carrying
        /// its id, then mark it.
        #[arg(long)]
        i_know_it_is_dead: bool,
    },
}

/// How a command failed: the exit status and the sentence(s) to print.
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: Status,
    pub message: String,
}

/// The contract's exit statuses other than success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    /// The operation ran and failed (or finished with a warning).
    Failed = 1,
    /// Bad input or usage.
    BadInput = 2,
}

impl Failure {
    pub(crate) fn bad_input(message: impl Into<String>) -> Failure {
        Failure {
            status: Status::BadInput,
            message: message.into(),
        }
    }

    pub(crate) fn failed(message: impl Into<String>) -> Failure {
        Failure {
            status: Status::Failed,
            message: message.into(),
        }
    }
}

pub(crate) fn run(args: Args) -> Result<(), Failure> {
    let url = args.database_url;
    match args.command {
        Command::Blueprint(BlueprintCommand::Validate { file }) => {
            pure::validate(&file)
        }
        // A file (or stdin) needs no database; an id is looked up in it.
        Command::Blueprint(BlueprintCommand::Show { blueprint, json })
            if pure::is_file_argument(&blueprint) =>
        {
            let bp = pure::read_blueprint(&Utf8PathBuf::from(blueprint))?;
            pure::show(&bp, json);
            Ok(())
        }
        Command::Classify {
            blueprint,
            nexus_id,
            json,
        } => pure::classify(&blueprint, nexus_id, json),
        Command::Demo => demo::run(url),
        other => database::run(url, other),
    }
}
