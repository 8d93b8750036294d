//! `schema.rs` against a migrated database: the same tables, the same
//! columns, each with the same type and nullability (the names alone are
//! compared by `DataStore::schema_mismatches`). The builder trusts
//! `schema.rs` at compile time; this is what keeps it honest, so a
//! migration that adds, drops or changes a column without updating it
//! fails here rather than at run time.

use std::collections::{BTreeMap, BTreeSet};

use baton_datastore::diesel_async::RunQueryDsl;
use baton_datastore::sql::{load_one, statement};
use baton_types::NexusRecordState;
use baton_uuid_kinds::GenericUuid;
use chrono::{DateTime, Utc};
use diesel::sql_types::{
    BigInt, Bool, Nullable, SqlType, Text, Timestamptz, Uuid,
};
use diesel::{Column, Expression, QueryDsl, QueryableByName, Table};

use crate::common::{TestDb, mid_handoff};

/// The crate's own `schema.rs`, compiled into this test: what the
/// datastore's queries are checked against is exactly what is compared.
// Items the datastore uses and this test does not are not dead code.
#[allow(dead_code, unreachable_pub)]
#[path = "../src/schema.rs"]
mod declared;

use declared::sql_types::DbMetadataNexusState;
use declared::{
    RecordState, baton_component_version, baton_nexus_report,
    baton_schema_version, blueprint, bp_target, db_metadata_nexus,
};

/// A column as `information_schema.columns` describes it: name, type
/// (`udt_name`) and whether it may be NULL.
type Described = (String, String, bool);

/// The database's name for a diesel SQL type, and its nullability.
trait Udt {
    const NAME: &'static str;
    const NULLABLE: bool = false;
}

impl Udt for Uuid {
    const NAME: &'static str = "uuid";
}
impl Udt for BigInt {
    const NAME: &'static str = "int8";
}
impl Udt for Text {
    const NAME: &'static str = "text";
}
impl Udt for Bool {
    const NAME: &'static str = "bool";
}
impl Udt for Timestamptz {
    const NAME: &'static str = "timestamptz";
}
impl Udt for DbMetadataNexusState {
    const NAME: &'static str = "db_metadata_nexus_state";
}
impl<T: Udt + SqlType> Udt for Nullable<T> {
    const NAME: &'static str = T::NAME;
    const NULLABLE: bool = true;
}

/// A table's `all_columns`, described.
trait Columns {
    fn describe(out: &mut BTreeSet<Described>);
}

macro_rules! columns {
    ($($c:ident),+) => {
        impl<$($c),+> Columns for ($($c,)+)
        where
            $($c: Column + Expression, <$c as Expression>::SqlType: Udt,)+
        {
            fn describe(out: &mut BTreeSet<Described>) {
                $(
                    out.insert((
                        $c::NAME.to_owned(),
                        <<$c as Expression>::SqlType as Udt>::NAME.to_owned(),
                        <<$c as Expression>::SqlType as Udt>::NULLABLE,
                    ));
                )+
            }
        }
    };
}

columns!(A);
columns!(A, B);
columns!(A, B, C);
columns!(A, B, C, D);
columns!(A, B, C, D, E);
columns!(A, B, C, D, E, F);
columns!(A, B, C, D, E, F, G);
columns!(A, B, C, D, E, F, G, H);

fn columns_of<T: Table>() -> BTreeSet<Described>
where
    T::AllColumns: Columns,
{
    let mut out = BTreeSet::new();
    T::AllColumns::describe(&mut out);
    out
}

/// Every table `schema.rs` declares. A table added there must be added
/// here too, or the comparison below names it as missing.
fn declared_tables() -> BTreeMap<String, BTreeSet<Described>> {
    BTreeMap::from([
        (
            "db_metadata_nexus".to_owned(),
            columns_of::<db_metadata_nexus::table>(),
        ),
        ("blueprint".to_owned(), columns_of::<blueprint::table>()),
        ("bp_target".to_owned(), columns_of::<bp_target::table>()),
        (
            "baton_schema_version".to_owned(),
            columns_of::<baton_schema_version::table>(),
        ),
        (
            "baton_component_version".to_owned(),
            columns_of::<baton_component_version::table>(),
        ),
        (
            "baton_nexus_report".to_owned(),
            columns_of::<baton_nexus_report::table>(),
        ),
    ])
}

#[derive(QueryableByName)]
struct ColumnRow {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
    #[diesel(sql_type = Text)]
    udt_name: String,
    #[diesel(sql_type = Bool)]
    nullable: bool,
}

/// Every column of every table in the migrated schema, as the database
/// describes it.
async fn migrated_tables(t: &TestDb) -> BTreeMap<String, BTreeSet<Described>> {
    let rows: Vec<ColumnRow> =
        t.ds.run("information schema", |conn| {
            Box::pin(
                statement(
                    "SELECT table_name::TEXT, column_name::TEXT, \
                     udt_name::TEXT, is_nullable = 'YES' AS nullable \
                     FROM information_schema.columns \
                     WHERE table_schema = current_schema()",
                )
                .load(conn),
            )
        })
        .await
        .unwrap();
    let mut tables: BTreeMap<String, BTreeSet<Described>> = BTreeMap::new();
    for row in rows {
        tables.entry(row.table_name).or_default().insert((
            row.column_name,
            row.udt_name,
            row.nullable,
        ));
    }
    tables
}

#[tokio::test]
async fn schema_rs_types_and_nullability_match_the_migrated_database() {
    let t = TestDb::new().await;
    let migrated = migrated_tables(&t).await;
    let declared = declared_tables();
    let names = |m: &BTreeMap<String, _>| m.keys().cloned().collect();
    let (migrated_names, declared_names): (BTreeSet<String>, BTreeSet<_>) =
        (names(&migrated), names(&declared));
    assert_eq!(
        migrated_names, declared_names,
        "the migrated tables (left) and those schema.rs declares (right)"
    );
    for (table, columns) in &declared {
        assert_eq!(
            &migrated[table], columns,
            "table {table}: the migrated columns (left) and those \
             schema.rs declares (right), as (name, type, nullable)"
        );
    }
}

/// Every column of every table reads back through `schema.rs` into the
/// Rust types the datastore uses, the record state as its enum.
#[tokio::test]
async fn every_table_loads_through_schema_rs() {
    let t = TestDb::new().await;
    let bp = mid_handoff(&t.ds, 1).await;
    let records: Vec<(uuid::Uuid, Option<uuid::Uuid>, RecordState)> =
        t.ds.run("load records", |conn| {
            Box::pin(
                db_metadata_nexus::table
                    .select(db_metadata_nexus::all_columns)
                    .load(conn),
            )
        })
        .await
        .unwrap();
    assert!(!records.is_empty());
    let stored: Vec<_> = t.ds.records_list().await.unwrap();
    let mut loaded: Vec<_> = records.iter().map(|r| (r.0, r.2.0)).collect();
    loaded.sort();
    let want: Vec<(uuid::Uuid, NexusRecordState)> = stored
        .iter()
        .map(|r| (r.nexus_id.into_untyped_uuid(), r.state))
        .collect();
    assert_eq!(loaded, want);
    type BlueprintRow = (
        uuid::Uuid,
        Option<uuid::Uuid>,
        i64,
        DateTime<Utc>,
        String,
        String,
        String,
    );
    let blueprints: Vec<BlueprintRow> =
        t.ds.run("load blueprints", |conn| {
            Box::pin(blueprint::table.select(blueprint::all_columns).load(conn))
        })
        .await
        .unwrap();
    assert!(blueprints.iter().any(|b| b.6 == bp.document()));
    let target: (i64, uuid::Uuid, bool, DateTime<Utc>) =
        t.ds.run("load target", |conn| {
            Box::pin(load_one(
                bp_target::table.select(bp_target::all_columns),
                conn,
            ))
        })
        .await
        .unwrap();
    assert_eq!(target.1, bp.id().into_untyped_uuid());
    let versions: Vec<(i64, String, DateTime<Utc>)> =
        t.ds.run("load versions", |conn| {
            Box::pin(
                baton_schema_version::table
                    .select(baton_schema_version::all_columns)
                    .load(conn),
            )
        })
        .await
        .unwrap();
    assert_eq!(
        versions.last().map(|v| v.0),
        Some(baton_datastore::SCHEMA_VERSION)
    );
    let components: Vec<(String, i64, String, DateTime<Utc>)> =
        t.ds.run("load component versions", |conn| {
            Box::pin(
                baton_component_version::table
                    .select(baton_component_version::all_columns)
                    .load(conn),
            )
        })
        .await
        .unwrap();
    assert!(components.iter().all(|c| c.1 >= 1));
    let reports: Vec<(uuid::Uuid, String, DateTime<Utc>)> =
        t.ds.run("load reports", |conn| {
            Box::pin(
                baton_nexus_report::table
                    .select(baton_nexus_report::all_columns)
                    .load(conn),
            )
        })
        .await
        .unwrap();
    assert!(reports.is_empty(), "nobody reported yet");
}
