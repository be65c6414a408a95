//! Swarm transfers: a file of two pieces or more (`wire::pieces`) that
//! has no older copy here to take a delta against is fetched in pieces,
//! from every connected peer that holds them: the peers that announced
//! the version, and the peers still receiving it that said which pieces
//! they hold (`Have`). So one node's new file reaches seven peers in about
//! the time it reaches one: they pass pieces on to each other instead of
//! all pulling the whole file from the one source.
//!
//! How: first the piece map (`PieceMapWant`), from anyone, checked against
//! the entry's hash; then at most `PIECES_PER_PEER` pieces asked of each
//! peer at a time, rarest first, with ties broken by a hash of our node id
//! and the piece, so that receivers ask for different pieces and have
//! something to give each other. Each piece is checked against its map
//! value before it counts (and before it is served): a bad piece is asked
//! again elsewhere and its sender is counted, and disconnected after
//! `MAX_BAD_FROM_PEER`. A piece asked of a slow peer is asked elsewhere after
//! `PIECE_TIMEOUT`, when someone else holds it.
//!
//! Owns: the swarm state and its decisions. The node writes the pieces to
//! one temp file per swarm, hashes them, and serves them from there.

use super::index::{beats, same_version};
use super::{Command, Engine, PieceArrival, PieceFrame};
use crate::wire::pieces::{check_map, piece_size_for, Bitmap, Layout, PieceValue, MAX_PIECES};
use crate::wire::{Entry, Hash, Kind, Message, NodeId, RelPath};
use std::collections::{BTreeMap, BTreeSet};
use tracing::{debug, warn};

/// Pieces asked of one peer still receiving the file at a time: enough to
/// keep its link busy while the next request travels, few enough that the
/// rest of the file stays free to be asked of whoever gets a piece first.
pub(super) const PIECES_PER_PEER: usize = 2;
/// Pieces asked at a time of a peer that holds the whole file (the source
/// of a new file) while other receivers are known: its uplink is what
/// every receiver waits for, so it is asked for one piece at a time, one
/// no receiver can pass on, and the pieces it sends differ from one
/// receiver to the next (at 200 Mbit/s a 512 KiB piece takes ~20 ms, the
/// next request well under one).
pub(super) const PIECES_PER_SOURCE: usize = 1;
/// The same with no other receiver known (one to one): enough to keep a
/// fast link busy between requests (a 512 MiB file on loopback with a
/// cluster key took 1.93x a raw copy with one at a time, 1.12x with four).
pub(super) const PIECES_PER_LONE_SOURCE: usize = 4;
/// A piece not arrived after this long is asked of someone else.
pub(super) const PIECE_TIMEOUT: i128 = 30_000_000_000;
/// Bad pieces (or maps) a peer may send before it is disconnected and
/// never asked for a piece again.
pub(super) const MAX_BAD_FROM_PEER: u32 = 3;

/// A file being fetched in pieces.
#[derive(Debug)]
pub(super) struct Swarm {
    pub entry: Entry,
    map: Option<PieceMap>,
    /// The peer asked for the map, and when.
    map_asked: Option<(NodeId, i128)>,
    /// What peers still receiving the file told us they hold.
    holders: BTreeMap<NodeId, Bitmap>,
    /// Pieces asked for: piece → (peer, when).
    asked: BTreeMap<u64, (NodeId, i128)>,
    /// (piece, peer) pairs not to ask again: the peer was slow or sent a
    /// bad copy of it.
    avoid: BTreeSet<(u64, NodeId)>,
    /// Peers that cannot serve this file (they said so, or sent a bad map).
    refused: BTreeSet<NodeId>,
}

impl Swarm {
    /// Whether `peer` holds piece `i`: it holds the whole file (`full`),
    /// or said it holds that piece.
    fn holds(&self, full: &[NodeId], peer: NodeId, i: u64) -> bool {
        full.contains(&peer) || self.holders.get(&peer).is_some_and(|b| b.get(i))
    }

    /// How many pieces `peer` is asked for now.
    fn asked_of(&self, peer: NodeId) -> usize {
        self.asked.values().filter(|(p, _)| *p == peer).count()
    }
}

/// A verified piece map and the pieces we hold.
#[derive(Debug)]
struct PieceMap {
    layout: Layout,
    values: Vec<PieceValue>,
    have: Bitmap,
    /// Pieces all of zeros (checked by the node against their values):
    /// never asked for, left as holes in the file.
    zeros: Bitmap,
    /// The same as ranges `[first, end)`, as the map came.
    zero_ranges: Vec<(u64, u64)>,
}

impl PieceMap {
    /// Piece `i` is neither here nor a hole.
    fn lacks(&self, i: u64) -> bool {
        !self.have.get(i) && !self.zeros.get(i)
    }

    fn complete(&self) -> bool {
        self.have.count_ones() + self.zeros.count_ones() == self.layout.count()
    }
}

/// The pieces `ranges` name, if each lies in a file of `count` pieces and
/// none twice.
fn zero_bitmap(ranges: &[(u64, u64)], count: u64) -> Option<Bitmap> {
    let mut zeros = Bitmap::empty(count);
    for &(first, end) in ranges {
        if first >= end || end > count {
            return None;
        }
        for i in first..end {
            if zeros.get(i) {
                return None;
            }
            zeros.set(i);
        }
    }
    Some(zeros)
}

/// Where piece `index` comes among equally rare pieces for node `me`: a
/// hash of both (splitmix64's finalizer), so that every receiver takes
/// them in an order of its own. (Each taking them in file order from a
/// start of its own made convoys: a receiver that reached another's start
/// then asked the source for the same pieces as that one, and the source
/// sent 1.71x the file to 7 receivers in W6, against 1.32x in random
/// orders.)
fn tie_break(me: NodeId, index: u64) -> u64 {
    let mut z = me.0 ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Engine {
    /// Whether `entry` is fetched in pieces (when no delta applies).
    pub(super) fn swarmed(&self, entry: &Entry) -> bool {
        self.own_layout(entry.size).is_some()
    }

    /// The layout of our own copy of a file of `size` bytes.
    fn own_layout(&self, size: u64) -> Option<Layout> {
        Layout::new(size, piece_size_for(size, self.swarming.piece_size))
    }

    /// Start fetching the needed version of `path` in pieces.
    pub(super) fn start_swarm(&mut self, path: &RelPath) {
        let Some(need) = self.wants.needs.get(path) else { return };
        let entry = need.entry.clone();
        debug!(%path, size = entry.size, "fetching in pieces");
        self.commands.push(Command::StartPieces {
            entry: entry.clone(),
            expected: self.index.live(path),
        });
        self.swarming.swarms.insert(
            path.clone(),
            Swarm {
                entry,
                map: None,
                map_asked: None,
                holders: BTreeMap::new(),
                asked: BTreeMap::new(),
                avoid: BTreeSet::new(),
                refused: BTreeSet::new(),
            },
        );
        self.drive(path);
    }

    /// Stop fetching `path` in pieces (its temp file goes, and then the
    /// deleted folders it alone kept).
    pub(super) fn end_swarm(&mut self, path: &RelPath) {
        if self.swarming.swarms.remove(path).is_some() {
            self.commands.push(Command::EndPieces { path: path.clone() });
            self.vacated(path);
        }
    }

    /// `e` is in the index now: a swarm for an older version ends.
    pub(super) fn settle_swarm(&mut self, e: &Entry) {
        if self.swarming.swarms.get(&e.path).is_some_and(|s| !beats(&s.entry, e)) {
            self.end_swarm(&e.path);
        }
    }

    /// True if content of `entry` is what the swarm for its path fetches.
    pub(super) fn swarm_fetches(&self, entry: &Entry) -> bool {
        self.swarming.swarms.get(&entry.path).is_some_and(|s| same_version(&s.entry, entry))
    }

    /// The peers that announced the version the swarm fetches (they hold
    /// it whole), connected and willing.
    fn full_holders(&self, path: &RelPath, s: &Swarm) -> Vec<NodeId> {
        let Some(need) = self.wants.needs.get(path).filter(|n| same_version(&n.entry, &s.entry)) else {
            return Vec::new();
        };
        need.sources.iter().copied().filter(|p| self.may_ask(s, *p)).collect()
    }

    fn may_ask(&self, s: &Swarm, peer: NodeId) -> bool {
        self.peers.contains_key(&peer)
            && !s.refused.contains(&peer)
            && self.swarming.bad_pieces_from.get(&peer).is_none_or(|n| *n < MAX_BAD_FROM_PEER)
    }

    /// Ask for what the swarm for `path` lacks: its map, or pieces from
    /// each peer with room for more requests. A swarm no peer can finish
    /// is given up, and tried again later (`retry_later`).
    pub(super) fn drive(&mut self, path: &RelPath) {
        let Some(s) = self.swarming.swarms.get(path) else { return };
        let full = self.full_holders(path, s);
        let partial: Vec<NodeId> = s.holders.keys().copied().filter(|p| self.may_ask(s, *p)).collect();
        let Some(map) = &s.map else {
            if s.map_asked.is_some_and(|(p, _)| self.peers.contains_key(&p)) {
                return;
            }
            match full.iter().chain(&partial).next().copied() {
                Some(peer) => {
                    let hash = s.entry.hash;
                    if let Some(s) = self.swarming.swarms.get_mut(path) {
                        s.map_asked = Some((peer, self.clock));
                    }
                    self.send(peer, Message::PieceMapWant { path: path.clone(), hash });
                }
                None => self.swarm_stuck(path),
            }
            return;
        };
        let count = map.layout.count();
        let holds = |peer: NodeId, i: u64| s.holds(&full, peer, i);
        // Receivers first: they take the pieces they can pass on. (A peer
        // that said what it held and holds the whole file since counts as
        // a whole holder: found by the simulation, keyed seed 11000034,
        // where no one was asked for anything any more.)
        let receivers: Vec<NodeId> = partial.iter().copied().filter(|p| !full.contains(p)).collect();
        let passed_on = |i: u64| {
            receivers
                .iter()
                .any(|p| s.holders.get(p).is_some_and(|b| b.get(i)) && !s.avoid.contains(&(i, *p)))
        };
        let mut peers = receivers.clone();
        peers.extend(&full);
        // Pieces still to ask for, and how many peers hold each.
        let mut missing: Vec<(u64, usize, u64)> = (0..count)
            .filter(|i| map.lacks(*i) && !s.asked.contains_key(i))
            .map(|i| (i, peers.iter().filter(|p| holds(**p, i)).count(), tie_break(self.me, i)))
            .collect();
        missing.sort_by_key(|(i, rarity, tie)| (*rarity, *tie, *i));
        let mut requests = Vec::new();
        let mut taken = BTreeSet::new();
        for peer in &peers {
            let source = full.contains(peer);
            let slots = match (source, receivers.is_empty()) {
                (true, true) => PIECES_PER_LONE_SOURCE,
                (true, false) => PIECES_PER_SOURCE,
                (false, _) => PIECES_PER_PEER,
            };
            let mut room = slots.saturating_sub(s.asked_of(*peer));
            for (i, _, _) in &missing {
                if room == 0 {
                    break;
                }
                if source && passed_on(*i) {
                    continue;
                }
                // A peer that was slow with a piece, or sent it bad, is
                // asked for it again only when no one else holds it.
                let avoided =
                    s.avoid.contains(&(*i, *peer)) && peers.iter().any(|o| o != peer && holds(*o, *i) && !s.avoid.contains(&(*i, *o)));
                if holds(*peer, *i) && !avoided && !taken.contains(i) {
                    taken.insert(*i);
                    requests.push((*peer, *i));
                    room -= 1;
                }
            }
        }
        let stuck = requests.is_empty() && s.asked.is_empty() && !missing.is_empty() && missing.iter().all(|(_, rarity, _)| *rarity == 0);
        let hash = s.entry.hash;
        let clock = self.clock;
        if let Some(s) = self.swarming.swarms.get_mut(path) {
            for (peer, i) in &requests {
                s.asked.insert(*i, (*peer, clock));
            }
        }
        if !requests.is_empty() {
            debug!(%path, ?requests, "asking for pieces");
        }
        for (peer, index) in requests {
            self.send(
                peer,
                Message::PieceWant {
                    path: path.clone(),
                    hash,
                    index,
                },
            );
        }
        if stuck {
            self.swarm_stuck(path);
        }
    }

    /// No connected peer holds what the swarm for `path` lacks: give it up
    /// and try again later (a source may come back).
    fn swarm_stuck(&mut self, path: &RelPath) {
        debug!(%path, "no connected peer holds the missing pieces");
        self.give_up_swarm(path, "no connected peer holds the missing pieces".into());
    }

    /// End the swarm for `path` and try its version again later.
    fn give_up_swarm(&mut self, path: &RelPath, reason: String) {
        let Some(s) = self.swarming.swarms.get(path) else { return };
        let entry = s.entry.clone();
        let peer = self
            .wants
            .needs
            .get(path)
            .and_then(|n| n.sources.iter().next().copied())
            .or_else(|| s.holders.keys().next().copied())
            .unwrap_or(self.me);
        self.end_swarm(path);
        self.retry_later(peer, entry, reason);
    }

    /// Drive every swarm (after a peer came or went, or time passed).
    pub(super) fn drive_all(&mut self) {
        let paths: Vec<RelPath> = self.swarming.swarms.keys().cloned().collect();
        for path in paths {
            self.drive(&path);
        }
    }

    /// Time passed: requests a slow peer has not answered go to others
    /// that hold the piece (kept if no one else does).
    pub(super) fn swarm_timeouts(&mut self) {
        let clock = self.clock;
        let paths: Vec<RelPath> = self.swarming.swarms.keys().cloned().collect();
        for path in &paths {
            let Some(s) = self.swarming.swarms.get(path) else { continue };
            let full = self.full_holders(path, s);
            // (piece, peer, whether another peer we may ask holds it)
            let late: Vec<(u64, NodeId, bool)> = s
                .asked
                .iter()
                .filter(|(_, (_, at))| at + PIECE_TIMEOUT <= clock)
                .map(|(i, (p, _))| (*i, *p, self.askable_holder(s, &full, *i, Some(*p))))
                .collect();
            let Some(s) = self.swarming.swarms.get_mut(path) else { continue };
            if s.map_asked.is_some_and(|(_, at)| at + PIECE_TIMEOUT <= clock) {
                if let Some((peer, _)) = s.map_asked.take() {
                    s.refused.insert(peer);
                }
            }
            for (i, peer, elsewhere) in late {
                if elsewhere {
                    debug!(%path, piece = i, %peer, "piece late: asking elsewhere");
                    s.asked.remove(&i);
                    s.avoid.insert((i, peer));
                } else {
                    // The only holder: asking it again would only send
                    // the piece twice.
                    s.asked.insert(i, (peer, clock));
                }
            }
        }
        self.drive_all();
    }

    /// `peer` is gone: its requests are asked elsewhere.
    pub(super) fn swarm_peer_gone(&mut self, peer: NodeId) {
        for s in self.swarming.swarms.values_mut() {
            s.asked.retain(|_, (p, _)| *p != peer);
            s.holders.remove(&peer);
            if s.map_asked.is_some_and(|(p, _)| p == peer) {
                s.map_asked = None;
            }
        }
    }

    /// `peer` cannot serve the swarm for `path` (`Unavailable`): ask others.
    pub(super) fn swarm_unavailable(&mut self, peer: NodeId, path: &RelPath) {
        let Some(s) = self.swarming.swarms.get_mut(path) else { return };
        s.refused.insert(peer);
        s.asked.retain(|_, (p, _)| *p != peer);
        s.holders.remove(&peer);
        if s.map_asked.is_some_and(|(p, _)| p == peer) {
            s.map_asked = None;
        }
        if let Some(n) = self.wants.needs.get_mut(path) {
            n.sources.remove(&peer);
        }
        self.drive(path);
    }

    /// A `PieceMap` from `peer`; `zeros`, the pieces of zeros it names, as
    /// far as the node found them true (`fs::pieces::checked_zeros`).
    pub(super) fn handle_piece_map(
        &mut self,
        peer: NodeId,
        path: &RelPath,
        hash: Hash,
        piece_size: u64,
        values: &[u8],
        zeros: Vec<(u64, u64)>,
    ) {
        let Some(s) = self
            .swarming
            .swarms
            .get_mut(path)
            .filter(|s| s.entry.hash == hash && s.map.is_none())
        else {
            return;
        };
        if s.map_asked.is_some_and(|(p, _)| p == peer) {
            s.map_asked = None;
        }
        debug!(%path, %peer, "piece map");
        let layout = Layout::new(s.entry.size, piece_size);
        let checked = layout.and_then(|l| Some((l, check_map(values, l, hash)?, zero_bitmap(&zeros, l.count())?)));
        match checked {
            Some((layout, values, zero_set)) => {
                let map = PieceMap {
                    layout,
                    have: Bitmap::empty(layout.count()),
                    values,
                    zeros: zero_set,
                    zero_ranges: zeros,
                };
                // A file of nothing but holes needs no piece at all.
                if map.complete() {
                    self.commands.push(Command::FinishPieces { path: path.clone(), peer });
                }
                s.map = Some(map);
            }
            None => {
                s.refused.insert(peer);
                self.count_bad_from(peer, path, "a piece map that does not match the file");
            }
        }
        self.drive(path);
    }

    /// A `Have` from `peer`: the pieces it holds of a file it is receiving.
    pub(super) fn handle_have(&mut self, peer: NodeId, path: &RelPath, hash: Hash, pieces: Vec<u8>) {
        let Some(s) = self.swarming.swarms.get_mut(path).filter(|s| s.entry.hash == hash) else {
            return;
        };
        if pieces.len() as u64 > MAX_PIECES.div_ceil(8) {
            return;
        }
        s.holders.insert(peer, Bitmap::from(pieces));
        // A peer already asked for all it may be asked changes no request
        // now (every receiver sends a `have` per piece to every peer: a
        // pass over the whole file for each would cost O(pieces²)).
        let busy = s.map.is_some() && s.asked_of(peer) >= PIECES_PER_PEER;
        if !busy {
            self.drive(path);
        }
    }

    /// A `PieceMapWant`: the map of our copy (computed by the node), the
    /// map of the file we are receiving, or `Unavailable`.
    pub(super) fn serve_piece_map(&mut self, peer: NodeId, path: &RelPath, hash: Hash) {
        if let Some(entry) = self.servable(path, hash) {
            if let Some(layout) = self.own_layout(entry.size) {
                let piece_size = layout.piece_size;
                return self.commands.push(Command::SendPieceMap { peer, entry, piece_size });
            }
        }
        if let Some((s, map)) = self.swarming.swarms.get(path).and_then(|s| Some(s).zip(s.map.as_ref())) {
            if s.entry.hash == hash {
                let msg = Message::PieceMap {
                    path: path.clone(),
                    hash,
                    piece_size: map.layout.piece_size,
                    values: map.values.concat(),
                    zeros: map.zero_ranges.clone(),
                };
                return self.send(peer, msg);
            }
        }
        self.send(peer, Message::Unavailable { path: path.clone() });
    }

    /// A `PieceWant`: the piece from our copy, or from the temp file of
    /// the swarm that holds it, or `Unavailable`.
    pub(super) fn serve_piece(&mut self, peer: NodeId, path: &RelPath, hash: Hash, index: u64) {
        let own = self
            .servable(path, hash)
            .and_then(|e| Some(e.clone()).zip(self.own_layout(e.size)?.range(index)));
        if let Some((entry, (offset, len))) = own {
            return self.commands.push(Command::SendPiece {
                peer,
                entry,
                index,
                offset,
                len,
                from_temp: false,
            });
        }
        let partial = self.swarming.swarms.get(path).filter(|s| s.entry.hash == hash).and_then(|s| {
            let map = s.map.as_ref().filter(|m| m.have.get(index))?;
            Some((s.entry.clone(), map.layout.range(index)?))
        });
        match partial {
            Some((entry, (offset, len))) => self.commands.push(Command::SendPiece {
                peer,
                entry,
                index,
                offset,
                len,
                from_temp: true,
            }),
            None => self.send(peer, Message::Unavailable { path: path.clone() }),
        }
    }

    /// Our live file at `path` if it has content `hash` and may be served.
    fn servable(&self, path: &RelPath, hash: Hash) -> Option<Entry> {
        self.index
            .live(path)
            .filter(|e| e.kind == Kind::File && e.hash == hash && !self.unsynced(path, Kind::File))
    }

    /// Bytes of piece `index` from `peer` (a `Piece` frame of `len` bytes
    /// at `offset` in the piece): where to write them, if they answer our
    /// request.
    pub fn handle_piece(&mut self, peer: NodeId, path: &RelPath, hash: Hash, index: u64, offset: u64, len: u64) -> PieceFrame {
        let range = self
            .swarming
            .swarms
            .get(path)
            .filter(|s| s.entry.hash == hash && s.asked.get(&index).is_some_and(|(p, _)| *p == peer))
            .and_then(|s| s.map.as_ref()?.layout.range(index));
        // Not asked of this peer (any more): a late answer, dropped.
        let Some((start, piece_len)) = range else { return PieceFrame::Drop };
        if offset.checked_add(len).is_none_or(|end| end > piece_len) {
            let reason = format!("piece {index} of {path}: bytes beyond the piece");
            self.commands.push(Command::Close { peer, reason });
            return PieceFrame::Drop;
        }
        PieceFrame::Write { start, piece_len }
    }

    /// Piece `index` of `path` from `peer` is in our temp file, with
    /// chaining value `value` (`Err`: writing it failed here).
    pub fn handle_piece_done(&mut self, peer: NodeId, path: &RelPath, index: u64, arrival: PieceArrival) {
        let Some(s) = self
            .swarming
            .swarms
            .get_mut(path)
            .filter(|s| s.asked.get(&index).is_some_and(|(p, _)| *p == peer))
        else {
            return;
        };
        s.asked.remove(&index);
        debug!(%path, %peer, index, ?arrival, "piece arrived");
        let Some(map) = s.map.as_mut() else { return };
        match arrival {
            PieceArrival::Value(v) if map.values.get(index as usize) == Some(&v) => {
                map.have.set(index);
                let (hash, pieces, done) = (s.entry.hash, map.have.bytes().to_vec(), map.complete());
                self.swarming.pieces_received += 1;
                let peers: Vec<NodeId> = self.peers.keys().copied().collect();
                for p in peers {
                    let pieces = pieces.clone();
                    self.send(
                        p,
                        Message::Have {
                            path: path.clone(),
                            hash,
                            pieces,
                        },
                    );
                }
                if done {
                    self.commands.push(Command::FinishPieces { path: path.clone(), peer });
                }
            }
            PieceArrival::Value(_) | PieceArrival::Broken => {
                s.avoid.insert((index, peer));
                self.count_bad_from(peer, path, &format!("piece {index} that does not match its hash"));
            }
            PieceArrival::Failed(reason) => return self.give_up_swarm(path, reason),
        }
        self.drive(path);
    }

    /// `peer` sent something that fails its hash: count it, and after
    /// `MAX_BAD_FROM_PEER` disconnect it (and never ask it for a piece again).
    fn count_bad_from(&mut self, peer: NodeId, path: &RelPath, what: &str) {
        self.swarming.bad_pieces += 1;
        let bad = self.swarming.bad_pieces_from.entry(peer).or_default();
        *bad += 1;
        warn!(%peer, %path, bad_from_peer = *bad, "the peer sent {what}; asking elsewhere");
        if *bad == MAX_BAD_FROM_PEER {
            let reason = format!("sent {MAX_BAD_FROM_PEER} pieces that fail their hash");
            self.commands.push(Command::Close { peer, reason });
        }
    }

    /// Whether a peer we may ask, other than `except`, holds piece `i`
    /// (`full`: the swarm's whole holders).
    fn askable_holder(&self, s: &Swarm, full: &[NodeId], i: u64, except: Option<NodeId>) -> bool {
        full.iter()
            .chain(s.holders.keys())
            .any(|p| Some(*p) != except && self.may_ask(s, *p) && s.holds(full, *p, i))
    }

    /// The swarm for `path` makes progress: a piece (or the map) is asked
    /// of someone, or no connected peer we may ask holds what it lacks
    /// (then it waits for a tick, or was given up). `None`: no swarm.
    #[cfg(test)]
    pub(super) fn swarm_progresses(&self, path: &RelPath) -> Option<bool> {
        let s = self.swarming.swarms.get(path)?;
        let full = self.full_holders(path, s);
        let holders = |i: u64| self.askable_holder(s, &full, i, None);
        Some(match &s.map {
            None => s.map_asked.is_some() || !full.iter().chain(s.holders.keys()).any(|p| self.may_ask(s, *p)),
            Some(map) => {
                let missing: Vec<u64> = (0..map.layout.count()).filter(|i| map.lacks(*i)).collect();
                missing.is_empty() || !s.asked.is_empty() || !missing.iter().any(|i| holders(*i))
            }
        })
    }

    /// Pieces received and verified, and bad ones refused, since start.
    pub fn piece_counts(&self) -> (u64, u64) {
        (self.swarming.pieces_received, self.swarming.bad_pieces)
    }
}
