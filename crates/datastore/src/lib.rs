//! Every database operation of the coordinated Nexus handoff.
//!
//! This is the only crate that speaks SQL. It owns the schema (embedded
//! migrations), the connection pool with its drain fence, and one retrying
//! SERIALIZABLE wrapper that every operation goes through. It applies the
//! protocol's rules that must hold inside the database (only the current
//! target writes records, the handoff is atomic), but decides no policy:
//! what to write is the planner's answer, passed in.
//!
//! The SQL is kept portable to CockroachDB: standard types, an enum type,
//! data-modifying CTEs and `ON CONFLICT DO NOTHING`, all of which both
//! databases support.

mod access;
mod blueprints;
mod datastore;
mod error;
mod fence;
mod migrations;
#[cfg(feature = "mutants")]
mod mutants;
mod operator;
mod records;
mod statement;
pub mod testing;

pub use access::{
    AccessDecision, AccessFacts, SchemaComparison, SchemaFact, decide_access,
};
pub use blueprints::{BlueprintSummary, BlueprintTarget};
pub use datastore::{
    DataStore, DataStoreConfig, TransactionError, TxError, TxFuture, redact_url,
};
pub use error::Error;
pub use fence::{Claim, OldestClaim};

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
pub use operator::Backend;
pub use records::{EnsureOutcome, RecordsToEnsure};
