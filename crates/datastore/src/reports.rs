//! Status reports: each Nexus instance's latest snapshot of itself, for
//! `baton status`.
//!
//! A report is written on a [`Reporter`]'s connection of its own,
//! outside the drain fence, so reporting goes on while the pool drains
//! (quiesce step 4). This is the one exception to "no database use
//! outside the fence": reports are never service data, and the owner
//! closes the reporter before marking itself `quiesced`; a report
//! written after the mark (a process that was paused and forced out) is
//! refused by the database.

use baton_types::{NexusStatus, StoredReport};
use baton_uuid_kinds::{GenericUuid, OmicronZoneUuid};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Text, Uuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::records::Count;
use crate::statement::{Bind, load_one, statement};
use crate::{DataStore, Error};

/// Every stored report: those that read as one, and those that do not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reports {
    /// The reports, by Nexus id.
    pub readable: Vec<StoredReport>,
    /// The rows that do not read as a report, by Nexus id.
    pub unreadable: Vec<UnreadableReport>,
}

/// A stored report row that does not read as a report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadableReport {
    /// The Nexus whose row it is.
    pub nexus_id: OmicronZoneUuid,
    /// When the database received it.
    pub reported_at: DateTime<Utc>,
    /// Why it cannot be read.
    pub reason: String,
}

impl Reports {
    /// When Nexus `id` last reported, readable or not.
    pub fn reported_at(&self, id: OmicronZoneUuid) -> Option<DateTime<Utc>> {
        let readable = self.readable.iter().find(|r| r.report.nexus_id == id);
        readable.map(|r| r.reported_at).or_else(|| {
            let bad = self.unreadable.iter().find(|r| r.nexus_id == id);
            bad.map(|r| r.reported_at)
        })
    }
}

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
    /// A row that does not read as a report (written by something other
    /// than this build) is listed among the unreadable ones, so it
    /// never hides the others.
    pub async fn reports_list(&self) -> Result<Reports, Error> {
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
        let mut reports = Reports::default();
        for (id, text, reported_at) in rows {
            let nexus_id = OmicronZoneUuid::from_untyped_uuid(id);
            match serde_json::from_str::<NexusStatus>(&text) {
                Ok(report) if report.nexus_id == nexus_id => {
                    reports.readable.push(StoredReport {
                        report,
                        reported_at,
                    });
                }
                Ok(report) => reports.unreadable.push(UnreadableReport {
                    nexus_id,
                    reported_at,
                    reason: format!(
                        "it names Nexus {} instead",
                        report.nexus_id
                    ),
                }),
                Err(e) => reports.unreadable.push(UnreadableReport {
                    nexus_id,
                    reported_at,
                    reason: format!("it is not a status report: {e}"),
                }),
            }
        }
        Ok(reports)
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
    /// Stores `report` as its Nexus's latest, replacing the one before;
    /// refused ([`Error::Fenced`]) once that Nexus's record is
    /// `quiesced`, so that a process that resumes after an operator
    /// forced it out reports nothing after its mark (`PROTOCOL.md`,
    /// "Reports, the one exception").
    pub async fn report(&mut self, report: &NexusStatus) -> Result<(), Error> {
        let nexus_id = report.nexus_id;
        let id = nexus_id.into_untyped_uuid();
        let text = serde_json::to_string(report)
            .map_err(|e| Error::Schema(format!("unwritable report: {e}")))?;
        let store = self.store.clone();
        let written: Count = store
            .retry_on("status report", &mut self.conn, |conn| {
                Box::pin(load_one(
                    statement(REPORT)
                        .bind::<Uuid, _>(id)
                        .bind::<Text, _>(text.clone()),
                    conn,
                ))
            })
            .await?;
        if written.n == 0 {
            let state = Some(baton_types::NexusRecordState::Quiesced);
            // The owner's Nexus is out: its lifecycle ends on this too.
            self.store.fenced.send_replace(Some(state));
            return Err(Error::Fenced { nexus_id, state });
        }
        Ok(())
    }
}

/// The report upsert, unless the Nexus's record says `quiesced`. SQL
/// text: an `INSERT ... SELECT` guarded by a read of the record, with a
/// count of what it wrote (the builder has no `WITH`).
const REPORT: &str = "WITH written AS (
    INSERT INTO baton_nexus_report (nexus_id, report, reported_at)
    SELECT $1, $2, now()
    WHERE NOT EXISTS (SELECT 1 FROM db_metadata_nexus
                      WHERE nexus_id = $1 AND state = 'quiesced')
    ON CONFLICT (nexus_id) DO UPDATE
        SET report = excluded.report, reported_at = excluded.reported_at
    RETURNING nexus_id
)
SELECT count(*) AS n FROM written";
