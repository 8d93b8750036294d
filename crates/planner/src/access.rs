//! The start-up access decision: may this Nexus use the database?
//!
//! A pure function of facts the datastore reads in one go (the caller's
//! record, how many records exist, each component's schema version), so
//! the whole table is tested cell by cell without a database.

use baton_types::{AccessFacts, NexusRecordState, SchemaComparison};
use serde::Serialize;

/// What a Nexus should do at start-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessDecision {
    /// Use the database.
    Ready,
    /// Its record is `not_yet`: attempt the handoff first.
    NeedsHandoff,
    /// It has no record yet while others do: wait and check again.
    TryLater,
    /// The schema is older than it wants: apply migrations first.
    UpdateSchema,
    /// Never use this database (quiesced, or a schema from the future).
    Refuse,
}

impl AccessDecision {
    /// The label used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessDecision::Ready => "ready",
            AccessDecision::NeedsHandoff => "needs_handoff",
            AccessDecision::TryLater => "try_later",
            AccessDecision::UpdateSchema => "update_schema",
            AccessDecision::Refuse => "refuse",
        }
    }
}

/// The components that differ, in words: "ledger at 1, wanted 2".
fn differing(facts: &AccessFacts) -> String {
    let parts: Vec<String> = facts
        .schemas
        .iter()
        .filter(|s| s.applied != s.wanted)
        .map(|s| {
            format!("{} at {}, wanted {}", s.component, s.applied, s.wanted)
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join("; "))
    }
}

/// The start-up access decision and why, in words an operator can act
/// on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// What the Nexus may do.
    pub decision: AccessDecision,
    /// Why.
    pub reason: String,
}

/// The protocol's decision table, with the reason in words.
pub fn decide_access(facts: &AccessFacts) -> Access {
    let (decision, reason) = decide(facts);
    Access { decision, reason }
}

fn decide(facts: &AccessFacts) -> (AccessDecision, String) {
    use AccessDecision::*;
    use SchemaComparison::*;
    if !facts.drift.is_empty() {
        return (
            Refuse,
            format!(
                "the database's tables do not match its recorded schema \
                 version ({}); restore what is missing by hand before any \
                 Nexus uses it",
                facts.drift.join("; ")
            ),
        );
    }
    if facts.schema() == Newer {
        return (
            Refuse,
            format!(
                "the database schema is newer than this Nexus understands{}",
                differing(facts)
            ),
        );
    }
    let schema_ok = |why: &str| match facts.schema() {
        UpToDate => (Ready, format!("{why}, and the schema is up to date")),
        _ => (
            UpdateSchema,
            format!(
                "{why}, but the schema is older than wanted{}",
                differing(facts)
            ),
        ),
    };
    let Some(nexus_id) = facts.nexus_id else {
        return schema_ok("no Nexus identity (record check skipped)");
    };
    match facts.own_state {
        None if facts.records == 0 => {
            schema_ok("the record table is empty (a fresh system)")
        }
        None => (
            TryLater,
            format!(
                "Nexus {nexus_id} has no record yet while {} other(s) exist",
                facts.records
            ),
        ),
        Some(NexusRecordState::NotYet) => (
            NeedsHandoff,
            format!("Nexus {nexus_id} is not_yet: it must take over first"),
        ),
        Some(NexusRecordState::Active) => {
            schema_ok(&format!("Nexus {nexus_id} is active"))
        }
        Some(NexusRecordState::Quiesced) => (
            Refuse,
            format!("Nexus {nexus_id} is quiesced and may never return"),
        ),
    }
}
