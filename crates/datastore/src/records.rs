//! The `db_metadata_nexus` records.

use std::collections::BTreeSet;

use baton_types::{NexusRecord, NexusRecordState, RecordsToEnsure};
use baton_uuid_kinds::{BlueprintUuid, GenericUuid, OmicronZoneUuid};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Integer, Nullable, Text, Uuid};
use diesel_async::RunQueryDsl;

use crate::notify::EventKind;
use crate::queries::FenceLock;
use crate::queries::announce;
use crate::schema::RecordState;
use crate::schema::db_metadata_nexus;
use crate::schema::sql_types::DbMetadataNexusState;
use crate::statement::{Bind, load_one, statement};
use crate::{DataStore, Error};
use crate::{TransactionError, TxError};

/// The wanted rows as parallel arrays of ids and state labels, the form
/// the record statements bind.
pub(crate) fn rows(
    records: &RecordsToEnsure,
) -> (Vec<uuid::Uuid>, Vec<String>) {
    records
        .iter()
        .map(|(id, state)| (id.into_untyped_uuid(), state.as_str().to_owned()))
        .unzip()
}

/// What the conditional record write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnsureOutcome {
    /// Rows that did not exist and were inserted (0 when all existed).
    pub inserted: usize,
}

#[derive(QueryableByName)]
pub(crate) struct Count {
    #[diesel(sql_type = BigInt)]
    pub(crate) n: i64,
}

/// A row of `db_metadata_nexus`, columns checked against `schema.rs`.
#[derive(Queryable, Selectable)]
#[diesel(table_name = db_metadata_nexus, check_for_backend(Pg))]
pub(crate) struct RecordRow {
    nexus_id: uuid::Uuid,
    last_drained_blueprint_id: Option<uuid::Uuid>,
    state: RecordState,
}

impl From<RecordRow> for NexusRecord {
    fn from(row: RecordRow) -> Self {
        NexusRecord {
            nexus_id: OmicronZoneUuid::from_untyped_uuid(row.nexus_id),
            state: row.state.0,
            last_drained_blueprint_id: row
                .last_drained_blueprint_id
                .map(BlueprintUuid::from_untyped_uuid),
        }
    }
}

#[derive(QueryableByName)]
struct GuardedRow {
    #[diesel(sql_type = Nullable<Uuid>)]
    current_target: Option<uuid::Uuid>,
    #[diesel(sql_type = BigInt)]
    changed: i64,
    #[diesel(sql_type = BigInt)]
    records: i64,
    /// As text (see `RecordState`'s `FromSql<Text>`).
    #[diesel(sql_type = Nullable<Text>)]
    executing_state: Option<RecordState>,
}

/// Which records to read.
enum Filter {
    All,
    Ids(Vec<uuid::Uuid>),
    States(Vec<RecordState>),
}

fn untyped(ids: impl IntoIterator<Item = OmicronZoneUuid>) -> Vec<uuid::Uuid> {
    ids.into_iter()
        .map(GenericUuid::into_untyped_uuid)
        .collect()
}

fn guarded(
    blueprint_id: BlueprintUuid,
    executing: OmicronZoneUuid,
    row: GuardedRow,
) -> Result<usize, Error> {
    let current = row.current_target.map(BlueprintUuid::from_untyped_uuid);
    if current != Some(blueprint_id) {
        return Err(Error::TargetChanged {
            blueprint_id,
            current,
        });
    }
    let state = row.executing_state.map(|s| s.0);
    if row.records > 0 && state != Some(NexusRecordState::Active) {
        return Err(Error::NotInControl {
            nexus_id: executing,
            state,
        });
    }
    Ok(row.changed as usize)
}

impl DataStore {
    /// Rack setup: inserts these Nexus ids as `active`, refused (nothing
    /// written) if the table holds any other row. Exactly these rows,
    /// all `active`, is success, so a retry after an ambiguous commit
    /// succeeds.
    pub async fn records_initialize(
        &self,
        ids: &BTreeSet<OmicronZoneUuid>,
    ) -> Result<(), Error> {
        let raw = untyped(ids.iter().copied());
        let existing: Count = self
            .retrying("records initialize", |conn| {
                Box::pin(
                    // SQL text: a data-modifying CTE, so the emptiness
                    // check and the insert are one statement.
                    load_one(statement(
                        "WITH existing AS (
                            SELECT count(*) AS n FROM db_metadata_nexus
                        ), inserted AS (
                            INSERT INTO db_metadata_nexus (nexus_id, state)
                            SELECT id, 'active' FROM unnest($1::UUID[]) AS a (id)
                            WHERE (SELECT n FROM existing) = 0
                            ON CONFLICT (nexus_id) DO NOTHING
                            RETURNING nexus_id
                        )
                        SELECT (SELECT n FROM existing) AS n",
                    )
                    .bind::<Array<Uuid>, _>(raw.clone())
                    , conn),
                )
            })
            .await?;
        if existing.n > 0 {
            // Exactly these rows, all active: this call's own earlier
            // success (a retry after a commit whose answer was lost).
            let records = self.records_list().await?;
            let same = records.len() == ids.len()
                && records.iter().all(|r| {
                    ids.contains(&r.nexus_id)
                        && r.state == NexusRecordState::Active
                });
            if same {
                return Ok(());
            }
            return Err(Error::AlreadyInitialized(existing.n));
        }
        Ok(())
    }

    /// Inserts the wanted records only if `blueprint_id` is the current
    /// target and `executing` (the Nexus running the step) is in control,
    /// in a single statement; existing rows are never changed.
    pub async fn records_ensure(
        &self,
        blueprint_id: BlueprintUuid,
        executing: OmicronZoneUuid,
        records: &RecordsToEnsure,
    ) -> Result<EnsureOutcome, Error> {
        let bp = blueprint_id.into_untyped_uuid();
        let me = executing.into_untyped_uuid();
        let (ids, states) = rows(records);
        // The heart of the protocol, in one statement (`queries`,
        // `EnsureRecords`).
        let sql = self.queries.ensure_records.clone();
        let row: GuardedRow = self
            .retrying("records ensure", |conn| {
                Box::pin(load_one(
                    statement(sql.clone())
                        .bind::<Uuid, _>(bp)
                        .bind::<Array<Uuid>, _>(ids.clone())
                        .bind::<Array<Text>, _>(states.clone())
                        .bind::<Uuid, _>(me),
                    conn,
                ))
            })
            .await?;
        let inserted = guarded(blueprint_id, executing, row)?;
        Ok(EnsureOutcome { inserted })
    }

    /// Every record, sorted by Nexus id.
    pub async fn records_list(&self) -> Result<Vec<NexusRecord>, Error> {
        self.records_where(Filter::All).await
    }

    /// The records of these Nexus ids, sorted by id.
    pub async fn records_by_ids(
        &self,
        ids: &BTreeSet<OmicronZoneUuid>,
    ) -> Result<Vec<NexusRecord>, Error> {
        self.records_where(Filter::Ids(untyped(ids.iter().copied())))
            .await
    }

    /// The records in any of these states, sorted by id.
    pub async fn records_by_states(
        &self,
        states: &[NexusRecordState],
    ) -> Result<Vec<NexusRecord>, Error> {
        let states = states.iter().copied().map(RecordState).collect();
        self.records_where(Filter::States(states)).await
    }

    async fn records_where(
        &self,
        filter: Filter,
    ) -> Result<Vec<NexusRecord>, Error> {
        use crate::schema::db_metadata_nexus::dsl;
        let rows: Vec<RecordRow> = self
            .retrying("records read", |conn| {
                let query = dsl::db_metadata_nexus
                    .select(RecordRow::as_select())
                    .order(dsl::nexus_id)
                    .into_boxed();
                let query = match &filter {
                    Filter::All => query,
                    Filter::Ids(ids) => {
                        query.filter(dsl::nexus_id.eq_any(ids.clone()))
                    }
                    Filter::States(states) => {
                        query.filter(dsl::state.eq_any(states.clone()))
                    }
                };
                Box::pin(query.load(conn))
            })
            .await?;
        Ok(rows.into_iter().map(NexusRecord::from).collect())
    }

    /// Records the blueprint a quiescing Nexus drained against, only while
    /// its row is `active`. Returns the number of rows changed (0 or 1).
    pub async fn record_update_last_drained(
        &self,
        nexus_id: OmicronZoneUuid,
        blueprint_id: BlueprintUuid,
    ) -> Result<usize, Error> {
        let (nexus, bp) = (
            nexus_id.into_untyped_uuid(),
            blueprint_id.into_untyped_uuid(),
        );
        let sql = self.queries.mark_drained.clone();
        let n: Count = self
            .retrying("record update last drained", |conn| {
                Box::pin(load_one(
                    statement(sql.clone())
                        .bind::<Uuid, _>(nexus)
                        .bind::<Uuid, _>(bp),
                    conn,
                ))
            })
            .await?;
        Ok(n.n as usize)
    }

    /// Marks a Nexus `quiesced` for an operator (the `--force` path); a
    /// Nexus marking itself uses [`DataStore::record_mark_self_quiesced`],
    /// behind the drain fence. Safe whether that Nexus is dead, paused or
    /// cut off: the mark ends its fenced sessions and commits only while
    /// holding its fence lock exclusively, so nothing it runs through its
    /// claims can commit afterwards (`PROTOCOL.md`, "The database
    /// fence"). Returns how many of its sessions were ended.
    pub async fn record_mark_quiesced(
        &self,
        nexus_id: OmicronZoneUuid,
    ) -> Result<usize, Error> {
        let mut claim = self.control_claim("record mark quiesced").await?;
        mark_on(self, &mut claim.conn, nexus_id).await
    }

    /// Marks this process's own Nexus `quiesced`, through the one claim
    /// reserved for it: only after [`DataStore::quiesce`] and once every
    /// claim is released, so the row never says `quiesced` while this
    /// process still holds a connection.
    pub async fn record_mark_self_quiesced(
        &self,
        nexus_id: OmicronZoneUuid,
    ) -> Result<(), Error> {
        let mut claim = self.reserved_quiesce_claim().await?;
        let marked = mark_on(self, &mut claim.conn, nexus_id).await;
        if marked.is_err() {
            // Not marked: the claim may be used again.
            drop(claim);
            self.return_reserved_quiesce_claim();
        }
        marked.map(|_| ())
    }

    /// Deletes these Nexus ids' rows; missing rows are fine.
    pub async fn records_delete(
        &self,
        ids: &BTreeSet<OmicronZoneUuid>,
    ) -> Result<usize, Error> {
        use crate::schema::db_metadata_nexus::dsl;
        let raw = untyped(ids.iter().copied());
        let notify = self.notifies();
        // An operator's repair, rare: a transaction carries the
        // announcement (a removed row may be what a handoff waits for).
        Ok(self
            .transaction("records delete", |conn| {
                let raw = raw.clone();
                Box::pin(async move {
                    let n = diesel::delete(
                        dsl::db_metadata_nexus
                            .filter(dsl::nexus_id.eq_any(raw)),
                    )
                    .execute(conn)
                    .await?;
                    if notify && n > 0 {
                        announce(conn, EventKind::RecordsRemoved, None).await?;
                    }
                    Ok(n)
                })
            })
            .await?)
    }

    /// Deletes the rows of these (expunged) Nexus zones only if
    /// `blueprint_id` is the current target and `executing` is in
    /// control, in one statement.
    pub async fn records_delete_expunged(
        &self,
        blueprint_id: BlueprintUuid,
        executing: OmicronZoneUuid,
        ids: &BTreeSet<OmicronZoneUuid>,
    ) -> Result<usize, Error> {
        let bp = blueprint_id.into_untyped_uuid();
        let me = executing.into_untyped_uuid();
        let raw = untyped(ids.iter().copied());
        let sql = self.queries.delete_expunged.clone();
        let row: GuardedRow = self
            .retrying("records delete expunged", |conn| {
                Box::pin(load_one(
                    statement(sql.clone())
                        .bind::<Uuid, _>(bp)
                        .bind::<Array<Uuid>, _>(raw.clone())
                        .bind::<Uuid, _>(me),
                    conn,
                ))
            })
            .await?;
        guarded(blueprint_id, executing, row)
    }

    /// The new generation takes over, atomically and in one statement: if
    /// no row is in a state other than `not_yet` or `quiesced`, and the
    /// caller's row is `not_yet`, every `not_yet` row becomes `active`.
    /// Returns how many rows were promoted: 0 when the caller's row is
    /// already `active`, which is success, so a handoff whose commit was
    /// lost in flight can be retried. Every refusal is transient.
    pub async fn attempt_handoff(
        &self,
        nexus_id: OmicronZoneUuid,
    ) -> Result<usize, Error> {
        let raw = nexus_id.into_untyped_uuid();
        let sql = self.queries.handoff.clone();
        let row: HandoffRow = self
            .retrying("attempt handoff", |conn| {
                Box::pin(load_one(
                    statement(sql.clone()).bind::<Uuid, _>(raw),
                    conn,
                ))
            })
            .await?;
        // Already in control (a retry after an ambiguous commit, or a
        // peer took over for all of us): nothing to do, and no refusal.
        if row.my_state == Some(RecordState(NexusRecordState::Active)) {
            return Ok(0);
        }
        if row.blocking > 0 {
            return Err(Error::HandoffStillActive(row.blocking));
        }
        let Some(RecordState(state)) = row.my_state else {
            return Err(Error::HandoffNotRegistered(nexus_id));
        };
        if state != NexusRecordState::NotYet {
            return Err(Error::HandoffWrongState { nexus_id, state });
        }
        Ok(row.promoted as usize)
    }
}

/// How many times a mark starts over when a session of the Nexus keeps
/// enrolling between the end of its others and the lock request.
const MARK_ATTEMPTS: u32 = 5;

/// Marks `nexus_id` quiesced on `conn`, in one transaction: end the
/// Nexus's fenced sessions, hold its fence lock exclusively (bounded by
/// a lock timeout), then the mark itself with its announcement. A
/// serialization failure (a handoff or a peer's quiesce touching the
/// same rows) is retried on the same connection: for a Nexus marking
/// itself it is the only one left. Returns the sessions ended.
async fn mark_on(
    ds: &DataStore,
    conn: &mut diesel_async::AsyncPgConnection,
    nexus_id: OmicronZoneUuid,
) -> Result<usize, Error> {
    let raw = nexus_id.into_untyped_uuid();
    let lock = FenceLock::of(nexus_id);
    let fence = ds.guards.mark_fence;
    let sql = ds.queries.mark_quiesced.clone();
    for _ in 0..MARK_ATTEMPTS {
        let sql = sql.clone();
        let marked = ds
            .transaction_on("mark quiesced", conn, move |conn| {
                let sql = sql.clone();
                Box::pin(async move {
                    let mut ended = 0;
                    if fence {
                        ended = end_sessions_and_lock(conn, lock).await?;
                    }
                    let n: Count =
                        load_one(statement(sql).bind::<Uuid, _>(raw), conn)
                            .await?;
                    if n.n == 0 {
                        return Err(TxError::Abort(Error::NotRegistered(
                            nexus_id,
                        )));
                    }
                    Ok(ended)
                })
            })
            .await;
        match marked {
            Ok(ended) => return Ok(ended),
            Err(TransactionError::Datastore(Error::Database {
                message,
                ..
            })) if message.contains("lock timeout") => {
                slog::info!(ds.log, "a session of the Nexus enrolled while \
                    its others were ended; marking it again";
                    "nexus_id" => %nexus_id);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::FenceBusy(nexus_id))
}

/// The fence's half of a `quiesced` mark, inside its transaction: ends
/// every session holding the Nexus's fence lock, then takes the lock
/// exclusively until the transaction ends. Returns the sessions ended.
async fn end_sessions_and_lock(
    conn: &mut diesel_async::AsyncPgConnection,
    lock: FenceLock,
) -> diesel::QueryResult<usize> {
    use diesel_async::SimpleAsyncConnection;
    conn.batch_execute(FenceLock::LOCK_TIMEOUT).await?;
    let ended: Count = load_one(
        statement(FenceLock::END_HOLDERS)
            .bind::<Integer, _>(lock.high)
            .bind::<Integer, _>(lock.low),
        conn,
    )
    .await?;
    statement(FenceLock::EXCLUSIVE)
        .bind::<Integer, _>(lock.high)
        .bind::<Integer, _>(lock.low)
        .execute(conn)
        .await?;
    Ok(ended.n as usize)
}

#[derive(QueryableByName)]
struct HandoffRow {
    #[diesel(sql_type = BigInt)]
    blocking: i64,
    #[diesel(sql_type = Nullable<DbMetadataNexusState>)]
    my_state: Option<RecordState>,
    #[diesel(sql_type = BigInt)]
    promoted: i64,
}
