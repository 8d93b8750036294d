//! What the database benchmarks share: a throwaway server holding the
//! story's blueprints with the second one (the new generation deployed)
//! the target, and datastores of one connection on it.

use baton_datastore::{DataStore, DataStoreConfig};
use baton_dev_db::DevDb;
use baton_types::story::HandoffStory;
use baton_types::{NexusRecord, NexusRecordState, RecordsToEnsure};
use baton_uuid_kinds::BlueprintUuid;
use slog::{Logger, o};
use tokio::runtime::Runtime;

pub(crate) fn log() -> Logger {
    Logger::root(slog::Discard, o!())
}

/// The server, its story, and the runtime the benchmark runs on.
pub(crate) struct Bench {
    pub(crate) rt: Runtime,
    _db: DevDb,
    url: String,
    pub(crate) story: HandoffStory,
    /// What an old Nexus ensures while the new generation is deployed.
    pub(crate) records: RecordsToEnsure,
}

impl Bench {
    /// Starts the server and sets it up, on `rt`.
    pub(crate) fn new(rt: Runtime) -> Bench {
        let db = DevDb::builder()
            .template_cache(env!("CARGO_TARGET_TMPDIR"))
            .start(&log())
            .expect("a throwaway PostgreSQL starts");
        let url = db.url();
        let story = HandoffStory::new(588);
        let records = RecordsToEnsure {
            active: story.old_nexus.iter().copied().collect(),
            not_yet: story.new_nexus.iter().copied().collect(),
        };
        let bench = Bench {
            rt,
            _db: db,
            url,
            story,
            records,
        };
        bench.rt.block_on(async {
            let ds = bench.datastore();
            ds.migrate().await.expect("migrations apply");
            for (_, bp) in bench.story.steps() {
                ds.blueprint_insert(bp).await.expect("blueprint stored");
            }
            ds.target_set(bench.story.steady.id(), true)
                .await
                .expect("first target");
            ds.target_set(bench.story.new_generation_deployed.id(), true)
                .await
                .expect("second target");
        });
        bench
    }

    /// A datastore of one connection (one executor, one Nexus).
    pub(crate) fn datastore(&self) -> DataStore {
        let config = DataStoreConfig {
            pool_size: 1,
            ..DataStoreConfig::default()
        };
        // The pool's reaper starts on the runtime.
        let _runtime = self.rt.enter();
        DataStore::with_config(&log(), &self.url, config)
    }

    /// The target the record step executes.
    pub(crate) fn target(&self) -> BlueprintUuid {
        self.story.new_generation_deployed.id()
    }

    /// The six records with generation 1 in state `old` and generation
    /// 2 `not_yet`.
    pub(crate) fn records_with_old(
        &self,
        old: NexusRecordState,
    ) -> Vec<NexusRecord> {
        let row = |nexus_id, state| NexusRecord {
            nexus_id,
            state,
            last_drained_blueprint_id: None,
        };
        let new = self.story.new_nexus.iter();
        self.story
            .old_nexus
            .iter()
            .map(|&id| row(id, old))
            .chain(new.map(|&id| row(id, NexusRecordState::NotYet)))
            .collect()
    }

    /// Generation 1 in control: what the record step finds in a running
    /// rack.
    pub(crate) fn in_control(&self) -> Vec<NexusRecord> {
        self.records_with_old(NexusRecordState::Active)
    }
}
