//! What a running Nexus reports about itself for `baton status`: plain,
//! serializable data, written by the lifecycle and read by the CLI.

use baton_uuid_kinds::{BlueprintUuid, OmicronZoneUuid};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Something held (a unit of work or a database claim), with the
/// operation that took it and how long it has been held.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// The operation named when it was taken.
    pub op: String,
    /// How long it had been held when reported, in milliseconds.
    pub age_ms: u64,
}

/// One Nexus instance's snapshot of itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NexusReport {
    /// Its id.
    pub nexus_id: OmicronZoneUuid,
    /// Its lifecycle phase (`starting`, `waiting_for_record`,
    /// `waiting_for_handoff`, `migrating`, `running`, `quiescing`,
    /// `quiesced`, `refused`, `stopped`, `failed`).
    pub phase: String,
    /// The quiesce step (1 to 5) while quiescing.
    pub step: Option<u8>,
    /// Why it was refused or failed.
    pub reason: Option<String>,
    /// When it entered the phase (or step).
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
    pub report: NexusReport,
    /// When the database received it.
    pub reported_at: DateTime<Utc>,
}
