//! The reference model: what the protocol says happens, with no database.
//!
//! Blueprints form a chain (each new one is a child of the target and
//! becomes the target, so the target is always the last). Nexus zones are
//! small numbers; generation `g` deploys zones `3(g-1)`, `3(g-1)+1` and
//! `3(g-1)+2`. A Nexus "process" is what the system under test keeps for
//! a zone: its own datastore (pool and fence), whether the access check
//! let it in, whether it closed its fence, and whether it holds a claim
//! for in-flight work.

use std::collections::BTreeMap;

use baton_types::NexusRecordState;
use proptest::prelude::*;
use proptest::sample::select;
use proptest_state_machine::ReferenceStateMachine;

use NexusRecordState::{Active, NotYet, Quiesced};

/// A Nexus zone, by number.
pub(crate) type Zone = u32;

/// Nexus zones per generation.
pub(crate) const PER_GENERATION: u32 = 3;

/// The highest generation a sequence deploys: four generations, three
/// handoffs.
pub(crate) const MAX_GENERATION: u64 = 4;

/// A blueprint's Nexus zones and top-level generation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BlueprintModel {
    pub(crate) nexus_generation: u64,
    /// Zone -> (generation, in service).
    pub(crate) zones: BTreeMap<Zone, (u64, bool)>,
}

impl BlueprintModel {
    /// A valid child that breaks the succession rules by relabelling one
    /// zone's generation, if one can be made: an expunged zone (any other
    /// generation will do), else an in-service zone below the blueprint's
    /// generation (relabelled to it), else one of two or more in service
    /// at the blueprint's generation (relabelled one above).
    pub(crate) fn broken_child(&self) -> Option<BlueprintModel> {
        let top = self.nexus_generation;
        let pick = self
            .zones
            .iter()
            .find(|(_, (_, s))| !s)
            .map(|(&z, &(g, _))| (z, if g == 1 { 2 } else { 1 }))
            .or_else(|| {
                self.zones
                    .iter()
                    .find(|(_, (g, s))| *s && *g < top)
                    .map(|(&z, _)| (z, top))
            })
            .or_else(|| {
                let at_top: Vec<Zone> = self
                    .zones
                    .iter()
                    .filter(|(_, (g, s))| *s && *g == top)
                    .map(|(&z, _)| z)
                    .collect();
                (at_top.len() >= 2 && top < MAX_GENERATION)
                    .then(|| (at_top[0], top + 1))
            })?;
        let mut child = self.clone();
        child.zones.get_mut(&pick.0).expect("picked from it").0 = pick.1;
        Some(child)
    }

    pub(crate) fn in_service(&self, zone: Zone) -> bool {
        self.zones.get(&zone).is_some_and(|&(_, s)| s)
    }

    fn in_service_zones(&self) -> impl Iterator<Item = (Zone, u64)> + '_ {
        self.zones
            .iter()
            .filter(|(_, (_, s))| *s)
            .map(|(&z, &(g, _))| (z, g))
    }

    /// Expunged zones (all are ready for cleanup in the model).
    pub(crate) fn expunged(&self) -> impl Iterator<Item = Zone> + '_ {
        self.zones.iter().filter(|(_, (_, s))| !*s).map(|(&z, _)| z)
    }

    fn with_expunged(&self, zone: Zone) -> BlueprintModel {
        let mut next = self.clone();
        if let Some(z) = next.zones.get_mut(&zone) {
            z.1 = false;
        }
        next
    }

    /// Valid with `zone` expunged: someone is still in service at the
    /// blueprint's generation.
    fn may_expunge(&self, zone: Zone) -> bool {
        self.in_service(zone)
            && self
                .with_expunged(zone)
                .in_service_zones()
                .any(|(_, g)| g == self.nexus_generation)
    }

    fn newest_generation(&self) -> u64 {
        self.in_service_zones().map(|(_, g)| g).max().unwrap_or(0)
    }
}

/// What the model knows of one zone's Nexus process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Process {
    /// A process (with its own datastore) exists.
    pub(crate) alive: bool,
    /// Its access check said "ready": it may use the database.
    pub(crate) running: bool,
    /// It closed its fence to quiesce.
    pub(crate) fence_closed: bool,
    /// It holds a claim for in-flight work.
    pub(crate) working: bool,
}

/// The whole system as the protocol describes it.
#[derive(Clone, Debug)]
pub(crate) struct Model {
    pub(crate) chain: Vec<BlueprintModel>,
    pub(crate) records: BTreeMap<Zone, NexusRecordState>,
    pub(crate) processes: BTreeMap<Zone, Process>,
    /// Where the last real lifecycle run should have settled.
    pub(crate) lifecycle: Option<Settled>,
}

/// Where a real Nexus lifecycle settles, as the model predicts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Settled {
    /// Let in: it may use the database (a lifecycle run then executes
    /// the target).
    Running,
    /// Its record is `not_yet` and the handoff is blocked.
    WaitingForHandoff,
    /// It has no record while others do.
    WaitingForRecord,
    /// Its record is `quiesced`.
    Refused,
}

/// Which blueprint an execution runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Which {
    /// The current target.
    Target,
    /// An earlier blueprint of the chain (by index).
    Stale(usize),
}

/// One action on the system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Plan and deploy the next generation's zones (a child blueprint,
    /// made the target).
    Deploy,
    /// The same, with two setters racing to make their (identical) child
    /// the target: exactly one wins.
    DeployRacing,
    /// Bump the blueprint's generation, when the planner would.
    Bump,
    /// Expunge one Nexus zone (ready for cleanup); its process dies.
    Expunge(Zone),
    /// Try to make an earlier blueprint the target: refused. Then import,
    /// as the target, a child of the target that breaks the succession
    /// rules (a zone's generation relabelled), if one can be made:
    /// refused too, and not stored.
    SetStaleTarget(usize),
    /// A running Nexus executes a blueprint.
    Execute(Zone, Which),
    /// A tool with no Nexus identity executes a blueprint.
    ExecuteAnonymously(Which),
    /// A tool executes a blueprint under the identity of a deployed zone
    /// that is not running (`baton execute --nexus-id`): it writes only
    /// if that zone is in control.
    ExecuteAs(Zone, Which),
    /// Start (or re-check) a Nexus: the access check, and the handoff
    /// attempt when it says so.
    Start(Zone),
    /// A running Nexus takes a claim for in-flight work and holds it.
    BeginWork(Zone),
    /// The work finishes and the claim is released.
    EndWork(Zone),
    /// A Nexus below the blueprint's generation quiesces: records what it
    /// drained, closes its fence, and marks itself `quiesced` (refused
    /// while it still holds a claim).
    Quiesce(Zone),
    /// The Nexus process dies wherever it is.
    Kill(Zone),
    /// A Nexus attempts the handoff.
    Handoff(Zone),
    /// A real Nexus lifecycle (`baton_nexus::Nexus`) runs for the zone
    /// until it settles where the model says (running, having executed the
    /// target; waiting for the handoff or for its record; refused), and is
    /// then stopped.
    RunLifecycle(Zone),
    /// `executor` executes the target while, in one transaction held open
    /// across the execution, an operator's tool expunges `expunged`, makes
    /// that the target, and deletes its record. The execution becomes
    /// stale half way and must write nothing.
    ExecuteDuringCleanup { executor: Zone, expunged: Zone },
}

pub(crate) fn generation_of(zone: Zone) -> u64 {
    u64::from(zone / PER_GENERATION) + 1
}

impl Model {
    pub(crate) fn target(&self) -> &BlueprintModel {
        self.chain.last().expect("the chain is never empty")
    }

    fn process(&self, zone: Zone) -> Process {
        self.processes.get(&zone).copied().unwrap_or_default()
    }

    fn process_mut(&mut self, zone: Zone) -> &mut Process {
        self.processes.entry(zone).or_default()
    }

    /// Every zone deployed so far.
    fn zones(&self) -> Vec<Zone> {
        self.target().zones.keys().copied().collect()
    }

    fn stale(&self, which: Which) -> bool {
        matches!(which, Which::Stale(_))
    }

    fn which_valid(&self, which: Which) -> bool {
        match which {
            Which::Target => true,
            Which::Stale(k) => k + 1 < self.chain.len(),
        }
    }

    /// The next generation's zones can be deployed: none is in service,
    /// and none was deployed and expunged before (its ids are taken: an
    /// expunged zone never comes back, and the datastore refuses a
    /// blueprint that brings one back).
    fn may_deploy(&self) -> bool {
        let target = self.target();
        let next = target.nexus_generation + 1;
        target.newest_generation() == target.nexus_generation
            && target.nexus_generation < MAX_GENERATION
            && !target.zones.values().any(|&(g, _)| g == next)
    }

    /// The planner's bump rule: zones at the next generation exist and
    /// every one of them has a `not_yet` record.
    fn may_bump(&self) -> bool {
        let target = self.target();
        let next = target.nexus_generation + 1;
        let mut new = target.in_service_zones().filter(|&(_, g)| g == next);
        let mut any = false;
        let all = new.all(|(z, _)| {
            any = true;
            self.records.get(&z) == Some(&NotYet)
        });
        any && all
    }

    fn push(&mut self, next: BlueprintModel) {
        self.chain.push(next);
    }

    /// The record step for `zone` on the target, then the cleanup: both
    /// only for a Nexus in control (its record `active`, or no records
    /// at all); without an identity, neither runs.
    fn execute_target(&mut self, zone: Option<Zone>) {
        let Some(zone) = zone else { return };
        let in_control =
            self.records.is_empty() || self.records.get(&zone) == Some(&Active);
        if !in_control {
            return;
        }
        let target = self.target().clone();
        if let Some(&(own, true)) = target.zones.get(&zone) {
            for (z, g) in target.in_service_zones() {
                // The next generation only: see `baton_planner::classify`.
                let state = match g {
                    g if g == own => Active,
                    g if g == own + 1 => NotYet,
                    _ => continue,
                };
                self.records.entry(z).or_insert(state);
            }
        }
        for z in target.expunged() {
            self.records.remove(&z);
        }
    }

    /// The handoff's rule; true if it promoted.
    fn handoff(&mut self, zone: Zone) -> bool {
        let blocked = self
            .records
            .values()
            .any(|s| !matches!(s, NotYet | Quiesced));
        if blocked || self.records.get(&zone) != Some(&NotYet) {
            return false;
        }
        for state in self.records.values_mut() {
            if *state == NotYet {
                *state = Active;
            }
        }
        true
    }

    /// The lifecycle's start-up for `zone`: the access check, and the
    /// handoff when it says so; where it settles.
    fn start_up(&mut self, zone: Zone) -> Settled {
        match self.records.get(&zone).copied() {
            None if self.records.is_empty() => Settled::Running,
            None => Settled::WaitingForRecord,
            Some(Active) => Settled::Running,
            Some(NotYet) if self.handoff(zone) => Settled::Running,
            Some(NotYet) => Settled::WaitingForHandoff,
            Some(Quiesced) => Settled::Refused,
        }
    }

    fn expunge(&mut self, zone: Zone) {
        let next = self.target().with_expunged(zone);
        self.push(next);
        self.processes.remove(&zone);
    }
}

/// The reference state machine.
pub(crate) struct Reference;

impl ReferenceStateMachine for Reference {
    type State = Model;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<Model> {
        // Rack setup: generation 1's three zones, their records active.
        let first = BlueprintModel {
            nexus_generation: 1,
            zones: (0..PER_GENERATION).map(|z| (z, (1, true))).collect(),
        };
        Just(Model {
            chain: vec![first],
            records: (0..PER_GENERATION).map(|z| (z, Active)).collect(),
            processes: BTreeMap::new(),
            lifecycle: None,
        })
        .boxed()
    }

    fn transitions(state: &Model) -> BoxedStrategy<Step> {
        let zones = select(state.zones());
        let stale = state.chain.len().saturating_sub(1).max(1);
        let which = prop_oneof![
            2 => Just(Which::Target),
            1 => (0..stale).prop_map(Which::Stale),
        ];
        prop_oneof![
            2 => Just(Step::Deploy),
            1 => Just(Step::DeployRacing),
            2 => Just(Step::Bump),
            1 => zones.clone().prop_map(Step::Expunge),
            1 => (0..stale).prop_map(Step::SetStaleTarget),
            6 => (zones.clone(), which.clone())
                .prop_map(|(z, w)| Step::Execute(z, w)),
            1 => which.clone().prop_map(Step::ExecuteAnonymously),
            2 => (zones.clone(), which.clone())
                .prop_map(|(z, w)| Step::ExecuteAs(z, w)),
            5 => zones.clone().prop_map(Step::Start),
            1 => zones.clone().prop_map(Step::BeginWork),
            1 => zones.clone().prop_map(Step::EndWork),
            3 => zones.clone().prop_map(Step::Quiesce),
            1 => zones.clone().prop_map(Step::Kill),
            3 => zones.clone().prop_map(Step::Handoff),
            2 => zones.clone().prop_map(Step::RunLifecycle),
            1 => (zones.clone(), zones).prop_map(|(executor, expunged)| {
                Step::ExecuteDuringCleanup { executor, expunged }
            }),
        ]
        .boxed()
    }

    fn preconditions(state: &Model, step: &Step) -> bool {
        let target = state.target();
        match *step {
            Step::Deploy | Step::DeployRacing => state.may_deploy(),
            Step::Bump => state.may_bump(),
            Step::Expunge(z) => target.may_expunge(z),
            Step::SetStaleTarget(k) => k + 1 < state.chain.len(),
            Step::Execute(z, which) => {
                state.process(z).running && state.which_valid(which)
            }
            Step::ExecuteAnonymously(which) => state.which_valid(which),
            Step::ExecuteAs(z, which) => {
                state.zones().contains(&z)
                    && !state.process(z).running
                    && state.which_valid(which)
            }
            Step::Start(z) => {
                let p = state.process(z);
                target.in_service(z) && !p.running && !p.fence_closed
            }
            Step::BeginWork(z) => {
                let p = state.process(z);
                p.running && !p.working
            }
            Step::EndWork(z) => state.process(z).working,
            Step::Quiesce(z) => {
                let p = state.process(z);
                let below = generation_of(z) < target.nexus_generation;
                (p.running && below)
                    || (p.fence_closed
                        && matches!(state.records.get(&z), Some(s) if *s != Quiesced))
            }
            Step::Kill(z) => state.process(z).alive,
            Step::Handoff(z) => {
                target.in_service(z) && !state.process(z).fence_closed
            }
            // Not below the blueprint's generation: the lifecycle would
            // quiesce, which the model drives step by step instead.
            Step::RunLifecycle(z) => {
                target.in_service(z)
                    && !state.process(z).alive
                    && generation_of(z) >= target.nexus_generation
            }
            Step::ExecuteDuringCleanup { executor, expunged } => {
                executor != expunged
                    && state.process(executor).running
                    && target.in_service(executor)
                    && generation_of(expunged) >= generation_of(executor)
                    && state.records.contains_key(&expunged)
                    && target.may_expunge(expunged)
            }
        }
    }

    fn apply(mut state: Model, step: &Step) -> Model {
        match *step {
            Step::Deploy | Step::DeployRacing => {
                let mut next = state.target().clone();
                let generation = next.nexus_generation + 1;
                let first = (generation as u32 - 1) * PER_GENERATION;
                for z in first..first + PER_GENERATION {
                    next.zones.insert(z, (generation, true));
                }
                state.push(next);
            }
            Step::Bump => {
                let mut next = state.target().clone();
                next.nexus_generation += 1;
                state.push(next);
            }
            Step::Expunge(z) => state.expunge(z),
            Step::SetStaleTarget(_) => {}
            Step::Execute(z, which) => {
                if !state.stale(which) {
                    state.execute_target(Some(z));
                }
            }
            Step::ExecuteAnonymously(which) => {
                if !state.stale(which) {
                    state.execute_target(None);
                }
            }
            Step::ExecuteAs(z, which) => {
                if !state.stale(which) {
                    state.execute_target(Some(z));
                }
            }
            Step::Start(z) => {
                let settled = state.start_up(z);
                let p = state.process_mut(z);
                p.alive = settled != Settled::Refused;
                p.running = settled == Settled::Running;
            }
            Step::RunLifecycle(z) => {
                let settled = state.start_up(z);
                if settled == Settled::Running {
                    state.execute_target(Some(z));
                }
                state.lifecycle = Some(settled);
                // It is stopped at the end: no process stays behind.
                state.processes.remove(&z);
            }
            Step::BeginWork(z) => state.process_mut(z).working = true,
            Step::EndWork(z) => state.process_mut(z).working = false,
            Step::Quiesce(z) => {
                let p = state.process_mut(z);
                p.running = false;
                p.fence_closed = true;
                let drained = !p.working;
                if drained && let Some(s) = state.records.get_mut(&z) {
                    *s = Quiesced;
                }
            }
            Step::Kill(z) => {
                state.processes.remove(&z);
            }
            Step::Handoff(z) => {
                state.process_mut(z).alive = true;
                state.handoff(z);
            }
            Step::ExecuteDuringCleanup { expunged, .. } => {
                state.expunge(expunged);
                state.records.remove(&expunged);
            }
        }
        state
    }
}
