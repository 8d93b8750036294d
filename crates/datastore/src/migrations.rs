//! Embedded schema migrations, applied in order, each in one transaction.
//!
//! Baton keeps its own numbered list (as Omicron does) rather than
//! diesel_migrations: the applied version is what the access check
//! compares against, and the runner must work over diesel-async.

use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Nullable};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use slog::info;

use crate::datastore::TxError;
use crate::statement::{Bind, load_one, statement};
use crate::{DataStore, Error};

/// Every migration: version, name, SQL. Append only.
const MIGRATIONS: &[(i64, &str, &str)] =
    &[(1, "handoff", include_str!("migrations/0001-handoff.sql"))];

/// The schema version this build of Baton wants.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = Nullable<BigInt>)]
    version: Option<i64>,
}

const CREATE_VERSION_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS baton_schema_version (
    version INT8 NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)";

impl DataStore {
    /// The applied schema version: 0 for an empty database.
    pub async fn schema_version(&self) -> Result<i64, Error> {
        // information_schema, not the table itself, so that an empty
        // database answers 0 instead of failing.
        let exists: i64 = self
            .retrying("schema version", |conn| {
                Box::pin(async move {
                    let row: crate::records::Count = load_one(statement(
                        "SELECT count(*) AS n FROM information_schema.tables \
                         WHERE table_name = 'baton_schema_version' \
                         AND table_schema = current_schema()",
                    )
                    , conn)
                    .await?;
                    Ok(row.n)
                })
            })
            .await?;
        if exists == 0 {
            return Ok(0);
        }
        let version = self
            .retrying("schema version", |conn| {
                Box::pin(
                    load_one::<_, Version>(statement(
                        "SELECT max(version) AS version FROM baton_schema_version",
                    )
                    , conn),
                )
            })
            .await?;
        Ok(version.version.unwrap_or(0))
    }

    /// Applies every pending migration; returns the resulting version.
    /// Idempotent, and safe to run from several processes at once.
    pub async fn migrate(&self) -> Result<i64, Error> {
        let current = self.schema_version().await?;
        if current > SCHEMA_VERSION {
            return Err(Error::Schema(format!(
                "the database is at schema version {current}, newer than \
                 this Baton's {SCHEMA_VERSION}; upgrade Baton"
            )));
        }
        self.retrying("create schema version table", |conn| {
            Box::pin(conn.batch_execute(CREATE_VERSION_TABLE))
        })
        .await?;
        for &(version, name, sql) in MIGRATIONS {
            let applied = self
                .transaction("migrate", move |conn| {
                    Box::pin(async move {
                        let done: Version = load_one(statement(
                            "SELECT max(version) AS version FROM baton_schema_version",
                        )
                        , conn)
                        .await?;
                        if done.version.unwrap_or(0) >= version {
                            return Ok::<_, TxError>(false);
                        }
                        conn.batch_execute(sql).await?;
                        statement(
                            "INSERT INTO baton_schema_version (version, name) \
                             VALUES ($1, $2)",
                        )
                        .bind::<BigInt, _>(version)
                        .bind::<diesel::sql_types::Text, _>(name)
                        .execute(conn)
                        .await?;
                        Ok(true)
                    })
                })
                .await?;
            if applied {
                info!(self.log, "applied migration";
                    "version" => version, "name" => name);
            }
        }
        Ok(SCHEMA_VERSION)
    }
}
