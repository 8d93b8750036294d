//! Pure decisions of the coordinated Nexus handoff.
//!
//! Given a blueprint (and, where needed, the `db_metadata_nexus` records as
//! plain data), this crate decides which records an executing Nexus should
//! write, whether a Nexus must quiesce, whether the blueprint's generation
//! may be bumped, and which old Nexus zones may be expunged. It never does
//! I/O: the executor and the Nexus lifecycle act on its answers.
//!
//! ```
//! use baton_types::story::HandoffStory;
//!
//! // Three generation-1 Nexus zones in control, three generation-2 ones
//! // deployed, the blueprint's generation not yet bumped.
//! let story = HandoffStory::new(588);
//! let old = story.old_nexus[0];
//! let wanted = baton_planner::classify(&story.new_generation_deployed, old)
//!     .unwrap();
//! assert_eq!(wanted.active.len(), 3);
//! assert_eq!(wanted.not_yet.len(), 3);
//! // Once the generation is bumped, the old Nexus must quiesce.
//! assert!(!baton_planner::is_quiescing(&story.new_generation_deployed, old).unwrap());
//! assert!(baton_planner::is_quiescing(&story.handoff_started, old).unwrap());
//! ```

mod bump;
mod classify;
mod expunge;

pub use bump::{BumpDecision, BumpWait, decide_generation_bump};
pub use classify::{Classification, ClassifyError, classify, is_quiescing};
pub use expunge::expungeable_nexus_zones;
