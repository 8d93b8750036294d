//! Pure decisions of the coordinated Nexus handoff.
//!
//! Given a blueprint (and, where needed, the `db_metadata_nexus` records as
//! plain data), this crate decides which records an executing Nexus should
//! write, whether a Nexus must quiesce, whether the blueprint's generation
//! may be bumped, and which old Nexus zones may be expunged. It never does
//! I/O: the executor and the Nexus lifecycle act on its answers.

mod bump;
mod classify;
mod expunge;

pub use bump::{BumpDecision, BumpWait, decide_generation_bump};
pub use classify::{Classification, ClassifyError, classify, is_quiescing};
pub use expunge::expungeable_nexus_zones;
