//! The sync state machine: decides what to ask for, what to send and what
//! to change on disk. No IO, no clock, no randomness: every input arrives
//! through a `handle_*` call (with `now` where time matters), and every
//! decision leaves as a `Command` from `take_commands`.
//!
//! The model is announce-then-pull, as in Syncthing. On connect each side
//! sends its whole index; afterwards every change (local, or applied from a
//! peer) goes to every peer as an `Update`. A node compares each entry it
//! hears with its own index and, where the peer's version wins, changes its
//! disk: deletions and directories at once, renames and copies from local
//! content when a file with the same hash is here, and otherwise by asking
//! one peer that has the version for it (`Want`, batched, or `WantDelta`
//! with a signature when an older copy is here to diff against). Asking one
//! source per path means a node joining a cluster of three receives each
//! file once, not three times.
//!
//! Every entry carries a version vector (`crate::version`). `index::beats`
//! still picks the winner; the vectors tell whether the two versions were
//! concurrent, and then: the losing bytes of a live file are kept as a
//! conflict copy (`crate::conflict`) before they are replaced, and an edit
//! beats a delete that did not see it (the rules: docs/CONFLICTS.md).

mod safety;
mod types;

#[cfg(test)]
mod tests;

pub use types::{Action, Command, DirState, Observed, Scan};

use crate::conflict::conflict_entry;
use crate::delta::DELTA_MIN_SIZE;
use crate::ignore_rules::IgnoreRules;
use crate::index::{beats, same_version, wins_over, Index};
use crate::version::Vector;
use crate::wire::{Entry, Hash, Kind, Message, NodeId, RelPath, WantFile, MAX_ENTRIES};
use safety::{loses_concurrently, resurrection};
use std::collections::{BTreeMap, BTreeSet};
use tracing::{debug, error, info, warn};

/// A version this node wants, and the peers that announced it.
#[derive(Debug, Clone)]
struct Need {
    entry: Entry,
    sources: BTreeSet<NodeId>,
    /// A delta against our copy failed once: ask for the whole file.
    whole: bool,
}

/// A version asked of one peer and not yet received.
#[derive(Debug, Clone)]
struct Inflight {
    peer: NodeId,
    entry: Entry,
}

#[derive(Debug, Default)]
struct Peer {
    /// The peer's whole index has arrived.
    index_done: bool,
    /// The initial sync with this peer is complete (and was logged).
    synced: bool,
    /// Files and bytes received from this peer since it connected.
    files_received: u64,
    bytes_received: u64,
    /// The tree digest the peer last told us.
    digest: Option<Hash>,
    /// The tree digest we last told the peer.
    digest_sent: Option<Hash>,
}

/// Counters for logs, tests and benchmarks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub local_changes: u64,
    pub applied: u64,
    pub failed: u64,
}

pub struct Engine {
    me: NodeId,
    /// This directory's persistent identity, the key of its counters in
    /// version vectors.
    device: NodeId,
    /// The index was missing or rebuilt: paths the first whole scan finds
    /// get an empty vector (history unknown) rather than a new local change.
    unknown_history: bool,
    /// Why syncing stopped (the mass-delete guard), while it is stopped.
    suspended: Option<String>,
    index: Index,
    peers: BTreeMap<NodeId, Peer>,
    needs: BTreeMap<RelPath, Need>,
    inflight: BTreeMap<RelPath, Inflight>,
    /// Needs that may not be asked for yet: a superset of the needs not in
    /// flight, so that `schedule` looks only at these and not at every need
    /// (it runs after every message; a full pass made an initial sync of
    /// n files cost O(n²)).
    unscheduled: BTreeSet<RelPath>,
    commands: Vec<Command>,
    dirty: bool,
    stats: Stats,
    /// Paths this node keeps to itself (`.dirsyncignore`).
    ignore: IgnoreRules,
    /// The tree digest of the index, while the index has not changed.
    digest: Option<Hash>,
    /// The last failure, for `dirsync status`.
    last_error: Option<String>,
}

impl Engine {
    pub fn new(me: NodeId, index: Index) -> Self {
        Engine {
            me,
            device: me,
            unknown_history: false,
            suspended: None,
            index,
            peers: BTreeMap::new(),
            needs: BTreeMap::new(),
            inflight: BTreeMap::new(),
            unscheduled: BTreeSet::new(),
            commands: Vec::new(),
            dirty: false,
            stats: Stats::default(),
            ignore: IgnoreRules::default(),
            digest: None,
            last_error: None,
        }
    }

    /// Use `device` (persistent, see `node::load_device_id`) in version
    /// vectors instead of the run's node id.
    pub fn with_device(mut self, device: NodeId) -> Self {
        self.device = device;
        self
    }

    /// The index was missing or unreadable: what the first whole scan finds
    /// has an unknown history (an empty vector), so a peer's newer delete
    /// still wins over it and it never counts as a concurrent edit.
    pub fn with_unknown_history(mut self) -> Self {
        self.unknown_history = true;
        self
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    pub fn device(&self) -> NodeId {
        self.device
    }

    /// Why syncing is stopped, if it is (the mass-delete guard).
    pub fn suspended(&self) -> Option<&str> {
        self.suspended.as_deref()
    }

    pub fn index(&self) -> &Index {
        &self.index
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The commands decided since the last call, in order.
    pub fn take_commands(&mut self) -> Vec<Command> {
        std::mem::take(&mut self.commands)
    }

    /// True once after the index changed: time to persist it.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Connected peers and whether the initial sync with each is done.
    pub fn peers(&self) -> impl Iterator<Item = (NodeId, bool)> + '_ {
        self.peers.iter().map(|(id, p)| (*id, p.synced))
    }

    /// Paths still wanted from peers (including those being received).
    pub fn pending(&self) -> usize {
        self.needs.len()
    }

    /// What is still to receive, per peer: files and bytes. A path counts
    /// for the peer it is asked of, or else the first connected source.
    pub fn pending_by_peer(&self) -> BTreeMap<NodeId, (u64, u64)> {
        let mut out: BTreeMap<NodeId, (u64, u64)> = BTreeMap::new();
        for (path, need) in &self.needs {
            let peer = self
                .inflight
                .get(path)
                .map(|i| i.peer)
                .or_else(|| need.sources.iter().copied().find(|p| self.peers.contains_key(p)));
            if let Some(peer) = peer {
                let slot = out.entry(peer).or_default();
                slot.0 += 1;
                slot.1 += need.entry.size;
            }
        }
        out
    }

    /// Use `rules` from now on. Paths they ignore are neither announced,
    /// nor changed for a peer, nor served; what the index holds of them
    /// stays as it is.
    pub fn set_ignore(&mut self, rules: IgnoreRules) {
        self.ignore = rules;
        self.digest = None;
    }

    pub fn ignore_rules(&self) -> &IgnoreRules {
        &self.ignore
    }

    fn ignored(&self, path: &RelPath, kind: Kind) -> bool {
        self.ignore.is_ignored(path, kind == Kind::Dir)
    }

    /// The index changed: persist it, and its digest is stale.
    fn touched(&mut self) {
        self.dirty = true;
        self.digest = None;
    }

    /// One blake3 hash over the synchronized tree, equal on two nodes
    /// exactly when they hold the same tree: for every path in the index
    /// (sorted, ignored paths left out), a folder by its path, a file by
    /// its path, size, mtime and content hash, and a deletion by its path
    /// alone. Version ranks, folder times and tombstone times are left
    /// out: they say when a node saw something, not what it holds.
    pub fn tree_digest(&mut self) -> Hash {
        if let Some(d) = self.digest {
            return d;
        }
        let mut h = blake3::Hasher::new();
        for e in self.index.iter().filter(|e| !self.ignored(&e.path, e.kind)) {
            h.update(e.path.as_str().as_bytes());
            h.update(&[0]);
            match (e.deleted, e.kind) {
                (true, _) => {
                    h.update(b"x");
                }
                (false, Kind::Dir) => {
                    h.update(b"d");
                }
                (false, Kind::File) => {
                    h.update(b"f");
                    h.update(&e.size.to_be_bytes());
                    h.update(&e.mtime.to_be_bytes());
                    h.update(&e.hash.0);
                }
            }
        }
        let d = Hash::from(h.finalize());
        self.digest = Some(d);
        d
    }

    /// Tell every peer our tree digest if it changed since we last told
    /// it. The node calls this at a steady pace (once a second), which is
    /// the rate limit.
    pub fn share_digest(&mut self) {
        let digest = self.tree_digest();
        let stale: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.digest_sent != Some(digest))
            .map(|(id, _)| *id)
            .collect();
        for peer in stale {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.digest_sent = Some(digest);
            }
            self.send(peer, Message::TreeDigest { digest });
        }
    }

    /// Live files in the synchronized tree (ignored paths left out) and
    /// their total size.
    pub fn tree_size(&self) -> (u64, u64) {
        self.index
            .iter()
            .filter(|e| !e.deleted && e.kind == Kind::File && !self.ignored(&e.path, e.kind))
            .fold((0, 0), |(n, b), e| (n + 1, b + e.size))
    }

    /// The tree digest `peer` last told us.
    pub fn peer_digest(&self, peer: NodeId) -> Option<Hash> {
        self.peers.get(&peer).and_then(|p| p.digest)
    }

    /// The last failure seen (for `dirsync status`).
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Record a failure the node met outside the engine.
    pub fn note_error(&mut self, what: String) {
        self.last_error = Some(what);
    }

    // ----- local changes -------------------------------------------------

    /// What the disk holds under each of `roots` (`None`: the whole tree)
    /// is `found` (every path observed, DIR present).
    pub fn handle_local(&mut self, now: i64, roots: &[Option<RelPath>], found: Vec<Observed>) {
        self.handle_scan(
            now,
            Scan {
                roots: roots.to_vec(),
                found,
                failed: vec![],
                dir: DirState::Present,
            },
        );
    }

    /// A look at the disk. Differences from the index become local
    /// changes, sent to every peer; index entries under a root that the
    /// scan lacks are deletions, unless they lie at or under a path that
    /// failed (unknown, not gone: their entries stay until a later scan).
    ///
    /// The mass-delete guard: if DIR is missing, or holds nothing while the
    /// index holds live files (an unmounted disk looks like this, and so
    /// does deleting everything: either way the deletion of everything is
    /// never sent), no deletion is recorded; syncing stops
    /// (`Command::Suspend`) until a scan finds DIR holding something again
    /// (`Command::Resume`). To empty DIR on purpose, leave one file in it.
    pub fn handle_scan(&mut self, now: i64, scan: Scan) {
        let Scan { roots, found, failed, dir } = scan;
        let live_files = self.index.live_files().0;
        if let Some(reason) = safety::dir_gone(&dir, live_files) {
            if self.suspended.is_none() {
                error!(%reason, "not syncing, so that no deletion of everything reaches the peers: is the disk unmounted? Syncing resumes by itself once the directory holds its files again; to empty it on purpose, leave any one file in it");
                self.suspended = Some(reason.clone());
                self.commands.push(Command::Suspend { reason });
            }
            return;
        }
        if self.suspended.take().is_some() {
            info!("the directory is back: syncing again");
            self.commands.push(Command::Resume);
        }
        let unknown = std::mem::take(&mut self.unknown_history) && roots.iter().any(Option::is_none);
        let found: BTreeMap<RelPath, Observed> = found
            .into_iter()
            .filter(|o| !self.ignored(&o.path, o.kind))
            .map(|o| (o.path.clone(), o))
            .collect();
        let mut changes = Vec::new();
        for o in found.values() {
            let old = self.index.get(&o.path);
            let unchanged = old.is_some_and(|e| {
                !e.deleted && e.kind == o.kind && (o.kind == Kind::Dir || (e.size == o.size && e.mtime == o.mtime && e.hash == o.hash))
            });
            if unchanged {
                continue;
            }
            let mtime = if o.kind == Kind::Dir { now } else { o.mtime };
            let mut e = self.local_version(old, o.path.clone(), o.kind, false, o.size, mtime, o.hash);
            if unknown && old.is_none() {
                e.vector = Vector::default();
            }
            changes.push(e);
        }
        let mut gone = Vec::new();
        for root in &roots {
            for e in self.index.under(root.as_ref()) {
                let unknown = failed.iter().any(|f| e.path.is_within(f));
                if !e.deleted && !found.contains_key(&e.path) && !unknown && !self.ignored(&e.path, e.kind) {
                    gone.push(e.clone());
                }
            }
        }
        for e in gone {
            let t = self.local_version(Some(&e), e.path.clone(), e.kind, true, 0, now, Hash::ZERO);
            changes.push(t);
        }
        if changes.is_empty() {
            return;
        }
        for e in &changes {
            debug!(path = %e.path, deleted = e.deleted, kind = ?e.kind, "local change");
            self.index.insert(e.clone());
            // A local change may settle a version we were waiting for.
            self.settle(e);
        }
        self.stats.local_changes += changes.len() as u64;
        self.touched();
        self.broadcast(changes, None);
        self.check_all_synced();
    }

    // ----- peers ---------------------------------------------------------

    /// A connection with `peer` finished its handshake: send our index.
    pub fn handle_connected(&mut self, peer: NodeId) {
        if let Some(reason) = &self.suspended {
            let reason = format!("not syncing: {reason}");
            self.commands.push(Command::Close { peer, reason });
            return;
        }
        self.peers.insert(peer, Peer::default());
        // Batches are cut as the index is walked: one copy of a large index
        // (the one queued for the peer), not two.
        let mut batches = Vec::new();
        let mut batch = Vec::new();
        for e in self.index.iter().filter(|e| !self.ignored(&e.path, e.kind)) {
            batch.push(e.clone());
            if batch.len() == MAX_ENTRIES {
                batches.push(std::mem::take(&mut batch));
            }
        }
        if !batch.is_empty() || batches.is_empty() {
            batches.push(batch);
        }
        let last = batches.len() - 1;
        for (i, entries) in batches.into_iter().enumerate() {
            self.send(peer, Message::Index { entries, done: i == last });
        }
    }

    /// The connection with `peer` closed.
    pub fn handle_disconnected(&mut self, peer: NodeId) {
        self.peers.remove(&peer);
        let unscheduled = &mut self.unscheduled;
        self.inflight.retain(|path, i| {
            let keep = i.peer != peer;
            if !keep {
                unscheduled.insert(path.clone());
            }
            keep
        });
        self.needs.retain(|_, n| {
            n.sources.remove(&peer);
            !n.sources.is_empty()
        });
        self.schedule();
    }

    /// A control message from `peer` (content messages go to `accept_content`).
    pub fn handle_message(&mut self, peer: NodeId, msg: Message) {
        if !self.peers.contains_key(&peer) {
            return;
        }
        match msg {
            Message::Index { entries, done } => {
                self.handle_entries(peer, entries);
                if done {
                    if let Some(p) = self.peers.get_mut(&peer) {
                        p.index_done = true;
                    }
                }
                self.schedule();
            }
            Message::Update { entries } => {
                self.handle_entries(peer, entries);
                self.schedule();
            }
            Message::Want { files } => {
                for w in files {
                    self.serve(peer, &w.path, w.hash, None);
                }
            }
            Message::WantDelta {
                path,
                hash,
                base,
                signature,
            } => {
                self.serve(peer, &path, hash, Some((base, signature)));
            }
            Message::Unavailable { path } => {
                if self.inflight.get(&path).is_some_and(|i| i.peer == peer) {
                    let asked = self.inflight.remove(&path).map(|i| i.entry);
                    self.unscheduled.insert(path.clone());
                    // Only the version asked for is gone: if a newer one was
                    // announced meanwhile (by this peer too), keep needing it.
                    if let Some(n) = self
                        .needs
                        .get_mut(&path)
                        .filter(|n| asked.as_ref().is_some_and(|a| same_version(&n.entry, a)))
                    {
                        n.sources.remove(&peer);
                        if n.sources.is_empty() {
                            self.needs.remove(&path);
                        }
                    }
                    self.schedule();
                }
            }
            Message::TreeDigest { digest } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.digest = Some(digest);
                }
            }
            Message::Ping => {}
            other => {
                self.commands.push(Command::Close {
                    peer,
                    reason: format!("unexpected {} message after the handshake", other.name()),
                });
            }
        }
        self.check_synced(peer);
    }

    /// `peer` starts sending `entry`'s content. Returns what the path must
    /// still hold on disk for the new content to replace it (`None`: nothing
    /// there), or `Err` if this content was not asked of that peer.
    pub fn accept_content(&self, peer: NodeId, entry: &Entry) -> Result<Option<Entry>, String> {
        if self.answers_request(peer, entry) {
            // Never replace a newer version with an older one.
            if !wins_over(entry, self.index.get(&entry.path)) {
                return Err(format!("{} is newer here than the version asked for", entry.path));
            }
            return Ok(self.index.live(&entry.path).cloned());
        }
        match self.inflight.get(&entry.path) {
            Some(_) => Err(format!("{} was asked of another peer or in another version", entry.path)),
            None => Err(format!("{} was not asked for", entry.path)),
        }
    }

    /// True if `entry`'s content from `peer` answers our request for its
    /// path: asked of that peer, in that version or in the one needed now.
    /// (A peer answers a want with the version it holds now, which may
    /// have moved on with the same content, e.g. an edit that won against
    /// a delete; found by the simulation.)
    fn answers_request(&self, peer: NodeId, entry: &Entry) -> bool {
        self.inflight.get(&entry.path).is_some_and(|i| {
            i.peer == peer && (same_version(&i.entry, entry) || self.needs.get(&entry.path).is_some_and(|n| same_version(&n.entry, entry)))
        })
    }

    /// `peer` started sending content for `entry` that `accept_content`
    /// refused. If it is the answer to our request for that path (the
    /// content asked for, in a version we cannot use), the request is over:
    /// that peer stops being a source of the need, which is asked again
    /// elsewhere. Otherwise it answers an older request and changes nothing.
    pub fn content_refused(&mut self, peer: NodeId, entry: &Entry) {
        if !self
            .inflight
            .get(&entry.path)
            .is_some_and(|i| i.peer == peer && i.entry.hash == entry.hash)
        {
            return;
        }
        self.inflight.remove(&entry.path);
        self.unscheduled.insert(entry.path.clone());
        if let Some(n) = self.needs.get_mut(&entry.path) {
            n.sources.remove(&peer);
            if n.sources.is_empty() {
                self.needs.remove(&entry.path);
            }
        }
        self.schedule();
        self.check_synced(peer);
    }

    /// The content of `entry` from `peer` was written (`Ok`, with the bytes
    /// it cost on the wire) or could not be (`Err`, the reason).
    pub fn handle_received(&mut self, peer: NodeId, entry: Entry, was_delta: bool, result: Result<u64, String>) {
        if self.answers_request(peer, &entry) {
            self.inflight.remove(&entry.path);
            self.unscheduled.insert(entry.path.clone());
        }
        match result {
            Ok(bytes) => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.files_received += 1;
                    p.bytes_received += bytes;
                }
                self.applied(Some(peer), entry);
            }
            Err(reason) => {
                self.stats.failed += 1;
                warn!(path = %entry.path, %peer, %reason, "receiving failed");
                self.last_error = Some(format!("receiving {} from {peer}: {reason}", entry.path));
                // A failure of an older version leaves a newer need alone.
                if let Some(n) = self.needs.get_mut(&entry.path).filter(|n| same_version(&n.entry, &entry)) {
                    if was_delta && !n.whole {
                        n.whole = true;
                    } else {
                        n.sources.remove(&peer);
                        if n.sources.is_empty() {
                            self.needs.remove(&entry.path);
                        }
                    }
                }
            }
        }
        self.schedule();
        self.check_synced(peer);
    }

    /// An `Action` finished: `Ok` if the disk now holds it.
    pub fn handle_action_done(&mut self, peer: NodeId, action: Action, result: Result<(), String>) {
        if let Action::ConflictCopy { from, copy, then } = action {
            match result {
                Ok(()) => {
                    info!(path = %from.path, copy = %copy.path, "concurrent edit: the losing version is kept as a conflict copy");
                    self.stats.applied += 1;
                    self.record(copy, None);
                    // Now the winner may replace the loser.
                    self.handle_entries(peer, vec![then]);
                    self.schedule();
                }
                Err(reason) => {
                    self.stats.failed += 1;
                    warn!(path = %from.path, copy = %copy.path, %reason, "could not keep the losing version of a concurrent edit; keeping it in place for now");
                }
            }
            self.check_synced(peer);
            return;
        }
        match result {
            Ok(()) => {
                if let Action::Rename { from_tombstone, .. } = &action {
                    // The source path is gone: the peer's deletion of it is
                    // applied too.
                    self.applied(Some(peer), from_tombstone.clone());
                }
                self.applied(Some(peer), action.entry().clone());
            }
            Err(reason) => {
                self.stats.failed += 1;
                warn!(path = %action.entry().path, %peer, %reason, "could not apply change");
                self.last_error = Some(format!("{} {}: {reason}", action.name(), action.entry().path));
                self.needs.remove(&action.entry().path);
            }
        }
        self.check_synced(peer);
    }

    // ----- internals -----------------------------------------------------

    fn send(&mut self, peer: NodeId, msg: Message) {
        self.commands.push(Command::Send { peer, msg });
    }

    /// Send `entries` as updates to every connected peer but `except`.
    fn broadcast(&mut self, entries: Vec<Entry>, except: Option<NodeId>) {
        let peers: Vec<NodeId> = self.peers.keys().copied().filter(|p| Some(*p) != except).collect();
        for peer in peers {
            for chunk in entries.chunks(MAX_ENTRIES) {
                self.send(peer, Message::Update { entries: chunk.to_vec() });
            }
        }
    }

    /// The index now holds `entry`, applied on disk.
    fn applied(&mut self, peer: Option<NodeId>, entry: Entry) {
        self.stats.applied += 1;
        self.record(entry, peer);
    }

    /// Put `entry` in the index and announce it to every peer but `except`.
    fn record(&mut self, entry: Entry, except: Option<NodeId>) {
        self.settle(&entry);
        self.index.insert(entry.clone());
        self.touched();
        self.broadcast(vec![entry], except);
    }

    /// A new local version of `path`, ranked above the `old` one it replaces
    /// (see `Entry::version`), its vector bumped for this device.
    #[allow(clippy::too_many_arguments)]
    fn local_version(&self, old: Option<&Entry>, path: RelPath, kind: Kind, deleted: bool, size: u64, mtime: i64, hash: Hash) -> Entry {
        let floor = old.map_or(i64::MIN, |o| o.version.saturating_add(1));
        let version = mtime.max(floor);
        let vector = old.map(|o| o.vector.clone()).unwrap_or_default().bump(self.device, version);
        Entry {
            path,
            kind,
            deleted,
            size,
            mtime,
            version,
            hash,
            vector,
            by: self.device,
        }
    }

    /// The index now holds `e`: forget the wants and requests it settles.
    /// A request left in flight would let its older content, arriving
    /// later, replace `e` on disk (found by the simulation).
    fn settle(&mut self, e: &Entry) {
        if self.needs.get(&e.path).is_some_and(|n| !beats(&n.entry, e)) {
            self.needs.remove(&e.path);
        }
        if self.inflight.get(&e.path).is_some_and(|i| !beats(&i.entry, e)) {
            self.inflight.remove(&e.path);
            self.unscheduled.insert(e.path.clone());
        }
    }

    /// Compare a peer's entries with ours and act where theirs win.
    fn handle_entries(&mut self, peer: NodeId, entries: Vec<Entry>) {
        // Directories first (outermost first), then files, then deletions
        // (innermost first), so a folder exists before its files and is
        // empty before it is removed.
        let mut entries = entries;
        entries.sort_by(|a, b| {
            let class = |e: &Entry| match (e.deleted, e.kind) {
                (false, Kind::Dir) => 0,
                (false, Kind::File) => 1,
                (true, _) => 2,
            };
            class(a)
                .cmp(&class(b))
                .then_with(|| match class(a) {
                    2 => b.path.depth().cmp(&a.path.depth()),
                    _ => a.path.depth().cmp(&b.path.depth()),
                })
                .then_with(|| a.path.cmp(&b.path))
        });
        // Deletions in this batch that will remove a live local file: their
        // content can serve a rename instead of a transfer.
        let mut moving_away: BTreeMap<Hash, Vec<(Entry, Entry)>> = BTreeMap::new();
        for e in entries.iter().filter(|e| e.deleted && !self.ignored(&e.path, e.kind)) {
            if let Some(local) = self.index.live(&e.path) {
                if local.kind == Kind::File && beats(e, local) && resurrection(e, local).is_none() && !self.ignored(&local.path, local.kind)
                {
                    moving_away.entry(local.hash).or_default().push((local.clone(), e.clone()));
                }
            }
        }
        let mut renamed = BTreeSet::new();
        for e in entries {
            let local = self.index.get(&e.path).cloned();
            if self.ignored(&e.path, e.kind) || local.as_ref().is_some_and(|l| self.ignored(&l.path, l.kind)) {
                // Kept to ourselves: a peer's version neither replaces nor
                // deletes it (whether the rule names its kind or ours).
                continue;
            }
            if let Some(l) = &local {
                if let Some(m) = resurrection(&e, l) {
                    // An edit against a delete that did not see it: the edit
                    // wins, as a version that saw both, so the delete's
                    // holders take the file back.
                    info!(path = %l.path, "an edit here was concurrent with a delete elsewhere: the file stays");
                    self.record(m, None);
                    continue;
                }
                if same_version(&e, l) && e.vector != l.vector {
                    // The same version reached us with more history (e.g.
                    // made by two nodes at once): remember all of it.
                    let merged = l.vector.merge(&e.vector);
                    if merged != l.vector {
                        self.record(
                            Entry {
                                vector: merged,
                                ..l.clone()
                            },
                            None,
                        );
                    }
                    continue;
                }
            }
            if !wins_over(&e, local.as_ref()) {
                continue;
            }
            if let Some(n) = self.needs.get_mut(&e.path) {
                if same_version(&n.entry, &e) {
                    n.sources.insert(peer);
                    self.unscheduled.insert(e.path);
                    continue;
                }
                if beats(&n.entry, &e) {
                    continue;
                }
            }
            let live = local.filter(|l| !l.deleted);
            if let Some(l) = live.as_ref().filter(|l| loses_concurrently(l, &e)) {
                match conflict_entry(l) {
                    Some(copy) if wins_over(&copy, self.index.get(&copy.path)) && self.index.get(&copy.path).is_none_or(|c| c.deleted) => {
                        self.act(
                            peer,
                            Action::ConflictCopy {
                                from: l.clone(),
                                copy,
                                then: e,
                            },
                        );
                        continue;
                    }
                    // Made already (here or by a peer), or deleted since by
                    // someone who saw it: the loser may go.
                    Some(_) => {}
                    None => warn!(path = %l.path, "no valid conflict-copy name; the losing version is replaced"),
                }
            }
            if e.deleted {
                if renamed.contains(&e.path) {
                    continue;
                }
                match live {
                    Some(l) => self.act(peer, Action::Delete { entry: e, local: l }),
                    None => {
                        // Nothing on disk: just remember the deletion.
                        self.settle(&e);
                        self.index.insert(e);
                        self.touched();
                    }
                }
                continue;
            }
            if e.kind == Kind::Dir {
                match live {
                    Some(l) if l.kind == Kind::Dir => {
                        self.settle(&e);
                        self.index.insert(e);
                        self.touched();
                    }
                    _ => self.act(peer, Action::MakeDir { entry: e }),
                }
                continue;
            }
            // A file whose content is already here needs no transfer.
            if let Some(l) = live.as_ref().filter(|l| l.kind == Kind::File && l.hash == e.hash) {
                self.act(
                    peer,
                    Action::SetMtime {
                        entry: e,
                        local: l.clone(),
                    },
                );
                continue;
            }
            if let Some((from, from_tombstone)) = moving_away.get_mut(&e.hash).and_then(|v| v.pop()) {
                renamed.insert(from.path.clone());
                self.act(
                    peer,
                    Action::Rename {
                        from,
                        from_tombstone,
                        entry: e,
                        local: live,
                    },
                );
                continue;
            }
            let copy_source = self.index.paths_with_hash(&e.hash).next().and_then(|p| self.index.live(p)).cloned();
            if let Some(src) = copy_source {
                self.act(
                    peer,
                    Action::Copy {
                        from: src,
                        entry: e,
                        local: live,
                    },
                );
                continue;
            }
            self.unscheduled.insert(e.path.clone());
            self.needs.insert(
                e.path.clone(),
                Need {
                    entry: e,
                    sources: BTreeSet::from([peer]),
                    whole: false,
                },
            );
        }
    }

    fn act(&mut self, peer: NodeId, action: Action) {
        self.commands.push(Command::Apply { peer, action });
    }

    /// Ask for every needed version that is not already on its way.
    fn schedule(&mut self) {
        let mut wants: BTreeMap<NodeId, Vec<WantFile>> = BTreeMap::new();
        let mut deltas = Vec::new();
        for path in std::mem::take(&mut self.unscheduled) {
            let Some(need) = self.needs.get(&path).filter(|_| !self.inflight.contains_key(&path)) else {
                continue;
            };
            let Some(peer) = need.sources.iter().copied().find(|p| self.peers.contains_key(p)) else {
                // No source connected now: look again when one announces it.
                self.unscheduled.insert(path);
                continue;
            };
            let base = self
                .index
                .live(&path)
                .filter(|l| !need.whole && l.kind == Kind::File && l.size >= DELTA_MIN_SIZE && need.entry.size >= DELTA_MIN_SIZE);
            match base {
                Some(base) => deltas.push(Command::RequestDelta {
                    peer,
                    want: need.entry.clone(),
                    base: base.clone(),
                }),
                None => wants.entry(peer).or_default().push(WantFile {
                    path,
                    hash: need.entry.hash,
                }),
            }
        }
        for (peer, files) in &wants {
            for f in files {
                let entry = self.needs[&f.path].entry.clone();
                self.inflight.insert(f.path.clone(), Inflight { peer: *peer, entry });
            }
        }
        for d in &deltas {
            if let Command::RequestDelta { peer, want, .. } = d {
                self.inflight.insert(
                    want.path.clone(),
                    Inflight {
                        peer: *peer,
                        entry: want.clone(),
                    },
                );
            }
        }
        for (peer, files) in wants {
            for chunk in files.chunks(MAX_ENTRIES) {
                self.send(peer, Message::Want { files: chunk.to_vec() });
            }
        }
        self.commands.extend(deltas);
    }

    /// Answer a peer's want: send the content if we still hold that version.
    fn serve(&mut self, peer: NodeId, path: &RelPath, hash: Hash, base: Option<(Hash, Vec<u8>)>) {
        match self.index.live(path) {
            Some(e) if e.kind == Kind::File && e.hash == hash && !self.ignored(path, Kind::File) => {
                let entry = e.clone();
                self.commands.push(Command::SendContent { peer, entry, base });
            }
            _ => {
                debug!(%path, %peer, "asked for a version we no longer hold");
                self.send(peer, Message::Unavailable { path: path.clone() });
            }
        }
    }

    fn check_all_synced(&mut self) {
        let peers: Vec<NodeId> = self.peers.keys().copied().collect();
        for p in peers {
            self.check_synced(p);
        }
    }

    /// Log once per connection when everything `peer` offered is here.
    fn check_synced(&mut self, peer: NodeId) {
        if self.peers.get(&peer).is_none_or(|p| p.synced || !p.index_done) {
            return;
        }
        let waiting = self.needs.values().any(|n| n.sources.contains(&peer)) || self.inflight.values().any(|i| i.peer == peer);
        let Some(p) = self.peers.get_mut(&peer) else { return };
        if p.index_done && !p.synced && !waiting {
            p.synced = true;
            info!(%peer, files = p.files_received, bytes = p.bytes_received, "synchronized");
        }
    }
}
