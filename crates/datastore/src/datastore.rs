//! The datastore: a pool behind the drain fence, and the one retrying
//! SERIALIZABLE wrapper that every operation runs through.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::pooled_connection::bb8::Pool;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, PoolableConnection,
    RecyclingMethod,
};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use slog::{Logger, info, o};

use crate::Error;
use crate::fence::{Claim, Fence, QuiescedClaim};

/// A boxed future borrowing a connection, for the retry wrapper.
pub(crate) type ConnFuture<'c, T> =
    Pin<Box<dyn Future<Output = Result<T, DieselError>> + Send + 'c>>;

/// The isolation level every connection runs at.
///
/// Anything but `Serializable` exists only so that tests can show what
/// goes wrong without it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Isolation {
    /// The only level the protocol is safe at (and CockroachDB's default).
    #[default]
    Serializable,
    /// For tests that prove SERIALIZABLE is needed. Never use otherwise.
    ReadCommittedForTests,
}

impl Isolation {
    fn sql(self) -> &'static str {
        match self {
            Isolation::Serializable => "SERIALIZABLE",
            Isolation::ReadCommittedForTests => "READ COMMITTED",
        }
    }
}

/// How a datastore connects and retries.
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
    /// The isolation level (leave at `Serializable`).
    pub isolation: Isolation,
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
            isolation: Isolation::Serializable,
            #[cfg(feature = "mutants")]
            mutant: crate::Mutant::None,
        }
    }
}

/// Access to Baton's database for one process (one Nexus, or the CLI).
#[derive(Clone)]
pub struct DataStore {
    pub(crate) log: Logger,
    pool: Pool<AsyncPgConnection>,
    fence: Arc<Fence>,
    config: DataStoreConfig,
    url: Arc<str>,
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
    let tail = &rest[authority_end..];
    // A password can also be a query parameter.
    let tail: Vec<String> = tail
        .split('&')
        .map(|part| match part.split_once("password=") {
            Some((before, _)) => format!("{before}password=****"),
            None => part.to_owned(),
        })
        .collect();
    out.push_str(&tail.join("&"));
    out
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
        let isolation = config.isolation;
        let mut manager_config = ManagerConfig::default();
        // Every connection runs every transaction, single statements
        // included, at the chosen level, whatever the server's default.
        manager_config.custom_setup = Box::new(move |url| {
            let url = url.to_owned();
            Box::pin(async move {
                let mut conn = AsyncPgConnection::establish(&url).await?;
                conn.batch_execute(&format!(
                    "SET default_transaction_isolation TO '{}'",
                    isolation.sql().to_lowercase()
                ))
                .await
                .map_err(|e| {
                    diesel::ConnectionError::BadConnection(e.to_string())
                })?;
                Ok(conn)
            })
        });
        // No extra check query on checkout: an operation is one statement,
        // and a broken connection is caught by bb8's `has_broken`.
        manager_config.recycling_method = RecyclingMethod::Fast;
        let manager =
            AsyncDieselConnectionManager::new_with_config(url, manager_config);
        let pool = Pool::builder()
            .max_size(config.pool_size)
            .min_idle(Some(0))
            .connection_timeout(config.connect_timeout)
            .build_unchecked(manager);
        DataStore {
            log: log.new(o!("component" => "datastore")),
            pool,
            fence: Arc::new(Fence::new(fence_waits_for_drain(&config))),
            config,
            url: Arc::from(url),
            retries: Arc::default(),
        }
    }

    /// A connection, counted by the drain fence until dropped. Fails with
    /// [`Error::Quiesced`] once [`DataStore::quiesce`] was called.
    pub async fn claim(&self, op: &'static str) -> Result<Claim<'_>, Error> {
        self.fence.enter()?;
        // A connection whose server backend died (killed, or the server
        // restarted) can sit in the pool until it is next handed out;
        // skip it for a fresh one. The check reads local state only.
        for _ in 0..=self.config.pool_size {
            match self.pool.get().await {
                Ok(mut conn) => {
                    if conn.is_broken() {
                        continue;
                    }
                    return Ok(Claim {
                        conn,
                        fence: &self.fence,
                    });
                }
                Err(e) => {
                    self.fence.leave();
                    return Err(Error::Connection {
                        op,
                        message: e.to_string(),
                    });
                }
            }
        }
        self.fence.leave();
        Err(Error::Connection {
            op,
            message: "every pooled connection was broken".to_owned(),
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

    /// Resolves when every outstanding claim has been released.
    pub async fn wait_for_drain(&self) {
        self.fence.drained().await
    }

    /// The single connection allowed after quiescing, once drained, to
    /// write one's own `quiesced` record.
    pub async fn reserved_quiesce_claim(
        &self,
    ) -> Result<QuiescedClaim<'_>, Error> {
        self.fence.take_reserved()?;
        let conn = self.pool.get().await.map_err(|e| Error::Connection {
            op: "reserved quiesce claim",
            message: e.to_string(),
        })?;
        Ok(QuiescedClaim { conn })
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
        F: for<'c> Fn(&'c mut AsyncPgConnection) -> ConnFuture<'c, T>,
    {
        let mut attempt = 1;
        loop {
            let mut claim = self.claim(op).await?;
            match f(&mut claim.conn).await {
                Ok(value) => return Ok(value),
                Err(e) if is_serialization_failure(&e) || is_unsent(&e) => {
                    drop(claim);
                    self.backoff(op, &mut attempt).await?;
                }
                Err(e) => return Err(database_error(op, e)),
            }
        }
    }

    /// Runs `f` inside an explicit SERIALIZABLE transaction (BEGIN ...
    /// COMMIT), retrying the whole transaction on serialization failure.
    /// The only place in Baton that opens a transaction.
    pub async fn transaction<T, F>(
        &self,
        op: &'static str,
        f: F,
    ) -> Result<T, Error>
    where
        F: for<'c> Fn(&'c mut AsyncPgConnection) -> TxFuture<'c, T>,
    {
        let begin =
            format!("BEGIN ISOLATION LEVEL {}", self.config.isolation.sql());
        let mut attempt = 1;
        loop {
            let mut claim = self.claim(op).await?;
            let conn = &mut claim.conn;
            conn.batch_execute(&begin)
                .await
                .map_err(|e| database_error(op, e))?;
            let outcome = match f(conn).await {
                Ok(value) => match conn.batch_execute("COMMIT").await {
                    Ok(()) => Ok(value),
                    Err(e) => Err(TxError::Database(e)),
                },
                Err(e) => {
                    // A failed COMMIT already ended the transaction; a
                    // failed statement left it open and aborted.
                    let _ = conn.batch_execute("ROLLBACK").await;
                    Err(e)
                }
            };
            match outcome {
                Ok(value) => return Ok(value),
                // Not on a lost connection: a transaction's COMMIT may
                // have gone through before the connection went.
                Err(TxError::Database(e)) if is_serialization_failure(&e) => {
                    drop(claim);
                    self.backoff(op, &mut attempt).await?;
                }
                Err(TxError::Database(e)) => return Err(database_error(op, e)),
                Err(TxError::Abort(e)) => return Err(e),
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
        return self.config.mutant.ensure_records(sql);
        #[cfg(not(feature = "mutants"))]
        std::borrow::Cow::Borrowed(sql)
    }

    /// The SQL of the handoff (a mutant's, in the model test).
    pub(crate) fn handoff_sql(
        &self,
        sql: &'static str,
    ) -> std::borrow::Cow<'static, str> {
        #[cfg(feature = "mutants")]
        return self.config.mutant.handoff(sql);
        #[cfg(not(feature = "mutants"))]
        std::borrow::Cow::Borrowed(sql)
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

/// A boxed future of a transaction body.
pub type TxFuture<'c, T> =
    Pin<Box<dyn Future<Output = Result<T, TxError>> + Send + 'c>>;

/// How a transaction body fails: a database error (retried if it is a
/// serialization failure) or a decision to abort with a datastore error.
#[derive(Debug)]
pub enum TxError {
    /// From the database.
    Database(DieselError),
    /// The body chose to stop; returned as is, never retried.
    Abort(Error),
}

impl From<DieselError> for TxError {
    fn from(e: DieselError) -> Self {
        TxError::Database(e)
    }
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
/// Every Baton operation is safe to repeat: a repeat after an unseen
/// success changes nothing or reports the state the caller then finds,
/// such as a handoff's "wrong state: active", which the Nexus lifecycle
/// answers by checking its access again.)
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
    Error::Database {
        op,
        message: e.to_string(),
        transient,
    }
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
        ] {
            let got = redact_url(url);
            assert_eq!(got, want);
            assert!(!got.contains("secret"));
        }
    }
}
