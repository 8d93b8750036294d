//! Cross-crate integration tests: real Nexus instances handing off on a
//! real PostgreSQL, and an exhaustive model check of the protocol.

mod common;
mod exhaustive;
mod failover;
mod faults;
mod handoff;
mod model;
mod stress;
mod wakeups;
