//! Pure decisions of the coordinated Nexus handoff.
//!
//! Given a blueprint (and, where needed, the `db_metadata_nexus` records and
//! other facts as plain data), this crate makes every protocol decision:
//! whether a Nexus may use the database, which records an executing Nexus
//! should write, whether it must quiesce, when its peers have drained,
//! which records the cleanup deletes, when an operator may mark a Nexus
//! quiesced, whether the blueprint's generation may be bumped, which
//! old Nexus zones may be expunged (and why not), and where new Nexus
//! zones go. It never does I/O: the executor, the
//! Nexus lifecycle and the CLI gather the facts and act on its answers.
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
//! assert_eq!(wanted.records.active.len(), 3);
//! assert_eq!(wanted.records.not_yet.len(), 3);
//! // Once the generation is bumped, the old Nexus must quiesce.
//! assert!(!baton_planner::is_quiescing(&story.new_generation_deployed, old).unwrap());
//! assert!(baton_planner::is_quiescing(&story.handoff_started, old).unwrap());
//! ```

mod access;
mod bump;
mod classify;
mod expunge;
mod place;
mod quiesce;
mod status;

pub use access::{Access, AccessDecision, decide_access};
pub use bump::{
    BumpDecision, BumpWait, decide_generation_bump,
    decide_generation_bump_without_records,
};
pub use classify::{
    Classification, ClassifyError, Role, classify, decide_role, is_quiescing,
};
pub use expunge::{ExpungeRefusal, expunge_refusals, expungeable_nexus_zones};
pub use place::place_nexus_zones;
pub use quiesce::{
    PeerDrain, QuiesceRefusal, peers_drained, quiesce_allowed,
    records_to_clean_up,
};
pub use status::database_not_answering;
pub use status::{
    STALE_AFTER_INTERVALS, Shown, StatusFacts, Wait, Waiting,
    generation_in_control, human_age, shown, waiting_on,
};
