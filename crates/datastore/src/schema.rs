//! Baton's tables as diesel sees them, so the query builder checks
//! every column name and type at compile time, and the record state as
//! the database's own enum type, mapped to [`NexusRecordState`].
//!
//! Kept by hand beside the migrations (`migrations/*.sql`); the test
//! `schema_rs_matches_the_migrated_database` compares the two.

use std::io::Write;

use baton_types::NexusRecordState;
use diesel::deserialize::{self, FromSql, FromSqlRow};
use diesel::expression::AsExpression;
use diesel::pg::{Pg, PgValue};
use diesel::serialize::{self, IsNull, Output, ToSql};

/// The database's own types.
pub(crate) mod sql_types {
    /// `db_metadata_nexus_state`: 'active', 'not_yet', 'quiesced'.
    // `pub` because the tables `table!` declares are; the module around
    // it keeps it inside the crate.
    #[allow(unreachable_pub)]
    #[derive(diesel::sql_types::SqlType, diesel::query_builder::QueryId)]
    #[diesel(postgres_type(name = "db_metadata_nexus_state"))]
    pub struct DbMetadataNexusState;
}

diesel::table! {
    use diesel::sql_types::*;
    use super::sql_types::DbMetadataNexusState;

    db_metadata_nexus (nexus_id) {
        nexus_id -> Uuid,
        last_drained_blueprint_id -> Nullable<Uuid>,
        state -> DbMetadataNexusState,
    }
}

diesel::table! {
    blueprint (id) {
        id -> Uuid,
        parent_blueprint_id -> Nullable<Uuid>,
        nexus_generation -> Int8,
        time_created -> Timestamptz,
        creator -> Text,
        comment -> Text,
        document -> Text,
    }
}

diesel::table! {
    bp_target (version) {
        version -> Int8,
        blueprint_id -> Uuid,
        enabled -> Bool,
        time_made_target -> Timestamptz,
    }
}

diesel::table! {
    baton_schema_version (version) {
        version -> Int8,
        name -> Text,
        applied_at -> Timestamptz,
    }
}

diesel::table! {
    baton_component_version (component, version) {
        component -> Text,
        version -> Int8,
        name -> Text,
        applied_at -> Timestamptz,
    }
}

diesel::table! {
    baton_nexus_report (nexus_id) {
        nexus_id -> Uuid,
        report -> Text,
        reported_at -> Timestamptz,
    }
}

diesel::joinable!(bp_target -> blueprint (blueprint_id));
diesel::allow_tables_to_appear_in_same_query!(
    db_metadata_nexus,
    blueprint,
    bp_target,
    baton_schema_version,
    baton_component_version,
    baton_nexus_report,
);

/// A record state as the database stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, AsExpression, FromSqlRow)]
#[diesel(sql_type = sql_types::DbMetadataNexusState)]
pub(crate) struct RecordState(pub(crate) NexusRecordState);

impl ToSql<sql_types::DbMetadataNexusState, Pg> for RecordState {
    fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, Pg>) -> serialize::Result {
        out.write_all(self.0.as_str().as_bytes())?;
        Ok(IsNull::No)
    }
}

impl FromSql<sql_types::DbMetadataNexusState, Pg> for RecordState {
    fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
        let label = std::str::from_utf8(bytes.as_bytes())?;
        Ok(RecordState(label.parse()?))
    }
}

/// The state cast to text (`state::TEXT`), read through the same
/// mapping. The guarded statements on the hot path return it so: naming
/// the enum type in a result makes the connection look its type up
/// first, two more round trips on each new connection's first record
/// write (the statement-count test pins that write at one).
impl FromSql<diesel::sql_types::Text, Pg> for RecordState {
    fn from_sql(bytes: PgValue<'_>) -> deserialize::Result<Self> {
        let label = std::str::from_utf8(bytes.as_bytes())?;
        Ok(RecordState(label.parse()?))
    }
}

/// Each table this build's queries are written against, with its
/// columns as `schema.rs` declares them (read from the SQL diesel
/// renders, so this list cannot fall behind the declarations).
pub(crate) fn declared_tables() -> Vec<(&'static str, Vec<String>)> {
    use diesel::QueryDsl;
    use diesel::debug_query;
    fn columns(sql: String) -> Vec<String> {
        // `SELECT "t"."a", "t"."b" FROM "t"`: the second quoted name of
        // each pair.
        let select = sql.split(" FROM ").next().unwrap_or_default();
        select
            .split(", ")
            .filter_map(|c| c.rsplit('.').next())
            .map(|c| c.trim_matches('"').to_owned())
            .collect()
    }
    macro_rules! table {
        ($t:ident) => {
            (
                stringify!($t),
                columns(
                    debug_query::<Pg, _>(&$t::table.select($t::all_columns))
                        .to_string(),
                ),
            )
        };
    }
    vec![
        table!(db_metadata_nexus),
        table!(blueprint),
        table!(bp_target),
        table!(baton_schema_version),
        table!(baton_component_version),
        table!(baton_nexus_report),
    ]
}
