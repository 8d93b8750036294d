//! The access decision table, every cell, against a real database.

use baton_datastore::{
    AccessDecision, AccessFacts, BATON_COMPONENT, SCHEMA_VERSION,
    SchemaComparison, decide_access,
};
use baton_types::NexusRecordState;
use baton_uuid_kinds::OmicronZoneUuid;

use crate::common::{TestDb, mid_handoff, zone};
use AccessDecision::*;

/// The protocol's table: for each record situation, the decision when
/// the schema is up to date, older, newer.
const TABLE: [(&str, [AccessDecision; 3]); 5] = [
    ("empty", [Ready, UpdateSchema, Refuse]),
    ("missing", [TryLater, TryLater, Refuse]),
    ("not_yet", [NeedsHandoff, NeedsHandoff, Refuse]),
    ("active", [Ready, UpdateSchema, Refuse]),
    ("quiesced", [Refuse, Refuse, Refuse]),
];

/// The wanted schema version that makes the database look up to date,
/// older, newer than the caller wants.
const WANTED: [i64; 3] =
    [SCHEMA_VERSION, SCHEMA_VERSION + 1, SCHEMA_VERSION - 1];

/// A database where zone 1 is active, 11 not_yet, 2 quiesced (and 99 has
/// no row), or an empty record table.
async fn database(empty: bool) -> TestDb {
    let t = TestDb::new().await;
    if !empty {
        mid_handoff(&t.ds, 2).await;
        t.ds.record_mark_quiesced(zone(2)).await.unwrap();
    }
    t
}

fn who(situation: &str) -> OmicronZoneUuid {
    match situation {
        "empty" | "missing" => zone(99),
        "not_yet" => zone(11),
        "active" => zone(1),
        "quiesced" => zone(2),
        other => panic!("{other}"),
    }
}

#[tokio::test]
async fn every_cell_of_the_access_table_against_the_database() {
    let empty = database(true).await;
    let full = database(false).await;
    for (situation, decisions) in TABLE {
        let t = if situation == "empty" { &empty } else { &full };
        for (wanted, want) in WANTED.into_iter().zip(decisions) {
            let facts =
                t.ds.access_facts(
                    Some(who(situation)),
                    &[(BATON_COMPONENT.to_owned(), wanted)],
                )
                .await
                .unwrap();
            let (got, reason) = decide_access(&facts);
            assert_eq!(
                got, want,
                "{situation} / wanted schema {wanted}: {reason}"
            );
            assert!(!reason.is_empty());
        }
    }
}

#[tokio::test]
async fn check_access_uses_the_applied_schema_version() {
    let t = database(false).await;
    assert_eq!(t.ds.schema_version().await.unwrap(), SCHEMA_VERSION);
    assert_eq!(t.ds.check_access(Some(zone(1))).await.unwrap().0, Ready);
    assert_eq!(
        t.ds.check_access(Some(zone(11))).await.unwrap().0,
        NeedsHandoff
    );
    assert_eq!(t.ds.check_access(Some(zone(2))).await.unwrap().0, Refuse);
    assert_eq!(t.ds.check_access(Some(zone(99))).await.unwrap().0, TryLater);
}

#[tokio::test]
async fn an_unmigrated_database_needs_a_schema_update() {
    let t = TestDb::new().await;
    let fresh = t.db.url_for("postgres");
    let ds = baton_datastore::DataStore::new(&crate::common::log(), &fresh);
    assert_eq!(ds.schema_version().await.unwrap(), 0);
    assert_eq!(
        ds.check_access(Some(zone(1))).await.unwrap().0,
        UpdateSchema
    );
    ds.migrate().await.unwrap();
    assert_eq!(ds.check_access(Some(zone(1))).await.unwrap().0, Ready);
    assert_eq!(ds.migrate().await.unwrap(), SCHEMA_VERSION, "idempotent");
}

#[test]
fn no_identity_skips_the_record_check() {
    for (schema, want) in [
        (SchemaComparison::UpToDate, Ready),
        (SchemaComparison::Older, UpdateSchema),
        (SchemaComparison::Newer, Refuse),
    ] {
        for own_state in [None, Some(NexusRecordState::Quiesced)] {
            let facts = AccessFacts {
                nexus_id: None,
                records: 3,
                own_state,
                schema,
                schemas: Vec::new(),
            };
            assert_eq!(decide_access(&facts).0, want, "{schema:?}");
        }
    }
}
