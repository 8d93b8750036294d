//! The `baton` binary, run for real, against the contract.

mod authoring;
mod bad_input;
mod common;
mod database_commands;
mod interrupted_demo;
mod pure_commands;
mod readme_tour;
mod status;
mod status_failover;
