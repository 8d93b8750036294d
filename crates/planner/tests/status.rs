//! `waiting_on`: what `baton status` says the protocol waits on.

use std::time::Duration;

use baton_planner::{
    StatusFacts, Wait, Waiting, generation_in_control, human_age, waiting_on,
};
use baton_types::story::HandoffStory;
use baton_types::{
    Blueprint, Generation, Held, NexusRecord, NexusRecordState, NexusState,
    NexusStatus, StoredReport,
};
use baton_uuid_kinds::OmicronZoneUuid;
use chrono::{DateTime, TimeZone, Utc};

use NexusRecordState::*;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 25, 3, 0, 0)
        .single()
        .unwrap()
}

fn ago(seconds: i64) -> DateTime<Utc> {
    now() - chrono::Duration::seconds(seconds)
}

fn record(id: OmicronZoneUuid, state: NexusRecordState) -> NexusRecord {
    NexusRecord {
        nexus_id: id,
        state,
        last_drained_blueprint_id: None,
    }
}

fn report(id: OmicronZoneUuid, phase: &str, step: Option<u8>) -> NexusStatus {
    let reason = String::new;
    let state = match (phase, step) {
        ("quiescing", Some(step)) => NexusState::Quiescing { step },
        ("running", _) => NexusState::Running,
        ("migrating", _) => NexusState::Migrating,
        ("waiting_for_handoff", _) => NexusState::WaitingForHandoff,
        ("waiting_for_record", _) => NexusState::WaitingForRecord,
        ("starting", _) => NexusState::Starting,
        ("stopped", _) => NexusState::Stopped,
        ("failed", _) => NexusState::Failed { reason: reason() },
        ("refused", _) => NexusState::Refused { reason: reason() },
        other => panic!("no such phase in these tests: {other:?}"),
    };
    NexusStatus {
        nexus_id: id,
        readiness: state.readiness(),
        state,
        since: ago(30),
        work_in_flight: 0,
        oldest_work: None,
        claims_held: 0,
        oldest_claim: None,
        last_drained_blueprint_id: None,
    }
}

fn stored(report: NexusStatus, seconds_ago: i64) -> StoredReport {
    StoredReport {
        report,
        reported_at: ago(seconds_ago),
    }
}

fn waits(
    target: Option<(&Blueprint, bool)>,
    records: &[NexusRecord],
    reports: &[StoredReport],
) -> Vec<Wait> {
    waiting_on(&StatusFacts {
        target,
        records,
        reports,
        now: now(),
        report_interval: Duration::from_secs(5),
    })
}

fn reasons(waits: &[Wait]) -> Vec<&str> {
    waits.iter().map(|w| w.reason.as_str()).collect()
}

#[test]
fn ages_read_as_people_say_them() {
    assert_eq!(human_age(400), "0.4 s");
    assert_eq!(human_age(12_000), "12 s");
    assert_eq!(human_age(252_000), "4 m 12 s");
    assert_eq!(human_age(7_380_000), "2 h 3 m");
}

#[test]
fn no_target_or_a_disabled_one_stops_everything() {
    let story = HandoffStory::new(1);
    let w = waits(None, &[], &[]);
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].waiting, Waiting::Execution);
    assert!(w[0].reason.contains("no target blueprint"), "{w:?}");
    let w = waits(Some((&story.steady, false)), &[], &[]);
    assert!(w[0].reason.contains("is disabled"), "{w:?}");
}

/// The example: one old Nexus stuck in step 4 on a long job's
/// claim, one silent for minutes, one that never reported.
#[test]
fn a_stuck_drain_names_each_old_nexus_and_why() {
    let story = HandoffStory::new(2);
    let [a, b, c] =
        [story.old_nexus[0], story.old_nexus[1], story.old_nexus[2]];
    let mut records: Vec<_> = story
        .old_nexus
        .iter()
        .map(|id| record(*id, Active))
        .collect();
    records.extend(story.new_nexus.iter().map(|id| record(*id, NotYet)));
    let mut stuck = report(a, "quiescing", Some(4));
    stuck.claims_held = 1;
    stuck.oldest_claim = Some(Held {
        op: "ledger job".to_owned(),
        age_ms: 252_000,
    });
    let reports = [stored(stuck, 1), stored(report(b, "running", None), 180)];
    let w = waits(Some((&story.handoff_started, true)), &records, &reports);
    assert_eq!(
        w.iter().map(|w| w.nexus_id).collect::<Vec<_>>(),
        [Some(a), Some(b), Some(c)]
    );
    assert!(w.iter().all(|w| w.waiting == Waiting::Handoff));
    assert_eq!(
        reasons(&w),
        [
            format!(
                "Nexus {a} is in quiesce step 4: 1 database claim(s) held, \
                 the oldest for 4 m 12 s (ledger job)"
            ),
            format!(
                "Nexus {b} has not reported for 3 m 0 s: it may be dead, \
                 paused or cut off; `baton records quiesce --force \
                 --nexus-id {b}` is safe in all three cases (the database \
                 fences it out)"
            ),
            format!(
                "Nexus {c} has never reported: it may be dead, paused or \
                 cut off; `baton records quiesce --force --nexus-id {c}` is \
                 safe in all three cases (the database fences it out)"
            ),
        ]
    );
    // A fresh `running` report: it has not noticed the bump yet.
    let reports = [stored(report(b, "running", None), 2)];
    let w = waits(Some((&story.handoff_started, true)), &records, &reports);
    assert!(w[1].reason.contains("has not noticed the bump"), "{w:?}");
    // Quiesced old ones are not waited on.
    records[0].state = Quiesced;
    let w = waits(Some((&story.handoff_started, true)), &records, &reports);
    assert_eq!(w.len(), 2);
    assert!(w.iter().all(|w| w.nexus_id != Some(a)));
}

#[test]
fn step_2_names_the_oldest_work_and_step_3_the_peers() {
    let story = HandoffStory::new(3);
    let [a, b, c] =
        [story.old_nexus[0], story.old_nexus[1], story.old_nexus[2]];
    let bp = &story.handoff_started;
    let mut records: Vec<_> = story
        .old_nexus
        .iter()
        .map(|id| record(*id, Active))
        .collect();
    let mut working = report(a, "quiescing", Some(2));
    working.work_in_flight = 2;
    working.oldest_work = Some(Held {
        op: "saga".to_owned(),
        age_ms: 12_000,
    });
    let mut peers = report(b, "quiescing", Some(3));
    peers.last_drained_blueprint_id = Some(bp.id());
    records[1].last_drained_blueprint_id = Some(bp.id());
    let reports = [
        stored(working, 0),
        stored(peers, 0),
        stored(report(c, "running", None), 0),
    ];
    let w = waits(Some((bp, true)), &records, &reports);
    assert_eq!(
        w[0].reason,
        format!(
            "Nexus {a} is in quiesce step 2: 2 unit(s) of work in flight, \
             the oldest for 12 s (saga)"
        )
    );
    assert_eq!(
        w[1].reason,
        format!(
            "Nexus {b} is in quiesce step 3: waiting for Nexus {}, {} to \
             record the drained blueprint",
            a.min(c),
            a.max(c)
        )
    );
}

#[test]
fn once_the_old_ones_quiesced_it_waits_on_the_new_ones() {
    let story = HandoffStory::new(4);
    let mut records: Vec<_> = story
        .old_nexus
        .iter()
        .map(|id| record(*id, Quiesced))
        .collect();
    records.extend(story.new_nexus.iter().map(|id| record(*id, NotYet)));
    let n = story.new_nexus[0];
    let reports = [stored(report(n, "waiting_for_handoff", None), 1)];
    let w = waits(Some((&story.handoff_started, true)), &records, &reports);
    assert_eq!(w.len(), 3);
    assert_eq!(
        w.iter().find(|w| w.nexus_id == Some(n)).unwrap().reason,
        format!("Nexus {n} is attempting the handoff (for 30 s)")
    );
    assert!(
        w.iter()
            .filter(|w| w.nexus_id != Some(n))
            .all(|w| w.reason.contains("has never reported: is it running?")),
        "{w:?}"
    );
    // Nothing not_yet: nobody can take over, and it says so.
    let none: Vec<_> = story
        .old_nexus
        .iter()
        .map(|id| record(*id, Quiesced))
        .collect();
    let w = waits(Some((&story.handoff_started, true)), &none, &[]);
    assert!(w[0].reason.contains("no Nexus may take over"), "{w:?}");
}

#[test]
fn after_the_handoff_the_migration_the_bump_and_the_cleanup() {
    let story = HandoffStory::new(5);
    // The new generation in control and migrating; the old records
    // quiesced and their zones expunged, ready for cleanup.
    let mut records: Vec<_> = story
        .old_nexus
        .iter()
        .map(|id| record(*id, Quiesced))
        .collect();
    records.extend(story.new_nexus.iter().map(|id| record(*id, Active)));
    let n = story.new_nexus[1];
    let reports = [stored(report(n, "migrating", None), 1)];
    let w = waits(Some((&story.old_expunged, true)), &records, &reports);
    let kinds: Vec<Waiting> = w.iter().map(|w| w.waiting).collect();
    assert_eq!(
        kinds,
        [
            Waiting::Handoff,
            Waiting::Cleanup,
            Waiting::Cleanup,
            Waiting::Cleanup
        ],
        "{w:?}"
    );
    assert_eq!(
        w[0].reason,
        format!("Nexus {n} is applying schema migrations (for 30 s)")
    );
    // Generation 2 deployed before the bump: the records it lacks.
    let old: Vec<_> = story
        .old_nexus
        .iter()
        .map(|id| record(*id, Active))
        .collect();
    let w = waits(Some((&story.new_generation_deployed, true)), &old, &[]);
    assert_eq!(w.len(), 3, "{w:?}");
    assert!(w.iter().all(|w| w.waiting == Waiting::Bump));
    assert!(w[0].reason.contains("has no not_yet record yet"), "{w:?}");
    // Steady and complete: nothing to wait on.
    assert_eq!(waits(Some((&story.steady, true)), &old, &[]), []);
}

/// Before the bump, with every record of the new generation written, the
/// handoff is not done: it waits on the operator's bump (this once said
/// "waiting on nothing: the handoff is done").
#[test]
fn with_the_new_records_written_it_waits_on_the_bump() {
    let story = HandoffStory::new(5);
    let mut records: Vec<_> = story
        .old_nexus
        .iter()
        .map(|id| record(*id, Active))
        .collect();
    records.extend(story.new_nexus.iter().map(|id| record(*id, NotYet)));
    let w = waits(Some((&story.new_generation_deployed, true)), &records, &[]);
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].waiting, Waiting::Bump);
    assert_eq!(w[0].nexus_id, None);
    assert_eq!(
        w[0].reason,
        "generation 2's 3 not_yet record(s) are written: bump the target's \
         nexus_generation from 1 to 2 to start the handoff (`baton \
         blueprint bump --import --set-target`)"
    );
}

#[test]
fn the_generation_in_control_is_the_active_records() {
    let story = HandoffStory::new(6);
    let old: Vec<_> = story
        .old_nexus
        .iter()
        .map(|id| record(*id, Active))
        .collect();
    let one = Generation::new(1).unwrap();
    assert_eq!(
        generation_in_control(&story.handoff_started, &old),
        Some(one)
    );
    assert_eq!(generation_in_control(&story.handoff_started, &[]), None);
}

#[test]
fn an_unanswering_database_names_every_host_tried_and_a_failover() {
    let hosts =
        vec!["127.9.9.11:5432".to_owned(), "127.9.9.12:5432".to_owned()];
    let said = baton_planner::database_not_answering(
        &hosts,
        "database does not allow writes",
    );
    assert_eq!(
        said,
        "the database is not answering at any of its 2 hosts (tried \
         127.9.9.11:5432, 127.9.9.12:5432; the last one's reason: database \
         does not allow writes); a failover may be under way, with no host \
         the primary yet: run `baton status` again once one is"
    );
    let one = baton_planner::database_not_answering(
        &hosts[..1],
        "connection refused",
    );
    assert!(
        one.starts_with(
            "the database is not answering at 127.9.9.11:5432 (connection \
             refused); a failover may be under way, or the server is down"
        ),
        "{one}"
    );
}
