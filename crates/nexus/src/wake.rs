//! The lifecycle's waits: each one ends at its poll period, or as soon
//! as the change it waits for is announced, whichever comes first.
//!
//! Announcements (`baton_datastore::Listener`) arrive on a connection of
//! their own, outside the drain fence; it is opened when the lifecycle
//! starts and closed for good before the `quiesced` mark. They are only
//! ever a reason to look again: every wait still ends at its period, so
//! an announcement lost (the connection dropped, a peer that does not
//! notify, a database without notifications) costs time, never safety.
//! A lost connection is reopened at the next wait.

use std::time::Duration;

use baton_datastore::{DataStore, EventKind, Listener};
use slog::{Logger, debug, warn};
use tokio::time::Instant;

/// The lifecycle's listener, if any.
pub(crate) struct Wakeups {
    ds: DataStore,
    log: Logger,
    listener: Option<Listener>,
    /// Whether to listen at all.
    enabled: bool,
    /// Closed for good (before the `quiesced` mark): never reopened.
    closed: bool,
}

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Woken {
    /// By an announcement of one of the awaited changes.
    Event(EventKind),
    /// At the end of the period.
    Period,
}

impl Wakeups {
    /// Listens if `enabled` and the datastore announces its changes.
    pub(crate) fn new(ds: DataStore, log: &Logger, enabled: bool) -> Wakeups {
        Wakeups {
            enabled: enabled && ds.notifies(),
            ds,
            log: log.clone(),
            listener: None,
            closed: false,
        }
    }

    /// Opens the listener if it should be open and is not; a failure
    /// leaves the waits polling until the next try.
    pub(crate) async fn open(&mut self) {
        if self.closed || self.listener.is_some() || !self.enabled {
            return;
        }
        match self.ds.listen().await {
            Ok(listener) => self.listener = Some(listener),
            Err(e) => warn!(self.log, "cannot listen for announcements; \
                waits poll until the next try"; "error" => %e),
        }
    }

    /// Waits for `period`, or until one of `kinds` is announced.
    pub(crate) async fn wait(
        &mut self,
        period: Duration,
        kinds: &[EventKind],
    ) -> Woken {
        // A zero period would spin: at least 1 ms.
        let deadline = Instant::now() + period.max(Duration::from_millis(1));
        // Opening may take a connection timeout; the period bounds it.
        let _ = tokio::time::timeout_at(deadline, self.open()).await;
        loop {
            let Some(listener) = &mut self.listener else {
                tokio::time::sleep_until(deadline).await;
                return Woken::Period;
            };
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return Woken::Period,
                event = listener.next() => match event {
                    Some(event) if kinds.contains(&event.kind)
                        || event.kind == EventKind::Unknown => {
                        debug!(self.log, "woken by an announcement";
                            "event" => %event.kind,
                            "nexus_id" => ?event.nexus_id);
                        return Woken::Event(event.kind);
                    }
                    Some(_) => {}
                    None => {
                        warn!(self.log, "the connection listening for \
                            announcements is gone; polling until it is \
                            reopened at the next wait");
                        self.listener = None;
                    }
                },
            }
        }
    }

    /// Closes the listener for good.
    pub(crate) fn close(&mut self) {
        self.closed = true;
        self.listener = None;
    }
}
