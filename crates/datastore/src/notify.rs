//! Wake-ups: the handoff's rare state changes announce themselves, so
//! that a process waiting for one need not poll for it.
//!
//! Each statement (or transaction) that makes one of these changes also
//! calls `pg_notify` on the channel [`CHANNEL`]: a target set, `not_yet`
//! records inserted by the record step, a drained mark, a `quiesced`
//! mark, the handoff, records deleted, a schema migration applied. PostgreSQL delivers a
//! notification only when its transaction commits, and never one of a
//! transaction that rolled back, so an announced change is always a
//! committed one. The steady record step (every row already there) and
//! every other statement announce nothing: a notifying transaction takes
//! a server-wide lock at commit, which would queue the commits of a busy
//! rack behind one another.
//!
//! A [`Listener`] holds a connection of its own, outside the pool and its
//! drain fence, that has run `LISTEN`. Notifications are a hint, never a
//! fact the protocol relies on: one that is lost (the listening
//! connection dropped, or a change made by a process that does not
//! notify) costs the waiter time until its next poll, nothing else.
//!
//! Databases without `LISTEN`/`NOTIFY` (CockroachDB) run with
//! [`DataStoreConfig::notifications`](crate::DataStoreConfig) off: the
//! statements then carry no `pg_notify` and every wait polls.
//!
//! Each payload is `<event> <nexus id or -> <transaction id>`; the
//! transaction id lets a benchmark ask the server when the change
//! committed (`pg_xact_commit_timestamp`), even after the row changed
//! again.
//!
//! PostgreSQL checks no privilege for `NOTIFY`: any role that can
//! connect can send any payload on [`CHANNEL`]. So an announcement is
//! only ever a hint. A waiter re-reads the state it waits for and
//! ignores a wake-up that changed nothing, and takes announcements in
//! batches ([`Listener::next_batch`]), so a flood costs it a bounded
//! rate of re-reads; a figure built from an announcement's transaction
//! uses it only once the database confirms that transaction made the
//! change named ([`DataStore::confirmed_commit`]).

use baton_uuid_kinds::{GenericUuid, OmicronZoneUuid};
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Nullable, Timestamptz};
use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};

use crate::statement::{Bind, load_one, statement};
use crate::{DataStore, Error};

/// The channel every announcement goes to.
pub const CHANNEL: &str = "baton_handoff";

/// Which change a notification announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventKind {
    /// A blueprint became the target (or the target was toggled).
    TargetSet,
    /// The record step inserted records (new `not_yet` rows).
    RecordsAdded,
    /// A quiescing Nexus recorded the blueprint it drained against.
    Drained,
    /// A Nexus was marked `quiesced` (by itself or an operator).
    Quiesced,
    /// The handoff: the `not_yet` records became `active`.
    Handoff,
    /// Records were deleted (an expunged Nexus's, or by an operator).
    RecordsRemoved,
    /// A schema migration was applied (Baton's or a service's).
    Migrated,
    /// An event this version of Baton does not know (a newer one sent
    /// it); a waiter treats it as a reason to look again.
    Unknown,
}

impl EventKind {
    /// The event's name in the payload.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::TargetSet => "target_set",
            EventKind::RecordsAdded => "records_added",
            EventKind::Drained => "drained",
            EventKind::Quiesced => "quiesced",
            EventKind::Handoff => "handoff",
            EventKind::RecordsRemoved => "records_removed",
            EventKind::Migrated => "migrated",
            EventKind::Unknown => "unknown",
        }
    }

    fn parse(name: &str) -> EventKind {
        [
            EventKind::TargetSet,
            EventKind::RecordsAdded,
            EventKind::Drained,
            EventKind::Quiesced,
            EventKind::Handoff,
            EventKind::RecordsRemoved,
            EventKind::Migrated,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == name)
        .unwrap_or(EventKind::Unknown)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One announced, committed change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// What changed.
    pub kind: EventKind,
    /// The Nexus it concerns, where there is one (the one drained or
    /// quiesced, the one that took over or ran the record step).
    pub nexus_id: Option<OmicronZoneUuid>,
    /// The server's id of the transaction that made the change
    /// (`txid_current()`), to look its commit time up.
    pub transaction: i64,
}

impl Event {
    /// Reads a payload; `None` if it is not one of Baton's.
    pub fn parse(payload: &str) -> Option<Event> {
        let mut parts = payload.split(' ');
        let kind = EventKind::parse(parts.next()?);
        let nexus_id = match parts.next()? {
            "-" => None,
            id => Some(OmicronZoneUuid::from_untyped_uuid(id.parse().ok()?)),
        };
        let transaction = parts.next()?.parse().ok()?;
        Some(Event {
            kind,
            nexus_id,
            transaction,
        })
    }
}

/// A connection of its own that listens for the handoff's announcements.
/// Closed when dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let log = slog::Logger::root(slog::Discard, slog::o!());
/// use baton_datastore::{DataStore, EventKind};
/// use baton_types::story::HandoffStory;
///
/// let db = baton_dev_db::DevDb::start(&log)?;
/// let ds = DataStore::new(&log, &db.url());
/// ds.migrate().await?;
/// // Listen first, then look at the state, then wait.
/// let mut listener = ds.listen().await?;
/// let steady = HandoffStory::new(1).steady;
/// ds.blueprint_insert(&steady).await?;
/// ds.target_set(steady.id(), true).await?;
/// let event = listener.next().await.expect("still connected");
/// assert_eq!(event.kind, EventKind::TargetSet);
/// // When it committed, by the server's clock.
/// assert!(ds.committed_at(event.transaction).await?.is_some());
/// # Ok(()) }
/// ```
pub struct Listener {
    conn: AsyncPgConnection,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").finish_non_exhaustive()
    }
}

impl DataStore {
    /// Opens a listener: a connection outside the pool and its fence
    /// that has run `LISTEN` on [`CHANNEL`]. Changes committed before
    /// this returns are not announced to it: look at the state after
    /// opening, then wait. Refused ([`Error::Quiesced`]) once
    /// [`DataStore::quiesce`] was called.
    pub async fn listen(&self) -> Result<Listener, Error> {
        // Like every connection of a quiesced datastore's owner, refused.
        if self.is_quiesced() {
            return Err(Error::Quiesced);
        }
        let mut conn = self.dedicated("listen for wake-ups").await?;
        conn.batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(|e| Error::from_diesel("listen for wake-ups", e))?;
        Ok(Listener { conn })
    }
}

impl DataStore {
    /// When the server committed `transaction` (an [`Event`]'s), by its
    /// clock; `None` when the server does not keep commit times
    /// (`track_commit_timestamp` off) or no longer knows this one.
    /// PostgreSQL only.
    pub async fn committed_at(
        &self,
        transaction: i64,
    ) -> Result<Option<DateTime<Utc>>, Error> {
        #[derive(QueryableByName)]
        struct At {
            #[diesel(sql_type = Nullable<Timestamptz>)]
            at: Option<DateTime<Utc>>,
        }
        let row: At = self
            .retrying("commit time", |conn| {
                // SQL text: a catalog function the builder does not know.
                // `txid_current()` counts epochs above the 32-bit `xid`.
                Box::pin(load_one(
                    statement(
                        "SELECT CASE WHEN current_setting(\
                         'track_commit_timestamp') = 'on' THEN \
                         pg_xact_commit_timestamp(\
                         ($1 % 4294967296)::TEXT::xid) END AS at",
                    )
                    .bind::<BigInt, _>(transaction),
                    conn,
                ))
            })
            .await?;
        Ok(row.at)
    }
}

impl Listener {
    /// The next announcement, as it arrives; `None` once the connection
    /// is gone (open a new listener, and look again: announcements made
    /// meanwhile were lost). Payloads that are not Baton's are skipped.
    /// Cancel-safe: dropping the future loses no announcement.
    pub async fn next(&mut self) -> Option<Event> {
        use futures_util::StreamExt;
        let mut stream = std::pin::pin!(self.conn.notifications_stream());
        loop {
            match stream.next().await? {
                Ok(n) if n.channel == CHANNEL => {
                    if let Some(event) = Event::parse(&n.payload) {
                        return Some(event);
                    }
                }
                Ok(_) => {}
                // The connection failed: nothing more will arrive.
                Err(_) => return None,
            }
        }
    }
}

/// The most announcements one [`Listener::next_batch`] takes.
const BATCH_MAX: usize = 65_536;

impl Listener {
    /// The next announcement, and every other one already received
    /// behind it (up to 65,536), without waiting for more: a burst,
    /// forged or not, costs the caller one look. `None` once the
    /// connection is gone, as for [`Listener::next`]. Cancel-safe.
    pub async fn next_batch(&mut self) -> Option<Vec<Event>> {
        use futures_util::FutureExt;
        let first = self.next().await?;
        let mut batch = vec![first];
        while batch.len() < BATCH_MAX {
            match self.next().now_or_never() {
                Some(Some(event)) => batch.push(event),
                // Nothing more received yet (or the connection went:
                // the next call says so).
                Some(None) | None => break,
            }
        }
        Some(batch)
    }

    /// Drops every announcement already received (up to 65,536), without
    /// waiting; how many. For a caller about to look at the state
    /// anyway: what they announced is committed, so the look sees it.
    pub fn skip_received(&mut self) -> usize {
        use futures_util::FutureExt;
        let mut skipped = 0;
        while skipped < BATCH_MAX {
            match self.next().now_or_never() {
                Some(Some(_)) => skipped += 1,
                Some(None) | None => break,
            }
        }
        skipped
    }
}

impl DataStore {
    /// When the transaction `event` names committed, by the server's
    /// clock, but only if the database confirms that this transaction
    /// made the change the event names; `None` otherwise (a forged or
    /// garbled announcement, a transaction that is not recent, or one
    /// whose rows changed again since in a way that hides it), and
    /// `None` when the server keeps no commit times.
    ///
    /// Confirmed by the rows' own `xmin` (the transaction that wrote
    /// them): a target set by a `bp_target` row it inserted; a
    /// `quiesced` mark by that Nexus's row, `quiesced`, last written by
    /// it; the handoff by an `active` row it wrote; a migration by a
    /// version row it inserted. A drained mark is overwritten by the
    /// same row's `quiesced` mark, so it is confirmed by that Nexus's row
    /// holding a drained blueprint, written by this transaction or by a
    /// later one. Other kinds are never confirmed. PostgreSQL only
    /// (`xmin`, `pg_xact_commit_timestamp`), as announcements are.
    pub async fn confirmed_commit(
        &self,
        event: &Event,
    ) -> Result<Option<DateTime<Utc>>, Error> {
        #[derive(QueryableByName)]
        struct At {
            #[diesel(sql_type = Nullable<Timestamptz>)]
            at: Option<DateTime<Utc>>,
        }
        let check = match event.kind {
            EventKind::TargetSet => {
                "EXISTS (SELECT 1 FROM bp_target WHERE xmin::TEXT = tx.xid)"
            }
            EventKind::Quiesced => {
                "EXISTS (SELECT 1 FROM db_metadata_nexus WHERE nexus_id = $2 \
                 AND state = 'quiesced' AND xmin::TEXT = tx.xid)"
            }
            EventKind::Handoff => {
                "EXISTS (SELECT 1 FROM db_metadata_nexus WHERE state = \
                 'active' AND xmin::TEXT = tx.xid)"
            }
            EventKind::Migrated => {
                "(EXISTS (SELECT 1 FROM baton_schema_version \
                 WHERE xmin::TEXT = tx.xid) OR EXISTS (SELECT 1 FROM \
                 baton_component_version WHERE xmin::TEXT = tx.xid))"
            }
            EventKind::Drained => {
                "EXISTS (SELECT 1 FROM db_metadata_nexus WHERE nexus_id = $2 \
                 AND last_drained_blueprint_id IS NOT NULL AND (xmin::TEXT = \
                 tx.xid OR pg_xact_commit_timestamp(xmin) > \
                 pg_xact_commit_timestamp(tx.xid::xid)))"
            }
            _ => return Ok(None),
        };
        // SQL text: system columns and catalog functions the builder
        // does not know. `txid_current()` counts epochs above the 32-bit
        // `xid`: a transaction id is taken only if it is below the next
        // one to be assigned and within 2^31 of it, so its low 32 bits
        // name one transaction; anything else reads as xid 0, which
        // never committed.
        let sql = format!(
            "WITH tx AS (SELECT CASE WHEN $1 < next AND $1 >= next - \
             2147483648 THEN ($1 % 4294967296)::TEXT ELSE '0' END AS xid \
             FROM (SELECT txid_snapshot_xmax(txid_current_snapshot()) \
             AS next) AS n) \
             SELECT CASE WHEN current_setting('track_commit_timestamp') = \
             'on' AND tx.xid <> '0' AND {check} THEN \
             pg_xact_commit_timestamp(tx.xid::xid) END AS at FROM tx"
        );
        let nexus = event.nexus_id.map(GenericUuid::into_untyped_uuid);
        let row: At = self
            .retrying("confirm an announcement", |conn| {
                Box::pin(load_one(
                    statement(sql.clone())
                        .bind::<BigInt, _>(event.transaction)
                        .bind::<Nullable<diesel::sql_types::Uuid>, _>(nexus),
                    conn,
                ))
            })
            .await?;
        Ok(row.at)
    }

    /// Whether the server keeps commit times
    /// (`track_commit_timestamp`). PostgreSQL only.
    pub async fn keeps_commit_times(&self) -> Result<bool, Error> {
        #[derive(QueryableByName)]
        struct On {
            #[diesel(sql_type = diesel::sql_types::Bool)]
            on: bool,
        }
        let row: On = self
            .retrying("commit times kept", |conn| {
                Box::pin(load_one(
                    statement(
                        "SELECT current_setting('track_commit_timestamp') \
                         = 'on' AS on",
                    ),
                    conn,
                ))
            })
            .await?;
        Ok(row.on)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_read_back() {
        let id = OmicronZoneUuid::new_v4();
        let event = Event::parse(&format!("drained {id} 7321")).unwrap();
        assert_eq!(event.kind, EventKind::Drained);
        assert_eq!(event.nexus_id, Some(id));
        assert_eq!(event.transaction, 7321);
        let event = Event::parse("target_set - 9").unwrap();
        assert_eq!((event.kind, event.nexus_id), (EventKind::TargetSet, None));
        assert_eq!(
            Event::parse("brand_new - 9").unwrap().kind,
            EventKind::Unknown
        );
        assert_eq!(Event::parse("someone else's payload"), None);
        assert_eq!(Event::parse(""), None);
    }
}
