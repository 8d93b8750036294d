//! The lifecycle's metrics, through the `metrics` facade: the service
//! installs whichever recorder (exporter) it likes; without one, each
//! call is a no-op. Every name starts with `baton_`.

use std::time::Duration;

use crate::NexusState;

/// The lifecycle phase: 1 for the phase the Nexus is in, 0 for the
/// others (label `phase`: a [`NexusState::label`]).
pub const PHASE: &str = "baton_nexus_phase";
/// The quiesce step (1 to 5) while quiescing, else 0.
pub const QUIESCE_STEP: &str = "baton_nexus_quiesce_step";
/// Handoff attempts by a `not_yet` Nexus, by `outcome` (`done`,
/// `not_yet_possible`, `failed`).
pub const HANDOFF_ATTEMPTS: &str = "baton_handoff_attempts_total";
/// Seconds from quiesce step 1 to the `quiesced` mark.
pub const DRAIN_SECONDS: &str = "baton_drain_duration_seconds";
/// Units of the service's work in flight (work guards).
pub const WORK_IN_FLIGHT: &str = "baton_work_in_flight";
/// Database claims held (sampled every report period).
pub const CLAIMS_HELD: &str = "baton_claims_held";

/// Every phase label, so that the phase gauge has one series per phase.
const PHASES: [&str; 11] = [
    "starting",
    "waiting_for_record",
    "waiting_for_handoff",
    "migrating",
    "running",
    "quiescing",
    "quiesced",
    "refused",
    "stopped",
    "failed",
    "fenced",
];

pub(crate) fn phase(state: &NexusState) {
    let now = state.label();
    for phase in PHASES {
        let value = if phase == now { 1.0 } else { 0.0 };
        metrics::gauge!(PHASE, "phase" => phase).set(value);
    }
    let step = match state {
        NexusState::Quiescing { step } => f64::from(*step),
        _ => 0.0,
    };
    metrics::gauge!(QUIESCE_STEP).set(step);
}

pub(crate) fn handoff_attempt(outcome: &'static str) {
    metrics::counter!(HANDOFF_ATTEMPTS, "outcome" => outcome).increment(1);
}

pub(crate) fn drained(took: Duration) {
    metrics::histogram!(DRAIN_SECONDS).record(took.as_secs_f64());
}

pub(crate) fn work_in_flight(n: usize) {
    // Precise enough: a service has far fewer than 2^53 units in flight.
    #[allow(clippy::cast_precision_loss)]
    metrics::gauge!(WORK_IN_FLIGHT).set(n as f64);
}

pub(crate) fn claims_held(n: usize) {
    // Precise enough: a pool holds far fewer than 2^53 connections.
    #[allow(clippy::cast_precision_loss)]
    metrics::gauge!(CLAIMS_HELD).set(n as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The phase gauge must have a series for every state's label.
    #[test]
    fn every_state_label_is_a_phase() {
        let states = [
            NexusState::Starting,
            NexusState::WaitingForRecord,
            NexusState::WaitingForHandoff,
            NexusState::Migrating,
            NexusState::Running,
            NexusState::Quiescing { step: 1 },
            NexusState::Quiesced,
            NexusState::Refused {
                reason: String::new(),
            },
            NexusState::Stopped,
            NexusState::Failed {
                reason: String::new(),
            },
            NexusState::Fenced {
                reason: String::new(),
            },
        ];
        for state in &states {
            assert!(PHASES.contains(&state.label()), "{state:?}");
        }
        assert_eq!(states.len(), PHASES.len());
    }
}
