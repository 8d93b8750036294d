//! An exhaustive model check of the handoff with the database fence.
//!
//! The protocol (`docs/handoff-protocol.md`) is written down here as a
//! transition system, and a breadth-first search visits every state it
//! can reach, checking the invariants on every transition and in every
//! state. Where the random model test (`model::`) samples interleavings
//! against the real code, this one covers all of them, for small sizes,
//! of the design the code implements.
//!
//! # What is modelled
//!
//! - Records: per Nexus `missing | not_yet | active | quiesced`, plus the
//!   drained mark. Generation 1 (A1, A2, ...) starts `active`; generation 2
//!   (B1, ...) is deployed in the target but has no record until an
//!   `active` generation-1 Nexus runs the record step. The planner bumps
//!   the target's generation once every generation-2 Nexus has `not_yet`.
//!   A generation-2 Nexus with `not_yet` hands off: atomically, if no row
//!   is outside `not_yet`/`quiesced`, every `not_yet` becomes `active`.
//! - Sessions and the fence: each process has one server session (kept in
//!   its pool between claims). A claim on a new session enrols it: take
//!   L(N) shared (queued behind a waiting or granted exclusive request),
//!   then, a separate step, read N's record: `active` enrols, anything
//!   else is `Fenced` (the session is dropped and the process ends). A
//!   pooled session is reused without a new check: the lock it holds is
//!   what keeps it safe. On an enrolled claim a process writes (pending),
//!   then commits in a later step; the write commits only if the session
//!   is still alive then.
//! - The mark of N (quiesce step 5, and the operator's force): (a)
//!   terminate the sessions holding L(N) (a pending write is lost), (b)
//!   request L(N) exclusive, (c) once granted set the row `quiesced`, (d)
//!   commit (the row changes here) and release. A waiting mark may hit
//!   `lock_timeout`, abort and restart at (a). The restarts need no bound:
//!   the state does not count them, a restart leads to a state of the same
//!   form, and the visited set folds it, so every number of restarts is
//!   covered and the space stays finite (the claims that can race a mark
//!   are bounded).
//! - Quiesce of a generation-1 process after the bump: step 1 no new work;
//!   step 2 once no write is pending, the drained mark (changes no row
//!   unless `active`; then the process ends); step 3 once every peer is
//!   drained or `quiesced`, refuse new claims; step 4 once it holds no
//!   claim; step 5 the mark. Claims taken between steps 1 and 4 only read.
//! - The operator may start a mark of any generation-1 Nexus not yet
//!   `quiesced`, at any time after the bump (the real command refuses a
//!   Nexus that reports; the model does not, it must be safe anyway).
//! - Pauses: any process (the operator too, mid-mark) may be paused at
//!   any step and resumes later exactly where it was; its sessions stay
//!   alive meanwhile, the server grants its locks and may terminate them.
//!
//! # Invariants
//!
//! Numbered as in the protocol: (1) no two generations `active` at once;
//! (2) `quiesced` is terminal; (3) each change of a row is one the
//! protocol allows, by the writer it allows (the record step by an
//! `active` executor of the current target, the handoff, the drained mark
//! while `active`, a mark); (4) a session enrols only while its record is
//! `active`; (5) a process takes no step of its own mark while it holds
//! a claim; (6) a state where nothing but a pause can happen has
//! generation 1 `quiesced` and generation 2 `active` (no deadlock, and
//! the handoff happens); (7) a write commits only while its Nexus's record
//! is `active`; and (8 here) the end-to-end order: no generation-1 write
//! commits after a generation-2 write did.
//!
//! # Why a search of our own and not `stateright`
//!
//! The checker is a queue, a `HashSet` of the states seen and a vector
//! of parent links: one loop of some sixty lines, with nothing to learn.
//! A state packs into 128 bits, so the set holds 16 bytes a state and a
//! two-multiply mix hashes it (the default SipHash dominated the run time
//! of an unoptimized build); a counterexample is rebuilt by following the
//! parent links and replaying them, each line described in the state it
//! was taken in. `stateright` would bring its actor framework, checker
//! threads, and its own property and path types for what is here one
//! sequential loop over one `Copy` state; what it adds (symmetry
//! reduction, parallel search, an explorer UI) is not needed at these
//! sizes; and the tests of this package must depend on nothing but std.
//!
//! # Sizes
//!
//! In CI: 2 generation-1 and 1 generation-2 Nexus, at most 2 pauses, 2
//! claims per process, to exhaustion (about a million states, seconds in
//! a debug build). `BATON_SOAK` of 2 to 4: 2 + 2 Nexus (about 7.7
//! million states); 5 or more: 2 + 2 Nexus and 3 pauses (about 14
//! million). The correct design is always searched to exhaustion; a
//! mutant's search stops once its shortest counterexample is known
//! (breadth-first, so no shorter one exists).

mod model;
mod search;

use model::{Model, Mutant, Sizes};
use search::{Report, explore};

/// How much bigger the soak run is: 1 in CI.
fn soak_factor() -> u64 {
    std::env::var("BATON_SOAK")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&f| f >= 1)
        .unwrap_or(1)
}

/// The sizes of this run. CI (factor 1): 2 + 1 Nexus, 2 pauses; a soak
/// factor of 2 to 4: 2 + 2 Nexus; 5 or more: 2 + 2 Nexus and 3 pauses.
/// Always 2 claims per process. (3 + 1 Nexus did not finish in five
/// minutes of an optimized build.)
fn sizes() -> Sizes {
    let factor = soak_factor();
    Sizes {
        old: 2,
        new: if factor >= 2 { 2 } else { 1 },
        pauses: if factor >= 5 { 3 } else { 2 },
        claims: 2,
    }
}

/// Searches the model of `mutant` (`None`: the fenced design) at this
/// run's sizes; returns the report and its figures as text.
fn search(mutant: Option<Mutant>, stop_at_first: bool) -> (Report, String) {
    let sizes = sizes();
    let model = Model { sizes, mutant };
    let report = explore(&model, stop_at_first);
    let text = format!(
        "model of the {}: {} generation-1 + {} generation-2 Nexus, at most \
         {} pauses, {} claims per process\n{}",
        mutant.map_or("fenced design".to_string(), |m| format!("{m:?} mutant")),
        sizes.old,
        sizes.new,
        sizes.pauses,
        sizes.claims,
        report.summary()
    );
    (report, text)
}

/// Runs `mutant`, asserts it breaks one of `invariants`, and prints its
/// shortest counterexample.
fn mutant_is_caught(mutant: Mutant, invariants: &[u8]) {
    let (report, mut text) = search(Some(mutant), true);
    let Some(c) = report.first else {
        panic!("no counterexample: {text}");
    };
    text.push_str(&format!(
        "\nshortest counterexample ({} steps), invariant {}: {}",
        c.trace.len(),
        c.violation.invariant,
        c.violation.what
    ));
    for (i, line) in c.trace.iter().enumerate() {
        text.push_str(&format!("\n{:3}. {line}", i + 1));
    }
    println!("{text}");
    assert!(
        invariants.contains(&c.violation.invariant),
        "{mutant:?} broke invariant {}, expected one of {invariants:?}",
        c.violation.invariant,
    );
}

#[test]
fn the_fenced_design_holds_every_invariant_in_every_interleaving() {
    let (report, text) = search(None, false);
    println!("{text}");
    if let Some(c) = &report.first {
        for line in &c.trace {
            println!("  {line}");
        }
        panic!(
            "invariant {} broken: {} ({} violations)",
            c.violation.invariant, c.violation.what, report.violations
        );
    }
    assert_eq!(report.violations, 0);
    assert!(report.exhausted, "the search did not cover every state");
    assert!(
        report.states > 100_000,
        "only {} states: the model cannot have explored much",
        report.states
    );
    assert!(report.handoff_states > 0, "the handoff is never reached");
    assert!(report.stuck_states > 0, "no run ever finishes");
    let c = &report.coverage;
    let seen = [
        ("a generation-2 commit", c.commits_gen2),
        ("a commit during a mark", c.commits_during_mark),
        ("a Fenced claim", c.fenced),
        ("a pending write lost to (a)", c.writes_lost),
        ("a shared request queued behind the mark", c.lock_waits),
        ("a mark restarted after lock_timeout", c.mark_restarts),
    ];
    for (what, count) in seen {
        assert!(count > 0, "the search never saw {what}");
    }
}

#[test]
fn without_the_fence_a_quiesced_nexus_still_reaches_the_database() {
    mutant_is_caught(Mutant::NoFence, &[4, 7]);
}

#[test]
fn a_mark_that_does_not_wait_for_the_claims_is_caught() {
    mutant_is_caught(Mutant::MarkBeforeDrain, &[5]);
}

#[test]
fn a_mark_that_neither_terminates_nor_locks_lets_a_late_write_commit() {
    mutant_is_caught(Mutant::ForceWithoutFence, &[7]);
}

#[test]
fn a_packed_state_unpacks_to_the_same_state() {
    // A long walk through the model (fenced and each mutant, 3 + 2
    // Nexus so every field has room to vary), choosing actions with a
    // fixed linear congruential sequence and starting over at each end.
    let sizes = Sizes {
        old: 3,
        new: 2,
        pauses: 3,
        claims: 3,
    };
    let variants = [
        None,
        Some(Mutant::NoFence),
        Some(Mutant::MarkBeforeDrain),
        Some(Mutant::ForceWithoutFence),
    ];
    let mut seed: u64 = 0x5eed;
    let mut actions = Vec::new();
    for mutant in variants {
        let model = Model { sizes, mutant };
        let mut s = model.initial();
        let mut scratch = model::Coverage::default();
        for _ in 0..20_000 {
            assert_eq!(model::State::unpack(s.pack()), s);
            model.enabled(&s, &mut actions);
            if actions.is_empty() {
                s = model.initial();
                continue;
            }
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let pick = (seed >> 33) as usize % actions.len();
            s = model.apply(&s, actions[pick], &mut scratch).0;
        }
    }
}
