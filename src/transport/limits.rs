//! Resource limits on what other hosts can make a node hold: peers,
//! connections still in their handshake (a slot per handshake), the count
//! of the jobs a peer's requests queue for its writer (the limits on them
//! are the engine's: `engine/back_pressure.rs`), and the log lines
//! refusals cost. (Sizes of frames, messages and deltas are capped in `wire`,
//! `conn` and `delta`; time limits are in `conn`.)
//!
//! Owns: the numbers and the slot counter. Must not: do IO.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Most connected peers. Each may hold one frame being read (up to
/// `wire::MAX_FRAME`, 17 MiB) and one delta segment being rebuilt (4 MiB),
/// so this bounds what peers can make a node allocate to about 1.3 GiB in
/// the worst case, far above any LAN cluster this tool is meant for.
pub const MAX_PEERS: usize = 64;
/// Most connections between accept (or dial) and a finished hello. Before
/// the hello a connection may hold at most a `conn::MAX_HELLO` frame, and
/// `conn::HANDSHAKE_TIMEOUT` ends it, so a flood of idle connections costs
/// at most this many small tasks; further connections are closed at once.
pub const MAX_HANDSHAKES: usize = 32;
/// Most frames read from all peers together and not yet handled by the
/// node loop. Readers wait for a place (and TCP holds the sender back), so
/// a peer streaming 1 MiB chunks faster than the disk takes them costs a
/// few MiB, not the event queue's worth (256 chunks: a receiver's memory
/// peaked at 200 MiB in `just bench` before this).
pub const MAX_FRAMES_IN_FLIGHT: usize = 8;

/// A counter of handshakes in progress, shared with the handshake tasks.
#[derive(Debug, Clone, Default)]
pub struct HandshakeSlots(Arc<AtomicUsize>);

impl HandshakeSlots {
    /// Take a slot if fewer than `max` are taken; dropping the slot frees it.
    pub fn try_take(&self, max: usize) -> Option<Slot> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Slot(self.0.clone()))
    }

    pub fn in_use(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// One handshake in progress.
#[derive(Debug)]
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What waits in one peer writer's queue: counted by the node when it
/// queues a job, uncounted by the writer when it is done with it.
#[derive(Debug, Default)]
pub struct Queued {
    pub jobs: AtomicUsize,
    pub signature_bytes: AtomicUsize,
}

impl Queued {
    pub fn add(&self, signature_bytes: usize) -> usize {
        self.signature_bytes.fetch_add(signature_bytes, Ordering::AcqRel);
        self.jobs.fetch_add(1, Ordering::AcqRel) + 1
    }

    pub fn done(&self, signature_bytes: usize) {
        self.signature_bytes.fetch_sub(signature_bytes, Ordering::AcqRel);
        self.jobs.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Refusal warnings per `WARN_WINDOW`; past that they go to the debug log,
/// so a host opening connections in a loop cannot flood the log.
pub const WARNS_PER_WINDOW: u32 = 10;
pub const WARN_WINDOW: Duration = Duration::from_secs(10);

/// Counts warnings per window, shared by the handshake tasks.
#[derive(Debug, Clone, Default)]
pub struct WarnBudget(Arc<Mutex<WarnWindow>>);

#[derive(Debug, Default)]
struct WarnWindow {
    start: Option<SystemTime>,
    used: u32,
    suppressed: u64,
}

impl WarnBudget {
    /// `Some(n)` if a warning may be logged now (`n` were suppressed since
    /// the last one), `None` if it should go to the debug log.
    pub fn allow(&self, now: SystemTime) -> Option<u64> {
        let mut w = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let expired = w.start.is_none_or(|s| now.duration_since(s).map_or(true, |d| d >= WARN_WINDOW));
        if expired {
            w.start = Some(now);
            w.used = 0;
        }
        if w.used < WARNS_PER_WINDOW {
            w.used += 1;
            Some(std::mem::take(&mut w.suppressed))
        } else {
            w.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_and_freed_on_drop() {
        let slots = HandshakeSlots::default();
        let a = slots.try_take(2).expect("first slot");
        let b = slots.try_take(2).expect("second slot");
        assert!(slots.try_take(2).is_none(), "a third slot past the cap");
        drop(a);
        assert_eq!(slots.in_use(), 1);
        let _c = slots.try_take(2).expect("a freed slot is reusable");
        drop(b);
        assert_eq!(slots.in_use(), 1);
    }

    #[test]
    fn warnings_are_budgeted_per_window() {
        let budget = WarnBudget::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        for _ in 0..WARNS_PER_WINDOW {
            assert_eq!(budget.allow(t0), Some(0));
        }
        assert_eq!(budget.allow(t0 + Duration::from_secs(1)), None);
        assert_eq!(budget.allow(t0 + Duration::from_secs(2)), None);
        // A new window: the next warning reports how many were held back.
        assert_eq!(budget.allow(t0 + WARN_WINDOW), Some(2));
        assert_eq!(budget.allow(t0 + WARN_WINDOW), Some(0));
    }
}
