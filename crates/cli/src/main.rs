//! `baton`: the operator's command line for the coordinated Nexus handoff.
//!
//! This binary parses arguments, calls the library crates and prints what
//! they return. It holds no protocol logic of its own. Exit status: 0 on
//! success, 1 when the operation ran and failed, 2 for bad input or usage.

mod commands;
mod database;
mod demo;
mod output;
mod pure;

use std::process::ExitCode;

use clap::Parser;
use slog::{Drain, Logger, o};

use commands::Failure;

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
    if let Err(failure) = log_level() {
        output::error(&failure.message);
        return ExitCode::from(failure.status as u8);
    }
    match commands::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            output::error(&failure.message);
            ExitCode::from(failure.status as u8)
        }
    }
}

/// The async runtime for the database commands.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the runtime: {e}.")))
}

/// The log level in `BATON_LOG` (default: errors only, so that stdout
/// and stderr stay what the contract says they are); anything else set
/// there is bad input, not silently ignored.
fn log_level() -> Result<slog::Level, Failure> {
    match std::env::var("BATON_LOG") {
        Err(std::env::VarError::NotPresent) => Ok(slog::Level::Error),
        Ok(value) => match value.as_str() {
            "" | "error" => Ok(slog::Level::Error),
            "warning" | "warn" => Ok(slog::Level::Warning),
            "info" => Ok(slog::Level::Info),
            "debug" => Ok(slog::Level::Debug),
            other => Err(Failure::bad_input(format!(
                "BATON_LOG={other:?} is not a log level; use error, \
                 warning, info or debug."
            ))),
        },
        Err(std::env::VarError::NotUnicode(_)) => Err(Failure::bad_input(
            "BATON_LOG is not valid UTF-8; use error, warning, info or debug.",
        )),
    }
}

/// Logs to stderr, at the level in `BATON_LOG` (checked in `main`).
pub(crate) fn logger() -> Logger {
    let level = log_level().unwrap_or(slog::Level::Error);
    let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
    let drain = slog_term::FullFormat::new(decorator).build().fuse();
    Logger::root(drain.filter_level(level).fuse(), o!())
}
