//! One Nexus instance's life, driven by the database.
//!
//! Start-up runs the access check and acts on it (take over through the
//! handoff, apply the schema, wait, or refuse). While running, the Nexus
//! executes the current target periodically and does simulated work that
//! holds database claims. When its own generation falls below the
//! blueprint's, it quiesces in the protocol's five steps and stops.
//!
//! Several instances run in one process (each with its own pool, as
//! separate processes would have); each can be stopped or killed at any
//! point. This crate holds no SQL and no policy of its own: it calls the
//! planner, the executor and the datastore.

mod lifecycle;
pub mod rehearsal;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_datastore::{DataStore, DataStoreConfig};
use baton_uuid_kinds::OmicronZoneUuid;
use slog::{Logger, o};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where a Nexus is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NexusState {
    /// Running the access check.
    Starting,
    /// No record yet while others exist: waiting to be registered.
    WaitingForRecord,
    /// Its record is `not_yet`: attempting the handoff.
    WaitingForHandoff,
    /// Applying schema migrations.
    UpdatingSchema,
    /// Using the database: executing blueprints and doing work.
    Running,
    /// Stepping down; the number is the protocol's step (1 to 5).
    Quiescing(u8),
    /// Its record says `quiesced`; it holds no connection and ended.
    Quiesced,
    /// The access check refused it, with the reason; it ended.
    Refused(String),
    /// Stopped by its owner.
    Stopped,
    /// Ended on an error that waiting would not cure.
    Failed(String),
}

impl NexusState {
    /// True for the states a Nexus never leaves.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            NexusState::Quiesced
                | NexusState::Refused(_)
                | NexusState::Stopped
                | NexusState::Failed(_)
        )
    }
}

/// How one Nexus instance behaves.
#[derive(Clone, Debug)]
pub struct NexusConfig {
    /// Its zone id (its identity in the records).
    pub id: OmicronZoneUuid,
    /// How often it executes the current target.
    pub execution_period: Duration,
    /// How long it waits before checking again (try later, handoff
    /// refused, peers not drained); jittered.
    pub retry_period: Duration,
    /// How often a unit of simulated work starts.
    pub work_period: Duration,
    /// How long a unit of simulated work holds its database claim.
    pub work_duration: Duration,
    /// The datastore settings of its own pool.
    pub datastore: DataStoreConfig,
}

impl NexusConfig {
    /// Settings for a Nexus with this id: execution every second, quick
    /// retries, a little simulated work.
    pub fn new(id: OmicronZoneUuid) -> NexusConfig {
        NexusConfig {
            id,
            execution_period: Duration::from_secs(1),
            retry_period: Duration::from_millis(200),
            work_period: Duration::from_millis(100),
            work_duration: Duration::from_millis(50),
            datastore: DataStoreConfig::default(),
        }
    }

    /// The same, with every period divided by `factor` (for tests and the
    /// demo, which want a whole handoff in seconds).
    pub fn faster(mut self, factor: u32) -> NexusConfig {
        self.execution_period /= factor;
        self.retry_period /= factor;
        self.work_period /= factor;
        self.work_duration /= factor;
        self
    }
}

/// A running Nexus instance.
pub struct Nexus {
    id: OmicronZoneUuid,
    history: Arc<Mutex<Vec<NexusState>>>,
    state: watch::Receiver<NexusState>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Nexus {
    /// Starts a Nexus on the current tokio runtime, against `url`.
    pub fn start(log: &Logger, url: &str, config: NexusConfig) -> Nexus {
        let log = log.new(o!("nexus_id" => config.id.to_string()));
        let datastore =
            DataStore::with_config(&log, url, config.datastore.clone());
        let (state_tx, state) = watch::channel(NexusState::Starting);
        let (stop, stop_rx) = watch::channel(false);
        let id = config.id;
        let history = Arc::new(Mutex::new(vec![NexusState::Starting]));
        let task = tokio::spawn(lifecycle::run(
            log,
            datastore,
            config,
            state_tx,
            history.clone(),
            stop_rx,
        ));
        Nexus {
            id,
            history,
            state,
            stop,
            task,
        }
    }

    /// Its id.
    pub fn id(&self) -> OmicronZoneUuid {
        self.id
    }

    /// Its state now.
    pub fn state(&self) -> NexusState {
        self.state.borrow().clone()
    }

    /// Every state it has been in, in order (a watch receiver may skip
    /// states that pass quickly; this does not).
    pub fn history(&self) -> Vec<NexusState> {
        self.history.lock().expect("never poisoned").clone()
    }

    /// A receiver of its state changes.
    pub fn watch(&self) -> watch::Receiver<NexusState> {
        self.state.clone()
    }

    /// Waits until its state satisfies `f`, returning that state (or the
    /// last state if the instance ended without satisfying it).
    pub async fn wait_for(
        &self,
        f: impl Fn(&NexusState) -> bool,
    ) -> NexusState {
        let mut rx = self.state.clone();
        match rx.wait_for(|s| f(s) || s.is_final()).await {
            Ok(state) => state.clone(),
            Err(_) => self.state(),
        }
    }

    /// Stops it at its next wait, releasing its connections, and waits
    /// for it to end.
    pub async fn stop(self) -> NexusState {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        self.state.borrow().clone()
    }

    /// Kills it now, wherever it is (a crash): the task is dropped at its
    /// current await point, and its connections with it.
    pub async fn kill(self) -> NexusState {
        self.task.abort();
        let _ = self.task.await;
        self.state.borrow().clone()
    }
}
