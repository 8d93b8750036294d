//! Cross-crate integration tests: real Nexus instances handing off on a
//! real PostgreSQL.

mod common;
mod failover;
mod faults;
mod handoff;
mod model;
mod stress;
mod wakeups;
