//! The start-up access check: may this Nexus use the database?
//!
//! The decision is a pure function of facts read in one statement (the
//! caller's record, whether any record exists, the schema version), so the
//! whole table is tested cell by cell without a database as well as with.

use std::cmp::Ordering;

use baton_types::NexusRecordState;
use baton_uuid_kinds::{GenericUuid, OmicronZoneUuid};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Nullable, Text, Uuid};
use serde::Serialize;

use crate::statement::{Bind, load_one, statement};
use crate::{
    BATON_COMPONENT, DataStore, Error, SCHEMA_VERSION, SchemaComponent,
};

/// What a Nexus should do at start-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessDecision {
    /// Use the database.
    Ready,
    /// Its record is `not_yet`: attempt the handoff first.
    NeedsHandoff,
    /// It has no record yet while others do: wait and check again.
    TryLater,
    /// The schema is older than it wants: apply migrations first.
    UpdateSchema,
    /// Never use this database (quiesced, or a schema from the future).
    Refuse,
}

impl AccessDecision {
    /// The label used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessDecision::Ready => "ready",
            AccessDecision::NeedsHandoff => "needs_handoff",
            AccessDecision::TryLater => "try_later",
            AccessDecision::UpdateSchema => "update_schema",
            AccessDecision::Refuse => "refuse",
        }
    }
}

/// The database's schema compared with the one this Nexus wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SchemaComparison {
    /// Older than wanted.
    Older,
    /// Exactly as wanted.
    UpToDate,
    /// Newer than this Nexus understands.
    Newer,
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
    fn comparison(&self) -> SchemaComparison {
        match self.applied.cmp(&self.wanted) {
            Ordering::Less => SchemaComparison::Older,
            Ordering::Equal => SchemaComparison::UpToDate,
            Ordering::Greater => SchemaComparison::Newer,
        }
    }
}

/// What the access decision is made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessFacts {
    /// The caller's identity; `None` for a tool without one.
    pub nexus_id: Option<OmicronZoneUuid>,
    /// How many records exist.
    pub records: i64,
    /// The caller's record state, if it has a row.
    pub own_state: Option<NexusRecordState>,
    /// The schema compared with what the caller wants: newer if any
    /// component is newer, else older if any is older.
    pub schema: SchemaComparison,
    /// Each component's versions, for the reason.
    pub schemas: Vec<SchemaFact>,
}

fn combined(schemas: &[SchemaFact]) -> SchemaComparison {
    let each = || schemas.iter().map(SchemaFact::comparison);
    if each().any(|c| c == SchemaComparison::Newer) {
        SchemaComparison::Newer
    } else if each().any(|c| c == SchemaComparison::Older) {
        SchemaComparison::Older
    } else {
        SchemaComparison::UpToDate
    }
}

/// The components that differ, in words: "ledger at 1, wanted 2".
fn differing(facts: &AccessFacts) -> String {
    let parts: Vec<String> = facts
        .schemas
        .iter()
        .filter(|s| s.applied != s.wanted)
        .map(|s| {
            format!("{} at {}, wanted {}", s.component, s.applied, s.wanted)
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    }
}

/// The protocol's decision table, with the reason in words.
pub fn decide_access(facts: &AccessFacts) -> (AccessDecision, String) {
    use AccessDecision::*;
    use SchemaComparison::*;
    if facts.schema == Newer {
        return (
            Refuse,
            format!(
                "the database schema is newer than this Nexus understands{}",
                differing(facts)
            ),
        );
    }
    let schema_ok = |why: &str| match facts.schema {
        UpToDate => (Ready, format!("{why}, and the schema is up to date")),
        _ => (
            UpdateSchema,
            format!(
                "{why}, but the schema is older than wanted{}",
                differing(facts)
            ),
        ),
    };
    let Some(nexus_id) = facts.nexus_id else {
        return schema_ok("no Nexus identity (record check skipped)");
    };
    match facts.own_state {
        None if facts.records == 0 => {
            schema_ok("the record table is empty (a fresh system)")
        }
        None => (
            TryLater,
            format!(
                "Nexus {nexus_id} has no record yet while {} other(s) exist",
                facts.records
            ),
        ),
        Some(NexusRecordState::NotYet) => (
            NeedsHandoff,
            format!("Nexus {nexus_id} is not_yet: it must take over first"),
        ),
        Some(NexusRecordState::Active) => {
            schema_ok(&format!("Nexus {nexus_id} is active"))
        }
        Some(NexusRecordState::Quiesced) => (
            Refuse,
            format!("Nexus {nexus_id} is quiesced and may never return"),
        ),
    }
}

#[derive(QueryableByName)]
struct FactsRow {
    #[diesel(sql_type = BigInt)]
    records: i64,
    #[diesel(sql_type = Nullable<Text>)]
    own_state: Option<String>,
}

impl DataStore {
    /// Reads the facts and decides, for `nexus_id` (or for a tool without
    /// an identity), against this build's version of Baton's tables only
    /// (what the `baton` CLI checks).
    pub async fn check_access(
        &self,
        nexus_id: Option<OmicronZoneUuid>,
    ) -> Result<(AccessDecision, String), Error> {
        self.check_access_with(nexus_id, &[]).await
    }

    /// Reads the facts and decides, against this build's version of
    /// Baton's tables and of each service component.
    pub async fn check_access_with(
        &self,
        nexus_id: Option<OmicronZoneUuid>,
        components: &[SchemaComponent],
    ) -> Result<(AccessDecision, String), Error> {
        let mut wanted = vec![(BATON_COMPONENT.to_owned(), SCHEMA_VERSION)];
        wanted.extend(
            components
                .iter()
                .map(|c| (c.name().to_owned(), c.wanted_version())),
        );
        let facts = self.access_facts(nexus_id, &wanted).await?;
        Ok(decide_access(&facts))
    }

    /// The facts, against the wanted version of each component (Baton's
    /// own is named [`BATON_COMPONENT`]).
    pub async fn access_facts(
        &self,
        nexus_id: Option<OmicronZoneUuid>,
        wanted: &[(String, i64)],
    ) -> Result<AccessFacts, Error> {
        let version = self.schema_version().await?;
        let mut schemas = Vec::with_capacity(wanted.len());
        for (component, wanted) in wanted {
            let applied = if component == BATON_COMPONENT {
                version
            } else {
                self.component_version(component).await?
            };
            schemas.push(SchemaFact {
                component: component.clone(),
                applied,
                wanted: *wanted,
            });
        }
        let schema = combined(&schemas);
        if version == 0 {
            // No schema at all: there is no record table to read.
            return Ok(AccessFacts {
                nexus_id,
                records: 0,
                own_state: None,
                schema,
                schemas,
            });
        }
        let raw = nexus_id.map(GenericUuid::into_untyped_uuid);
        let row: FactsRow = self
            .retrying("access facts", |conn| {
                Box::pin(
                    load_one(statement(
                        "SELECT (SELECT count(*) FROM db_metadata_nexus) AS records,
                            (SELECT state::TEXT FROM db_metadata_nexus
                             WHERE nexus_id = $1) AS own_state",
                    )
                    .bind::<Nullable<Uuid>, _>(raw)
                    , conn),
                )
            })
            .await?;
        let own_state = row
            .own_state
            .map(|s| s.parse())
            .transpose()
            .map_err(|e| Error::Schema(format!("{e}")))?;
        Ok(AccessFacts {
            nexus_id,
            records: row.records,
            own_state,
            schema,
            schemas,
        })
    }
}
