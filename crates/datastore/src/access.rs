//! The facts of the start-up access check: the caller's record, how many
//! records exist, each component's schema version. The decision on them
//! is the planner's (`baton_planner::decide_access`).

use baton_types::{AccessFacts, SchemaFact};
use baton_uuid_kinds::{GenericUuid, OmicronZoneUuid};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Nullable, Uuid};

use crate::schema::RecordState;
use crate::schema::sql_types::DbMetadataNexusState;
use crate::statement::{Bind, load_one, statement};
use crate::{
    BATON_COMPONENT, DataStore, Error, SCHEMA_VERSION, SchemaComponent,
};

#[derive(QueryableByName)]
struct FactsRow {
    #[diesel(sql_type = BigInt)]
    records: i64,
    #[diesel(sql_type = Nullable<DbMetadataNexusState>)]
    own_state: Option<RecordState>,
}

impl DataStore {
    /// The access facts for `nexus_id` (or for a tool without an
    /// identity), against this build's version of Baton's tables and of
    /// each service component in `components`.
    pub async fn access_facts_for(
        &self,
        nexus_id: Option<OmicronZoneUuid>,
        components: &[SchemaComponent],
    ) -> Result<AccessFacts, Error> {
        let mut wanted = vec![(BATON_COMPONENT.to_owned(), SCHEMA_VERSION)];
        wanted.extend(
            components
                .iter()
                .map(|c| (c.name().to_owned(), c.wanted_version())),
        );
        self.access_facts(nexus_id, &wanted).await
    }

    /// The facts, against the wanted version of each component (Baton's
    /// own is named [`BATON_COMPONENT`]).
    pub async fn access_facts(
        &self,
        nexus_id: Option<OmicronZoneUuid>,
        wanted: &[(String, i64)],
    ) -> Result<AccessFacts, Error> {
        let (version, drift) = self.schema_state().await?;
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
        if version == 0 || !drift.is_empty() {
            // No schema (there is no record table to read), or not the
            // one recorded: the drift decides.
            return Ok(AccessFacts {
                nexus_id,
                records: 0,
                own_state: None,
                schemas,
                drift,
            });
        }
        let raw = nexus_id.map(GenericUuid::into_untyped_uuid);
        let row: FactsRow = self
            .retrying("access facts", |conn| {
                Box::pin(
                    // Two scalar subqueries in one round trip: the builder
                    // would need two statements.
                    load_one(statement(
                        "SELECT (SELECT count(*) FROM db_metadata_nexus) AS records,
                            (SELECT state FROM db_metadata_nexus
                             WHERE nexus_id = $1) AS own_state",
                    )
                    .bind::<Nullable<Uuid>, _>(raw)
                    , conn),
                )
            })
            .await?;
        let own_state = row.own_state.map(|s| s.0);
        Ok(AccessFacts {
            nexus_id,
            records: row.records,
            own_state,
            schemas,
            drift,
        })
    }
}
