//! Schema migrations, one numbered list per component: Baton's own
//! tables, and the tables of each service that embeds Baton.
//!
//! Baton keeps its own numbered lists (as Omicron does) rather than
//! diesel_migrations: the applied versions are what the access check
//! compares against, and the runner must work over diesel-async.
//!
//! Migrations are safe from many processes at once: a migrating process
//! takes one session-level advisory lock on a connection of its own,
//! then applies each pending migration in its own transaction, after
//! re-reading the applied version. The lock is taken *before* the
//! transaction: a SERIALIZABLE transaction's snapshot is taken by its
//! first statement, so a lock taken inside it would still see the
//! version as it was before the lock holder committed, and redo its
//! work ("relation already exists"; the ledger test found this). The
//! connection is outside the pool and closed when done or dropped, so
//! the lock cannot leak. Without any lock, two processes creating the
//! same table at once fail on PostgreSQL's catalog (a duplicate
//! `pg_type` row) even at SERIALIZABLE. (CockroachDB accepts the
//! advisory-lock call but does not lock; there the version row's primary
//! key makes the loser fail, and a retry finds the migration applied.)
//! Nothing is written, and no lock taken, when nothing is pending, so a
//! read-only database at the latest version migrates as a no-op.

use diesel::QueryableByName;
use diesel::prelude::*;
use diesel::sql_types::{Array, Text};

use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use slog::info;

use crate::TxError;
use crate::notify::EventKind;
use crate::queries::announce;
use crate::statement::{Bind, load_one, statement};
use crate::{DataStore, Error};

/// One schema migration: its version, a short name, and its SQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    version: i64,
    name: String,
    sql: String,
}

impl Migration {
    /// A migration to `version` (1, 2, ...), applied by running `sql`
    /// (one or more statements) in one transaction.
    pub fn new(
        version: i64,
        name: impl Into<String>,
        sql: impl Into<String>,
    ) -> Migration {
        Migration {
            version,
            name: name.into(),
            sql: sql.into(),
        }
    }

    /// Its version.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// A service's schema: its component name and its migrations in order.
///
/// ```
/// use baton_datastore::{Migration, SchemaComponent};
///
/// let schema = SchemaComponent::new(
///     "ledger",
///     vec![
///         Migration::new(1, "entries", "CREATE TABLE entry (id INT8)"),
///         Migration::new(2, "note", "ALTER TABLE entry ADD note TEXT"),
///     ],
/// )
/// .unwrap();
/// assert_eq!(schema.wanted_version(), 2);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaComponent {
    name: String,
    migrations: Vec<Migration>,
}

/// The name Baton's own tables go by.
pub const BATON_COMPONENT: &str = "baton";

impl SchemaComponent {
    /// A component; its migrations must be numbered 1, 2, 3, ... in
    /// order, and its name must not be empty or Baton's own.
    pub fn new(
        name: impl Into<String>,
        migrations: Vec<Migration>,
    ) -> Result<SchemaComponent, Error> {
        let name = name.into();
        if name.trim().is_empty() || name == BATON_COMPONENT {
            return Err(Error::Schema(format!(
                "a schema component needs a name of its own (not {name:?})"
            )));
        }
        for (i, m) in migrations.iter().enumerate() {
            if m.version != i as i64 + 1 {
                return Err(Error::Schema(format!(
                    "component {name}: migration {:?} has version {}, but \
                     versions must run 1, 2, 3, ... and this is number {}",
                    m.name,
                    m.version,
                    i + 1
                )));
            }
        }
        Ok(SchemaComponent { name, migrations })
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version this build wants: its last migration's.
    pub fn wanted_version(&self) -> i64 {
        self.migrations.last().map_or(0, |m| m.version)
    }

    /// Its migrations, in order.
    pub fn migrations(&self) -> &[Migration] {
        &self.migrations
    }
}

/// Every migration of Baton's own tables. Append only.
const BATON_MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "handoff", include_str!("migrations/0001-handoff.sql")),
    (
        2,
        "component versions",
        include_str!("migrations/0002-component-versions.sql"),
    ),
    (
        3,
        "nexus reports",
        include_str!("migrations/0003-nexus-reports.sql"),
    ),
];

/// The schema version of Baton's own tables that this build wants.
pub const SCHEMA_VERSION: i64 = BATON_MIGRATIONS[BATON_MIGRATIONS.len() - 1].0;

/// The tables Baton's migrations create, each with the version that
/// creates it, read from the migrations' own text so a new migration
/// needs no second list.
fn created_tables() -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for &(version, _, sql) in BATON_MIGRATIONS {
        for line in sql.lines() {
            let Some(rest) = line.trim().strip_prefix("CREATE TABLE ") else {
                continue;
            };
            let rest = rest.trim_start_matches("IF NOT EXISTS ");
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            out.push((version, name));
        }
    }
    out
}

#[derive(QueryableByName)]
struct TableName {
    #[diesel(sql_type = Text)]
    table_name: String,
}

/// The highest applied version of Baton's tables (0 for none).
async fn baton_max(
    conn: &mut diesel_async::AsyncPgConnection,
) -> diesel::QueryResult<i64> {
    use crate::schema::baton_schema_version::dsl;
    let max: Option<i64> = dsl::baton_schema_version
        .select(diesel::dsl::max(dsl::version))
        .load(conn)
        .await?
        .pop()
        .flatten();
    Ok(max.unwrap_or(0))
}

/// The highest applied version of a service's component (0 for none).
async fn component_max(
    conn: &mut diesel_async::AsyncPgConnection,
    component: &str,
) -> diesel::QueryResult<i64> {
    use crate::schema::baton_component_version::dsl;
    let max: Option<i64> = dsl::baton_component_version
        .filter(dsl::component.eq(component))
        .select(diesel::dsl::max(dsl::version))
        .load(conn)
        .await?
        .pop()
        .flatten();
    Ok(max.unwrap_or(0))
}

const CREATE_VERSION_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS baton_schema_version (
    version INT8 NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)";

/// Serializes every migration of every component, in every process.
const MIGRATION_LOCK: &str = "SELECT pg_advisory_lock(588001)";

impl DataStore {
    /// The applied version of Baton's own tables: 0 for an empty
    /// database.
    pub async fn schema_version(&self) -> Result<i64, Error> {
        if !self.table_exists("baton_schema_version").await? {
            return Ok(0);
        }
        let version = self
            .retrying("schema version", |conn| Box::pin(baton_max(conn)))
            .await?;
        Ok(version)
    }

    /// The applied version of a service's component: 0 if none of its
    /// migrations ran (or Baton's tables are not there yet).
    pub async fn component_version(&self, name: &str) -> Result<i64, Error> {
        if !self.table_exists("baton_component_version").await? {
            return Ok(0);
        }
        let name = name.to_owned();
        let version = self
            .retrying("component version", |conn| {
                let name = name.clone();
                Box::pin(async move { component_max(conn, &name).await })
            })
            .await?;
        Ok(version)
    }

    /// Refuses a role that may use no schema on its `search_path`
    /// (none exists, or it lacks `USAGE` on them): its catalog reads see
    /// no table, which would read as a fresh, empty system.
    async fn schema_usable(&self) -> Result<(), Error> {
        #[derive(QueryableByName)]
        struct Usable {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            usable: bool,
            #[diesel(sql_type = Text)]
            role: String,
            #[diesel(sql_type = Text)]
            path: String,
        }
        let row: Usable = self
            .retrying("schema usable", |conn| {
                // SQL text: session functions the builder does not know.
                Box::pin(load_one(
                    statement(
                        "SELECT current_schema() IS NOT NULL AS usable, \
                         current_user::TEXT AS role, \
                         current_setting('search_path') AS path",
                    ),
                    conn,
                ))
            })
            .await?;
        if row.usable {
            return Ok(());
        }
        Err(Error::Schema(format!(
            "role {} may use no schema on its search_path ({}): it lacks \
             USAGE on the schema that holds Baton's tables, or that schema \
             does not exist, so the tables cannot even be seen (grant it, \
             e.g. GRANT USAGE ON SCHEMA public TO {})",
            row.role, row.path, row.role
        )))
    }

    /// The recorded schema version of Baton's tables (0 for none), and
    /// where the tables disagree with it: a table a recorded migration
    /// created that is missing, or a table of an unrecorded one that
    /// exists (empty when they agree). Read in one transaction, so a
    /// migration committing meanwhile (its tables and its version row
    /// commit together) is seen whole or not at all.
    pub async fn schema_state(&self) -> Result<(i64, Vec<String>), Error> {
        self.schema_usable().await?;
        let tables = created_tables();
        let mut names: Vec<String> =
            tables.iter().map(|(_, n)| n.clone()).collect();
        names.push("baton_schema_version".to_owned());
        let (version, present) = self
            .transaction("schema state", |conn| {
                let names = names.clone();
                Box::pin(async move {
                    // SQL text: information_schema is not Baton's.
                    let present: Vec<TableName> = statement(
                        "SELECT table_name::TEXT AS table_name \
                         FROM information_schema.tables \
                         WHERE table_schema = current_schema() \
                         AND table_name = ANY ($1::TEXT[])",
                    )
                    .bind::<Array<Text>, _>(names)
                    .load(conn)
                    .await?;
                    let present: Vec<String> =
                        present.into_iter().map(|t| t.table_name).collect();
                    if !present.iter().any(|t| t == "baton_schema_version") {
                        return Ok::<_, TxError>((0, present));
                    }
                    Ok((baton_max(conn).await?, present))
                })
            })
            .await?;
        let mut drift = Vec::new();
        for (created_by, table) in &tables {
            let exists = present.contains(table);
            if *created_by <= version && !exists {
                drift.push(format!(
                    "table {table} is missing although schema version \
                     {version} is recorded"
                ));
            }
            if *created_by > version && exists {
                drift.push(format!(
                    "table {table} exists although only schema version \
                     {version} is recorded (it comes with version \
                     {created_by})"
                ));
            }
        }
        Ok((version, drift))
    }

    /// Where the database's columns differ from those this build's
    /// queries are written against (`schema.rs`): a column the build
    /// expects that is missing, or one the database has that the build
    /// does not know. Empty when they agree; a test holds this build to
    /// its own migrations with it.
    pub async fn schema_mismatches(&self) -> Result<Vec<String>, Error> {
        #[derive(QueryableByName)]
        struct ColumnRow {
            #[diesel(sql_type = Text)]
            table_name: String,
            #[diesel(sql_type = Text)]
            column_name: String,
        }
        let declared = crate::schema::declared_tables();
        let names: Vec<String> =
            declared.iter().map(|(t, _)| (*t).to_owned()).collect();
        let actual: Vec<ColumnRow> = self
            .retrying("schema columns", |conn| {
                // SQL text: information_schema is not Baton's.
                Box::pin(
                    statement(
                        "SELECT table_name::TEXT AS table_name, \
                         column_name::TEXT AS column_name \
                         FROM information_schema.columns \
                         WHERE table_schema = current_schema() \
                         AND table_name = ANY ($1::TEXT[])",
                    )
                    .bind::<Array<Text>, _>(names.clone())
                    .load(conn),
                )
            })
            .await?;
        let mut problems = Vec::new();
        for (table, columns) in &declared {
            let here: Vec<&str> = actual
                .iter()
                .filter(|c| c.table_name == *table)
                .map(|c| c.column_name.as_str())
                .collect();
            for column in columns {
                if !here.contains(&column.as_str()) {
                    problems.push(format!(
                        "{table}.{column} is missing from the database"
                    ));
                }
            }
            for column in here {
                if !columns.iter().any(|c| c == column) {
                    problems.push(format!(
                        "{table}.{column} is in the database but not in \
                         this build's schema"
                    ));
                }
            }
        }
        Ok(problems)
    }

    /// A connection of its own holding the migration lock (released
    /// when it is dropped, which closes it).
    ///
    /// A service component's migrations write the service's tables, so
    /// their connection is enrolled in the database fence like a claim's
    /// (Baton's own run before the records table exists, and are
    /// Baton's: not enrolled).
    async fn locked_for_migration(
        &self,
        ledger: &Ledger,
    ) -> Result<diesel_async::AsyncPgConnection, Error> {
        let mut conn = match ledger {
            Ledger::Baton => self.dedicated("migration lock").await?,
            Ledger::Component(_) => {
                self.dedicated_fenced("migration lock").await?
            }
        };
        info!(self.log, "waiting for the migration lock");
        conn.batch_execute(MIGRATION_LOCK)
            .await
            .map_err(|e| crate::error::database_error("migration lock", e))?;
        Ok(conn)
    }

    async fn table_exists(&self, table: &'static str) -> Result<bool, Error> {
        // information_schema, not the table itself, so that an empty
        // database answers instead of failing.
        let row: crate::records::Count = self
            .retrying("schema version", |conn| {
                Box::pin(load_one(
                    statement(
                        "SELECT count(*) AS n FROM information_schema.tables \
                         WHERE table_name = $1 \
                         AND table_schema = current_schema()",
                    )
                    .bind::<Text, _>(table),
                    conn,
                ))
            })
            .await?;
        Ok(row.n > 0)
    }

    /// Applies every pending migration of Baton's own tables; returns
    /// the resulting version. Idempotent, and safe to run from several
    /// processes at once.
    pub async fn migrate(&self) -> Result<i64, Error> {
        let (current, drift) = self.schema_state().await?;
        if current > SCHEMA_VERSION {
            return Err(Error::Schema(format!(
                "the database is at schema version {current}, newer than \
                 this Baton's {SCHEMA_VERSION}; upgrade Baton"
            )));
        }
        // Migrating over drift would fail halfway or build on a hole.
        if !drift.is_empty() {
            return Err(Error::Schema(format!(
                "the database's tables do not match its recorded schema \
                 version ({}); restore what is missing by hand, then migrate",
                drift.join("; ")
            )));
        }
        let migrations: Vec<Migration> = BATON_MIGRATIONS
            .iter()
            .map(|&(version, name, sql)| Migration::new(version, name, sql))
            .collect();
        self.apply_pending(Ledger::Baton, current, &migrations)
            .await?;
        Ok(SCHEMA_VERSION)
    }

    /// Applies every pending migration of Baton's tables, then of each
    /// service component, in order; returns each component's resulting
    /// version. Idempotent, and safe to run from several processes at
    /// once. Only the generation in control may call this (the access
    /// check says `update_schema` to it, and to no one else).
    pub async fn migrate_with(
        &self,
        components: &[SchemaComponent],
    ) -> Result<Vec<(String, i64)>, Error> {
        let mut versions =
            vec![(BATON_COMPONENT.to_owned(), self.migrate().await?)];
        for component in components {
            versions.push((
                component.name.clone(),
                self.migrate_component(component).await?,
            ));
        }
        Ok(versions)
    }

    async fn migrate_component(
        &self,
        component: &SchemaComponent,
    ) -> Result<i64, Error> {
        let wanted = component.wanted_version();
        let current = self.component_version(&component.name).await?;
        if current > wanted {
            return Err(Error::Schema(format!(
                "the database has component {} at schema version {current}, \
                 newer than this build's {wanted}",
                component.name
            )));
        }
        let ledger = Ledger::Component(component.name.clone());
        self.apply_pending(ledger, current, &component.migrations)
            .await?;
        Ok(wanted)
    }

    /// The one migration loop: every migration above `current`, each in
    /// its own transaction on a connection holding the migration lock,
    /// re-reading the applied version there first (another process may
    /// have applied it meanwhile). Takes no lock and writes nothing when
    /// nothing is pending.
    async fn apply_pending(
        &self,
        ledger: Ledger,
        current: i64,
        migrations: &[Migration],
    ) -> Result<(), Error> {
        let pending: Vec<&Migration> =
            migrations.iter().filter(|m| m.version > current).collect();
        if pending.is_empty() {
            return Ok(());
        }
        let mut conn = self.locked_for_migration(&ledger).await?;
        let notify = self.notifies();
        for migration in pending {
            let (ledger_here, this) = (ledger.clone(), migration.clone());
            let applied = self
                .transaction_on("migrate", &mut conn, move |conn| {
                    let (ledger, m) = (ledger_here.clone(), this.clone());
                    Box::pin(async move {
                        if ledger.applied(conn).await? >= m.version {
                            return Ok::<_, TxError>(false);
                        }
                        conn.batch_execute(&m.sql).await?;
                        ledger.record(conn, &m).await?;
                        if notify {
                            announce(conn, EventKind::Migrated, None).await?;
                        }
                        Ok(true)
                    })
                })
                .await
                .map_err(Error::from)?;
            if applied {
                info!(self.log, "applied migration";
                    "component" => ledger.name(),
                    "version" => migration.version, "name" => &migration.name);
            }
        }
        Ok(())
    }
}

/// Where a component's applied versions are kept: Baton's own in
/// `baton_schema_version` (as from its first release), each service's
/// in `baton_component_version`.
#[derive(Clone, Debug)]
enum Ledger {
    Baton,
    Component(String),
}

impl Ledger {
    fn name(&self) -> &str {
        match self {
            Ledger::Baton => BATON_COMPONENT,
            Ledger::Component(name) => name,
        }
    }

    /// The applied version, read under the migration lock.
    async fn applied(
        &self,
        conn: &mut diesel_async::AsyncPgConnection,
    ) -> diesel::QueryResult<i64> {
        match self {
            Ledger::Baton => {
                // Under the lock: no two processes create it.
                conn.batch_execute(CREATE_VERSION_TABLE).await?;
                baton_max(conn).await
            }
            Ledger::Component(name) => component_max(conn, name).await,
        }
    }

    /// Records `migration` as applied, in the migration's transaction.
    async fn record(
        &self,
        conn: &mut diesel_async::AsyncPgConnection,
        migration: &Migration,
    ) -> diesel::QueryResult<()> {
        match self {
            Ledger::Baton => {
                use crate::schema::baton_schema_version::dsl;
                diesel::insert_into(dsl::baton_schema_version)
                    .values((
                        dsl::version.eq(migration.version),
                        dsl::name.eq(&migration.name),
                    ))
                    .execute(conn)
                    .await?;
            }
            Ledger::Component(name) => {
                use crate::schema::baton_component_version::dsl;
                diesel::insert_into(dsl::baton_component_version)
                    .values((
                        dsl::component.eq(name),
                        dsl::version.eq(migration.version),
                        dsl::name.eq(&migration.name),
                    ))
                    .execute(conn)
                    .await?;
            }
        }
        Ok(())
    }
}
