//! What a handoff (or the bump, or the cleanup) waits on, in words, from
//! the facts `baton status` gathers: the target, the records and each
//! instance's last report.

use std::collections::BTreeMap;
use std::time::Duration;

use baton_types::{
    Blueprint, Generation, NexusRecord, NexusRecordState, NexusState,
    NexusStatus, StoredReport,
};
use baton_uuid_kinds::OmicronZoneUuid;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{PeerDrain, peers_drained, records_to_clean_up};

/// A report older than this many report intervals is stale: the
/// instance may be dead.
pub const STALE_AFTER_INTERVALS: u32 = 3;

/// The facts the answer is made from.
#[derive(Clone, Copy, Debug)]
pub struct StatusFacts<'a> {
    /// The current target and whether it is enabled, if there is one.
    pub target: Option<(&'a Blueprint, bool)>,
    /// Every `db_metadata_nexus` record.
    pub records: &'a [NexusRecord],
    /// Every instance's last report.
    pub reports: &'a [StoredReport],
    /// The database's clock now (reports carry the database's clock).
    pub now: DateTime<Utc>,
    /// How often instances report.
    pub report_interval: Duration,
}

/// Which part of the protocol waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Waiting {
    /// Blueprint execution (no target, or a disabled one).
    Execution,
    /// The handoff: old instances quiescing, new ones taking over.
    Handoff,
    /// The bump of the blueprint's Nexus generation.
    Bump,
    /// The cleanup of expunged zones' records.
    Cleanup,
}

/// One thing waited on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Wait {
    /// What waits.
    pub waiting: Waiting,
    /// The Nexus it waits on, if it waits on one.
    pub nexus_id: Option<OmicronZoneUuid>,
    /// In plain words, with the command to run where one helps.
    pub reason: String,
}

/// A duration for people: `0.4 s`, `12 s`, `4 m 12 s`, `2 h 3 m`.
pub fn human_age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("0.{} s", ms / 100),
        1..60 => format!("{s} s"),
        60..3600 => format!("{} m {} s", s / 60, s % 60),
        _ => format!("{} h {} m", s / 3600, (s % 3600) / 60),
    }
}

fn ms_between(earlier: DateTime<Utc>, later: DateTime<Utc>) -> u64 {
    u64::try_from((later - earlier).num_milliseconds()).unwrap_or(0)
}

/// The generation of the `active` records' zones in `blueprint` (the
/// lowest, should they differ); `None` without an `active` record the
/// blueprint knows.
pub fn generation_in_control(
    blueprint: &Blueprint,
    records: &[NexusRecord],
) -> Option<Generation> {
    let generations: BTreeMap<OmicronZoneUuid, Generation> = blueprint
        .nexus_zones()
        .map(|z| (z.zone_id, z.nexus_generation))
        .collect();
    records
        .iter()
        .filter(|r| r.state == NexusRecordState::Active)
        .filter_map(|r| generations.get(&r.nexus_id).copied())
        .min()
}

/// What `baton status` shows of one Nexus's life: its last report,
/// unless the records know better. A report is a snapshot the instance
/// took of itself; a record changed since (by its own mark, an
/// operator's force, the handoff or the cleanup) is the later truth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shown<'a> {
    /// Its last report, which the records do not contradict.
    Reported(&'a NexusStatus),
    /// Its record says `quiesced`, though its last report does not: it
    /// holds nothing and can commit nothing (the database fences it).
    Quiesced,
    /// Its zone is expunged and its record deleted (cleaned up): it no
    /// longer runs, whatever it last reported.
    Gone,
    /// Its record became `active` after its last report (which still
    /// waits for the record or the handoff): it is taking over.
    TakingOver,
    /// It never reported, and its record says nothing more.
    Silent,
}

impl Shown<'_> {
    /// The phase shown, as in `baton status`'s JSON.
    pub fn label(&self) -> Option<&'static str> {
        match self {
            Shown::Reported(r) => Some(r.state.label()),
            Shown::Quiesced => Some("quiesced"),
            Shown::Gone => Some("gone"),
            Shown::TakingOver => Some("taking_over"),
            Shown::Silent => None,
        }
    }
}

/// [`Shown`] for a Nexus with this record (`None`: it has none), whose
/// zone the target has expunged or not, and this last report.
pub fn shown<'a>(
    record: Option<NexusRecordState>,
    expunged: bool,
    report: Option<&'a NexusStatus>,
) -> Shown<'a> {
    use NexusRecordState::{Active, Quiesced};
    let reported_final = report.is_some_and(|r| r.state.is_final());
    match (record, report) {
        (Some(Quiesced), _) if !reported_final => Shown::Quiesced,
        (None, _) if expunged => Shown::Gone,
        (Some(Active), Some(r))
            if matches!(
                r.state,
                NexusState::WaitingForRecord | NexusState::WaitingForHandoff
            ) =>
        {
            Shown::TakingOver
        }
        (_, Some(r)) => Shown::Reported(r),
        (_, None) => Shown::Silent,
    }
}

/// Everything the protocol waits on now, in a stable order.
pub fn waiting_on(facts: &StatusFacts<'_>) -> Vec<Wait> {
    let Some((blueprint, enabled)) = facts.target else {
        return vec![Wait {
            waiting: Waiting::Execution,
            nexus_id: None,
            reason: "there is no target blueprint: set one with \
                     `baton blueprint import FILE --set-target`"
                .to_owned(),
        }];
    };
    if !enabled {
        return vec![Wait {
            waiting: Waiting::Execution,
            nexus_id: None,
            reason: format!(
                "the target blueprint {} is disabled: no Nexus executes it",
                blueprint.id()
            ),
        }];
    }
    let reports: BTreeMap<OmicronZoneUuid, &StoredReport> = facts
        .reports
        .iter()
        .map(|r| (r.report.nexus_id, r))
        .collect();
    let look = Look {
        facts,
        blueprint,
        reports,
    };
    let in_control = generation_in_control(blueprint, facts.records);
    let wanted = blueprint.nexus_generation();
    let any_active = facts
        .records
        .iter()
        .any(|r| r.state == NexusRecordState::Active);
    let mut waits = Vec::new();
    if any_active && in_control.is_some_and(|g| g < wanted) {
        for record in facts.records {
            if record.state == NexusRecordState::Active {
                waits.push(look.old_nexus(record.nexus_id));
            }
        }
    } else if !any_active && !facts.records.is_empty() {
        let not_yet: Vec<_> = facts
            .records
            .iter()
            .filter(|r| r.state == NexusRecordState::NotYet)
            .collect();
        if not_yet.is_empty() {
            waits.push(Wait {
                waiting: Waiting::Handoff,
                nexus_id: None,
                reason: "every record is quiesced and none is not_yet: no \
                         Nexus may take over (the next generation's records \
                         were never written)"
                    .to_owned(),
            });
        }
        for record in not_yet {
            waits.push(look.new_nexus(record.nexus_id));
        }
    } else {
        waits.extend(look.settling(in_control));
    }
    waits
}

struct Look<'a> {
    facts: &'a StatusFacts<'a>,
    blueprint: &'a Blueprint,
    reports: BTreeMap<OmicronZoneUuid, &'a StoredReport>,
}

impl Look<'_> {
    /// The report of `id` if it is fresh, else the words for its silence.
    fn fresh(&self, id: OmicronZoneUuid) -> Result<&StoredReport, String> {
        let Some(report) = self.reports.get(&id) else {
            return Err(format!("Nexus {id} has never reported"));
        };
        let age = ms_between(report.reported_at, self.facts.now);
        let stale = self.facts.report_interval * STALE_AFTER_INTERVALS;
        if u128::from(age) > stale.as_millis() {
            Err(format!(
                "Nexus {id} has not reported for {}",
                human_age(age)
            ))
        } else {
            Ok(report)
        }
    }

    fn since(&self, report: &StoredReport) -> String {
        human_age(ms_between(report.report.since, self.facts.now))
    }

    /// An old Nexus whose record is still `active` during a handoff.
    fn old_nexus(&self, id: OmicronZoneUuid) -> Wait {
        let wait = |reason: String| Wait {
            waiting: Waiting::Handoff,
            nexus_id: Some(id),
            reason,
        };
        let dead_hint = format!(
            "it may be dead, paused or cut off; `baton records quiesce \
             --force --nexus-id {id}` is safe in all three cases (the \
             database fences it out)"
        );
        let report = match self.fresh(id) {
            Ok(report) => report,
            Err(silence) => return wait(format!("{silence}: {dead_hint}")),
        };
        let r = &report.report;
        let reason = match &r.state {
            NexusState::Quiescing {
                step: step @ (1 | 2),
            } => match &r.oldest_work {
                Some(oldest) => format!(
                    "Nexus {id} is in quiesce step {step}: {} unit(s) of \
                     work in flight, the oldest for {} ({})",
                    r.work_in_flight,
                    human_age(oldest.age_ms),
                    oldest.op
                ),
                None => format!(
                    "Nexus {id} is in quiesce step {step}: its work is \
                     finishing"
                ),
            },
            NexusState::Quiescing { step: 3 } => {
                let drained =
                    r.last_drained_blueprint_id.unwrap_or(self.blueprint.id());
                match peers_drained(
                    id,
                    drained,
                    Some(self.blueprint),
                    self.facts.records,
                ) {
                    PeerDrain::Waiting { peers } => format!(
                        "Nexus {id} is in quiesce step 3: waiting for \
                         Nexus {} to record the drained blueprint",
                        peers
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    _ => format!(
                        "Nexus {id} is in quiesce step 3: its peers have \
                         drained; it moves on at its next check"
                    ),
                }
            }
            NexusState::Quiescing { step: 4 } => match &r.oldest_claim {
                Some(oldest) => format!(
                    "Nexus {id} is in quiesce step 4: {} database claim(s) \
                     held, the oldest for {} ({})",
                    r.claims_held,
                    human_age(oldest.age_ms),
                    oldest.op
                ),
                None => format!(
                    "Nexus {id} is in quiesce step 4: its last database \
                     claims are coming back"
                ),
            },
            NexusState::Quiescing { step } => format!(
                "Nexus {id} is in quiesce step {step}: marking itself \
                 quiesced"
            ),
            NexusState::Running => format!(
                "Nexus {id} has not noticed the bump yet: it does when it \
                 next executes the target (running for {})",
                self.since(report)
            ),
            state @ (NexusState::Refused { .. }
            | NexusState::Failed { .. }
            | NexusState::Fenced { .. }
            | NexusState::Stopped) => format!(
                "Nexus {id} ended ({}{}) while its record is active: \
                 restart it, or if it is gone for good, `baton records \
                 quiesce --force --nexus-id {id}`",
                state.label(),
                state
                    .reason()
                    .map(|why| format!(": {why}"))
                    .unwrap_or_default()
            ),
            state => format!(
                "Nexus {id} is {} (for {})",
                state.label(),
                self.since(report)
            ),
        };
        wait(reason)
    }

    /// A `not_yet` Nexus, once no record is `active`.
    fn new_nexus(&self, id: OmicronZoneUuid) -> Wait {
        let reason = match self.fresh(id) {
            Err(silence) => format!(
                "{silence}: is it running? Any not_yet Nexus may take over"
            ),
            Ok(report)
                if report.report.state == NexusState::WaitingForHandoff =>
            {
                format!(
                    "Nexus {id} is attempting the handoff (for {})",
                    self.since(report)
                )
            }
            Ok(report) => format!(
                "Nexus {id} is {} (for {})",
                report.report.state.label(),
                self.since(report)
            ),
        };
        Wait {
            waiting: Waiting::Handoff,
            nexus_id: Some(id),
            reason,
        }
    }

    /// The generation in control is the blueprint's: what is left is the
    /// new generation's migration, the records for the next bump, and
    /// the cleanup.
    fn settling(&self, in_control: Option<Generation>) -> Vec<Wait> {
        let mut waits = Vec::new();
        let records: BTreeMap<OmicronZoneUuid, NexusRecordState> = self
            .facts
            .records
            .iter()
            .map(|r| (r.nexus_id, r.state))
            .collect();
        for (id, state) in &records {
            if *state != NexusRecordState::Active {
                continue;
            }
            if let Some(report) = self.reports.get(id)
                && report.report.state == NexusState::Migrating
            {
                waits.push(Wait {
                    waiting: Waiting::Handoff,
                    nexus_id: Some(*id),
                    reason: format!(
                        "Nexus {id} is applying schema migrations (for {})",
                        self.since(report)
                    ),
                });
            }
        }
        let next = in_control.and_then(|g| g.next().ok());
        for zone in self.blueprint.in_service_nexus_zones() {
            if Some(zone.nexus_generation) == next
                && records.get(&zone.zone_id) != Some(&NexusRecordState::NotYet)
            {
                waits.push(Wait {
                    waiting: Waiting::Bump,
                    nexus_id: Some(zone.zone_id),
                    reason: format!(
                        "Nexus {} (generation {}) has no not_yet record \
                         yet: a Nexus in control writes it when it next \
                         executes the target",
                        zone.zone_id, zone.nexus_generation
                    ),
                });
            }
        }
        // Every record of the next generation written, and the target
        // not bumped yet: the operator's move.
        let next_zones: Vec<OmicronZoneUuid> = self
            .blueprint
            .in_service_nexus_zones()
            .filter(|z| Some(z.nexus_generation) == next)
            .map(|z| z.zone_id)
            .collect();
        if let (Some(current), Some(next)) = (in_control, next)
            && self.blueprint.nexus_generation() == current
            && !next_zones.is_empty()
            && next_zones
                .iter()
                .all(|id| records.get(id) == Some(&NexusRecordState::NotYet))
        {
            waits.push(Wait {
                waiting: Waiting::Bump,
                nexus_id: None,
                reason: format!(
                    "generation {next}'s {} not_yet record(s) are written: \
                     bump the target's nexus_generation from {current} to \
                     {next} to start the handoff (`baton blueprint bump \
                     --import --set-target`)",
                    next_zones.len()
                ),
            });
        }
        for id in records_to_clean_up(self.blueprint) {
            if records.contains_key(&id) {
                waits.push(Wait {
                    waiting: Waiting::Cleanup,
                    nexus_id: Some(id),
                    reason: format!(
                        "the record of expunged Nexus {id} is still there: \
                         a Nexus in control deletes it when it next \
                         executes the target"
                    ),
                });
            }
        }
        waits
    }
}

/// What `baton status` says when the database does not answer: where it
/// looked (`hosts`, each `HOST:PORT` or a socket directory, in the URL's
/// order), the driver's `reason` (for several hosts, the last one's: the
/// driver keeps no other), and what that may mean. A URL naming several
/// hosts is a cluster's: none of them answering as the URL asks (with
/// `target_session_attrs=read-write`, as a primary) is what a failover
/// looks like between the primary's death and its standby's promotion.
pub fn database_not_answering(hosts: &[String], reason: &str) -> String {
    match hosts {
        [] => format!(
            "the database is not answering ({reason}); a failover may be \
             under way, or the server is down: run `baton status` again \
             once it answers"
        ),
        [host] => format!(
            "the database is not answering at {host} ({reason}); a \
             failover may be under way, or the server is down: run `baton \
             status` again once it answers"
        ),
        _ => format!(
            "the database is not answering at any of its {} hosts (tried \
             {}; the last one's reason: {reason}); a failover may be under \
             way, with no host the primary yet: run `baton status` again \
             once one is",
            hosts.len(),
            hosts.join(", ")
        ),
    }
}
