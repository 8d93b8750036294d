//! `baton`: the operator's command line for the coordinated Nexus handoff.
//!
//! This binary parses arguments, calls the library crates and prints what
//! they return. It holds no protocol logic of its own. Exit status: 0 on
//! success, 1 when the operation ran and failed, 2 for bad input or usage.

mod commands;
mod output;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = match commands::Args::try_parse() {
        Ok(args) => args,
        Err(error) => {
            // clap prints help and version to stdout with status 0, and
            // usage errors to stderr with status 2, as the contract wants.
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { 2 } else { 0 });
        }
    };
    match commands::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            output::error(&failure.message);
            ExitCode::from(failure.status as u8)
        }
    }
}
