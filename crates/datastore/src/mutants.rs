//! Deliberate bugs, compiled in only with the `mutants` feature, so that
//! the model-based test can show it catches each one. Nothing outside
//! `baton-tests` enables the feature; a production build has none of this.

use std::borrow::Cow;

/// One deliberate bug in a safety guard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
}

/// `sql` with `guard` cut out; panics if `guard` is not in it, so a
/// reworded statement cannot silently make a mutant the real thing.
fn without(sql: &'static str, guard: &str, instead: &str) -> Cow<'static, str> {
    assert!(sql.contains(guard), "the guard to remove is not in the SQL");
    Cow::Owned(sql.replace(guard, instead))
}

pub(crate) const TARGET_GUARD: &str =
    "WHERE EXISTS (SELECT 1 FROM target WHERE blueprint_id = $1)";

pub(crate) const CONTROL_GUARD: &str =
    "AND (SELECT me_records = 0 OR me_state = 'active' FROM me)";

pub(crate) const HANDOFF_GUARD: &str = "AND (SELECT n FROM blocking) = 0";

pub(crate) const HANDOFF_REPORT: &str =
    "SELECT (SELECT n FROM blocking) AS blocking";

impl Mutant {
    /// The record step's SQL under this mutant.
    pub(crate) fn ensure_records(self, sql: &'static str) -> Cow<'static, str> {
        match self {
            Mutant::NoTargetCheck => without(sql, TARGET_GUARD, "WHERE TRUE"),
            Mutant::NoControlCheck => without(sql, CONTROL_GUARD, ""),
            _ => Cow::Borrowed(sql),
        }
    }

    /// The cleanup's SQL under this mutant.
    pub(crate) fn delete_expunged(
        self,
        sql: &'static str,
    ) -> Cow<'static, str> {
        match self {
            Mutant::NoControlCheck => without(sql, CONTROL_GUARD, ""),
            _ => Cow::Borrowed(sql),
        }
    }

    /// The handoff's SQL under this mutant: it neither waits for the
    /// active rows nor reports them.
    pub(crate) fn handoff(self, sql: &'static str) -> Cow<'static, str> {
        match self {
            Mutant::HandoffIgnoresActive => {
                let sql = without(sql, HANDOFF_GUARD, "");
                Cow::Owned(
                    sql.replace(HANDOFF_REPORT, "SELECT 0::INT8 AS blocking"),
                )
            }
            _ => Cow::Borrowed(sql),
        }
    }

    /// Whether the fence checks for outstanding claims before handing out
    /// the reserved one.
    pub(crate) fn fence_waits_for_drain(self) -> bool {
        self != Mutant::QuiescedBeforeDrain
    }
}
