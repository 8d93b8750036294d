//! Which safety guards a datastore's statements carry, and at which
//! isolation its transactions run.
//!
//! A production datastore has every guard and SERIALIZABLE, and nothing
//! outside this crate can say otherwise: the only way to drop a guard is
//! a [`Mutant`](crate::Mutant), through
//! `DataStore::with_mutant`, which exists only in builds with the
//! test-only `mutants` feature (see `mutants.rs`). The statements are
//! built from these once per datastore (see `queries`).

/// The guards, each on (the real datastore) or off (a deliberate bug).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Guards {
    /// The record step writes only from the current target.
    pub(crate) target: bool,
    /// The record step and the cleanup write only for a Nexus in
    /// control.
    pub(crate) control: bool,
    /// The handoff promotes only when no record is still active.
    pub(crate) handoff: bool,
    /// A target change checks the succession rules, not only the parent.
    pub(crate) succession: bool,
    /// The reserved claim for one's own `quiesced` mark waits for every
    /// other claim to come back.
    pub(crate) drain: bool,
    /// The database fence: a service connection of a Nexus holds its
    /// fence lock and checks its record before any use.
    pub(crate) enrol: bool,
    /// The database fence's other half: a `quiesced` mark ends the
    /// Nexus's fenced sessions and holds its fence lock exclusively.
    pub(crate) mark_fence: bool,
}

impl Guards {
    /// Every guard: the only set a production build can have.
    pub(crate) const ALL: Guards = Guards {
        target: true,
        control: true,
        handoff: true,
        succession: true,
        drain: true,
        enrol: true,
        mark_fence: true,
    };
}

/// The isolation every transaction and statement runs at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isolation {
    /// The protocol's: what CockroachDB always runs, set on every
    /// connection whatever the server's default.
    Serializable,
    /// A deliberate bug: the weak isolation the protocol rules out.
    #[cfg(feature = "mutants")]
    ReadCommitted,
}

impl Isolation {
    /// The level's name in `SET default_transaction_isolation`.
    pub(crate) fn as_sql(self) -> &'static str {
        match self {
            Isolation::Serializable => "serializable",
            #[cfg(feature = "mutants")]
            Isolation::ReadCommitted => "read committed",
        }
    }

    /// The statement that opens a transaction at this level.
    pub(crate) fn begin_sql(self) -> &'static str {
        match self {
            Isolation::Serializable => {
                "BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE"
            }
            #[cfg(feature = "mutants")]
            Isolation::ReadCommitted => {
                "BEGIN TRANSACTION ISOLATION LEVEL READ COMMITTED"
            }
        }
    }
}
