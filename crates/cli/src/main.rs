//! `baton`: the operator's command line for the coordinated Nexus handoff.
//!
//! This binary parses arguments, calls the library crates and prints what
//! they return. It holds no protocol logic of its own. Each command group
//! is one module with its arguments and its `run`; the modules below them
//! (`context`, `failure`, `input`, `output`) import none of the groups, so
//! no module imports one that imports it back.

mod access;
mod blueprint;
mod classify;
mod context;
mod db;
mod demo;
mod execute;
mod failure;
mod handoff;
mod input;
mod output;
mod records;
mod status;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use context::Context;
use failure::Failure;

/// Hand control of a database safely from one Nexus generation to the next.
#[derive(Debug, Parser)]
#[command(
    name = "baton",
    version,
    about,
    after_help = "Exit status: 0 success; 1 the operation ran and failed \
(or finished with a warning or a failed step); 2 bad input or usage.\n\n\
Environment: BATON_DATABASE_URL (the database, as --database-url); \
BATON_LOG (error, the default, warning, info or debug: logs on stderr); \
BATON_DATA_DIR (the local database's data directory).\n\n\
Without a database URL, the database commands use the local PostgreSQL \
that `baton db start` runs in its default data directory ($BATON_DATA_DIR, \
else /var/lib/baton/db for root, else ~/.local/share/baton/db)."
)]
struct Args {
    /// PostgreSQL URL (a Unix socket works too:
    /// postgresql://USER@%2Fpath%2Fto%2Fdir/DB). Default: the local
    /// database started by `baton db start`, if it runs.
    #[arg(long, global = true, env = "BATON_DATABASE_URL")]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(subcommand)]
    Db(db::DbCommand),
    #[command(subcommand)]
    Blueprint(blueprint::BlueprintCommand),
    Classify(classify::ClassifyArgs),
    Execute(execute::ExecuteArgs),
    #[command(subcommand)]
    Records(records::RecordsCommand),
    Handoff(handoff::HandoffArgs),
    Access(access::AccessArgs),
    Status(status::StatusArgs),
    /// Rehearse a complete handoff on a throwaway PostgreSQL that it
    /// starts and removes itself (not the local database); with
    /// --database-url, on that database instead, which must be empty
    /// (the rehearsal leaves its state there).
    Demo,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error) => {
            // clap prints help and version to stdout with status 0, and
            // usage errors to stderr with status 2, as the contract wants.
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { 2 } else { 0 });
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            output::error(&failure.message);
            ExitCode::from(failure.status as u8)
        }
    }
}

fn run(args: Args) -> Result<(), Failure> {
    // `db start` and `db stop` act on the local database only: a URL given
    // on their command line would be silently ignored, so it is refused
    // (one in the environment is for the other commands, and stays).
    let flagged = std::env::args()
        .any(|a| a == "--database-url" || a.starts_with("--database-url="));
    if let (true, Command::Db(command)) = (flagged, &args.command)
        && let Some(name) = command.local_only()
    {
        return Err(Failure::bad_input(format!(
            "`baton db {name}` acts on the local PostgreSQL only and takes \
             no --database-url (it would be ignored); drop the flag, or \
             give --data-dir DIR for another local one."
        )));
    }
    let ctx = Context::new(args.database_url)?;
    match args.command {
        Command::Db(command) => db::run(&ctx, command),
        Command::Blueprint(command) => blueprint::run(&ctx, command),
        Command::Classify(args) => classify::run(args),
        Command::Execute(args) => execute::run(&ctx, args),
        Command::Records(command) => records::run(&ctx, command),
        Command::Handoff(args) => handoff::run(&ctx, args),
        Command::Access(args) => access::run(&ctx, args),
        Command::Status(args) => status::run(&ctx, args),
        Command::Demo => demo::run(&ctx),
    }
}
