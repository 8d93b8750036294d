//! Helpers for tests and benchmarks: counting the statements the server
//! receives, and the transactional baseline of the record step.
//!
//! Nothing here is used by the protocol itself.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use baton_uuid_kinds::{BlueprintUuid, GenericUuid};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Nullable, Uuid};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};

use crate::datastore::TxError;
use crate::{DataStore, EnsureOutcome, Error, RecordsToEnsure};

/// An async callback run between a transaction's read and its write.
pub type Hook =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

#[derive(QueryableByName)]
struct Calls {
    #[diesel(sql_type = Nullable<BigInt>)]
    calls: Option<i64>,
}

#[derive(QueryableByName)]
struct Target {
    #[diesel(sql_type = Nullable<Uuid>)]
    blueprint_id: Option<uuid::Uuid>,
}

impl DataStore {
    /// Enables `pg_stat_statements` in this database (the server must
    /// preload it, as `baton-dev-db` servers do) and zeroes its counts.
    pub async fn statement_stats_reset(&self) -> Result<(), Error> {
        self.retrying("stats reset", |conn| {
            Box::pin(conn.batch_execute(
                "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; \
                 SELECT pg_stat_statements_reset();",
            ))
        })
        .await
    }

    /// Statements the server executed in this database since the last
    /// reset, not counting the statistics queries themselves.
    pub async fn statement_stats_count(&self) -> Result<i64, Error> {
        let row: Calls = self
            .retrying("stats count", |conn| {
                Box::pin(
                    diesel::sql_query(
                        "SELECT sum(calls)::INT8 AS calls FROM pg_stat_statements
                         WHERE dbid = (SELECT oid FROM pg_database
                                       WHERE datname = current_database())
                           AND query NOT ILIKE '%pg_stat_statements%'",
                    )
                    .get_result(conn),
                )
            })
            .await?;
        Ok(row.calls.unwrap_or(0))
    }

    /// Executions since the last reset of statements whose text contains
    /// `fragment` (to count, say, handoff attempts).
    pub async fn statement_stats_calls_matching(
        &self,
        fragment: &str,
    ) -> Result<i64, Error> {
        let pattern = format!("%{fragment}%");
        let row: Calls = self
            .retrying("stats count matching", |conn| {
                Box::pin(
                    diesel::sql_query(
                        "SELECT sum(calls)::INT8 AS calls FROM pg_stat_statements
                         WHERE dbid = (SELECT oid FROM pg_database
                                       WHERE datname = current_database())
                           AND query LIKE $1
                           AND query NOT ILIKE '%pg_stat_statements%'",
                    )
                    .bind::<diesel::sql_types::Text, _>(pattern.clone())
                    .get_result(conn),
                )
            })
            .await?;
        Ok(row.calls.unwrap_or(0))
    }

    /// The record step written the transactional way, as the reference
    /// design does: BEGIN (SERIALIZABLE); read the target; compare in
    /// Rust; insert on conflict do nothing; COMMIT. The baseline for the
    /// benchmarks, and, with a `between` hook run after the read, a way
    /// for tests to interleave other work at the dangerous moment.
    pub async fn baseline_records_ensure(
        &self,
        blueprint_id: BlueprintUuid,
        records: &RecordsToEnsure,
        between: Option<Hook>,
    ) -> Result<EnsureOutcome, Error> {
        let bp = blueprint_id.into_untyped_uuid();
        let active: Vec<uuid::Uuid> = records
            .active
            .iter()
            .map(|id| id.into_untyped_uuid())
            .collect();
        let not_yet: Vec<uuid::Uuid> = records
            .not_yet
            .iter()
            .map(|id| id.into_untyped_uuid())
            .collect();
        self.transaction("baseline records ensure", move |conn| {
            let (active, not_yet, between) =
                (active.clone(), not_yet.clone(), between.clone());
            Box::pin(async move {
                let target: Vec<Target> = diesel::sql_query(
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
                        current: current.map(BlueprintUuid::from_untyped_uuid),
                    }));
                }
                if let Some(hook) = between {
                    hook().await;
                }
                let inserted = diesel::sql_query(
                    "INSERT INTO db_metadata_nexus (nexus_id, state)
                     SELECT id, 'active'::db_metadata_nexus_state
                         FROM unnest($1::UUID[]) AS a (id)
                     UNION ALL
                     SELECT id, 'not_yet'::db_metadata_nexus_state
                         FROM unnest($2::UUID[]) AS n (id)
                     ON CONFLICT (nexus_id) DO NOTHING",
                )
                .bind::<Array<Uuid>, _>(active)
                .bind::<Array<Uuid>, _>(not_yet)
                .execute(conn)
                .await?;
                Ok(EnsureOutcome { inserted })
            })
        })
        .await
    }
}
