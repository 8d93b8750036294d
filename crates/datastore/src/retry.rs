//! The one retry loop every operation runs through: SERIALIZABLE, a
//! bounded number of attempts, jittered exponential backoff on a
//! serialization failure (SQLSTATE 40001), and a deadline per attempt.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;

use diesel::result::Error as DieselError;
use diesel_async::AsyncPgConnection;
use slog::info;

use crate::error::{database_error, is_serialization_failure, is_unsent};
use crate::guards::Isolation;
use crate::{DataStore, Error};

/// A boxed future of one statement, borrowing the connection.
pub type StatementFuture<'c, T> =
    Pin<Box<dyn Future<Output = Result<T, DieselError>> + Send + 'c>>;

impl DataStore {
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
        let isolation = self.isolation;
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
                Conn::Fresh => {
                    &mut fresh.insert(self.control_claim(op).await?).conn
                }
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
        self.retries.fetch_add(1, Ordering::Relaxed);
        info!(self.log, "retrying after a serialization failure or a lost connection";
            "op" => op, "attempt" => *attempt,
            "delay_us" => delay.as_micros() as u64);
        *attempt += 1;
        tokio::time::sleep(delay).await;
        Ok(())
    }
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

/// One attempt of an operation, on a connection the retry loop lends.
pub(crate) trait Attempt<T, E> {
    /// Whether this is a single statement or a transaction.
    fn kind(&self) -> Kind {
        Kind::Transaction
    }

    /// Runs the attempt once. Not boxed as `Send` here: a body given as
    /// an async closure has a future no bound can name yet, so whether
    /// the whole operation is `Send` is decided where the closure is
    /// written.
    fn run<'c>(
        &'c self,
        conn: &'c mut AsyncPgConnection,
    ) -> impl Future<Output = Result<T, TxError<E>>>;
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
    ) -> impl Future<Output = Result<T, TxError<Error>>> {
        let run = (self.0)(conn);
        async move { run.await.map_err(TxError::Database) }
    }
}

/// A transaction body written as a closure that returns a boxed future
/// (the form Baton's own operations use), inside BEGIN ... COMMIT.
pub(crate) struct Transaction<F>(F, Isolation);

impl<T, E, F> Attempt<T, E> for Transaction<F>
where
    F: for<'r> Fn(&'r mut AsyncPgConnection) -> TxFuture<'r, T, E>,
{
    async fn run(&self, conn: &mut AsyncPgConnection) -> Result<T, TxError<E>> {
        begin(conn, self.1).await?;
        let outcome = (self.0)(conn).await;
        finish(conn, outcome).await
    }
}

/// A transaction body written as an async closure (`async move |conn| {
/// .. }`), inside BEGIN ... COMMIT. It is called by reference on each
/// attempt, so what it captured is neither cloned nor moved per retry.
pub(crate) struct Body<F>(pub(crate) F, pub(crate) Isolation);

impl<T, E, F> Attempt<T, E> for Body<F>
where
    F: AsyncFn(&mut AsyncPgConnection) -> Result<T, TxError<E>>,
{
    async fn run(&self, conn: &mut AsyncPgConnection) -> Result<T, TxError<E>> {
        begin(conn, self.1).await?;
        let outcome = (self.0)(conn).await;
        finish(conn, outcome).await
    }
}

/// Opens a transaction at `isolation`: the one place Baton does (see
/// clippy.toml). It goes through the connection's own transaction
/// manager, which counts the transaction open until [`finish`] commits
/// or rolls it back, so if an attempt is dropped in between, the pool
/// sees the connection broken and discards it.
async fn begin(
    conn: &mut AsyncPgConnection,
    isolation: Isolation,
) -> Result<(), DieselError> {
    #[allow(clippy::disallowed_methods)]
    diesel_async::AnsiTransactionManager::begin_transaction_sql(
        conn,
        isolation.begin_sql(),
    )
    .await
}

/// Commits the transaction [`begin`] opened if the body succeeded, else
/// rolls it back; a failed COMMIT or ROLLBACK is the outcome then.
async fn finish<T, E>(
    conn: &mut AsyncPgConnection,
    outcome: Result<T, TxError<E>>,
) -> Result<T, TxError<E>> {
    use diesel_async::TransactionManager;
    type Manager = diesel_async::AnsiTransactionManager;
    match outcome {
        Ok(value) => {
            Manager::commit_transaction(conn).await?;
            Ok(value)
        }
        Err(e) => {
            Manager::rollback_transaction(conn).await?;
            Err(e)
        }
    }
}

/// The metric counting retries after a serialization failure (SQLSTATE
/// 40001), by operation (label `op`), through the `metrics` facade.
pub const SERIALIZATION_RETRIES: &str = "baton_serialization_retries_total";

/// Marks `conn` broken, so that the pool closes it instead of handing it
/// out again.
pub(crate) fn discard(conn: &mut AsyncPgConnection) {
    use diesel_async::TransactionManager;
    type Manager = <AsyncPgConnection as diesel_async::AsyncConnection>::TransactionManager;
    Manager::transaction_manager_status_mut(conn).set_in_error();
}
