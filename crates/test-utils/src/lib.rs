//! Test scaffolding for Baton's own tests: proptest strategies for
//! generations, zones, sleds and whole blueprints ([`strategies`]), and
//! database helpers for tests and benchmarks ([`db`]), and
//! [`rendered_afresh`] for round-trip checks.
//!
//! This crate is never a dependency of a shipped crate, only a
//! dev-dependency of the crates whose tests use it (tidy checks this), so
//! that proptest stays out of the libraries' dependency trees. It is never
//! published.
//!
//! ```
//! use baton_test_utils::strategies;
//! use proptest::strategy::{Strategy, ValueTree};
//! use proptest::test_runner::TestRunner;
//!
//! let mut runner = TestRunner::deterministic();
//! let tree = strategies::blueprint_and_nexus(3, 4)
//!     .new_tree(&mut runner)
//!     .unwrap();
//! let (blueprint, nexus) = tree.current();
//! assert!(blueprint.in_service_nexus_zones().any(|z| z.zone_id == nexus));
//! ```

pub mod db;
pub mod strategies;

use baton_types::{Blueprint, BlueprintBuilder};
use slog::{Drain, Logger, o};

/// The logger every test passes in: nowhere, or stderr when
/// `BATON_TEST_LOG` is set (for a test being debugged).
pub fn log() -> Logger {
    if std::env::var_os("BATON_TEST_LOG").is_some() {
        let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
        let drain = slog_term::FullFormat::new(decorator).build().fuse();
        return Logger::root(drain, o!());
    }
    Logger::root(slog::Discard, o!())
}

/// The same blueprint with its document rendered from the model instead
/// of kept from the text it was read from: a round-trip check parses
/// this document and expects the blueprint back.
pub fn rendered_afresh(bp: &Blueprint) -> Blueprint {
    BlueprintBuilder::new(bp.id(), bp.nexus_generation())
        .parent(bp.parent_blueprint_id())
        .sleds(bp.sleds().clone())
        .time_created(bp.time_created())
        .creator(bp.creator())
        .comment(bp.comment())
        .build()
}
