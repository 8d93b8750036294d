//! Wake-ups are a shortcut, never a dependency: announcements alone
//! carry a whole handoff when every poll period is an hour, and with
//! announcements turned off, or lost as fast as they are sent, the
//! handoff still completes by polling with invariant 1 (never two
//! generations `active`) checked throughout.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use baton_nexus::{Nexus, NexusState, Periods};
use baton_test_utils::db::DataStoreTestExt;

use crate::common::{World, real_instances_hand_off_across, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_alone_carry_a_whole_handoff() {
    let mut world = World::new().await;
    // No poll comes round within the test's patience (60 s a wait), so
    // each step below can only happen because the change it waits for
    // was announced.
    let hour = Duration::from_secs(3600);
    let mut periods = Periods::default();
    periods.execution = hour;
    periods.drain_recheck = hour;
    periods.retry_min = hour;
    periods.retry_max = hour;
    periods.report = hour;
    world.periods = periods;
    let monitor = world.monitor();
    let story = world.story.clone();
    let logs: Vec<Said> =
        story.old_nexus.iter().map(|_| Said::default()).collect();
    let old: Vec<Nexus> = story
        .old_nexus
        .iter()
        .zip(&logs)
        .map(|(id, said)| world.start_logged(*id, &said.logger()))
        .collect();
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
