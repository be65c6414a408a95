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
use super::{Command, Engine, IndexPoint, Peer};
use crate::wire::{Entry, Message, NodeId, RelPath, MAX_ENTRIES};
use std::collections::BTreeSet;

/// Where the index being sent to a peer goes on from.
#[derive(Debug, Clone)]
pub(super) enum Sending {
    /// All of it, in path order, after this path.
    Paths(Option<RelPath>),
    /// The changes after this sequence number.
    Changes(u64),
}

impl Engine {
    /// A connection with `peer` (whose directory is `device`) finished
    /// its handshake: ask for its index, from where we left it.
    pub fn handle_connected(&mut self, peer: NodeId, device: NodeId, version: u32) {
        if let Some(reason) = &self.suspended {
            let reason = format!("not syncing: {reason}");
            self.commands.push(Command::Close { peer, reason });
            return;
        }
        self.peers.insert(
            peer,
            Peer {
                device,
                version,
                ..Peer::default()
            },
        );
        // Needs whose sources were all away may have one again.
        let without_source = std::mem::take(&mut self.wants.without_source);
        self.wants.to_schedule.extend(without_source);
        let ours = self.exchange_identity(version);
        let (identity, since) = match self.index.peer_mark(device) {
            Some(m) if m.ours == ours => (m.identity, m.seq),
            _ => (0, 0),
        };
        self.send(peer, Message::IndexRequest { identity, since });
    }

    /// Our index's identity as the peers see it: the database's, the
    /// ignore rules, which decide what we send and what we take, and the
    /// protocol version spoken, which decides what the index holds as the
    /// peer sees it (a peer that upgrades takes it whole once more).
    pub(super) fn exchange_identity(&self, version: u32) -> u64 {
        let mut h = blake3::Hasher::new();
        h.update(&self.index.identity().to_le_bytes());
        h.update(&version.to_le_bytes());
        if let Some(rules) = self.filters.ignore.source() {
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
        let incremental = identity == self.exchange_identity(self.version_of(peer)) && since <= self.index.seq();
        self.send_index(peer, if incremental { since } else { 0 });
    }

    /// Send `peer` our index's changes after `since` (0: all of it): the
    /// head and the first part now, each further part when the peer asks
    /// for it (`IndexMore`).
    pub(super) fn send_index(&mut self, peer: NodeId, since: u64) {
        let head = Message::IndexHead {
            identity: self.exchange_identity(self.version_of(peer)),
            since,
            seq: self.index.seq(),
        };
        self.send(peer, head);
        let from = if since == 0 {
            Sending::Paths(None)
        } else {
            Sending::Changes(since)
        };
        if let Some(p) = self.peers.get_mut(&peer) {
            p.sending = Some(from);
        }
        self.send_index_part(peer);
    }

    /// The next part of the index being sent to `peer`, at most
    /// `MAX_ENTRIES` entries; `done` on the last.
    pub(super) fn send_index_part(&mut self, peer: NodeId) {
        let Some(from) = self.peers.get_mut(&peer).and_then(|p| p.sending.take()) else {
            return;
        };
        let mut entries = Vec::new();
        let mut next = from.clone();
        let mut more = false;
        let entries_from: Box<dyn Iterator<Item = (Sending, Entry)> + '_> = match &from {
            Sending::Paths(after) => Box::new(self.index.after(after.as_ref()).map(|e| (Sending::Paths(Some(e.path.clone())), e))),
            Sending::Changes(after) => Box::new(self.index.since(*after).map(|(seq, e)| (Sending::Changes(seq), e))),
        };
        for (at, e) in entries_from {
            if entries.len() == MAX_ENTRIES {
                more = true;
                break;
            }
            if !self.unsynced(&e.path, e.kind) {
                entries.push(e);
            }
            next = at;
        }
        if let Some(p) = self.peers.get_mut(&peer).filter(|_| more) {
            p.sending = Some(next);
        }
        self.send(peer, Message::Index { entries, done: !more });
    }

    /// Ask each peer with more of its index for us for its next part, once
    /// fewer than `MAX_ENTRIES` versions wait to be fetched: a peer's index
    /// of a million new files becomes a million needs in memory only a
    /// part at a time.
    pub(super) fn ask_for_more_index(&mut self) {
        if self.wants.needs.len() >= MAX_ENTRIES {
            return;
        }
        let ready: Vec<NodeId> = self.peers.iter().filter(|(_, p)| p.more_index).map(|(id, _)| *id).collect();
        for peer in ready {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.more_index = false;
            }
            self.send(peer, Message::IndexMore);
        }
    }

    /// Our ignore rules changed: what we skipped may matter now, so every
    /// peer sends its whole index again, and nothing is remembered of it
    /// under the old rules.
    pub(super) fn ask_again_for_indexes(&mut self) {
        let peers: Vec<NodeId> = self.peers.keys().copied().collect();
        for peer in peers {
            if let Some(p) = self.peers.get_mut(&peer) {
                p.taken_up_to = None;
                p.head = None;
            }
            self.send(peer, Message::IndexRequest { identity: 0, since: 0 });
        }
    }

    /// Remember how far each peer's index has come, where everything up
    /// to there is settled (see the module header).
    pub(super) fn remember_progress(&mut self) {
        let stale: Vec<(NodeId, NodeId, PeerMark)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.index_done && p.streaming.is_none())
            .filter_map(|(id, p)| {
                let IndexPoint { identity, seq } = p.taken_up_to?;
                let ours = self.exchange_identity(p.version);
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
        self.wants
            .needs
            .values()
            .flat_map(|n| n.sources.iter().copied())
            .chain(self.wants.inflight.values().map(|i| i.peer))
            .chain(self.upkeep.retries.values().map(|r| r.peer))
            .collect()
    }
}
