//! A whole handoff rehearsed with real Nexus instances on a real
//! database: what `baton demo` runs and the integration tests check.
//!
//! The rehearsal plays the operator and the planner: it imports each
//! blueprint of a [`HandoffStory`] when the planner says the system is
//! ready for it, and waits, by watching the records and the instances,
//! for the Nexus instances to do their part.
//!
//! Each instance embeds a small service through the public API only: a
//! writer that appends a row to its own table `demo_entry` (schema
//! component `demo`) every few milliseconds through a claim, under a
//! work guard. The rehearsal reports the service's side of the handoff:
//! the last write of the old generation, the first of the new one, and
//! the time between.

use std::future::Future;
use std::time::{Duration, Instant};

use baton_datastore::DataStore;
use baton_datastore::diesel::sql_types::{Timestamptz, Uuid as SqlUuid};
use baton_datastore::diesel::{self, QueryableByName};
use baton_datastore::{Migration, SchemaComponent};
use baton_planner::{
    BumpDecision, decide_generation_bump, expungeable_nexus_zones,
};
use baton_types::story::HandoffStory;
use baton_types::{Blueprint, NexusRecord, NexusRecordState};
use baton_uuid_kinds::GenericUuid;
use baton_uuid_kinds::OmicronZoneUuid;
use chrono::{DateTime, Utc};
use slog::{Logger, info};

use baton_nexus::{Nexus, NexusConfig, NexusState, Periods};

use crate::timeline::{HandoffTimeline, HandoffWatch, TimelineError};

/// How a rehearsal runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RehearsalOptions {
    /// The longest of every Nexus period (see [`Periods::capped`]).
    pub period_cap: Duration,
    /// Time between two writes of each instance's service.
    pub write_period: Duration,
    /// How long any one stage may take before the rehearsal gives up.
    pub stage_timeout: Duration,
}

impl Default for RehearsalOptions {
    fn default() -> Self {
        RehearsalOptions {
            period_cap: Duration::from_millis(100),
            write_period: Duration::from_millis(5),
            stage_timeout: Duration::from_secs(30),
        }
    }
}

/// What one stage did, for printing.
#[derive(Clone, Debug)]
pub struct Stage {
    /// Short name.
    pub name: &'static str,
    /// What happened, in a sentence.
    pub summary: String,
    /// The records after it, sorted by id.
    pub records: Vec<NexusRecord>,
}

/// The rehearsal's result.
#[derive(Clone, Debug)]
pub struct Rehearsal {
    /// From the last old Nexus marked quiesced to the first new one ready.
    pub handoff_time: Duration,
    /// Whether the last old Nexus was quiesced before the first new one
    /// became active (always, unless the protocol is broken).
    pub quiesced_before_active: bool,
    /// The service's side: its last write of the old generation.
    pub last_old_write: DateTime<Utc>,
    /// Its first write of the new generation.
    pub first_new_write: DateTime<Utc>,
    /// Rows the service wrote in all.
    pub writes: i64,
    /// The handoff timed from the server's commit times, or why it could
    /// not be, in words (a server without commit timestamps or
    /// notifications; see [`TimelineError`]).
    pub window: Result<HandoffTimeline, String>,
    /// The records at the end.
    pub records: Vec<NexusRecord>,
}

/// Why a rehearsal stopped.
#[derive(Debug)]
pub struct RehearsalError(pub String);

impl std::fmt::Display for RehearsalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RehearsalError {}

impl From<baton_datastore::Error> for RehearsalError {
    fn from(e: baton_datastore::Error) -> Self {
        RehearsalError(e.to_string())
    }
}

/// Runs the handoff `story` tells on the (empty, reachable) database at
/// `url`, calling `on_stage` after each stage.
pub async fn rehearse(
    log: &Logger,
    url: &str,
    story: &HandoffStory,
    options: &RehearsalOptions,
    on_stage: impl FnMut(&Stage),
) -> Result<Rehearsal, RehearsalError> {
    let mut run = Run {
        log,
        url,
        story,
        ds: DataStore::new(log, url),
        timeout: options.stage_timeout,
        periods: Periods::default().capped(options.period_cap),
        write_period: options.write_period,
        on_stage,
    };
    run.set_up_rack().await?;
    let old = run.start_old_generation().await?;
    run.deploy_new_generation().await?;
    let watch = run.bump_generation().await?;
    // The new instances start now, before the old ones are done: they
    // must wait for the handoff, never write early.
    let new: Vec<Nexus> =
        story.new_nexus.iter().map(|id| run.start(*id)).collect();
    let last_quiesced = run.quiesce_old_generation(&old).await?;
    let first_ready = run.new_generation_running(&new).await?;
    let watch = run.handoff_announced(watch).await;
    let quiesced_before_active = first_ready >= last_quiesced;
    let handoff_time = first_ready.saturating_duration_since(last_quiesced);
    run.stage(
        "handoff",
        format!(
            "a new Nexus took over; every not_yet record became active at once \
             ({} ms after the last old Nexus quiesced)",
            handoff_time.as_millis()
        ),
    )
    .await?;
    run.expunge_old_generation().await?;
    for nexus in new {
        nexus.stop().await;
    }
    for nexus in old {
        nexus.stop().await;
    }
    run.report(watch, handoff_time, quiesced_before_active)
        .await
}

/// One rehearsal under way: what each of its steps needs.
struct Run<'a, F> {
    log: &'a Logger,
    url: &'a str,
    story: &'a HandoffStory,
    ds: DataStore,
    /// How long any one stage may take.
    timeout: Duration,
    /// Every Nexus instance's periods.
    periods: Periods,
    /// Time between two writes of each instance's demo service.
    write_period: Duration,
    on_stage: F,
}

impl<F: FnMut(&Stage)> Run<'_, F> {
    /// Starts a Nexus instance with this id, and its demo service.
    fn start(&self, id: OmicronZoneUuid) -> Nexus {
        let nexus = Nexus::start(
            self.log,
            NexusConfig::new(id, self.url)
                .with_component(demo_schema())
                .with_periods(self.periods.clone()),
        );
        tokio::spawn(write_forever(nexus.clone(), self.write_period));
        nexus
    }

    /// Reports a stage done, with the records after it.
    async fn stage(
        &mut self,
        name: &'static str,
        summary: String,
    ) -> Result<(), RehearsalError> {
        let records = self.ds.records_list().await?;
        (self.on_stage)(&Stage {
            name,
            summary,
            records,
        });
        Ok(())
    }

    /// Stage 1: Baton's schema, the old generation's records and the
    /// steady blueprint as the target.
    async fn set_up_rack(&mut self) -> Result<(), RehearsalError> {
        let story = self.story;
        let version = self.ds.migrate().await?;
        self.ds
            .records_initialize(&story.old_nexus.iter().copied().collect())
            .await?;
        import(&self.ds, &story.steady).await?;
        self.stage(
            "rack setup",
            format!(
                "schema version {version}; blueprint {} is the target; the \
                 three generation-1 Nexus records are active",
                story.steady.id()
            ),
        )
        .await
    }

    /// Stage 2: the old generation's instances, each running.
    async fn start_old_generation(
        &mut self,
    ) -> Result<Vec<Nexus>, RehearsalError> {
        let old: Vec<Nexus> = self
            .story
            .old_nexus
            .iter()
            .map(|id| self.start(*id))
            .collect();
        for nexus in &old {
            let state = within(
                self.timeout,
                nexus.wait_for(|s| *s == NexusState::Running),
            )
            .await?;
            expect_state(nexus, &state, &NexusState::Running)?;
        }
        self.stage(
            "old generation running",
            "three generation-1 Nexus instances run; each one's service \
             writes to its own table through Baton's fenced pool"
                .into(),
        )
        .await?;
        Ok(old)
    }

    /// Stage 3: the new zones in the target, and the `not_yet` records
    /// the old instances write for them.
    async fn deploy_new_generation(&mut self) -> Result<(), RehearsalError> {
        let story = self.story;
        import(&self.ds, &story.new_generation_deployed).await?;
        let new_ids = story.new_nexus.clone();
        wait_records(
            &self.ds,
            self.timeout,
            "not_yet records for the new zones",
            |records| {
                new_ids.iter().all(|id| {
                    state_of(records, *id) == Some(NexusRecordState::NotYet)
                })
            },
        )
        .await?;
        self.stage(
            "new generation deployed",
            "three generation-2 zones added; the old Nexus instances wrote \
             their not_yet records while executing"
                .into(),
        )
        .await
    }

    /// Stage 4: the planner's generation bump, listened for from before
    /// it, to time the handoff (the listener's failure is kept: the
    /// handoff then goes on untimed).
    async fn bump_generation(
        &mut self,
    ) -> Result<Result<HandoffWatch, baton_datastore::Error>, RehearsalError>
    {
        let story = self.story;
        let records = self.ds.records_list().await?;
        match decide_generation_bump(
            &story.new_generation_deployed,
            &records,
            3,
        ) {
            BumpDecision::Bump { from, to } => {
                // Listening from before the bump, to time the handoff.
                let watch = HandoffWatch::start(&self.ds).await;
                import(&self.ds, &story.handoff_started).await?;
                self.stage(
                    "generation bumped",
                    format!(
                        "the planner bumped nexus_generation from {from} to \
                         {to}"
                    ),
                )
                .await?;
                Ok(watch)
            }
            BumpDecision::Wait(waits) => Err(RehearsalError(format!(
                "the planner will not bump: {waits:?}"
            ))),
        }
    }

    /// Stage 5: every old instance quiesced; when the last one was seen
    /// to.
    async fn quiesce_old_generation(
        &mut self,
        old: &[Nexus],
    ) -> Result<Instant, RehearsalError> {
        let mut last_quiesced = Instant::now();
        for nexus in old {
            let state = within(
                self.timeout,
                nexus.wait_for(|s| *s == NexusState::Quiesced),
            )
            .await?;
            expect_state(nexus, &state, &NexusState::Quiesced)?;
            last_quiesced = Instant::now();
        }
        self.stage(
            "old generation quiesced",
            "each old Nexus drained its work, closed its pool and marked \
             itself quiesced"
                .into(),
        )
        .await?;
        Ok(last_quiesced)
    }

    /// Waits for every new instance to run; when the first one was seen
    /// to.
    async fn new_generation_running(
        &self,
        new: &[Nexus],
    ) -> Result<Instant, RehearsalError> {
        let mut first_ready = None;
        let mut waits = Vec::new();
        for nexus in new {
            waits.push(nexus.wait_for(|s| *s == NexusState::Running));
        }
        for wait in waits {
            let state = within(self.timeout, wait).await?;
            if state != NexusState::Running {
                return Err(RehearsalError(format!(
                    "a new Nexus ended as {state:?}"
                )));
            }
            first_ready.get_or_insert_with(Instant::now);
        }
        Ok(first_ready.expect("three new instances"))
    }

    /// Reads the handoff's announcements up to the handoff itself.
    async fn handoff_announced(
        &self,
        watch: Result<HandoffWatch, baton_datastore::Error>,
    ) -> Result<HandoffWatch, TimelineError> {
        // Every announcement of the handoff has committed by now; the demo
        // service has a single schema version, so no migration follows.
        match watch {
            Ok(mut watch) => watch
                .until_handed_off(&self.story.old_nexus, false, self.timeout)
                .await
                .map(|()| watch),
            Err(e) => Err(TimelineError::from(e)),
        }
    }

    /// Stage 7: the planner expunges the old zones, and a new
    /// instance's execution deletes their records.
    async fn expunge_old_generation(&mut self) -> Result<(), RehearsalError> {
        let story = self.story;
        let records = self.ds.records_list().await?;
        let expungeable =
            expungeable_nexus_zones(&story.handoff_started, &records);
        if expungeable.iter().copied().collect::<Vec<_>>() != story.old_nexus {
            return Err(RehearsalError(format!(
                "the planner would expunge {expungeable:?}, not the old \
                 generation"
            )));
        }
        import(&self.ds, &story.old_expunged).await?;
        let old_ids = story.old_nexus.clone();
        wait_records(
            &self.ds,
            self.timeout,
            "the old records cleaned up",
            |records| old_ids.iter().all(|id| state_of(records, *id).is_none()),
        )
        .await?;
        self.stage(
            "old zones expunged",
            "the old Nexus zones were expunged and a new Nexus's execution \
             deleted their records"
                .into(),
        )
        .await
    }

    /// The result, once every instance stopped: the service's side of
    /// the handoff and its timeline.
    async fn report(
        &self,
        watch: Result<HandoffWatch, TimelineError>,
        handoff_time: Duration,
        quiesced_before_active: bool,
    ) -> Result<Rehearsal, RehearsalError> {
        let story = self.story;
        let (last_old_write, first_new_write, writes) =
            service_side(&self.ds, &story.old_nexus, &story.new_nexus).await?;
        let window = match watch {
            Ok(watch) => watch.timeline(last_old_write, first_new_write).await,
            Err(e) => Err(e),
        }
        .map_err(|e| e.to_string());
        let records = self.ds.records_list().await?;
        info!(
            self.log,
            "rehearsal done";
            "handoff_ms" => handoff_time.as_millis() as u64
        );
        Ok(Rehearsal {
            handoff_time,
            quiesced_before_active,
            last_old_write,
            first_new_write,
            writes,
            window,
            records,
        })
    }
}

async fn import(
    ds: &DataStore,
    blueprint: &Blueprint,
) -> Result<(), RehearsalError> {
    ds.blueprint_insert(blueprint).await?;
    ds.target_set(blueprint.id(), true).await?;
    Ok(())
}

fn state_of(
    records: &[NexusRecord],
    id: OmicronZoneUuid,
) -> Option<NexusRecordState> {
    records.iter().find(|r| r.nexus_id == id).map(|r| r.state)
}

fn expect_state(
    nexus: &Nexus,
    got: &NexusState,
    want: &NexusState,
) -> Result<(), RehearsalError> {
    if got == want {
        Ok(())
    } else {
        Err(RehearsalError(format!(
            "Nexus {} ended as {got:?}, expected {want:?}",
            nexus.id()
        )))
    }
}

async fn within<T>(
    timeout: Duration,
    f: impl Future<Output = T>,
) -> Result<T, RehearsalError> {
    tokio::time::timeout(timeout, f).await.map_err(|_| {
        RehearsalError(format!(
            "a stage took longer than {}s",
            timeout.as_secs()
        ))
    })
}

/// Polls the records until `done` holds (the Nexus instances act on their
/// own schedule; there is nothing else to wait on).
async fn wait_records(
    ds: &DataStore,
    timeout: Duration,
    what: &str,
    done: impl Fn(&[NexusRecord]) -> bool,
) -> Result<(), RehearsalError> {
    let deadline = Instant::now() + timeout;
    loop {
        if done(&ds.records_list().await?) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(RehearsalError(format!(
                "gave up after {}s waiting for {what}",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The demo service's schema: one append-only table.
fn demo_schema() -> SchemaComponent {
    SchemaComponent::new(
        "demo",
        vec![Migration::new(
            1,
            "demo entries",
            "CREATE TABLE demo_entry (
                nexus_id UUID NOT NULL,
                written_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
            )",
        )],
    )
    .expect("numbered from 1")
}

/// The demo service: appends a row every `period` while its Nexus lets
/// it, each under a work guard and a claim, until it is refused for good.
async fn write_forever(nexus: Nexus, period: Duration) {
    use baton_datastore::diesel_async::RunQueryDsl;
    loop {
        let Ok(_guard) = nexus.work_guard("demo write") else {
            let state = nexus.wait_for(|s| *s == NexusState::Running).await;
            if state != NexusState::Running {
                return;
            }
            continue;
        };
        if let Ok(mut claim) = nexus.claim("demo write").await {
            let _ = diesel::sql_query(
                "INSERT INTO demo_entry (nexus_id) VALUES ($1)",
            )
            .bind::<SqlUuid, _>(nexus.id().into_untyped_uuid())
            .execute(claim.connection())
            .await;
        }
        drop(_guard);
        tokio::time::sleep(period).await;
    }
}

#[derive(QueryableByName)]
struct Side {
    #[diesel(sql_type = diesel::sql_types::Nullable<Timestamptz>)]
    last_old: Option<DateTime<Utc>>,
    #[diesel(sql_type = diesel::sql_types::Nullable<Timestamptz>)]
    first_new: Option<DateTime<Utc>>,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    writes: i64,
}

/// When the service's last old-generation write and first new-generation
/// write committed (by the server's commit times, where it keeps them;
/// else by its clock at insert).
async fn service_side(
    ds: &DataStore,
    old: &[OmicronZoneUuid],
    new: &[OmicronZoneUuid],
) -> Result<(DateTime<Utc>, DateTime<Utc>, i64), RehearsalError> {
    use baton_datastore::diesel::sql_types::{Array, Uuid};
    use baton_datastore::diesel_async::RunQueryDsl;
    let raw = |ids: &[OmicronZoneUuid]| {
        ids.iter()
            .map(|id| id.into_untyped_uuid())
            .collect::<Vec<_>>()
    };
    let mut claim = ds.claim("demo service side").await?;
    let rows: Vec<Side> = diesel::sql_query(
        "WITH kept AS (
             SELECT current_setting('track_commit_timestamp') = 'on' AS keeps
         ), entry AS (
             SELECT nexus_id,
                    CASE WHEN (SELECT keeps FROM kept)
                         THEN pg_xact_commit_timestamp(xmin)
                         ELSE written_at END AS at
             FROM demo_entry
         )
         SELECT (SELECT max(at) FROM entry
                 WHERE nexus_id = ANY ($1)) AS last_old,
                (SELECT min(at) FROM entry
                 WHERE nexus_id = ANY ($2)) AS first_new,
                (SELECT count(*) FROM entry) AS writes",
    )
    .bind::<Array<Uuid>, _>(raw(old))
    .bind::<Array<Uuid>, _>(raw(new))
    .load(claim.connection())
    .await
    .map_err(|e| {
        RehearsalError(format!("cannot read the demo's writes: {e}"))
    })?;
    match rows.into_iter().next() {
        Some(Side {
            last_old: Some(last),
            first_new: Some(first),
            writes,
        }) => Ok((last, first, writes)),
        _ => Err(RehearsalError(
            "a generation of the demo service wrote nothing".to_owned(),
        )),
    }
}
