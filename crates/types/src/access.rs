//! The facts a Nexus's start-up access decision is made from, as plain
//! data: the datastore reads them, the planner decides.

use std::cmp::Ordering;

use baton_uuid_kinds::OmicronZoneUuid;
use serde::Serialize;

use crate::NexusRecordState;

/// The database's schema compared with the one a Nexus wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaComparison {
    /// Older than wanted.
    Older,
    /// Exactly as wanted.
    UpToDate,
    /// Newer than this Nexus understands.
    Newer,
}

impl SchemaComparison {
    /// Several components' comparisons as one: newer if any component is
    /// newer, else older if any is older, else up to date.
    pub fn combined(schemas: &[SchemaFact]) -> SchemaComparison {
        let each = || schemas.iter().map(SchemaFact::comparison);
        if each().any(|c| c == SchemaComparison::Newer) {
            SchemaComparison::Newer
        } else if each().any(|c| c == SchemaComparison::Older) {
            SchemaComparison::Older
        } else {
            SchemaComparison::UpToDate
        }
    }
}

/// One component's schema: applied in the database, wanted by the build.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SchemaFact {
    /// The component (`baton` for Baton's own tables).
    pub component: String,
    /// The version applied in the database (0: none).
    pub applied: i64,
    /// The version this build wants.
    pub wanted: i64,
}

impl SchemaFact {
    /// The applied version compared with the wanted one.
    pub fn comparison(&self) -> SchemaComparison {
        match self.applied.cmp(&self.wanted) {
            Ordering::Less => SchemaComparison::Older,
            Ordering::Equal => SchemaComparison::UpToDate,
            Ordering::Greater => SchemaComparison::Newer,
        }
    }
}

/// What the access decision is made from, read in one go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessFacts {
    /// The caller's identity; `None` for a tool without one.
    pub nexus_id: Option<OmicronZoneUuid>,
    /// How many records exist.
    pub records: i64,
    /// The caller's record state, if it has a row.
    pub own_state: Option<NexusRecordState>,
    /// Each component's versions.
    pub schemas: Vec<SchemaFact>,
    /// Where the tables disagree with the recorded schema version (a
    /// table the version says exists is missing, or a table exists that
    /// no recorded version created), in words; empty when they agree.
    pub drift: Vec<String>,
}

impl AccessFacts {
    /// The schemas compared as one (see [`SchemaComparison::combined`]).
    pub fn schema(&self) -> SchemaComparison {
        SchemaComparison::combined(&self.schemas)
    }
}
