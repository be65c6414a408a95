//! The node's periodic work, timed by the clock `handle_tick` brings: a
//! look at the whole tree every rescan interval (and each tick while not
//! syncing, to see DIR come back), the index saved every `SAVE_EVERY`, and
//! the trash pruned every `PRUNE_EVERY`.
//!
//! Owns: the three schedules, as commands (`RescanTree`, `SweepTemp`,
//! `SaveIndex`, `PruneTrash`). Must not: look, save or prune itself (the
//! node does each when told).

use super::{Command, Engine};

const SECOND: i128 = 1_000_000_000;
/// How often the index's changes are committed, at most 2 s after they
/// were made (a received file's version is durable before its rename
/// anyway: the install journal; a local change is committed with its
/// look).
const SAVE_EVERY: i128 = 2 * SECOND;
/// How often the trash drops what is older than `--trash-days`.
const PRUNE_EVERY: i128 = 3600 * SECOND;

/// How often each periodic job runs and when it last ran (ns).
#[derive(Debug, Clone)]
pub(super) struct Timers {
    rescan_every: i128,
    save_every: i128,
    prune_every: i128,
    last_rescan: i128,
    last_save: i128,
    last_prune: i128,
}

impl Timers {
    pub(super) fn new(start: i128, rescan_every: i128) -> Timers {
        Timers {
            rescan_every,
            save_every: SAVE_EVERY,
            prune_every: PRUNE_EVERY,
            last_rescan: start,
            last_save: start,
            last_prune: start,
        }
    }

    /// No periodic job (an engine its tests drive; the node starts them
    /// with `Engine::with_timers`). A suspended engine still asks for its
    /// look each tick.
    pub(super) fn off() -> Timers {
        Timers {
            rescan_every: i128::MAX,
            save_every: i128::MAX,
            prune_every: i128::MAX,
            last_rescan: 0,
            last_save: 0,
            last_prune: 0,
        }
    }
}

/// Whether `every` has passed since `*last` by `now`; if so, `*last` is now.
fn due(last: &mut i128, every: i128, now: i128) -> bool {
    let is_due = now.saturating_sub(*last) >= every;
    if is_due {
        *last = now;
    }
    is_due
}

impl Engine {
    /// The periodic jobs due at the clock's time.
    pub(super) fn timers_due(&mut self) {
        let now = self.clock;
        let t = &mut self.timers;
        if self.suspended.is_some() {
            // Not syncing: look every tick whether DIR is back.
            t.last_rescan = now;
            self.commands.push(Command::RescanTree);
        } else if due(&mut t.last_rescan, t.rescan_every, now) {
            self.commands.push(Command::RescanTree);
            self.commands.push(Command::SweepTemp);
        }
        if due(&mut t.last_save, t.save_every, now) {
            self.commands.push(Command::SaveIndex);
        }
        if due(&mut t.last_prune, t.prune_every, now) {
            self.commands.push(Command::PruneTrash);
        }
    }
}
