//! The drain fence: a datastore can stop handing out connections and then
//! wait until every one it handed out is back.
//!
//! This is what makes "quiesced" a promise: the Nexus closes the fence,
//! waits for the count of outstanding claims to reach zero, and only then
//! writes `quiesced`, through a claim reserved for exactly that.

use std::sync::atomic::{AtomicBool, Ordering};

use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::bb8::PooledConnection;
use tokio::sync::watch;

use crate::Error;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct FenceState {
    closed: bool,
    outstanding: usize,
}

/// Counts claims and refuses new ones once closed.
#[derive(Debug)]
pub(crate) struct Fence {
    state: watch::Sender<FenceState>,
    reserved_taken: AtomicBool,
    /// Always true, except in the model test's deliberate bug.
    waits_for_drain: bool,
}

impl Fence {
    pub(crate) fn new(waits_for_drain: bool) -> Fence {
        Fence {
            state: watch::Sender::new(FenceState::default()),
            reserved_taken: AtomicBool::new(false),
            waits_for_drain,
        }
    }

    /// Counts a new claim, or refuses if closed.
    pub(crate) fn enter(&self) -> Result<(), Error> {
        let mut refused = false;
        self.state.send_modify(|s| {
            if s.closed {
                refused = true;
            } else {
                s.outstanding += 1;
            }
        });
        if refused {
            Err(Error::Quiesced)
        } else {
            Ok(())
        }
    }

    pub(crate) fn leave(&self) {
        self.state.send_modify(|s| s.outstanding -= 1);
    }

    pub(crate) fn close(&self) {
        self.state.send_modify(|s| s.closed = true);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state.borrow().closed
    }

    pub(crate) fn outstanding(&self) -> usize {
        self.state.borrow().outstanding
    }

    /// Resolves once every claim handed out has been released.
    pub(crate) async fn drained(&self) {
        let mut rx = self.state.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = rx.wait_for(|s| s.outstanding == 0).await;
    }

    /// The one claim allowed after closing: only once drained, only once.
    pub(crate) fn take_reserved(&self) -> Result<(), Error> {
        let state = *self.state.borrow();
        if !state.closed {
            return Err(Error::FenceNotDrained(
                "the datastore is not quiesced",
            ));
        }
        if state.outstanding != 0 && self.waits_for_drain {
            return Err(Error::FenceNotDrained("claims are still outstanding"));
        }
        if self.reserved_taken.swap(true, Ordering::SeqCst) {
            return Err(Error::FenceNotDrained("the reserved claim was used"));
        }
        Ok(())
    }
}

impl Fence {
    /// Gives the reserved claim back after a failed use, so that marking
    /// oneself `quiesced` can be tried again.
    pub(crate) fn return_reserved(&self) {
        self.reserved_taken.store(false, Ordering::SeqCst);
    }
}

/// A connection handed out under the fence; released on drop.
pub struct Claim<'a> {
    pub(crate) conn: PooledConnection<'a, AsyncPgConnection>,
    pub(crate) fence: &'a Fence,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.fence.leave();
    }
}

/// The connection reserved for writing one's own `quiesced` record.
pub struct QuiescedClaim<'a> {
    pub(crate) conn: PooledConnection<'a, AsyncPgConnection>,
}
