//! The datastore: a pool behind the drain fence, and the one retrying
//! SERIALIZABLE wrapper that every operation runs through.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bb8::RunError;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::bb8::{Pool, PooledConnection};
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolableConnection,
    RecyclingMethod,
};
use slog::{Logger, info, o};
use tokio::sync::watch;

use crate::Error;
use crate::connect::{ConnectFailure, Connector, FailureSink};
use crate::fence::{Claim, Fence, OldestClaim, QuiescedClaim};
use crate::notify::{EventKind, announcing};

/// A boxed future of one statement, borrowing the connection.
pub type StatementFuture<'c, T> =
    Pin<Box<dyn Future<Output = Result<T, DieselError>> + Send + 'c>>;

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
    /// can see which process holds a backend (a Nexus sends its id).
    pub application_name: Option<String>,
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
    /// A deliberate bug, for the model test's teeth only.
    #[cfg(feature = "mutants")]
    pub mutant: crate::Mutant,
}

impl Default for DataStoreConfig {
    fn default() -> Self {
        DataStoreConfig {
            pool_size: 8,
            connect_timeout: Duration::from_secs(10),
            max_attempts: 12,
            base_backoff: Duration::from_millis(2),
            application_name: None,
            statement_deadline: Duration::from_secs(120),
            notifications: true,
            #[cfg(feature = "mutants")]
            mutant: crate::Mutant::None,
        }
    }
}

/// Access to Baton's database for one process (one Nexus, or the CLI).
///
/// Cloning is cheap and shares the pool and its drain fence.
#[derive(Clone)]
pub struct DataStore {
    pub(crate) log: Logger,
    pool: Pool<AsyncPgConnection>,
    fence: Arc<Fence>,
    config: Arc<DataStoreConfig>,
    url: Arc<str>,
    /// Opens every connection, pooled or dedicated.
    connector: Connector,
    /// The pool's failed connection attempts, as they happen.
    connect_failures: Arc<watch::Sender<Option<ConnectFailure>>>,
    /// Serialization failures retried, over every clone of this store.
    retries: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for DataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataStore")
            .field("url", &redact_url(&self.url))
            .finish()
    }
}

/// The URL with any password replaced by `****`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    // Forms the URL parser refuses keep the hand-written redaction: a
    // multi-host URL (`h1:5432,h2:5433` is not one host and port), and a
    // `key=value` string, which is not a URL at all and passes unchanged,
    // as it always has.
    let Ok(mut parsed) = url::Url::parse(url) else {
        return redact_by_hand(url);
    };
    if parsed.password().is_some() && parsed.set_password(Some("****")).is_err()
    {
        return redact_by_hand(url);
    }
    // The raw query, not `query_pairs`: re-encoding would turn a socket
    // path's `/` into `%2F` and make the redacted URL differ needlessly.
    if let Some(query) = parsed.query() {
        let query = redact_query(query);
        parsed.set_query(Some(&query));
    }
    parsed.into()
}

/// A query string with every `...password=` parameter's value replaced.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|part| match part.split_once("password=") {
            Some((before, _)) => format!("{before}password=****"),
            None => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// [`redact_url`] for the forms the URL parser refuses.
fn redact_by_hand(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let mut out = url[..scheme_end].to_owned();
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":****");
                }
                None => out.push_str(userinfo),
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    out.push_str(&redact_query(&rest[authority_end..]));
    out
}

/// Checks, without connecting, that `url` is a connection string the
/// driver understands: a `postgresql://` URL (Unix-socket and multi-host
/// forms included, e.g. `postgresql:///baton?host=/a,/b&
/// target_session_attrs=read-write`) or `key=value` pairs. A malformed
/// one is bad input that no retry fixes.
///
/// ```
/// assert!(baton_datastore::check_url("postgresql://u@%2Ftmp/db").is_ok());
/// assert!(baton_datastore::check_url("postgresql://u@h:notaport/db").is_err());
/// ```
pub fn check_url(url: &str) -> Result<(), Error> {
    crate::connect::parse(url)
        .map(|_| ())
        .map_err(Error::MalformedUrl)
}

/// A SQL string literal (single quotes doubled).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl DataStore {
    /// A datastore for `url` with default settings. Connects lazily: the
    /// first operation opens the first connection.
    pub fn new(log: &Logger, url: &str) -> DataStore {
        DataStore::with_config(log, url, DataStoreConfig::default())
    }

    /// A datastore with explicit settings.
    pub fn with_config(
        log: &Logger,
        url: &str,
        config: DataStoreConfig,
    ) -> DataStore {
        let mut setup = format!(
            "SET default_transaction_isolation TO '{}';",
            isolation(&config)
        );
        if let Some(name) = &config.application_name {
            setup.push_str(&format!(
                "SET application_name TO {};",
                literal(name)
            ));
        }
        let setup: Arc<str> = Arc::from(setup);
        let connector =
            Connector::new(url, setup.clone(), config.connect_timeout);
        let for_pool = connector.clone();
        let mut manager_config = ManagerConfig::default();
        // Every connection runs every transaction, single statements
        // included, at SERIALIZABLE, whatever the server's default.
        manager_config.custom_setup = Box::new(move |_url| {
            let connector = for_pool.clone();
            Box::pin(async move { connector.connect_for_pool().await })
        });
        // No extra check query on checkout: an operation is one statement,
        // and a broken connection is caught by bb8's `has_broken` (which
        // also discards a connection returned inside a transaction).
        manager_config.recycling_method = RecyclingMethod::Fast;
        let manager =
            AsyncDieselConnectionManager::new_with_config(url, manager_config);
        let connect_failures = Arc::new(watch::Sender::new(None));
        let pool = Pool::builder()
            .max_size(config.pool_size)
            .min_idle(Some(0))
            .connection_timeout(config.connect_timeout)
            // A failed attempt goes to the sink, and from there to the
            // claim waiting for it (see connect.rs), not round again.
            .retry_connection(false)
            .error_sink(Box::new(FailureSink(connect_failures.clone())))
            .build_unchecked(manager);
        DataStore {
            log: log.new(o!("component" => "datastore")),
            pool,
            fence: Arc::new(Fence::new(fence_waits_for_drain(&config))),
            config: Arc::new(config),
            url: Arc::from(url),
            connector,
            connect_failures,
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

    /// A pooled connection; a failed connection attempt while waiting
    /// fails it at once with the server's reason, and a wait that runs
    /// out says what it waited for.
    async fn pooled(
        &self,
        op: &'static str,
    ) -> Result<PooledConnection<'static, AsyncPgConnection>, Error> {
        let mut failures = self.connect_failures.subscribe();
        tokio::select! {
            got = self.pool.get_owned() => got.map_err(|e| match e {
                RunError::User(e) => {
                    Error::connection(op, &ConnectFailure::from_pool(&e))
                }
                RunError::TimedOut => Error::Connection {
                    op,
                    message: format!(
                        "no connection within {} s: all {} of the pool's \
                         connections are in use, or the server does not \
                         answer",
                        self.config.connect_timeout.as_secs_f64(),
                        self.config.pool_size
                    ),
                    transient: true,
                },
            }),
            Ok(()) = failures.changed() => {
                let failure = failures.borrow_and_update().clone();
                Err(match failure {
                    Some(failure) => Error::connection(op, &failure),
                    None => Error::Connection {
                        op,
                        message: "a connection attempt failed".to_owned(),
                        transient: true,
                    },
                })
            }
        }
    }

    /// A connection, counted by the drain fence until dropped. Fails with
    /// [`Error::Quiesced`] once [`DataStore::quiesce`] was called.
    ///
    /// `op` names what the claim is for; it shows in logs and in what a
    /// drain reports it waits on.
    pub async fn claim(&self, op: &'static str) -> Result<Claim, Error> {
        let ticket = self.fence.enter(op)?;
        // Counted from here: if this future is dropped while waiting for
        // a connection, the guard gives the ticket back.
        let entered = Entered {
            fence: &self.fence,
            ticket: Some(ticket),
        };
        // A connection whose server backend died (killed, or the server
        // restarted) can sit in the pool until it is next handed out;
        // skip it for a fresh one. The check reads local state only.
        for _ in 0..=self.config.pool_size {
            match self.pooled(op).await {
                Ok(mut conn) => {
                    if conn.is_broken() {
                        continue;
                    }
                    return Ok(Claim {
                        conn,
                        fence: self.fence.clone(),
                        ticket: entered.keep(),
                        op,
                        since: std::time::Instant::now(),
                        store: self.clone(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Connection {
            op,
            message: "every pooled connection was broken".to_owned(),
            transient: true,
        })
    }

    /// Closes the pool to new claims. Claims already out stay valid.
    pub fn quiesce(&self) {
        info!(self.log, "datastore closed to new claims";
            "outstanding" => self.fence.outstanding());
        self.fence.close();
    }

    /// True once [`DataStore::quiesce`] was called.
    pub fn is_quiesced(&self) -> bool {
        self.fence.is_closed()
    }

    /// Claims not yet released.
    pub fn outstanding_claims(&self) -> usize {
        self.fence.outstanding()
    }

    /// The oldest claim still out, if any: what a drain waits on.
    pub fn oldest_claim(&self) -> Option<OldestClaim> {
        self.fence.oldest()
    }

    /// Resolves when every outstanding claim has been released.
    pub async fn wait_for_drain(&self) {
        self.fence.drained().await
    }

    /// The single connection allowed after quiescing, once drained, to
    /// write one's own `quiesced` record.
    pub(crate) async fn reserved_quiesce_claim(
        &self,
    ) -> Result<QuiescedClaim, Error> {
        self.fence.take_reserved()?;
        match self.pooled("reserved quiesce claim").await {
            Ok(conn) => Ok(QuiescedClaim { conn }),
            Err(e) => {
                self.fence.return_reserved();
                Err(e)
            }
        }
    }

    /// Gives the reserved quiesce claim back after the mark failed.
    pub(crate) fn return_reserved_quiesce_claim(&self) {
        self.fence.return_reserved();
    }

    /// Runs `f` (one statement: its own implicit SERIALIZABLE
    /// transaction) on a claimed connection, retrying the whole of it on
    /// serialization failure with jittered exponential backoff.
    pub(crate) async fn retrying<T, F>(
        &self,
        op: &'static str,
        f: F,
    ) -> Result<T, Error>
    where
        T: 'static,
        F: for<'c> Fn(&'c mut AsyncPgConnection) -> StatementFuture<'c, T>,
    {
        self.retry_loop(op, Conn::Fresh, &Statement(f))
            .await
            .map_err(Error::from)
    }

    /// Runs `f` (one statement: its own implicit SERIALIZABLE
    /// transaction) on a fresh claim, retrying the whole of it on
    /// serialization failure (and on a connection found dead before the
    /// statement was sent) with jittered exponential backoff. Database
    /// errors come back as [`Error::Database`], SQLSTATE kept.
    pub async fn run<T, F>(&self, op: &'static str, f: F) -> Result<T, Error>
    where
        T: 'static,
        F: for<'c> Fn(&'c mut AsyncPgConnection) -> StatementFuture<'c, T>,
    {
        self.retrying(op, f).await
    }

    /// Runs `f` (one statement) on `conn`, the caller's own connection,
    /// retrying it there on serialization failure.
    pub(crate) async fn retry_on<T, F>(
        &self,
        op: &'static str,
        conn: &mut AsyncPgConnection,
        f: F,
    ) -> Result<T, Error>
    where
        T: 'static,
        F: for<'c> Fn(&'c mut AsyncPgConnection) -> StatementFuture<'c, T>,
    {
        self.retry_loop(op, Conn::Held(conn), &Statement(f))
            .await
            .map_err(Error::from)
    }

    /// Runs `f` inside one SERIALIZABLE transaction on a connection of
    /// its own, retrying the whole transaction (a fresh connection each
    /// time) on serialization failure, with jittered exponential backoff
    /// and a bounded number of attempts.
    ///
    /// `f` returns [`TxError::Abort`] with an error of the caller's own
    /// to roll back and stop ([`TransactionError::Aborted`]); a database
    /// error (`?` on a diesel result) rolls back and is retried if it is
    /// a serialization failure, else returned as
    /// [`TransactionError::Datastore`]. The transaction is opened through
    /// the connection's transaction manager, so if this future is
    /// dropped midway the connection is discarded, never handed to the
    /// next caller with the transaction open.
    ///
    /// ```no_run
    /// # async fn f(ds: baton_datastore::DataStore) {
    /// use baton_datastore::diesel::sql_types::BigInt;
    /// use baton_datastore::diesel_async::RunQueryDsl;
    /// use baton_datastore::{TransactionError, TxError};
    ///
    /// #[derive(Debug)]
    /// struct Overdrawn;
    ///
    /// let moved: Result<usize, TransactionError<Overdrawn>> = ds
    ///     .transaction("transfer", |conn| {
    ///         Box::pin(async move {
    ///             let n = baton_datastore::diesel::sql_query(
    ///                 "UPDATE account SET balance = balance - $1 \
    ///                  WHERE id = 1 AND balance >= $1",
    ///             )
    ///             .bind::<BigInt, _>(10)
    ///             .execute(conn)
    ///             .await?;
    ///             if n == 0 {
    ///                 return Err(TxError::Abort(Overdrawn));
    ///             }
    ///             Ok(n)
    ///         })
    ///     })
    ///     .await;
    /// # }
    /// ```
    pub async fn transaction<T, E, F>(
        &self,
        op: &'static str,
        f: F,
    ) -> Result<T, TransactionError<E>>
    where
        T: Send,
        E: Send,
        F: for<'c> Fn(&'c mut AsyncPgConnection) -> TxFuture<'c, T, E>
            + Send
            + Sync,
    {
        self.transaction_via(op, Conn::Fresh, f).await
    }

    /// [`DataStore::transaction`] on a connection of the caller's own,
    /// retried there.
    pub(crate) async fn transaction_on<T, E, F>(
        &self,
        op: &'static str,
        conn: &mut AsyncPgConnection,
        f: F,
    ) -> Result<T, TransactionError<E>>
    where
        T: Send,
        E: Send,
        F: for<'c> Fn(&'c mut AsyncPgConnection) -> TxFuture<'c, T, E>
            + Send
            + Sync,
    {
        self.transaction_via(op, Conn::Held(conn), f).await
    }

    /// A transaction through the one retry loop, on `conn`.
    async fn transaction_via<T, E, F>(
        &self,
        op: &'static str,
        conn: Conn<'_>,
        f: F,
    ) -> Result<T, TransactionError<E>>
    where
        T: Send,
        E: Send,
        F: for<'c> Fn(&'c mut AsyncPgConnection) -> TxFuture<'c, T, E>
            + Send
            + Sync,
    {
        let isolation = isolation(&self.config);
        self.retry_loop(op, conn, &Transaction(f, isolation)).await
    }

    /// The one retry loop: runs `attempt` on a connection (a fresh claim
    /// per attempt, or the caller's own) until it succeeds, fails for a
    /// reason other than a serialization failure, or runs out of
    /// attempts.
    pub(crate) async fn retry_loop<T, E, A>(
        &self,
        op: &'static str,
        mut conn: Conn<'_>,
        attempt: &A,
    ) -> Result<T, TransactionError<E>>
    where
        A: Attempt<T, E>,
    {
        let kind = attempt.kind();
        let mut tries = 1;
        loop {
            let mut fresh = None;
            let connection: &mut AsyncPgConnection = match &mut conn {
                Conn::Held(held) => held,
                Conn::Fresh => &mut fresh.insert(self.claim(op).await?).conn,
            };
            let deadline = self.config.statement_deadline;
            let outcome =
                match tokio::time::timeout(deadline, attempt.run(connection))
                    .await
                {
                    Ok(outcome) => outcome,
                    Err(_) => {
                        // Its answer may still come: nobody may use this
                        // connection again, so the pool discards it.
                        discard(connection);
                        return Err(TransactionError::Datastore(
                            Error::Connection {
                                op,
                                message: format!(
                                    "the server did not answer within the \
                                     statement deadline ({} s); the \
                                     connection was discarded",
                                    deadline.as_secs_f64()
                                ),
                                transient: true,
                            },
                        ));
                    }
                };
            let was_fresh = fresh.take().is_some();
            match outcome {
                Ok(value) => return Ok(value),
                // A dead connection of one's own stays dead: only a fresh
                // claim is worth retrying after an unsent statement.
                Err(TxError::Database(e))
                    if is_serialization_failure(&e)
                        || (kind == Kind::Statement
                            && was_fresh
                            && is_unsent(&e)) =>
                {
                    if is_serialization_failure(&e) {
                        metrics::counter!(
                            SERIALIZATION_RETRIES,
                            "op" => op
                        )
                        .increment(1);
                    }
                    self.backoff(op, &mut tries).await?;
                }
                Err(TxError::Database(e)) => {
                    return Err(TransactionError::Datastore(database_error(
                        op, e,
                    )));
                }
                Err(TxError::Abort(e)) => {
                    return Err(TransactionError::Aborted(e));
                }
            }
        }
    }

    pub(crate) async fn backoff(
        &self,
        op: &'static str,
        attempt: &mut u32,
    ) -> Result<(), Error> {
        if *attempt >= self.config.max_attempts {
            return Err(Error::TooMuchContention {
                op,
                attempts: *attempt,
            });
        }
        let ceiling = self.config.base_backoff * 2u32.pow((*attempt).min(8));
        let delay = ceiling.mul_f64(fastrand::f64());
        self.retries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        info!(self.log, "retrying after a serialization failure or a lost connection";
            "op" => op, "attempt" => *attempt,
            "delay_us" => delay.as_micros() as u64);
        *attempt += 1;
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// The SQL of the record step (a mutant's, in the model test).
    pub(crate) fn ensure_records_sql(
        &self,
        sql: &'static str,
    ) -> std::borrow::Cow<'static, str> {
        #[cfg(feature = "mutants")]
        let sql = self.config.mutant.ensure_records(sql);
        #[cfg(not(feature = "mutants"))]
        let sql = std::borrow::Cow::Borrowed(sql);
        // New rows are what a Nexus waiting for its record waits for.
        self.announced(sql, "inserted", EventKind::RecordsAdded, "$4")
    }

    /// `sql` with its change announced, when this datastore notifies
    /// (see [`crate::notify::announcing`]); each constant text is built
    /// once per process.
    pub(crate) fn announced(
        &self,
        sql: std::borrow::Cow<'static, str>,
        changed: &str,
        kind: EventKind,
        nexus: &str,
    ) -> std::borrow::Cow<'static, str> {
        use std::borrow::Cow;
        if !self.config.notifications {
            return sql;
        }
        match sql {
            Cow::Owned(sql) => {
                Cow::Owned(announcing(&sql, changed, kind, nexus))
            }
            Cow::Borrowed(sql) => {
                // Keyed by the constant's address and length and the
                // event: a different text is never mistaken for it.
                type Key = (usize, usize, EventKind);
                static BUILT: std::sync::Mutex<Vec<(Key, &'static str)>> =
                    std::sync::Mutex::new(Vec::new());
                let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
                let key = (sql.as_ptr() as usize, sql.len(), kind);
                if let Some((_, text)) = built.iter().find(|(k, _)| *k == key) {
                    return Cow::Borrowed(text);
                }
                // Leaked once per constant: a handful of statements.
                let text: &'static str = Box::leak(
                    announcing(sql, changed, kind, nexus).into_boxed_str(),
                );
                built.push((key, text));
                Cow::Borrowed(text)
            }
        }
    }

    /// The SQL of the cleanup (a mutant's, in the model test).
    pub(crate) fn delete_expunged_sql(
        &self,
        sql: &'static str,
    ) -> std::borrow::Cow<'static, str> {
        #[cfg(feature = "mutants")]
        let sql = self.config.mutant.delete_expunged(sql);
        #[cfg(not(feature = "mutants"))]
        let sql = std::borrow::Cow::Borrowed(sql);
        // A removed row (an expunged Nexus's) may be what a handoff or a
        // quiescing peer waits for.
        self.announced(sql, "deleted", EventKind::RecordsRemoved, "$3")
    }

    /// The rules a target change checks (a mutant's, in the model test).
    pub(crate) fn target_rules(&self) -> Rules {
        #[cfg(feature = "mutants")]
        if self.config.mutant == crate::Mutant::NoSuccessionCheck {
            return Rules::ParentOnly;
        }
        Rules::All
    }

    /// The SQL of the handoff (a mutant's, in the model test).
    pub(crate) fn handoff_sql(
        &self,
        sql: &'static str,
    ) -> std::borrow::Cow<'static, str> {
        #[cfg(feature = "mutants")]
        let sql = self.config.mutant.handoff(sql);
        #[cfg(not(feature = "mutants"))]
        let sql = std::borrow::Cow::Borrowed(sql);
        self.announced(sql, "promoted", EventKind::Handoff, "$1")
    }

    /// Whether this datastore's statements announce their changes (see
    /// [`DataStoreConfig::notifications`]).
    pub fn notifies(&self) -> bool {
        self.config.notifications
    }

    /// How many times an operation was retried after a serialization
    /// failure, over the life of this datastore and its clones.
    pub fn retries(&self) -> u64 {
        self.retries.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The URL, password redacted.
    pub fn url_redacted(&self) -> String {
        redact_url(&self.url)
    }
}

#[cfg(feature = "mutants")]
fn fence_waits_for_drain(config: &DataStoreConfig) -> bool {
    config.mutant.fence_waits_for_drain()
}

#[cfg(not(feature = "mutants"))]
fn fence_waits_for_drain(_: &DataStoreConfig) -> bool {
    true
}

/// A boxed future of a transaction body, borrowing the connection.
pub type TxFuture<'c, T, E = Error> =
    Pin<Box<dyn Future<Output = Result<T, TxError<E>>> + Send + 'c>>;

/// How a transaction body stops early: a database error (`?` on a diesel
/// result; retried if it is a serialization failure) or the caller's own
/// decision to roll back.
#[derive(Debug)]
pub enum TxError<E = Error> {
    /// From the database.
    Database(DieselError),
    /// The body chose to roll back; returned as is, never retried.
    Abort(E),
}

impl<E> From<DieselError> for TxError<E> {
    fn from(e: DieselError) -> Self {
        TxError::Database(e)
    }
}

/// How a transaction failed: the caller's own abort, or the datastore's
/// error (connection, database, or too much contention).
#[derive(Debug, thiserror::Error)]
pub enum TransactionError<E> {
    /// The body returned [`TxError::Abort`]; everything was rolled back.
    #[error("the transaction was aborted: {0:?}")]
    Aborted(E),
    /// The datastore failed the transaction; everything was rolled back
    /// (or, on a lost connection during `COMMIT`, may have committed).
    #[error(transparent)]
    Datastore(#[from] Error),
}

impl From<TransactionError<Error>> for Error {
    fn from(e: TransactionError<Error>) -> Self {
        match e {
            TransactionError::Aborted(e) | TransactionError::Datastore(e) => e,
        }
    }
}

/// Where the retry loop gets its connection.
pub(crate) enum Conn<'a> {
    /// A fresh claim for each attempt.
    Fresh,
    /// The caller's connection, for every attempt.
    Held(&'a mut AsyncPgConnection),
}

/// What one attempt is, which decides what may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// One statement: also retried when it was never sent, since a dead
    /// pooled connection is only found out by using it.
    Statement,
    /// A transaction: not retried on a lost connection, since its COMMIT
    /// may have gone through before the connection went.
    Transaction,
}

/// A fence ticket taken by [`DataStore::claim`], given back if the claim
/// is not handed out (an error, or the future dropped mid-wait).
struct Entered<'a> {
    fence: &'a Fence,
    ticket: Option<u64>,
}

impl Entered<'_> {
    fn keep(mut self) -> u64 {
        self.ticket.take().expect("kept once")
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket {
            self.fence.leave(ticket);
        }
    }
}

fn isolation(config: &DataStoreConfig) -> &'static str {
    #[cfg(feature = "mutants")]
    if config.mutant == crate::Mutant::ReadCommitted {
        return "read committed";
    }
    let _ = config;
    "serializable"
}

/// One attempt of an operation, on a connection the retry loop lends.
pub(crate) trait Attempt<T, E> {
    /// Whether this is a single statement or a transaction.
    fn kind(&self) -> Kind;
    /// Runs the attempt once.
    fn run<'c>(&'c self, conn: &'c mut AsyncPgConnection)
    -> TxFuture<'c, T, E>;
}

/// One statement (its own implicit transaction).
pub(crate) struct Statement<F>(pub(crate) F);

impl<T, F> Attempt<T, Error> for Statement<F>
where
    T: 'static,
    F: for<'c> Fn(&'c mut AsyncPgConnection) -> StatementFuture<'c, T>,
{
    fn kind(&self) -> Kind {
        Kind::Statement
    }

    fn run<'c>(
        &'c self,
        conn: &'c mut AsyncPgConnection,
    ) -> TxFuture<'c, T, Error> {
        let run = (self.0)(conn);
        Box::pin(async move { run.await.map_err(TxError::Database) })
    }
}

/// A body inside BEGIN ... COMMIT, opened by the connection's own
/// transaction manager, which marks the connection broken (so the pool
/// discards it) if the attempt is dropped midway.
pub(crate) struct Transaction<F>(F, &'static str);

impl<T, E, F> Attempt<T, E> for Transaction<F>
where
    T: Send,
    E: Send,
    F: for<'r> Fn(&'r mut AsyncPgConnection) -> TxFuture<'r, T, E>
        + Send
        + Sync,
{
    fn kind(&self) -> Kind {
        Kind::Transaction
    }

    fn run<'c>(
        &'c self,
        conn: &'c mut AsyncPgConnection,
    ) -> TxFuture<'c, T, E> {
        let f = &self.0;
        let serializable = self.1 == "serializable";
        Box::pin(async move {
            // The one place Baton opens a transaction (see clippy.toml).
            #[allow(clippy::disallowed_methods)]
            let builder = conn.build_transaction();
            let mut builder = if serializable {
                builder.serializable()
            } else {
                builder.read_committed()
            };
            builder.run(async |conn| f(conn).await).await
        })
    }
}

impl Claim {
    /// Runs `f` inside one SERIALIZABLE transaction on this claim's
    /// connection, retrying it here on serialization failure; otherwise
    /// as [`DataStore::transaction`].
    pub async fn transaction<T, E, F>(
        &mut self,
        op: &'static str,
        f: F,
    ) -> Result<T, TransactionError<E>>
    where
        T: Send,
        E: Send,
        F: for<'c> Fn(&'c mut AsyncPgConnection) -> TxFuture<'c, T, E>
            + Send
            + Sync,
    {
        let store = self.store.clone();
        store.transaction_on(op, &mut self.conn, f).await
    }
}

/// The metric counting retries after a serialization failure (SQLSTATE
/// 40001), by operation (label `op`), through the `metrics` facade.
pub const SERIALIZATION_RETRIES: &str = "baton_serialization_retries_total";

/// Which rules a target change checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rules {
    /// Parent and succession: the real datastore.
    All,
    /// The parent only (a mutant, in the model test).
    #[cfg(feature = "mutants")]
    ParentOnly,
}

/// Marks `conn` broken, so that the pool closes it instead of handing it
/// out again.
fn discard(conn: &mut AsyncPgConnection) {
    use diesel_async::TransactionManager;
    type Manager = <AsyncPgConnection as diesel_async::AsyncConnection>::TransactionManager;
    Manager::transaction_manager_status_mut(conn).set_in_error();
}

pub(crate) fn is_serialization_failure(e: &DieselError) -> bool {
    matches!(
        e,
        DieselError::DatabaseError(DatabaseErrorKind::SerializationFailure, _)
    )
}

/// The connection was found closed when the statement was sent: its
/// backend died earlier (killed, or the server restarted). A single
/// statement is retried as after a serialization failure; a transaction
/// is not. (tokio-postgres reports a connection that dies
/// *during* a statement the same way; then the statement may have run.
/// Every Baton operation is safe to repeat: each is idempotent or
/// recognises its own earlier success, such as a handoff by a Nexus
/// already `active`.)
pub(crate) fn is_unsent(e: &DieselError) -> bool {
    matches!(
        e,
        DieselError::DatabaseError(DatabaseErrorKind::UnableToSendCommand, _)
    )
}

pub(crate) fn database_error(op: &'static str, e: DieselError) -> Error {
    let transient = matches!(
        e,
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection
                | DatabaseErrorKind::UnableToSendCommand,
            _
        ) | DieselError::BrokenTransactionManager
    ) || matches!(&e, DieselError::DatabaseError(DatabaseErrorKind::Unknown, info)
        if info.message().contains("terminat") || info.message().contains("connection"));
    // A connection lost with the statement (or its COMMIT) sent: the
    // caller cannot know whether it took effect, and should be told so.
    let message = if transient {
        format!(
            "{e} (the connection was lost before the answer came: the \
             operation may or may not have taken effect; retrying it is \
             safe)"
        )
    } else {
        e.to_string()
    };
    Error::Database {
        op,
        sqlstate: sqlstate(&e),
        message,
        transient,
    }
}

/// The SQLSTATE of a database error, where the driver keeps it: diesel
/// reports a kind, not the code, and diesel-async maps these codes to
/// kinds; any other server error is `Unknown` and its code is lost.
fn sqlstate(e: &DieselError) -> Option<&'static str> {
    let DieselError::DatabaseError(kind, _) = e else {
        return None;
    };
    Some(match kind {
        DatabaseErrorKind::UniqueViolation => "23505",
        DatabaseErrorKind::ForeignKeyViolation => "23503",
        DatabaseErrorKind::RestrictViolation => "23001",
        DatabaseErrorKind::ExclusionViolation => "23P01",
        DatabaseErrorKind::SerializationFailure => "40001",
        DatabaseErrorKind::ReadOnlyTransaction => "25006",
        DatabaseErrorKind::NotNullViolation => "23502",
        DatabaseErrorKind::CheckViolation => "23514",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_survive_redaction() {
        for (url, want) in [
            (
                "postgresql://u:secret@host/db",
                "postgresql://u:****@host/db",
            ),
            ("postgresql://u@%2Ftmp/db", "postgresql://u@%2Ftmp/db"),
            (
                "postgresql:///db?host=/tmp&password=secret",
                "postgresql:///db?host=/tmp&password=****",
            ),
            ("postgresql://h:5432/db", "postgresql://h:5432/db"),
            (
                "postgresql://u:secret@h1:5432,h2:5433/db",
                "postgresql://u:****@h1:5432,h2:5433/db",
            ),
            (
                "postgresql://u:secret@[::1]:5432/db?sslmode=disable",
                "postgresql://u:****@[::1]:5432/db?sslmode=disable",
            ),
            (
                "postgresql:///db?host=/a,/b&password=secret&\
                 target_session_attrs=read-write",
                "postgresql:///db?host=/a,/b&password=****&\
                 target_session_attrs=read-write",
            ),
            ("host=/tmp dbname=baton", "host=/tmp dbname=baton"),
        ] {
            let got = redact_url(url);
            assert_eq!(got, want);
            assert!(!got.contains("secret"));
        }
    }
}
