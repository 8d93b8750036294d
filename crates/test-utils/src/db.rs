//! Database helpers for Baton's tests and benchmarks: counting the
//! statements the server receives, the transactional baseline of the
//! record step and the handoff, and ways to hold locks or race a target
//! change at the worst moment.
//!
//! Nothing here is used by the protocol itself, and no shipped crate
//! depends on this one. It uses only the datastore's public API.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

// The derives below name `diesel`: the one Baton re-exports.
use baton_datastore::diesel;
use baton_datastore::diesel::QueryableByName;
use baton_datastore::diesel::sql_types::{Array, BigInt, Nullable, Text, Uuid};
use baton_datastore::diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use baton_datastore::sql::{Bind, load_one, statement};
use baton_datastore::{DataStore, EnsureOutcome, Error, TxError};
use baton_types::{NexusRecord, NexusRecordState, RecordsToEnsure};
use baton_uuid_kinds::{BlueprintUuid, GenericUuid, OmicronZoneUuid};

/// An async callback run between a transaction's read and its write.
pub type Hook =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

#[derive(QueryableByName)]
struct Calls {
    #[diesel(sql_type = Nullable<BigInt>)]
    calls: Option<i64>,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct State {
    #[diesel(sql_type = Text)]
    state: String,
}

#[derive(QueryableByName)]
struct Target {
    #[diesel(sql_type = Nullable<Uuid>)]
    blueprint_id: Option<uuid::Uuid>,
}

/// The wanted rows as parallel arrays of ids and state labels.
fn rows(records: &RecordsToEnsure) -> (Vec<uuid::Uuid>, Vec<String>) {
    records
        .iter()
        .map(|(id, state)| (id.into_untyped_uuid(), state.as_str().to_owned()))
        .unzip()
}

/// `n` distinct announcements an outsider might forge: every kind
/// (and one Baton does not know), naming each of `ids` or none, with
/// transaction ids that are old, in the future, negative or huge.
pub fn forged_announcements(n: usize, ids: &[OmicronZoneUuid]) -> Vec<String> {
    const KINDS: [&str; 8] = [
        "target_set",
        "records_added",
        "drained",
        "quiesced",
        "handoff",
        "records_removed",
        "migrated",
        "brand_new",
    ];
    let names: Vec<String> = std::iter::once("-".to_owned())
        .chain(ids.iter().map(ToString::to_string))
        .collect();
    (0..n)
        .map(|i| {
            let kind = KINDS[i % KINDS.len()];
            let id = &names[(i / KINDS.len()) % names.len()];
            let transaction: i64 = match i % 5 {
                0 => i64::MAX - i as i64,
                1 => -(i as i64),
                2 => 4_294_967_296 + i as i64,
                _ => i as i64,
            };
            format!("{kind} {id} {transaction}")
        })
        .collect()
}

/// The helpers, as methods on [`DataStore`]: `use` this trait.
#[allow(async_fn_in_trait)]
pub trait DataStoreTestExt {
    /// The datastore the helpers run on.
    fn store(&self) -> &DataStore;

    /// Enables `pg_stat_statements` in this database (the server must
    /// preload it, as `baton-dev-db` servers do) and zeroes its counts.
    async fn statement_stats_reset(&self) -> Result<(), Error> {
        self.store()
            .run("stats reset", |conn| {
                Box::pin(conn.batch_execute(
                    "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; \
                 SELECT pg_stat_statements_reset();",
                ))
            })
            .await
    }

    /// Statements the server executed in this database since the last
    /// reset, not counting the statistics queries themselves.
    async fn statement_stats_count(&self) -> Result<i64, Error> {
        let row: Calls = self
            .store()
            .run("stats count", |conn| {
                Box::pin(
                    load_one(statement(
                        "SELECT sum(calls)::INT8 AS calls FROM pg_stat_statements
                         WHERE dbid = (SELECT oid FROM pg_database
                                       WHERE datname = current_database())
                           AND query NOT ILIKE '%pg_stat_statements%'",
                    )
                    , conn),
                )
            })
            .await?;
        Ok(row.calls.unwrap_or(0))
    }

    /// Executions since the last reset of statements whose text contains
    /// `fragment` (to count, say, handoff attempts).
    async fn statement_stats_calls_matching(
        &self,
        fragment: &str,
    ) -> Result<i64, Error> {
        let pattern = format!("%{fragment}%");
        let row: Calls = self
            .store()
            .run("stats count matching", |conn| {
                Box::pin(
                    load_one(statement(
                        "SELECT sum(calls)::INT8 AS calls FROM pg_stat_statements
                         WHERE dbid = (SELECT oid FROM pg_database
                                       WHERE datname = current_database())
                           AND query LIKE $1
                           AND query NOT ILIKE '%pg_stat_statements%'",
                    )
                    .bind::<Text, _>(pattern.clone())
                    , conn),
                )
            })
            .await?;
        Ok(row.calls.unwrap_or(0))
    }

    /// The record step written the transactional way, as the reference
    /// design does: BEGIN (SERIALIZABLE); read the target and the
    /// executing Nexus's own record; compare in Rust; insert on conflict
    /// do nothing; COMMIT. Its insert is written exactly as Baton's, so
    /// only the structure differs. The baseline for the benchmarks, and,
    /// with a `between` hook run after the reads, a way for tests to
    /// interleave other work at the dangerous moment.
    async fn baseline_records_ensure(
        &self,
        blueprint_id: BlueprintUuid,
        executing: OmicronZoneUuid,
        records: &RecordsToEnsure,
        between: Option<Hook>,
    ) -> Result<EnsureOutcome, Error> {
        let bp = blueprint_id.into_untyped_uuid();
        let me = executing.into_untyped_uuid();
        let (ids, states) = rows(records);
        self.store()
            .transaction("baseline records ensure", move |conn| {
                let (ids, states, between) =
                    (ids.clone(), states.clone(), between.clone());
                Box::pin(async move {
                    let target: Vec<Target> = statement(
                        "SELECT blueprint_id FROM bp_target
                         ORDER BY version DESC LIMIT 1",
                    )
                    .load(conn)
                    .await?;
                    let current =
                        target.into_iter().next().and_then(|t| t.blueprint_id);
                    if current != Some(bp) {
                        return Err(TxError::Abort(Error::TargetChanged {
                            blueprint_id,
                            current: current
                                .map(BlueprintUuid::from_untyped_uuid),
                        }));
                    }
                    let all: Count = load_one(
                        statement(
                            "SELECT count(*) AS n FROM db_metadata_nexus",
                        ),
                        conn,
                    )
                    .await?;
                    let mine: Vec<State> = statement(
                        "SELECT state::TEXT AS state FROM db_metadata_nexus
                         WHERE nexus_id = $1",
                    )
                    .bind::<Uuid, _>(me)
                    .load(conn)
                    .await?;
                    let mine = mine.into_iter().next().map(|m| m.state);
                    if all.n > 0 && mine.as_deref() != Some("active") {
                        return Err(TxError::Abort(Error::NotInControl {
                            nexus_id: executing,
                            state: mine.and_then(|s| s.parse().ok()),
                        }));
                    }
                    if let Some(hook) = between {
                        hook().await;
                    }
                    let inserted = statement(
                        "INSERT INTO db_metadata_nexus (nexus_id, state)
                         SELECT id, state::db_metadata_nexus_state
                         FROM unnest($1::UUID[], $2::TEXT[])
                             AS wanted (id, state)
                         ON CONFLICT (nexus_id) DO NOTHING",
                    )
                    .bind::<Array<Uuid>, _>(ids)
                    .bind::<Array<Text>, _>(states)
                    .execute(conn)
                    .await?;
                    Ok(EnsureOutcome { inserted })
                })
            })
            .await
            .map_err(Error::from)
    }

    /// The handoff written the transactional way: BEGIN (SERIALIZABLE);
    /// count the rows that block it; read the caller's state; promote
    /// every `not_yet` row; COMMIT. The baseline for the benchmarks; it
    /// answers exactly as `DataStore::attempt_handoff` does.
    async fn baseline_attempt_handoff(
        &self,
        nexus_id: OmicronZoneUuid,
    ) -> Result<usize, Error> {
        let raw = nexus_id.into_untyped_uuid();
        self.store()
            .transaction("baseline attempt handoff", move |conn| {
                Box::pin(async move {
                    let blocking: Count = load_one(
                        statement(
                            "SELECT count(*) AS n FROM db_metadata_nexus
                     WHERE state NOT IN ('not_yet', 'quiesced')",
                        ),
                        conn,
                    )
                    .await?;
                    if blocking.n > 0 {
                        return Err(TxError::Abort(Error::HandoffStillActive(
                            blocking.n,
                        )));
                    }
                    let mine: Vec<State> = statement(
                        "SELECT state::TEXT AS state FROM db_metadata_nexus
                     WHERE nexus_id = $1",
                    )
                    .bind::<Uuid, _>(raw)
                    .load(conn)
                    .await?;
                    let Some(mine) = mine.into_iter().next() else {
                        return Err(TxError::Abort(
                            Error::HandoffNotRegistered(nexus_id),
                        ));
                    };
                    let state: NexusRecordState =
                        mine.state.parse().map_err(|e| {
                            TxError::Abort(Error::Schema(format!("{e}")))
                        })?;
                    if state != NexusRecordState::NotYet {
                        return Err(TxError::Abort(Error::HandoffWrongState {
                            nexus_id,
                            state,
                        }));
                    }
                    let promoted = statement(
                        "UPDATE db_metadata_nexus SET state = 'active'
                     WHERE state = 'not_yet'",
                    )
                    .execute(conn)
                    .await?;
                    Ok(promoted)
                })
            })
            .await
            .map_err(Error::from)
    }

    /// Replaces every record with `records`, in one transaction: for
    /// tests and benchmarks that need a given state again and again.
    async fn records_replace(
        &self,
        records: &[NexusRecord],
    ) -> Result<(), Error> {
        let ids: Vec<uuid::Uuid> = records
            .iter()
            .map(|r| r.nexus_id.into_untyped_uuid())
            .collect();
        let states: Vec<String> = records
            .iter()
            .map(|r| r.state.as_str().to_owned())
            .collect();
        let drained: Vec<Option<uuid::Uuid>> = records
            .iter()
            .map(|r| r.last_drained_blueprint_id.map(|b| b.into_untyped_uuid()))
            .collect();
        self.store()
            .transaction("records replace", move |conn| {
                let (ids, states, drained) =
                    (ids.clone(), states.clone(), drained.clone());
                Box::pin(async move {
                    statement("DELETE FROM db_metadata_nexus")
                        .execute(conn)
                        .await?;
                    statement(
                        "INSERT INTO db_metadata_nexus
                         (nexus_id, state, last_drained_blueprint_id)
                     SELECT id, state::db_metadata_nexus_state, drained
                     FROM unnest($1::UUID[], $2::TEXT[], $3::UUID[])
                         AS r (id, state, drained)",
                    )
                    .bind::<Array<Uuid>, _>(ids)
                    .bind::<Array<Text>, _>(states)
                    .bind::<Array<Nullable<Uuid>>, _>(drained)
                    .execute(conn)
                    .await?;
                    Ok(())
                })
            })
            .await
            .map_err(Error::from)
    }

    /// Empties every table (records, targets, blueprints), keeping the
    /// schema: a fresh system for the next model-test sequence.
    async fn reset_all(&self) -> Result<(), Error> {
        self.store()
            .run("reset all", |conn| {
                Box::pin(conn.batch_execute(
                    "TRUNCATE db_metadata_nexus, bp_target, blueprint",
                ))
            })
            .await
    }

    /// Sessions of this database waiting for a lock right now: how a test
    /// knows another transaction is blocked on one it holds open.
    async fn lock_waiters(&self) -> Result<i64, Error> {
        let row: Calls = self
            .store()
            .run("lock waiters", |conn| {
                Box::pin(load_one(
                    statement(
                        "SELECT count(*)::INT8 AS calls FROM pg_stat_activity
                         WHERE datname = current_database()
                           AND wait_event_type = 'Lock'",
                    ),
                    conn,
                ))
            })
            .await?;
        Ok(row.calls.unwrap_or(0))
    }

    /// Waits until some session of this database waits for a lock, for at
    /// most `bound`; returns whether one did. Tests that hold a lock open
    /// use it to know the operation under test is now blocked on it.
    async fn until_lock_waiter(
        &self,
        bound: std::time::Duration,
    ) -> Result<bool, Error> {
        let deadline = tokio::time::Instant::now() + bound;
        while tokio::time::Instant::now() < deadline {
            if self.lock_waiters().await? > 0 {
                return Ok(true);
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        Ok(false)
    }

    /// An operator's tool that makes `blueprint_id` the target and deletes
    /// these Nexus ids' records in one transaction, running `before_commit`
    /// while both writes are still uncommitted: for racing an executor
    /// against a target change and cleanup at the worst moment.
    async fn target_set_and_delete_records(
        &self,
        blueprint_id: BlueprintUuid,
        ids: &BTreeSet<OmicronZoneUuid>,
        before_commit: Hook,
    ) -> Result<usize, Error> {
        let bp = blueprint_id.into_untyped_uuid();
        let ids: Vec<uuid::Uuid> =
            ids.iter().map(|id| id.into_untyped_uuid()).collect();
        self.store()
            .transaction("target set and delete records", move |conn| {
                let (ids, hook) = (ids.clone(), before_commit.clone());
                Box::pin(async move {
                    statement(
                        "INSERT INTO bp_target
                         (version, blueprint_id, enabled, time_made_target)
                     SELECT COALESCE(max(version), 0) + 1, $1, TRUE, now()
                     FROM bp_target",
                    )
                    .bind::<Uuid, _>(bp)
                    .execute(conn)
                    .await?;
                    let deleted = statement(
                        "DELETE FROM db_metadata_nexus
                     WHERE nexus_id = ANY ($1::UUID[])",
                    )
                    .bind::<Array<Uuid>, _>(ids)
                    .execute(conn)
                    .await?;
                    hook().await;
                    Ok(deleted)
                })
            })
            .await
            .map_err(Error::from)
    }

    /// Runs a statement whose first row is fine and whose second fails (a
    /// division by zero), and reports what the caller sees: through
    /// `load_one` (what every operation uses), or through diesel-async's
    /// `get_result` when `as_get_result` is set, to show the error that
    /// `get_result` loses.
    async fn statement_failing_after_its_first_row(
        &self,
        as_get_result: bool,
    ) -> Result<i64, Error> {
        const SQL: &str = "SELECT (1 / (2 - n))::INT8 AS calls
                           FROM generate_series(1, 2) AS n";
        let row: Calls = self
            .store()
            .run("failing after the first row", |conn| {
                if as_get_result {
                    #[allow(clippy::disallowed_methods)] // on purpose
                    Box::pin(statement(SQL).get_result(conn))
                } else {
                    Box::pin(load_one(statement(SQL), conn))
                }
            })
            .await?;
        Ok(row.calls.unwrap_or(0))
    }

    /// Holds every record's row lock in an open transaction (a no-op
    /// update) while `while_locked` runs, then commits: any operation that
    /// writes a record waits meanwhile, mid-statement.
    async fn hold_records_locked(
        &self,
        while_locked: Hook,
    ) -> Result<(), Error> {
        self.store()
            .transaction("hold records locked", move |conn| {
                let hook = while_locked.clone();
                Box::pin(async move {
                    statement("UPDATE db_metadata_nexus SET state = state")
                        .execute(conn)
                        .await?;
                    hook().await;
                    Ok(())
                })
            })
            .await
            .map_err(Error::from)
    }

    /// Terminates the server backends of this database that are waiting
    /// for a lock (`pg_terminate_backend`, PostgreSQL only); returns how
    /// many.
    async fn terminate_lock_waiters(&self) -> Result<i64, Error> {
        terminate(
            self.store(),
            "terminate lock waiters",
            "SELECT count(pg_terminate_backend(pid))::INT8 AS calls
             FROM pg_stat_activity
             WHERE datname = current_database()
               AND wait_event_type = 'Lock'",
        )
        .await
    }

    /// Terminates every backend listening for Baton's announcements (its
    /// last statement was the `LISTEN`), so that what is announced
    /// meanwhile is lost; returns how many there were.
    async fn terminate_listeners(&self) -> Result<i64, Error> {
        terminate(
            self.store(),
            "terminate listeners",
            "SELECT count(pg_terminate_backend(pid))::INT8 AS calls
             FROM pg_stat_activity
             WHERE datname = current_database()
               AND query = 'LISTEN baton_handoff'
               AND pid <> pg_backend_pid()",
        )
        .await
    }

    /// Sends `payloads` on Baton's announcement channel as an outsider
    /// could (any role may `NOTIFY` on any channel), 10 to a transaction
    /// (a transaction delivers each distinct payload once), so they
    /// arrive as a stream, not a single burst; returns how many were
    /// sent.
    async fn forge_announcements(
        &self,
        payloads: Vec<String>,
    ) -> Result<i64, Error> {
        #[derive(QueryableByName)]
        struct Sent {
            #[diesel(sql_type = BigInt)]
            sent: i64,
        }
        let mut total = 0;
        for chunk in payloads.chunks(10) {
            let chunk = chunk.to_vec();
            let row: Sent = self
                .store()
                .run("forge announcements", |conn| {
                    Box::pin(load_one(
                        statement(
                            "SELECT count(pg_notify('baton_handoff', p)) \
                             AS sent FROM unnest($1::TEXT[]) AS p",
                        )
                        .bind::<Array<Text>, _>(chunk.clone()),
                        conn,
                    ))
                })
                .await?;
            total += row.sent;
        }
        Ok(total)
    }
}

/// Runs `sql`, a count of the backends it terminated.
async fn terminate(
    ds: &DataStore,
    op: &'static str,
    sql: &'static str,
) -> Result<i64, Error> {
    let row: Calls = ds
        .run(op, |conn| Box::pin(load_one(statement(sql), conn)))
        .await?;
    Ok(row.calls.unwrap_or(0))
}

impl DataStoreTestExt for DataStore {
    fn store(&self) -> &DataStore {
        self
    }
}

/// A throwaway server (from the template cached in `template_cache`, a
/// test binary's `CARGO_TARGET_TMPDIR`, so no initdb per test) and a
/// datastore on it, Baton's schema applied when `migrate` is set (a
/// Nexus applies it itself).
pub async fn database(
    template_cache: &str,
    migrate: bool,
) -> (baton_dev_db::DevDb, baton_datastore::DataStore) {
    let db = baton_dev_db::DevDb::builder()
        .template_cache(template_cache)
        .start(&crate::log())
        .expect("a throwaway PostgreSQL starts");
    let ds = baton_datastore::DataStore::new(&crate::log(), &db.url());
    if migrate {
        ds.migrate().await.expect("migrations apply");
    }
    (db, ds)
}
