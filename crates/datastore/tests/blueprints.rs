//! Stored blueprints and the target rules.

use baton_datastore::{DataStoreConfig, Error};

use crate::common::{TestDb, blueprint, bp_id, handoff_zones, nexus};

#[tokio::test]
async fn blueprint_insert_is_idempotent_and_lossless() {
    let t = TestDb::new().await;
    let bp = blueprint(1, None, 1, vec![nexus(1, 1, true)]);
    assert!(t.ds.blueprint_insert(&bp).await.unwrap());
    assert!(!t.ds.blueprint_insert(&bp).await.unwrap(), "second insert");
    let back = t.ds.blueprint_read(bp.id()).await.unwrap();
    assert_eq!(back, bp);
    assert_eq!(back.document(), bp.document(), "byte for byte");
    let list = t.ds.blueprint_list().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, bp.id());
}

#[tokio::test]
async fn blueprint_insert_refuses_a_different_document_under_the_same_id() {
    let t = TestDb::new().await;
    t.ds.blueprint_insert(&blueprint(1, None, 1, vec![nexus(1, 1, true)]))
        .await
        .unwrap();
    let other = blueprint(1, None, 1, vec![nexus(2, 1, true)]);
    let err = t.ds.blueprint_insert(&other).await.unwrap_err();
    assert!(
        matches!(err, Error::BlueprintConflict(id) if id == bp_id(1)),
        "{err}"
    );
}

#[tokio::test]
async fn blueprint_read_of_an_unknown_id_is_not_found() {
    let t = TestDb::new().await;
    let err = t.ds.blueprint_read(bp_id(9)).await.unwrap_err();
    assert!(matches!(err, Error::BlueprintNotFound(id) if id == bp_id(9)));
}

#[tokio::test]
async fn target_set_follows_the_rules_and_appends_versions() {
    let t = TestDb::new().await;
    let first = blueprint(1, None, 1, vec![nexus(1, 1, true)]);
    let child = blueprint(2, Some(1), 1, handoff_zones(true));
    let orphan = blueprint(3, Some(7), 1, vec![nexus(1, 1, true)]);
    for bp in [&first, &child, &orphan] {
        t.ds.blueprint_insert(bp).await.unwrap();
    }
    assert!(t.ds.target_current().await.unwrap().is_none());
    assert!(matches!(
        t.ds.target_blueprint().await,
        Err(Error::NoTarget)
    ));

    let v1 = t.ds.target_set(first.id(), true).await.unwrap();
    assert_eq!(v1.version, 1);
    let err = t.ds.target_set(orphan.id(), true).await.unwrap_err();
    assert!(
        matches!(err, Error::TargetNotChild { blueprint_id, current, .. }
            if blueprint_id == orphan.id() && current == first.id()),
        "{err}"
    );
    let v2 = t.ds.target_set(child.id(), true).await.unwrap();
    assert_eq!(v2.version, 2);
    let v3 = t.ds.target_set(child.id(), false).await.unwrap();
    assert_eq!((v3.version, v3.enabled), (3, false), "toggle enabled");
    let err = t.ds.target_set(first.id(), true).await.unwrap_err();
    assert!(matches!(err, Error::TargetNotChild { .. }), "no going back");
    let current = t.ds.target_current().await.unwrap().unwrap();
    assert_eq!(current, v3);
    let (_, bp) = t.ds.target_blueprint().await.unwrap();
    assert_eq!(bp, child);
}

#[tokio::test]
async fn target_set_of_an_unknown_blueprint_is_not_found() {
    let t = TestDb::new().await;
    let err = t.ds.target_set(bp_id(5), true).await.unwrap_err();
    assert!(matches!(err, Error::BlueprintNotFound(_)), "{err}");
}

#[tokio::test]
async fn concurrent_setters_from_the_same_parent_one_loses_cleanly() {
    let t = TestDb::new().await;
    let other = t.another(Default::default());
    let first = blueprint(1, None, 1, vec![nexus(1, 1, true)]);
    t.ds.blueprint_insert(&first).await.unwrap();
    t.ds.target_set(first.id(), true).await.unwrap();
    let mut parent = 1;
    for round in 0..10u128 {
        let (na, nb) = (100 + 2 * round, 101 + 2 * round);
        let a = blueprint(na, Some(parent), 1, vec![nexus(1, 1, true)]);
        let b = blueprint(nb, Some(parent), 1, vec![nexus(1, 1, true)]);
        t.ds.blueprint_insert(&a).await.unwrap();
        t.ds.blueprint_insert(&b).await.unwrap();
        let (ra, rb) = tokio::join!(
            t.ds.target_set(a.id(), true),
            other.target_set(b.id(), true)
        );
        let (winner, loser) = match (&ra, &rb) {
            (Ok(_), Err(e)) => (na, e),
            (Err(e), Ok(_)) => (nb, e),
            _ => panic!("round {round}: exactly one must win: {ra:?} {rb:?}"),
        };
        assert!(matches!(loser, Error::TargetNotChild { .. }), "{loser}");
        let current = t.ds.target_current().await.unwrap().unwrap();
        assert_eq!(current.blueprint_id, bp_id(winner));
        assert_eq!(current.version, 2 + round as i64);
        parent = winner;
    }
}

/// B (a valid child of the target A) and C (B's child, bringing back a
/// zone expunged since A) imported with the target at the same time, many
/// times: C is refused every time, whichever runs first, and a refused
/// import stores nothing. The succession rule is checked in the same
/// transaction as the change, so the race cannot slip C past it.
#[tokio::test]
async fn a_refused_child_never_becomes_the_target_in_a_race() {
    let t = TestDb::new().await;
    let other = t.another(DataStoreConfig::default());
    let zones = |back: bool| vec![nexus(1, 1, true), nexus(2, 1, back)];
    let mut parent = None;
    for round in 0..40u128 {
        let n = 10 * round + 1;
        let a = blueprint(n, parent, 1, zones(false));
        let b = blueprint(n + 1, Some(n), 1, zones(false));
        let c = blueprint(n + 2, Some(n + 1), 1, zones(true));
        t.ds.blueprint_import(&a, Some(true)).await.unwrap();
        let (b_done, c_done) = tokio::join!(
            t.ds.blueprint_import(&b, Some(true)),
            other.blueprint_import(&c, Some(true)),
        );
        b_done.unwrap();
        let refused = c_done.unwrap_err();
        assert!(
            matches!(
                refused,
                Error::SuccessionRefused(_) | Error::TargetNotChild { .. }
            ),
            "round {round}: {refused:?}"
        );
        let target = t.ds.target_current().await.unwrap().unwrap();
        assert_eq!(target.blueprint_id, b.id(), "round {round}");
        assert!(
            matches!(
                t.ds.blueprint_read(c.id()).await,
                Err(Error::BlueprintNotFound(_))
            ),
            "round {round}: the refused blueprint was stored"
        );
        parent = Some(n + 1);
    }
}
