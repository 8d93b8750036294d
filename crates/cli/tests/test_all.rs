//! The `baton` binary, run for real, against the contract.

mod database_commands;
mod pure_commands;
