//! Work guards: the service's in-flight work that quiesce step 2 waits
//! for (sagas, requests, jobs that are more than one database call).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

#[derive(Debug, Default)]
struct WorkState {
    closed: bool,
    out: BTreeMap<u64, (&'static str, Instant)>,
}

/// Counts work in flight and refuses new work once closed.
#[derive(Debug)]
pub(crate) struct WorkTracker {
    state: watch::Sender<WorkState>,
    next: AtomicU64,
}

/// The oldest unit of work or claim still out, for the status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Oldest {
    /// The operation named when it was taken.
    pub op: &'static str,
    /// How long it has been out, in milliseconds.
    pub age_ms: u64,
}

impl WorkTracker {
    pub(crate) fn new() -> Arc<WorkTracker> {
        Arc::new(WorkTracker {
            state: watch::Sender::new(WorkState::default()),
            next: AtomicU64::new(0),
        })
    }

    /// A guard for new work, or `None` once closed.
    pub(crate) fn enter(
        self: &Arc<Self>,
        op: &'static str,
    ) -> Option<WorkGuard> {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        let mut entered = false;
        self.state.send_if_modified(|s| {
            if !s.closed {
                s.out.insert(ticket, (op, Instant::now()));
                crate::metrics::work_in_flight(s.out.len());
                entered = true;
            }
            entered
        });
        entered.then(|| WorkGuard {
            inner: Arc::new(Held {
                tracker: self.clone(),
                ticket,
                op,
            }),
        })
    }

    pub(crate) fn close(&self) {
        self.state.send_modify(|s| s.closed = true);
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.state.borrow().out.len()
    }

    pub(crate) fn oldest(&self) -> Option<Oldest> {
        let state = self.state.borrow();
        state
            .out
            .values()
            .min_by_key(|(_, since)| *since)
            .map(|(op, since)| Oldest {
                op,
                age_ms: millis(since.elapsed()),
            })
    }

    /// Resolves once no work is in flight.
    pub(crate) async fn idle(&self) {
        let mut rx = self.state.subscribe();
        // The sender lives as long as `self`.
        let _ = rx.wait_for(|s| s.out.is_empty()).await;
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug)]
struct Held {
    tracker: Arc<WorkTracker>,
    ticket: u64,
    op: &'static str,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.tracker.state.send_modify(|s| {
            s.out.remove(&self.ticket);
            crate::metrics::work_in_flight(s.out.len());
        });
    }
}

/// One unit of the service's in-flight work, counted until the last
/// clone is dropped. Quiesce step 2 waits for every guard.
///
/// It is owned and cloneable: hand a clone to each task that works on
/// the same unit (the steps of a saga); the work ends when all are gone.
/// Taking a guard is refused from quiesce step 1 on; clones of a guard
/// already taken are not (that work is already in flight).
#[derive(Clone, Debug)]
pub struct WorkGuard {
    inner: Arc<Held>,
}

impl WorkGuard {
    /// The operation named when the guard was taken.
    pub fn op(&self) -> &'static str {
        self.inner.op
    }
}
