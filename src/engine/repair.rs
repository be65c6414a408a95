//! Converging from state, not from events (rule 8). A message can be lost,
//! a write can fail, a race can keep a local version; none of these may
//! leave nodes different for good:
//!
//! - a version we failed to take is tried again with backoff (`Retry`)
//!   until it is taken or superseded, and counts as pending meanwhile;
//! - a file or link that appeared here lately is looked at again a moment later
//!   (a file written and renamed away at once must not stay live);
//! - peers whose tree digests differ once both are quiet look for the
//!   difference folder by folder (`descent.rs`), with backoff, and each
//!   takes what wins.

use super::index::{beats, same_version};
use super::{Command, Engine};
use crate::wire::{Entry, NodeId, RelPath};
use std::collections::BTreeSet;
use tracing::debug;

const SECOND: i128 = 1_000_000_000;
/// The first wait before a failed version is tried again; it doubles.
const RETRY_FIRST: i128 = SECOND;
const RETRY_MAX: i128 = 60 * SECOND;
/// How long after it appeared a path is looked at again.
const APPEARED_LATELY_AFTER: i128 = SECOND;
/// How long a path found gone waits before its deletion travels: longer
/// than an `rm -rf` of a folder takes to reach its marker, so that the
/// guard sees the marker gone before any deletion leaves (issue 24, case
/// 5: 1 to 38 of 300 deletions reached the peers first).
pub(super) const DELETE_HOLD: i128 = SECOND;

/// A version we failed to take, and when to try again.
#[derive(Debug, Clone)]
pub(super) struct Retry {
    pub entry: Entry,
    /// The peer it came from, and every peer known to hold it.
    pub peer: NodeId,
    sources: BTreeSet<NodeId>,
    attempts: u32,
    /// When to try again; `None` while a try is under way.
    due: Option<i128>,
    pub error: String,
}

/// What a failed version looks like in `dirsync status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryReport {
    pub path: RelPath,
    pub error: String,
    pub attempts: u32,
}

/// `first`, doubled `attempts - 1` times, at most `max`.
pub(super) fn backoff(first: i128, max: i128, attempts: u32) -> i128 {
    first.saturating_mul(1 << attempts.saturating_sub(1).min(20)).min(max)
}

/// How long after its `attempts`-th failed look an unreadable path is
/// looked at again.
pub(super) fn unreadable_backoff(attempts: u32) -> i128 {
    backoff(RETRY_FIRST, RETRY_MAX, attempts)
}

impl Engine {
    /// Taking `entry` from `peer` failed (`error`): try again later, unless
    /// a newer version is wanted already.
    pub(super) fn retry_later(&mut self, peer: NodeId, entry: Entry, error: String) {
        if self.wants.needs.get(&entry.path).is_some_and(|n| beats(&n.entry, &entry)) {
            return;
        }
        let mut sources = self.wants.needs.remove(&entry.path).map(|n| n.sources).unwrap_or_default();
        sources.insert(peer);
        if self.wants.inflight.get(&entry.path).is_some_and(|i| !beats(&i.entry, &entry)) {
            self.wants.inflight.remove(&entry.path);
        }
        if self.swarming.swarms.get(&entry.path).is_some_and(|s| !beats(&s.entry, &entry)) {
            self.end_swarm(&entry.path);
        }
        let attempts = match self.upkeep.retries.get(&entry.path) {
            Some(r) if same_version(&r.entry, &entry) => r.attempts + 1,
            _ => 1,
        };
        let wait = backoff(RETRY_FIRST, RETRY_MAX, attempts);
        debug!(path = %entry.path, attempts, wait_s = (wait / SECOND) as u64, "trying again later");
        let retry = Retry {
            peer,
            sources,
            attempts,
            due: Some(self.clock.saturating_add(wait)),
            error,
            entry,
        };
        self.upkeep.retries.insert(retry.entry.path.clone(), retry);
    }

    /// A deletion of `path` heard earlier that failed to apply here (a
    /// disk error): seen all the same, by us and by whoever made it.
    pub(super) fn failed_deletion(&self, path: &RelPath) -> Option<&Entry> {
        self.upkeep.retries.get(path).map(|r| &r.entry).filter(|t| t.deleted)
    }

    /// Versions being tried again, with the last error (for `dirsync status`).
    pub fn retrying(&self) -> Vec<RetryReport> {
        self.upkeep
            .retries
            .values()
            .map(|r| RetryReport {
                path: r.entry.path.clone(),
                error: r.error.clone(),
                attempts: r.attempts,
            })
            .collect()
    }

    /// Time passed (the node calls this once a second): the periodic
    /// jobs that are due (`timers.rs`), try failed versions again, look
    /// again at paths that appeared lately, tell peers our digest, and
    /// start a digest descent with peers whose digest differs
    /// (`descent.rs`).
    pub fn handle_tick(&mut self, now: i128) {
        self.clock = self.clock.max(now);
        self.timers_due();
        self.retry_due();
        self.remove_dirs_due();
        let clock = self.clock;
        let mut look = self.upkeep.appeared_lately_due(clock);
        look.extend(self.held_deletes_due());
        look.extend(self.upkeep.unreadable_due(clock));
        look.sort();
        look.dedup();
        if !look.is_empty() {
            self.commands.push(Command::Rescan { paths: look });
        }
        self.share_digest();
        self.start_due_descents();
        self.remember_progress();
        self.swarm_timeouts();
        if std::mem::take(&mut self.wants.deferred) {
            self.schedule();
        }
    }

    fn retry_due(&mut self) {
        let clock = self.clock;
        // A try under way whose need went (its sources left, or it was
        // unavailable): wait for a source to come back.
        for (path, r) in self.upkeep.retries.iter_mut() {
            if r.due.is_none() && !self.wants.needs.contains_key(path) {
                r.due = Some(clock.saturating_add(RETRY_MAX));
            }
        }
        let due: Vec<RelPath> = self
            .upkeep
            .retries
            .iter()
            .filter(|(_, r)| r.due.is_some_and(|d| d <= clock))
            .map(|(p, _)| p.clone())
            .collect();
        for path in due {
            let Some(r) = self.upkeep.retries.get_mut(&path) else { continue };
            let connected: Vec<NodeId> = r.sources.iter().copied().filter(|s| self.peers.contains_key(s)).collect();
            if connected.is_empty() {
                // Its sources come back with their index; look again later.
                r.due = Some(clock.saturating_add(RETRY_MAX));
                continue;
            }
            r.due = None;
            let entry = r.entry.clone();
            for peer in connected {
                self.handle_entries(peer, vec![entry.clone()]);
            }
            // Already here, or superseded meanwhile: nothing to try.
            if !self.wants.needs.contains_key(&path) && !self.commands.iter().any(|c| touches(c, &path)) {
                self.upkeep.retries.remove(&path);
            }
        }
        self.schedule();
    }

    /// Folder `dir`, deleted and emptied, could not be removed (`error`: a
    /// read-only disk): try again later (found by the workload, faults
    /// seed 7200021728: it stayed behind for good).
    pub fn handle_dir_kept(&mut self, dir: RelPath, error: String) {
        debug!(path = %dir, %error, "an emptied folder could not be removed; trying again later");
        self.upkeep.dirs_to_remove.insert(dir, self.clock.saturating_add(RETRY_FIRST));
    }

    /// Abandoned temp files were removed from the folders `dirs`: a deleted
    /// folder kept only for what it held goes now if it is empty (a temp
    /// file the user moved into a folder a peer then deleted kept it; found
    /// by the simulation, faults seed 5000030).
    pub fn handle_temp_removed(&mut self, dirs: Vec<RelPath>) {
        for dir in dirs {
            if self.index.get(&dir).is_some_and(|e| e.deleted) {
                self.remove_container(&dir);
            }
        }
    }

    /// Emptied folders whose removal failed, due again.
    fn remove_dirs_due(&mut self) {
        let clock = self.clock;
        let due: Vec<RelPath> = self
            .upkeep
            .dirs_to_remove
            .iter()
            .filter(|(_, t)| **t <= clock)
            .map(|(p, _)| p.clone())
            .collect();
        for dir in due {
            self.upkeep.dirs_to_remove.remove(&dir);
            if self.index.get(&dir).is_some_and(|e| e.deleted) {
                self.remove_container(&dir);
            }
        }
    }

    /// Paths found gone a moment ago, due for another look: it also
    /// checks DIR and its marker, and only then do their deletions travel.
    fn held_deletes_due(&self) -> Vec<RelPath> {
        if self.may_hold_moved_content() {
            // The unreadable paths are looked at again by themselves.
            return Vec::new();
        }
        let clock = self.clock;
        self.upkeep
            .held_deletes
            .iter()
            .filter(|(_, t)| **t + DELETE_HOLD <= clock)
            .map(|(p, _)| p.clone())
            .collect()
    }
}

impl super::Upkeep {
    /// The paths that appeared at least `APPEARED_LATELY_AFTER` before
    /// `clock`, due for their one more look (and no longer tracked).
    pub(super) fn appeared_lately_due(&mut self, clock: i128) -> Vec<RelPath> {
        let due: Vec<RelPath> = self
            .appeared_lately
            .iter()
            .filter(|(_, t)| **t + APPEARED_LATELY_AFTER <= clock)
            .map(|(p, _)| p.clone())
            .collect();
        for p in &due {
            self.appeared_lately.remove(p);
        }
        due
    }

    /// Unreadable paths due for another look at `clock` (a look that reads
    /// them, or finds them gone, ends their standing; one that fails again
    /// doubles the wait, up to a minute). Each is due again after the wait
    /// its next failure would bring, so that a look that never comes back
    /// does not make it due at every tick.
    pub(super) fn unreadable_due(&mut self, clock: i128) -> Vec<RelPath> {
        let due: Vec<RelPath> = self
            .unreadable
            .iter()
            .filter(|(_, (t, _))| *t <= clock)
            .map(|(p, _)| p.clone())
            .collect();
        for p in &due {
            if let Some((t, attempts)) = self.unreadable.get_mut(p) {
                *t = clock.saturating_add(unreadable_backoff(*attempts + 1));
            }
        }
        due
    }
}

/// True if `cmd` is about to change or ask for `path`.
fn touches(cmd: &Command, path: &RelPath) -> bool {
    match cmd {
        Command::Apply { action, .. } => &action.entry().path == path,
        Command::RequestDelta { want, .. } | Command::StartPieces { entry: want, .. } => &want.path == path,
        Command::Send {
            msg: crate::wire::Message::Want { files },
            ..
        } => files.iter().any(|f| &f.path == path),
        _ => false,
    }
}

#[cfg(test)]
mod upkeep_tests {
    use super::super::Upkeep;
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    #[test]
    fn a_path_that_appeared_is_due_once_a_second_later() {
        let mut u = Upkeep::default();
        u.appeared_lately.insert(p("new"), 10 * SECOND);
        u.appeared_lately.insert(p("newer"), 10 * SECOND + SECOND / 2);
        assert_eq!(u.appeared_lately_due(10 * SECOND + SECOND / 2), Vec::<RelPath>::new());
        assert_eq!(u.appeared_lately_due(11 * SECOND), vec![p("new")]);
        assert_eq!(u.appeared_lately_due(12 * SECOND), vec![p("newer")]);
        assert_eq!(u.appeared_lately_due(60 * SECOND), Vec::<RelPath>::new(), "each once");
    }

    #[test]
    fn an_unreadable_path_no_look_answers_is_due_with_backoff_not_every_tick() {
        let mut u = Upkeep::default();
        // First failed look at 0: due after 1 s.
        u.unreadable.insert(p("locked"), (SECOND, 1));
        let due_at: Vec<i128> = (0..=10).filter(|t| !u.unreadable_due(t * SECOND).is_empty()).collect();
        // Asked at 1 s; no look came back, so the next wait (2 s) runs
        // from then: 3 s, then 5 s, 7 s, 9 s.
        assert_eq!(due_at, [1, 3, 5, 7, 9]);
    }
}
