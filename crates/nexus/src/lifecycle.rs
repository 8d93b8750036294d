//! The lifecycle itself: start-up, running, quiescing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_datastore::{AccessDecision, DataStore, Error as DbError};
use baton_executor::realize_blueprint;
use baton_types::{Blueprint, NexusRecordState};
use baton_uuid_kinds::{BlueprintUuid, OmicronZoneUuid};
use slog::{Logger, info, warn};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::{NexusConfig, NexusState};

/// Why the lifecycle ended early.
enum End {
    Refused(String),
    Failed(String),
}

struct Life {
    history: Arc<Mutex<Vec<NexusState>>>,
    log: Logger,
    ds: DataStore,
    config: NexusConfig,
    state: watch::Sender<NexusState>,
}

pub(crate) async fn run(
    log: Logger,
    ds: DataStore,
    config: NexusConfig,
    state: watch::Sender<NexusState>,
    history: Arc<Mutex<Vec<NexusState>>>,
    mut stop: watch::Receiver<bool>,
) {
    let life = Life {
        history,
        log,
        ds,
        config,
        state,
    };
    // Stopping drops the lifecycle at its current await point, which
    // releases every claim it holds, as a process exit would.
    let ended = tokio::select! {
        ended = life.live() => ended,
        _ = stop.wait_for(|stop| *stop) => {
            info!(life.log, "stopped by its owner");
            Ok(NexusState::Stopped)
        }
    };
    let last = match ended {
        Ok(state) => state,
        Err(End::Refused(reason)) => NexusState::Refused(reason),
        Err(End::Failed(reason)) => NexusState::Failed(reason),
    };
    info!(life.log, "Nexus ended"; "state" => ?last);
    life.set(last);
}

impl Life {
    fn set(&self, state: NexusState) {
        if *self.state.borrow() != state {
            info!(self.log, "state"; "state" => ?state);
            self.history
                .lock()
                .expect("never poisoned")
                .push(state.clone());
            self.state.send_replace(state);
        }
    }

    /// A jittered wait of about one retry period.
    async fn pause(&self) {
        let base = self.config.retry_period;
        tokio::time::sleep(base / 2 + base.mul_f64(fastrand::f64())).await;
    }

    async fn live(&self) -> Result<NexusState, End> {
        self.start_up().await?;
        self.running().await
    }

    /// The access check, acted on until the answer is "ready".
    async fn start_up(&self) -> Result<(), End> {
        let id = self.config.id;
        loop {
            let decision = match self.ds.check_access(Some(id)).await {
                Ok(decision) => decision,
                Err(e) if e.is_transient() => {
                    warn!(self.log, "access check failed; retrying";
                        "error" => %e);
                    self.pause().await;
                    continue;
                }
                Err(e) => return Err(End::Failed(e.to_string())),
            };
            info!(self.log, "access check";
                "decision" => decision.0.as_str(), "reason" => &decision.1);
            match decision.0 {
                AccessDecision::Ready => return Ok(()),
                AccessDecision::NeedsHandoff => self.take_over().await?,
                AccessDecision::UpdateSchema => {
                    self.set(NexusState::UpdatingSchema);
                    self.ds
                        .migrate()
                        .await
                        .map_err(|e| End::Failed(e.to_string()))?;
                }
                AccessDecision::TryLater => {
                    // Unlike the reference system, waiting is not fatal.
                    self.set(NexusState::WaitingForRecord);
                    self.pause().await;
                }
                AccessDecision::Refuse => return Err(End::Refused(decision.1)),
            }
        }
    }

    /// Attempts the handoff once. Every refusal is transient: the caller
    /// waits and checks access again, which also notices when another new
    /// Nexus already took over for all of us (our row is then `active`).
    async fn take_over(&self) -> Result<(), End> {
        self.set(NexusState::WaitingForHandoff);
        match self.ds.attempt_handoff(self.config.id).await {
            Ok(promoted) => {
                info!(self.log, "handoff done"; "promoted" => promoted);
                Ok(())
            }
            Err(e) if e.is_transient() => {
                info!(self.log, "handoff not yet possible"; "reason" => %e);
                self.pause().await;
                Ok(())
            }
            Err(e) => Err(End::Failed(e.to_string())),
        }
    }

    async fn running(&self) -> Result<NexusState, End> {
        // A Nexus restarted in the middle of a quiesce must go straight
        // back to quiescing: look before taking any work.
        if let Some(target) = self.execute_or_quiesce_target().await {
            return self.quiesce(JoinSet::new(), target).await;
        }
        self.set(NexusState::Running);
        let accepting = Arc::new(AtomicBool::new(true));
        let mut work = JoinSet::new();
        let mut execution = tokio::time::interval(self.config.execution_period);
        let mut work_tick = tokio::time::interval(self.config.work_period);
        loop {
            tokio::select! {
                _ = execution.tick() => {
                    if let Some(target) = self.execute_or_quiesce_target().await {
                        accepting.store(false, Ordering::SeqCst);
                        return self.quiesce(work, target).await;
                    }
                }
                _ = work_tick.tick() => {
                    if accepting.load(Ordering::SeqCst) {
                        work.spawn(simulated_work(
                            self.ds.clone(),
                            self.config.work_duration,
                        ));
                    }
                    // Reap finished work so the set stays small.
                    while work.try_join_next().is_some() {}
                }
            }
        }
    }

    /// Reads the target; if enabled, either executes it or, when this
    /// Nexus's generation is below the blueprint's, returns it to quiesce
    /// against.
    async fn execute_or_quiesce_target(&self) -> Option<Blueprint> {
        let id = self.config.id;
        let target = match self.ds.target_current().await {
            Ok(Some(target)) if target.enabled => target,
            Ok(_) => return None,
            Err(e) => {
                warn!(self.log, "cannot read the target"; "error" => %e);
                return None;
            }
        };
        let blueprint = match self.ds.blueprint_read(target.blueprint_id).await
        {
            Ok(bp) => bp,
            Err(e) => {
                warn!(self.log, "cannot read the target blueprint";
                    "error" => %e);
                return None;
            }
        };
        match baton_planner::is_quiescing(&blueprint, id) {
            Ok(true) => Some(blueprint),
            Ok(false) => {
                realize_blueprint(&self.log, &self.ds, &blueprint, Some(id))
                    .await;
                None
            }
            Err(e) => {
                warn!(self.log, "not in the target blueprint"; "error" => %e);
                None
            }
        }
    }

    /// The protocol's five steps.
    async fn quiesce(
        &self,
        mut work: JoinSet<()>,
        target: Blueprint,
    ) -> Result<NexusState, End> {
        let id = self.config.id;
        // 1. No new work (the caller stopped accepting).
        self.set(NexusState::Quiescing(1));
        // 2. In-flight work finishes; record what we drained against.
        self.set(NexusState::Quiescing(2));
        while work.join_next().await.is_some() {}
        let mut drained = target.id();
        self.record_drained(drained).await;
        // 3. Every in-service peer of our generation drained the same.
        self.set(NexusState::Quiescing(3));
        loop {
            match self.peers_drained(drained).await {
                Ok(Peers::Drained) => break,
                Ok(Peers::Waiting) => {}
                Ok(Peers::TargetMoved(to)) => {
                    drained = to;
                    self.record_drained(drained).await;
                }
                Err(e) => warn!(self.log, "cannot check peers"; "error" => %e),
            }
            self.pause().await;
        }
        // 4. Close the pool and wait for every claim to come back.
        self.set(NexusState::Quiescing(4));
        self.ds.quiesce();
        self.ds.wait_for_drain().await;
        // 5. Only now, through the reserved claim, say `quiesced`.
        self.set(NexusState::Quiescing(5));
        loop {
            match self.ds.record_mark_self_quiesced(id).await {
                Ok(()) => return Ok(NexusState::Quiesced),
                Err(e) if e.is_transient() => {
                    warn!(self.log, "cannot mark quiesced yet"; "error" => %e);
                    self.pause().await;
                }
                Err(e) => return Err(End::Failed(e.to_string())),
            }
        }
    }

    async fn record_drained(&self, blueprint_id: BlueprintUuid) {
        loop {
            match self
                .ds
                .record_update_last_drained(self.config.id, blueprint_id)
                .await
            {
                Ok(n) => {
                    info!(self.log, "recorded last drained blueprint";
                        "drained" => %blueprint_id, "rows" => n);
                    return;
                }
                Err(e) => {
                    warn!(self.log, "cannot record drained blueprint";
                        "error" => %e);
                    self.pause().await;
                }
            }
        }
    }

    async fn peers_drained(
        &self,
        drained: BlueprintUuid,
    ) -> Result<Peers, DbError> {
        let Some(target) = self.ds.target_current().await? else {
            return Ok(Peers::Waiting);
        };
        if target.blueprint_id != drained {
            return Ok(Peers::TargetMoved(target.blueprint_id));
        }
        let blueprint = self.ds.blueprint_read(drained).await?;
        let own = blueprint
            .in_service_nexus_zones()
            .find(|z| z.zone_id == self.config.id)
            .map(|z| z.nexus_generation);
        let peers: std::collections::BTreeSet<OmicronZoneUuid> = blueprint
            .in_service_nexus_zones()
            .filter(|z| Some(z.nexus_generation) == own)
            .map(|z| z.zone_id)
            .collect();
        let records = self.ds.records_by_ids(&peers).await?;
        let any_quiesced = records
            .iter()
            .any(|r| r.state == NexusRecordState::Quiesced);
        let all_drained = records
            .iter()
            .all(|r| r.last_drained_blueprint_id == Some(drained));
        Ok(if any_quiesced || all_drained {
            Peers::Drained
        } else {
            Peers::Waiting
        })
    }
}

enum Peers {
    Drained,
    Waiting,
    TargetMoved(BlueprintUuid),
}

/// A unit of work: holds a database claim for a while, as a request
/// being served would.
async fn simulated_work(ds: DataStore, duration: Duration) {
    if let Ok(claim) = ds.claim("simulated work").await {
        tokio::time::sleep(duration).await;
        drop(claim);
    }
}
