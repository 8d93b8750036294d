//! The drain fence: a datastore can stop handing out connections and then
//! wait until every one it handed out is back.
//!
//! This is what makes "quiesced" a promise: the Nexus closes the fence,
//! waits for the count of outstanding claims to reach zero, and only then
//! writes `quiesced`, through a claim reserved for exactly that.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use baton_types::Held;

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::PoolableConnection;
use diesel_async::pooled_connection::bb8::PooledConnection;
use slog::info;

use crate::retry::{Body, Conn};
use crate::{DataStore, Error, Tally, TransactionError, TxError};

/// Which pool a claim comes from.
#[derive(Clone, Copy, Debug)]
enum Pool {
    /// The service's: enrolled in the database fence.
    Service,
    /// Baton's own statements'.
    Control,
}

/// The drain fence: claims counted, refused once closed, and the one
/// claim reserved for one's own `quiesced` mark.
#[derive(Debug)]
pub(crate) struct Fence {
    pub(crate) claims: Tally,
    reserved_taken: AtomicBool,
    /// Always true, except in the model test's deliberate bug.
    waits_for_drain: bool,
}

impl Fence {
    pub(crate) fn new(waits_for_drain: bool) -> Fence {
        Fence {
            claims: Tally::default(),
            reserved_taken: AtomicBool::new(false),
            waits_for_drain,
        }
    }

    /// The one claim allowed after closing: only once drained, only once.
    pub(crate) fn take_reserved(&self) -> Result<(), Error> {
        let (closed, outstanding) =
            (self.claims.is_closed(), self.claims.count());
        if !closed {
            return Err(Error::FenceNotDrained(
                "the datastore is not quiesced",
            ));
        }
        if outstanding != 0 && self.waits_for_drain {
            return Err(Error::FenceNotDrained("claims are still outstanding"));
        }
        if self.reserved_taken.swap(true, Ordering::SeqCst) {
            return Err(Error::FenceNotDrained("the reserved claim was used"));
        }
        Ok(())
    }

    /// Gives the reserved claim back after a failed use, so that marking
    /// oneself `quiesced` can be tried again.
    pub(crate) fn return_reserved(&self) {
        self.reserved_taken.store(false, Ordering::SeqCst);
    }
}

/// A database connection handed out under the drain fence; released (and
/// counted back) when dropped.
///
/// It is owned (`'static`, `Send`), so it can move into a spawned task
/// and be held across several statements. While any claim is out, a
/// quiescing Nexus does not mark itself `quiesced`.
///
/// Run statements on [`Claim::connection`] (each is its own SERIALIZABLE
/// transaction) or a multi-statement transaction with
/// [`Claim::transaction`]. A connection dropped in the middle of a
/// transaction is discarded, never handed out again.
pub struct Claim {
    pub(crate) conn: PooledConnection<'static, AsyncPgConnection>,
    pub(crate) fence: Arc<Fence>,
    pub(crate) ticket: u64,
    pub(crate) op: &'static str,
    pub(crate) since: Instant,
    pub(crate) store: crate::DataStore,
}

impl Claim {
    /// The connection, for statements of one's own. Each statement runs
    /// as its own SERIALIZABLE transaction; for several statements in
    /// one transaction use [`Claim::transaction`], never a hand-sent
    /// `BEGIN` (a transaction the connection's transaction manager does
    /// not see could be handed to the next caller if the future were
    /// dropped).
    pub fn connection(&mut self) -> &mut AsyncPgConnection {
        &mut self.conn
    }

    /// The operation named when the claim was taken.
    pub fn op(&self) -> &'static str {
        self.op
    }

    /// How long the claim has been held.
    pub fn age(&self) -> Duration {
        self.since.elapsed()
    }
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("op", &self.op)
            .field("age", &self.since.elapsed())
            .finish_non_exhaustive()
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.fence.claims.leave(self.ticket);
    }
}

/// The connection reserved for writing one's own `quiesced` record.
pub(crate) struct QuiescedClaim {
    pub(crate) conn: PooledConnection<'static, AsyncPgConnection>,
}

impl DataStore {
    /// A connection, counted by the drain fence until dropped. Fails with
    /// [`Error::Quiesced`] once [`DataStore::quiesce`] was called.
    ///
    /// `op` names what the claim is for; it shows in logs and in what a
    /// drain reports it waits on.
    ///
    /// When this store serves a Nexus ([`DataStoreConfig::nexus_id`]),
    /// the claim is fenced by the database: its connection holds the
    /// Nexus's fence lock and found the record `active` when it was set
    /// up, and [`Error::Fenced`] is returned once the record is not.
    ///
    /// [`DataStoreConfig::nexus_id`]: crate::DataStoreConfig::nexus_id
    pub async fn claim(&self, op: &'static str) -> Result<Claim, Error> {
        self.claim_from(op, Pool::Service).await
    }

    /// A claim for Baton's own statements, which carry their guards in
    /// their SQL: counted by the drain fence, never enrolled.
    pub(crate) async fn control_claim(
        &self,
        op: &'static str,
    ) -> Result<Claim, Error> {
        self.claim_from(op, Pool::Control).await
    }

    async fn claim_from(
        &self,
        op: &'static str,
        pool: Pool,
    ) -> Result<Claim, Error> {
        let ticket = self.fence.claims.enter(op).ok_or(Error::Quiesced)?;
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
            let got = match pool {
                Pool::Service => self.pooled_service(op).await,
                Pool::Control => self.pooled_control(op).await,
            };
            match got {
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
            "outstanding" => self.fence.claims.count());
        self.fence.claims.close();
    }

    /// True once [`DataStore::quiesce`] was called.
    pub fn is_quiesced(&self) -> bool {
        self.fence.claims.is_closed()
    }

    /// Claims not yet released.
    pub fn outstanding_claims(&self) -> usize {
        self.fence.claims.count()
    }

    /// The oldest claim still out, if any: what a drain waits on.
    pub fn oldest_claim(&self) -> Option<Held> {
        self.fence.claims.oldest()
    }

    /// Resolves when every outstanding claim has been released.
    pub async fn wait_for_drain(&self) {
        self.fence.claims.drained().await
    }

    /// The single connection allowed after quiescing, once drained, to
    /// write one's own `quiesced` record.
    pub(crate) async fn reserved_quiesce_claim(
        &self,
    ) -> Result<QuiescedClaim, Error> {
        self.fence.take_reserved()?;
        match self.pooled_control("reserved quiesce claim").await {
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
            self.fence.claims.leave(ticket);
        }
    }
}

impl Claim {
    /// Runs `body` inside one SERIALIZABLE transaction on this claim's
    /// connection, retrying the whole of it here on a serialization
    /// failure (SQLSTATE 40001), with jittered backoff and a bounded
    /// number of attempts. Any other database error rolls back and is
    /// returned as [`Error::Database`]. For a body that may also decide
    /// to roll back with an error of its own, use
    /// [`Claim::transaction_with_abort`].
    ///
    /// The body is an async closure, called by reference on each
    /// attempt: what it captures is not cloned per retry. Move what it
    /// needs in (`async move |conn| ..`) when the transaction runs in a
    /// spawned task: a body that borrows from the task is not yet seen
    /// as `Send` by the compiler. Read each response to its end (`load`,
    /// `execute`, [`crate::sql::load_one`]; never `get_result`, which
    /// drops the rest of it). If this future is dropped midway, the
    /// transaction never commits and the connection is discarded.
    ///
    /// ```no_run
    /// # async fn f(mut claim: baton_datastore::Claim) -> Result<(), baton_datastore::Error> {
    /// use baton_datastore::diesel::sql_types::BigInt;
    /// use baton_datastore::diesel_async::RunQueryDsl;
    ///
    /// let (from, to, amount) = (1_i64, 2_i64, 10_i64);
    /// let moved = claim
    ///     .transaction("transfer", async move |conn| {
    ///         let debit = "UPDATE account SET balance = balance - $1 \
    ///                      WHERE id = $2";
    ///         let credit = "UPDATE account SET balance = balance + $1 \
    ///                       WHERE id = $2";
    ///         let mut n = 0;
    ///         for (sql, id) in [(debit, from), (credit, to)] {
    ///             n += baton_datastore::diesel::sql_query(sql)
    ///                 .bind::<BigInt, _>(amount)
    ///                 .bind::<BigInt, _>(id)
    ///                 .execute(conn)
    ///                 .await?;
    ///         }
    ///         Ok(n)
    ///     })
    ///     .await?;
    /// # let _ = moved; Ok(()) }
    /// ```
    pub async fn transaction<T, F>(
        &mut self,
        op: &'static str,
        body: F,
    ) -> Result<T, Error>
    where
        F: AsyncFn(&mut AsyncPgConnection) -> diesel::QueryResult<T>,
    {
        let body = async move |conn: &mut AsyncPgConnection| {
            body(conn)
                .await
                .map_err(TxError::<std::convert::Infallible>::Database)
        };
        self.transaction_with_abort(op, body)
            .await
            .map_err(|e| match e {
                TransactionError::Datastore(e) => e,
                TransactionError::Aborted(never) => match never {},
            })
    }

    /// [`Claim::transaction`] for a body that may also roll back on a
    /// decision of its own: it returns [`TxError::Abort`] with an error
    /// of the caller's type, which comes back as
    /// [`TransactionError::Aborted`] and is never retried.
    ///
    /// ```no_run
    /// # async fn f(mut claim: baton_datastore::Claim) {
    /// use baton_datastore::diesel::sql_types::BigInt;
    /// use baton_datastore::diesel_async::RunQueryDsl;
    /// use baton_datastore::{TransactionError, TxError};
    ///
    /// #[derive(Debug)]
    /// struct Overdrawn;
    ///
    /// let amount = 10_i64;
    /// let outcome = claim
    ///     .transaction_with_abort("withdraw", async move |conn| {
    ///         let n = baton_datastore::diesel::sql_query(
    ///             "UPDATE account SET balance = balance - $1 \
    ///              WHERE id = 1 AND balance >= $1",
    ///         )
    ///         .bind::<BigInt, _>(amount)
    ///         .execute(conn)
    ///         .await?;
    ///         if n == 0 {
    ///             return Err(TxError::Abort(Overdrawn));
    ///         }
    ///         Ok(n)
    ///     })
    ///     .await;
    /// if let Err(TransactionError::Aborted(Overdrawn)) = outcome {
    ///     // Nothing changed: answer 409, say why.
    /// }
    /// # }
    /// ```
    pub async fn transaction_with_abort<T, E, F>(
        &mut self,
        op: &'static str,
        body: F,
    ) -> Result<T, TransactionError<E>>
    where
        F: AsyncFn(&mut AsyncPgConnection) -> Result<T, TxError<E>>,
    {
        let store = self.store.clone();
        let body = Body(body, store.isolation);
        store
            .retry_loop(op, Conn::Held(&mut self.conn), &body)
            .await
    }
}
