//! Migrations: a no-op when there is nothing to do, read-only database
//! included; drift between the version table and the tables named.

use std::collections::BTreeSet;

use baton_datastore::diesel_async::RunQueryDsl;
use baton_datastore::sql::statement;
use baton_datastore::{DataStore, DataStoreConfig, Error, SCHEMA_VERSION};
use baton_planner::{AccessDecision, decide_access};

use crate::common::{TestDb, log, zone};

async fn run(ds: &DataStore, sql: &'static str) {
    ds.run("test set-up", |conn| Box::pin(statement(sql).execute(conn)))
        .await
        .unwrap();
}

#[tokio::test]
async fn migrating_a_read_only_database_at_the_latest_version_does_nothing() {
    let t = TestDb::new().await;
    run(
        &t.ds,
        "ALTER DATABASE baton SET default_transaction_read_only = on",
    )
    .await;
    // A new store: new sessions, which start read-only.
    let ds =
        DataStore::with_config(&log(), &t.db.url(), DataStoreConfig::default());
    assert_eq!(ds.migrate().await.unwrap(), SCHEMA_VERSION);
    // It is read-only indeed: a write fails.
    let write = ds
        .records_initialize(&BTreeSet::from([zone(1)]))
        .await
        .unwrap_err();
    assert!(write.to_string().contains("read-only"), "{write}");
}

#[tokio::test]
async fn records_without_a_recorded_schema_are_drift_not_a_fresh_system() {
    let t = TestDb::new().await;
    t.ds.records_initialize(&BTreeSet::from([zone(1), zone(2)]))
        .await
        .unwrap();
    run(&t.ds, "DELETE FROM baton_schema_version").await;
    let facts = t.ds.access_facts_for(Some(zone(3)), &[]).await.unwrap();
    let baton_planner::Access { decision, reason } = decide_access(&facts);
    assert_eq!(decision, AccessDecision::Refuse, "{reason}");
    assert!(
        reason.contains(
            "table db_metadata_nexus exists although only \
                         schema version 0 is recorded"
        ),
        "{reason}"
    );
    assert!(!reason.contains("empty"), "{reason}");
    let err = t.ds.migrate().await.unwrap_err();
    assert!(matches!(err, Error::Schema(_)), "{err:?}");
    assert!(
        err.to_string().contains("db_metadata_nexus exists"),
        "{err}"
    );
}

#[tokio::test]
async fn a_dropped_table_is_named_by_access_and_by_migrate() {
    let t = TestDb::new().await;
    run(&t.ds, "DROP TABLE bp_target").await;
    let err = t.ds.migrate().await.unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "table bp_target is missing although schema version \
             {SCHEMA_VERSION} is recorded"
        )),
        "{err}"
    );
    let facts = t.ds.access_facts_for(Some(zone(1)), &[]).await.unwrap();
    let baton_planner::Access { decision, reason } = decide_access(&facts);
    assert_eq!(decision, AccessDecision::Refuse, "{reason}");
    assert!(reason.contains("bp_target is missing"), "{reason}");
}

/// schema.rs, which the query builder checks every column name against,
/// says what the migrations make: same tables, same columns.
#[tokio::test]
async fn schema_rs_matches_the_migrated_database() {
    let t = TestDb::new().await;
    assert_eq!(
        t.ds.schema_mismatches().await.unwrap(),
        Vec::<String>::new()
    );
    // The check has teeth: a column more, and one fewer.
    run(&t.ds, "ALTER TABLE blueprint ADD COLUMN extra TEXT").await;
    run(&t.ds, "ALTER TABLE bp_target DROP COLUMN enabled").await;
    assert_eq!(
        t.ds.schema_mismatches().await.unwrap(),
        [
            "blueprint.extra is in the database but not in this build's \
             schema",
            "bp_target.enabled is missing from the database",
        ]
    );
}
