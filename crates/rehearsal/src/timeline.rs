//! A handoff timed as the service feels it, from the server's commit
//! times: the window from the old generation's last write to the new
//! generation's first, and the parts of the handoff, each from a named
//! start event to a named end event.
//!
//! A [`HandoffWatch`] listens for the handoff's announcements (see
//! `baton_datastore::Listener`) from before the bump; each announcement
//! names the transaction that made the change, and the server keeps when
//! that transaction committed (`track_commit_timestamp=on`). The service
//! says when its own last old and first new writes committed (it knows
//! its tables; see `pg_xact_commit_timestamp(xmin)` on an append-only
//! table). Measuring needs PostgreSQL with commit timestamps on and
//! notifications on in the processes making the changes; the protocol
//! needs neither.
//!
//! Any role that can connect can send a notification, so an
//! announcement's transaction is taken only once the database confirms
//! that it made the change named (`DataStore::confirmed_commit`: the
//! rows' own `xmin`) and that it committed after the watch started; a
//! forged or garbled one is ignored, and a part whose events were not
//! confirmed is unavailable ([`TimelineError::Missing`]), never a figure
//! made of someone else's transaction.

use std::collections::HashSet;
use std::time::Duration;

use baton_datastore::{DataStore, Error, Event, EventKind, Listener};
use baton_uuid_kinds::OmicronZoneUuid;
use chrono::{DateTime, Utc};

/// The events a timeline is made of, in the order they happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimelineEvent {
    /// The target that puts the old generation behind, committed.
    Bump,
    /// The last old Nexus recorded the blueprint it drained against.
    LastDrained,
    /// The first old Nexus marked itself `quiesced`.
    FirstQuiesced,
    /// The last old Nexus marked itself `quiesced`.
    LastQuiesced,
    /// A new Nexus took over.
    Handoff,
    /// The new generation's schema migration committed (the handoff's
    /// own time when none was pending).
    Migrated,
    /// The service's last write of generation 1.
    LastOldWrite,
    /// The service's first write of generation 2.
    FirstNewWrite,
}

impl TimelineEvent {
    /// Every event, in order.
    pub const ALL: [TimelineEvent; 8] = [
        TimelineEvent::Bump,
        TimelineEvent::LastDrained,
        TimelineEvent::FirstQuiesced,
        TimelineEvent::LastQuiesced,
        TimelineEvent::Handoff,
        TimelineEvent::Migrated,
        TimelineEvent::LastOldWrite,
        TimelineEvent::FirstNewWrite,
    ];

    /// Its name, as tables print it.
    pub fn name(self) -> &'static str {
        match self {
            TimelineEvent::Bump => "bump",
            TimelineEvent::LastDrained => "last drained mark",
            TimelineEvent::FirstQuiesced => "first quiesced mark",
            TimelineEvent::LastQuiesced => "last quiesced mark",
            TimelineEvent::Handoff => "handoff",
            TimelineEvent::Migrated => "migration committed",
            TimelineEvent::LastOldWrite => "last generation-1 write",
            TimelineEvent::FirstNewWrite => "first generation-2 write",
        }
    }
}

impl std::fmt::Display for TimelineEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The parts of a handoff, each `(name, start event, end event)`, one
/// after the other from the bump to the first new write.
pub const PARTS: [(&str, TimelineEvent, TimelineEvent); 6] = [
    (
        "drain of in-flight work",
        TimelineEvent::Bump,
        TimelineEvent::LastDrained,
    ),
    (
        "peers agree, fence closes",
        TimelineEvent::LastDrained,
        TimelineEvent::FirstQuiesced,
    ),
    (
        "the other quiesce marks",
        TimelineEvent::FirstQuiesced,
        TimelineEvent::LastQuiesced,
    ),
    (
        "handoff",
        TimelineEvent::LastQuiesced,
        TimelineEvent::Handoff,
    ),
    (
        "schema migration",
        TimelineEvent::Handoff,
        TimelineEvent::Migrated,
    ),
    (
        "first write",
        TimelineEvent::Migrated,
        TimelineEvent::FirstNewWrite,
    ),
];

/// Why a handoff could not be timed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TimelineError {
    /// The database failed a call (opening the listener, reading a
    /// commit time).
    #[error(transparent)]
    Datastore(#[from] Error),
    /// The listening connection was lost: announcements may be missing.
    #[error(
        "the connection listening for the handoff's announcements was lost"
    )]
    ListenerLost,
    /// Nothing was announced for too long.
    #[error("no announcement within {waited:?}; seen so far: {seen:?}")]
    NothingAnnounced {
        /// How long it waited.
        waited: Duration,
        /// The kinds seen before it gave up.
        seen: Vec<EventKind>,
    },
    /// An event the timeline needs was not announced, or not confirmed
    /// by the database.
    #[error(
        "no {0} was announced that the database confirms, so that figure \
         is unavailable"
    )]
    Missing(&'static str),
    /// The server keeps no commit times.
    #[error("the server keeps no commit times (track_commit_timestamp is off)")]
    NoCommitTimes,
}

/// Listens for one handoff's announcements, from before its bump.
///
/// Here one process plays every Nexus of a handoff through the
/// datastore; a service does the same around its real instances (as
/// `examples/ledger/benches/window.rs` does).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let log = slog::Logger::root(slog::Discard, slog::o!());
/// use std::time::Duration;
///
/// use baton_datastore::DataStore;
/// use baton_rehearsal::timeline::HandoffWatch;
/// use baton_types::RecordsToEnsure;
/// use baton_types::story::HandoffStory;
///
/// let db = baton_dev_db::DevDb::start(&log)?;
/// let ds = DataStore::new(&log, &db.url());
/// ds.migrate().await?;
/// let story = HandoffStory::new(7);
/// let (old, new) = (&story.old_nexus, &story.new_nexus);
/// ds.records_initialize(&old.iter().copied().collect()).await?;
/// for bp in [&story.steady, &story.new_generation_deployed] {
///     ds.blueprint_insert(bp).await?;
///     ds.target_set(bp.id(), true).await?;
/// }
/// let records = RecordsToEnsure {
///     active: old.iter().copied().collect(),
///     not_yet: new.iter().copied().collect(),
/// };
/// let deployed = story.new_generation_deployed.id();
/// ds.records_ensure(deployed, old[0], &records).await?;
///
/// // Listening from before the bump.
/// let mut watch = HandoffWatch::start(&ds).await?;
/// let bumped = &story.handoff_started;
/// ds.blueprint_insert(bumped).await?;
/// ds.target_set(bumped.id(), true).await?;
/// // The service's last write of generation 1 would commit about here.
/// let last_old_write = ds.database_now().await?;
/// for id in old {
///     ds.record_update_last_drained(*id, bumped.id()).await?;
///     ds.record_mark_quiesced(*id).await?;
/// }
/// ds.attempt_handoff(new[0]).await?;
/// watch.until_handed_off(old, false, Duration::from_secs(30)).await?;
/// let first_new_write = ds.database_now().await?;
///
/// let timeline = watch.timeline(last_old_write, first_new_write).await?;
/// assert!(timeline.window() > 0.0);
/// for (part, ms) in timeline.parts() {
///     println!("{part}: {ms:.1} ms");
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct HandoffWatch {
    ds: DataStore,
    listener: Listener,
    /// The server's clock just before listening: what committed earlier
    /// is no part of this handoff.
    started: DateTime<Utc>,
    /// Whether the server keeps commit times.
    commit_times: bool,
    /// The announcements the database confirmed, with their commit
    /// times.
    events: Vec<(Event, DateTime<Utc>)>,
    /// Every announcement already judged, confirmed or not.
    judged: HashSet<(EventKind, Option<OmicronZoneUuid>, i64)>,
}

impl HandoffWatch {
    /// Starts listening. Call it before the bump: what commits earlier
    /// is not seen.
    pub async fn start(ds: &DataStore) -> Result<HandoffWatch, Error> {
        let started = ds.database_now().await?;
        let commit_times = ds.keeps_commit_times().await?;
        Ok(HandoffWatch {
            ds: ds.clone(),
            listener: ds.listen().await?,
            started,
            commit_times,
            events: Vec::new(),
            judged: HashSet::new(),
        })
    }

    /// Keeps `event` if the database confirms it, with its commit time.
    /// Each distinct announcement is judged once, and only those that
    /// can still add to the timeline are (a `quiesced` mark or the
    /// handoff once confirmed is not looked up again).
    async fn judge(&mut self, event: Event) -> Result<(), TimelineError> {
        let useful = match event.kind {
            EventKind::TargetSet | EventKind::Drained | EventKind::Migrated => {
                true
            }
            EventKind::Quiesced => !self.seen(event.kind, event.nexus_id),
            EventKind::Handoff => !self.seen(event.kind, None),
            _ => false,
        };
        let key = (event.kind, event.nexus_id, event.transaction);
        if !useful || !self.judged.insert(key) {
            return Ok(());
        }
        match self.ds.confirmed_commit(&event).await? {
            Some(at) if at >= self.started => self.events.push((event, at)),
            _ => {}
        }
        Ok(())
    }

    /// Whether a confirmed `kind` (of Nexus `id`, if given) was seen.
    fn seen(&self, kind: EventKind, id: Option<OmicronZoneUuid>) -> bool {
        self.events
            .iter()
            .any(|(e, _)| e.kind == kind && (id.is_none() || e.nexus_id == id))
    }

    /// Reads announcements until every Nexus of `old` was marked
    /// quiesced and the handoff happened, and, if `migration`, a
    /// migration was applied after it; waits at most `patience` for each.
    pub async fn until_handed_off(
        &mut self,
        old: &[OmicronZoneUuid],
        migration: bool,
        patience: Duration,
    ) -> Result<(), TimelineError> {
        if !self.commit_times {
            return Err(TimelineError::NoCommitTimes);
        }
        loop {
            let quiesced = old
                .iter()
                .all(|id| self.seen(EventKind::Quiesced, Some(*id)));
            // A migration counts only once committed after the handoff.
            let handoff_at = self.first(EventKind::Handoff);
            let migrated = !migration
                || handoff_at.is_some_and(|at| {
                    self.last(EventKind::Migrated).is_some_and(|m| m >= at)
                });
            if quiesced && handoff_at.is_some() && migrated {
                return Ok(());
            }
            match tokio::time::timeout(patience, self.listener.next()).await {
                Ok(Some(event)) => self.judge(event).await?,
                Ok(None) => return Err(TimelineError::ListenerLost),
                Err(_) => {
                    return Err(TimelineError::NothingAnnounced {
                        waited: patience,
                        seen: self.events.iter().map(|(e, _)| e.kind).collect(),
                    });
                }
            }
        }
    }

    /// The timeline, given when the service's last write of the old
    /// generation and first write of the new one committed. Fails if an
    /// event is missing or the server keeps no commit times.
    pub async fn timeline(
        &self,
        last_old_write: DateTime<Utc>,
        first_new_write: DateTime<Utc>,
    ) -> Result<HandoffTimeline, TimelineError> {
        if !self.commit_times {
            return Err(TimelineError::NoCommitTimes);
        }
        let need = |at: Option<DateTime<Utc>>, what: &'static str| {
            at.ok_or(TimelineError::Missing(what))
        };
        let handoff = need(self.first(EventKind::Handoff), "handoff")?;
        let first_quiesced =
            need(self.first(EventKind::Quiesced), "quiesced mark")?;
        // Every drained mark comes before every quiesced mark (quiesce
        // step 3); one confirmed later is not this handoff's.
        let last_drained = self
            .times(EventKind::Drained)
            .filter(|at| *at <= first_quiesced)
            .max();
        Ok(HandoffTimeline {
            at: [
                need(self.first(EventKind::TargetSet), "bump")?,
                need(last_drained, "drained mark")?,
                first_quiesced,
                need(self.last(EventKind::Quiesced), "quiesced mark")?,
                handoff,
                // No migration after the handoff: it took no time.
                self.last(EventKind::Migrated)
                    .filter(|at| *at >= handoff)
                    .unwrap_or(handoff),
                last_old_write,
                first_new_write,
            ],
        })
    }
}

impl HandoffWatch {
    /// The commit times of the confirmed events of `kind`.
    fn times(&self, kind: EventKind) -> impl Iterator<Item = DateTime<Utc>> {
        self.events
            .iter()
            .filter(move |(e, _)| e.kind == kind)
            .map(|(_, at)| *at)
    }

    fn first(&self, kind: EventKind) -> Option<DateTime<Utc>> {
        self.times(kind).min()
    }

    fn last(&self, kind: EventKind) -> Option<DateTime<Utc>> {
        self.times(kind).max()
    }
}

/// When each [`TimelineEvent`] committed, in [`TimelineEvent::ALL`]'s
/// order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandoffTimeline {
    at: [DateTime<Utc>; 8],
}

impl HandoffTimeline {
    /// When `event` committed, in milliseconds after the bump.
    pub fn at(&self, event: TimelineEvent) -> f64 {
        millis(self.at[event as usize] - self.at[TimelineEvent::Bump as usize])
    }

    /// Milliseconds from `start` to `end`.
    pub fn between(&self, start: TimelineEvent, end: TimelineEvent) -> f64 {
        self.at(end) - self.at(start)
    }

    /// Each of [`PARTS`] with its length in milliseconds.
    pub fn parts(&self) -> Vec<(&'static str, f64)> {
        PARTS
            .iter()
            .map(|(name, start, end)| (*name, self.between(*start, *end)))
            .collect()
    }

    /// The window: from the last write of generation 1 to the first of
    /// generation 2, in milliseconds.
    pub fn window(&self) -> f64 {
        self.between(TimelineEvent::LastOldWrite, TimelineEvent::FirstNewWrite)
    }

    /// The window less the schema migration and less whatever part of
    /// the drain of in-flight work fell inside it: what the protocol
    /// itself cost the service, in milliseconds.
    pub fn protocol(&self) -> f64 {
        let drain_inside = self
            .between(TimelineEvent::LastOldWrite, TimelineEvent::LastDrained)
            .max(0.0);
        self.window()
            - self.between(TimelineEvent::Handoff, TimelineEvent::Migrated)
            - drain_inside
    }
}

fn millis(d: chrono::TimeDelta) -> f64 {
    d.num_microseconds()
        .map_or(f64::MAX, |us| us as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events at these milliseconds after an arbitrary bump.
    fn timeline(ms: [i64; 8]) -> HandoffTimeline {
        let bump = DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap();
        HandoffTimeline {
            at: ms.map(|m| bump + chrono::TimeDelta::milliseconds(m)),
        }
    }

    #[test]
    fn the_parts_run_from_the_bump_to_the_first_new_write() {
        let t = timeline([0, 900, 930, 940, 950, 990, 920, 1000]);
        let parts = t.parts();
        let lengths: Vec<f64> = parts.iter().map(|(_, ms)| *ms).collect();
        assert_eq!(lengths, [900.0, 30.0, 10.0, 10.0, 40.0, 10.0]);
        assert_eq!(
            lengths.iter().sum::<f64>(),
            t.at(TimelineEvent::FirstNewWrite)
        );
        assert_eq!(t.window(), 80.0);
        // The last old write came after the drain ended: only the
        // migration is taken off.
        assert_eq!(t.protocol(), 40.0);
    }

    #[test]
    fn drain_inside_the_window_is_not_the_protocol() {
        // A job ended (and was drained) 30 ms after the last write.
        let t = timeline([0, 950, 960, 970, 975, 975, 920, 1000]);
        assert_eq!(t.window(), 80.0);
        assert_eq!(t.protocol(), 50.0);
    }
}
