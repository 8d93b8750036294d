//! A closable count of things in flight: the one counter behind the
//! drain fence's claims and a Nexus's work guards.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use baton_types::Held;
use tokio::sync::watch;

#[derive(Debug, Default)]
struct State {
    closed: bool,
    /// Everything out now: its ticket, the operation that took it, and
    /// when.
    out: BTreeMap<u64, (&'static str, Instant)>,
}

/// Counts things in flight (claims, units of work), each named by the
/// operation that took it; refuses new ones once closed, and can wait
/// until none is left.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let tally = baton_datastore::Tally::default();
/// let ticket = tally.enter("a job").expect("open");
/// assert_eq!(tally.oldest().unwrap().op, "a job");
/// tally.close();
/// assert!(tally.enter("refused").is_none());
/// tally.leave(ticket);
/// tally.drained().await;
/// assert_eq!(tally.count(), 0);
/// # }
/// ```
#[derive(Debug)]
pub struct Tally {
    state: watch::Sender<State>,
    next: AtomicU64,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            state: watch::Sender::new(State::default()),
            next: AtomicU64::new(0),
        }
    }
}

impl Tally {
    /// Counts a new one taken by `op`: its ticket, or `None` once closed.
    pub fn enter(&self, op: &'static str) -> Option<u64> {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        let mut entered = false;
        self.state.send_if_modified(|s| {
            if !s.closed {
                s.out.insert(ticket, (op, Instant::now()));
                entered = true;
            }
            entered
        });
        entered.then_some(ticket)
    }

    /// Counts one back.
    pub fn leave(&self, ticket: u64) {
        self.state.send_modify(|s| {
            s.out.remove(&ticket);
        });
    }

    /// Refuses every new one from now on.
    pub fn close(&self) {
        self.state.send_modify(|s| s.closed = true);
    }

    /// True once closed.
    pub fn is_closed(&self) -> bool {
        self.state.borrow().closed
    }

    /// How many are out.
    pub fn count(&self) -> usize {
        self.state.borrow().out.len()
    }

    /// The oldest one out: what a drain waits on.
    pub fn oldest(&self) -> Option<Held> {
        let state = self.state.borrow();
        state
            .out
            .values()
            .min_by_key(|(_, since)| *since)
            .map(|(op, since)| Held {
                op: (*op).to_owned(),
                age_ms: u64::try_from(since.elapsed().as_millis())
                    .unwrap_or(u64::MAX),
            })
    }

    /// Resolves once none is out. Cancel-safe.
    pub async fn drained(&self) {
        let mut rx = self.state.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = rx.wait_for(|s| s.out.is_empty()).await;
    }
}
