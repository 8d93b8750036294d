//! The protocol as a transition system: the state, the actions each actor
//! may take in it, what each action does, and the invariants, checked on
//! every transition and in every state.

use std::fmt::Write as _;

/// The most Nexus instances a model may have (both generations together).
pub(super) const MAX_NEXUS: usize = 6;

/// A deliberately broken variant of the design: each must be caught.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mutant {
    /// Sessions are not enrolled (no shared lock, no record check), and
    /// the mark takes no lock and terminates nothing.
    NoFence,
    /// Quiesce step 4 does not wait for the claims: a Nexus marks itself
    /// while it still holds one.
    MarkBeforeDrain,
    /// The mark skips (a) and (b): it terminates nothing and takes no
    /// exclusive lock. Sessions still enrol.
    ForceWithoutFence,
}

/// How big the model is.
#[derive(Clone, Copy, Debug)]
pub(super) struct Sizes {
    /// Generation-1 Nexus instances (named A1, A2, ...).
    pub(super) old: usize,
    /// Generation-2 Nexus instances (named B1, B2, ...).
    pub(super) new: usize,
    /// Pauses in one run, over all processes.
    pub(super) pauses: u8,
    /// Claims each process may take (each carries at most one write).
    pub(super) claims: u8,
}

/// A Nexus's row in `db_metadata_nexus` (committed value).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Record {
    /// No row.
    None,
    NotYet,
    Active,
    Quiesced,
}

impl Record {
    fn name(self) -> &'static str {
        match self {
            Record::None => "missing",
            Record::NotYet => "not_yet",
            Record::Active => "active",
            Record::Quiesced => "quiesced",
        }
    }
}

/// Where a mark (the one transaction that quiesces a row) has got to:
/// the step it takes next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MarkStep {
    /// (a): terminate the other sessions holding the shared lock.
    Terminate,
    /// (b): request the lock exclusive.
    Request,
    /// Waiting for the exclusive lock; (c) sets the row once granted.
    Waiting,
    /// Holds the lock, row set (uncommitted); (d) commits.
    Set,
}

/// A process's place in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Generation 2, before its handoff attempt succeeded.
    Waiting,
    /// Doing service work.
    Serving,
    /// Quiesce step 1 done: no new work.
    Stopped,
    /// Step 2 done: drained mark written.
    Drained,
    /// Step 3 done: new claims refused (step 4 waits for the claims).
    ClaimsRefused,
    /// Step 5: marking itself.
    Marking(MarkStep),
    /// The process has ended (it takes no more steps).
    Ended,
}

/// A process's one server session and the claim on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Conn {
    /// No session.
    None,
    /// Claim under way: new session waiting for the shared lock.
    LockWait,
    /// Claim under way: shared lock held, record not read yet.
    Locked,
    /// Claim held on an enrolled session, no write yet.
    Claimed,
    /// Claim held, a write pending in its transaction.
    Pending,
    /// No claim; the enrolled session idles in the pool (lock held).
    Pooled,
    /// Claim held, but the server terminated the session.
    Broken,
}

impl Conn {
    fn holds_claim(self) -> bool {
        !matches!(self, Conn::None | Conn::Pooled)
    }
}

/// One Nexus: its row and its process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Nexus {
    record: Record,
    drained: bool,
    phase: Phase,
    conn: Conn,
    /// Claims taken so far.
    claims: u8,
    paused: bool,
}

/// The operator's quiesce command (one at a time): target and step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Operator {
    mark: Option<(u8, MarkStep)>,
    paused: bool,
}

/// Everything the invariants and the next steps depend on. Histories that
/// differ only in what no later step can see (the order of past commits,
/// how often a mark restarted) fold into one state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct State {
    /// The target blueprint's top-level `nexus_generation`.
    target_gen: u8,
    nexus: [Nexus; MAX_NEXUS],
    operator: Operator,
    /// Pauses taken so far.
    pauses: u8,
    /// Some generation-2 write has committed (for the end-to-end order).
    gen2_committed: bool,
}

/// A packed state: the search stores these (16 bytes, hashed as two
/// words) rather than the 50-odd bytes of [`State`].
pub(super) type Packed = u128;

const RECORDS: [Record; 4] = [
    Record::None,
    Record::NotYet,
    Record::Active,
    Record::Quiesced,
];
const STEPS: [MarkStep; 4] = [
    MarkStep::Terminate,
    MarkStep::Request,
    MarkStep::Waiting,
    MarkStep::Set,
];
const CONNS: [Conn; 7] = [
    Conn::None,
    Conn::LockWait,
    Conn::Locked,
    Conn::Claimed,
    Conn::Pending,
    Conn::Pooled,
    Conn::Broken,
];

fn step_code(m: MarkStep) -> u128 {
    STEPS.iter().position(|&x| x == m).unwrap() as u128
}

fn phase_code(p: Phase) -> u128 {
    match p {
        Phase::Waiting => 0,
        Phase::Serving => 1,
        Phase::Stopped => 2,
        Phase::Drained => 3,
        Phase::ClaimsRefused => 4,
        Phase::Marking(m) => 5 + step_code(m),
        Phase::Ended => 9,
    }
}

fn phase_of(code: u128) -> Phase {
    match code {
        0 => Phase::Waiting,
        1 => Phase::Serving,
        2 => Phase::Stopped,
        3 => Phase::Drained,
        4 => Phase::ClaimsRefused,
        5..=8 => Phase::Marking(STEPS[(code - 5) as usize]),
        _ => Phase::Ended,
    }
}

/// Appends `bits` bits holding `value` to a packed word.
fn put(word: &mut u128, bits: u32, value: u128) {
    debug_assert!(value < 1 << bits);
    *word = (*word << bits) | value;
}

/// Takes the last `bits` bits off a packed word.
fn take(word: &mut u128, bits: u32) -> u128 {
    let value = *word & ((1 << bits) - 1);
    *word >>= bits;
    value
}

impl State {
    /// This state in 90 bits (13 per Nexus).
    pub(super) fn pack(&self) -> Packed {
        let mut w = 0;
        put(&mut w, 1, u128::from(self.target_gen == 2));
        put(&mut w, 1, u128::from(self.gen2_committed));
        put(&mut w, 3, u128::from(self.pauses));
        put(&mut w, 1, u128::from(self.operator.paused));
        let (target, step) = match self.operator.mark {
            None => (0, 0),
            Some((t, m)) => (u128::from(t), 1 + step_code(m)),
        };
        put(&mut w, 3, target);
        put(&mut w, 3, step);
        for n in &self.nexus {
            let r = RECORDS.iter().position(|&x| x == n.record).unwrap();
            let c = CONNS.iter().position(|&x| x == n.conn).unwrap();
            put(&mut w, 2, r as u128);
            put(&mut w, 1, u128::from(n.drained));
            put(&mut w, 4, phase_code(n.phase));
            put(&mut w, 3, c as u128);
            put(&mut w, 2, u128::from(n.claims));
            put(&mut w, 1, u128::from(n.paused));
        }
        w
    }

    /// The state [`State::pack`] packed.
    pub(super) fn unpack(mut w: Packed) -> State {
        let mut nexus = [Nexus {
            record: Record::None,
            drained: false,
            phase: Phase::Ended,
            conn: Conn::None,
            claims: 0,
            paused: false,
        }; MAX_NEXUS];
        for n in nexus.iter_mut().rev() {
            n.paused = take(&mut w, 1) == 1;
            n.claims = take(&mut w, 2) as u8;
            n.conn = CONNS[take(&mut w, 3) as usize];
            n.phase = phase_of(take(&mut w, 4));
            n.drained = take(&mut w, 1) == 1;
            n.record = RECORDS[take(&mut w, 2) as usize];
        }
        let step = take(&mut w, 3);
        let target = take(&mut w, 3) as u8;
        let mark = (step > 0).then(|| (target, STEPS[(step - 1) as usize]));
        let paused = take(&mut w, 1) == 1;
        let pauses = take(&mut w, 3) as u8;
        let gen2_committed = take(&mut w, 1) == 1;
        let target_gen = if take(&mut w, 1) == 1 { 2 } else { 1 };
        State {
            target_gen,
            nexus,
            operator: Operator { mark, paused },
            pauses,
            gen2_committed,
        }
    }
}

/// Who takes a step: a Nexus process (its index) or the operator.
pub(super) type Actor = u8;
/// The operator, as an actor.
pub(super) const OPERATOR: Actor = u8::MAX;

/// One step of one actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Action {
    /// An active Nexus executes the target: the record step.
    RecordStep(u8),
    /// The planner bumps the target's generation 1 -> 2.
    Bump,
    /// A generation-2 Nexus attempts the handoff (and succeeds).
    Handoff(u8),
    Pause(Actor),
    Resume(Actor),
    /// Take a claim on a new session (request the shared lock).
    OpenSession(u8),
    /// Take a claim on the pooled, enrolled session.
    ReuseSession(u8),
    /// Enrolment's second step: read the own record.
    ReadRecord(u8),
    Write(u8),
    /// Commit the pending write and release the claim.
    Commit(u8),
    /// Release a claim that wrote nothing.
    Release(u8),
    /// The claim's session was terminated: the claim fails.
    NoticeBroken(u8),
    /// Quiesce steps 1 to 4 of a generation-1 process.
    Quiesce(u8, u8),
    /// The operator starts marking a Nexus (taking the mark's first step).
    Force(u8),
    /// The next step of a mark in progress (self-mark or operator's).
    MarkStep(Actor),
    /// A waiting mark hits `lock_timeout`, aborts and restarts at (a).
    MarkTimeout(Actor),
}

/// Counts of the interesting things the search saw happen, so that a run
/// can show it did not pass vacuously.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Coverage {
    /// Claims refused with `Fenced`.
    pub(super) fenced: u64,
    /// Pending writes lost because (a) terminated their session.
    pub(super) writes_lost: u64,
    /// Shared requests that had to wait behind an exclusive one.
    pub(super) lock_waits: u64,
    /// Marks restarted after a `lock_timeout`.
    pub(super) mark_restarts: u64,
    /// Commits of generation 1.
    pub(super) commits_gen1: u64,
    /// Commits of generation 2.
    pub(super) commits_gen2: u64,
    /// Commits of a Nexus while a mark of it was in progress (the mark
    /// waited for the session, so the commit came first).
    pub(super) commits_during_mark: u64,
    /// Marks the operator started.
    pub(super) operator_marks: u64,
}

/// An invariant broken: its number (1 to 7, 8 for the end-to-end order)
/// and what happened.
#[derive(Clone, Debug)]
pub(super) struct Violation {
    pub(super) invariant: u8,
    pub(super) what: String,
}

fn violation(invariant: u8, what: String) -> Option<Violation> {
    Some(Violation { invariant, what })
}

/// The model: sizes and variant.
#[derive(Clone, Copy, Debug)]
pub(super) struct Model {
    pub(super) sizes: Sizes,
    pub(super) mutant: Option<Mutant>,
}

impl Model {
    fn count(&self) -> usize {
        self.sizes.old + self.sizes.new
    }

    fn is_old(&self, i: usize) -> bool {
        i < self.sizes.old
    }

    /// A Nexus's name: A1.. for generation 1, B1.. for generation 2.
    pub(super) fn name(&self, i: usize) -> String {
        if self.is_old(i) {
            format!("A{}", i + 1)
        } else {
            format!("B{}", i - self.sizes.old + 1)
        }
    }

    fn actor_name(&self, a: Actor) -> String {
        if a == OPERATOR {
            "operator".to_string()
        } else {
            self.name(usize::from(a))
        }
    }

    /// Sessions enrol (shared lock, then the record check).
    fn sessions_enrol(&self) -> bool {
        self.mutant != Some(Mutant::NoFence)
    }

    /// The mark takes steps (a) and (b).
    fn mark_fences(&self) -> bool {
        !matches!(
            self.mutant,
            Some(Mutant::NoFence | Mutant::ForceWithoutFence)
        )
    }

    fn first_mark_step(&self) -> MarkStep {
        if self.mark_fences() {
            MarkStep::Terminate
        } else {
            MarkStep::Waiting
        }
    }

    /// The state everything starts in: generation 1 active and serving,
    /// generation 2 deployed (in the target) but without records.
    pub(super) fn initial(&self) -> State {
        assert!(self.sizes.old >= 1 && self.sizes.new >= 1);
        assert!(self.count() <= MAX_NEXUS);
        // What `State::pack` has room for.
        assert!(self.sizes.claims <= 3 && self.sizes.pauses <= 7);
        let idle = Nexus {
            record: Record::None,
            drained: false,
            phase: Phase::Ended,
            conn: Conn::None,
            claims: 0,
            paused: false,
        };
        let mut nexus = [idle; MAX_NEXUS];
        for (i, n) in nexus.iter_mut().enumerate().take(self.count()) {
            if self.is_old(i) {
                n.record = Record::Active;
                n.phase = Phase::Serving;
            } else {
                n.phase = Phase::Waiting;
            }
        }
        State {
            target_gen: 1,
            nexus,
            operator: Operator {
                mark: None,
                paused: false,
            },
            pauses: 0,
            gen2_committed: false,
        }
    }

    fn nexus_indices(&self) -> std::ops::Range<usize> {
        0..self.count()
    }

    /// The mark of Nexus `t` held by `actor`, if that actor is marking it.
    fn mark_of(&self, s: &State, actor: Actor) -> Option<(usize, MarkStep)> {
        if actor == OPERATOR {
            s.operator.mark.map(|(t, m)| (usize::from(t), m))
        } else {
            match s.nexus[usize::from(actor)].phase {
                Phase::Marking(m) => Some((usize::from(actor), m)),
                _ => None,
            }
        }
    }

    fn set_mark(&self, s: &mut State, actor: Actor, step: Option<MarkStep>) {
        if actor == OPERATOR {
            s.operator.mark = step.map(|m| {
                let (t, _) = s.operator.mark.unwrap();
                (t, m)
            });
        } else {
            let n = &mut s.nexus[usize::from(actor)];
            match step {
                Some(m) => n.phase = Phase::Marking(m),
                None => {
                    // The self-mark committed: the process is done, its
                    // pool is closed.
                    n.phase = Phase::Ended;
                    n.conn = Conn::None;
                }
            }
        }
    }

    /// The marks of Nexus `t` in progress: (actor, step).
    fn marks_on(&self, s: &State, t: usize) -> [Option<MarkStep>; 2] {
        let own = match s.nexus[t].phase {
            Phase::Marking(m) => Some(m),
            _ => None,
        };
        let op = match s.operator.mark {
            Some((o, m)) if usize::from(o) == t => Some(m),
            _ => None,
        };
        [own, op]
    }

    /// Some mark holds or waits for L(t) exclusive (so new shared
    /// requests queue).
    fn exclusive_on(&self, s: &State, t: usize) -> bool {
        self.mark_fences()
            && self
                .marks_on(s, t)
                .iter()
                .any(|m| matches!(m, Some(MarkStep::Waiting | MarkStep::Set)))
    }

    /// Nexus `t`'s process session holds L(t) shared.
    fn holds_shared(&self, s: &State, t: usize) -> bool {
        self.sessions_enrol()
            && matches!(
                s.nexus[t].conn,
                Conn::Locked | Conn::Claimed | Conn::Pending | Conn::Pooled
            )
    }

    /// The waiting mark of `actor` on `t` can be granted L(t) exclusive.
    fn grantable(&self, s: &State, actor: Actor, t: usize) -> bool {
        if !self.mark_fences() {
            return true;
        }
        let other = if actor == OPERATOR {
            self.marks_on(s, t)[0]
        } else {
            self.marks_on(s, t)[1]
        };
        !self.holds_shared(s, t) && other != Some(MarkStep::Set)
    }

    fn may_take_claims(&self, n: &Nexus) -> bool {
        matches!(n.phase, Phase::Serving | Phase::Stopped | Phase::Drained)
            && n.claims < self.sizes.claims
    }

    /// Every action enabled in `s`, pauses and resumes last (so of two
    /// traces as short, the search reports the one with fewer pauses).
    pub(super) fn enabled(&self, s: &State, out: &mut Vec<Action>) {
        out.clear();
        self.progress_actions(s, out);
        for i in self.nexus_indices() {
            let n = &s.nexus[i];
            let a = i as Actor;
            if n.paused {
                out.push(Action::Resume(a));
            } else if n.phase != Phase::Ended && s.pauses < self.sizes.pauses {
                out.push(Action::Pause(a));
            }
        }
        if s.operator.paused {
            out.push(Action::Resume(OPERATOR));
        } else if s.operator.mark.is_some() && s.pauses < self.sizes.pauses {
            out.push(Action::Pause(OPERATOR));
        }
    }

    /// The actions other than pausing and resuming.
    fn progress_actions(&self, s: &State, out: &mut Vec<Action>) {
        let all_new_not_yet = (self.sizes.old..self.count())
            .all(|j| s.nexus[j].record == Record::NotYet);
        if s.target_gen == 1 && all_new_not_yet {
            out.push(Action::Bump);
        }
        for i in self.nexus_indices() {
            let n = &s.nexus[i];
            if n.paused || n.phase == Phase::Ended {
                continue;
            }
            let a = i as u8;
            if self.is_old(i) {
                let some_missing = (self.sizes.old..self.count())
                    .any(|j| s.nexus[j].record == Record::None);
                if n.phase == Phase::Serving
                    && n.record == Record::Active
                    && some_missing
                {
                    out.push(Action::RecordStep(a));
                }
                self.quiesce_actions(s, i, out);
            } else if n.phase == Phase::Waiting && self.handoff_ok(s, i) {
                out.push(Action::Handoff(a));
            }
            match n.conn {
                Conn::None if self.may_take_claims(n) => {
                    out.push(Action::OpenSession(a));
                }
                Conn::Pooled if self.may_take_claims(n) => {
                    out.push(Action::ReuseSession(a));
                }
                Conn::Locked => out.push(Action::ReadRecord(a)),
                Conn::Claimed => {
                    if n.phase == Phase::Serving {
                        out.push(Action::Write(a));
                    }
                    out.push(Action::Release(a));
                }
                Conn::Pending => out.push(Action::Commit(a)),
                Conn::Broken => out.push(Action::NoticeBroken(a)),
                Conn::None | Conn::Pooled | Conn::LockWait => {}
            }
            if let Phase::Marking(m) = n.phase {
                self.mark_actions(s, a, i, m, out);
            }
        }
        if !s.operator.paused {
            match s.operator.mark {
                None if s.target_gen == 2 => {
                    for t in 0..self.sizes.old {
                        if s.nexus[t].record != Record::Quiesced {
                            out.push(Action::Force(t as u8));
                        }
                    }
                }
                None => {}
                Some((t, m)) => {
                    self.mark_actions(s, OPERATOR, usize::from(t), m, out);
                }
            }
        }
    }

    fn handoff_ok(&self, s: &State, i: usize) -> bool {
        match s.nexus[i].record {
            Record::Active => true,
            Record::NotYet => self.nexus_indices().all(|j| {
                matches!(
                    s.nexus[j].record,
                    Record::None | Record::NotYet | Record::Quiesced
                )
            }),
            Record::None | Record::Quiesced => false,
        }
    }

    fn quiesce_actions(&self, s: &State, i: usize, out: &mut Vec<Action>) {
        let n = &s.nexus[i];
        let a = i as u8;
        match n.phase {
            Phase::Serving if s.target_gen == 2 => {
                out.push(Action::Quiesce(a, 1));
            }
            Phase::Stopped if n.conn != Conn::Pending => {
                out.push(Action::Quiesce(a, 2));
            }
            Phase::Drained => {
                let peers_done = (0..self.sizes.old).all(|j| {
                    j == i
                        || s.nexus[j].drained
                        || s.nexus[j].record == Record::Quiesced
                });
                if peers_done {
                    out.push(Action::Quiesce(a, 3));
                }
            }
            Phase::ClaimsRefused
                if !n.conn.holds_claim()
                    || self.mutant == Some(Mutant::MarkBeforeDrain) =>
            {
                out.push(Action::Quiesce(a, 4));
            }
            _ => {}
        }
    }

    fn mark_actions(
        &self,
        s: &State,
        actor: Actor,
        t: usize,
        m: MarkStep,
        out: &mut Vec<Action>,
    ) {
        match m {
            MarkStep::Waiting => {
                if self.grantable(s, actor, t) {
                    out.push(Action::MarkStep(actor));
                } else {
                    out.push(Action::MarkTimeout(actor));
                }
            }
            MarkStep::Terminate | MarkStep::Request | MarkStep::Set => {
                out.push(Action::MarkStep(actor));
            }
        }
    }

    /// The state after `a` (enabled in `s`), and the invariant the step
    /// itself broke, if any.
    pub(super) fn apply(
        &self,
        s: &State,
        a: Action,
        cov: &mut Coverage,
    ) -> (State, Option<Violation>) {
        let mut t = *s;
        let mut broke = None;
        match a {
            Action::Bump => t.target_gen = 2,
            Action::RecordStep(_) => {
                for j in self.sizes.old..self.count() {
                    if t.nexus[j].record == Record::None {
                        t.nexus[j].record = Record::NotYet;
                    }
                }
            }
            Action::Handoff(i) => {
                let i = usize::from(i);
                if t.nexus[i].record == Record::NotYet {
                    for j in self.nexus_indices() {
                        if t.nexus[j].record == Record::NotYet {
                            t.nexus[j].record = Record::Active;
                        }
                    }
                }
                t.nexus[i].phase = Phase::Serving;
            }
            Action::Pause(x) | Action::Resume(x) => {
                let pause = matches!(a, Action::Pause(_));
                if pause {
                    t.pauses += 1;
                }
                if x == OPERATOR {
                    t.operator.paused = pause;
                } else {
                    t.nexus[usize::from(x)].paused = pause;
                }
            }
            Action::OpenSession(i) => {
                let i = usize::from(i);
                t.nexus[i].claims += 1;
                if !self.sessions_enrol() {
                    // Enrolled without a look at the record.
                    t.nexus[i].conn = Conn::Claimed;
                    broke = self.check_enrolment(s, i);
                } else if self.exclusive_on(s, i) {
                    t.nexus[i].conn = Conn::LockWait;
                    cov.lock_waits += 1;
                } else {
                    t.nexus[i].conn = Conn::Locked;
                }
            }
            Action::ReuseSession(i) => {
                let i = usize::from(i);
                t.nexus[i].claims += 1;
                t.nexus[i].conn = Conn::Claimed;
            }
            Action::ReadRecord(i) => {
                let i = usize::from(i);
                if s.nexus[i].record == Record::Active {
                    t.nexus[i].conn = Conn::Claimed;
                    broke = self.check_enrolment(s, i);
                } else {
                    // Fenced: the session is dropped, the process ends.
                    cov.fenced += 1;
                    t.nexus[i].conn = Conn::None;
                    t.nexus[i].phase = Phase::Ended;
                }
            }
            Action::Write(i) => t.nexus[usize::from(i)].conn = Conn::Pending,
            Action::Commit(i) => {
                let i = usize::from(i);
                t.nexus[i].conn = Conn::Pooled;
                broke = self.check_commit(s, i);
                if self.marks_on(s, i).iter().any(Option::is_some) {
                    cov.commits_during_mark += 1;
                }
                if self.is_old(i) {
                    cov.commits_gen1 += 1;
                } else {
                    cov.commits_gen2 += 1;
                    t.gen2_committed = true;
                }
            }
            Action::Release(i) => t.nexus[usize::from(i)].conn = Conn::Pooled,
            Action::NoticeBroken(i) => {
                t.nexus[usize::from(i)].conn = Conn::None;
            }
            Action::Quiesce(i, step) => {
                let i = usize::from(i);
                let n = &mut t.nexus[i];
                match step {
                    1 => n.phase = Phase::Stopped,
                    2 if n.record == Record::Active => {
                        n.drained = true;
                        n.phase = Phase::Drained;
                    }
                    2 => {
                        // The drained mark changed no row: somebody
                        // quiesced this Nexus. It ends.
                        n.phase = Phase::Ended;
                        n.conn = Conn::None;
                    }
                    3 => n.phase = Phase::ClaimsRefused,
                    _ => n.phase = Phase::Marking(self.first_mark_step()),
                }
            }
            Action::Force(target) => {
                cov.operator_marks += 1;
                t.operator.mark = Some((target, self.first_mark_step()));
                broke = self.mark_step(&mut t, OPERATOR, cov);
            }
            Action::MarkStep(actor) => {
                broke = self.mark_step(&mut t, actor, cov);
            }
            Action::MarkTimeout(actor) => {
                cov.mark_restarts += 1;
                self.set_mark(&mut t, actor, Some(MarkStep::Terminate));
            }
        }
        self.settle_locks(&mut t);
        let broke = broke
            .or_else(|| self.check_record_writes(s, &t, a))
            .or_else(|| self.check_state(&t));
        (t, broke)
    }

    /// One step of the mark held by `actor`.
    fn mark_step(
        &self,
        s: &mut State,
        actor: Actor,
        cov: &mut Coverage,
    ) -> Option<Violation> {
        let (t, m) = self.mark_of(s, actor).unwrap();
        let mut broke = None;
        if actor != OPERATOR && s.nexus[t].conn.holds_claim() {
            broke = violation(
                5,
                format!(
                    "{} takes a step of its own mark while it holds a \
                     claim ({:?})",
                    self.name(t),
                    s.nexus[t].conn
                ),
            );
        }
        let next = match m {
            MarkStep::Terminate => {
                let n = &mut s.nexus[t];
                match n.conn {
                    Conn::Pooled => n.conn = Conn::None,
                    Conn::Pending => {
                        cov.writes_lost += 1;
                        n.conn = Conn::Broken;
                    }
                    Conn::Locked | Conn::Claimed => n.conn = Conn::Broken,
                    Conn::None | Conn::LockWait | Conn::Broken => {}
                }
                Some(MarkStep::Request)
            }
            MarkStep::Request => Some(MarkStep::Waiting),
            MarkStep::Waiting => Some(MarkStep::Set),
            MarkStep::Set => {
                s.nexus[t].record = Record::Quiesced;
                None
            }
        };
        self.set_mark(s, actor, next);
        broke
    }

    /// The server grants every waiting shared request once no exclusive
    /// request holds or waits for the lock.
    fn settle_locks(&self, s: &mut State) {
        for i in self.nexus_indices() {
            if s.nexus[i].conn == Conn::LockWait && !self.exclusive_on(s, i) {
                s.nexus[i].conn = Conn::Locked;
            }
        }
    }

    /// Invariant 4, at the moment a session enrols (`s` is the state
    /// before).
    fn check_enrolment(&self, s: &State, i: usize) -> Option<Violation> {
        let r = s.nexus[i].record;
        if r == Record::Active {
            return None;
        }
        violation(
            4,
            format!(
                "a session of {} enrolled while its record was {}",
                self.name(i),
                r.name()
            ),
        )
    }

    /// Invariant 7 and the end-to-end order, at a commit.
    fn check_commit(&self, s: &State, i: usize) -> Option<Violation> {
        let r = s.nexus[i].record;
        if r != Record::Active {
            return violation(
                7,
                format!(
                    "a write of {} committed while its record was {}",
                    self.name(i),
                    r.name()
                ),
            );
        }
        if self.is_old(i) && s.gen2_committed {
            return violation(
                8,
                format!(
                    "a generation-1 write of {} committed after a \
                     generation-2 write",
                    self.name(i)
                ),
            );
        }
        None
    }

    /// Invariants 2 and 3: every change of a row is one the protocol
    /// allows, by the writer it allows.
    fn check_record_writes(
        &self,
        s: &State,
        t: &State,
        a: Action,
    ) -> Option<Violation> {
        for j in self.nexus_indices() {
            let (before, after) = (&s.nexus[j], &t.nexus[j]);
            if before.record == Record::Quiesced
                && after.record != Record::Quiesced
            {
                return violation(
                    2,
                    format!(
                        "{}'s record left quiesced ({})",
                        self.name(j),
                        after.record.name()
                    ),
                );
            }
            let record_changed = before.record != after.record;
            let drained_changed = before.drained != after.drained;
            if !record_changed && !drained_changed {
                continue;
            }
            let allowed = match a {
                Action::RecordStep(x) => {
                    let x = usize::from(x);
                    !drained_changed
                        && !self.is_old(j)
                        && before.record == Record::None
                        && after.record == Record::NotYet
                        && s.nexus[x].record == Record::Active
                        && s.target_gen == 1
                }
                Action::Handoff(x) => {
                    !drained_changed
                        && before.record == Record::NotYet
                        && after.record == Record::Active
                        && s.nexus[usize::from(x)].record == Record::NotYet
                        && self
                            .nexus_indices()
                            .all(|k| s.nexus[k].record != Record::Active)
                }
                Action::Quiesce(x, 2) => {
                    usize::from(x) == j
                        && !record_changed
                        && before.record == Record::Active
                }
                Action::MarkStep(actor) => {
                    let target =
                        self.mark_of(s, actor).map(|(target, _)| target);
                    target == Some(j)
                        && !drained_changed
                        && after.record == Record::Quiesced
                }
                _ => false,
            };
            if !allowed {
                return violation(
                    3,
                    format!(
                        "{}'s record changed {} -> {} by a writer the \
                         protocol does not allow",
                        self.name(j),
                        before.record.name(),
                        after.record.name()
                    ),
                );
            }
        }
        None
    }

    /// Invariant 1, in a state.
    pub(super) fn check_state(&self, s: &State) -> Option<Violation> {
        let active = |range: std::ops::Range<usize>| {
            range
                .into_iter()
                .any(|j| s.nexus[j].record == Record::Active)
        };
        if active(0..self.sizes.old) && active(self.sizes.old..self.count()) {
            return violation(
                1,
                "records of both generations are active".to_string(),
            );
        }
        None
    }

    /// Nothing can happen in a state whose enabled actions are these: no
    /// step but a pause (a paused process can always resume).
    pub(super) fn stuck(enabled: &[Action]) -> bool {
        enabled.iter().all(|a| matches!(a, Action::Pause(_)))
    }

    /// Invariant 6, in a state where nothing can happen any more: the
    /// handoff must be done.
    pub(super) fn check_stuck(&self, s: &State) -> Option<Violation> {
        let old_quiesced =
            (0..self.sizes.old).all(|j| s.nexus[j].record == Record::Quiesced);
        let new_active = (self.sizes.old..self.count())
            .all(|j| s.nexus[j].record == Record::Active);
        if old_quiesced && new_active {
            return None;
        }
        let mut what = String::from("no step is possible, yet ");
        if old_quiesced {
            what.push_str("generation 1 is quiesced and the handoff not done");
        } else {
            what.push_str("generation 1 is not all quiesced (deadlock)");
        }
        what.push_str(": ");
        what.push_str(&self.describe_state(s));
        violation(6, what)
    }

    /// The handoff has happened in `s`.
    pub(super) fn handed_off(&self, s: &State) -> bool {
        (self.sizes.old..self.count())
            .any(|j| s.nexus[j].record == Record::Active)
    }

    /// A one-line summary of a state.
    pub(super) fn describe_state(&self, s: &State) -> String {
        let mut out = String::new();
        for j in self.nexus_indices() {
            let n = &s.nexus[j];
            let _ = write!(
                out,
                "{} {}{} {:?} {:?}; ",
                self.name(j),
                n.record.name(),
                if n.drained { " (drained)" } else { "" },
                n.phase,
                n.conn
            );
        }
        let _ = write!(out, "operator {:?}", s.operator.mark);
        out
    }

    /// What `a` does in `s`, for a trace.
    pub(super) fn describe(&self, s: &State, a: Action) -> String {
        let claim = |i: u8| s.nexus[usize::from(i)].claims;
        match a {
            Action::RecordStep(i) => format!(
                "{} executes the target: record step (generation 2 gets \
                 not_yet)",
                self.name(usize::from(i))
            ),
            Action::Bump => {
                "planner: bump the target's nexus_generation 1 -> 2".into()
            }
            Action::Handoff(i) => {
                let i = usize::from(i);
                if s.nexus[i].record == Record::Active {
                    format!("{} handoff (already active)", self.name(i))
                } else {
                    format!("{} handoff", self.name(i))
                }
            }
            Action::Pause(x) => format!("{} is paused", self.actor_name(x)),
            Action::Resume(x) => format!("{} resumes", self.actor_name(x)),
            Action::OpenSession(i) => {
                let name = self.name(usize::from(i));
                let n = claim(i) + 1;
                if !self.sessions_enrol() {
                    format!(
                        "{name} takes claim {n} on a new session (no \
                         fence; record {})",
                        s.nexus[usize::from(i)].record.name()
                    )
                } else if self.exclusive_on(s, usize::from(i)) {
                    format!(
                        "{name} takes claim {n}: new session requests \
                         shared L({name}), waits"
                    )
                } else {
                    format!(
                        "{name} takes claim {n}: new session holds shared \
                         L({name})"
                    )
                }
            }
            Action::ReuseSession(i) => format!(
                "{} takes claim {} on its pooled enrolled session",
                self.name(usize::from(i)),
                claim(i) + 1
            ),
            Action::ReadRecord(i) => {
                let name = self.name(usize::from(i));
                let r = s.nexus[usize::from(i)].record;
                if r == Record::Active {
                    format!("{name} reads its record: active, enrolled")
                } else {
                    format!(
                        "{name} reads its record: {}, Fenced; {name} ends",
                        r.name()
                    )
                }
            }
            Action::Write(i) => format!(
                "{} writes (write {} pending)",
                self.name(usize::from(i)),
                claim(i)
            ),
            Action::Commit(i) => {
                let r = s.nexus[usize::from(i)].record;
                format!(
                    "{} commits write {} (record {}{})",
                    self.name(usize::from(i)),
                    claim(i),
                    r.name(),
                    if r == Record::Active { "" } else { "!" }
                )
            }
            Action::Release(i) => format!(
                "{} releases claim {} (wrote nothing)",
                self.name(usize::from(i)),
                claim(i)
            ),
            Action::NoticeBroken(i) => format!(
                "{}'s claim {} fails: its session was terminated",
                self.name(usize::from(i)),
                claim(i)
            ),
            Action::Quiesce(i, step) => {
                let name = self.name(usize::from(i));
                let what = match step {
                    1 => "stops new work",
                    2 if s.nexus[usize::from(i)].record == Record::Active => {
                        "no work in flight, writes its drained mark"
                    }
                    2 => "drained mark changes no row (not active); ends",
                    3 => "every peer drained or quiesced; refuses claims",
                    _ if s.nexus[usize::from(i)].conn.holds_claim() => {
                        "goes on to its mark while holding a claim"
                    }
                    _ => "holds no claim",
                };
                format!("{name} quiesce step {step}: {what}")
            }
            Action::Force(target) => {
                let mut t = *s;
                t.operator.mark = Some((target, self.first_mark_step()));
                self.describe_mark(&t, OPERATOR)
            }
            Action::MarkStep(actor) => self.describe_mark(s, actor),
            Action::MarkTimeout(actor) => {
                let (t, _) = self.mark_of(s, actor).unwrap();
                format!(
                    "{}: mark {} lock_timeout; aborts, restarts at (a)",
                    self.actor_name(actor),
                    self.name(t)
                )
            }
        }
    }

    fn describe_mark(&self, s: &State, actor: Actor) -> String {
        let (t, m) = self.mark_of(s, actor).unwrap();
        let who = self.actor_name(actor);
        let name = self.name(t);
        let step = match m {
            MarkStep::Terminate => {
                let hit = match s.nexus[t].conn {
                    Conn::Pending => " (kills a pending write)",
                    Conn::Pooled | Conn::Locked | Conn::Claimed => {
                        " (kills a session)"
                    }
                    _ => "",
                };
                format!("step (a) terminate{hit}")
            }
            MarkStep::Request => {
                format!("step (b) request L({name}) exclusive")
            }
            MarkStep::Waiting if self.mark_fences() => {
                "step (c) granted, set quiesced".to_string()
            }
            MarkStep::Waiting => "step (c) set quiesced (no lock)".to_string(),
            MarkStep::Set if self.mark_fences() => {
                format!("step (d) commit, releases L({name})")
            }
            MarkStep::Set => "step (d) commit".to_string(),
        };
        format!("{who}: mark {name} {step}")
    }
}
