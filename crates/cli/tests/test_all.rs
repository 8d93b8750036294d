//! The `baton` binary, run for real, against the contract.

mod pure_commands;
