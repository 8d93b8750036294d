//! The lifecycle itself: start-up, running, quiescing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_datastore::{DataStore, Error as DbError, EventKind};
use baton_planner::{AccessDecision, PeerDrain, Role};
use baton_types::Blueprint;
use baton_uuid_kinds::{BlueprintUuid, OmicronZoneUuid};
use chrono::Utc;
use slog::{Logger, debug, info, warn};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::wake::{Wakeups, Woken};
use crate::work::WorkTracker;
use crate::{NexusConfig, NexusState, Shared};

/// Why the lifecycle ended early.
enum End {
    Refused(String),
    Failed(String),
    Fenced(String),
}

/// The deliberate bug a test build may start a Nexus with; nothing in
/// other builds.
#[cfg(feature = "mutants")]
pub(crate) type Mutant = crate::NexusMutant;
/// The real lifecycle.
#[cfg(feature = "mutants")]
pub(crate) const NO_MUTANT: Mutant = crate::NexusMutant::None;
/// The real lifecycle.
#[cfg(not(feature = "mutants"))]
pub(crate) const NO_MUTANT: Mutant = Mutant;
/// The deliberate bug a test build may start a Nexus with; nothing in
/// other builds.
#[cfg(not(feature = "mutants"))]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Mutant;

pub(crate) struct Life {
    pub(crate) mutant: Mutant,
    pub(crate) log: Logger,
    pub(crate) ds: DataStore,
    pub(crate) work: Arc<WorkTracker>,
    pub(crate) config: NexusConfig,
    pub(crate) state: watch::Sender<NexusState>,
    pub(crate) shared: Arc<Mutex<Shared>>,
    pub(crate) stop: watch::Receiver<bool>,
    /// The status reporter, closed before the `quiesced` mark.
    pub(crate) report: crate::report::SharedSlot,
    /// The waits' listener for announcements, closed before the
    /// `quiesced` mark as well.
    pub(crate) wake: tokio::sync::Mutex<Wakeups>,
}

/// Sets the state to `Failed` if the lifecycle panics, so that the
/// handle never goes on reporting a state of a task that is gone.
struct PanicGuard<'a>(&'a Life);

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.set(NexusState::Failed {
                reason: "the Nexus lifecycle panicked (a bug in Baton)"
                    .to_owned(),
            });
        }
    }
}

pub(crate) async fn run(life: Life) {
    let _guard = PanicGuard(&life);
    let mut stop = life.stop.clone();
    let stopped = async {
        // The guard it returns must not live across an await.
        let _ = stop.wait_for(|stop| *stop).await;
    };
    // Stopping drops the lifecycle at its current await point (no claim
    // leaks: each is released on drop), then drains the service's work.
    // The database refusing this Nexus (its record left `active` while
    // it was paused or cut off) ends it wherever it is: nothing it does
    // can commit any more, so it stops trying (`PROTOCOL.md`, "The
    // database fence").
    let fenced = async {
        let state = life.ds.wait_until_fenced().await;
        let why = baton_datastore::Error::Fenced {
            nexus_id: life.id(),
            state,
        };
        warn!(life.log, "fenced out by the database"; "reason" => %why);
        End::Fenced(why.to_string())
    };
    let ended = tokio::select! {
        ended = life.live() => ended,
        () = stopped => Ok(life.stop_gracefully().await),
        end = fenced => Err(end),
    };
    let last = match ended {
        Ok(state) => state,
        Err(End::Refused(reason)) => NexusState::Refused { reason },
        Err(End::Failed(reason)) => NexusState::Failed { reason },
        Err(End::Fenced(reason)) => NexusState::Fenced { reason },
    };
    info!(life.log, "Nexus ended"; "state" => %last);
    life.set(last);
}

/// A retry wait that doubles from `retry_min` to `retry_max`, jittered.
struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    fn new(life: &Life) -> Backoff {
        let floor = Duration::from_millis(1);
        let min = life.config.periods.retry_min.max(floor);
        Backoff {
            next: min,
            min,
            max: life.config.periods.retry_max.max(floor),
        }
    }

    /// The next wait, jittered.
    fn next_wait(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base / 2 + base.mul_f64(fastrand::f64() / 2.0)
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.next_wait()).await;
    }

    /// Waits as [`Backoff::wait`], or until one of `kinds` is announced
    /// (a hint only: the caller looks, and calls [`Backoff::restart`] if
    /// the state did change).
    async fn wait_for(&mut self, life: &Life, kinds: &[EventKind]) -> Woken {
        let wait = self.next_wait();
        life.wake.lock().await.wait(wait, kinds).await
    }

    /// Starts over from the shortest wait: the state changed.
    fn restart(&mut self) {
        self.next = self.min.min(self.max);
    }
}

/// What a handoff attempt depends on: every record's state. Unchanged
/// since an attempt was refused, another attempt would be refused too.
type RecordStates = Vec<(OmicronZoneUuid, baton_types::NexusRecordState)>;

/// What a running Nexus's wait looks for: a different target (or the
/// same one toggled).
type TargetSeen = Option<(i64, bool)>;

impl Life {
    fn set(&self, state: NexusState) {
        if *self.state.borrow() != state {
            info!(self.log, "state"; "state" => %state);
            // Also called while unwinding (see PanicGuard): never panic.
            let mut shared =
                self.shared.lock().unwrap_or_else(|e| e.into_inner());
            shared.history.push(state.clone());
            shared.since = Utc::now();
            crate::metrics::phase(&state);
            self.state.send_replace(state);
        }
    }

    fn id(&self) -> OmicronZoneUuid {
        self.config.id
    }

    /// A graceful stop (SIGTERM): no new work, wait for the work in
    /// flight and the claims, and leave the record as it is.
    async fn stop_gracefully(&self) -> NexusState {
        info!(self.log, "stopping: waiting for work in flight";
            "work_in_flight" => self.work.count());
        self.work.close();
        self.work.drained().await;
        self.wake.lock().await.close();
        self.ds.quiesce();
        info!(self.log, "stopping: waiting for database claims";
            "claims" => self.ds.outstanding_claims());
        self.ds.wait_for_drain().await;
        NexusState::Stopped
    }

    async fn live(&self) -> Result<NexusState, End> {
        // Listening before the first look: a change announced between
        // that look and the first wait still ends the wait.
        self.wake.lock().await.open().await;
        self.start_up().await?;
        self.running().await
    }

    /// The access check, acted on until the answer is "ready".
    async fn start_up(&self) -> Result<(), End> {
        let mut backoff = Backoff::new(self);
        // The facts of the last look, and the record states a handoff
        // was last refused on: a wake-up that changed neither (a
        // forged or repeated announcement) is only waited on.
        let mut last_facts = None;
        let mut refused_on: Option<RecordStates> = None;
        loop {
            let facts = match self
                .ds
                .access_facts_for(Some(self.id()), &self.config.components)
                .await
            {
                Ok(facts) => facts,
                Err(e) if e.is_transient() => {
                    warn!(self.log, "access check failed; retrying";
                        "error" => %e);
                    backoff.wait().await;
                    continue;
                }
                Err(e) => return Err(End::Failed(e.to_string())),
            };
            if last_facts.as_ref().is_some_and(|last| *last != facts) {
                backoff.restart();
            }
            let decision = baton_planner::decide_access(&facts);
            last_facts = Some(facts);
            info!(self.log, "access check";
                "decision" => decision.decision.as_str(), "reason" => &decision.reason);
            match decision.decision {
                AccessDecision::Ready => return Ok(()),
                AccessDecision::NeedsHandoff => {
                    self.set(NexusState::WaitingForHandoff);
                    // `None` (unreadable): attempt anyway.
                    let states = self.record_states().await;
                    let unchanged = states.is_some() && states == refused_on;
                    if unchanged {
                        debug!(
                            self.log,
                            "the records are as when the \
                            handoff was last refused: not attempting"
                        );
                    } else if states.is_some() && refused_on.is_some() {
                        backoff.restart();
                    }
                    if unchanged || !self.take_over().await? {
                        refused_on = states;
                        // The handoff waits for the last `quiesced` mark
                        // (or the last blocking record's removal).
                        backoff
                            .wait_for(
                                self,
                                &[
                                    EventKind::Quiesced,
                                    EventKind::RecordsRemoved,
                                    EventKind::Handoff,
                                ],
                            )
                            .await;
                    }
                }
                AccessDecision::UpdateSchema => {
                    self.set(NexusState::Migrating);
                    match self.ds.migrate_with(&self.config.components).await {
                        Ok(_) => {}
                        Err(e) if e.is_transient() => {
                            warn!(self.log, "migration failed; retrying";
                                "error" => %e);
                            backoff.wait().await;
                        }
                        Err(e) => return Err(End::Failed(e.to_string())),
                    }
                }
                AccessDecision::TryLater => {
                    // Unlike the reference system, waiting is not fatal.
                    self.set(NexusState::WaitingForRecord);
                    info!(self.log, "waiting for this Nexus's record";
                        "reason" => &decision.reason);
                    backoff
                        .wait_for(
                            self,
                            &[
                                EventKind::RecordsAdded,
                                EventKind::TargetSet,
                                EventKind::Handoff,
                            ],
                        )
                        .await;
                }
                AccessDecision::Refuse => {
                    return Err(End::Refused(decision.reason));
                }
            }
        }
    }

    /// Every record's state, sorted by id; `None` if unreadable.
    async fn record_states(&self) -> Option<RecordStates> {
        match self.ds.records_list().await {
            Ok(records) => {
                Some(records.iter().map(|r| (r.nexus_id, r.state)).collect())
            }
            Err(e) => {
                warn!(self.log, "cannot read the records"; "error" => %e);
                None
            }
        }
    }

    /// Attempts the handoff once; true if it went through. Every refusal
    /// is transient: the caller waits and checks access again, which
    /// also notices when another new Nexus already took over for all of
    /// us (our row is then `active`).
    async fn take_over(&self) -> Result<bool, End> {
        match self.ds.attempt_handoff(self.id()).await {
            Ok(promoted) => {
                crate::metrics::handoff_attempt("done");
                info!(self.log, "handoff done"; "promoted" => promoted);
                Ok(true)
            }
            Err(e) if e.is_transient() => {
                crate::metrics::handoff_attempt("not_yet_possible");
                info!(self.log, "handoff not yet possible; waiting";
                    "reason" => %e);
                Ok(false)
            }
            Err(e) => {
                crate::metrics::handoff_attempt("failed");
                Err(End::Failed(e.to_string()))
            }
        }
    }

    async fn running(&self) -> Result<NexusState, End> {
        // A Nexus restarted in the middle of a quiesce must go straight
        // back to quiescing: look before the service takes any work.
        // It executes the target once before it says `Running`, so a
        // running Nexus has always done its part of the current target.
        match self.target_role().await {
            Ok(Some((target, Role::Quiesce { .. }))) => {
                self.work.close();
                return self.quiesce(target).await;
            }
            Ok(Some((target, Role::Execute(classification)))) => {
                self.execute(&target, classification).await;
            }
            Ok(None) | Err(()) => {}
        }
        self.set(NexusState::Running);
        // Set while the last look failed: the next comes after a retry
        // wait, not a whole execution period, so a failed look right
        // after an announced bump does not cost a minute.
        let mut retry: Option<Backoff> = None;
        let period = self.config.periods.execution;
        let mut next_execution = Instant::now() + period;
        let mut seen = self.target_seen().await;
        loop {
            // A new target is what sends this Nexus to quiesce.
            let kinds = [EventKind::TargetSet];
            let woken = match &mut retry {
                Some(backoff) => backoff.wait_for(self, &kinds).await,
                None => {
                    let mut wake = self.wake.lock().await;
                    wake.wait_until(next_execution, &kinds).await
                }
            };
            let mut looked = None;
            if let (Woken::Event(_), None) = (woken, &retry) {
                // Only a hint: on a target that did not change, wait
                // on for the period.
                looked = self.target_seen().await;
                if looked.is_some() && looked == seen {
                    continue;
                }
            }
            next_execution = Instant::now() + period;
            seen = match looked {
                Some(now) => Some(now),
                None => self.target_seen().await,
            };
            match self.target_role().await {
                Ok(Some((target, Role::Quiesce { .. }))) => {
                    // 1. No new work, from here on.
                    self.work.close();
                    return self.quiesce(target).await;
                }
                Ok(Some((target, Role::Execute(classification)))) => {
                    retry = None;
                    self.execute(&target, classification).await;
                }
                Ok(None) => retry = None,
                Err(()) => {
                    retry.get_or_insert_with(|| Backoff::new(self));
                }
            }
        }
    }

    /// The current target's version and whether it is enabled (`None`
    /// inside: no target); `None` if it cannot be read.
    async fn target_seen(&self) -> Option<TargetSeen> {
        match self.ds.target_current().await {
            Ok(target) => Some(target.map(|t| (t.version, t.enabled))),
            Err(_) => None,
        }
    }

    /// Reads the target and, if it is enabled, what it asks of this
    /// Nexus: to execute it, or (its generation behind the blueprint's)
    /// to quiesce against it. `None` if there is nothing to do (no
    /// target, a disabled one, or one without this Nexus: logged);
    /// `Err` if the target cannot be read (logged).
    async fn target_role(&self) -> Result<Option<(Blueprint, Role)>, ()> {
        let target = match self.ds.target_current().await {
            Ok(Some(target)) if target.enabled => target,
            Ok(_) => return Ok(None),
            Err(e) => {
                warn!(self.log, "cannot read the target; retrying";
                    "error" => %e);
                return Err(());
            }
        };
        let blueprint = match self.ds.blueprint_read(target.blueprint_id).await
        {
            Ok(bp) => bp,
            Err(e) => {
                warn!(self.log, "cannot read the target blueprint; retrying";
                    "error" => %e);
                return Err(());
            }
        };
        match baton_planner::decide_role(&blueprint, self.id()) {
            Ok(role) => Ok(Some((blueprint, role))),
            Err(e) => {
                warn!(self.log, "not in the target blueprint"; "error" => %e);
                Ok(None)
            }
        }
    }

    async fn execute(
        &self,
        blueprint: &Blueprint,
        classification: baton_planner::Classification,
    ) {
        baton_executor::realize_as(
            &self.log,
            &self.ds,
            blueprint,
            classification,
        )
        .await;
    }

    /// The protocol's five steps (the caller closed the work tracker:
    /// step 1).
    async fn quiesce(&self, target: Blueprint) -> Result<NexusState, End> {
        let began = std::time::Instant::now();
        self.set(NexusState::Quiescing { step: 1 });
        // 2. In-flight work finishes; record what we drained against.
        self.set(NexusState::Quiescing { step: 2 });
        if !self.skips(2) {
            info!(self.log, "quiesce step 2: waiting for work in flight";
                "work_in_flight" => self.work.count());
            self.work.drained().await;
        }
        let mut drained = target.id();
        self.record_drained(drained).await;
        // 3. Every in-service peer of our generation drained the same.
        self.set(NexusState::Quiescing { step: 3 });
        loop {
            match self.peers_drained(drained).await {
                Ok(PeerDrain::Drained) => break,
                Ok(PeerDrain::Waiting { peers }) => {
                    info!(self.log, "quiesce step 3: waiting for peers to \
                        record the drained blueprint";
                        "blueprint" => %drained, "peers" => ?peers);
                }
                Ok(PeerDrain::NoTarget) => {
                    info!(self.log, "quiesce step 3: waiting for a current \
                        target blueprint to compare with";
                        "blueprint" => %drained);
                }
                Ok(PeerDrain::TargetMoved { to }) => {
                    drained = to;
                    self.record_drained(drained).await;
                }
                Err(e) => warn!(self.log, "cannot check peers"; "error" => %e),
            }
            self.wake
                .lock()
                .await
                .wait(
                    self.config.periods.drain_recheck,
                    &[
                        EventKind::Drained,
                        EventKind::Quiesced,
                        EventKind::RecordsRemoved,
                        EventKind::TargetSet,
                    ],
                )
                .await;
        }
        // 4. Close the pool and wait for every claim to come back.
        // Step 4 before step 5: no claim of ours is out when the mark
        // commits (`PROTOCOL.md`, "Step 4 before step 5").
        self.set(NexusState::Quiescing { step: 4 });
        self.ds.quiesce();
        if !self.skips(4) {
            info!(self.log, "quiesce step 4: waiting for database claims";
                "claims" => self.ds.outstanding_claims(),
                "oldest" => ?self.ds.oldest_claim());
            self.ds.wait_for_drain().await;
        }
        // 5. Only now, through the reserved claim, say `quiesced`. The
        // status reporter's and the listener's connections are dropped
        // first: neither is used after the mark (the server ends their
        // sessions as their sockets close, which may come a moment
        // after; they hold no lock and no transaction).
        self.set(NexusState::Quiescing { step: 5 });
        self.wake.lock().await.close();
        crate::report::close(&self.report).await;
        let mut backoff = Backoff::new(self);
        loop {
            match self.ds.record_mark_self_quiesced(self.id()).await {
                Ok(()) => {
                    crate::metrics::drained(began.elapsed());
                    return Ok(NexusState::Quiesced);
                }
                Err(e) if e.is_transient() => {
                    warn!(self.log, "cannot mark quiesced yet"; "error" => %e);
                    backoff.wait().await;
                }
                Err(e) => return Err(End::Failed(e.to_string())),
            }
        }
    }

    #[cfg(feature = "mutants")]
    fn skips(&self, step: u8) -> bool {
        use crate::NexusMutant;
        matches!(
            (self.mutant, step),
            (NexusMutant::SkipStep2, 2) | (NexusMutant::SkipStep4, 4)
        )
    }

    #[cfg(not(feature = "mutants"))]
    fn skips(&self, _: u8) -> bool {
        let Mutant = self.mutant;
        false
    }

    async fn record_drained(&self, blueprint_id: BlueprintUuid) {
        let mut backoff = Backoff::new(self);
        loop {
            match self
                .ds
                .record_update_last_drained(self.id(), blueprint_id)
                .await
            {
                Ok(n) => {
                    info!(self.log, "recorded last drained blueprint";
                        "drained" => %blueprint_id, "rows" => n);
                    self.shared.lock().expect("never poisoned").drained =
                        Some(blueprint_id);
                    return;
                }
                Err(e) => {
                    warn!(self.log, "cannot record drained blueprint";
                        "error" => %e);
                    backoff.wait().await;
                }
            }
        }
    }

    /// Gathers the facts of quiesce step 3; the planner decides.
    async fn peers_drained(
        &self,
        drained: BlueprintUuid,
    ) -> Result<PeerDrain, DbError> {
        let target = match self.ds.target_blueprint().await {
            Ok((_, blueprint)) => Some(blueprint),
            Err(DbError::NoTarget) => None,
            Err(e) => return Err(e),
        };
        let records = self.ds.records_list().await?;
        Ok(baton_planner::peers_drained(
            self.id(),
            drained,
            target.as_ref(),
            &records,
        ))
    }
}
