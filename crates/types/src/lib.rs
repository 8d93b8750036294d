//! The blueprint model Baton reasons about, and how it is read from and
//! written to Omicron's JSON format.
//!
//! A [`Blueprint`] is the desired configuration of the whole system: sleds,
//! and on each sled its zones. This crate parses Omicron-format documents,
//! keeps the original text unchanged, and checks the rules the handoff
//! depends on ([`Blueprint::validate`]). It also writes a child blueprint
//! from its parent's document ([`Blueprint::draft_child`]): Nexus zones
//! added, the generation bumped, zones expunged. It never does I/O:
//! callers hand it text, ids and the time, and get values back.
//!
//! ```
//! use baton_types::story::HandoffStory;
//!
//! let story = HandoffStory::new(1);
//! let steady = &story.steady;
//! assert!(steady.validate().is_ok());
//! assert_eq!(steady.in_service_nexus_zones().count(), 3);
//! // The bump puts the blueprint's generation one ahead of the zones'.
//! assert!(
//!     story.handoff_started.nexus_generation()
//!         > steady.nexus_generation()
//! );
//! ```

mod access;
mod author;
mod blueprint;
mod document;
mod generation;
mod ordered;
mod parse;
mod records;
mod report;
pub mod story;
mod succession;
mod validate;

pub use access::{AccessFacts, SchemaComparison, SchemaFact};
pub use author::{AuthorError, ChildDraft, ChildStamp, Expunged, FreshIds};
pub use blueprint::{
    Blueprint, BlueprintBuilder, NexusZone, NexusZoneRef, SledConfig,
    SledState, ZoneConfig, ZoneDisposition, ZoneType,
};
pub use generation::{Generation, GenerationError};
pub use parse::{ReadError, parse_blueprint};
pub use records::{
    NexusRecord, NexusRecordState, RecordsToEnsure, UnknownState,
};
pub use report::{Held, NexusState, NexusStatus, Readiness, StoredReport};
pub use succession::{SuccessionError, SuccessionProblem};
pub use validate::{ValidationError, ValidationProblem};
