//! Work guards: the service's in-flight work that quiesce step 2 waits
//! for (sagas, requests, jobs that are more than one database call),
//! counted with the same closable [`Tally`] as the datastore's claims.

use std::sync::Arc;

use baton_datastore::Tally;

/// Counts work in flight and refuses new work once closed.
pub(crate) type WorkTracker = Tally;

/// A guard for new work, or `None` once the tracker is closed.
pub(crate) fn enter(
    tracker: &Arc<WorkTracker>,
    op: &'static str,
) -> Option<WorkGuard> {
    let ticket = tracker.enter(op)?;
    crate::metrics::work_in_flight(tracker.count());
    Some(WorkGuard {
        inner: Arc::new(Ticket {
            tracker: tracker.clone(),
            ticket,
            op,
        }),
    })
}

#[derive(Debug)]
struct Ticket {
    tracker: Arc<WorkTracker>,
    ticket: u64,
    op: &'static str,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.tracker.leave(self.ticket);
        crate::metrics::work_in_flight(self.tracker.count());
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
    inner: Arc<Ticket>,
}

impl WorkGuard {
    /// The operation named when the guard was taken.
    pub fn op(&self) -> &'static str {
        self.inner.op
    }
}
