//! Files fetched in pieces (`engine::swarm` decides), and the pieces and
//! piece maps this node serves.
//!
//! Owns: the swarms' temp files (through `Arrivals`), writing and hashing
//! pieces as they arrive, and the piece maps of our files, made off the
//! loop and kept for a while (every receiver of a new file asks for its
//! map at about the same time). Must not: judge a piece (the engine
//! compares its value with the map).

use super::{Counters, Event, Node};
use crate::engine::{PieceArrival, PieceFrame, Transfer, Unsent};
use crate::fs::pieces::{checked_zeros, piece_map, Arriving, MapOfPieces, PieceFile};
use crate::transport::jobs::{Job, PieceJob};
use crate::transport::net::Net;
use crate::wire::pieces::Layout;
use crate::wire::{Entry, Hash, Message, NodeId, RelPath};
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::atomic::Ordering;
use tracing::debug;

/// Piece maps kept after they were made.
const MAPS_KEPT: usize = 8;

/// A piece map made off the loop: for `entry`, in pieces of `piece_size`.
pub(super) struct MadeMap {
    entry: Entry,
    piece_size: u64,
    map: Result<MapOfPieces, String>,
}

/// Piece maps of our files: made lately, and being made with the peers
/// waiting for each.
#[derive(Default)]
pub(super) struct Maps {
    made: VecDeque<((RelPath, Hash), u64, MapOfPieces)>,
    waiting: BTreeMap<(RelPath, Hash), Vec<NodeId>>,
}

impl<N: Net> Node<N> {
    /// A swarm starts (its temp file comes with its first piece).
    pub(super) fn start_pieces(&mut self, entry: Entry, expected: Option<Entry>) {
        let path = entry.path.clone();
        self.arrivals.pieces.insert(path, PieceFile::new(entry, expected));
    }

    /// Bytes of a piece from `peer`: written in place and hashed; a whole
    /// piece goes to the engine to be judged.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_piece(&mut self, peer: NodeId, path: &RelPath, hash: Hash, index: u64, offset: u64, data: &[u8], bytes: usize) {
        if let Some(p) = self.peers.get(peer) {
            p.traffic.bytes_received.fetch_add(bytes as u64, Ordering::Relaxed);
        }
        let PieceFrame::Write { start, piece_len } = self.engine.handle_piece(peer, path, hash, index, offset, data.len() as u64) else {
            return;
        };
        let current = self.arrivals.arriving.remove(&peer);
        let skips_zeros = self.peers.get(peer).is_some_and(|p| p.sparse_pieces);
        let Some((mut arriving, zeros)) = Arriving::next(current, path, index, start, offset, skips_zeros) else {
            // Not where this piece stands, nor a new one: a broken sender.
            return self.engine.handle_piece_done(peer, path, index, PieceArrival::Broken);
        };
        let Some(file) = self.arrivals.pieces.get_mut(path) else { return };
        // The zeros it skipped are zeros here too (a hole, or over what a
        // bad copy of the piece left).
        let written = match zeros {
            0 => Ok(()),
            n => file.write_zeros(&self.store, start + offset - n, n),
        };
        if let Err(e) = written.and_then(|()| file.write(&self.store, start + offset, data, bytes)) {
            Counters::bump(&self.cfg.counters.failures);
            return self.engine.handle_piece_done(peer, path, index, PieceArrival::Failed(e));
        }
        match arriving.add(data, piece_len) {
            Some(value) => self.engine.handle_piece_done(peer, path, index, PieceArrival::Value(value)),
            None => {
                self.arrivals.arriving.insert(peer, arriving);
            }
        }
    }

    /// Every piece of `path` is here: make it durable and install it.
    pub(super) fn finish_pieces(&mut self, path: &RelPath, peer: NodeId) {
        let Some(file) = self.arrivals.pieces.get_mut(path) else { return };
        match file.finish(&self.store) {
            Ok(Some(received)) => self.make_durable(peer, received),
            Ok(None) => {}
            Err(reason) => {
                let entry = file.entry.clone();
                self.engine.handle_received(peer, entry, Transfer::Full, Err(reason));
            }
        }
    }

    /// Send `peer` a piece, from the swarm's temp file while it holds it.
    pub(super) fn send_piece(&mut self, peer: NodeId, entry: Entry, index: u64, offset: u64, len: u64, from_temp: bool) {
        let temp = match from_temp {
            true => self
                .arrivals
                .pieces
                .get(&entry.path)
                .and_then(|p| p.temp_path().map(Path::to_path_buf)),
            false => None,
        };
        Counters::bump(&self.cfg.counters.pieces_sent);
        let piece = PieceJob {
            entry,
            index,
            offset,
            len,
            temp,
        };
        self.queue(peer, Job::Piece(piece));
    }

    /// Send `peer` the piece map of our copy of `entry`: made lately, or
    /// made now off the loop (once, however many peers ask meanwhile).
    pub(super) fn send_piece_map(&mut self, peer: NodeId, entry: Entry, piece_size: u64) {
        let key = (entry.path.clone(), entry.hash);
        if let Some((_, size, map)) = self.maps.made.iter().find(|(k, size, _)| *k == key && *size == piece_size) {
            let msg = Message::PieceMap {
                path: entry.path,
                hash: entry.hash,
                piece_size: *size,
                values: map.values.clone(),
                zeros: map.zeros.clone(),
            };
            return self.queue(peer, Job::Send(msg));
        }
        let waiting = self.maps.waiting.entry(key).or_default();
        waiting.push(peer);
        if waiting.len() > 1 {
            return;
        }
        let (net, events, store) = (self.net.clone(), self.events.clone(), self.store.clone());
        self.net.spawn(async move {
            let made = net
                .spawn_blocking(move || {
                    let map = piece_map(&store, &entry, piece_size);
                    MadeMap { entry, piece_size, map }
                })
                .await;
            let _ = events.send(Event::PieceMap(made)).await;
        });
    }

    /// A peer's piece map names pieces of zeros: check each against its
    /// value off the loop (a hash of the piece's length each) before the
    /// engine leaves them as holes. Claims that fail, or a map for a file
    /// not being fetched here, reach the engine without them.
    pub(super) fn check_zeros(&mut self, peer: NodeId, mut map: Message) {
        let size = match &map {
            Message::PieceMap { path, .. } => self.arrivals.pieces.get(path).map(|p| p.entry.size),
            _ => None,
        };
        let (net, events) = (self.net.clone(), self.events.clone());
        self.net.spawn(async move {
            let map = net
                .spawn_blocking(move || {
                    if let Message::PieceMap {
                        piece_size, values, zeros, ..
                    } = &mut map
                    {
                        let layout = size.and_then(|size| Layout::new(size, *piece_size));
                        *zeros = layout.and_then(|l| checked_zeros(zeros, values, l)).unwrap_or_default();
                    }
                    map
                })
                .await;
            let _ = events.send(Event::ZerosChecked { peer, map }).await;
        });
    }

    /// A piece map was made (or not): answer the peers waiting for it.
    pub(super) fn on_piece_map(&mut self, made: MadeMap) {
        let MadeMap { entry, piece_size, map } = made;
        let key = (entry.path.clone(), entry.hash);
        let peers = self.maps.waiting.remove(&key).unwrap_or_default();
        let map = match map {
            Ok(map) => map,
            Err(reason) => {
                // Our copy changed (or cannot be read): the engine says
                // what the peers waiting for it get instead.
                debug!(path = %entry.path, %reason, "no piece map");
                for peer in peers {
                    self.engine.handle_unsent(peer, Unsent::CopyChanged { entry: entry.clone() });
                }
                return;
            }
        };
        if self.maps.made.len() == MAPS_KEPT {
            self.maps.made.pop_front();
        }
        self.maps.made.push_back((key, piece_size, map.clone()));
        let msg = Message::PieceMap {
            path: entry.path,
            hash: entry.hash,
            piece_size,
            values: map.values,
            zeros: map.zeros,
        };
        for peer in peers {
            self.queue(peer, Job::Send(msg.clone()));
        }
    }
}
