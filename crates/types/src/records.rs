//! The `db_metadata_nexus` records as plain data, for the planner and
//! for the datastore to hand back.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use baton_uuid_kinds::{BlueprintUuid, OmicronZoneUuid};
use serde::{Deserialize, Serialize};

/// A Nexus's permission to use the database.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum NexusRecordState {
    /// May use the database.
    Active,
    /// May not yet; may take over once every active Nexus has quiesced.
    NotYet,
    /// Has promised never to use the database again. Terminal.
    Quiesced,
}

impl NexusRecordState {
    /// Every state, in the order of the database enum.
    pub const ALL: [NexusRecordState; 3] = [
        NexusRecordState::Active,
        NexusRecordState::NotYet,
        NexusRecordState::Quiesced,
    ];

    /// The label used in the database and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            NexusRecordState::Active => "active",
            NexusRecordState::NotYet => "not_yet",
            NexusRecordState::Quiesced => "quiesced",
        }
    }
}

impl fmt::Display for NexusRecordState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so that table columns can set a width.
        f.pad(self.as_str())
    }
}

/// A label that is not a record state.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown db_metadata_nexus state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for NexusRecordState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NexusRecordState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// One row of `db_metadata_nexus`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NexusRecord {
    /// The Nexus zone id.
    pub nexus_id: OmicronZoneUuid,
    /// Its state.
    pub state: NexusRecordState,
    /// The target it drained against while quiescing, if it has.
    pub last_drained_blueprint_id: Option<BlueprintUuid>,
}

/// The records a Nexus executing a blueprint wants to exist: what the
/// planner decides ([`baton_planner::classify`]) and what the datastore
/// writes, one type for both.
///
/// [`baton_planner::classify`]: https://docs.rs/baton-planner
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordsToEnsure {
    /// To be inserted as `active`.
    pub active: BTreeSet<OmicronZoneUuid>,
    /// To be inserted as `not_yet`.
    pub not_yet: BTreeSet<OmicronZoneUuid>,
}

impl RecordsToEnsure {
    /// Each wanted record with its state, `active` ones first.
    pub fn iter(
        &self,
    ) -> impl Iterator<Item = (OmicronZoneUuid, NexusRecordState)> + '_ {
        let active =
            self.active.iter().map(|id| (*id, NexusRecordState::Active));
        let not_yet = self
            .not_yet
            .iter()
            .map(|id| (*id, NexusRecordState::NotYet));
        active.chain(not_yet)
    }
}
