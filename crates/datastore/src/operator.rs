//! What an operator needs before marking a Nexus `quiesced` by hand: is
//! that Nexus still connected?
//!
//! Every connection a Nexus opens carries its id as `application_name`,
//! so a live Nexus shows in the server's list of backends. These read
//! and end those backends. `pg_stat_activity` and `pg_terminate_backend`
//! are PostgreSQL's; CockroachDB lists sessions in
//! `crdb_internal.cluster_sessions` and ends them with `CANCEL SESSION`
//! (not implemented here: Baton's tests run on PostgreSQL).

use baton_uuid_kinds::OmicronZoneUuid;
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Integer, Nullable, Text, Timestamptz};
use diesel_async::RunQueryDsl;
use serde::Serialize;

use crate::statement::{Bind, statement};
use crate::{DataStore, Error};

/// A server backend (a connection) that carries a Nexus's id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, QueryableByName)]
pub struct Backend {
    /// The backend's process id on the server.
    #[diesel(sql_type = Integer)]
    pub pid: i32,
    /// The client's address, if it connected over TCP.
    #[diesel(sql_type = Nullable<Text>)]
    pub client_addr: Option<String>,
    /// When it connected.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub backend_start: Option<DateTime<Utc>>,
}

impl DataStore {
    /// The backends whose `application_name` is this Nexus's id (this
    /// process's own connection excluded).
    ///
    /// SQL text: `pg_stat_activity` is a system view, not Baton's table.
    pub async fn backends_of(
        &self,
        nexus_id: OmicronZoneUuid,
    ) -> Result<Vec<Backend>, Error> {
        let name = nexus_id.to_string();
        self.retrying("list backends", |conn| {
            Box::pin(
                statement(
                    "SELECT pid, host(client_addr) AS client_addr, \
                     backend_start FROM pg_stat_activity \
                     WHERE application_name = $1 \
                     AND pid <> pg_backend_pid() ORDER BY pid",
                )
                .bind::<Text, _>(name.clone())
                .load(conn),
            )
        })
        .await
    }

    /// Ends every backend whose `application_name` is this Nexus's id;
    /// returns how many were signalled.
    pub async fn terminate_backends_of(
        &self,
        nexus_id: OmicronZoneUuid,
    ) -> Result<usize, Error> {
        #[derive(QueryableByName)]
        struct Ended {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            ended: bool,
        }
        let name = nexus_id.to_string();
        let rows: Vec<Ended> = self
            .retrying("terminate backends", |conn| {
                Box::pin(
                    statement(
                        "SELECT pg_terminate_backend(pid) AS ended \
                         FROM pg_stat_activity WHERE application_name = $1 \
                         AND pid <> pg_backend_pid()",
                    )
                    .bind::<Text, _>(name.clone())
                    .load(conn),
                )
            })
            .await?;
        Ok(rows.iter().filter(|r| r.ended).count())
    }
}
