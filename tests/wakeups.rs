//! Wake-ups are a shortcut, never a dependency: announcements alone
//! carry a whole handoff when every poll period is an hour, and with
//! announcements turned off, or lost as fast as they are sent, the
//! handoff still completes by polling with invariant 1 (never two
//! generations `active`) checked throughout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use baton_nexus::Periods;
use baton_test_utils::db::DataStoreTestExt;

use crate::common::{World, real_instances_hand_off_across};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announcements_alone_carry_a_whole_handoff() {
    let mut world = World::new().await;
    // No poll comes round within the test's patience (60 s a wait):
    // each step can only happen because the change it waits for was
    // announced (the new target, the not_yet records, the peers' drained
    // marks, the quiesce marks, the handoff).
    world.periods = Periods::default().capped(Duration::from_secs(3600));
    let monitor = world.monitor();
    real_instances_hand_off_across(&mut world, |_| {}).await;
    monitor.finish().await;
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
    // Six instances each opened one at start-up: all were cut.
    let cut = cut.load(Ordering::SeqCst);
    assert!(cut >= 6, "only {cut} listening connections were cut");
}
