//! Stored blueprints and the target history.

use baton_types::{Blueprint, parse_blueprint};
use baton_uuid_kinds::{BlueprintUuid, GenericUuid};
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bool, Nullable, Text, Timestamptz, Uuid};
use diesel_async::RunQueryDsl;
use serde::Serialize;

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

#[derive(QueryableByName)]
struct TargetRow {
    #[diesel(sql_type = BigInt)]
    version: i64,
    #[diesel(sql_type = Uuid)]
    blueprint_id: uuid::Uuid,
    #[diesel(sql_type = Bool)]
    enabled: bool,
    #[diesel(sql_type = Timestamptz)]
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

#[derive(QueryableByName)]
struct DocumentRow {
    #[diesel(sql_type = Text)]
    document: String,
}

#[derive(QueryableByName)]
struct SummaryRow {
    #[diesel(sql_type = Uuid)]
    id: uuid::Uuid,
    #[diesel(sql_type = Nullable<Uuid>)]
    parent_blueprint_id: Option<uuid::Uuid>,
    #[diesel(sql_type = BigInt)]
    nexus_generation: i64,
    #[diesel(sql_type = Timestamptz)]
    time_created: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    comment: String,
}

#[derive(QueryableByName)]
struct CurrentRow {
    #[diesel(sql_type = BigInt)]
    version: i64,
    #[diesel(sql_type = Uuid)]
    blueprint_id: uuid::Uuid,
    #[diesel(sql_type = Text)]
    document: String,
}

#[derive(QueryableByName)]
struct AppendedRow {
    #[diesel(sql_type = BigInt)]
    version: i64,
    #[diesel(sql_type = Timestamptz)]
    time_made_target: DateTime<Utc>,
}

/// Inserts a blueprint; says whether it was new, and the document
/// stored under its id.
const INSERT_BLUEPRINT: &str = "WITH inserted AS (
    INSERT INTO blueprint (id, parent_blueprint_id, nexus_generation,
        time_created, creator, comment, document)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
SELECT EXISTS (SELECT 1 FROM inserted) AS inserted,
    (SELECT document FROM blueprint WHERE id = $1) AS existing";

/// The current target and its blueprint's document.
const CURRENT_TARGET: &str = "SELECT t.version, t.blueprint_id, b.document
FROM bp_target t JOIN blueprint b ON b.id = t.blueprint_id
ORDER BY t.version DESC LIMIT 1";

const APPEND_TARGET: &str = "INSERT INTO bp_target
    (version, blueprint_id, enabled, time_made_target)
VALUES ($1, $2, $3, now())
RETURNING version, time_made_target";

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
    rules: Rules,
) -> Result<BlueprintTarget, TxError> {
    let current: Option<CurrentRow> = statement(CURRENT_TARGET)
        .load(conn)
        .await?
        .into_iter()
        .next();
    let id = offered.id();
    let version = match current {
        None => 1,
        Some(current) => {
            let current_id =
                BlueprintUuid::from_untyped_uuid(current.blueprint_id);
            if current_id != id {
                if offered.parent_blueprint_id() != Some(current_id) {
                    return Err(TxError::Abort(Error::TargetNotChild {
                        blueprint_id: id,
                        parent: offered.parent_blueprint_id(),
                        current: current_id,
                    }));
                }
                let current_bp = read_document(current_id, &current.document)
                    .map_err(TxError::Abort)?;
                // Only a mutant checks less.
                if rules != Rules::All {
                    return append(conn, offered, enabled, current.version + 1)
                        .await;
                }
                offered
                    .check_follows(&current_bp)
                    .map_err(|e| TxError::Abort(Error::SuccessionRefused(e)))?;
            }
            current.version + 1
        }
    };
    append(conn, offered, enabled, version).await
}

/// Which rules a target change checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rules {
    /// Parent and succession: the real datastore.
    All,
    /// The parent only (a mutant, in the model test).
    #[cfg(feature = "mutants")]
    ParentOnly,
}

/// Appends `offered` to the target history as `version`.
async fn append(
    conn: &mut AsyncPgConnection,
    offered: &Blueprint,
    enabled: bool,
    version: i64,
) -> Result<BlueprintTarget, TxError> {
    let id = offered.id();
    let row: AppendedRow = load_one(
        statement(APPEND_TARGET)
            .bind::<BigInt, _>(version)
            .bind::<Uuid, _>(id.into_untyped_uuid())
            .bind::<Bool, _>(enabled),
        conn,
    )
    .await?;
    Ok(BlueprintTarget {
        version: row.version,
        blueprint_id: id,
        enabled,
        time_made_target: row.time_made_target,
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
        let rules = self.target_rules();
        Ok(self
            .transaction("blueprint import", |conn| {
                let bp = bp.clone();
                Box::pin(async move {
                    let new = insert_on(conn, &bp).await?;
                    let appended = match target {
                        Some(enabled) => Some(
                            append_target_on(conn, &bp, enabled, rules).await?,
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
        let raw = id.into_untyped_uuid();
        let rows: Vec<DocumentRow> = self
            .retrying("blueprint read", |conn| {
                Box::pin(
                    statement("SELECT document FROM blueprint WHERE id = $1")
                        .bind::<Uuid, _>(raw)
                        .load(conn),
                )
            })
            .await?;
        let row = rows
            .into_iter()
            .next()
            .ok_or(Error::BlueprintNotFound(id))?;
        parse_blueprint(&row.document).map_err(|e| {
            Error::StoredBlueprintUnreadable {
                id,
                message: e.to_string(),
            }
        })
    }

    /// Every stored blueprint, oldest first.
    pub async fn blueprint_list(&self) -> Result<Vec<BlueprintSummary>, Error> {
        let rows: Vec<SummaryRow> = self
            .retrying("blueprint list", |conn| {
                Box::pin(
                    statement(
                        "SELECT id, parent_blueprint_id, nexus_generation,
                            time_created, comment
                         FROM blueprint ORDER BY time_created, id",
                    )
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
        let rules = self.target_rules();
        Ok(self
            .transaction("target set", |conn| {
                Box::pin(async move {
                    let rows: Vec<DocumentRow> = statement(
                        "SELECT document FROM blueprint WHERE id = $1",
                    )
                    .bind::<Uuid, _>(raw)
                    .load(conn)
                    .await?;
                    let row = rows
                        .into_iter()
                        .next()
                        .ok_or(TxError::Abort(Error::BlueprintNotFound(id)))?;
                    let offered = read_document(id, &row.document)
                        .map_err(TxError::Abort)?;
                    append_target_on(conn, &offered, enabled, rules).await
                })
            })
            .await?)
    }

    /// The current target, if any.
    pub async fn target_current(
        &self,
    ) -> Result<Option<BlueprintTarget>, Error> {
        let rows: Vec<TargetRow> = self
            .retrying("target read", |conn| {
                Box::pin(
                    statement(
                        "SELECT version, blueprint_id, enabled, time_made_target
                         FROM bp_target ORDER BY version DESC LIMIT 1",
                    )
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
