//! What a peer may have waiting in our writer for it, and what happens
//! past that: a delta request whose signature would take the signatures
//! waiting past `MAX_QUEUED_SIGNATURE_BYTES` is answered with the whole
//! file (which needs no signature kept), and a peer with more than our
//! index's size plus `QUEUE_SLACK` jobs waiting (it asks faster than it
//! reads) is disconnected. The node tells what waits
//! (`handle_send_queue`) before each message of the peer.
//!
//! Owns: those two limits. Must not: count the writer's queue itself (the
//! node does, and reports it).

use super::{Command, Engine};
use crate::wire::{Entry, Hash, NodeId};
use tracing::debug;

/// Jobs a peer may have waiting in its writer's queue beyond one per entry
/// of our index. A peer that reads asks each path at most once at a time,
/// so it stays under `index size + this`; one that keeps asking without
/// reading (each `want` of 4096 paths compresses to a few hundred bytes,
/// and costs us 4096 queued jobs) is disconnected before it exhausts memory.
pub const QUEUE_SLACK: usize = 64 * 1024;
/// Signature bytes (from the peer's `want_delta`s, up to 16 MiB each) that
/// may wait in a writer's queue. Past this a delta request is answered
/// with the whole file, which needs no signature kept.
pub const MAX_QUEUED_SIGNATURE_BYTES: usize = 64 * 1024 * 1024;

/// What waits in a peer's writer: as the node last told, plus what this
/// engine queued for it since.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct SendQueue {
    jobs: usize,
    signature_bytes: usize,
}

impl Engine {
    /// `jobs` jobs wait in `peer`'s writer now, holding `signature_bytes`
    /// bytes of the peer's signatures.
    pub fn handle_send_queue(&mut self, peer: NodeId, jobs: usize, signature_bytes: usize) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.send_queue = SendQueue { jobs, signature_bytes };
        }
    }

    /// The base to send `entry` to `peer` as a delta against, if its
    /// signature still fits beside those waiting (else the whole file).
    pub(super) fn signature_room(&mut self, peer: NodeId, entry: &Entry, base: Option<(Hash, Vec<u8>)>) -> Option<(Hash, Vec<u8>)> {
        let p = self.peers.get_mut(&peer)?;
        let (_, sig) = base.as_ref()?;
        if p.send_queue.signature_bytes + sig.len() > MAX_QUEUED_SIGNATURE_BYTES {
            debug!(%peer, path = %entry.path, "signature queue full; sending the whole file");
            return None;
        }
        p.send_queue.signature_bytes += sig.len();
        base
    }

    /// The commands from `from` on were queued for `peer` by one of its
    /// messages: past `QUEUE_SLACK` more jobs than our index holds, the
    /// peer asks faster than it reads and is disconnected.
    pub(super) fn check_send_queue(&mut self, peer: NodeId, from: usize) {
        let queued = self.commands[from..].iter().filter(|c| goes_to_writer(c, peer)).count();
        let Some(p) = self.peers.get_mut(&peer) else { return };
        p.send_queue.jobs += queued;
        let limit = self.index.len() + QUEUE_SLACK;
        if p.send_queue.jobs > limit {
            let reason = format!("{} jobs queued: the peer asks faster than it reads", p.send_queue.jobs);
            self.commands.push(Command::Close { peer, reason });
        }
    }
}

/// Whether `c` is work for `peer`'s writer (a disk action for a version
/// `peer` sent is not).
fn goes_to_writer(c: &Command, peer: NodeId) -> bool {
    match c {
        Command::Send { peer: p, .. }
        | Command::SendContent { peer: p, .. }
        | Command::RequestDelta { peer: p, .. }
        | Command::SendPieceMap { peer: p, .. }
        | Command::SendPiece { peer: p, .. } => *p == peer,
        _ => false,
    }
}
