//! One Nexus instance's life inside a service that embeds Baton.
//!
//! The service gives Baton its identity, its database URL and its schema
//! migrations, and gets back a [`Nexus`] handle. Every database access
//! of the service goes through the handle's fenced pool
//! ([`Nexus::claim`]), and its in-flight work that is more than one
//! database call holds a [`WorkGuard`] ([`Nexus::work_guard`]).
//!
//! Baton runs the rest in a task of its own: the access check at
//! start-up and what it says (take over through the handoff, apply
//! pending migrations of Baton's tables and the service's, wait, or
//! refuse), periodic execution of the current target blueprint, and,
//! when the target puts this Nexus's generation behind, the protocol's
//! five quiesce steps: no new work; wait for every work guard and record
//! the drained blueprint; wait for the peers; close the pool to new
//! claims and wait for every claim; mark the record `quiesced`. Every
//! wait ends at its period ([`Periods`]) or as soon as the change it
//! waits for is announced (see `baton_datastore::Listener`), whichever
//! comes first. The crate `baton-rehearsal` rehearses a whole handoff
//! with these instances and times one as the service feels it.
//!
//! This crate holds no SQL of Baton's and no policy of its own: it calls
//! the planner, the executor and the datastore.
//!
//! ```
//! use std::time::Duration;
//!
//! use baton_datastore::diesel;
//! use baton_datastore::diesel_async::RunQueryDsl;
//! use baton_datastore::{Migration, SchemaComponent};
//! use baton_nexus::{Nexus, NexusConfig, NexusState, Periods};
//! use baton_uuid_kinds::OmicronZoneUuid;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let log = slog::Logger::root(slog::Discard, slog::o!());
//! // A throwaway PostgreSQL; a service passes its own database URL.
//! let db = baton_dev_db::DevDb::start(&log)?;
//! let schema = SchemaComponent::new(
//!     "myservice",
//!     vec![Migration::new(1, "things", "CREATE TABLE thing (id INT8)")],
//! )?;
//! let config = NexusConfig::new(OmicronZoneUuid::new_v4(), db.url())
//!     .with_component(schema)
//!     // Production periods are minutes; an example wants milliseconds.
//!     .with_periods(Periods::default().capped(Duration::from_millis(50)));
//! let nexus = Nexus::start(&log, config);
//! // A fresh database: the Nexus migrates Baton's tables and the
//! // service's, then runs.
//! assert_eq!(
//!     nexus.wait_for(|s| *s == NexusState::Running).await,
//!     NexusState::Running
//! );
//!
//! // A request: one claim from the fenced pool, one statement.
//! let mut claim = nexus.claim("insert a thing").await?;
//! diesel::sql_query("INSERT INTO thing VALUES (1)")
//!     .execute(claim.connection())
//!     .await?;
//! drop(claim);
//!
//! // A longer job: a work guard for its whole life, claims as it goes.
//! let guard = nexus.work_guard("nightly job")?;
//! let handle = nexus.clone();
//! let job = tokio::spawn(async move {
//!     let _guard = guard;
//!     let mut claim = handle.claim("nightly job").await?;
//!     diesel::sql_query("INSERT INTO thing VALUES (2)")
//!         .execute(claim.connection())
//!         .await?;
//!     Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
//! });
//! job.await?.map_err(|e| e.to_string())?;
//! assert_eq!(nexus.status().work_in_flight, 0);
//!
//! // A graceful stop (a restart): drains the work, leaves the record.
//! assert_eq!(nexus.stop().await, NexusState::Stopped);
//! # Ok(()) }
//! ```

mod lifecycle;
pub mod metrics;
mod report;
mod wake;
mod work;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_datastore::{Claim, DataStore, DataStoreConfig, SchemaComponent};
use baton_uuid_kinds::BlueprintUuid;
pub use baton_uuid_kinds::OmicronZoneUuid;
use chrono::{DateTime, Utc};
use slog::{Logger, o};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use baton_types::{Held, NexusState, NexusStatus, Readiness};
pub use work::WorkGuard;
use work::WorkTracker;

/// Whether the service may take new database claims in this state:
/// while running and in quiesce steps 1 to 3 (in-flight work still
/// needs them).
fn claims_allowed(state: &NexusState) -> bool {
    matches!(
        state,
        NexusState::Running | NexusState::Quiescing { step: 1..=3 }
    )
}

/// How long a Nexus waits between checks. The defaults are production
/// values, as in the reference system.
///
/// With announcements on (`DataStoreConfig::notifications`, the
/// default), these are only the fallback: each wait also ends as soon as
/// the change it waits for is announced (a new target for `execution`,
/// a peer's drained or quiesced mark for `drain_recheck`, the last
/// `quiesced` mark or the `not_yet` records for the retries), so the
/// handoff does not wait for a period to come round. A lost announcement
/// costs at most one period.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Periods {
    /// How often it executes the current target (and so notices that
    /// the target puts its generation behind). Default 60 s.
    pub execution: Duration,
    /// How often a quiescing Nexus re-checks that its peers drained.
    /// Default 5 s.
    pub drain_recheck: Duration,
    /// The first wait before retrying the handoff, a missing record or a
    /// failed database call; it doubles up to `retry_max`. Default
    /// 250 ms.
    pub retry_min: Duration,
    /// The longest wait between retries. Default 3 min.
    pub retry_max: Duration,
    /// How often it writes its status report for `baton status`.
    /// Default 5 s. `baton status` calls a Nexus that has not reported
    /// for three of these possibly dead.
    pub report: Duration,
}

impl Default for Periods {
    fn default() -> Self {
        Periods {
            execution: Duration::from_secs(60),
            drain_recheck: Duration::from_secs(5),
            retry_min: Duration::from_millis(250),
            retry_max: Duration::from_secs(180),
            report: Duration::from_secs(5),
        }
    }
}

impl Periods {
    /// The same, with no period longer than `cap` (for tests and demos
    /// that want a whole handoff in seconds). A zero cap counts as 1 ms.
    pub fn capped(mut self, cap: Duration) -> Periods {
        let cap = cap.max(Duration::from_millis(1));
        for period in [
            &mut self.execution,
            &mut self.drain_recheck,
            &mut self.retry_min,
            &mut self.retry_max,
            &mut self.report,
        ] {
            *period = (*period).min(cap);
        }
        self
    }
}

/// A deliberate bug in the quiesce steps, for tests that show their
/// checks catch it. Only in builds with the test-only `mutants` feature.
#[cfg(feature = "mutants")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NexusMutant {
    /// The real lifecycle.
    #[default]
    None,
    /// Step 2 does not wait for work guards.
    SkipStep2,
    /// Step 4 neither closes the pool nor waits for claims.
    SkipStep4,
    /// A deliberate bug of its datastore's (e.g.
    /// `baton_datastore::Mutant::NoFence`).
    Datastore(baton_datastore::Mutant),
}

/// How one Nexus instance behaves.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NexusConfig {
    /// Its zone id (its identity in the records, and the
    /// `application_name` of its connections).
    pub id: OmicronZoneUuid,
    /// The database.
    pub database_url: String,
    /// The pool's settings.
    pub datastore: DataStoreConfig,
    /// How long it waits between checks.
    pub periods: Periods,
    /// The service's schema components, migrated after Baton's own.
    pub components: Vec<SchemaComponent>,
    /// Whether its waits also end when the change they wait for is
    /// announced (default true; see [`Periods`]). Off, it polls only,
    /// though its own changes are still announced to others while
    /// `datastore.notifications` is on: for comparing the two, and for a
    /// deployment that wants no listening connection.
    pub wake_on_announcements: bool,
}

impl NexusConfig {
    /// A Nexus with this id on this database, with production periods
    /// and no schema of the service's own.
    pub fn new(id: OmicronZoneUuid, database_url: impl Into<String>) -> Self {
        NexusConfig {
            id,
            database_url: database_url.into(),
            datastore: DataStoreConfig::default(),
            periods: Periods::default(),
            components: Vec::new(),
            wake_on_announcements: true,
        }
    }

    /// Adds a schema component of the service's.
    pub fn with_component(mut self, component: SchemaComponent) -> Self {
        self.components.push(component);
        self
    }

    /// Sets the periods.
    pub fn with_periods(mut self, periods: Periods) -> Self {
        self.periods = periods;
        self
    }
}

/// Why the service may not use the database (or take new work) now.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NexusError {
    /// Start-up is not done: the Nexus is checking access, waiting for
    /// its record or the handoff, or migrating.
    #[error("Nexus {id} may not use the database yet: it is {state}")]
    NotYetRunning {
        /// The Nexus.
        id: OmicronZoneUuid,
        /// Its state.
        state: NexusState,
    },
    /// It is quiescing and this step refuses it (work from step 1,
    /// claims from step 4).
    #[error("Nexus {id} is quiescing (step {step}): it takes no new {what}")]
    Quiescing {
        /// The Nexus.
        id: OmicronZoneUuid,
        /// The step.
        step: u8,
        /// "work" or "database claims".
        what: &'static str,
    },
    /// It ended (quiesced, refused, stopped or failed).
    #[error("Nexus {id} has ended: it is {state}")]
    Ended {
        /// The Nexus.
        id: OmicronZoneUuid,
        /// Its last state.
        state: NexusState,
    },
    /// The database fenced it out: its record is no longer `active`
    /// (an operator forced it `quiesced` while it was paused or cut
    /// off), so nothing it runs can commit. Permanent; the Nexus ends.
    #[error(
        "Nexus {id} is fenced out of the database: its record is {}, so \
         nothing it runs can commit",
        state.map_or("missing".to_owned(), |s| s.to_string())
    )]
    Fenced {
        /// The Nexus.
        id: OmicronZoneUuid,
        /// Its record's state (`None`: it has none).
        state: Option<baton_types::NexusRecordState>,
    },
    /// The pool failed to hand out a connection.
    #[error(transparent)]
    Datastore(#[from] baton_datastore::Error),
}

impl NexusError {
    /// True when another instance may serve the request: this one is not
    /// in control yet, is stepping down, has ended or was fenced out, or
    /// its database was out of reach for a moment. A service answers such
    /// a request with 503 (the client retries another instance); any
    /// other error is the request's own.
    pub fn is_unavailable(&self) -> bool {
        match self {
            NexusError::NotYetRunning { .. }
            | NexusError::Quiescing { .. }
            | NexusError::Ended { .. }
            | NexusError::Fenced { .. } => true,
            NexusError::Datastore(e) => e.is_transient(),
        }
    }
}

/// The datastore settings of a Nexus: its own, fenced by its id.
fn datastore_config(config: &NexusConfig) -> DataStoreConfig {
    DataStoreConfig {
        application_name: Some(config.id.to_string()),
        nexus_id: Some(config.id),
        ..config.datastore.clone()
    }
}

/// The snapshot [`Nexus::status`] returns.
pub(crate) fn status_of(inner: &Inner) -> NexusStatus {
    let (since, drained) = {
        let shared = inner.shared.lock().expect("never poisoned");
        (shared.since, shared.drained)
    };
    let state = inner.state.borrow().clone();
    // The tracker closes just before quiesce step 1 is announced.
    let readiness = match state.readiness() {
        Readiness::Ready if inner.work.is_closed() => Readiness::Draining,
        readiness => readiness,
    };
    NexusStatus {
        nexus_id: inner.id,
        state,
        readiness,
        since,
        work_in_flight: inner.work.count() as u64,
        oldest_work: inner.work.oldest(),
        claims_held: inner.ds.outstanding_claims() as u64,
        oldest_claim: inner.ds.oldest_claim(),
        last_drained_blueprint_id: drained,
    }
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) since: DateTime<Utc>,
    pub(crate) history: Vec<NexusState>,
    pub(crate) drained: Option<BlueprintUuid>,
}

pub(crate) struct Inner {
    id: OmicronZoneUuid,
    ds: DataStore,
    work: Arc<WorkTracker>,
    shared: Arc<Mutex<Shared>>,
    state: watch::Receiver<NexusState>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
    reporting: Mutex<Option<JoinHandle<()>>>,
    /// Closed once the lifecycle task has ended and dropped what it
    /// held (its listener connection among them).
    lifecycle_done: watch::Receiver<()>,
    /// Closed once the reporting task has ended (and its reporter's
    /// connection with it).
    reporting_done: watch::Receiver<()>,
}

/// Spawns `task`, with a receiver whose sender is dropped when the task
/// ends, whether it returned or was aborted: a wait for the end that any
/// number of handles can share, unlike a `JoinHandle`.
fn spawn_tracked(
    task: impl Future<Output = ()> + Send + 'static,
) -> (JoinHandle<()>, watch::Receiver<()>) {
    let (done, done_rx) = watch::channel(());
    let handle = tokio::spawn(async move {
        task.await;
        drop(done);
    });
    (handle, done_rx)
}

/// Waits until the task behind `done` has ended.
async fn ended(mut done: watch::Receiver<()>) {
    // Nothing is ever sent: `changed` fails once the sender is dropped.
    while done.changed().await.is_ok() {}
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: nothing can stop the tasks any more.
        for task in [&self.task, &self.reporting] {
            if let Some(task) = task.lock().expect("never poisoned").take() {
                task.abort();
            }
        }
    }
}

/// A running Nexus instance: a cheap, cloneable handle.
///
/// Dropping the last handle kills the instance (as a crash would).
#[derive(Clone)]
pub struct Nexus {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Nexus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nexus")
            .field("id", &self.inner.id)
            .field("state", &*self.inner.state.borrow())
            .finish()
    }
}

impl Nexus {
    /// Starts a Nexus on the current tokio runtime. It connects lazily;
    /// failures show in its state. Its claims are fenced by the
    /// database (see [`NexusError::Fenced`]).
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(log: &Logger, config: NexusConfig) -> Nexus {
        let log = log.new(o!("nexus_id" => config.id.to_string()));
        let ds = DataStore::with_config(
            &log,
            &config.database_url,
            datastore_config(&config),
        );
        Nexus::launch(log, config, ds, lifecycle::NO_MUTANT)
    }

    /// [`Nexus::start`] with a deliberate bug, for the tests' teeth
    /// only. Only in builds with the test-only `mutants` feature.
    #[cfg(feature = "mutants")]
    pub fn start_with_mutant(
        log: &Logger,
        config: NexusConfig,
        mutant: NexusMutant,
    ) -> Nexus {
        use baton_datastore::Mutant;
        let log = log.new(o!("nexus_id" => config.id.to_string()));
        let db = match mutant {
            NexusMutant::SkipStep4 => Mutant::QuiescedBeforeDrain,
            NexusMutant::Datastore(mutant) => mutant,
            NexusMutant::None | NexusMutant::SkipStep2 => Mutant::None,
        };
        let ds = DataStore::with_mutant(
            &log,
            &config.database_url,
            datastore_config(&config),
            db,
        );
        Nexus::launch(log, config, ds, mutant)
    }

    fn launch(
        log: Logger,
        config: NexusConfig,
        ds: DataStore,
        mutant: lifecycle::Mutant,
    ) -> Nexus {
        let (state_tx, state) = watch::channel(NexusState::Starting);
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Mutex::new(Shared {
            since: Utc::now(),
            history: vec![NexusState::Starting],
            drained: None,
        }));
        let work = Arc::new(WorkTracker::default());
        let id = config.id;
        let slot = report::SharedSlot::default();
        let report_period = config.periods.report;
        let report_log = log.clone();
        let wake = tokio::sync::Mutex::new(wake::Wakeups::new(
            ds.clone(),
            &log,
            config.wake_on_announcements,
        ));
        let (task, lifecycle_done) =
            spawn_tracked(lifecycle::run(lifecycle::Life {
                mutant,
                wake,
                log,
                ds: ds.clone(),
                work: work.clone(),
                config,
                state: state_tx,
                shared: shared.clone(),
                stop: stop_rx,
                report: slot.clone(),
            }));
        // The reporting task starts once `inner` exists (it holds a weak
        // reference); its end is tracked from here.
        let (reporting_tx, reporting_done) = watch::channel(());
        let inner = Arc::new(Inner {
            id,
            ds,
            work,
            shared,
            state,
            stop,
            task: Mutex::new(Some(task)),
            reporting: Mutex::new(None),
            lifecycle_done,
            reporting_done,
        });
        let reporting = tokio::spawn(report::run(
            Arc::downgrade(&inner),
            slot,
            report_period,
            report_log,
            reporting_tx,
        ));
        *inner.reporting.lock().expect("never poisoned") = Some(reporting);
        Nexus { inner }
    }

    /// Its id.
    pub fn id(&self) -> OmicronZoneUuid {
        self.inner.id
    }

    /// Its state now.
    pub fn state(&self) -> NexusState {
        self.inner.state.borrow().clone()
    }

    /// Every state it has been in, in order (a watch receiver may skip
    /// states that pass quickly; this does not).
    pub fn history(&self) -> Vec<NexusState> {
        self.inner
            .shared
            .lock()
            .expect("never poisoned")
            .history
            .clone()
    }

    /// A receiver of its state changes.
    pub fn watch(&self) -> watch::Receiver<NexusState> {
        self.inner.state.clone()
    }

    /// A snapshot of its state and load, for the service's own API.
    pub fn status(&self) -> NexusStatus {
        status_of(&self.inner)
    }

    /// A database connection from the fenced pool, counted until
    /// dropped. Refused before the Nexus runs, from quiesce step 4 on,
    /// and once it ended.
    pub async fn claim(&self, op: &'static str) -> Result<Claim, NexusError> {
        let state = self.state();
        if !claims_allowed(&state) {
            return Err(self.refusal(state, "database claims"));
        }
        // The fence closes at step 4: a claim racing it is refused there.
        self.inner.ds.claim(op).await.map_err(|e| match e {
            baton_datastore::Error::Quiesced => {
                self.refusal(self.state(), "database claims")
            }
            baton_datastore::Error::Fenced { state, .. } => {
                NexusError::Fenced {
                    id: self.inner.id,
                    state,
                }
            }
            e => NexusError::Datastore(e),
        })
    }

    /// A guard for a unit of in-flight work. Refused before the Nexus
    /// runs and from quiesce step 1 on.
    pub fn work_guard(
        &self,
        op: &'static str,
    ) -> Result<WorkGuard, NexusError> {
        let state = self.state();
        if state != NexusState::Running {
            return Err(self.refusal(state, "work"));
        }
        // Step 1 closes the tracker: a guard racing it is refused there.
        work::enter(&self.inner.work, op)
            .ok_or_else(|| self.refusal(self.state(), "work"))
    }

    fn refusal(&self, state: NexusState, what: &'static str) -> NexusError {
        let id = self.inner.id;
        match state {
            NexusState::Quiescing { step } => {
                NexusError::Quiescing { id, step, what }
            }
            // The tracker closes just before step 1 is announced.
            NexusState::Running => NexusError::Quiescing { id, step: 1, what },
            s if s.is_final() => NexusError::Ended { id, state: s },
            state => NexusError::NotYetRunning { id, state },
        }
    }

    /// Waits until its state satisfies `f`, returning that state (or the
    /// final state if it ended without satisfying it).
    pub async fn wait_for(
        &self,
        f: impl Fn(&NexusState) -> bool,
    ) -> NexusState {
        let mut rx = self.inner.state.clone();
        match rx.wait_for(|s| f(s) || s.is_final()).await {
            Ok(state) => state.clone(),
            Err(_) => self.state(),
        }
    }

    /// Stops it gracefully without quiescing (as for a process restart):
    /// no new work, waits for the work in flight and every claim, and
    /// ends as [`NexusState::Stopped`] with its record unchanged. If it
    /// was already quiescing or starting, it ends where it is; a restart
    /// picks up from the record.
    ///
    /// It returns once the instance has let go of the database: its
    /// tasks have ended, its listener and reporter connections are
    /// dropped and its pools have closed every connection, so the
    /// process may exit, or a test stop its server, at once. (The same
    /// happens after any other end, through [`Nexus::release`].)
    pub async fn stop(&self) -> NexusState {
        let _ = self.inner.stop.send(true);
        let state = self.join().await;
        self.release().await;
        state
    }

    /// Once it has ended (quiesced, refused, failed, fenced, stopped),
    /// waits for its tasks to finish and closes every connection it
    /// still holds; returns at once otherwise. [`Nexus::stop`] calls it.
    /// Claims are refused once it ended, and a graceful stop waits for
    /// every claim, so no connection is in use then; after another end,
    /// a claim the service still holds keeps its connection until it is
    /// dropped.
    pub async fn release(&self) {
        if !self.state().is_final() {
            return;
        }
        ended(self.inner.lifecycle_done.clone()).await;
        ended(self.inner.reporting_done.clone()).await;
        self.inner.ds.close_idle_connections().await;
    }

    /// Kills it now, wherever it is (a crash): its task is dropped at
    /// its current await point, and its connections with it.
    pub async fn kill(&self) -> NexusState {
        let task = self.inner.task.lock().expect("never poisoned").take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        self.state()
    }

    /// Waits for it to end, returning the final state (or, if it was
    /// killed, the state it was killed in).
    pub async fn join(&self) -> NexusState {
        self.wait_for(NexusState::is_final).await
    }
}
