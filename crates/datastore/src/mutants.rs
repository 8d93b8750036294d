//! Deliberate bugs, compiled in only with the `mutants` feature, so that
//! the tests can show they catch each one. Nothing outside the tests
//! enables the feature; a production build has none of this, and no
//! public configuration type can name a mutant: the only way in is
//! [`DataStore::with_mutant`].

use slog::Logger;

use crate::guards::{Guards, Isolation};
use crate::{DataStore, DataStoreConfig};

/// One deliberate bug in a safety guard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mutant {
    /// The real datastore.
    #[default]
    None,
    /// The record step inserts without checking that the blueprint is the
    /// current target.
    NoTargetCheck,
    /// The reserved claim for marking oneself `quiesced` is handed out
    /// while other claims are still outstanding.
    QuiescedBeforeDrain,
    /// The handoff promotes `not_yet` rows even while rows are `active`.
    HandoffIgnoresActive,
    /// Every connection and transaction runs at READ COMMITTED instead
    /// of SERIALIZABLE.
    ReadCommitted,
    /// The record step and the cleanup write without checking that the
    /// executing Nexus is in control (an impersonator may write).
    NoControlCheck,
    /// A target change checks that the parent is the current target but
    /// not the succession rules (a child that breaks from its parent may
    /// become the target).
    NoSuccessionCheck,
    /// No database fence: service connections neither hold the fence
    /// lock nor check the record, and a `quiesced` mark ends nothing and
    /// waits for nothing (a paused or cut-off Nexus writes after it).
    NoFence,
    /// The `quiesced` mark ends no session and takes no fence lock,
    /// though service connections still enrol (one that enrols just
    /// before the mark commits writes after it).
    ForceWithoutFence,
}

impl Mutant {
    /// The guards and isolation a datastore with this bug has.
    fn guards(self) -> (Guards, Isolation) {
        let mut guards = Guards::ALL;
        let mut isolation = Isolation::Serializable;
        match self {
            Mutant::None => {}
            Mutant::NoTargetCheck => guards.target = false,
            Mutant::QuiescedBeforeDrain => guards.drain = false,
            Mutant::HandoffIgnoresActive => guards.handoff = false,
            Mutant::ReadCommitted => isolation = Isolation::ReadCommitted,
            Mutant::NoControlCheck => guards.control = false,
            Mutant::NoSuccessionCheck => guards.succession = false,
            Mutant::NoFence => {
                guards.enrol = false;
                guards.mark_fence = false;
            }
            Mutant::ForceWithoutFence => guards.mark_fence = false,
        }
        (guards, isolation)
    }
}

impl DataStore {
    /// A datastore with a deliberate bug: for the tests' teeth only.
    pub fn with_mutant(
        log: &Logger,
        url: &str,
        config: DataStoreConfig,
        mutant: Mutant,
    ) -> DataStore {
        let (guards, isolation) = mutant.guards();
        DataStore::build(log, url, config, guards, isolation)
    }
}
