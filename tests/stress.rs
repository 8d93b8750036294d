//! Concurrency stress: twenty actors on one server for one whole handoff.
//!
//! Six real Nexus instances (three old, three new) live their lifecycle.
//! Around them: a controller moves the system through the story (deploy,
//! bump, expunge); two movers churn the target with copies of it (racing
//! each other and the controller); six stale executors execute old
//! blueprints as old Nexus ids; two anonymous executors run the cleanup;
//! one new Nexus id spams handoff attempts; two monitors read the records
//! continuously and check invariants 1 to 3. The run is bounded by its
//! story, not by a clock: it ends once the old records are cleaned up and
//! the stale executors have had a good number of tries at resurrecting
//! them. A deadline only turns a hang into a failure.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_datastore::{DataStore, Error};
use baton_executor::realize_blueprint;
use baton_nexus::{Nexus, NexusState};
use baton_types::story::HandoffStory;
use baton_types::{Blueprint, BlueprintBuilder, NexusRecordState};
use baton_uuid_kinds::{BlueprintUuid, OmicronZoneUuid};
use tokio::task::JoinSet;

use crate::common::{World, log};

/// Where the controller has taken the story.
const STEADY: u8 = 0;
const DEPLOYED: u8 = 1;
const BUMPED: u8 = 2;
const EXPUNGED: u8 = 3;
const CLEANED: u8 = 4;

#[derive(Default)]
struct Tally {
    operations: AtomicU64,
    expected_refusals: AtomicU64,
    stale_executions: AtomicU64,
    stale_after_cleanup: AtomicU64,
    checks: AtomicU64,
    unexpected: Mutex<Vec<String>>,
    violations: Mutex<Vec<String>>,
}

impl Tally {
    fn op(&self) {
        self.operations.fetch_add(1, Ordering::Relaxed);
    }

    fn unexpected(&self, who: &str, e: impl std::fmt::Display) {
        self.unexpected.lock().unwrap().push(format!("{who}: {e}"));
    }

    fn violation(&self, what: String) {
        self.violations.lock().unwrap().push(what);
    }
}

struct Shared {
    url: String,
    phase: AtomicU8,
    /// Movers hold still from the bump until the old records are cleaned
    /// up: quiesce step 3 needs the target to stop moving long enough for
    /// the old generation to agree on it, and a cleanup succeeds only on
    /// the current target. A target that changes every millisecond, as
    /// the movers make it, would starve both; a real one changes rarely.
    hold: AtomicBool,
    stop: AtomicBool,
    /// Every blueprint made so far, for stale executors to pick from.
    made: Mutex<Vec<Blueprint>>,
    tally: Tally,
    generation: BTreeMap<OmicronZoneUuid, u64>,
    old: Vec<OmicronZoneUuid>,
    new: Vec<OmicronZoneUuid>,
    next_id: AtomicU64,
}

impl Shared {
    fn datastore(&self) -> DataStore {
        DataStore::new(&log(), &self.url)
    }

    fn running(&self) -> bool {
        !self.stop.load(Ordering::SeqCst)
    }

    fn phase(&self) -> u8 {
        self.phase.load(Ordering::SeqCst)
    }

    fn fresh_id(&self) -> BlueprintUuid {
        BlueprintUuid::from_u128(
            0xc000_0000
                + u128::from(self.next_id.fetch_add(1, Ordering::SeqCst)),
        )
    }

    /// A child of the current target with `content`'s zones and
    /// generation, imported and set; false if another setter won.
    async fn set_child(
        &self,
        ds: &DataStore,
        content: Option<&Blueprint>,
        who: &str,
    ) -> bool {
        let current = match ds.target_blueprint().await {
            Ok((_, bp)) => bp,
            Err(e) => {
                self.tally.unexpected(who, e);
                return false;
            }
        };
        let content = content.unwrap_or(&current);
        let child = BlueprintBuilder::child_of(&current, self.fresh_id())
            .sleds(content.sleds().clone())
            .nexus_generation(content.nexus_generation())
            .comment(who)
            .build();
        self.tally.op();
        if let Err(e) = ds.blueprint_insert(&child).await {
            self.tally.unexpected(who, e);
            return false;
        }
        self.made.lock().unwrap().push(child.clone());
        self.tally.op();
        match ds.target_set(child.id(), true).await {
            Ok(_) => true,
            Err(Error::TargetNotChild { .. }) => {
                self.tally.expected_refusals.fetch_add(1, Ordering::Relaxed);
                false
            }
            Err(e) => {
                self.tally.unexpected(who, e);
                false
            }
        }
    }
}

async fn controller(shared: Arc<Shared>, world_story: HandoffStory) -> u64 {
    let ds = shared.datastore();
    let phases = [
        (DEPLOYED, &world_story.new_generation_deployed),
        (BUMPED, &world_story.handoff_started),
        (EXPUNGED, &world_story.old_expunged),
    ];
    for (phase, content) in phases {
        if phase == BUMPED {
            shared.hold.store(true, Ordering::SeqCst);
        }
        while !shared.set_child(&ds, Some(content), "controller").await {
            if !shared.running() {
                return ds.retries();
            }
            tokio::task::yield_now().await;
        }
        shared.phase.store(phase, Ordering::SeqCst);
        // Wait for the system to do its part before the next step.
        let done = |records: &[baton_types::NexusRecord]| -> bool {
            let state = |id: &OmicronZoneUuid| {
                records.iter().find(|r| r.nexus_id == *id).map(|r| r.state)
            };
            match phase {
                DEPLOYED => shared
                    .new
                    .iter()
                    .all(|id| state(id) == Some(NexusRecordState::NotYet)),
                BUMPED => shared
                    .new
                    .iter()
                    .all(|id| state(id) == Some(NexusRecordState::Active)),
                _ => shared.old.iter().all(|id| state(id).is_none()),
            }
        };
        loop {
            match ds.records_list().await {
                Ok(records) if done(&records) => break,
                Ok(_) => {}
                Err(e) => shared.tally.unexpected("controller", e),
            }
            if !shared.running() {
                return ds.retries();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    shared.hold.store(false, Ordering::SeqCst);
    shared.phase.store(CLEANED, Ordering::SeqCst);
    ds.retries()
}

async fn mover(shared: Arc<Shared>, n: usize) -> u64 {
    let ds = shared.datastore();
    let who = format!("mover {n}");
    while shared.running() {
        if shared.hold.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        shared.set_child(&ds, None, &who).await;
    }
    ds.retries()
}

async fn stale_executor(shared: Arc<Shared>, n: usize) -> u64 {
    let ds = shared.datastore();
    let mut rng = fastrand::Rng::with_seed(n as u64);
    while shared.running() {
        let pick = {
            let made = shared.made.lock().unwrap();
            if made.is_empty() {
                None
            } else {
                Some(made[rng.usize(..made.len())].clone())
            }
        };
        let Some(blueprint) = pick else {
            tokio::task::yield_now().await;
            continue;
        };
        let as_nexus = shared.old[n % shared.old.len()];
        let after_cleanup = shared.phase() == CLEANED;
        shared.tally.op();
        realize_blueprint(&log(), &ds, &blueprint, Some(as_nexus)).await;
        shared
            .tally
            .stale_executions
            .fetch_add(1, Ordering::Relaxed);
        if after_cleanup {
            shared
                .tally
                .stale_after_cleanup
                .fetch_add(1, Ordering::Relaxed);
        }
    }
    ds.retries()
}

async fn anonymous_executor(shared: Arc<Shared>) -> u64 {
    let ds = shared.datastore();
    while shared.running() {
        shared.tally.op();
        match ds.target_blueprint().await {
            Ok((_, bp)) => {
                shared.tally.op();
                realize_blueprint(&log(), &ds, &bp, None).await;
            }
            Err(e) => shared.tally.unexpected("anonymous executor", e),
        }
    }
    ds.retries()
}

async fn handoff_spammer(shared: Arc<Shared>) -> u64 {
    let ds = shared.datastore();
    let id = shared.new[0];
    while shared.running() {
        shared.tally.op();
        match ds.attempt_handoff(id).await {
            Ok(_) => {}
            Err(e) if e.is_transient() => {
                shared
                    .tally
                    .expected_refusals
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => shared.tally.unexpected("handoff spammer", e),
        }
        tokio::task::yield_now().await;
    }
    ds.retries()
}

/// Checks invariants 1 (one generation active), 2 (`quiesced` terminal)
/// and 3 (a cleaned-up record never comes back) on every read.
async fn monitor(shared: Arc<Shared>) -> u64 {
    let ds = shared.datastore();
    let mut quiesced = BTreeSet::new();
    let mut cleaned = BTreeSet::new();
    while shared.running() {
        let expunged_phase = shared.phase() >= EXPUNGED;
        let records = match ds.records_list().await {
            Ok(r) => r,
            Err(e) => {
                shared.tally.unexpected("monitor", e);
                continue;
            }
        };
        shared.tally.checks.fetch_add(1, Ordering::Relaxed);
        let states: BTreeMap<_, _> =
            records.iter().map(|r| (r.nexus_id, r.state)).collect();
        let active: BTreeSet<u64> = states
            .iter()
            .filter(|(_, s)| **s == NexusRecordState::Active)
            .map(|(id, _)| shared.generation[id])
            .collect();
        if active.len() > 1 {
            shared.tally.violation(format!(
                "invariant 1: generations {active:?} active"
            ));
        }
        for id in &quiesced {
            if let Some(s) = states.get(id)
                && *s != NexusRecordState::Quiesced
            {
                shared.tally.violation(format!(
                    "invariant 2: {id} left quiesced for {s}"
                ));
            }
        }
        quiesced.extend(
            states
                .iter()
                .filter(|(_, s)| **s == NexusRecordState::Quiesced)
                .map(|(id, _)| *id),
        );
        for id in &cleaned {
            if states.contains_key(id) {
                shared
                    .tally
                    .violation(format!("invariant 3: {id}'s record came back"));
            }
        }
        if expunged_phase {
            cleaned.extend(
                shared.old.iter().filter(|id| !states.contains_key(id)),
            );
        }
        tokio::task::yield_now().await;
    }
    ds.retries()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_actors_race_one_handoff_without_a_violation() {
    let world = World::new().await;
    let story = world.story.clone();
    let shared = Arc::new(Shared {
        url: world.db.url(),
        phase: AtomicU8::new(STEADY),
        hold: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        made: Mutex::new(vec![story.steady.clone()]),
        tally: Tally::default(),
        generation: story
            .old_expunged
            .nexus_zones()
            .map(|z| (z.zone_id, z.nexus_generation.get()))
            .collect(),
        old: story.old_nexus.clone(),
        new: story.new_nexus.clone(),
        next_id: AtomicU64::new(0),
    });
    let started = Instant::now();

    let nexus: Vec<Nexus> = story
        .old_nexus
        .iter()
        .chain(&story.new_nexus)
        .map(|&id| world.start(id))
        .collect();
    let mut actors = JoinSet::new();
    let mut count = nexus.len();
    actors.spawn(controller(shared.clone(), story.clone()));
    count += 1;
    for n in 0..2 {
        actors.spawn(mover(shared.clone(), n));
    }
    for n in 0..6 {
        actors.spawn(stale_executor(shared.clone(), n));
    }
    for _ in 0..2 {
        actors.spawn(anonymous_executor(shared.clone()));
    }
    actors.spawn(handoff_spammer(shared.clone()));
    for _ in 0..2 {
        actors.spawn(monitor(shared.clone()));
    }
    count += 2 + 6 + 2 + 1 + 2;
    assert!(count >= 20, "only {count} actors");

    // The run ends when the story is done and the stale executors have
    // had their tries at resurrecting the cleaned-up records (more under
    // `cargo xtask soak`); the deadline only turns a hang into a failure.
    let tries = 2_000 * crate::common::soak_factor();
    let finished = tokio::time::timeout(Duration::from_secs(600), async {
        while shared.phase() != CLEANED
            || shared.tally.stale_after_cleanup.load(Ordering::Relaxed) < tries
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    shared.stop.store(true, Ordering::SeqCst);
    let mut retries = 0;
    while let Some(done) = actors.join_next().await {
        retries += done.expect("no actor panicked");
    }
    assert!(
        finished.is_ok(),
        "the story did not finish in time (phase {})",
        shared.phase()
    );

    let t = &shared.tally;
    let violations = t.violations.lock().unwrap().clone();
    let unexpected = t.unexpected.lock().unwrap().clone();
    eprintln!(
        "stress: {count} actors for {:.1} s: {} operations, {} stale executions \
         ({} after the cleanup), {} expected refusals, {} serialization retries, \
         {} invariant checks, {} violations, {} unexpected errors",
        started.elapsed().as_secs_f64(),
        t.operations.load(Ordering::Relaxed),
        t.stale_executions.load(Ordering::Relaxed),
        t.stale_after_cleanup.load(Ordering::Relaxed),
        t.expected_refusals.load(Ordering::Relaxed),
        retries,
        t.checks.load(Ordering::Relaxed),
        violations.len(),
        unexpected.len(),
    );
    let mut ended = Vec::new();
    for n in nexus {
        let history = n.history();
        ended.push((n.id(), n.stop().await, history));
    }
    for (id, state, history) in &ended {
        let old = story.old_nexus.contains(id);
        let want = if old {
            NexusState::Quiesced
        } else {
            NexusState::Stopped
        };
        assert_eq!(*state, want, "{id}: {history:?}");
        if !old {
            assert!(
                history.contains(&NexusState::Running),
                "{id}: {history:?}"
            );
        }
    }
    let records = world.ds.records_list().await.unwrap();
    let active: BTreeSet<_> = records
        .iter()
        .filter(|r| r.state == NexusRecordState::Active)
        .map(|r| r.nexus_id)
        .collect();
    assert_eq!(
        active,
        story.new_nexus.iter().copied().collect(),
        "{records:?}"
    );
    assert_eq!(records.len(), 3, "{records:?}");

    assert!(violations.is_empty(), "{violations:#?}");
    assert!(unexpected.is_empty(), "{unexpected:#?}");
    assert!(
        t.checks.load(Ordering::Relaxed) > 100,
        "the monitors hardly looked"
    );
}
