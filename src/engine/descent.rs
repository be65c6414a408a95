//! The digest descent: how two connected peers whose tree digests differ
//! while both are quiet find the paths that differ, folder by folder,
//! instead of sending each other their whole index.
//!
//! Each side descends on its own (both see the difference): it asks the
//! peer for the digests of a folder's children (`SubtreeQuery`), compares
//! them with its own, sends its own entries for each child that differs
//! (as `Update`s, which the peer takes where they win) and asks again
//! below each differing child it holds a subtree under. Since both sides
//! push their own versions of what differs, each gets the other's. The
//! cost is O(differences × depth) lookups and messages, not O(tree).
//!
//! A descent that finds something means a change was lost somewhere
//! (a bug, or a change behind dirsync's back): it is logged at info with
//! the paths' count, so it can be seen and looked into.

use super::repair::backoff;
use super::Engine;
use crate::wire::{ChildDigest, Entry, Hash, Message, NodeId, RelPath, MAX_ENTRIES};
use std::collections::BTreeMap;
use tracing::{debug, info};

/// How long two differing digests must stay unchanged before a descent.
const QUIET: i128 = 5 * SECOND;
/// The first wait between two descents with the same peer; it doubles.
const DESCENT_FIRST: i128 = 10 * SECOND;
const DESCENT_MAX: i128 = 600 * SECOND;
const SECOND: i128 = 1_000_000_000;

/// When to start a descent with one peer: its digest difference, and the
/// backoff while it stays.
#[derive(Debug, Default)]
pub(super) struct DescentSchedule {
    /// Our digest and the peer's, when first seen differing like this.
    seen: Option<(Hash, Hash, i128)>,
    /// No descent before this time.
    not_before: i128,
    /// Descents started since the digests last agreed.
    sent: u32,
}

impl Engine {
    /// Start a descent with `peer`, from the root.
    pub(super) fn descend(&mut self, peer: NodeId) {
        self.send(peer, Message::SubtreeQuery { dir: None });
    }

    /// Our children's digests under `dir`, for the peer.
    pub(super) fn answer_subtree_query(&mut self, peer: NodeId, dir: Option<RelPath>) {
        let children = self
            .child_digests(dir.as_ref())
            .map(|c| c.into_iter().map(|(name, digest)| ChildDigest { name, digest }).collect());
        self.send(peer, Message::Subtree { dir, children });
    }

    /// Our children's digests under `dir`.
    fn child_digests(&self, dir: Option<&RelPath>) -> Option<Vec<(String, Hash)>> {
        let live_dir = match dir {
            Some(d) => !self.ignored(d, crate::wire::Kind::Dir),
            None => true,
        };
        if live_dir {
            self.index.children(dir, MAX_ENTRIES)
        } else {
            Some(Vec::new())
        }
    }

    /// The peer's children's digests under `dir`: push ours where they
    /// differ, and go further down where we hold more.
    pub(super) fn handle_subtree(&mut self, peer: NodeId, dir: Option<RelPath>, theirs: Option<Vec<ChildDigest>>) {
        let (Some(theirs), Some(ours)) = (theirs, self.child_digests(dir.as_ref())) else {
            // Too many children to compare one by one: all of ours here.
            let pushed = self.push_under(peer, dir.as_ref());
            info!(%peer, dir = %show(dir.as_ref()), pushed, "digest descent: a folder too large to compare, all of it sent");
            return;
        };
        let theirs: BTreeMap<String, Hash> = theirs.into_iter().map(|c| (c.name, c.digest)).collect();
        let ours: BTreeMap<String, Hash> = ours.into_iter().collect();
        let mut names: Vec<&String> = ours.keys().chain(theirs.keys()).collect();
        names.sort();
        names.dedup();
        let mut differing = 0;
        let mut entries = Vec::new();
        let mut below = Vec::new();
        for name in names.into_iter().filter(|n| ours.get(*n) != theirs.get(*n)) {
            // A name that is no path here (a broken peer) is skipped.
            let Ok(path) = RelPath::child_of(dir.as_ref(), name) else {
                continue;
            };
            differing += 1;
            entries.extend(self.index.get(&path).filter(|e| !self.unsynced(&e.path, e.kind)));
            if self.index.under(Some(&path)).nth(1).is_some() {
                below.push(path);
            }
        }
        if differing > 0 {
            info!(%peer, dir = %show(dir.as_ref()), differing, "digest descent: paths differ from the peer's, sending ours");
        }
        self.push(peer, entries);
        for path in below {
            self.send(peer, Message::SubtreeQuery { dir: Some(path) });
        }
    }

    /// Send `peer` every entry we hold at and below `dir`; how many.
    fn push_under(&mut self, peer: NodeId, dir: Option<&RelPath>) -> usize {
        let entries: Vec<Entry> = self.index.under(dir).filter(|e| !self.unsynced(&e.path, e.kind)).collect();
        let n = entries.len();
        self.push(peer, entries);
        n
    }

    fn push(&mut self, peer: NodeId, entries: Vec<Entry>) {
        for part in entries.chunks(MAX_ENTRIES) {
            self.send(peer, Message::Update { entries: part.to_vec() });
        }
    }
}

fn show(dir: Option<&RelPath>) -> String {
    dir.map_or_else(|| "/".to_string(), |d| d.to_string())
}

impl Engine {
    /// Start a descent with each peer whose digest has differed from ours,
    /// both unchanged, for `QUIET`, while nothing is on its way between us;
    /// with backoff while the difference stays.
    pub(super) fn start_due_descents(&mut self) {
        let ours = self.tree_digest();
        let clock = self.clock;
        let mut due = Vec::new();
        for (id, p) in self.peers.iter_mut() {
            let r = &mut p.descent;
            let theirs = match p.digest {
                Some(d) if d != ours && p.index_done => d,
                _ => {
                    *r = DescentSchedule::default();
                    continue;
                }
            };
            match r.seen {
                Some((o, t, since)) if o == ours && t == theirs => {
                    if clock - since >= QUIET && clock >= r.not_before {
                        due.push(*id);
                    }
                }
                _ => r.seen = Some((ours, theirs, clock)),
            }
        }
        if due.is_empty() {
            return;
        }
        // Only now, and rarely: which peers something is on its way from
        // (a pass over every need, too much for every tick of a sync).
        let busy = self.busy_peers();
        due.retain(|id| !busy.contains(id));
        for peer in &due {
            if let Some(r) = self.peers.get_mut(peer).map(|p| &mut p.descent) {
                r.sent += 1;
                r.not_before = clock.saturating_add(backoff(DESCENT_FIRST, DESCENT_MAX, r.sent));
                r.seen = None;
            }
        }
        for peer in due {
            debug!(%peer, "tree digests differ while quiet: looking for the difference");
            self.descend(peer);
        }
    }
}
