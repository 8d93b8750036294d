//! The instance's reports of itself, written every few seconds for
//! `baton status` on a connection outside the drain fence (see
//! `baton_datastore::Reporter`), so they go on while the pool drains.
//!
//! Only once the access check has let the instance use the database
//! (waiting for its record or the handoff, migrating, running,
//! quiescing) does it report; a refused instance never does. The
//! lifecycle closes the reporter for good before it marks itself
//! `quiesced`, waiting for a report in flight to finish, so no report
//! follows the mark.

use std::sync::Weak;
use std::time::Duration;

use baton_datastore::Reporter;
use slog::{Logger, warn};
use tokio::sync::Mutex;

use crate::{Inner, NexusState};

/// The reporter, and whether it was closed for good.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    closed: bool,
    reporter: Option<Reporter>,
}

/// The reporter of one instance, shared by its reporting task and its
/// lifecycle.
pub(crate) type SharedSlot = std::sync::Arc<Mutex<Slot>>;

/// Closes the reporter for good; returns once no report is in flight.
pub(crate) async fn close(slot: &SharedSlot) {
    let mut slot = slot.lock().await;
    slot.closed = true;
    slot.reporter = None;
}

/// The states in which the instance may report.
fn reportable(state: &NexusState) -> bool {
    matches!(
        state,
        NexusState::WaitingForRecord
            | NexusState::WaitingForHandoff
            | NexusState::Migrating
            | NexusState::Running
            | NexusState::Quiescing { .. }
    )
}

/// Reports every `period` until the instance ends or the reporter is
/// closed (and samples the claims gauge as often).
pub(crate) async fn run(
    inner: Weak<Inner>,
    slot: SharedSlot,
    period: Duration,
    log: Logger,
    // Dropped when this task ends (or is aborted): `Nexus::release`
    // waits for that.
    _done: tokio::sync::watch::Sender<()>,
) {
    let Some(mut state) = inner.upgrade().map(|nexus| nexus.state.clone())
    else {
        return;
    };
    loop {
        let Some(nexus) = inner.upgrade() else { return };
        let status = crate::status_of(&nexus);
        let ds = nexus.ds.clone();
        drop(nexus);
        crate::metrics::claims_held(status.claims_held as usize);
        if status.state.is_final() {
            close(&slot).await;
            return;
        }
        if reportable(&status.state) {
            let mut slot = slot.lock().await;
            if slot.closed {
                return;
            }
            if slot.reporter.is_none() {
                match ds.reporter().await {
                    Ok(reporter) => slot.reporter = Some(reporter),
                    Err(e) => warn!(log, "cannot open the status reporter";
                        "error" => %e),
                }
            }
            if let Some(reporter) = &mut slot.reporter
                && let Err(e) = reporter.report(&status).await
            {
                if let baton_datastore::Error::Fenced { .. } = e {
                    // Its record says quiesced: nothing more to say.
                    warn!(log, "status reports stop"; "reason" => %e);
                    slot.closed = true;
                    slot.reporter = None;
                    return;
                }
                warn!(log, "cannot write a status report"; "error" => %e);
                // A fresh connection next time.
                slot.reporter = None;
            }
        }
        // The next report is due after `period`, but an end is seen at
        // once, so a stopping Nexus does not wait a period for this task.
        let ended = async {
            if state.wait_for(NexusState::is_final).await.is_err() {
                // A killed lifecycle never ends its state: report on.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = tokio::time::sleep(period.max(Duration::from_millis(1))) => {}
            () = ended => {}
        }
    }
}
