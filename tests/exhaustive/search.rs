//! Breadth-first search over the model's states, with a set of the
//! states already seen.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use super::model::{Action, Coverage, Model, Packed, State, Violation};

/// A broken invariant and the shortest way there from the start.
#[derive(Clone, Debug)]
pub(super) struct Counterexample {
    pub(super) violation: Violation,
    /// One line per action, in order.
    pub(super) trace: Vec<String>,
}

/// What a search found.
#[derive(Clone, Debug)]
pub(super) struct Report {
    /// Distinct states reached.
    pub(super) states: usize,
    /// Transitions taken (an action applied to a state).
    pub(super) transitions: u64,
    /// The deepest level of the search (actions from the start).
    pub(super) depth: u32,
    /// Every reachable state was expanded (not stopped at the first
    /// counterexample).
    pub(super) exhausted: bool,
    /// States in which nothing but a pause can happen.
    pub(super) stuck_states: usize,
    /// States in which generation 2 holds `active`.
    pub(super) handoff_states: usize,
    /// Transitions and states that broke an invariant.
    pub(super) violations: u64,
    /// The shortest counterexample found.
    pub(super) first: Option<Counterexample>,
    pub(super) coverage: Coverage,
}

impl Report {
    /// The figures, one line.
    pub(super) fn summary(&self) -> String {
        let extent = if self.exhausted {
            "state space exhausted"
        } else {
            "stopped once the shortest counterexample was known"
        };
        let c = &self.coverage;
        format!(
            "{} states, {} transitions, depth {}, {extent}; {} violations; \
             {} end states, {} states after the handoff; {} commits (gen 1) \
             and {} (gen 2), {} while a mark was in progress, {} Fenced, \
             {} pending writes lost to (a), {} shared lock waits, {} mark \
             restarts, {} operator marks",
            self.states,
            self.transitions,
            self.depth,
            self.violations,
            self.stuck_states,
            self.handoff_states,
            c.commits_gen1,
            c.commits_gen2,
            c.commits_during_mark,
            c.fenced,
            c.writes_lost,
            c.lock_waits,
            c.mark_restarts,
            c.operator_marks,
        )
    }
}

/// Hashes a packed state: a multiply-xorshift mix of its two halves
/// (the default SipHash is built for untrusted keys, and is the slowest
/// part of the search in an unoptimized build).
#[derive(Default)]
struct MixHasher(u64);

impl Hasher for MixHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, x: u64) {
        let mut h = (self.0 ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^= h >> 32;
        self.0 = h.wrapping_mul(0xd6e8_feb8_6659_fd93);
    }

    fn write_u128(&mut self, x: u128) {
        self.write_u64(x as u64);
        self.write_u64((x >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

/// The set of states seen.
type Visited = HashSet<Packed, BuildHasherDefault<MixHasher>>;

/// No parent: the start state's node.
const ROOT: u32 = u32::MAX;

/// The shortest counterexample so far: where it ends and how long it is.
struct Found {
    node: u32,
    last: Option<Action>,
    violation: Violation,
    len: u32,
}

/// Search `model` breadth-first from its start state.
/// With `stop_at_first`, stop once the shortest counterexample is known;
/// otherwise go on to exhaustion, counting every violation.
pub(super) fn explore(model: &Model, stop_at_first: bool) -> Report {
    let start = model.initial();
    let mut visited = Visited::default();
    // For each state seen, in order: its parent's node and the action
    // that led to it (the state itself is in `visited` and the queue).
    let mut nodes: Vec<(u32, Option<Action>)> = vec![(ROOT, None)];
    let mut queue: VecDeque<(Packed, u32, u32)> = VecDeque::new();
    let mut report = Report {
        states: 1,
        transitions: 0,
        depth: 0,
        exhausted: true,
        stuck_states: 0,
        handoff_states: 0,
        violations: 0,
        first: None,
        coverage: Coverage::default(),
    };
    let mut found: Option<Found> = None;
    let note = |found: &mut Option<Found>, f: Found, violations: &mut u64| {
        *violations += 1;
        if found.as_ref().is_none_or(|g| f.len < g.len) {
            *found = Some(f);
        }
    };
    if let Some(v) = model.check_state(&start) {
        note(
            &mut found,
            Found {
                node: 0,
                last: None,
                violation: v,
                len: 0,
            },
            &mut report.violations,
        );
    }
    visited.insert(start.pack());
    queue.push_back((start.pack(), 0, 0));
    let mut actions = Vec::new();
    while let Some((packed, node, depth)) = queue.pop_front() {
        let s = State::unpack(packed);
        if stop_at_first && found.as_ref().is_some_and(|f| depth >= f.len) {
            // Every later violation is at least as long.
            report.exhausted = false;
            break;
        }
        report.depth = report.depth.max(depth);
        model.enabled(&s, &mut actions);
        if Model::stuck(&actions) {
            report.stuck_states += 1;
            if let Some(v) = model.check_stuck(&s) {
                let f = Found {
                    node,
                    last: None,
                    violation: v,
                    len: depth,
                };
                note(&mut found, f, &mut report.violations);
            }
        }
        for &a in &actions {
            report.transitions += 1;
            let (t, broke) = model.apply(&s, a, &mut report.coverage);
            if let Some(v) = broke {
                let f = Found {
                    node,
                    last: Some(a),
                    violation: v,
                    len: depth + 1,
                };
                note(&mut found, f, &mut report.violations);
            }
            let packed = t.pack();
            if visited.insert(packed) {
                let id = u32::try_from(nodes.len()).expect("too many states");
                nodes.push((node, Some(a)));
                if model.handed_off(&t) {
                    report.handoff_states += 1;
                }
                queue.push_back((packed, id, depth + 1));
            }
        }
    }
    report.states = visited.len();
    report.first = found.map(|f| Counterexample {
        trace: trace(model, &nodes, f.node, f.last),
        violation: f.violation,
    });
    report
}

/// The lines of the path to `node` (then `last`), replayed from the
/// start so each line can say what the step did in its state.
fn trace(
    model: &Model,
    nodes: &[(u32, Option<Action>)],
    node: u32,
    last: Option<Action>,
) -> Vec<String> {
    let mut path: Vec<Action> = last.into_iter().collect();
    let mut at = node;
    while at != ROOT {
        let (parent, action) = nodes[at as usize];
        path.extend(action);
        at = parent;
    }
    path.reverse();
    let mut s = model.initial();
    let mut scratch = Coverage::default();
    path.into_iter()
        .map(|a| {
            let line = model.describe(&s, a);
            s = model.apply(&s, a, &mut scratch).0;
            line
        })
        .collect()
}
