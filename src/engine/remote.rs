//! Peers: connections, their indexes and updates, and what we ask of
//! them and answer them. Where a peer's version wins, the disk changes
//! (`Action`s) or the content is asked for (`Need`, `Inflight`).

use super::conflict::conflict_entry;
use super::index::{beats, same_version, wins_over, with_more_history};
use super::safety::{deletes, loses_concurrently, resurrection};
use super::{mode_on_disk, schedule_order, Action, Command, Engine, IndexPoint, Inflight, Need, DELTA_MIN_SIZE};
use crate::wire::version::Causality;
use crate::wire::{Entry, Hash, Kind, Message, NodeId, RelPath, WantFile, WantedHash, MAX_ENTRIES};
use std::collections::{BTreeMap, BTreeSet};
use tracing::{debug, info, warn};

/// Most entries of a peer's live updates kept until its index is in
/// (`unless_early`); past that they are taken as they come.
const EARLY_UPDATES: usize = 4 * MAX_ENTRIES;
/// How long (ns) a file that one source holds waits for the receiver
/// first to fetch it to offer it, before it is asked of that source too:
/// long enough for a batch of small files to spread among receivers, short
/// enough that one that never fetches it (it excludes the path, it is
/// stuck) costs a moment. Counted on the engine's clock, which the tick
/// moves once a second.
pub(super) const OFFER_WAIT: i128 = 2_000_000_000;

/// One entry per path, the version that wins where a peer told two.
fn latest_of_each_path(entries: impl Iterator<Item = Entry>) -> Vec<Entry> {
    let mut latest: BTreeMap<RelPath, Entry> = BTreeMap::new();
    for e in entries {
        match latest.get(&e.path) {
            Some(held) if !beats(&e, held) => {}
            _ => {
                latest.insert(e.path.clone(), e);
            }
        }
    }
    latest.into_values().collect()
}

/// Directories first (outermost first), then files and links, then
/// deletions (innermost first), then the files and links that take the
/// place of a folder the batch empties: a folder exists before its files,
/// a file moves away before its deletion (a rename), and a folder is empty
/// before it is removed or a file takes its place.
fn sort_for_applying(entries: &mut [Entry]) {
    let emptied: BTreeSet<RelPath> = entries.iter().filter(|e| e.deleted).flat_map(|e| e.path.ancestors()).collect();
    entries.sort_by_cached_key(|e| {
        let depth = e.path.depth() as i64;
        let (class, depth) = match (e.deleted, e.kind) {
            (false, Kind::Dir) => (0, depth),
            (false, _) if !emptied.contains(&e.path) => (1, depth),
            (true, _) => (2, -depth),
            (false, _) => (3, depth),
        };
        (class, depth, e.path.clone())
    });
}

/// True if live `e` is strictly older history than our live `local` (its
/// vector an ancestor of ours), both histories known.
fn outranked_by_history(e: &Entry, local: &Entry) -> bool {
    !e.deleted
        && !local.deleted
        && !e.vector.is_empty()
        && !local.vector.is_empty()
        && e.vector.compare(&local.vector) == Causality::Precedes
}

/// What one batch of a peer's entries has decided so far.
struct Batch {
    /// See `Engine::moving_away`.
    moving_away: BTreeMap<Hash, Vec<(Entry, Entry)>>,
    /// Paths a rename in this batch took away: their deletion is done.
    renamed: BTreeSet<RelPath>,
    /// The batch's tombstones: what the peer saw deleted.
    deletions: BTreeMap<RelPath, Entry>,
    /// The batch's live folders.
    folders: BTreeMap<RelPath, Entry>,
    /// Our files this batch already turned into folders.
    giving_way: BTreeSet<RelPath>,
}

/// What one `schedule` asks for: wants per peer, delta requests, swarms.
#[derive(Default)]
struct Scheduled {
    wants: BTreeMap<NodeId, Vec<WantFile>>,
    deltas: Vec<Command>,
    swarms: Vec<RelPath>,
}

impl Engine {
    /// The connection with `peer` closed. A file it was sending is
    /// dropped by the node; the deleted folders that file alone kept go.
    pub fn handle_disconnected(&mut self, peer: NodeId) {
        if let Some(r) = self.peers.remove(&peer).and_then(|p| p.streaming) {
            self.vacated(&r.entry.path);
        }
        let asked: Vec<RelPath> = self
            .wants
            .inflight
            .values()
            .filter(|i| i.peer == peer)
            .map(|i| i.entry.path.clone())
            .collect();
        for path in asked {
            self.wants.inflight.remove(&path);
            self.unschedule(path);
        }
        if let Some(waiting) = self.wants.waiting_for_window.remove(&peer) {
            self.wants.to_schedule.extend(waiting);
        }
        // A file being fetched in pieces may still be finished by the
        // peers that are receiving it too: its need stays while it does.
        let swarms = &self.swarming.swarms;
        self.wants.needs.retain(|path, n| {
            n.sources.remove(&peer);
            !n.sources.is_empty() || swarms.contains_key(path)
        });
        self.swarm_peer_gone(peer);
        self.schedule();
        self.drive_all();
    }

    /// A control message from `peer` (content frames go to `handle_file_start`,
    /// `handle_chunk` and `handle_file_end`).
    pub fn handle_message(&mut self, peer: NodeId, msg: Message) {
        if self.refuses(peer) {
            return;
        }
        let before = self.commands.len();
        self.take_message(peer, msg);
        self.check_send_queue(peer, before);
    }

    /// Whether a message from `peer` is not taken: it comes from no
    /// connected peer.
    pub(super) fn refuses(&self, peer: NodeId) -> bool {
        !self.peers.contains_key(&peer)
    }

    fn take_message(&mut self, peer: NodeId, msg: Message) {
        match msg {
            Message::IndexRequest { identity, since } => self.answer_index_request(peer, identity, since),
            Message::IndexHead { identity, seq, .. } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.head = Some(IndexPoint { identity, seq });
                }
            }
            Message::Index { mut entries, done } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    if done {
                        p.index_done = true;
                        p.taken_up_to = p.head.take();
                        // One batch with the index's last part: a folder it
                        // makes is seen by the files that came early.
                        let early = std::mem::take(&mut p.early_updates);
                        if !early.is_empty() {
                            entries = latest_of_each_path(entries.into_iter().chain(early.into_iter().flatten()));
                        }
                    }
                    p.more_index = !done;
                }
                self.handle_entries(peer, entries);
                self.schedule();
            }
            Message::IndexMore => self.send_index_part(peer),
            Message::Update { entries } => {
                if let Some(entries) = self.unless_early(peer, entries) {
                    self.handle_entries(peer, entries);
                    self.schedule();
                }
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
                self.serve(peer, &path, hash.into(), Some((base, signature)));
            }
            Message::Unavailable { path } if self.swarming.swarms.contains_key(&path) => self.swarm_unavailable(peer, &path),
            Message::Unavailable { path } => {
                if self.wants.inflight.get(&path).is_some_and(|i| i.peer == peer) {
                    let asked = self.wants.inflight.remove(&path).map(|i| i.entry);
                    self.unschedule(path.clone());
                    // Only the version asked for is gone: if a newer one was
                    // announced meanwhile (by this peer too), keep needing it.
                    let need = self
                        .wants
                        .needs
                        .get(&path)
                        .filter(|n| asked.as_ref().is_some_and(|a| same_version(&n.entry, a)));
                    match (need.map(|n| n.sources.len()), asked) {
                        // Others hold it: ask them.
                        (Some(2..), _) => self.drop_source(&path, peer),
                        // The only source could not serve it (a file it
                        // cannot read): still needed, tried again with
                        // backoff and shown as retrying, never dropped
                        // (issue 24, case 4: it was silently missing).
                        (Some(_), Some(asked)) => {
                            self.retry_later(peer, asked, format!("{peer} could not send it (unreadable there, or changed)"))
                        }
                        _ => {}
                    }
                    self.schedule();
                }
            }
            Message::TreeDigest { digest, seq } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.digest = Some(digest);
                    // Before its index is done, the peer's claim may
                    // predate our request.
                    if let Some(h) = p.taken_up_to.as_mut().filter(|_| p.index_done) {
                        h.seq = h.seq.max(seq);
                    }
                }
            }
            Message::SubtreeQuery { dir } => self.answer_subtree_query(peer, dir),
            Message::Subtree { dir, children } => self.handle_subtree(peer, dir, children),
            Message::PieceMapWant { path, hash } => self.serve_piece_map(peer, &path, hash),
            Message::PieceMap {
                path,
                hash,
                piece_size,
                values,
                zeros,
            } => self.handle_piece_map(peer, &path, hash, piece_size, &values, zeros),
            Message::Have { path, hash, pieces } => self.handle_have(peer, &path, hash, pieces),
            Message::PieceWant { path, hash, index } => self.serve_piece(peer, &path, hash, index),
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

    /// Compare a peer's entries with ours and act where theirs win.
    /// A peer's live update heard before its index is in waits for it
    /// (`None`), up to `EARLY_UPDATES` entries. Whether a path is a file
    /// or a folder with content is decided from what the peer holds around
    /// it: a file under a path we hold as a file, heard before the folder
    /// the index brings, turned our file into a conflict copy (found by the
    /// workload, faults seed 7200021697: a relay forwarded what it applied
    /// while its index was on the way).
    fn unless_early(&mut self, peer: NodeId, entries: Vec<Entry>) -> Option<Vec<Entry>> {
        let p = self.peers.get_mut(&peer)?;
        let waiting: usize = p.early_updates.iter().map(Vec::len).sum();
        if p.index_done || waiting + entries.len() > EARLY_UPDATES {
            return Some(entries);
        }
        p.early_updates.push(entries);
        None
    }

    pub(super) fn handle_entries(&mut self, peer: NodeId, entries: Vec<Entry>) {
        let mut entries = entries;
        sort_for_applying(&mut entries);
        let mut batch = Batch {
            moving_away: self.moving_away(&entries),
            renamed: BTreeSet::new(),
            deletions: entries.iter().filter(|e| e.deleted).map(|e| (e.path.clone(), e.clone())).collect(),
            folders: entries
                .iter()
                .filter(|e| !e.deleted && e.kind == Kind::Dir)
                .map(|e| (e.path.clone(), e.clone()))
                .collect(),
            giving_way: BTreeSet::new(),
        };
        for e in entries {
            self.handle_entry(peer, e, &mut batch);
        }
    }

    /// Deletions in this batch that will remove a live local file: their
    /// content can serve a rename instead of a transfer.
    fn moving_away(&self, entries: &[Entry]) -> BTreeMap<Hash, Vec<(Entry, Entry)>> {
        let mut moving_away: BTreeMap<Hash, Vec<(Entry, Entry)>> = BTreeMap::new();
        for e in entries.iter().filter(|e| e.deleted && !self.unsynced(&e.path, e.kind)) {
            if let Some(local) = self.index.live(&e.path) {
                if local.kind == Kind::File
                    && beats(e, &local)
                    && resurrection(e, &local).is_none()
                    && !self.unsynced(&local.path, local.kind)
                {
                    moving_away.entry(local.hash).or_default().push((local, e.clone()));
                }
            }
        }
        moving_away
    }

    /// One entry of a peer's batch.
    fn handle_entry(&mut self, peer: NodeId, e: Entry, batch: &mut Batch) {
        let local = self.index.get(&e.path);
        if self.ignored(&e.path, e.kind) || local.as_ref().is_some_and(|l| self.ignored(&l.path, l.kind)) {
            // Kept to ourselves: a peer's version neither replaces nor
            // deletes it (whether the rule names its kind or ours).
            return;
        }
        if self.excluded(&e.path) {
            self.track_excluded(e, local);
            return;
        }
        if let Some(l) = &local {
            if self.merged_history(&e, l) {
                return;
            }
        }
        if !wins_over(&e, local.as_ref()) {
            return;
        }
        if let Some(l) = local.as_ref().filter(|l| outranked_by_history(&e, l)) {
            // The peer's version ranks higher but is history ours already
            // built on (two nodes kept their own edits against one delete,
            // one of them stale): ours stays, announced above it. Found by
            // the workload (faults, seed 7200021805): the newer edit was
            // replaced, with no conflict copy.
            info!(path = %l.path, "a peer's version ranks higher but is older history than ours: ours stays");
            let ours = Entry {
                version: e.version.saturating_add(1),
                ..l.clone()
            };
            self.record(ours, None);
            return;
        }
        if let Some(n) = self.wants.needs.get_mut(&e.path) {
            if same_version(&n.entry, &e) {
                n.sources.insert(peer);
                self.unschedule(e.path);
                return;
            }
            if beats(&n.entry, &e) {
                return;
            }
        }
        let live = local.filter(|l| !l.deleted);
        if !e.deleted && self.folder_against_file(peer, &e, live.as_ref(), batch) {
            return;
        }
        if let Some((from, copy)) = live.as_ref().and_then(|l| Some((l.clone(), self.copy_to_keep(l, &e)?))) {
            self.act(peer, Action::ConflictCopy { from, copy, then: e });
            return;
        }
        self.take_winner(peer, e, live, batch);
    }

    /// The conflict copy to make of our live `l` before `winner` replaces
    /// it: `l` loses a concurrent edit, and no copy of it is made yet.
    /// `None` if `l` may simply go: it is history `winner` saw, a copy is
    /// made already (here or by a peer) or deleted since by someone who saw
    /// it, or a deletion superseded it (heard, failed to apply here: its
    /// maker saw it; found by the workload, faults seed 7200021654).
    pub(super) fn copy_to_keep(&self, l: &Entry, winner: &Entry) -> Option<Entry> {
        let superseded = || self.failed_deletion(&l.path).is_some_and(|t| deletes(t, l));
        if !loses_concurrently(l, winner) || superseded() {
            return None;
        }
        let Some(copy) = conflict_entry(l) else {
            warn!(path = %l.path, "no valid conflict-copy name; the losing version is replaced");
            return None;
        };
        self.index
            .get(&copy.path)
            .is_none_or(|c| c.deleted && beats(&copy, &c))
            .then_some(copy)
    }

    /// Where the peer's live `e` and our `live` version disagree on whether
    /// a path is a file or a folder with content (see `folders.rs`). True
    /// if that settles `e` for now (it is tried again once the folder is
    /// there).
    fn folder_against_file(&mut self, peer: NodeId, e: &Entry, live: Option<&Entry>, batch: &mut Batch) -> bool {
        // Our folder, or a deleted one kept as the container of what it
        // holds (found by the workload, faults seed 7200021761).
        let folder = match live {
            Some(l) if l.kind == Kind::Dir => Some(l.clone()),
            Some(_) => None,
            None => self.index.get(&e.path),
        };
        if let Some(dir) = folder.filter(|_| e.kind != Kind::Dir) {
            if self.holds_unseen_below(&dir.path, &batch.deletions) {
                self.keep_folder(&dir, e);
                return true;
            }
        }
        let Some(file) = self.file_above(&e.path) else {
            return false;
        };
        // A folder heard earlier that failed to replace the file here (a
        // disk error) is seen all the same (found by the workload's
        // conflict-copy invariant, faults seed 7200021604).
        let failed = self
            .upkeep
            .retries
            .get(&file.path)
            .map(|r| &r.entry)
            .filter(|d| d.kind == Kind::Dir && !d.deleted);
        if batch.folders.get(&file.path).or(failed).is_some_and(|d| beats(d, &file)) {
            // The peer's folder replaces our file in this very batch,
            // before `e` is taken (folders come first), or is tried again.
            return false;
        }
        if batch.giving_way.insert(file.path.clone()) {
            self.file_gives_way(file.clone());
        }
        self.retry_later(peer, e.clone(), format!("{} is a file here, turned into a folder first", file.path));
        true
    }

    /// Where `e` meets our `local` version without replacing it: an edit
    /// here that a delete did not see, or the same version with more
    /// history. True if that settles `e`.
    fn merged_history(&mut self, e: &Entry, local: &Entry) -> bool {
        if let Some(m) = resurrection(e, local) {
            // An edit against a delete that did not see it: the edit wins,
            // as a version that saw both, so the delete's holders take the
            // file back.
            info!(path = %local.path, "an edit here was concurrent with a delete elsewhere: the file stays");
            self.record(m, None);
            return true;
        }
        if !same_version(e, local) {
            return false;
        }
        // The same version may reach us with more history (e.g. made by
        // two nodes at once): remember all of it.
        if let Some(merged) = with_more_history(e, local) {
            self.record(merged, None);
        }
        true
    }

    /// `e` wins over our `live` version (or nothing): change the disk, from
    /// local content where we have it, or ask for it.
    fn take_winner(&mut self, peer: NodeId, e: Entry, live: Option<Entry>, batch: &mut Batch) {
        if e.deleted {
            if batch.renamed.contains(&e.path) {
                return;
            }
            match live {
                Some(l) => {
                    // Gone, it is no source for a rename later in the batch.
                    if let Some(moving) = batch.moving_away.get_mut(&l.hash) {
                        moving.retain(|(from, _)| from.path != l.path);
                    }
                    self.act(peer, Action::Delete { entry: e, local: l })
                }
                // Nothing on disk as far as the index knows: remember the
                // deletion. But a folder made on the way to something a
                // peer sent (its own version never applied here) may be
                // there: it goes if it is empty, or stays as the container
                // of what it holds (found by the workload, faults seed
                // 7200021815: it stayed forever, on that host alone).
                None => {
                    let on_the_way = e.kind == Kind::Dir && self.index.under(Some(&e.path)).any(|c| c.path != e.path);
                    let path = e.path.clone();
                    self.record(e, Some(peer));
                    if on_the_way {
                        self.remove_empty_dirs(vec![path]);
                    }
                }
            }
            return;
        }
        if e.kind == Kind::Dir {
            match live {
                Some(l) if l.kind == Kind::Dir && mode_on_disk(&l) == mode_on_disk(&e) && (e.xattrs.is_none() || e.xattrs == l.xattrs) => {
                    self.record(e, Some(peer))
                }
                // Nothing there, a file or link the folder replaces, or a
                // folder that takes another mode or extended attributes.
                local => self.act(peer, Action::MakeDir { entry: e, local }),
            }
            return;
        }
        let live = live.or_else(|| self.replaced_here(&e.path));
        if e.kind == Kind::Symlink {
            // Nothing to fetch: the entry holds the link.
            self.act(peer, Action::MakeLink { entry: e, local: live });
            return;
        }
        // A file whose content is already here needs no transfer.
        if let Some(l) = live.as_ref().filter(|l| l.kind == Kind::File && l.hash == e.hash) {
            let local = l.clone();
            self.act(peer, Action::SetMtime { entry: e, local });
            return;
        }
        // Never from below the path itself (a file replacing a folder):
        // that file cannot move onto its own folder, and its deletion
        // would be skipped as done, keeping the folder (found by the
        // workload's conflict-copy invariant, everyday seed 7100021312:
        // an empty file replaced a folder holding another empty file).
        let outside = |from: &Entry| !from.path.is_within(&e.path);
        let moved = batch.moving_away.get_mut(&e.hash).and_then(|v| {
            let i = v.iter().rposition(|(from, _)| outside(from))?;
            Some(v.remove(i))
        });
        if let Some((from, from_tombstone)) = moved {
            batch.renamed.insert(from.path.clone());
            let action = Action::Rename {
                from,
                from_tombstone,
                entry: e,
                local: live,
            };
            self.act(peer, action);
            return;
        }
        // Not from a path excluded here: its entry is the peers' version,
        // not what this disk holds.
        let copy_source = self
            .index
            .live_file_with_hash(&e.hash, |p| !self.excluded(p) && !p.is_within(&e.path));
        if let Some(from) = copy_source {
            self.act(
                peer,
                Action::Copy {
                    from,
                    entry: e,
                    local: live,
                },
            );
            return;
        }
        let path = e.path.clone();
        let need = Need {
            entry: e,
            sources: BTreeSet::from([peer]),
            first: peer,
            since: self.clock,
            whole: false,
        };
        self.wants.needs.insert(path.clone(), need);
        self.unschedule(path);
    }

    pub(super) fn act(&mut self, peer: NodeId, action: Action) {
        if matches!(&action, Action::Delete { local, .. } if local.kind == Kind::Dir) {
            // Transfers into the folder that its deletion superseded must
            // not keep it from being removed.
            self.abandon_superseded();
        }
        self.commands.push(Command::Apply { peer, action });
    }

    /// Ask for every needed version that is not already on its way, each of
    /// a connected peer that announced it: the one that owes us least, of
    /// those owing under half a window (`requests.rs`), each asked until
    /// its window is full. A version another connected peer lacks too is
    /// asked of a peer only while it owes us a few files (the shared
    /// window), so that the rest goes to whichever peer has it by then.
    /// What no peer may be asked for now waits.
    pub(super) fn schedule(&mut self) {
        let mut batch = Scheduled::default();
        let mut open: BTreeSet<NodeId> = self.peers.keys().copied().filter(|p| self.wants.inflight.owed(*p).open()).collect();
        // A window that opened takes what waits for it, in order, only as
        // much as fits: moving all that waits back into `to_schedule` after
        // every file received cost O(needs) per file, quadratic in a first
        // sync (20,000 small files: most of the receiver's CPU).
        for peer in open.clone() {
            while open.contains(&peer) {
                let Some(next) = self.wants.waiting_for_window.get_mut(&peer).and_then(BTreeSet::pop_first) else {
                    break;
                };
                if !self.schedule_one(next, &mut open, &mut batch) {
                    break; // it waits again: its shared window is full, or it waits for an offer
                }
            }
        }
        while let Some(next) = self.wants.to_schedule.pop_first() {
            self.schedule_one(next, &mut open, &mut batch);
        }
        let Scheduled { wants, deltas, swarms } = batch;
        for (peer, mut files) in wants {
            // Smallest first (then by path): the peer answers in this
            // order, so a batch's small files are not held back by its
            // large ones.
            files.sort_by_key(|f| (self.wants.needs.get(&f.path).map_or(0, |n| n.entry.size), f.path.clone()));
            for chunk in files.chunks(MAX_ENTRIES) {
                self.send(peer, Message::Want { files: chunk.to_vec() });
            }
        }
        self.commands.extend(deltas);
        for path in swarms {
            self.start_swarm(&path);
        }
    }

    /// Schedule the needed version of `path` (at `order`): ask a connected
    /// source with room in its window (`open`), or wait for one. False
    /// when it waits.
    fn schedule_one(&mut self, (order, path): (u64, RelPath), open: &mut BTreeSet<NodeId>, batch: &mut Scheduled) -> bool {
        #[cfg(test)]
        {
            self.wants.looked_at += 1;
        }
        // A swarm for another version than the one needed now ends.
        if let Some(s) = self.swarming.swarms.get(&path) {
            if self.wants.needs.get(&path).is_some_and(|n| same_version(&n.entry, &s.entry)) {
                return true;
            }
            self.end_swarm(&path);
        }
        let Some(need) = self.wants.needs.get(&path).filter(|_| !self.wants.inflight.contains_key(&path)) else {
            return true;
        };
        let connected: Vec<NodeId> = need.sources.iter().copied().filter(|p| self.peers.contains_key(p)).collect();
        // Pieces spread a large file; a small one spreads by the window,
        // and by waiting a while for the receiver that is first to fetch
        // it, while its one source is all that holds it.
        let shared = !self.swarmed(&need.entry) && self.peers.keys().any(|p| !need.sources.contains(p));
        if shared
            && connected.len() == 1
            && self.wants.inflight.owed(connected[0]).files > 0
            && self.clock < need.since + OFFER_WAIT
            && self.first_elsewhere(need)
        {
            self.wants.deferred = true;
            self.wants.waiting_for_window.entry(connected[0]).or_default().insert((order, path));
            return false;
        }
        let chosen = connected
            .iter()
            .copied()
            .filter(|p| open.contains(p) && (!shared || self.wants.inflight.owed(*p).room_for_shared()))
            .min_by_key(|p| {
                (
                    shared && *p == need.first,
                    self.wants.inflight.owed(*p).bytes,
                    schedule_order(*p, &path),
                )
            });
        let Some(peer) = chosen else {
            // No source connected (look again when one connects), or
            // none with room now (when one has).
            for source in &connected {
                self.wants
                    .waiting_for_window
                    .entry(*source)
                    .or_default()
                    .insert((order, path.clone()));
            }
            if connected.is_empty() {
                self.wants.without_source.insert((order, path));
            }
            return false;
        };
        let entry = need.entry.clone();
        let base = self
            .index
            .live(&path)
            .filter(|l| !need.whole && l.kind == Kind::File && l.size >= DELTA_MIN_SIZE && entry.size >= DELTA_MIN_SIZE);
        match base {
            None if self.swarmed(&entry) => batch.swarms.push(path),
            Some(base) => {
                self.wants.inflight.insert(path, Inflight::new(peer, entry.clone()));
                batch.deltas.push(Command::RequestDelta { peer, want: entry, base });
            }
            None => {
                let hash = entry.hash;
                self.wants.inflight.insert(path.clone(), Inflight::new(peer, entry));
                batch.wants.entry(peer).or_default().push(WantFile { path, hash: hash.into() });
            }
        }
        if self.wants.inflight.owed(peer).full() {
            open.remove(&peer);
        }
        true
    }

    /// Answer a peer's want: send the content if we still hold that version.
    fn serve(&mut self, peer: NodeId, path: &RelPath, hash: WantedHash, base: Option<(Hash, Vec<u8>)>) {
        match self.index.live(path) {
            Some(e) if e.kind == Kind::File && hash.names(&e.hash) && !self.unsynced(path, Kind::File) => {
                let entry = e.clone();
                let base = self.signature_room(peer, &entry, base);
                self.commands.push(Command::SendContent { peer, entry, base });
            }
            _ => {
                debug!(%path, %peer, "asked for a version we no longer hold");
                self.send(peer, Message::Unavailable { path: path.clone() });
            }
        }
    }

    pub(super) fn check_all_synced(&mut self) {
        let peers: Vec<NodeId> = self.peers.keys().copied().collect();
        for p in peers {
            self.check_synced(p);
        }
    }

    /// Log once per connection when everything `peer` offered is here.
    pub(super) fn check_synced(&mut self, peer: NodeId) {
        if self.peers.get(&peer).is_none_or(|p| p.synced || !p.index_done) {
            return;
        }
        let waiting = self.wants.needs.values().any(|n| n.sources.contains(&peer)) || self.wants.inflight.values().any(|i| i.peer == peer);
        let Some(p) = self.peers.get_mut(&peer) else { return };
        if p.index_done && !p.synced && !waiting {
            p.synced = true;
            info!(%peer, files = p.files_received, bytes = p.bytes_received, "synchronized");
        }
    }
}
