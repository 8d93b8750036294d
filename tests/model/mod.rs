//! A model-based test of the whole protocol (`proptest-state-machine`).
//!
//! Random sequences of steps (plan and deploy a generation, bump, expunge,
//! race target setters, execute current and stale blueprints with and
//! without identity, start, work, quiesce, kill and restart Nexus
//! processes, attempt handoffs, and execute while an operator cleans up)
//! run against the reference model and the real system. After every step
//! the six invariants are checked against the database, and then the real
//! records must equal the model's.
//!
//! The same test runs against six deliberately broken datastores (the
//! `mutants` feature: no target check, READ COMMITTED, quiesced before
//! drain, a handoff that ignores active rows, no control check, no
//! succession check) and must fail; their shrunk failing sequences are
//! kept below as regression cases.

mod reference;
mod system;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use baton_datastore::DataStoreConfig;
#[cfg(feature = "mutants")]
use baton_datastore::Mutant;
use baton_planner::AccessDecision;

/// Without the `mutants` feature there is only the real datastore.
#[cfg(not(feature = "mutants"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mutant {
    None,
}
use baton_dev_db::DevDb;
use baton_types::NexusRecordState;
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{
    Config, RngAlgorithm, TestError, TestRng, TestRunner,
};
use proptest_state_machine::{ReferenceStateMachine, StateMachineTest};

use reference::{Model, Reference, Step, Which, generation_of};
use system::{Context, System, zone_of};

use crate::common::log;

/// Steps applied and invariant checks made, for the run's figures.
static STEPS: AtomicU64 = AtomicU64::new(0);
static CHECKS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The server and settings the current test's sequences run on
    /// (proptest runs every case on the test's own thread).
    static CONTEXT: RefCell<Option<Arc<Context>>> = const { RefCell::new(None) };
}

/// The model test, as proptest-state-machine wants it.
struct Protocol;

impl StateMachineTest for Protocol {
    type SystemUnderTest = System;
    type Reference = Reference;

    fn init_test(model: &Model) -> System {
        let ctx = CONTEXT
            .with(|c| c.borrow().clone())
            .expect("a context is set");
        System::new(ctx, model)
    }

    fn apply(mut system: System, model: &Model, step: Step) -> System {
        system.apply(model, &step);
        STEPS.fetch_add(1, Ordering::Relaxed);
        system
    }

    fn check_invariants(system: &System, model: &Model) {
        check_invariants(system, model);
        CHECKS.fetch_add(1, Ordering::Relaxed);
    }

    fn teardown(system: System, _: Model) {
        system.teardown();
    }
}

/// The six invariants of the protocol, then the model's records.
fn check_invariants(system: &System, model: &Model) {
    let records = system.block_on(system.admin.records_list()).expect("read");
    let states: BTreeMap<u32, NexusRecordState> = records
        .iter()
        .map(|r| (zone_of(r.nexus_id), r.state))
        .collect();
    use NexusRecordState::{Active, NotYet, Quiesced};

    // 1. Never two generations active.
    let active: BTreeSet<u64> = states
        .iter()
        .filter(|(_, s)| **s == Active)
        .map(|(&z, _)| generation_of(z))
        .collect();
    assert!(
        active.len() <= 1,
        "invariant 1: generations {active:?} are all active"
    );

    // 2. `quiesced` is terminal: a row once quiesced is quiesced or gone.
    let mut seen = system.seen_quiesced.borrow_mut();
    for zone in seen.iter() {
        let state = states.get(zone);
        assert!(
            matches!(state, None | Some(Quiesced)),
            "invariant 2: zone {zone} left quiesced for {state:?}"
        );
    }
    seen.extend(
        states
            .iter()
            .filter(|(_, s)| **s == Quiesced)
            .map(|(&z, _)| z),
    );

    // 3. Only the current target writes: no record for a zone the target
    //    has expunged and cleaned up (the stale write's signature).
    for zone in model.target().expunged() {
        assert!(
            !states.contains_key(&zone) || model.records.contains_key(&zone),
            "invariant 3: a record for zone {zone}, expunged in the target, \
             was written back"
        );
    }

    // 4. Database access only with an active record (or no records).
    // 5. `quiesced` only once the process holds no claim.
    for (zone, ds, running) in system.processes() {
        if running {
            assert!(
                states.is_empty() || states.get(&zone) == Some(&Active),
                "invariant 4: zone {zone} uses the database with record {:?}",
                states.get(&zone)
            );
        }
        if states.get(&zone) == Some(&Quiesced) {
            assert_eq!(
                ds.outstanding_claims(),
                0,
                "invariant 5: zone {zone} is quiesced while holding a claim"
            );
        }
    }

    // 6. Liveness: with no active row left, a not_yet Nexus is told to
    //    take over (and the handoff step asserts that it then succeeds).
    let nothing_active = !states.values().any(|s| *s == Active);
    if nothing_active
        && let Some((&zone, _)) = states.iter().find(|(_, s)| **s == NotYet)
    {
        let decision = system.block_on(system::check_access(
            &system.admin,
            system::zone_id(zone),
        ));
        assert_eq!(
            decision,
            AccessDecision::NeedsHandoff,
            "invariant 6: zone {zone} is not_yet with nothing active"
        );
    }
    drop(seen);

    // And the records are exactly the model's.
    assert_eq!(states, model.records, "the records differ from the model");
}

/// Sequences per run in CI, and their longest length.
const SEQUENCES: u32 = 256;
const MAX_STEPS: usize = 40;

/// Runs `f` with a fresh server and this datastore configuration set as
/// the context.
fn with_context<T>(
    (config, mutant): (DataStoreConfig, Mutant),
    f: impl FnOnce() -> T,
) -> T {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let db = DevDb::builder()
        .template_cache(env!("CARGO_TARGET_TMPDIR"))
        .start(&log())
        .expect("a throwaway PostgreSQL starts");
    let admin = {
        let _runtime = rt.enter();
        baton_datastore::DataStore::new(&log(), &db.url())
    };
    rt.block_on(admin.migrate()).expect("migrations apply");
    let ctx = Arc::new(Context {
        rt,
        log: log(),
        url: db.url(),
        config,
        mutant,
    });
    CONTEXT.with(|c| *c.borrow_mut() = Some(ctx));
    let out = f();
    CONTEXT.with(|c| c.borrow_mut().take());
    out
}

fn config(mutant: Mutant) -> (DataStoreConfig, Mutant) {
    let config = DataStoreConfig {
        pool_size: 2,
        ..DataStoreConfig::default()
    };
    (config, mutant)
}

type Failure = (String, Vec<Step>);

/// How the random sequences are seeded.
#[derive(Clone, Copy)]
enum Seed {
    /// A new seed each run: over many runs, more of the space is seen.
    Fresh,
    /// The same sequences every run, so that a check which must fail
    /// (a mutant being caught) cannot pass by luck of the draw.
    #[cfg_attr(not(feature = "mutants"), allow(dead_code))]
    Fixed,
}

/// Explores `cases` random sequences; returns the shrunk failure, if any.
fn explore(cases: u32, seed: Seed) -> Result<u32, Failure> {
    let config = Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2_000,
        // Steps whose preconditions fail are drawn again; over a long
        // soak run these add up well past proptest's default limit.
        max_local_rejects: u32::MAX,
        ..Config::default()
    };
    let mut runner = match seed {
        Seed::Fresh => TestRunner::new(config.clone()),
        Seed::Fixed => TestRunner::new_with_rng(
            config.clone(),
            TestRng::deterministic_rng(RngAlgorithm::ChaCha),
        ),
    };
    let strategy = Reference::sequential_strategy(1..=MAX_STEPS);
    let result = runner.run(&strategy, |(initial, steps, seen)| {
        Protocol::test_sequential(config.clone(), initial, steps, seen);
        Ok(())
    });
    match result {
        Ok(()) => Ok(cases),
        Err(TestError::Fail(reason, (_, steps, _))) => {
            Err((reason.to_string(), steps))
        }
        Err(TestError::Abort(reason)) => {
            panic!("the model test aborted: {reason}")
        }
    }
}

/// Replays one sequence; returns the panic message if it failed.
fn replay(steps: &[Step]) -> Option<String> {
    let steps = steps.to_vec();
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let initial = Reference::init_state()
                .new_tree(&mut TestRunner::deterministic())
                .expect("a constant initial state")
                .current();
            let mut model = initial.clone();
            for step in &steps {
                assert!(
                    Reference::preconditions(&model, step),
                    "step {step:?} is not applicable"
                );
                model = Reference::apply(model, step);
            }
            Protocol::test_sequential(Config::default(), initial, steps, None);
        }));
    outcome.err().map(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

#[test]
fn the_protocol_holds_over_random_sequences() {
    let sequences = SEQUENCES * crate::common::soak_factor() as u32;
    let explored =
        with_context(config(Mutant::None), || explore(sequences, Seed::Fresh));
    match explored {
        Ok(n) => eprintln!(
            "model test: {n} sequences of up to {MAX_STEPS} steps passed: \
             {} steps, the six invariants and the records checked {} times",
            STEPS.load(Ordering::Relaxed),
            CHECKS.load(Ordering::Relaxed)
        ),
        Err((reason, steps)) => {
            panic!("the real system broke the protocol: {reason}\n{steps:#?}")
        }
    }
}

#[cfg(feature = "mutants")]
/// The mutants and their shrunk failing sequences, as
/// `the_model_test_finds_and_shrinks_each_mutant` printed them (its seed
/// is fixed), kept as regression cases. Two more cases for the first
/// mutant, from earlier runs, are kept too.
fn mutants() -> Vec<(&'static str, (DataStoreConfig, Mutant), Vec<Step>)> {
    use Step::*;
    vec![
        (
            "current-target check removed",
            config(Mutant::NoTargetCheck),
            vec![
                Deploy,
                Expunge(0),
                Expunge(5),
                Start(2),
                Execute(2, Which::Stale(2)),
            ],
        ),
        (
            // Its fixed-seed exploration shrinks to two racing target
            // setters (both get past the parent check), but whether they
            // overlap is timing; the kept case is the one that does not
            // depend on timing (the statement waits on a held lock).
            "READ COMMITTED",
            config(Mutant::ReadCommitted),
            vec![
                Start(1),
                ExecuteDuringCleanup {
                    executor: 1,
                    expunged: 2,
                },
            ],
        ),
        (
            "quiesced before drain",
            config(Mutant::QuiescedBeforeDrain),
            vec![
                Deploy,
                Start(1),
                BeginWork(1),
                Execute(1, Which::Target),
                EndWork(1),
                Bump,
                BeginWork(1),
                Quiesce(1),
            ],
        ),
        (
            "handoff ignores active rows",
            config(Mutant::HandoffIgnoresActive),
            vec![Deploy, RunLifecycle(0), Handoff(3)],
        ),
        (
            // A new-generation Nexus (no record yet) executing the target
            // declares its own generation active beside the old one.
            "executing Nexus not in control",
            config(Mutant::NoControlCheck),
            vec![Deploy, ExecuteAs(3, Which::Target)],
        ),
        (
            // A child relabelling a zone's generation becomes the target.
            "no succession check",
            config(Mutant::NoSuccessionCheck),
            vec![Deploy, SetStaleTarget(0)],
        ),
    ]
}

/// Another shrunk sequence for the first mutant, from a fresh-seed run: a
/// stale blueprint executed after the expunged record was cleaned up.
#[cfg(feature = "mutants")]
fn stale_blueprint_after_cleanup() -> Vec<Step> {
    use Step::*;
    vec![
        Start(2),
        Expunge(0),
        // The cleanup, by a Nexus in control (an anonymous execution
        // runs no cleanup any more).
        ExecuteAs(1, Which::Target),
        Execute(2, Which::Stale(0)),
    ]
}

/// A sequence the model test found against the reference system's
/// classification rule (every newer generation `not_yet`): generation 3
/// deployed mid-handoff got `not_yet` rows from generation 1, and the
/// generation-2 handoff made generations 2 and 3 active together. Baton's
/// classifier now gives `not_yet` to the next generation only.
fn two_generations_promoted_at_once() -> Vec<Step> {
    use Step::*;
    vec![
        Start(1),
        Deploy,
        ExecuteDuringCleanup {
            executor: 1,
            expunged: 0,
        },
        Execute(1, Which::Target),
        Start(2),
        Bump,
        Deploy,
        Quiesce(1),
        Execute(2, Which::Target),
        Quiesce(2),
        Start(5),
    ]
}

#[test]
fn a_second_deploy_mid_handoff_never_activates_two_generations() {
    let steps = two_generations_promoted_at_once();
    let failure = with_context(config(Mutant::None), || replay(&steps));
    assert_eq!(failure, None);
}

#[cfg(feature = "mutants")]
#[test]
fn each_mutant_fails_its_regression_sequence_and_the_real_system_passes_it() {
    let mut cases = mutants();
    cases.push((
        "current-target check removed (stale blueprint)",
        config(Mutant::NoTargetCheck),
        stale_blueprint_after_cleanup(),
    ));
    cases.push((
        "current-target check removed (racing the cleanup)",
        config(Mutant::NoTargetCheck),
        vec![
            Step::Start(1),
            Step::ExecuteDuringCleanup {
                executor: 1,
                expunged: 2,
            },
        ],
    ));
    for (name, mutant, steps) in cases {
        let broken = with_context(mutant, || replay(&steps));
        let reason = broken.unwrap_or_else(|| {
            panic!("mutant {name:?} was not caught by {steps:?}")
        });
        eprintln!("mutant {name:?} caught: {reason}");
        let real = with_context(config(Mutant::None), || replay(&steps));
        assert_eq!(
            real, None,
            "the real system failed the {name:?} regression sequence"
        );
    }
}

/// The teeth: the same exploration against each mutant must fail, and
/// proptest shrinks the failure to a short sequence (printed, and kept in
/// [`mutants`] as the regression case).
#[cfg(feature = "mutants")]
#[test]
fn the_model_test_finds_and_shrinks_each_mutant() {
    for (name, mutant, kept) in mutants() {
        let found = with_context(mutant, || explore(SEQUENCES, Seed::Fixed));
        let (reason, steps) = match found {
            Err(failure) => failure,
            Ok(n) => panic!("mutant {name:?} survived {n} sequences"),
        };
        eprintln!(
            "mutant {name:?}: caught and shrunk to {} steps: {steps:?}\n  ({reason})",
            steps.len()
        );
        // Under READ COMMITTED the failure is a race between two
        // setters: whether a shorter sequence still loses it is timing,
        // so how far proptest shrinks it varies from run to run (13 steps
        // once, 1 step before). Catching it is the teeth; its kept,
        // lock-ordered case fails every time.
        if name != "READ COMMITTED" {
            assert!(
                steps.len() <= 10,
                "mutant {name:?} shrank only to {} steps (the kept case has \
                 {})",
                steps.len(),
                kept.len()
            );
        }
    }
}
