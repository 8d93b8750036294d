//! The facts of the access check, read from a real database. (The
//! decision on them is the planner's, tested cell by cell there.)

use baton_datastore::{BATON_COMPONENT, SCHEMA_VERSION};
use baton_types::{NexusRecordState, SchemaComparison, SchemaFact};

use crate::common::{TestDb, mid_handoff, zone};

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

/// For each caller: who it is, and the own state the facts must show.
const CALLERS: [(u128, Option<NexusRecordState>); 4] = [
    (1, Some(NexusRecordState::Active)),
    (11, Some(NexusRecordState::NotYet)),
    (2, Some(NexusRecordState::Quiesced)),
    (99, None),
];

#[tokio::test]
async fn the_facts_show_each_callers_record_and_the_schema() {
    let full = database(false).await;
    let records = full.ds.records_list().await.unwrap().len() as i64;
    assert_eq!(records, 6);
    for (id, own_state) in CALLERS {
        for (wanted, comparison) in [
            (SCHEMA_VERSION, SchemaComparison::UpToDate),
            (SCHEMA_VERSION + 1, SchemaComparison::Older),
            (SCHEMA_VERSION - 1, SchemaComparison::Newer),
        ] {
            let facts = full
                .ds
                .access_facts(
                    Some(zone(id)),
                    &[(BATON_COMPONENT.to_owned(), wanted)],
                )
                .await
                .unwrap();
            assert_eq!(facts.nexus_id, Some(zone(id)));
            assert_eq!(facts.records, records, "zone {id}");
            assert_eq!(facts.own_state, own_state, "zone {id}");
            assert_eq!(
                facts.schemas,
                vec![SchemaFact {
                    component: BATON_COMPONENT.to_owned(),
                    applied: SCHEMA_VERSION,
                    wanted,
                }]
            );
            assert_eq!(facts.schema(), comparison, "wanted {wanted}");
        }
    }
    let empty = database(true).await;
    let facts = empty.ds.access_facts_for(Some(zone(1)), &[]).await.unwrap();
    assert_eq!((facts.records, facts.own_state), (0, None));
    assert_eq!(facts.schema(), SchemaComparison::UpToDate);
    let facts = full.ds.access_facts_for(None, &[]).await.unwrap();
    assert_eq!((facts.records, facts.own_state), (records, None));
}

#[tokio::test]
async fn an_unmigrated_database_shows_schema_zero_and_no_records() {
    let t = TestDb::new().await;
    let fresh = t.db.url_for("postgres");
    let ds = baton_datastore::DataStore::new(&crate::common::log(), &fresh);
    assert_eq!(ds.schema_version().await.unwrap(), 0);
    let facts = ds.access_facts_for(Some(zone(1)), &[]).await.unwrap();
    assert_eq!((facts.records, facts.own_state), (0, None));
    assert_eq!(facts.schemas[0].applied, 0);
    assert_eq!(facts.schema(), SchemaComparison::Older);
    ds.migrate().await.unwrap();
    let facts = ds.access_facts_for(Some(zone(1)), &[]).await.unwrap();
    assert_eq!(facts.schema(), SchemaComparison::UpToDate);
    assert_eq!(ds.migrate().await.unwrap(), SCHEMA_VERSION, "idempotent");
}
