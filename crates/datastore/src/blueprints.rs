//! Stored blueprints and the target history.

use baton_types::{Blueprint, parse_blueprint};
use baton_uuid_kinds::{BlueprintUuid, GenericUuid};
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bool, Nullable, Text, Timestamptz, Uuid};
use diesel_async::RunQueryDsl;
use serde::Serialize;

use crate::statement::{Bind, load_one, statement};
use crate::{DataStore, Error};

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
struct SetTargetRow {
    #[diesel(sql_type = Nullable<Uuid>)]
    current: Option<uuid::Uuid>,
    #[diesel(sql_type = Bool)]
    found: bool,
    #[diesel(sql_type = Nullable<Uuid>)]
    parent: Option<uuid::Uuid>,
    #[diesel(sql_type = Nullable<BigInt>)]
    new_version: Option<i64>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    new_time: Option<DateTime<Utc>>,
}

/// Appends to the target history only if the rules allow it, in one
/// statement: no target yet, or the blueprint's parent is the current
/// target, or it is the current target (to toggle `enabled`). Two setters
/// racing from the same parent both read version N; one commits N+1, the
/// other fails to serialize, retries, and is then refused by the rules.
const SET_TARGET: &str = "
WITH current AS (
    SELECT version, blueprint_id FROM bp_target ORDER BY version DESC LIMIT 1
), offered AS (
    SELECT id, parent_blueprint_id FROM blueprint WHERE id = $1
), appended AS (
    INSERT INTO bp_target (version, blueprint_id, enabled, time_made_target)
    SELECT COALESCE((SELECT version FROM current), 0) + 1, offered.id, $2, now()
    FROM offered
    WHERE NOT EXISTS (SELECT 1 FROM current)
       OR offered.parent_blueprint_id = (SELECT blueprint_id FROM current)
       OR offered.id = (SELECT blueprint_id FROM current)
    RETURNING version, time_made_target
)
SELECT (SELECT blueprint_id FROM current) AS current,
       EXISTS (SELECT 1 FROM offered) AS found,
       (SELECT parent_blueprint_id FROM offered) AS parent,
       (SELECT version FROM appended) AS new_version,
       (SELECT time_made_target FROM appended) AS new_time";

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
        let creator = bp.creator().to_owned();
        let comment = bp.comment().to_owned();
        let document = bp.document().to_owned();
        let row: InsertRow = self
            .retrying("blueprint insert", |conn| {
                Box::pin(load_one(
                    statement(
                        "WITH inserted AS (
                            INSERT INTO blueprint (id, parent_blueprint_id,
                                nexus_generation, time_created, creator,
                                comment, document)
                            VALUES ($1, $2, $3, $4, $5, $6, $7)
                            ON CONFLICT (id) DO NOTHING
                            RETURNING id
                        )
                        SELECT EXISTS (SELECT 1 FROM inserted) AS inserted,
                            (SELECT document FROM blueprint WHERE id = $1)
                                AS existing",
                    )
                    .bind::<Uuid, _>(id)
                    .bind::<Nullable<Uuid>, _>(parent)
                    .bind::<BigInt, _>(generation)
                    .bind::<Timestamptz, _>(time)
                    .bind::<Text, _>(creator.clone())
                    .bind::<Text, _>(comment.clone())
                    .bind::<Text, _>(document.clone()),
                    conn,
                ))
            })
            .await?;
        match (row.inserted, row.existing) {
            (true, _) => Ok(true),
            (false, Some(existing)) if existing == bp.document() => Ok(false),
            (false, _) => Err(Error::BlueprintConflict(bp.id())),
        }
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

    /// Makes a stored blueprint the current target (one guarded statement: see `SET_TARGET` in the source).
    pub async fn target_set(
        &self,
        id: BlueprintUuid,
        enabled: bool,
    ) -> Result<BlueprintTarget, Error> {
        let raw = id.into_untyped_uuid();
        let row: SetTargetRow = self
            .retrying("target set", |conn| {
                Box::pin(load_one(
                    statement(SET_TARGET)
                        .bind::<Uuid, _>(raw)
                        .bind::<Bool, _>(enabled),
                    conn,
                ))
            })
            .await?;
        if !row.found {
            return Err(Error::BlueprintNotFound(id));
        }
        match (row.new_version, row.new_time, row.current) {
            (Some(version), Some(time_made_target), _) => Ok(BlueprintTarget {
                version,
                blueprint_id: id,
                enabled,
                time_made_target,
            }),
            (_, _, Some(current)) => Err(Error::TargetNotChild {
                blueprint_id: id,
                parent: row.parent.map(BlueprintUuid::from_untyped_uuid),
                current: BlueprintUuid::from_untyped_uuid(current),
            }),
            _ => Err(Error::Database {
                sqlstate: None,
                op: "target set",
                message: "no row appended and no current target".to_owned(),
                transient: false,
            }),
        }
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
