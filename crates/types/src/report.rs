//! What a running Nexus says about itself: one status type, from the
//! lifecycle that makes it to the report it stores to the CLI that reads
//! it. Plain, serializable data.

use baton_uuid_kinds::{BlueprintUuid, OmicronZoneUuid};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a Nexus is in its life: its lifecycle phase.
///
/// In JSON, internally tagged by `phase` (`{"phase": "quiescing",
/// "step": 2}`), so a report written by one version reads in another;
/// a phase this version does not know reads as [`NexusState::Unknown`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
#[non_exhaustive]
pub enum NexusState {
    /// Running the access check.
    Starting,
    /// No record yet while others exist: waiting to be registered.
    WaitingForRecord,
    /// Its record is `not_yet`: attempting the handoff.
    WaitingForHandoff,
    /// Applying schema migrations.
    Migrating,
    /// Using the database: the service works, Baton executes blueprints.
    Running,
    /// Stepping down; `step` is the protocol's step (1 to 5).
    Quiescing {
        /// The step, 1 to 5.
        step: u8,
    },
    /// Its record says `quiesced`; it holds no connection and ended.
    Quiesced,
    /// The access check refused it, with the reason; it ended.
    Refused {
        /// Why.
        reason: String,
    },
    /// Stopped by its owner (its record unchanged).
    Stopped,
    /// Ended on an error that waiting would not cure.
    Failed {
        /// Why.
        reason: String,
    },
    /// Ended because the database fenced it out: its record is no
    /// longer `active` (an operator forced it `quiesced` while it was
    /// paused or cut off), so nothing it runs can commit.
    Fenced {
        /// Why, naming the record's state.
        reason: String,
    },
    /// A phase a newer version reported, unknown to this one.
    #[serde(other)]
    Unknown,
}

impl NexusState {
    /// True for the states a Nexus never leaves.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            NexusState::Quiesced
                | NexusState::Refused { .. }
                | NexusState::Stopped
                | NexusState::Failed { .. }
                | NexusState::Fenced { .. }
        )
    }

    /// The phase's name, as in JSON.
    pub fn label(&self) -> &'static str {
        match self {
            NexusState::Starting => "starting",
            NexusState::WaitingForRecord => "waiting_for_record",
            NexusState::WaitingForHandoff => "waiting_for_handoff",
            NexusState::Migrating => "migrating",
            NexusState::Running => "running",
            NexusState::Quiescing { .. } => "quiescing",
            NexusState::Quiesced => "quiesced",
            NexusState::Refused { .. } => "refused",
            NexusState::Stopped => "stopped",
            NexusState::Failed { .. } => "failed",
            NexusState::Fenced { .. } => "fenced",
            NexusState::Unknown => "unknown",
        }
    }

    /// The quiesce step, while quiescing.
    pub fn step(&self) -> Option<u8> {
        match self {
            NexusState::Quiescing { step } => Some(*step),
            _ => None,
        }
    }

    /// Why it ended, for the phases that say.
    pub fn reason(&self) -> Option<&str> {
        match self {
            NexusState::Refused { reason }
            | NexusState::Failed { reason }
            | NexusState::Fenced { reason } => Some(reason),
            _ => None,
        }
    }
}

/// Whether an instance takes new work: what a load balancer follows.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Readiness {
    /// It takes new work now (running).
    Ready,
    /// Not yet, but soon: it is starting, waiting for its record or the
    /// handoff, or migrating; it takes work once it is in control.
    Soon,
    /// It is stepping down (quiescing): it finishes what it holds and
    /// takes nothing new; send new work to another instance.
    Draining,
    /// It has ended and takes nothing, ever (also what a report of an
    /// unknown phase reads as).
    #[default]
    Ended,
}

impl NexusState {
    /// Whether an instance in this state takes new work.
    pub fn readiness(&self) -> Readiness {
        match self {
            NexusState::Running => Readiness::Ready,
            NexusState::Starting
            | NexusState::WaitingForRecord
            | NexusState::WaitingForHandoff
            | NexusState::Migrating => Readiness::Soon,
            NexusState::Quiescing { .. } => Readiness::Draining,
            NexusState::Quiesced
            | NexusState::Refused { .. }
            | NexusState::Stopped
            | NexusState::Failed { .. }
            | NexusState::Fenced { .. }
            | NexusState::Unknown => Readiness::Ended,
        }
    }
}

impl std::fmt::Display for NexusState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.step(), self.reason()) {
            (Some(step), _) => write!(f, "quiescing (step {step})"),
            (_, Some(reason)) => write!(f, "{}: {reason}", self.label()),
            _ => f.write_str(self.label()),
        }
    }
}

/// Something held (a unit of work or a database claim): the operation
/// that took it and how long it has been held. The one "oldest held"
/// shape, from the counters to the CLI.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The operation named when it was taken.
    pub op: String,
    /// How long it had been held, in milliseconds.
    pub age_ms: u64,
}

/// One Nexus instance's snapshot of itself: what `Nexus::status`
/// returns, what it stores for `baton status`, and what the CLI reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NexusStatus {
    /// Its id.
    pub nexus_id: OmicronZoneUuid,
    /// Its lifecycle phase, with the quiesce step or the reason.
    #[serde(flatten)]
    pub state: NexusState,
    /// Whether it takes new work (from `state`; a report written before
    /// this field reads as `ended` and is judged by its phase).
    #[serde(default)]
    pub readiness: Readiness,
    /// When it entered that phase (or step).
    pub since: DateTime<Utc>,
    /// Units of the service's work in flight.
    pub work_in_flight: u64,
    /// The oldest of them.
    pub oldest_work: Option<Held>,
    /// Database claims held.
    pub claims_held: u64,
    /// The oldest of them.
    pub oldest_claim: Option<Held>,
    /// The blueprint it last recorded as drained, while quiescing.
    pub last_drained_blueprint_id: Option<BlueprintUuid>,
}

/// A report as stored: the snapshot and when the database received it
/// (the database's clock, so that ages compare across hosts).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredReport {
    /// The snapshot.
    #[serde(flatten)]
    pub report: NexusStatus,
    /// When the database received it.
    pub reported_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reports stored by the version before the typed phase (with
    /// `step` and `reason` always present, often null) still read.
    #[test]
    fn reports_of_the_earlier_shape_read() {
        let id = "e5121482-3929-4d22-a255-accb1a466884";
        for (json, want) in [
            (
                r#""phase":"running","step":null,"reason":null"#,
                NexusState::Running,
            ),
            (
                r#""phase":"quiescing","step":4,"reason":null"#,
                NexusState::Quiescing { step: 4 },
            ),
            (
                r#""phase":"failed","step":null,"reason":"boom""#,
                NexusState::Failed {
                    reason: "boom".to_owned(),
                },
            ),
            (r#""phase":"from_the_future""#, NexusState::Unknown),
        ] {
            let text = format!(
                r#"{{"nexus_id":"{id}",{json},"since":"2026-12-02T10:00:00Z",
                "work_in_flight":0,"oldest_work":null,"claims_held":1,
                "oldest_claim":{{"op":"job","age_ms":5}},
                "last_drained_blueprint_id":null}}"#
            );
            let status: NexusStatus = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{e}: {text}"));
            assert_eq!(status.state, want);
            let again: NexusStatus =
                serde_json::from_str(&serde_json::to_string(&status).unwrap())
                    .unwrap();
            assert_eq!(again, status);
        }
    }
}
