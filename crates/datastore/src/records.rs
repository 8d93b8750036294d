//! The `db_metadata_nexus` records.

use std::collections::BTreeSet;

use baton_types::{NexusRecord, NexusRecordState, RecordsToEnsure};
use baton_uuid_kinds::{BlueprintUuid, GenericUuid, OmicronZoneUuid};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Nullable, Text, Uuid};
use diesel_async::RunQueryDsl;

use crate::notify::{EventKind, announce};
use crate::schema::RecordState;
use crate::schema::db_metadata_nexus;
use crate::schema::sql_types::DbMetadataNexusState;
use crate::statement::{Bind, load_one, statement};
use crate::{DataStore, Error};

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

/// The heart of the protocol, in one statement: insert the wanted rows
/// only if `$1` is the current target and the executing Nexus `$4` is in
/// control (its own row `active`, or no row at all yet: rack setup),
/// never touching an existing row, and report what it saw, so "target
/// changed" and "not in control" (nothing written) are told apart from
/// "every row already existed" (success). The rows come as two parallel
/// arrays (ids, states): one scan, no union.
///
/// The control check is what keeps a Nexus that is not in control (a
/// `not_yet` one, or a tool impersonating a new-generation Nexus) from
/// declaring its own generation `active` next to the one in control.
/// SQL text, not the query builder: a data-modifying CTE (the builder
/// has no `WITH`), so the guard and the write stay one statement.
pub(crate) const ENSURE_RECORDS: &str = "
WITH target AS (
    SELECT blueprint_id FROM bp_target ORDER BY version DESC LIMIT 1
), me AS (
    SELECT (SELECT count(*) FROM db_metadata_nexus) AS me_records,
           (SELECT state::TEXT FROM db_metadata_nexus
            WHERE nexus_id = $4) AS me_state
), inserted AS (
    INSERT INTO db_metadata_nexus (nexus_id, state, last_drained_blueprint_id)
    SELECT id, state::db_metadata_nexus_state, NULL
    FROM unnest($2::UUID[], $3::TEXT[]) AS wanted (id, state)
    WHERE EXISTS (SELECT 1 FROM target WHERE blueprint_id = $1)
      AND (SELECT me_records = 0 OR me_state = 'active' FROM me)
    ON CONFLICT (nexus_id) DO NOTHING
    RETURNING nexus_id
)
SELECT (SELECT blueprint_id FROM target) AS current_target,
       (SELECT count(*) FROM inserted) AS changed,
       (SELECT me_records FROM me) AS records,
       (SELECT me_state FROM me) AS executing_state";

/// Deletes the rows of expunged Nexus zones only if `$1` is the current
/// target and the executing Nexus `$3` is in control, as the insert.
/// Reading `bp_target` here is what orders this delete after any stale
/// insert on PostgreSQL (see the protocol notes).
/// SQL text, not the query builder: a data-modifying CTE (the builder
/// has no `WITH`), so the guard and the write stay one statement.
const DELETE_EXPUNGED: &str = "
WITH target AS (
    SELECT blueprint_id FROM bp_target ORDER BY version DESC LIMIT 1
), me AS (
    SELECT (SELECT count(*) FROM db_metadata_nexus) AS me_records,
           (SELECT state::TEXT FROM db_metadata_nexus
            WHERE nexus_id = $3) AS me_state
), deleted AS (
    DELETE FROM db_metadata_nexus
    WHERE nexus_id = ANY ($2::UUID[])
      AND EXISTS (SELECT 1 FROM target WHERE blueprint_id = $1)
      AND (SELECT me_records = 0 OR me_state = 'active' FROM me)
    RETURNING nexus_id
)
SELECT (SELECT blueprint_id FROM target) AS current_target,
       (SELECT count(*) FROM deleted) AS changed,
       (SELECT me_records FROM me) AS records,
       (SELECT me_state FROM me) AS executing_state";

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
        let sql = self.ensure_records_sql(ENSURE_RECORDS);
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
        let sql = self.announced(
            MARK_DRAINED.into(),
            "changed",
            EventKind::Drained,
            "$1",
        );
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

    /// Marks a Nexus `quiesced` on an ordinary claim. For operators (the
    /// `--force` path); a Nexus marking itself uses
    /// [`DataStore::record_mark_self_quiesced`], behind the fence.
    pub async fn record_mark_quiesced(
        &self,
        nexus_id: OmicronZoneUuid,
    ) -> Result<(), Error> {
        let raw = nexus_id.into_untyped_uuid();
        let sql = self.mark_quiesced_sql();
        let n: Count = self
            .retrying("record mark quiesced", |conn| {
                Box::pin(load_one(
                    statement(sql.clone()).bind::<Uuid, _>(raw),
                    conn,
                ))
            })
            .await?;
        let n = n.n;
        if n == 0 {
            return Err(Error::NotRegistered(nexus_id));
        }
        Ok(())
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
        let marked = mark_on(self, &mut claim, nexus_id).await;
        if marked.is_err() {
            // Not marked: the claim may be used again.
            drop(claim);
            self.return_reserved_quiesce_claim();
        }
        marked
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
        let sql = self.delete_expunged_sql(DELETE_EXPUNGED);
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
        let sql = self.handoff_sql(HANDOFF);
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

/// Marks `nexus_id` quiesced on the reserved claim. It is the only
/// connection left, so a serialization failure (a handoff or a peer's
/// quiesce touching the same rows) is retried on it, not on a fresh one.
async fn mark_on(
    ds: &DataStore,
    claim: &mut crate::fence::QuiescedClaim,
    nexus_id: OmicronZoneUuid,
) -> Result<(), Error> {
    let raw = nexus_id.into_untyped_uuid();
    let sql = ds.mark_quiesced_sql();
    let n: Count = ds
        .retry_on("mark self quiesced", &mut claim.conn, |conn| {
            Box::pin(load_one(
                statement(sql.clone()).bind::<Uuid, _>(raw),
                conn,
            ))
        })
        .await?;
    let n = n.n;
    if n == 0 {
        return Err(Error::NotRegistered(nexus_id));
    }
    Ok(())
}

/// The drained mark, only while the row is `active`: one statement
/// with its announcement. SQL text, not the query builder: the
/// announcement rides in a CTE (the builder has no `WITH`), so the mark
/// stays one statement.
const MARK_DRAINED: &str = "
WITH changed AS (
    UPDATE db_metadata_nexus SET last_drained_blueprint_id = $2
    WHERE nexus_id = $1 AND state = 'active'
    RETURNING nexus_id
)
SELECT (SELECT count(*) FROM changed) AS n";

/// The quiesce mark, shared by both quiesce paths; SQL text for the
/// same reason as [`MARK_DRAINED`].
const MARK_QUIESCED: &str = "
WITH changed AS (
    UPDATE db_metadata_nexus SET state = 'quiesced'
    WHERE nexus_id = $1
    RETURNING nexus_id
)
SELECT (SELECT count(*) FROM changed) AS n";

impl DataStore {
    fn mark_quiesced_sql(&self) -> std::borrow::Cow<'static, str> {
        self.announced(
            MARK_QUIESCED.into(),
            "changed",
            EventKind::Quiesced,
            "$1",
        )
    }
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

/// Counts rows *not* in the allowed states, so a state added later also
/// blocks the handoff.
/// SQL text, not the query builder: a data-modifying CTE (the builder
/// has no `WITH`), so the guard and the write stay one statement.
const HANDOFF: &str = "
WITH blocking AS (
    SELECT count(*) AS n FROM db_metadata_nexus
    WHERE state NOT IN ('not_yet', 'quiesced')
), me AS (
    SELECT state FROM db_metadata_nexus WHERE nexus_id = $1
), promoted AS (
    UPDATE db_metadata_nexus SET state = 'active'
    WHERE state = 'not_yet'
      AND (SELECT n FROM blocking) = 0
      AND (SELECT state FROM me) = 'not_yet'
    RETURNING nexus_id
)
SELECT (SELECT n FROM blocking) AS blocking,
       (SELECT state FROM me) AS my_state,
       (SELECT count(*) FROM promoted) AS promoted";
