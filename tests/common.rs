//! A database, the story's blueprints, Nexus instances, and a monitor
//! that checks invariant 1 (never two generations `active`) continuously.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use baton_datastore::DataStore;
use baton_dev_db::DevDb;
use baton_nexus::{Nexus, NexusConfig, NexusState, Periods};
use baton_types::story::HandoffStory;
use baton_types::{Blueprint, NexusRecordState};
use baton_uuid_kinds::OmicronZoneUuid;
use slog::Logger;
use tokio::task::JoinHandle;

pub(crate) use baton_test_utils::log;

pub(crate) struct World {
    pub(crate) db: DevDb,
    pub(crate) ds: DataStore,
    pub(crate) story: HandoffStory,
    /// The URL every client here uses.
    url: String,
    /// The periods of every Nexus started here: at most 20 ms unless a
    /// test sets others.
    pub(crate) periods: Periods,
    /// Whether the Nexus instances started here announce and listen.
    pub(crate) notifications: bool,
}

impl World {
    /// A migrated database at rack setup: the old records active and the
    /// steady blueprint the target.
    pub(crate) async fn new() -> World {
        World::on(DevDb::builder()).await
    }

    /// [`World::new`] on a primary with a synchronous standby, every
    /// client on the URL that follows a promotion.
    pub(crate) async fn with_standby() -> World {
        World::on(DevDb::builder().standby()).await
    }

    async fn on(builder: baton_dev_db::DevDbBuilder) -> World {
        let db = builder
            .template_cache(env!("CARGO_TARGET_TMPDIR"))
            .start(&log())
            .unwrap();
        let url = db.failover_url().unwrap_or_else(|| db.url());
        let ds = DataStore::new(&log(), &url);
        ds.migrate().await.unwrap();
        let story = HandoffStory::new(42);
        ds.records_initialize(&story.old_nexus.iter().copied().collect())
            .await
            .unwrap();
        let world = World {
            db,
            ds,
            story,
            url,
            periods: Periods::default().capped(Duration::from_millis(20)),
            notifications: true,
        };
        world.target(&world.story.steady.clone()).await;
        world
    }

    pub(crate) async fn target(&self, bp: &Blueprint) {
        self.ds.blueprint_insert(bp).await.unwrap();
        self.ds.target_set(bp.id(), true).await.unwrap();
    }

    /// Makes the new generation's deployment the target and waits until
    /// the running old generation has written its `not_yet` records.
    pub(crate) async fn deploy_new_generation(&self) {
        let story = &self.story;
        self.target(&story.new_generation_deployed).await;
        self.until_records("not_yet records", |r| {
            story
                .new_nexus
                .iter()
                .all(|id| r.get(id) == Some(&NexusRecordState::NotYet))
        })
        .await;
    }

    /// Deploys the new generation with its instances: one starts before
    /// its record exists and waits for it (the running old generation
    /// writes it), the others after; all end waiting for the handoff.
    pub(crate) async fn deploy_new_instances(&self) -> Vec<Nexus> {
        let ids = &self.story.new_nexus;
        let first = self.start(ids[0]);
        until(&first, |s| *s == NexusState::WaitingForRecord).await;
        self.deploy_new_generation().await;
        let mut new = vec![first];
        new.extend(ids[1..].iter().map(|id| self.start(*id)));
        for nexus in &new {
            until(nexus, |s| *s == NexusState::WaitingForHandoff).await;
        }
        new
    }

    pub(crate) fn start(&self, id: OmicronZoneUuid) -> Nexus {
        self.start_logged(id, &log())
    }

    /// [`World::start`], logging to `log`.
    pub(crate) fn start_logged(
        &self,
        id: OmicronZoneUuid,
        log: &Logger,
    ) -> Nexus {
        Nexus::start(log, self.config(id))
    }

    /// A Nexus's settings here: the world's periods and notifications.
    pub(crate) fn config(&self, id: OmicronZoneUuid) -> NexusConfig {
        let mut config = NexusConfig::new(id, self.url.clone())
            .with_periods(self.periods.clone());
        config.datastore.notifications = self.notifications;
        config
    }

    pub(crate) async fn state(
        &self,
        id: OmicronZoneUuid,
    ) -> Option<NexusRecordState> {
        let records = self.ds.records_by_ids(&[id].into()).await.unwrap();
        records.first().map(|r| r.state)
    }

    /// Polls the records until `done` holds; bounded so a bug fails.
    pub(crate) async fn until_records(
        &self,
        what: &str,
        done: impl Fn(&BTreeMap<OmicronZoneUuid, NexusRecordState>) -> bool,
    ) {
        for _ in 0..3000 {
            let records: BTreeMap<_, _> = self
                .ds
                .records_list()
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.nexus_id, r.state))
                .collect();
            if done(&records) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("gave up waiting for {what}");
    }

    pub(crate) fn monitor(&self) -> Monitor {
        Monitor::start_for(&self.db.url(), &self.story)
    }
}

/// Waits (bounded) for a Nexus to reach `want`.
pub(crate) async fn until(
    nexus: &Nexus,
    want: impl Fn(&NexusState) -> bool,
) -> NexusState {
    tokio::time::timeout(Duration::from_secs(60), nexus.wait_for(want))
        .await
        .expect("the state is reached in time")
}

/// Reads the records over and over on its own connection, counting
/// moments when rows of two generations were `active` at once.
pub(crate) struct Monitor {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(u64, Vec<String>)>,
}

impl Monitor {
    pub(crate) fn start_for(url: &str, story: &HandoffStory) -> Monitor {
        let ds = DataStore::new(&log(), url);
        let generation: BTreeMap<OmicronZoneUuid, u64> = story
            .old_expunged
            .nexus_zones()
            .map(|z| (z.zone_id, z.nexus_generation.get()))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let task = tokio::spawn(async move {
            let mut checks = 0;
            let mut violations = Vec::new();
            while !stopping.load(Ordering::SeqCst) {
                let Ok(records) = ds.records_list().await else {
                    continue;
                };
                let active: BTreeSet<u64> = records
                    .iter()
                    .filter(|r| r.state == NexusRecordState::Active)
                    .map(|r| generation.get(&r.nexus_id).copied().unwrap_or(0))
                    .collect();
                if active.len() > 1 {
                    violations.push(format!("{records:?}"));
                }
                checks += 1;
                tokio::task::yield_now().await;
            }
            (checks, violations)
        });
        Monitor { stop, task }
    }

    /// Stops it; asserts no violation and that it really looked.
    pub(crate) async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        let (checks, violations) = self.task.await.unwrap();
        assert!(
            violations.is_empty(),
            "two generations active: {violations:#?}"
        );
        assert!(checks > 10, "the monitor only looked {checks} times");
        checks
    }
}

/// How much longer the long runs go: 1 in CI, more under `cargo xtask
/// soak` (which sets `BATON_SOAK`).
pub(crate) fn soak_factor() -> u64 {
    std::env::var("BATON_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Real instances through a handoff, with `interrupt` applied to the
/// database once the first old instance is quiescing (a restart, a
/// failover): three old ones running, three new ones waiting (one of
/// them started before its record was written), the bump;
/// the instances carry on by themselves, and the old ones end
/// `quiesced`, the new ones `running`, only the new generation active.
pub(crate) async fn real_instances_hand_off_across(
    world: &mut World,
    interrupt: impl FnOnce(&mut DevDb),
) {
    use baton_nexus::NexusState;
    let story = world.story.clone();
    let old: Vec<Nexus> =
        story.old_nexus.iter().map(|id| world.start(*id)).collect();
    for nexus in &old {
        until(nexus, |s| *s == NexusState::Running).await;
    }
    let new = world.deploy_new_instances().await;
    world.target(&story.handoff_started).await;
    until(&old[0], |s| matches!(s, NexusState::Quiescing { .. })).await;
    interrupt(&mut world.db);
    for nexus in &old {
        assert_eq!(
            until(nexus, |s| *s == NexusState::Quiesced).await,
            NexusState::Quiesced
        );
    }
    for nexus in &new {
        assert_eq!(
            until(nexus, |s| *s == NexusState::Running).await,
            NexusState::Running
        );
    }
    let records = world.ds.records_list().await.unwrap();
    for r in &records {
        let old = story.old_nexus.contains(&r.nexus_id);
        let want = if old {
            NexusRecordState::Quiesced
        } else {
            NexusRecordState::Active
        };
        assert_eq!(r.state, want, "{records:?}");
    }
    assert_eq!(records.len(), 6, "{records:?}");
    for nexus in new {
        nexus.stop().await;
    }
}
