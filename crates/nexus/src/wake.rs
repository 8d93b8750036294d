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
//!
//! Any role that can connect can send a notification (PostgreSQL checks
//! no privilege for `NOTIFY`), so a wake-up proves nothing: the caller
//! re-reads the state it waits for and waits on if nothing changed, and
//! here announcements are taken in batches, a burst costing one wake-up,
//! and wake-ups are rationed by a bucket of [`WAKE_BURST`] tokens that
//! refills one per [`RECHECK_GAP`]: the few real changes of a handoff,
//! a few milliseconds apart, each wake a waiter at once, while a flood of
//! forged notifications costs it at most 40 re-reads a second, and no
//! write.

use std::time::Duration;

/// The shortest time between two wake-ups by announcements: however
/// many arrive, a waiter looks again at most 40 times a second. Short
/// beside a handoff's own steps, so the real changes of one handoff,
/// which come a few milliseconds apart, each still wake it at once or
/// are seen by the look the one before caused.
pub(crate) const RECHECK_GAP: Duration = Duration::from_millis(25);

/// Wake-ups a waiter may take back to back before [`RECHECK_GAP`]
/// rations them: more than one waiter sees in a whole handoff (its peers'
/// drained and quiesced marks, the handoff, a target set), so a real
/// handoff is never slowed by the ration (a strict gap cost it 25 ms at
/// quiesce step 3, where two peers' marks arrive together).
pub(crate) const WAKE_BURST: f64 = 8.0;

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
    /// Wake-ups that may be taken now (at most [`WAKE_BURST`]), as of
    /// `refilled`.
    tokens: f64,
    refilled: Instant,
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
            tokens: WAKE_BURST,
            refilled: Instant::now(),
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
        self.wait_until(deadline, kinds).await
    }

    /// Waits until `deadline`, or until one of `kinds` is announced; once
    /// the burst of wake-ups is spent, not sooner than its ration allows
    /// (one per [`RECHECK_GAP`]), announcements received meanwhile taken
    /// with it (the caller's next look sees what they announced).
    pub(crate) async fn wait_until(
        &mut self,
        deadline: Instant,
        kinds: &[EventKind],
    ) -> Woken {
        // Opening may take a connection timeout; the deadline bounds it.
        let _ = tokio::time::timeout_at(deadline, self.open()).await;
        loop {
            let Some(listener) = &mut self.listener else {
                tokio::time::sleep_until(deadline).await;
                return Woken::Period;
            };
            let batch = tokio::select! {
                () = tokio::time::sleep_until(deadline) => return Woken::Period,
                batch = listener.next_batch() => batch,
            };
            let Some(batch) = batch else {
                warn!(
                    self.log,
                    "the connection listening for \
                    announcements is gone; polling until it is \
                    reopened at the next wait"
                );
                self.listener = None;
                continue;
            };
            let Some(event) = batch.iter().find(|e| {
                kinds.contains(&e.kind) || e.kind == EventKind::Unknown
            }) else {
                continue;
            };
            let kind = event.kind;
            debug!(self.log, "woken by an announcement";
                "event" => %kind, "nexus_id" => ?event.nexus_id,
                "batch" => batch.len());
            let now = Instant::now();
            let refill =
                (now - self.refilled).as_secs_f64() / RECHECK_GAP.as_secs_f64();
            self.tokens = (self.tokens + refill).min(WAKE_BURST);
            self.refilled = now;
            if self.tokens < 1.0 {
                let earliest = now + RECHECK_GAP.mul_f64(1.0 - self.tokens);
                if earliest >= deadline {
                    tokio::time::sleep_until(deadline).await;
                    return Woken::Period;
                }
                tokio::time::sleep_until(earliest).await;
                // What arrived meanwhile committed before the caller's
                // next look, which sees it.
                listener.skip_received();
                self.tokens = 1.0;
                self.refilled = Instant::now();
            }
            self.tokens -= 1.0;
            return Woken::Event(kind);
        }
    }

    /// Closes the listener for good.
    pub(crate) fn close(&mut self) {
        self.closed = true;
        self.listener = None;
    }
}
