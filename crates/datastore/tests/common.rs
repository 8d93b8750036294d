//! A migrated database on a throwaway server, and blueprints to store.

use baton_datastore::{DataStore, DataStoreConfig};
use baton_dev_db::DevDb;
use baton_types::RecordsToEnsure;
use baton_types::{
    Blueprint, BlueprintBuilder, Generation, NexusZone, SledConfig, SledState,
    ZoneConfig, ZoneDisposition, ZoneType,
};
use baton_uuid_kinds::{BlueprintUuid, OmicronZoneUuid, SledUuid};

pub(crate) use baton_test_utils::log;

/// A server (from a cached template, so no initdb per test) and a
/// datastore on it with the schema applied.
pub(crate) struct TestDb {
    pub(crate) ds: DataStore,
    pub(crate) db: DevDb,
}

impl TestDb {
    pub(crate) async fn new() -> TestDb {
        TestDb::with_config(DataStoreConfig::default()).await
    }

    pub(crate) async fn with_config(config: DataStoreConfig) -> TestDb {
        TestDb::with_store(|url| DataStore::with_config(&log(), url, config))
            .await
    }

    /// A server and the datastore `make` opens on its URL (a mutant's,
    /// in the mutant build).
    pub(crate) async fn with_store(
        make: impl FnOnce(&str) -> DataStore,
    ) -> TestDb {
        let db = DevDb::builder()
            .template_cache(env!("CARGO_TARGET_TMPDIR"))
            .start(&log())
            .expect("a throwaway PostgreSQL starts");
        let ds = make(&db.url());
        ds.migrate().await.expect("migrations apply");
        TestDb { ds, db }
    }

    /// Another datastore (another "process") on the same database.
    pub(crate) fn another(&self, config: DataStoreConfig) -> DataStore {
        DataStore::with_config(&log(), &self.db.url(), config)
    }
}

pub(crate) fn zone(n: u128) -> OmicronZoneUuid {
    OmicronZoneUuid::from_u128(n)
}

pub(crate) fn bp_id(n: u128) -> BlueprintUuid {
    BlueprintUuid::from_u128(0xb000 + n)
}

/// A Nexus zone `n` at `generation`, in service or expunged (ready for
/// cleanup).
pub(crate) fn nexus(n: u128, generation: u64, in_service: bool) -> ZoneConfig {
    ZoneConfig {
        id: zone(n),
        disposition: if in_service {
            ZoneDisposition::InService
        } else {
            ZoneDisposition::Expunged {
                as_of_generation: 2,
                ready_for_cleanup: true,
            }
        },
        zone_type: ZoneType::Nexus(NexusZone {
            nexus_generation: Generation::new(generation).unwrap(),
        }),
    }
}

/// A blueprint `n` with parent `parent`, top-level generation `top`, and
/// the given zones on one sled (plus a crucible zone).
pub(crate) fn blueprint(
    n: u128,
    parent: Option<u128>,
    top: u64,
    zones: Vec<ZoneConfig>,
) -> Blueprint {
    let mut zones = zones;
    zones.push(ZoneConfig {
        id: zone(0xc000 + n),
        disposition: ZoneDisposition::InService,
        zone_type: ZoneType::Crucible,
    });
    BlueprintBuilder::new(bp_id(n), Generation::new(top).unwrap())
        .parent(parent.map(bp_id))
        .comment(format!("test blueprint {n}"))
        .sled(
            SledUuid::from_u128(1),
            SledConfig {
                state: SledState::Active,
                zones,
            },
        )
        .build()
}

/// Old Nexus 1..=3 at generation 1, new 11..=13 at generation 2.
pub(crate) fn handoff_zones(old_in_service: bool) -> Vec<ZoneConfig> {
    let mut zones: Vec<ZoneConfig> =
        (1..=3).map(|n| nexus(n, 1, old_in_service)).collect();
    zones.extend((11..=13).map(|n| nexus(n, 2, true)));
    zones
}

/// Stores `bp` and makes it the target.
pub(crate) async fn store_and_target(ds: &DataStore, bp: &Blueprint) {
    ds.blueprint_insert(bp).await.unwrap();
    ds.target_set(bp.id(), true).await.unwrap();
}

/// Blueprint 1 (top-level generation `top`, old Nexus 1..=3 and new
/// 11..=13) stored and made the target, with the records its old Nexus
/// writes: 1..=3 `active`, 11..=13 `not_yet`.
pub(crate) async fn mid_handoff(ds: &DataStore, top: u64) -> Blueprint {
    let bp = blueprint(1, None, top, handoff_zones(true));
    store_and_target(ds, &bp).await;
    ds.records_ensure(bp.id(), zone(1), &mid_handoff_records())
        .await
        .unwrap();
    bp
}

/// The records [`mid_handoff`] writes.
pub(crate) fn mid_handoff_records() -> RecordsToEnsure {
    RecordsToEnsure {
        active: [1, 2, 3].map(zone).into(),
        not_yet: [11, 12, 13].map(zone).into(),
    }
}
