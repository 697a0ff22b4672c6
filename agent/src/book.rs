//! The agent's record of its captures: which one runs (one at a time), the
//! latest update of each, and the queue of updates for the coordinator.
//!
//! The link may be down while a capture moves on; the book keeps each
//! capture's latest update so the next hello can carry it (`in_flight`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use rankline_proto::{RankState, RankUpdate};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// How long a finished capture's final update is repeated in hellos, so one
/// that ended during an outage still reaches the coordinator.
pub(crate) const FINISHED_RETENTION: Duration = Duration::from_secs(600);

/// Why a start was not taken.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// Another capture runs here.
    Busy(String),
    /// This capture is already known (a repeated start): its latest update.
    Known(Box<RankUpdate>),
}

#[derive(Debug)]
struct Tracked {
    update: RankUpdate,
    finished_at: Option<Instant>,
}

#[derive(Debug, Default)]
struct Inner {
    active: Option<(String, watch::Sender<bool>)>,
    captures: BTreeMap<String, Tracked>,
}

#[derive(Debug)]
pub struct CaptureBook {
    inner: Mutex<Inner>,
    outbox: mpsc::UnboundedSender<RankUpdate>,
}

impl CaptureBook {
    /// A book and the receiving end of its update queue (for the link).
    pub fn new() -> (CaptureBook, mpsc::UnboundedReceiver<RankUpdate>) {
        let (outbox, receiver) = mpsc::unbounded_channel();
        let book = CaptureBook {
            inner: Mutex::new(Inner::default()),
            outbox,
        };
        (book, receiver)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes `profile_id` the running capture; its receiver turns `true`
    /// when the coordinator asks it to stop.
    pub fn claim(&self, profile_id: &str) -> Result<watch::Receiver<bool>, Refusal> {
        let mut inner = self.lock();
        if let Some(known) = inner.captures.get(profile_id) {
            return Err(Refusal::Known(Box::new(known.update.clone())));
        }
        if let Some((running, _)) = &inner.active {
            return Err(Refusal::Busy(running.clone()));
        }
        let (stop, stopped) = watch::channel(false);
        inner.active = Some((profile_id.to_string(), stop));
        Ok(stopped)
    }

    /// Asks the running capture to stop; false when `profile_id` is not it.
    pub fn stop(&self, profile_id: &str) -> bool {
        match &self.lock().active {
            Some((running, stop)) if running == profile_id => {
                stop.send_replace(true);
                true
            }
            _ => false,
        }
    }

    /// Records an update and queues it for the coordinator. A final update
    /// frees the agent for the next capture.
    pub fn publish(&self, update: RankUpdate) {
        {
            let mut inner = self.lock();
            let finished = RankState::try_from(update.state).is_ok_and(RankState::is_final);
            if finished
                && inner
                    .active
                    .as_ref()
                    .is_some_and(|(id, _)| *id == update.profile_id)
            {
                inner.active = None;
            }
            inner.captures.insert(
                update.profile_id.clone(),
                Tracked {
                    update: update.clone(),
                    finished_at: finished.then(Instant::now),
                },
            );
        }
        // The receiver lives as long as the agent; a send after it is gone is moot.
        let _ = self.outbox.send(update);
    }

    /// Frees the agent for the next capture while `profile_id` goes on in
    /// the background (its upload); its updates keep flowing.
    pub fn release(&self, profile_id: &str) {
        let mut inner = self.lock();
        if inner
            .active
            .as_ref()
            .is_some_and(|(id, _)| id == profile_id)
        {
            inner.active = None;
        }
    }

    /// Whether `profile_id` is running (claimed, even before its first
    /// update) or recently finished here.
    pub fn knows(&self, profile_id: &str) -> bool {
        let inner = self.lock();
        inner.captures.contains_key(profile_id)
            || inner
                .active
                .as_ref()
                .is_some_and(|(id, _)| id == profile_id)
    }

    /// Sends an update again without changing the record.
    pub fn resend(&self, update: RankUpdate) {
        let _ = self.outbox.send(update);
    }

    /// The running capture's id, or "".
    pub fn active_id(&self) -> String {
        self.lock()
            .active
            .as_ref()
            .map(|(id, _)| id.clone())
            .unwrap_or_default()
    }

    /// The latest update of every capture still running or recently
    /// finished, for a hello. Forgets captures finished long ago.
    pub fn in_flight(&self) -> Vec<RankUpdate> {
        let mut inner = self.lock();
        inner.captures.retain(|_, tracked| {
            tracked
                .finished_at
                .is_none_or(|at| at.elapsed() < FINISHED_RETENTION)
        });
        inner
            .captures
            .values()
            .map(|tracked| tracked.update.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(id: &str, state: RankState) -> RankUpdate {
        RankUpdate {
            profile_id: id.into(),
            state: state as i32,
            ..RankUpdate::default()
        }
    }

    #[test]
    fn one_capture_at_a_time_and_final_frees() {
        let (book, mut outbox) = CaptureBook::new();
        let stopped = book.claim("a").unwrap();
        assert_eq!(book.claim("b").err(), Some(Refusal::Busy("a".into())));
        assert_eq!(book.active_id(), "a");

        assert!(book.stop("a"));
        assert!(*stopped.borrow());
        assert!(!book.stop("b"));

        book.publish(update("a", RankState::Armed));
        assert!(
            matches!(book.claim("a"), Err(Refusal::Known(_))),
            "a repeated start"
        );
        book.publish(update("a", RankState::Ok));
        assert_eq!(book.active_id(), "");
        book.claim("b").unwrap();
        book.publish(update("b", RankState::Uploading));
        book.release("b");
        assert_eq!(book.active_id(), "", "an upload does not hold the agent");
        assert!(book.knows("b") && !book.knows("c"));

        assert_eq!(outbox.try_recv().unwrap().state, RankState::Armed as i32);
        assert_eq!(outbox.try_recv().unwrap().state, RankState::Ok as i32);
        let in_flight: Vec<_> = book.in_flight().into_iter().map(|u| u.profile_id).collect();
        assert_eq!(
            in_flight,
            ["a", "b"],
            "a finished capture and an upload are still reported"
        );
    }
}
