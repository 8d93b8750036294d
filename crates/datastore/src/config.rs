//! The datastore handle: its settings, its pools and what it built once
//! (the guarded statements).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use baton_types::NexusRecordState;
use baton_uuid_kinds::OmicronZoneUuid;
use bb8::RunError;
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::bb8::{Pool, PooledConnection};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use slog::{Logger, o};
use tokio::sync::watch;

use crate::Error;
use crate::connect::{ConnectFailure, Connector, FailureSink, redact_url};
use crate::fence::Fence;
use crate::guards::{Guards, Isolation};
use crate::queries::{FenceLock, Queries};

/// How a datastore connects and retries. Build it from
/// `DataStoreConfig::default()` with `..` so that new fields take their
/// defaults.
#[derive(Clone, Debug)]
pub struct DataStoreConfig {
    /// Connections in the pool, at most.
    pub pool_size: u32,
    /// How long to wait for a connection before giving up.
    pub connect_timeout: Duration,
    /// Attempts of one operation under serialization failures.
    pub max_attempts: u32,
    /// The first retry's backoff ceiling; doubles per attempt.
    pub base_backoff: Duration,
    /// Sent as `application_name` on every connection, so an operator
    /// can see which process holds a backend (a Nexus sends its id; with
    /// `nexus_id` set and this unset, the id is sent).
    pub application_name: Option<String>,
    /// The Nexus this datastore serves, if any. When set, every claim
    /// ([`DataStore::claim`]) is fenced by the database: its connection
    /// holds the Nexus's fence lock and found the Nexus's record
    /// `active` (or the table empty) when it was set up, so once the
    /// record says `quiesced` nothing run through a claim can commit
    /// (see `PROTOCOL.md`, "The database fence"). Baton's own protocol
    /// statements (the access check, the handoff, the record step) run
    /// on a small pool of their own, guarded by their SQL.
    pub nexus_id: Option<OmicronZoneUuid>,
    /// How long one attempt of an operation (a statement, or a whole
    /// transaction) may wait for the server before it fails and its
    /// connection is discarded. Default 2 min: far above any legitimate
    /// wait of Baton's statements (they take no long locks, and a
    /// serialization conflict fails fast under SERIALIZABLE), so only a
    /// server that stopped answering (a node reset behind a proxy that
    /// keeps the TCP connection up, where keepalives see nothing) runs
    /// into it, and then a drain waiting on that claim ends instead of
    /// hanging.
    pub statement_deadline: Duration,
    /// Whether the handoff's rare state changes announce themselves with
    /// `pg_notify` (see [`Listener`](crate::Listener)), so that waiters
    /// wake at once instead of at their next poll. Default on. Turn it
    /// off on a database without `LISTEN`/`NOTIFY` (CockroachDB): every
    /// wait then polls, as it also does whenever an announcement is lost.
    pub notifications: bool,
}

impl Default for DataStoreConfig {
    fn default() -> Self {
        DataStoreConfig {
            pool_size: 8,
            connect_timeout: Duration::from_secs(10),
            max_attempts: 12,
            base_backoff: Duration::from_millis(2),
            application_name: None,
            nexus_id: None,
            statement_deadline: Duration::from_secs(120),
            notifications: true,
        }
    }
}

/// The connections of a fenced datastore's own protocol statements, at
/// most: the lifecycle runs one at a time, the executor's steps too.
const CONTROL_POOL_SIZE: u32 = 3;

/// Access to Baton's database for one process (one Nexus, or the CLI).
///
/// Cloning is cheap and shares the pools and the drain fence.
///
/// Connects lazily, and needs a tokio runtime: construct it inside one
/// (in a `#[tokio::main]` function, or under `Runtime::enter`).
#[derive(Clone)]
pub struct DataStore {
    pub(crate) log: Logger,
    /// Baton's own statements; also the claims of an unfenced store.
    pub(crate) control: Pooled,
    /// A fenced store's claims: every connection enrolled at set-up.
    pub(crate) service: Option<Pooled>,
    pub(crate) fence: Arc<Fence>,
    pub(crate) config: Arc<DataStoreConfig>,
    pub(crate) guards: Guards,
    pub(crate) isolation: Isolation,
    pub(crate) queries: Arc<Queries>,
    url: Arc<str>,
    /// Opens every dedicated connection.
    pub(crate) connector: Connector,
    /// Set once the database refused this store's Nexus a service
    /// connection: its record is no longer `active`.
    pub(crate) fenced: Arc<watch::Sender<Option<Option<NexusRecordState>>>>,
    /// Serialization failures retried, over every clone of this store.
    pub(crate) retries: Arc<AtomicU64>,
}

/// A pool and the failures of its connection attempts, as they happen.
#[derive(Clone)]
pub(crate) struct Pooled {
    pool: Pool<AsyncPgConnection>,
    failures: Arc<watch::Sender<Option<ConnectFailure>>>,
    size: u32,
}

impl std::fmt::Debug for DataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataStore")
            .field("url", &redact_url(&self.url))
            .finish()
    }
}

impl DataStore {
    /// A datastore for `url` with default settings. Connects lazily: the
    /// first operation opens the first connection.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the pool spawns its connection tasks).
    pub fn new(log: &Logger, url: &str) -> DataStore {
        DataStore::with_config(log, url, DataStoreConfig::default())
    }

    /// A datastore with explicit settings.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as [`DataStore::new`].
    pub fn with_config(
        log: &Logger,
        url: &str,
        config: DataStoreConfig,
    ) -> DataStore {
        DataStore::build(log, url, config, Guards::ALL, Isolation::Serializable)
    }

    /// The one constructor; only a mutant build passes other guards.
    pub(crate) fn build(
        log: &Logger,
        url: &str,
        mut config: DataStoreConfig,
        guards: Guards,
        isolation: Isolation,
    ) -> DataStore {
        if config.application_name.is_none() {
            config.application_name = config.nexus_id.map(|id| id.to_string());
        }
        let connector = Connector::new(url, &config, isolation);
        let fenced = Arc::new(watch::Sender::new(None));
        let control_size = match config.nexus_id {
            Some(_) => config.pool_size.min(CONTROL_POOL_SIZE),
            None => config.pool_size,
        };
        let control = Pooled::new(url, &config, control_size, {
            let connector = connector.clone();
            move || {
                let connector = connector.clone();
                async move { connector.connect().await }
            }
        });
        let service = config.nexus_id.map(|nexus_id| {
            let enrol = guards.enrol.then(|| FenceLock::of(nexus_id));
            let connector = connector.clone();
            let fenced = fenced.clone();
            Pooled::new(url, &config, config.pool_size, move || {
                let connector = connector.clone();
                let fenced = fenced.clone();
                async move {
                    let mut conn = connector.connect().await?;
                    if let Some(lock) = enrol {
                        connector
                            .enrol(&mut conn, nexus_id, lock)
                            .await
                            .inspect_err(|f| {
                                if let Some(state) = f.fenced {
                                    fenced.send_replace(Some(state));
                                }
                            })?;
                    }
                    Ok(conn)
                }
            })
        });
        DataStore {
            log: log.new(o!("component" => "datastore")),
            control,
            service,
            fence: Arc::new(Fence::new(guards.drain)),
            queries: Arc::new(Queries::build(guards, config.notifications)),
            config: Arc::new(config),
            guards,
            isolation,
            url: Arc::from(url),
            connector,
            fenced,
            retries: Arc::default(),
        }
    }

    /// A connection of its own, outside the pool and the fence, set up
    /// like a pooled one; closed when dropped. For the rare work that
    /// must hold a session-level lock (migrations): dropping it midway
    /// closes the connection, so the lock can never outlive its holder
    /// the way it could on a connection returned to the pool.
    pub(crate) async fn dedicated(
        &self,
        op: &'static str,
    ) -> Result<AsyncPgConnection, Error> {
        self.connector
            .connect()
            .await
            .map_err(|f| Error::connection(op, &f))
    }

    /// [`DataStore::dedicated`], enrolled in this store's fence when it
    /// serves a Nexus: for the service's migrations, which write the
    /// service's tables.
    pub(crate) async fn dedicated_fenced(
        &self,
        op: &'static str,
    ) -> Result<AsyncPgConnection, Error> {
        let mut conn = self.dedicated(op).await?;
        if let (Some(nexus_id), true) =
            (self.config.nexus_id, self.guards.enrol)
        {
            let lock = FenceLock::of(nexus_id);
            if let Err(f) =
                self.connector.enrol(&mut conn, nexus_id, lock).await
            {
                return Err(self.refused(op, &f));
            }
        }
        Ok(conn)
    }

    /// A connection failure as the caller sees it: [`Error::Fenced`]
    /// when the database refused this store's Nexus.
    ///
    /// A refusal reaches a claim through the pool, which keeps only the
    /// failure's text: the pool's set-up has already set `fenced`, which
    /// is permanent, so that is what is read here.
    fn refused(&self, op: &'static str, failure: &ConnectFailure) -> Error {
        if let Some(state) = failure.fenced {
            self.fenced.send_replace(Some(state));
        }
        match (*self.fenced.borrow(), self.config.nexus_id) {
            (Some(state), Some(nexus_id)) => Error::Fenced { nexus_id, state },
            _ => Error::connection(op, failure),
        }
    }

    /// A connection of Baton's own statements (or an unfenced store's
    /// claim).
    pub(crate) async fn pooled_control(
        &self,
        op: &'static str,
    ) -> Result<PooledConnection<'static, AsyncPgConnection>, Error> {
        self.pooled(&self.control, op).await
    }

    /// A connection for a claim: enrolled in the fence if this store
    /// serves a Nexus.
    pub(crate) async fn pooled_service(
        &self,
        op: &'static str,
    ) -> Result<PooledConnection<'static, AsyncPgConnection>, Error> {
        if let (Some(state), Some(nexus_id)) =
            (*self.fenced.borrow(), self.config.nexus_id)
        {
            return Err(Error::Fenced { nexus_id, state });
        }
        match &self.service {
            Some(service) => self.pooled(service, op).await,
            None => self.pooled(&self.control, op).await,
        }
    }

    /// A pooled connection; a failed connection attempt while waiting
    /// fails it at once with the server's reason, and a wait that runs
    /// out says what it waited for.
    async fn pooled(
        &self,
        pooled: &Pooled,
        op: &'static str,
    ) -> Result<PooledConnection<'static, AsyncPgConnection>, Error> {
        let mut failures = pooled.failures.subscribe();
        tokio::select! {
            got = pooled.pool.get_owned() => got.map_err(|e| match e {
                RunError::User(e) => {
                    self.refused(op, &ConnectFailure::from_pool(&e))
                }
                RunError::TimedOut => Error::Connection {
                    op,
                    message: format!(
                        "no connection within {} s: all {} of the pool's \
                         connections are in use, or the server does not \
                         answer",
                        self.config.connect_timeout.as_secs_f64(),
                        pooled.size
                    ),
                    transient: true,
                },
            }),
            Ok(()) = failures.changed() => {
                let failure = failures.borrow_and_update().clone();
                Err(match failure {
                    Some(failure) => self.refused(op, &failure),
                    None => Error::Connection {
                        op,
                        message: "a connection attempt failed".to_owned(),
                        transient: true,
                    },
                })
            }
        }
    }

    /// The state of this store's Nexus's record once the database
    /// refused it a connection (it is fenced out), else `None`. A Nexus
    /// ends when this is set.
    pub fn fenced(&self) -> Option<Option<NexusRecordState>> {
        *self.fenced.borrow()
    }

    /// Resolves once the database has refused this store's Nexus (see
    /// [`DataStore::fenced`]). Cancel-safe.
    pub async fn wait_until_fenced(&self) -> Option<NexusRecordState> {
        let mut rx = self.fenced.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(state) => state.flatten(),
            // The sender lives as long as `self`.
            Err(_) => None,
        }
    }

    /// Whether this datastore's statements announce their changes (see
    /// [`DataStoreConfig::notifications`]).
    pub fn notifies(&self) -> bool {
        self.config.notifications
    }

    /// How many times an operation was retried after a serialization
    /// failure, over the life of this datastore and its clones.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// The URL, password redacted.
    pub fn url_redacted(&self) -> String {
        redact_url(&self.url)
    }
}

impl DataStore {
    /// Closes every idle connection of this store's pools and returns
    /// how many connections they still hold: those in use (a claim not
    /// yet dropped, an operation under way), which go back to the pool
    /// as usual. Dedicated connections (a [`Listener`], a
    /// [`Reporter`]) close when they are dropped.
    ///
    /// For a process about to exit or a test about to stop its server: a
    /// pool keeps its idle connections open until the store's last clone
    /// is dropped. The store stays usable; a later operation opens a new
    /// connection. Each connection's socket is shut as soon as the task
    /// that drives it next runs, and the server then ends its session.
    ///
    /// [`Listener`]: crate::Listener
    /// [`Reporter`]: crate::Reporter
    pub async fn close_idle_connections(&self) -> u32 {
        let mut in_use = 0;
        for pooled in std::iter::once(&self.control).chain(&self.service) {
            in_use += pooled.close_idle().await;
        }
        // Let the connections' driver tasks run and shut their sockets.
        tokio::task::yield_now().await;
        in_use
    }
}

impl Pooled {
    /// Takes each idle connection out and drops it marked broken, which
    /// the pool then closes instead of keeping; returns how many
    /// connections are left (in use). The pool keeps no minimum of idle
    /// connections, so it opens none to replace them.
    async fn close_idle(&self) -> u32 {
        // Bounded: the pool holds at most `size`, and takes back none.
        for _ in 0..=self.size {
            if self.pool.state().idle_connections == 0 {
                break;
            }
            // An idle connection is handed out at once; the timeout only
            // covers one taken by someone else meanwhile.
            let wait = Duration::from_millis(100);
            match tokio::time::timeout(wait, self.pool.get()).await {
                Ok(Ok(mut conn)) => crate::retry::discard(&mut conn),
                Ok(Err(_)) | Err(_) => break,
            }
        }
        self.pool.state().connections
    }
    fn new<F, Fut>(
        url: &str,
        config: &DataStoreConfig,
        size: u32,
        connect: F,
    ) -> Pooled
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<AsyncPgConnection, ConnectFailure>>
            + Send
            + 'static,
    {
        let mut manager_config = ManagerConfig::default();
        // Every connection runs every transaction, single statements
        // included, at SERIALIZABLE, whatever the server's default (the
        // connector's set-up says so).
        manager_config.custom_setup = Box::new(move |_url| {
            let attempt = connect();
            Box::pin(async move {
                attempt.await.map_err(ConnectFailure::into_diesel)
            })
        });
        // No extra check query on checkout: an operation is one statement,
        // and a broken connection is caught by bb8's `has_broken` (which
        // also discards a connection returned inside a transaction).
        manager_config.recycling_method = RecyclingMethod::Fast;
        let manager =
            AsyncDieselConnectionManager::new_with_config(url, manager_config);
        let failures = Arc::new(watch::Sender::new(None));
        let pool = Pool::builder()
            .max_size(size)
            .min_idle(Some(0))
            .connection_timeout(config.connect_timeout)
            // A failed attempt goes to the sink, and from there to the
            // claim waiting for it (see connect.rs), not round again.
            .retry_connection(false)
            .error_sink(Box::new(FailureSink(failures.clone())))
            .build_unchecked(manager);
        Pooled {
            pool,
            failures,
            size,
        }
    }
}
