//! The versions asked of peers (`Want`, `WantDelta`) and not yet received,
//! with what each peer still owes us: a peer is asked for more only while
//! it owes less than a window, so that the wants of a large batch spread
//! over every peer that holds the files, the ones that received them a
//! moment ago included, instead of all going to the first one that
//! announced them.
//!
//! Owns: the requests and the per-peer sums. Must not: choose the peer
//! (`Engine::schedule` does).

use crate::wire::{Entry, NodeId, RelPath};
use std::collections::BTreeMap;

/// What a peer may owe us before it is asked for more: enough to keep a
/// LAN link busy while the next want travels.
pub(super) const WINDOW_FILES: u64 = 256;
pub(super) const WINDOW_BYTES: u64 = 8 * 1024 * 1024;
/// What a peer may owe us before it is asked for a file that another
/// connected peer lacks too: so little that the rest is asked for once a
/// peer that received it a moment ago can offer it, and one source's
/// uplink does not carry each small file to every receiver (W6: seven
/// receivers made the source send four times the content).
pub(super) const SHARED_WINDOW_FILES: u64 = 32;

/// A version asked of one peer and not yet received.
#[derive(Debug, Clone)]
pub(super) struct Inflight {
    pub peer: NodeId,
    pub entry: Entry,
    /// Its content has arrived (it is being made durable): the peer owes
    /// it no longer.
    arrived: bool,
}

impl Inflight {
    pub fn new(peer: NodeId, entry: Entry) -> Inflight {
        Inflight {
            peer,
            entry,
            arrived: false,
        }
    }
}

/// Files and bytes a peer was asked for and has not sent yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Owed {
    pub files: u64,
    pub bytes: u64,
}

impl Owed {
    /// Under half the window: worth a new want.
    pub fn open(&self) -> bool {
        self.files <= WINDOW_FILES / 2 && self.bytes <= WINDOW_BYTES / 2
    }

    /// The window is full.
    pub fn full(&self) -> bool {
        self.files >= WINDOW_FILES || self.bytes >= WINDOW_BYTES
    }

    /// Room for a file another connected peer lacks too.
    pub fn room_for_shared(&self) -> bool {
        self.files < SHARED_WINDOW_FILES
    }
}

#[derive(Debug, Default)]
pub(super) struct Requests {
    by_path: BTreeMap<RelPath, Inflight>,
    owed: BTreeMap<NodeId, Owed>,
}

impl Requests {
    pub fn get(&self, path: &RelPath) -> Option<&Inflight> {
        self.by_path.get(path)
    }

    pub fn contains_key(&self, path: &RelPath) -> bool {
        self.by_path.contains_key(path)
    }

    pub fn values(&self) -> impl Iterator<Item = &Inflight> {
        self.by_path.values()
    }

    /// What `peer` owes us now.
    pub fn owed(&self, peer: NodeId) -> Owed {
        self.owed.get(&peer).copied().unwrap_or_default()
    }

    pub fn insert(&mut self, path: RelPath, inflight: Inflight) {
        self.remove(&path);
        self.owe(&inflight, true);
        self.by_path.insert(path, inflight);
    }

    pub fn remove(&mut self, path: &RelPath) -> Option<Inflight> {
        let gone = self.by_path.remove(path)?;
        self.owe(&gone, false);
        Some(gone)
    }

    /// The content asked for `path` has arrived from its peer.
    pub fn arrived(&mut self, path: &RelPath) {
        let Some(i) = self.by_path.get(path).filter(|i| !i.arrived).cloned() else {
            return;
        };
        self.owe(&i, false);
        if let Some(i) = self.by_path.get_mut(path) {
            i.arrived = true;
        }
    }

    fn owe(&mut self, i: &Inflight, add: bool) {
        if i.arrived {
            return;
        }
        let owed = self.owed.entry(i.peer).or_default();
        if add {
            owed.files += 1;
            owed.bytes += i.entry.size;
        } else {
            owed.files = owed.files.saturating_sub(1);
            owed.bytes = owed.bytes.saturating_sub(i.entry.size);
        }
        if *owed == Owed::default() {
            self.owed.remove(&i.peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_owes_what_was_asked_until_it_arrives_or_the_request_goes() {
        let mut r = Requests::default();
        let (a, b) = (NodeId(1), NodeId(2));
        let e = |path: &str, size: u64| Entry {
            size,
            ..crate::wire::testing::file(path, 1, b"x")
        };
        r.insert(RelPath::new("x").unwrap(), Inflight::new(a, e("x", 100)));
        r.insert(RelPath::new("y").unwrap(), Inflight::new(a, e("y", 50)));
        r.insert(RelPath::new("z").unwrap(), Inflight::new(b, e("z", 7)));
        assert_eq!(r.owed(a), Owed { files: 2, bytes: 150 });
        r.arrived(&RelPath::new("x").unwrap());
        r.arrived(&RelPath::new("x").unwrap());
        assert_eq!(r.owed(a), Owed { files: 1, bytes: 50 });
        // An arrived request going costs nothing more; asked again of b, y
        // moves to b's account.
        r.remove(&RelPath::new("x").unwrap());
        r.insert(RelPath::new("y").unwrap(), Inflight::new(b, e("y", 50)));
        assert_eq!((r.owed(a), r.owed(b)), (Owed::default(), Owed { files: 2, bytes: 57 }));
        r.remove(&RelPath::new("y").unwrap());
        r.remove(&RelPath::new("z").unwrap());
        assert_eq!(r.owed(b), Owed::default());
        assert!(Owed::default().open() && !Owed::default().full());
        assert!(Owed {
            files: WINDOW_FILES,
            bytes: 0
        }
        .full());
    }
}
