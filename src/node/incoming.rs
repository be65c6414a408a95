//! The incoming-file pipeline: a peer's `FileStart`, `Chunk`s and `FileEnd`
//! become a verified temp file (`fs::receive::Incoming`), which is made
//! durable off the event loop, then installed in place, each step only if
//! the engine still wants that content.
//!
//! Owns: the files being received, the temp files being made durable, and
//! sweeping the temp files no transfer owns. Must not: decide whether
//! content is wanted (the engine does, once per frame).

use super::{Counters, Event, Node};
use crate::engine::{Receive, Transfer};
use crate::fs::receive::{Incoming, Received};
use crate::fs::store::Store;
use crate::transport::net::Net;
use crate::wire::{ContentMode, Entry, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tracing::{debug, info};

/// How many received files may be made durable at once off the event loop
/// (each holds its temp file open meanwhile).
const MAX_DURABLE_JOBS: usize = 32;

/// The files on their way in.
pub(super) struct Receiving {
    /// The file each peer is streaming now.
    streaming: BTreeMap<NodeId, Incoming>,
    /// Temp files of received files being made durable off the loop.
    durable: BTreeSet<PathBuf>,
    counters: Arc<Counters>,
}

impl Receiving {
    pub fn new(counters: Arc<Counters>) -> Receiving {
        Receiving {
            streaming: BTreeMap::new(),
            durable: BTreeSet::new(),
            counters,
        }
    }

    /// Content bytes already arrived of the file `peer` is streaming, if
    /// it was asked for.
    pub fn arrived_from(&self, peer: NodeId) -> u64 {
        self.streaming.get(&peer).filter(|i| i.wanted).map_or(0, |i| i.wire_bytes)
    }

    /// Drop the file `peer` was streaming (its connection is gone).
    pub fn drop_from(&mut self, peer: NodeId, store: &Store) {
        if let Some(inc) = self.streaming.remove(&peer) {
            self.discard(inc, store);
        }
    }

    /// Drop an incoming file, removing its temp file. Where the user moved
    /// the folder it was written in, the temp file is swept by name.
    fn discard(&mut self, inc: Incoming, store: &Store) {
        let lost = inc.temp_lost();
        drop(inc);
        if lost {
            self.sweep(store);
        }
    }

    /// Remove the temp files no transfer in progress owns. One is abandoned
    /// where it cannot be removed by name: the user moved the folder it was
    /// being written in (found by the simulation).
    pub fn sweep(&self, store: &Store) {
        let keep = self
            .streaming
            .values()
            .filter_map(|i| i.temp_path().map(std::path::Path::to_path_buf))
            .chain(self.durable.iter().cloned())
            .collect();
        let removed = store.remove_temp_files_except(&keep);
        if removed > 0 {
            info!(count = removed, "removed abandoned temp files");
            self.counters.temp_files_removed.fetch_add(removed as u64, Ordering::Relaxed);
        }
    }

    /// Drop everything on its way (shutting down); returns how many
    /// transfers were abandoned. Nothing partial becomes visible.
    pub fn abandon_all(&mut self, store: &Store) -> usize {
        let abandoned = self.streaming.len();
        // Dropping an `Incoming` removes its temp file.
        self.streaming.clear();
        self.sweep(store);
        abandoned
    }
}

impl<N: Net> Node<N> {
    pub(super) fn on_file_start(&mut self, peer: NodeId, entry: Entry, content: ContentMode, bytes: usize) {
        let expected = match self.engine.handle_file_start(peer, &entry) {
            Receive::Violation => return,
            Receive::Write { expected } => Ok(expected),
            Receive::Drop { reason } => {
                debug!(%peer, %reason, "discarding content");
                Err(reason)
            }
        };
        let inc = Incoming::start(&self.store, entry, content, expected, bytes);
        self.receiving.streaming.insert(peer, inc);
    }

    pub(super) fn on_chunk(&mut self, peer: NodeId, data: &[u8], bytes: usize) {
        if !self.engine.handle_chunk(peer) {
            return;
        }
        if let Some(inc) = self.receiving.streaming.get_mut(&peer) {
            inc.chunk(data, bytes);
        }
        if let Some(p) = self.peers.get(peer) {
            p.traffic.bytes_received.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    pub(super) fn on_file_end(&mut self, peer: NodeId) {
        let decision = self.engine.handle_file_end(peer);
        let Some(inc) = self.receiving.streaming.remove(&peer) else {
            return;
        };
        if let Receive::Drop { .. } | Receive::Violation = decision {
            return self.receiving.discard(inc, &self.store);
        }
        let (entry, transfer) = (inc.entry.clone(), inc.transfer);
        let lost = inc.temp_lost();
        match inc.finish() {
            Ok(received) => self.make_durable(peer, received),
            Err(reason) => {
                if lost {
                    self.receiving.sweep(&self.store);
                }
                Counters::bump(&self.cfg.counters.failures);
                self.engine.handle_received(peer, entry, transfer, Err(reason));
            }
        }
    }

    /// The engine no longer wants the file `peer` is streaming: stop
    /// writing it (its temp file goes now, later chunks are ignored).
    pub(super) fn abandon(&mut self, peer: NodeId, reason: String) {
        if let Some(inc) = self.receiving.streaming.get_mut(&peer) {
            inc.abandon(reason);
        }
    }

    /// fsync a received file off the loop, so that many files are flushed
    /// at once (an initial sync of small files waited on each fsync in turn
    /// before); `install` follows on the loop. Beyond `MAX_DURABLE_JOBS` the
    /// loop does it itself, which holds the senders back.
    fn make_durable(&mut self, peer: NodeId, received: Received) {
        if self.receiving.durable.len() >= MAX_DURABLE_JOBS {
            let result = received.tmp.make_durable(&received.entry).map_err(|e| e.to_string());
            return self.install(peer, received, result);
        }
        self.receiving.durable.insert(received.tmp.path.clone());
        let (net, events) = (self.net.clone(), self.events.clone());
        self.net.spawn(async move {
            let (received, result) = net
                .spawn_blocking(move || {
                    let result = received.tmp.make_durable(&received.entry).map_err(|e| e.to_string());
                    (received, result)
                })
                .await;
            let _ = events.send(Event::Durable { peer, received, result }).await;
        });
    }

    /// Put a durable received file in place, unless it was superseded
    /// meanwhile, and tell the engine.
    pub(super) fn install(&mut self, peer: NodeId, received: Received, durable: Result<(), String>) {
        let Received {
            entry,
            tmp,
            expected,
            wire_bytes,
            transfer,
        } = received;
        self.receiving.durable.remove(&tmp.path);
        // What the path must hold is what it held when the transfer began:
        // a local edit made since is never overwritten.
        let Receive::Write { .. } = self.engine.handle_durable(peer, &entry) else {
            if !tmp.discard() {
                self.receiving.sweep(&self.store);
            }
            return;
        };
        let action = if expected.is_some() { "modify" } else { "create" };
        let lost = !tmp.path.exists();
        let result = durable
            .and_then(|()| self.store.install(tmp, &entry, expected.as_ref()).map_err(|e| e.to_string()))
            .map(|()| wire_bytes);
        match &result {
            Ok(wire_bytes) => {
                let mode = match transfer {
                    Transfer::Delta => "delta",
                    Transfer::Whole => "full",
                };
                info!(path = %entry.path, action, %peer, mode, wire_bytes, "applied");
                let counters = &self.cfg.counters;
                counters.content_bytes_received.fetch_add(*wire_bytes, Ordering::Relaxed);
                Counters::bump(&counters.files_received);
                if transfer == Transfer::Delta {
                    Counters::bump(&counters.deltas_received);
                }
            }
            Err(_) => {
                Counters::bump(&self.cfg.counters.failures);
                if lost {
                    self.receiving.sweep(&self.store);
                }
            }
        }
        self.engine.handle_received(peer, entry, transfer, result);
    }
}
