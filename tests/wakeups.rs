//! Wake-ups are a shortcut, never a dependency: announcements alone
//! carry a whole handoff when every poll period is an hour, and with
//! announcements turned off, or lost as fast as they are sent, the
//! handoff still completes by polling with invariant 1 (never two
//! generations `active`) checked throughout. And announcements are
//! hints, never facts: a flood of forged ones changes nothing a waiter
//! does but look, and nothing the timeline reports.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_nexus::{Nexus, NexusState, Periods};
use baton_rehearsal::timeline::{HandoffWatch, PARTS, TimelineEvent};
use baton_test_utils::db::{DataStoreTestExt, forged_announcements};
use baton_types::RecordsToEnsure;

use crate::common::{World, real_instances_hand_off_across, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_alone_carry_a_whole_handoff() {
    let mut world = World::new().await;
    // No poll comes round within the test's patience (60 s a wait), so
    // each step below can only happen because the change it waits for
    // was announced.
    world.periods = hour_periods();
    let monitor = world.monitor();
    let story = world.story.clone();
    let (old, logs) = start_logged(&world, &story.old_nexus);
    for nexus in &old {
        until(nexus, |s| *s == NexusState::Running).await;
    }
    // A job on one old instance: the other two reach quiesce step 3
    // first and wait for its drained mark.
    let job = old[0].work_guard("a job the bump waits for").unwrap();
    // A new instance waits for its record: the new target wakes the old
    // ones, whose record step's insert wakes it.
    let new = world.deploy_new_instances().await;
    // The bump wakes the old ones; two find in step 3 that the third
    // has not drained, and wait for it.
    world.target(&story.handoff_started).await;
    for said in &logs[1..] {
        said.until("quiesce step 3: waiting for peers").await;
    }
    assert_eq!(old[0].state(), NexusState::Quiescing { step: 2 });
    drop(job);
    // Its drained mark wakes them; their quiesced marks wake the new
    // ones, and the handoff the new ones that did not make it.
    for nexus in &old {
        until(nexus, |s| *s == NexusState::Quiesced).await;
    }
    for nexus in &new {
        until(nexus, |s| *s == NexusState::Running).await;
    }
    monitor.finish().await;
    for nexus in new {
        nexus.stop().await;
    }
}

/// Instances of `ids`, each logging to its own [`Said`].
fn start_logged(
    world: &World,
    ids: &[baton_uuid_kinds::OmicronZoneUuid],
) -> (Vec<Nexus>, Vec<Said>) {
    let logs: Vec<Said> = ids.iter().map(|_| Said::default()).collect();
    let nexus = ids
        .iter()
        .zip(&logs)
        .map(|(id, said)| world.start_logged(*id, &said.logger()))
        .collect();
    (nexus, logs)
}

/// Periods of an hour: within a test, only announcements move a wait.
fn hour_periods() -> Periods {
    let hour = Duration::from_secs(3600);
    let mut periods = Periods::default();
    periods.execution = hour;
    periods.drain_recheck = hour;
    periods.retry_min = hour;
    periods.retry_max = hour;
    periods.report = hour;
    periods
}

/// 10,000 forged announcements while the new instances wait for the
/// handoff. With every period an hour, each wait ends only by an
/// announcement, so each forged one that ended a wait with an attempt
/// would show; an instance attempts the handoff only when the records'
/// states changed since its last refused attempt, so at most once more
/// per old instance's `quiesced` mark.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_announcements_during_a_handoff_cause_no_extra_attempts() {
    let mut world = World::new().await;
    world.periods = hour_periods();
    let monitor = world.monitor();
    let story = world.story.clone();
    let (old, old_logs) = start_logged(&world, &story.old_nexus);
    for nexus in &old {
        until(nexus, |s| *s == NexusState::Running).await;
    }
    let job = old[0].work_guard("holds the handoff back").unwrap();
    let (new, new_logs) = start_logged(&world, &story.new_nexus);
    for nexus in &new {
        until(nexus, |s| *s == NexusState::WaitingForRecord).await;
    }
    world.deploy_new_generation().await;
    for nexus in &new {
        until(nexus, |s| *s == NexusState::WaitingForHandoff).await;
    }
    world.target(&story.handoff_started).await;
    for said in &old_logs[1..] {
        said.until("quiesce step 3: waiting for peers").await;
    }
    // Every kind, naming every Nexus or none, with made-up transactions.
    let ids: Vec<_> = story
        .old_nexus
        .iter()
        .chain(&story.new_nexus)
        .copied()
        .collect();
    let forged = forged_announcements(10_000, &ids);
    assert_eq!(world.ds.forge_announcements(forged).await.unwrap(), 10_000);
    // Every listener receives the real changes after the forged ones.
    drop(job);
    for nexus in &old {
        until(nexus, |s| *s == NexusState::Quiesced).await;
    }
    for nexus in &new {
        until(nexus, |s| *s == NexusState::Running).await;
    }
    monitor.finish().await;
    let attempts: Vec<usize> = new_logs
        .iter()
        .map(|said| {
            said.count("handoff not yet possible") + said.count("handoff done")
        })
        .collect();
    eprintln!("handoff attempts per new instance: {attempts:?}");
    let bound = 1 + old.len();
    for (id, n) in story.new_nexus.iter().zip(&attempts) {
        assert!(
            *n <= bound,
            "Nexus {id} attempted the handoff {n} times (bound {bound})"
        );
    }
    for nexus in new {
        nexus.stop().await;
    }
}

/// The timeline under forged announcements of every kind, before and
/// during the handoff: it never takes a forged transaction for a real
/// change, so no part is negative and the figures are the real ones.
#[tokio::test]
async fn forged_announcements_never_make_a_timeline_figure() {
    let world = World::new().await;
    let ds = &world.ds;
    let story = &world.story;
    let (old, new) = (&story.old_nexus, &story.new_nexus);
    world.target(&story.new_generation_deployed).await;
    let records = RecordsToEnsure {
        active: old.iter().copied().collect(),
        not_yet: new.iter().copied().collect(),
    };
    let deployed = story.new_generation_deployed.id();
    ds.records_ensure(deployed, old[0], &records).await.unwrap();
    let ids: Vec<_> = old.iter().chain(new).copied().collect();
    let forged = forged_announcements(4_000, &ids);
    let (before, during) = forged.split_at(2_000);
    let mut watch = HandoffWatch::start(ds).await.unwrap();
    ds.forge_announcements(before.to_vec()).await.unwrap();
    world.target(&story.handoff_started).await;
    let last_old_write = ds.database_now().await.unwrap();
    for id in old {
        ds.record_update_last_drained(*id, story.handoff_started.id())
            .await
            .unwrap();
        ds.forge_announcements(during.to_vec()).await.unwrap();
        ds.record_mark_quiesced(*id).await.unwrap();
    }
    ds.attempt_handoff(new[0]).await.unwrap();
    watch
        .until_handed_off(old, false, Duration::from_secs(60))
        .await
        .unwrap();
    let first_new_write = ds.database_now().await.unwrap();
    let timeline = watch
        .timeline(last_old_write, first_new_write)
        .await
        .unwrap_or_else(|e| panic!("the handoff is timed: {e}"));
    for (part, ms) in timeline.parts() {
        eprintln!("{part}: {ms:.1} ms");
        assert!(ms >= 0.0, "{part} is {ms} ms: {timeline:?}");
    }
    for (_, start, end) in PARTS {
        assert!(timeline.between(start, end) >= 0.0, "{start} -> {end}");
    }
    assert!(timeline.at(TimelineEvent::FirstNewWrite) > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_announcements_off_the_handoff_completes_by_polling() {
    let mut world = World::new().await;
    world.notifications = false;
    let monitor = world.monitor();
    real_instances_hand_off_across(&mut world, |_| {}).await;
    monitor.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_listener_cut_off_the_handoff_completes_by_polling() {
    let mut world = World::new().await;
    let monitor = world.monitor();
    // Cuts every listening connection as soon as it is seen, for the
    // whole handoff: the instances keep reopening them, and what is
    // announced in between is lost.
    let stop = Arc::new(AtomicBool::new(false));
    let cut = Arc::new(AtomicI64::new(0));
    let cutter = {
        let (ds, stop, cut) = (world.ds.clone(), stop.clone(), cut.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                if let Ok(n) = ds.terminate_listeners().await {
                    cut.fetch_add(n, Ordering::SeqCst);
                }
                tokio::task::yield_now().await;
            }
        })
    };
    real_instances_hand_off_across(&mut world, |_| {}).await;
    stop.store(true, Ordering::SeqCst);
    cutter.await.unwrap();
    monitor.finish().await;
    // Six instances each opened one at start-up; more than six cut
    // means instances reopened theirs after a cut (and lost them again).
    let cut = cut.load(Ordering::SeqCst);
    assert!(cut > 6, "only {cut} listening connections were cut");
}

/// The messages a Nexus logged, to wait for one.
#[derive(Clone, Default)]
struct Said(Arc<Mutex<Vec<String>>>);

impl slog::Drain for Said {
    type Ok = ();
    type Err = slog::Never;

    fn log(
        &self,
        record: &slog::Record<'_>,
        _: &slog::OwnedKVList,
    ) -> Result<(), slog::Never> {
        let mut said = self.0.lock().unwrap_or_else(|e| e.into_inner());
        said.push(record.msg().to_string());
        Ok(())
    }
}

impl Said {
    /// How many messages start with `start`.
    fn count(&self, start: &str) -> usize {
        let said = self.0.lock().unwrap_or_else(|e| e.into_inner());
        said.iter().filter(|m| m.starts_with(start)).count()
    }

    fn logger(&self) -> slog::Logger {
        slog::Logger::root(self.clone(), slog::o!())
    }

    /// Polls (a condition, bounded) until a message starts with `start`.
    async fn until(&self, start: &str) {
        for _ in 0..6000 {
            let found = {
                let said = self.0.lock().unwrap_or_else(|e| e.into_inner());
                said.iter().any(|m| m.starts_with(start))
            };
            if found {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the Nexus never logged {start:?}");
    }
}
