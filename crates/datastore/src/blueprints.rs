//! Stored blueprints and the target history.

use baton_types::{Blueprint, parse_blueprint};
use baton_uuid_kinds::{BlueprintUuid, GenericUuid};
use chrono::{DateTime, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Nullable, Text, Timestamptz, Uuid};
use diesel_async::RunQueryDsl;
use serde::Serialize;

use crate::notify::EventKind;
use crate::queries::announce;
use crate::statement::{Bind, load_one, statement};
use crate::{DataStore, Error, TxError};
use diesel_async::AsyncPgConnection;

/// One row of the target history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BlueprintTarget {
    /// Position in the history; the highest is current.
    pub version: i64,
    /// The target blueprint.
    pub blueprint_id: BlueprintUuid,
    /// Whether executors should act on it.
    pub enabled: bool,
    /// When it was made the target.
    pub time_made_target: DateTime<Utc>,
}

/// A stored blueprint, without its zones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BlueprintSummary {
    /// Its id.
    pub id: BlueprintUuid,
    /// Its parent.
    pub parent_blueprint_id: Option<BlueprintUuid>,
    /// Its top-level Nexus generation.
    pub nexus_generation: i64,
    /// When it was made.
    pub time_created: DateTime<Utc>,
    /// Why.
    pub comment: String,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = crate::schema::bp_target, check_for_backend(Pg))]
struct TargetRow {
    version: i64,
    blueprint_id: uuid::Uuid,
    enabled: bool,
    time_made_target: DateTime<Utc>,
}

impl From<TargetRow> for BlueprintTarget {
    fn from(row: TargetRow) -> Self {
        BlueprintTarget {
            version: row.version,
            blueprint_id: BlueprintUuid::from_untyped_uuid(row.blueprint_id),
            enabled: row.enabled,
            time_made_target: row.time_made_target,
        }
    }
}

#[derive(QueryableByName)]
struct InsertRow {
    #[diesel(sql_type = Bool)]
    inserted: bool,
    #[diesel(sql_type = Nullable<Text>)]
    existing: Option<String>,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = crate::schema::blueprint, check_for_backend(Pg))]
struct SummaryRow {
    id: uuid::Uuid,
    parent_blueprint_id: Option<uuid::Uuid>,
    nexus_generation: i64,
    time_created: DateTime<Utc>,
    comment: String,
}

/// Inserts a blueprint; says whether it was new, and the document
/// stored under its id.
///
/// SQL text, not the query builder: a data-modifying CTE (the builder
/// has no `WITH`), so insert-or-nothing and the stored
/// document come back in one round trip.
const INSERT_BLUEPRINT: &str = "WITH inserted AS (
    INSERT INTO blueprint (id, parent_blueprint_id, nexus_generation,
        time_created, creator, comment, document)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
SELECT EXISTS (SELECT 1 FROM inserted) AS inserted,
    (SELECT document FROM blueprint WHERE id = $1) AS existing";

/// Inserts `bp` on `conn` (inside the caller's transaction): `true` if
/// new, `false` if the same document was there; a different document
/// under its id aborts.
async fn insert_on(
    conn: &mut AsyncPgConnection,
    bp: &Blueprint,
) -> Result<bool, TxError> {
    let row: InsertRow = load_one(
        statement(INSERT_BLUEPRINT)
            .bind::<Uuid, _>(bp.id().into_untyped_uuid())
            .bind::<Nullable<Uuid>, _>(
                bp.parent_blueprint_id().map(|p| p.into_untyped_uuid()),
            )
            .bind::<BigInt, _>(bp.nexus_generation().as_i64())
            .bind::<Timestamptz, _>(bp.time_created())
            .bind::<Text, _>(bp.creator().to_owned())
            .bind::<Text, _>(bp.comment().to_owned())
            .bind::<Text, _>(bp.document().to_owned()),
        conn,
    )
    .await?;
    inserted(bp, row).map_err(TxError::Abort)
}

/// Whether `bp` was new, from the insert's answer.
fn inserted(bp: &Blueprint, row: InsertRow) -> Result<bool, Error> {
    match (row.inserted, row.existing) {
        (true, _) => Ok(true),
        (false, Some(existing)) if existing == bp.document() => Ok(false),
        (false, _) => Err(Error::BlueprintConflict(bp.id())),
    }
}

/// Makes `offered` the target on `conn`, inside the caller's SERIALIZABLE
/// transaction, if every rule allows it: no target yet; or it is the
/// current target (to toggle `enabled`); or its parent is the current
/// target and it follows it ([`Blueprint::check_follows`]). The rules
/// read the current target in the same transaction that appends the
/// new one, so two changes racing from the same target cannot both
/// pass: one commits, the other fails to serialize, is retried, and is
/// then judged against the new target.
async fn append_target_on(
    conn: &mut AsyncPgConnection,
    offered: &Blueprint,
    enabled: bool,
    succession: bool,
    notify: bool,
) -> Result<BlueprintTarget, TxError> {
    use crate::schema::{blueprint, bp_target};
    let current: Option<(i64, uuid::Uuid, String)> = bp_target::table
        .inner_join(blueprint::table)
        .select((
            bp_target::version,
            bp_target::blueprint_id,
            blueprint::document,
        ))
        .order(bp_target::version.desc())
        .limit(1)
        .load(conn)
        .await?
        .into_iter()
        .next();
    let id = offered.id();
    let version = match current {
        None => 1,
        Some((current_version, current_id, current_document)) => {
            let current_id = BlueprintUuid::from_untyped_uuid(current_id);
            if current_id != id {
                if offered.parent_blueprint_id() != Some(current_id) {
                    return Err(TxError::Abort(Error::TargetNotChild {
                        blueprint_id: id,
                        parent: offered.parent_blueprint_id(),
                        current: current_id,
                    }));
                }
                let current_bp = read_document(current_id, &current_document)
                    .map_err(TxError::Abort)?;
                // Only a mutant checks less (`Guards::succession`).
                if !succession {
                    return append(
                        conn,
                        offered,
                        enabled,
                        current_version + 1,
                        notify,
                    )
                    .await;
                }
                offered
                    .check_follows(&current_bp)
                    .map_err(|e| TxError::Abort(Error::SuccessionRefused(e)))?;
            }
            current_version + 1
        }
    };
    append(conn, offered, enabled, version, notify).await
}

/// Appends `offered` to the target history as `version`.
async fn append(
    conn: &mut AsyncPgConnection,
    offered: &Blueprint,
    enabled: bool,
    version: i64,
    notify: bool,
) -> Result<BlueprintTarget, TxError> {
    use crate::schema::bp_target::dsl;
    let id = offered.id();
    let (version, time_made_target): (i64, DateTime<Utc>) =
        diesel::insert_into(dsl::bp_target)
            .values((
                dsl::version.eq(version),
                dsl::blueprint_id.eq(id.into_untyped_uuid()),
                dsl::enabled.eq(enabled),
                dsl::time_made_target.eq(diesel::dsl::now),
            ))
            .returning((dsl::version, dsl::time_made_target))
            .load(conn)
            .await?
            .pop()
            .ok_or(diesel::result::Error::NotFound)?;
    if notify {
        announce(conn, EventKind::TargetSet, None).await?;
    }
    Ok(BlueprintTarget {
        version,
        blueprint_id: id,
        enabled,
        time_made_target,
    })
}

/// A stored document, read back.
fn read_document(
    id: BlueprintUuid,
    document: &str,
) -> Result<Blueprint, Error> {
    parse_blueprint(document).map_err(|e| Error::StoredBlueprintUnreadable {
        id,
        message: e.to_string(),
    })
}

impl DataStore {
    /// Stores a blueprint (its model fields and the original document).
    /// Storing the same document again is a no-op that returns `false`;
    /// a different document under the same id is refused.
    pub async fn blueprint_insert(
        &self,
        bp: &Blueprint,
    ) -> Result<bool, Error> {
        let id = bp.id().into_untyped_uuid();
        let parent = bp.parent_blueprint_id().map(|p| p.into_untyped_uuid());
        let generation = bp.nexus_generation().as_i64();
        let time = bp.time_created();
        let row: InsertRow = self
            .retrying("blueprint insert", |conn| {
                Box::pin(load_one(
                    statement(INSERT_BLUEPRINT)
                        .bind::<Uuid, _>(id)
                        .bind::<Nullable<Uuid>, _>(parent)
                        .bind::<BigInt, _>(generation)
                        .bind::<Timestamptz, _>(time)
                        .bind::<Text, _>(bp.creator().to_owned())
                        .bind::<Text, _>(bp.comment().to_owned())
                        .bind::<Text, _>(bp.document().to_owned()),
                    conn,
                ))
            })
            .await?;
        inserted(bp, row)
    }

    /// Stores a blueprint and, with `target: Some(enabled)`, makes it the
    /// current target, all or nothing: one SERIALIZABLE transaction, so a
    /// refused target change leaves the blueprint unstored too (as
    /// [`DataStore::blueprint_insert`] and [`DataStore::target_set`]
    /// otherwise). Returns whether the blueprint was new, and the target
    /// appended.
    pub async fn blueprint_import(
        &self,
        bp: &Blueprint,
        target: Option<bool>,
    ) -> Result<(bool, Option<BlueprintTarget>), Error> {
        let bp = std::sync::Arc::new(bp.clone());
        let succession = self.guards.succession;
        let notify = self.notifies();
        Ok(self
            .transaction("blueprint import", |conn| {
                let bp = bp.clone();
                Box::pin(async move {
                    let new = insert_on(conn, &bp).await?;
                    let appended = match target {
                        Some(enabled) => Some(
                            append_target_on(
                                conn, &bp, enabled, succession, notify,
                            )
                            .await?,
                        ),
                        None => None,
                    };
                    Ok((new, appended))
                })
            })
            .await?)
    }

    /// Reads a stored blueprint back from its original document.
    pub async fn blueprint_read(
        &self,
        id: BlueprintUuid,
    ) -> Result<Blueprint, Error> {
        use crate::schema::blueprint::dsl;
        let raw = id.into_untyped_uuid();
        let documents: Vec<String> = self
            .retrying("blueprint read", |conn| {
                Box::pin(
                    dsl::blueprint
                        .filter(dsl::id.eq(raw))
                        .select(dsl::document)
                        .load(conn),
                )
            })
            .await?;
        let document = documents
            .into_iter()
            .next()
            .ok_or(Error::BlueprintNotFound(id))?;
        read_document(id, &document)
    }

    /// Every stored blueprint, oldest first.
    pub async fn blueprint_list(&self) -> Result<Vec<BlueprintSummary>, Error> {
        use crate::schema::blueprint::dsl;
        let rows: Vec<SummaryRow> = self
            .retrying("blueprint list", |conn| {
                Box::pin(
                    dsl::blueprint
                        .select(SummaryRow::as_select())
                        .order((dsl::time_created, dsl::id))
                        .load(conn),
                )
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| BlueprintSummary {
                id: BlueprintUuid::from_untyped_uuid(r.id),
                parent_blueprint_id: r
                    .parent_blueprint_id
                    .map(BlueprintUuid::from_untyped_uuid),
                nexus_generation: r.nexus_generation,
                time_created: r.time_created,
                comment: r.comment,
            })
            .collect())
    }

    /// Makes a stored blueprint the current target, if the rules allow
    /// it (see [`Blueprint::check_follows`]): no target yet; the current
    /// target itself (to toggle `enabled`); or a child of the current
    /// target that follows it. The rules are checked in the same
    /// SERIALIZABLE transaction that changes the target.
    pub async fn target_set(
        &self,
        id: BlueprintUuid,
        enabled: bool,
    ) -> Result<BlueprintTarget, Error> {
        let raw = id.into_untyped_uuid();
        let succession = self.guards.succession;
        let notify = self.notifies();
        Ok(self
            .transaction("target set", |conn| {
                Box::pin(async move {
                    use crate::schema::blueprint::dsl;
                    let documents: Vec<String> = dsl::blueprint
                        .filter(dsl::id.eq(raw))
                        .select(dsl::document)
                        .load(conn)
                        .await?;
                    let document = documents
                        .into_iter()
                        .next()
                        .ok_or(TxError::Abort(Error::BlueprintNotFound(id)))?;
                    let offered =
                        read_document(id, &document).map_err(TxError::Abort)?;
                    append_target_on(
                        conn, &offered, enabled, succession, notify,
                    )
                    .await
                })
            })
            .await?)
    }

    /// The current target, if any.
    pub async fn target_current(
        &self,
    ) -> Result<Option<BlueprintTarget>, Error> {
        use crate::schema::bp_target::dsl;
        let rows: Vec<TargetRow> = self
            .retrying("target read", |conn| {
                Box::pin(
                    dsl::bp_target
                        .select(TargetRow::as_select())
                        .order(dsl::version.desc())
                        .limit(1)
                        .load(conn),
                )
            })
            .await?;
        Ok(rows.into_iter().next().map(BlueprintTarget::from))
    }

    /// The current target and its blueprint.
    pub async fn target_blueprint(
        &self,
    ) -> Result<(BlueprintTarget, Blueprint), Error> {
        let target = self.target_current().await?.ok_or(Error::NoTarget)?;
        let blueprint = self.blueprint_read(target.blueprint_id).await?;
        Ok((target, blueprint))
    }
}
