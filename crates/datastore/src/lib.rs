//! Every database operation of the coordinated Nexus handoff.
//!
//! This is the only crate that speaks SQL. It owns the schema (embedded
//! migrations), the connection pool with its drain fence, and one retrying
//! SERIALIZABLE wrapper that every operation goes through. It applies the
//! protocol's rules that must hold inside the database (only the current
//! target writes records, the handoff is atomic), but decides no policy:
//! what to write, and whether a Nexus may use the database, are the
//! planner's answers to facts this crate reads.
//!
//! The SQL is kept portable to CockroachDB: standard types, an enum type,
//! data-modifying CTEs and `ON CONFLICT DO NOTHING`, all of which both
//! databases support.

mod access;
mod blueprints;
mod config;
mod connect;
mod error;
mod fence;
mod guards;
mod migrations;
#[cfg(feature = "mutants")]
mod mutants;
mod notify;
mod operator;
mod queries;
mod records;
mod reports;
mod retry;
mod schema;
mod statement;
mod tally;

pub use blueprints::{BlueprintSummary, BlueprintTarget};
pub use config::{DataStore, DataStoreConfig};
pub use connect::url_hosts;
pub use connect::{check_url, redact_url};
pub use error::Error;
pub use fence::Claim;
pub use retry::{
    SERIALIZATION_RETRIES, StatementFuture, TransactionError, TxError, TxFuture,
};
pub use tally::Tally;

/// Constant SQL statements that a connection prepares once and reuses,
/// with `$n` parameters bound by [`sql::Bind::bind`], and
/// [`sql::load_one`], which reads a response to its end (so a
/// serialization failure that arrives after the first row is not lost).
///
/// ```no_run
/// # async fn f(ds: baton_datastore::DataStore) -> Result<(), baton_datastore::Error> {
/// use baton_datastore::diesel::sql_types::Text;
/// use baton_datastore::diesel_async::RunQueryDsl;
/// use baton_datastore::sql::{Bind, statement};
///
/// let changed = ds
///     .run("rename", |conn| {
///         Box::pin(
///             statement("UPDATE thing SET name = $1 WHERE name = $2")
///                 .bind::<Text, _>("new")
///                 .bind::<Text, _>("old")
///                 .execute(conn),
///         )
///     })
///     .await?;
/// # Ok(()) }
/// ```
pub mod sql {
    pub use crate::statement::{Bind, Bound, Statement, load_one, statement};
}

/// The diesel this crate is built with, for statements of one's own on a
/// [`Claim`] (no need to pin a matching version).
pub use diesel;
/// The diesel-async this crate is built with (`RunQueryDsl` and the
/// connection type `AsyncPgConnection`).
pub use diesel_async;
pub use migrations::{
    BATON_COMPONENT, Migration, SCHEMA_VERSION, SchemaComponent,
};
#[cfg(feature = "mutants")]
pub use mutants::Mutant;
pub use notify::{CHANNEL, Event, EventKind, Listener};
pub use operator::Backend;
pub use records::EnsureOutcome;
pub use reports::{Reporter, Reports, UnreadableReport};
