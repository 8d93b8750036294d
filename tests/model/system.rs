//! The system under test: a real server, real datastores (one per Nexus
//! process, each with its own pool and fence), the real executor, and the
//! same datastore calls the Nexus lifecycle makes, one step at a time.

use baton_test_utils::db::DataStoreTestExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use baton_datastore::{DataStore, DataStoreConfig, Error};
use baton_executor::{STEP_ENSURE_RECORDS, realize_blueprint};
use baton_planner::AccessDecision;
use baton_types::{
    Blueprint, BlueprintBuilder, Generation, NexusRecordState, NexusZone,
    SledConfig, SledState, ZoneConfig, ZoneDisposition, ZoneType,
};
use baton_uuid_kinds::{BlueprintUuid, GenericUuid, OmicronZoneUuid, SledUuid};
use slog::Logger;
use tokio::runtime::Runtime;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

use baton_nexus::{Nexus, NexusConfig, NexusState, Periods};

use super::reference::{BlueprintModel, Model, Settled, Step, Which, Zone};

const ZONE_BASE: u128 = 0x2000;

pub(crate) fn zone_id(zone: Zone) -> OmicronZoneUuid {
    OmicronZoneUuid::from_u128(ZONE_BASE + u128::from(zone))
}

pub(crate) fn zone_of(id: OmicronZoneUuid) -> Zone {
    let n = id.as_untyped_uuid().as_u128();
    Zone::try_from(n - ZONE_BASE).expect("a row for a zone the model made")
}

/// What a test runs against: one server for every sequence.
pub(crate) struct Context {
    pub(crate) rt: Runtime,
    pub(crate) log: Logger,
    pub(crate) url: String,
    pub(crate) config: DataStoreConfig,
    /// The deliberate bug every datastore and Nexus of the run has.
    pub(crate) mutant: super::Mutant,
}

/// In-flight work holding a claim until released.
struct Work {
    release: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// One Nexus process: its own datastore, and what its access check said.
struct Process {
    ds: DataStore,
    running: bool,
    work: Option<Work>,
}

/// The real system, driven step by step.
pub(crate) struct System {
    ctx: Arc<Context>,
    /// The operator's and the checker's own datastore.
    pub(crate) admin: DataStore,
    /// The real blueprint at each index of the model's chain.
    chain: Vec<Blueprint>,
    next_blueprint: u128,
    processes: BTreeMap<Zone, Process>,
    /// Zones seen `quiesced`, to prove the state terminal.
    pub(crate) seen_quiesced: std::cell::RefCell<BTreeSet<Zone>>,
}

fn sled(zone: Zone) -> SledUuid {
    SledUuid::from_u128(0x5000 + u128::from(zone % 3))
}

fn build(
    id: BlueprintUuid,
    parent: Option<&Blueprint>,
    model: &BlueprintModel,
) -> Blueprint {
    let mut sleds: BTreeMap<SledUuid, SledConfig> = (0..3)
        .map(|s| {
            // One zone of another kind per sled, so classification has
            // something to ignore.
            let other = ZoneConfig {
                id: OmicronZoneUuid::from_u128(0x9000 + s),
                disposition: ZoneDisposition::InService,
                zone_type: ZoneType::Crucible,
            };
            let config = SledConfig {
                state: SledState::Active,
                zones: vec![other],
            };
            (SledUuid::from_u128(0x5000 + s), config)
        })
        .collect();
    for (&zone, &(generation, in_service)) in &model.zones {
        let disposition = if in_service {
            ZoneDisposition::InService
        } else {
            ZoneDisposition::Expunged {
                as_of_generation: 2,
                ready_for_cleanup: true,
            }
        };
        let nexus_generation = Generation::new(generation).expect("1 to 4");
        sleds.get_mut(&sled(zone)).expect("three sleds").zones.push(
            ZoneConfig {
                id: zone_id(zone),
                disposition,
                zone_type: ZoneType::Nexus(NexusZone { nexus_generation }),
            },
        );
    }
    let generation = Generation::new(model.nexus_generation).expect("1 to 4");
    let blueprint = BlueprintBuilder::new(id, generation)
        .parent(parent.map(Blueprint::id))
        .sleds(sleds)
        .creator("model test")
        .build();
    blueprint
        .validate()
        .expect("the model only makes valid blueprints");
    blueprint
}

impl System {
    pub(crate) fn new(ctx: Arc<Context>, model: &Model) -> System {
        let admin = ctx.datastore();
        let mut system = System {
            ctx,
            admin,
            chain: Vec::new(),
            next_blueprint: 0xb000,
            processes: BTreeMap::new(),
            seen_quiesced: Default::default(),
        };
        let first = system.blueprint(model.target(), None);
        let initial: BTreeSet<OmicronZoneUuid> =
            model.records.keys().map(|&z| zone_id(z)).collect();
        system.block_on(async {
            let ds = &system.admin;
            ds.reset_all().await.expect("reset");
            ds.records_initialize(&initial).await.expect("rack setup");
            ds.blueprint_insert(&first).await.expect("import");
            ds.target_set(first.id(), true).await.expect("first target");
        });
        system.chain.push(first);
        system
    }

    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.ctx.rt.block_on(f)
    }

    fn blueprint(
        &mut self,
        model: &BlueprintModel,
        parent: Option<&Blueprint>,
    ) -> Blueprint {
        self.next_blueprint += 1;
        build(BlueprintUuid::from_u128(self.next_blueprint), parent, model)
    }

    fn target(&self) -> &Blueprint {
        self.chain.last().expect("never empty")
    }

    fn which(&self, which: Which) -> Blueprint {
        match which {
            Which::Target => self.target().clone(),
            Which::Stale(k) => self.chain[k].clone(),
        }
    }

    /// A child of the target following the model's new target; imported
    /// and made the target by one setter.
    fn advance(&mut self, model: &Model) {
        let parent = self.target().clone();
        let next = self.blueprint(model.target(), Some(&parent));
        self.block_on(async {
            self.admin.blueprint_insert(&next).await.expect("import");
            self.admin
                .target_set(next.id(), true)
                .await
                .expect("a child of the target");
        });
        self.chain.push(next);
    }

    /// Two setters race with two identical children; one wins. A third
    /// importer races them with a grandchild that breaks the succession
    /// rules (a zone relabelled): it never becomes the target,
    /// whichever order the three commit in, and being refused it is not
    /// stored either.
    fn advance_racing(&mut self, model: &Model) {
        let parent = self.target().clone();
        let a = self.blueprint(model.target(), Some(&parent));
        let b = self.blueprint(model.target(), Some(&parent));
        let broken = model.target().broken_child();
        let bad = broken.map(|broken| self.blueprint(&broken, Some(&a)));
        let (one, two, three) = (
            self.ctx.datastore(),
            self.ctx.datastore(),
            self.ctx.datastore(),
        );
        let (ra, rb, rbad) = self.block_on(async {
            self.admin.blueprint_insert(&a).await.expect("import");
            self.admin.blueprint_insert(&b).await.expect("import");
            let bad_import = async {
                match &bad {
                    Some(bad) => {
                        Some(three.blueprint_import(bad, Some(true)).await)
                    }
                    None => None,
                }
            };
            tokio::join!(
                one.target_set(a.id(), true),
                two.target_set(b.id(), true),
                bad_import,
            )
        });
        if let (Some(bad), Some(rbad)) = (&bad, rbad) {
            assert!(
                matches!(
                    rbad,
                    Err(Error::SuccessionRefused(_)
                        | Error::TargetNotChild { .. })
                ),
                "a grandchild breaking the succession rules: {rbad:?}"
            );
            let stored = self.block_on(self.admin.blueprint_read(bad.id()));
            assert!(
                matches!(stored, Err(Error::BlueprintNotFound(_))),
                "a refused import stored its blueprint"
            );
        }
        let winner = match (ra, rb) {
            (Ok(_), Err(Error::TargetNotChild { .. })) => a,
            (Err(Error::TargetNotChild { .. }), Ok(_)) => b,
            other => {
                panic!("racing setters: expected one winner, got {other:?}")
            }
        };
        self.chain.push(winner);
    }

    fn kill(&mut self, zone: Zone) {
        if let Some(mut process) = self.processes.remove(&zone)
            && let Some(work) = process.work.take()
        {
            work.task.abort();
        }
    }

    fn process(&mut self, zone: Zone) -> &mut Process {
        let ctx = self.ctx.clone();
        self.processes.entry(zone).or_insert_with(|| Process {
            ds: ctx.datastore(),
            running: false,
            work: None,
        })
    }

    /// Applies `step`; `model` is the model after it.
    pub(crate) fn apply(&mut self, model: &Model, step: &Step) {
        match *step {
            Step::Deploy | Step::Bump => self.advance(model),
            Step::DeployRacing => self.advance_racing(model),
            Step::Expunge(zone) => {
                self.kill(zone);
                self.advance(model);
            }
            Step::SetStaleTarget(k) => {
                let id = self.chain[k].id();
                let result = self.block_on(self.admin.target_set(id, true));
                assert!(
                    matches!(result, Err(Error::TargetNotChild { .. })),
                    "an earlier blueprint became the target again: {result:?}"
                );
                if let Some(broken) = model.target().broken_child() {
                    let parent = self.target().clone();
                    let bad = self.blueprint(&broken, Some(&parent));
                    let result = self.block_on(
                        self.admin.blueprint_import(&bad, Some(true)),
                    );
                    assert!(
                        matches!(result, Err(Error::SuccessionRefused(_))),
                        "a child breaking the succession rules: {result:?}"
                    );
                    let stored =
                        self.block_on(self.admin.blueprint_read(bad.id()));
                    assert!(
                        matches!(stored, Err(Error::BlueprintNotFound(_))),
                        "a refused import stored its blueprint"
                    );
                }
            }
            Step::Execute(zone, which) => {
                let blueprint = self.which(which);
                let ds = self.process(zone).ds.clone();
                let report = self.block_on(realize_blueprint(
                    &self.ctx.log,
                    &ds,
                    &blueprint,
                    Some(zone_id(zone)),
                ));
                if matches!(which, Which::Stale(_)) {
                    let step =
                        report.step(STEP_ENSURE_RECORDS).expect("the step ran");
                    let message = step.message.as_deref().unwrap_or("");
                    assert!(
                        message.contains(&blueprint.id().to_string()),
                        "a stale execution must say which blueprint it ran: {message}"
                    );
                }
            }
            Step::ExecuteAnonymously(which) => {
                let blueprint = self.which(which);
                self.block_on(realize_blueprint(
                    &self.ctx.log,
                    &self.admin,
                    &blueprint,
                    None,
                ));
            }
            Step::ExecuteAs(zone, which) => {
                let blueprint = self.which(which);
                self.block_on(realize_blueprint(
                    &self.ctx.log,
                    &self.admin,
                    &blueprint,
                    Some(zone_id(zone)),
                ));
            }
            Step::Start(zone) => self.start(zone, model),
            Step::BeginWork(zone) => {
                let ds = self.process(zone).ds.clone();
                let (held_tx, held) = oneshot::channel();
                let (release, released) = oneshot::channel::<()>();
                let task = self.ctx.rt.spawn(async move {
                    let claim = ds.claim("in-flight work").await;
                    let _ = held_tx.send(claim.is_ok());
                    let _ = released.await;
                    drop(claim);
                });
                let held = self.block_on(held).expect("the work task reports");
                assert!(held, "a running Nexus could not claim a connection");
                self.process(zone).work = Some(Work { release, task });
            }
            Step::EndWork(zone) => {
                let work =
                    self.process(zone).work.take().expect("work in flight");
                let _ = work.release.send(());
                self.block_on(work.task).expect("the work task ends");
            }
            Step::Quiesce(zone) => self.quiesce(zone),
            Step::Kill(zone) => self.kill(zone),
            Step::Handoff(zone) => {
                let ds = self.process(zone).ds.clone();
                let result = self.block_on(ds.attempt_handoff(zone_id(zone)));
                let promoted =
                    model.records.get(&zone) == Some(&NexusRecordState::Active);
                // Invariant 6 (liveness): when nothing blocks it, the
                // handoff succeeds (a no-op for a zone already active);
                // when something does, it is refused.
                assert_eq!(
                    result.is_ok(),
                    promoted,
                    "handoff by zone {zone}: {result:?}, the model expected {}",
                    if promoted { "success" } else { "a refusal" }
                );
            }
            Step::ExecuteDuringCleanup { executor, expunged } => {
                self.execute_during_cleanup(model, executor, expunged)
            }
            Step::RunLifecycle(zone) => self.run_lifecycle(model, zone),
        }
    }

    /// The lifecycle's start-up, once: the access check, the handoff when
    /// it says so, and the check again.
    fn start(&mut self, zone: Zone, model: &Model) {
        let id = zone_id(zone);
        let ds = self.process(zone).ds.clone();
        let mut decision = self.block_on(check_access(&ds, id));
        if decision == AccessDecision::NeedsHandoff
            && self.block_on(ds.attempt_handoff(id)).is_ok()
        {
            decision = self.block_on(check_access(&ds, id));
        }
        if decision == AccessDecision::Refuse {
            self.kill(zone);
        } else {
            self.process(zone).running = decision == AccessDecision::Ready;
        }
        let expected = model.processes.get(&zone).is_some_and(|p| p.running);
        assert_eq!(
            decision == AccessDecision::Ready,
            expected,
            "zone {zone}'s access check said {decision:?}"
        );
    }

    /// The lifecycle's quiesce, without waiting: record what was drained,
    /// close the fence, and mark `quiesced` through the reserved claim,
    /// which the fence refuses while a claim is out.
    fn quiesce(&mut self, zone: Zone) {
        let id = zone_id(zone);
        let target = self.target().id();
        let process = self.process(zone);
        process.running = false;
        let ds = process.ds.clone();
        self.block_on(async {
            if !ds.is_quiesced() {
                ds.record_update_last_drained(id, target)
                    .await
                    .expect("drained");
                ds.quiesce();
            }
            match ds.record_mark_self_quiesced(id).await {
                Ok(())
                | Err(Error::FenceNotDrained(_))
                | Err(Error::NotRegistered(_)) => {}
                Err(e) => panic!("marking zone {zone} quiesced failed: {e}"),
            }
        });
    }

    /// See [`Step::RunLifecycle`].
    fn run_lifecycle(&mut self, model: &Model, zone: Zone) {
        let settled = model.lifecycle.expect("the model predicted it");
        let want = match settled {
            Settled::Running => NexusState::Running,
            Settled::WaitingForHandoff => NexusState::WaitingForHandoff,
            Settled::WaitingForRecord => NexusState::WaitingForRecord,
            Settled::Refused => NexusState::Refused {
                reason: String::new(),
            },
        };
        let mut config = NexusConfig::new(zone_id(zone), self.ctx.url.clone())
            .with_periods(Periods::default().capped(Duration::from_millis(10)));
        config.datastore = self.ctx.config.clone();
        let _runtime = self.ctx.rt.enter();
        let nexus = self.ctx.start(config);
        let reached = self.block_on(async {
            let same = |s: &NexusState| {
                std::mem::discriminant(s) == std::mem::discriminant(&want)
            };
            let reached = tokio::time::timeout(
                Duration::from_secs(30),
                nexus.wait_for(same),
            )
            .await;
            let history = nexus.history();
            nexus.stop().await;
            (reached, history)
        });
        match reached {
            (Ok(state), history) => assert!(
                std::mem::discriminant(&state) == std::mem::discriminant(&want),
                "zone {zone}'s lifecycle settled in {state:?}, the model \
                 expected {want:?}: {history:?}"
            ),
            (Err(_), history) => panic!(
                "zone {zone}'s lifecycle never reached {want:?}: {history:?}"
            ),
        }
    }

    /// See [`Step::ExecuteDuringCleanup`].
    fn execute_during_cleanup(
        &mut self,
        model: &Model,
        executor: Zone,
        expunged: Zone,
    ) {
        let stale = self.target().clone();
        let next = self.blueprint(model.target(), Some(&stale));
        self.kill(expunged);
        let ds = self.process(executor).ds.clone();
        let writes_done = Arc::new(Notify::new());
        let admin = self.admin.clone();
        let watcher = self.ctx.datastore();
        let hook: baton_test_utils::db::Hook = {
            let writes_done = writes_done.clone();
            Arc::new(move || {
                let (writes_done, watcher) =
                    (writes_done.clone(), watcher.clone());
                Box::pin(async move {
                    writes_done.notify_one();
                    // Commit once the executor waits on our locks (or,
                    // if it never does, after a bound).
                    let bound = Duration::from_secs(1);
                    let _ = watcher.until_lock_waiter(bound).await;
                })
            })
        };
        let ids: BTreeSet<OmicronZoneUuid> = [zone_id(expunged)].into();
        let log = self.ctx.log.clone();
        self.block_on(async {
            admin.blueprint_insert(&next).await.expect("import");
            let racer =
                admin.target_set_and_delete_records(next.id(), &ids, hook);
            let execution = async {
                writes_done.notified().await;
                realize_blueprint(&log, &ds, &stale, Some(zone_id(executor)))
                    .await
            };
            let (raced, _) = tokio::join!(racer, execution);
            raced.expect("the operator's transaction commits");
        });
        self.chain.push(next);
    }

    /// Every live process's datastore and whether it is running.
    pub(crate) fn processes(
        &self,
    ) -> impl Iterator<Item = (Zone, &DataStore, bool)> {
        self.processes.iter().map(|(&z, p)| (z, &p.ds, p.running))
    }

    pub(crate) fn teardown(mut self) {
        let zones: Vec<Zone> = self.processes.keys().copied().collect();
        for zone in zones {
            self.kill(zone);
        }
    }
}

impl Context {
    pub(crate) fn datastore(&self) -> DataStore {
        let _runtime = self.rt.enter();
        #[cfg(feature = "mutants")]
        return DataStore::with_mutant(
            &self.log,
            &self.url,
            self.config.clone(),
            self.mutant,
        );
        #[cfg(not(feature = "mutants"))]
        {
            let super::Mutant::None = self.mutant;
            DataStore::with_config(&self.log, &self.url, self.config.clone())
        }
    }

    /// A Nexus with the run's datastore bug.
    fn start(&self, config: NexusConfig) -> Nexus {
        #[cfg(feature = "mutants")]
        return Nexus::start_with_mutant(
            &self.log,
            config,
            baton_nexus::NexusMutant::Datastore(self.mutant),
        );
        #[cfg(not(feature = "mutants"))]
        Nexus::start(&self.log, config)
    }
}

/// The lifecycle's access check: the datastore's facts, the planner's
/// decision.
pub(crate) async fn check_access(
    ds: &DataStore,
    id: OmicronZoneUuid,
) -> AccessDecision {
    let facts = ds
        .access_facts_for(Some(id), &[])
        .await
        .expect("access facts");
    baton_planner::decide_access(&facts).decision
}
