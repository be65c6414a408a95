//! The index exchange: what each side sends on connect, incrementally.
//!
//! Every change of an index gets the next number of that index's sequence
//! (`Index::seq`). On connect each side asks the other for the changes
//! after the number it remembers for it (`IndexRequest`), and the answer
//! (`IndexHead`, then `Index` parts) holds only those: a reconnect with
//! nothing changed costs a few hundred bytes, with k changes O(k). Changes
//! made while connected travel as `Update`s, and `TreeDigest` tells how far
//! they have come. The whole index travels when the remembered identity is
//! not the peer's any more (a wiped state directory, other ignore rules on
//! either side) or when nothing is remembered.
//!
//! A peer's number is remembered (`PeerMark`, committed with the index)
//! only once everything it announced up to it is settled here: a need
//! still open, a transfer under way or a retry waiting holds it back, so a
//! crash or a disconnect never skips a change that was not taken.

use super::index::PeerMark;
use super::{Command, Engine, Heard, Peer};
use crate::wire::{Message, NodeId, MAX_ENTRIES};
use std::collections::BTreeSet;

impl Engine {
    /// A connection with `peer` (whose directory is `device`) finished
    /// its handshake: ask for its index, from where we left it.
    pub fn handle_connected(&mut self, peer: NodeId, device: NodeId) {
        if let Some(reason) = &self.suspended {
            let reason = format!("not syncing: {reason}");
            self.commands.push(Command::Close { peer, reason });
            return;
        }
        self.peers.insert(peer, Peer { device, ..Peer::default() });
        let ours = self.exchange_identity();
        let (identity, since) = match self.index.peer_mark(device) {
            Some(m) if m.ours == ours => (m.identity, m.seq),
            _ => (0, 0),
        };
        self.send(peer, Message::IndexRequest { identity, since });
    }

    /// Our index's identity as the peers see it: the database's, and the
    /// ignore rules, which decide what we send and what we take.
    pub(super) fn exchange_identity(&self) -> u64 {
        let mut h = blake3::Hasher::new();
        h.update(&self.index.identity().to_le_bytes());
        if let Some(rules) = self.ignore.source() {
            h.update(&rules.0);
        }
        let mut first = [0; 8];
        first.copy_from_slice(&h.finalize().as_bytes()[..8]);
        u64::from_le_bytes(first).max(1)
    }

    /// `peer` asks for our changes after `since` in index `identity`.
    pub(super) fn answer_index_request(&mut self, peer: NodeId, identity: u64, since: u64) {
        // A number from the future: our index went back (a restored
        // backup), and its numbers are being used again.
        let incremental = identity == self.exchange_identity() && since <= self.index.seq();
        self.send_index(peer, if incremental { since } else { 0 });
    }

    /// Send `peer` our index's changes after `since` (0: all of it), in
    /// parts of at most `MAX_ENTRIES`.
    pub(super) fn send_index(&mut self, peer: NodeId, since: u64) {
        let head = Message::IndexHead {
            identity: self.exchange_identity(),
            since,
            seq: self.index.seq(),
        };
        self.send(peer, head);
        let entries = if since == 0 { self.index.iter() } else { self.index.since(since) };
        let mut parts = Vec::new();
        let mut part = Vec::new();
        for e in entries.filter(|e| !self.ignored(&e.path, e.kind)) {
            part.push(e);
            if part.len() == MAX_ENTRIES {
                parts.push(std::mem::take(&mut part));
            }
        }
        if !part.is_empty() || parts.is_empty() {
            parts.push(part);
        }
        let last = parts.len() - 1;
        for (i, entries) in parts.into_iter().enumerate() {
            self.send(peer, Message::Index { entries, done: i == last });
        }
    }

    /// Our ignore rules changed: what we skipped may matter now, so every
    /// peer sends its whole index again, and nothing is remembered of it
    /// under the old rules.
    pub(super) fn ask_again_for_indexes(&mut self) {
        let peers: Vec<NodeId> = self.peers.keys().copied().collect();
        for peer in peers {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.heard = None;
                p.head = None;
            }
            self.send(peer, Message::IndexRequest { identity: 0, since: 0 });
        }
    }

    /// Remember how far each peer's index has come, where everything up
    /// to there is settled (see the module header).
    pub(super) fn remember_progress(&mut self) {
        let ours = self.exchange_identity();
        let stale: Vec<(NodeId, NodeId, PeerMark)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.index_done && p.receiving.is_none())
            .filter_map(|(id, p)| {
                let Heard { identity, seq } = p.heard?;
                let mark = PeerMark { identity, seq, ours };
                (self.index.peer_mark(p.device) != Some(mark)).then_some((*id, p.device, mark))
            })
            .collect();
        if stale.is_empty() {
            return;
        }
        let busy = self.busy_peers();
        for (_, device, mark) in stale.into_iter().filter(|(id, _, _)| !busy.contains(id)) {
            self.index.set_peer_mark(device, mark);
        }
    }

    /// Peers something is on its way from: a need, a request, a retry.
    pub(super) fn busy_peers(&self) -> BTreeSet<NodeId> {
        self.needs
            .values()
            .flat_map(|n| n.sources.iter().copied())
            .chain(self.inflight.values().map(|i| i.peer))
            .chain(self.retries.values().map(|r| r.peer))
            .collect()
    }
}
