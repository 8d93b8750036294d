//! The whole handoff with real instances, and its hard cases.

use baton_test_utils::db::DataStoreTestExt;
use std::time::Duration;

use baton_nexus::NexusState;
use baton_rehearsal::rehearsal::{RehearsalOptions, rehearse};
use baton_types::NexusRecordState;

use crate::common::{World, log, until};

use NexusRecordState::{Active, NotYet, Quiesced};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_handoff_three_old_three_new_never_two_generations_active() {
    // The rehearsal needs an empty database; use a fresh one beside.
    let world = World::new().await;
    let url = world.db.url_for("postgres");
    let monitor_ds = baton_datastore::DataStore::new(&log(), &url);
    monitor_ds.migrate().await.unwrap();
    let monitor = crate::common::Monitor::start_for(&url, &world.story);
    let report = rehearse(
        &log(),
        &url,
        &world.story,
        &RehearsalOptions::default(),
        |_| {},
    )
    .await
    .unwrap();
    let checks = monitor.finish().await;
    assert!(report.quiesced_before_active);
    let ids: Vec<_> = report.records.iter().map(|r| r.nexus_id).collect();
    assert_eq!(ids, world.story.new_nexus);
    assert!(report.records.iter().all(|r| r.state == Active));
    eprintln!("invariant checked {checks} times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_nexus_killed_mid_quiesce_comes_back_quiescing() {
    let world = World::new().await;
    let monitor = world.monitor();
    let story = world.story.clone();
    let mut old: Vec<_> =
        story.old_nexus.iter().map(|id| world.start(*id)).collect();
    // A job in flight on each keeps the old instances in quiesce step 2
    // until it ends, so the kill lands mid-quiesce.
    let mut jobs = Vec::new();
    for nexus in &old {
        until(nexus, |s| *s == NexusState::Running).await;
        jobs.push(nexus.work_guard("a long job").unwrap());
    }
    world.deploy_new_generation().await;
    world.target(&story.handoff_started).await;

    let victim = old.remove(0);
    let id = victim.id();
    until(&victim, |s| matches!(s, NexusState::Quiescing { .. })).await;
    let at_kill = victim.kill().await;
    assert!(
        matches!(at_kill, NexusState::Quiescing { step } if step < 5),
        "{at_kill:?}"
    );
    assert_eq!(world.state(id).await, Some(Active), "killed before step 5");

    drop(jobs);
    let restarted = world.start(id);
    assert_eq!(
        until(&restarted, |s| *s == NexusState::Quiesced).await,
        NexusState::Quiesced
    );
    let history = restarted.history();
    assert!(
        !history.contains(&NexusState::Running),
        "the restarted Nexus ran as a writer: {history:?}"
    );
    assert!(
        history.contains(&NexusState::Quiescing { step: 5 }),
        "{history:?}"
    );
    for nexus in &old {
        assert_eq!(
            until(nexus, |s| *s == NexusState::Quiesced).await,
            NexusState::Quiesced
        );
    }
    let new = world.start(story.new_nexus[0]);
    assert_eq!(
        until(&new, |s| *s == NexusState::Running).await,
        NexusState::Running
    );
    for id in &story.new_nexus {
        assert_eq!(world.state(*id).await, Some(Active));
    }
    new.stop().await;
    monitor.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_nexus_started_before_its_record_exists_waits_then_takes_over() {
    let world = World::new().await;
    let monitor = world.monitor();
    let story = world.story.clone();
    let old: Vec<_> =
        story.old_nexus.iter().map(|id| world.start(*id)).collect();
    for nexus in &old {
        until(nexus, |s| *s == NexusState::Running).await;
    }
    let early = world.start(story.new_nexus[1]);
    until(&early, |s| *s == NexusState::WaitingForRecord).await;
    assert_eq!(world.state(early.id()).await, None);

    world.target(&story.new_generation_deployed).await;
    until(&early, |s| *s == NexusState::WaitingForHandoff).await;
    world.target(&story.handoff_started).await;
    assert_eq!(
        until(&early, |s| *s == NexusState::Running).await,
        NexusState::Running
    );
    // Their records are quiesced (the handoff needed it); each instance
    // notes it once the mark's reply reaches it, which with wake-ups can
    // come after the new one already runs.
    for nexus in &old {
        assert_eq!(
            until(nexus, |s| *s == NexusState::Quiesced).await,
            NexusState::Quiesced
        );
        assert_eq!(world.state(nexus.id()).await, Some(Quiesced));
    }
    let history = early.history();
    let position = |state: &NexusState| history.iter().position(|s| s == state);
    assert!(
        position(&NexusState::WaitingForRecord)
            < position(&NexusState::WaitingForHandoff)
            && position(&NexusState::WaitingForHandoff)
                < position(&NexusState::Running),
        "{history:?}"
    );
    early.stop().await;
    monitor.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handoff_never_happens_while_any_old_nexus_is_active() {
    let world = World::new().await;
    let story = world.story.clone();
    world.target(&story.new_generation_deployed).await;
    // The old generation's execution writes the not_yet records.
    let report = baton_executor::realize_blueprint(
        &log(),
        &world.ds,
        &story.new_generation_deployed,
        Some(story.old_nexus[0]),
    )
    .await;
    assert!(report.is_clean(), "{report:?}");
    world.target(&story.handoff_started).await;
    for id in &story.old_nexus[..2] {
        world.ds.record_mark_quiesced(*id).await.unwrap();
    }
    world.ds.statement_stats_reset().await.unwrap();
    let new = world.start(story.new_nexus[0]);
    until(&new, |s| *s == NexusState::WaitingForHandoff).await;
    // Let it look again and again (its access check, counted at the
    // server); with the records unchanged since its refused attempt, it
    // does not attempt again (the attempt would be refused the same).
    let looks = || world.ds.statement_stats_calls_matching("AS own_state");
    for _ in 0..3000 {
        if looks().await.unwrap() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let looked = looks().await.unwrap();
    assert!(looked >= 5, "only {looked} access checks");
    let attempts = world
        .ds
        .statement_stats_calls_matching("promoted AS (")
        .await
        .unwrap();
    assert_eq!(
        attempts, 1,
        "{attempts} handoff attempts on unchanged records"
    );
    assert_eq!(new.state(), NexusState::WaitingForHandoff);
    assert_eq!(world.state(story.old_nexus[2]).await, Some(Active));
    for id in &story.new_nexus {
        assert_eq!(world.state(*id).await, Some(NotYet), "promoted too early");
    }
    // The last old Nexus quiesces: now, and only now, the handoff happens.
    world
        .ds
        .record_mark_quiesced(story.old_nexus[2])
        .await
        .unwrap();
    assert_eq!(
        until(&new, |s| *s == NexusState::Running).await,
        NexusState::Running
    );
    for id in &story.new_nexus {
        assert_eq!(world.state(*id).await, Some(Active));
    }
    for id in &story.old_nexus {
        assert_eq!(world.state(*id).await, Some(Quiesced));
    }
    new.stop().await;
}
