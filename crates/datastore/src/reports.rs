//! Status reports: each Nexus instance's latest snapshot of itself, for
//! `baton status`.
//!
//! A report is written on a [`Reporter`]'s connection of its own,
//! outside the drain fence, so reporting goes on while the pool drains
//! (quiesce step 4). This is the one exception to "no database use
//! outside the fence": reports are never service data, and the owner
//! closes the reporter before marking itself `quiesced`, so nothing of
//! it touches the database afterwards.

use baton_types::{NexusReport, StoredReport};
use baton_uuid_kinds::GenericUuid;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::statement::load_one;
use crate::statement::statement;
use crate::{DataStore, Error};

/// A connection of its own for writing one Nexus's reports. Closed when
/// dropped.
pub struct Reporter {
    store: DataStore,
    conn: AsyncPgConnection,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter").finish_non_exhaustive()
    }
}

impl DataStore {
    /// Opens a reporter: a connection outside the pool and its fence.
    pub async fn reporter(&self) -> Result<Reporter, Error> {
        Ok(Reporter {
            store: self.clone(),
            conn: self.dedicated("status report").await?,
        })
    }

    /// Every stored report, by Nexus id, with the time the database
    /// received it (the database's clock, so ages compare across hosts).
    pub async fn reports_list(&self) -> Result<Vec<StoredReport>, Error> {
        use crate::schema::baton_nexus_report::dsl;
        let rows: Vec<(uuid::Uuid, String, DateTime<Utc>)> = self
            .retrying("reports read", |conn| {
                Box::pin(
                    dsl::baton_nexus_report
                        .select((dsl::nexus_id, dsl::report, dsl::reported_at))
                        .order(dsl::nexus_id)
                        .load(conn),
                )
            })
            .await?;
        rows.into_iter()
            .map(|(id, text, reported_at)| {
                let report: NexusReport =
                    serde_json::from_str(&text).map_err(|e| {
                        Error::Schema(format!(
                            "the report of Nexus {id} is unreadable: {e}"
                        ))
                    })?;
                Ok(StoredReport {
                    report,
                    reported_at,
                })
            })
            .collect()
    }

    /// The database's clock now, to age reports against.
    pub async fn database_now(&self) -> Result<DateTime<Utc>, Error> {
        #[derive(QueryableByName)]
        struct Now {
            #[diesel(sql_type = diesel::sql_types::Timestamptz)]
            now: DateTime<Utc>,
        }
        let now: Now = self
            .retrying("database clock", |conn| {
                Box::pin(load_one(statement("SELECT now() AS now"), conn))
            })
            .await?;
        Ok(now.now)
    }
}

impl Reporter {
    /// Stores `report` as its Nexus's latest, replacing the one before.
    pub async fn report(&mut self, report: &NexusReport) -> Result<(), Error> {
        use crate::schema::baton_nexus_report::dsl;
        let id = report.nexus_id.into_untyped_uuid();
        let text = serde_json::to_string(report)
            .map_err(|e| Error::Schema(format!("unwritable report: {e}")))?;
        let store = self.store.clone();
        store
            .retry_on("status report", &mut self.conn, |conn| {
                Box::pin(
                    diesel::insert_into(dsl::baton_nexus_report)
                        .values((
                            dsl::nexus_id.eq(id),
                            dsl::report.eq(text.clone()),
                            dsl::reported_at.eq(diesel::dsl::now),
                        ))
                        .on_conflict(dsl::nexus_id)
                        .do_update()
                        .set((
                            dsl::report.eq(text.clone()),
                            dsl::reported_at.eq(diesel::dsl::now),
                        ))
                        .execute(conn),
                )
            })
            .await?;
        Ok(())
    }
}
