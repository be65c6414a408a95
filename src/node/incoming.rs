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
use crate::fs::pieces::{Arriving, PieceFile};
use crate::fs::receive::{Incoming, Received, Unfinished};
use crate::fs::store::Store;
use crate::fs::temp::TempFile;
use crate::transport::net::Net;
use crate::wire::{ContentMode, Entry, Message, NodeId, RelPath};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tracing::{debug, info};

/// Received files and whether each was made durable.
pub(super) type DurableBatch = Vec<((NodeId, Received), Result<(), String>)>;

/// Make `batch` durable (`TempFile::make_all_durable`), and close the
/// files, which only wait to be renamed into place now.
fn durable_batch(batch: Vec<(NodeId, Received)>) -> DurableBatch {
    let results = TempFile::make_all_durable(batch.iter().map(|(_, r)| (&r.tmp, &r.entry)));
    batch
        .into_iter()
        .zip(results.into_iter().map(|r| r.map_err(|e| e.to_string())))
        .map(|((peer, mut received), result)| {
            received.tmp.close();
            ((peer, received), result)
        })
        .collect()
}

/// How many received files may wait to be made durable while a batch is
/// (each holds its temp file open meanwhile); past it no new batch is
/// written (`write_next`), so at most this many wait, plus one written
/// batch and the files streamed meanwhile.
const MAX_WAITING_DURABLE: usize = 1024;

/// How many files of `files` frames, and how many of their bytes, may wait
/// to be written while a batch is; past either, each `files` frame keeps
/// its place among the frames in flight (`MAX_FRAMES_IN_FLIGHT`) until a
/// batch takes them, so the readers, and TCP behind them, hold the senders
/// back. The loop never writes them itself: it is the receiver's
/// bottleneck, and the writes it took on (a quarter of its time on small
/// files) left the writing thread idle.
const MAX_WAITING_WRITES: usize = 1024;
const MAX_WAITING_WRITE_BYTES: usize = 1 << 20;

/// A whole file of a `files` frame that the engine asked for and still
/// wants at its end: its temp file is made, written and verified off the
/// loop (`write_files`), where creating a file's inode was a third of a
/// receiving node's loop on small files.
pub(super) struct WholeFile {
    peer: NodeId,
    entry: Entry,
    expected: Option<Entry>,
    /// The deepest folder the index holds live (`Engine::folder_to_find`).
    folder: Option<RelPath>,
    data: Vec<u8>,
    wire_bytes: u64,
}

/// What writing each `WholeFile` came to: the received file, or the entry
/// and why not, and whether its temp file was lost (moved by the user).
pub(super) type Written = Vec<(NodeId, Result<Received, (Entry, String)>, bool)>;

/// Write and verify `files`, each to a new temp file.
fn write_files(store: &Store, files: Vec<WholeFile>) -> Written {
    files
        .into_iter()
        .map(|f| {
            let mut inc = Incoming::start(store, f.entry, ContentMode::Full, Ok(f.expected), f.folder, f.wire_bytes as usize);
            inc.chunk(&f.data, 0);
            let entry = inc.entry.clone();
            let received = inc
                .finish()
                .map_err(|Unfinished { reason, temp_lost }| (reason, temp_lost))
                .and_then(|mut r| match r.tmp.prepare_now(&r.entry) {
                    Ok(()) => Ok(r),
                    Err(e) => Err((e.to_string(), !r.tmp.discard())),
                });
            match received {
                Ok(r) => (f.peer, Ok(r), false),
                Err((reason, lost)) => (f.peer, Err((entry, reason)), lost),
            }
        })
        .collect()
}

/// The files on their way in.
pub(super) struct Arrivals {
    /// The file each peer is streaming now.
    streaming: BTreeMap<NodeId, Incoming>,
    /// Temp files of received files being made durable off the loop, or
    /// waiting for that.
    durable: HashSet<PathBuf>,
    /// Received files waiting for the batch under way to be durable.
    waiting: Vec<(NodeId, Received)>,
    /// A batch is being made durable off the loop.
    batch_under_way: bool,
    /// Files of `files` frames waiting to be written off the loop, and
    /// their bytes.
    to_write: Vec<WholeFile>,
    to_write_bytes: usize,
    /// Places among the frames in flight kept by `files` frames that
    /// found `to_write` full: given back when a batch takes it.
    frames_held: usize,
    /// A batch of them is being written off the loop: its temp files are
    /// in no list yet, so sweeping waits for it.
    writing: bool,
    /// A sweep was asked for while a batch was being written.
    sweep_after_writing: bool,
    /// Files being fetched in pieces (`super::pieces`).
    pub(super) pieces: BTreeMap<RelPath, PieceFile>,
    /// The piece each peer is sending now.
    pub(super) arriving: BTreeMap<NodeId, Arriving>,
    /// Folders abandoned temp files were swept from, for the engine
    /// (`take_swept`).
    swept: Vec<RelPath>,
    counters: Arc<Counters>,
}

impl Arrivals {
    pub fn new(counters: Arc<Counters>) -> Arrivals {
        Arrivals {
            streaming: BTreeMap::new(),
            durable: HashSet::new(),
            waiting: Vec::new(),
            batch_under_way: false,
            to_write: Vec::new(),
            to_write_bytes: 0,
            frames_held: 0,
            writing: false,
            sweep_after_writing: false,
            pieces: BTreeMap::new(),
            arriving: BTreeMap::new(),
            swept: Vec::new(),
            counters,
        }
    }

    /// A batch of received files is being made durable, or written, off
    /// the loop.
    pub fn batch_under_way(&self) -> bool {
        self.batch_under_way || self.writing
    }

    fn take_to_write(&mut self) -> Vec<WholeFile> {
        self.to_write_bytes = 0;
        std::mem::take(&mut self.to_write)
    }

    /// A batch of files written off the loop came back while the node
    /// stops.
    pub fn written_while_stopping(&mut self) {
        self.writing = false;
    }

    /// Content bytes already arrived of the file `peer` is streaming, if
    /// it was asked for.
    pub fn arrived_from(&self, peer: NodeId) -> u64 {
        self.streaming.get(&peer).filter(|i| i.wanted).map_or(0, |i| i.wire_bytes)
    }

    /// Drop the file `peer` was streaming (its connection is gone).
    pub fn drop_from(&mut self, peer: NodeId, store: &Store) {
        self.arriving.remove(&peer);
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
    pub fn sweep(&mut self, store: &Store) {
        if self.writing {
            self.sweep_after_writing = true;
            return;
        }
        let keep = self
            .streaming
            .values()
            .filter_map(|i| i.temp_path().map(std::path::Path::to_path_buf))
            .chain(self.pieces.values().filter_map(|p| p.writing().map(std::path::Path::to_path_buf)))
            .chain(self.durable.iter().cloned())
            .collect();
        let removed = store.remove_temp_files_except(&keep);
        if !removed.is_empty() {
            info!(count = removed.len(), "removed abandoned temp files");
            self.counters.temp_files_removed.fetch_add(removed.len() as u64, Ordering::Relaxed);
            self.swept.extend(removed.iter().filter_map(|t| store.folder_of(t)));
        }
    }

    /// The folders temp files were swept from since the last call.
    pub fn take_swept(&mut self) -> Vec<RelPath> {
        std::mem::take(&mut self.swept)
    }

    /// The swarm for `path` is over: its temp file goes (unless it was
    /// handed over to be installed). Where the user moved the folder it
    /// was written in, it is swept by name.
    pub fn end_pieces(&mut self, path: &RelPath, store: &Store) {
        self.arriving.retain(|_, a| a.path() != path);
        let Some(file) = self.pieces.remove(path) else { return };
        let lost = file.writing().is_some_and(|t| !t.exists());
        drop(file);
        if lost {
            self.sweep(store);
        }
    }

    /// Drop everything on its way (shutting down); returns how many
    /// transfers were abandoned. Nothing partial becomes visible.
    pub fn abandon_all(&mut self, store: &Store) -> usize {
        let abandoned = self.streaming.len() + self.pieces.values().filter(|p| p.writing().is_some()).count();
        // Dropping an `Incoming` or a `PieceFile` removes its temp file.
        self.streaming.clear();
        self.pieces.clear();
        self.sweep(store);
        abandoned
    }
}

impl<N: Net> Node<N> {
    pub(super) fn on_file_start(&mut self, peer: NodeId, entry: Entry, content: ContentMode, bytes: usize) {
        let (expected, folder) = self.file_started(peer, &entry);
        let inc = Incoming::start(&self.store, entry, content, expected, folder, bytes);
        self.arrivals.streaming.insert(peer, inc);
    }

    /// The engine hears `entry`'s content begin: what the path must still
    /// hold if it is wanted (else why not), and the folder to write into.
    fn file_started(&mut self, peer: NodeId, entry: &Entry) -> (Result<Option<Entry>, String>, Option<RelPath>) {
        let expected = match self.engine.handle_file_start(peer, entry) {
            Receive::Write { expected } => Ok(expected),
            Receive::Drop { reason } => {
                debug!(%peer, %reason, path = %entry.path, "discarding content");
                Err(reason)
            }
        };
        (expected, self.engine.folder_to_find(&entry.path))
    }

    /// The engine hears a chunk of `bytes` content bytes from `peer`.
    fn chunk_heard(&mut self, peer: NodeId, bytes: usize) {
        self.engine.handle_chunk(peer);
        if let Some(p) = self.peers.get(peer) {
            p.traffic.bytes_received.fetch_add(bytes as u64, Ordering::Relaxed);
        }
    }

    /// A `Files` frame: each file asked of `peer` goes the way of a
    /// `FileStart`, its content and a `FileEnd` in the engine; the files
    /// still wanted are written off the loop (`write_next`), the others
    /// dropped.
    pub(super) fn on_files(&mut self, peer: NodeId, frame: &Message, bytes: usize) {
        let Message::Files { files, contents } = frame else { return };
        let asked = self.engine.handle_files(peer, frame);
        // The frame's own bytes, shared out (for the per-file wire bytes).
        let share = bytes.saturating_sub(contents.len()) / files.len().max(1);
        let mut rest = contents.as_slice();
        for (head, entry) in files.iter().zip(asked) {
            // The sizes add up to the payload (checked by the decoder).
            let Some((data, after)) = rest.split_at_checked(head.size as usize) else {
                break;
            };
            rest = after;
            let Some(entry) = entry else { continue };
            let (expected, folder) = self.file_started(peer, &entry);
            self.chunk_heard(peer, data.len());
            // As `on_file_end`: content the engine no longer wants is dropped.
            if let Receive::Drop { .. } = self.engine.handle_file_end(peer) {
                continue;
            }
            match expected {
                Ok(expected) => {
                    self.arrivals.to_write_bytes += data.len();
                    self.arrivals.to_write.push(WholeFile {
                        peer,
                        entry,
                        expected,
                        folder,
                        data: data.to_vec(),
                        wire_bytes: (share + data.len()) as u64,
                    });
                }
                Err(reason) => {
                    Counters::bump(&self.cfg.counters.failures);
                    self.engine.handle_received(peer, entry, Transfer::Full, Err(reason));
                }
            }
        }
        self.write_next();
        let full = self.arrivals.to_write.len() >= MAX_WAITING_WRITES || self.arrivals.to_write_bytes >= MAX_WAITING_WRITE_BYTES;
        // A batch is written or made durable now (`write_next` could not
        // start one), and its end calls `write_next`, which lets go.
        if full && self.frame_credit.try_send(()).is_ok() {
            self.arrivals.frames_held += 1;
        }
    }

    /// Start writing the waiting files of `files` frames, as one batch,
    /// unless one is under way or too many written files wait to be made
    /// durable already (then the next durable batch starts it).
    fn write_next(&mut self) {
        if self.arrivals.writing || self.arrivals.to_write.is_empty() || self.arrivals.waiting.len() >= MAX_WAITING_DURABLE {
            return;
        }
        let files = self.arrivals.take_to_write();
        self.arrivals.writing = true;
        for _ in 0..std::mem::take(&mut self.arrivals.frames_held) {
            let _ = self.frames_in_flight.try_recv();
        }
        let (net, events, store) = (self.net.clone(), self.events.clone(), self.store.clone());
        self.net.spawn(async move {
            let written = net.spawn_blocking(move || write_files(&store, files)).await;
            let _ = events.send(Event::Written(written)).await;
        });
    }

    /// A batch of files was written: on to durability, or tell the engine
    /// why not; then the next batch.
    pub(super) fn on_written(&mut self, written: Written) {
        self.arrivals.writing = false;
        self.take_written(written);
        if std::mem::take(&mut self.arrivals.sweep_after_writing) {
            self.arrivals.sweep(&self.store);
        }
        self.write_next();
    }

    fn take_written(&mut self, written: Written) {
        for (peer, result, lost) in written {
            match result {
                Ok(received) => self.make_durable(peer, received),
                Err((entry, reason)) => {
                    if lost {
                        self.arrivals.sweep(&self.store);
                    }
                    Counters::bump(&self.cfg.counters.failures);
                    self.engine.handle_received(peer, entry, Transfer::Full, Err(reason));
                }
            }
        }
    }

    pub(super) fn on_chunk(&mut self, peer: NodeId, data: &[u8], bytes: usize) {
        self.chunk_heard(peer, bytes);
        if let Some(inc) = self.arrivals.streaming.get_mut(&peer) {
            inc.chunk(data, bytes);
        }
    }

    pub(super) fn on_file_end(&mut self, peer: NodeId) {
        let decision = self.engine.handle_file_end(peer);
        let Some(inc) = self.arrivals.streaming.remove(&peer) else {
            return;
        };
        if let Receive::Drop { .. } = decision {
            return self.arrivals.discard(inc, &self.store);
        }
        let (entry, transfer) = (inc.entry.clone(), inc.transfer);
        match inc.finish() {
            Ok(received) => self.make_durable(peer, received),
            Err(Unfinished { reason, temp_lost }) => {
                if temp_lost {
                    self.arrivals.sweep(&self.store);
                }
                Counters::bump(&self.cfg.counters.failures);
                self.engine.handle_received(peer, entry, transfer, Err(reason));
            }
        }
    }

    /// The engine no longer wants the file `peer` is streaming: stop
    /// writing it (its temp file goes now, later chunks are ignored).
    pub(super) fn abandon(&mut self, peer: NodeId, reason: String) {
        if let Some(inc) = self.arrivals.streaming.get_mut(&peer) {
            inc.abandon(reason);
        }
    }

    /// Make a received file durable off the loop, by group commit: while
    /// one batch is flushed the next gathers, and each batch costs one
    /// flush (`TempFile::make_all_durable`), however many files it holds.
    /// A file alone goes at once. `install` follows on the loop.
    pub(super) fn make_durable(&mut self, peer: NodeId, received: Received) {
        self.arrivals.durable.insert(received.tmp.path.clone());
        self.arrivals.waiting.push((peer, received));
        if !self.arrivals.batch_under_way {
            self.flush_durable();
        }
    }

    /// Start making the waiting files durable, as one batch.
    fn flush_durable(&mut self) {
        let batch = std::mem::take(&mut self.arrivals.waiting);
        if batch.is_empty() {
            return;
        }
        self.arrivals.batch_under_way = true;
        let (net, events) = (self.net.clone(), self.events.clone());
        self.net.spawn(async move {
            let done = net.spawn_blocking(move || durable_batch(batch)).await;
            let _ = events.send(Event::Durable(done)).await;
        });
    }

    /// A batch was made durable (or not): put each file in place, and
    /// start the next batch.
    pub(super) fn on_durable(&mut self, done: DurableBatch) {
        self.finish_batch(done);
        self.flush_durable();
        self.write_next();
    }

    /// Put the files of the batch under way in place.
    pub(super) fn finish_batch(&mut self, done: DurableBatch) {
        self.arrivals.batch_under_way = false;
        self.install_all(done);
    }

    /// Put a batch of durable received files in place: first ask the
    /// engine which are still wanted, then make those versions durable in
    /// the index's install journal, then rename each. A crash after a
    /// rename and before the index's next commit leaves a file the restart
    /// finds in the journal, with its history, instead of a new file of
    /// ours (issue 24, case 1).
    fn install_all(&mut self, done: DurableBatch) {
        let mut wanted = Vec::with_capacity(done.len());
        for ((peer, received), durable) in done {
            self.arrivals.durable.remove(&received.tmp.path);
            // What the path must hold is what it held when the transfer
            // began: a local edit made since is never overwritten.
            if let Receive::Write { .. } = self.engine.handle_durable(peer, &received.entry) {
                wanted.push((peer, received, durable));
            } else if !received.tmp.discard() {
                self.arrivals.sweep(&self.store);
            }
        }
        let journal: Vec<Entry> = wanted
            .iter()
            .filter(|(_, _, durable)| durable.is_ok())
            .map(|(_, r, _)| r.entry.clone())
            .collect();
        let journaled = self
            .engine
            .index_mut()
            .journal_installs(&journal)
            .map_err(|e| format!("recording the install: {e}"));
        for (peer, received, durable) in wanted {
            let durable = durable.and_then(|()| journaled.clone());
            self.install(peer, received, durable);
        }
    }

    /// Put a durable received file in place (the engine still wants it,
    /// and its version is in the install journal), and tell the engine.
    fn install(&mut self, peer: NodeId, received: Received, durable: Result<(), String>) {
        let Received {
            entry,
            mut tmp,
            expected,
            wire_bytes,
            transfer,
        } = received;
        let action = if expected.is_some() { "modify" } else { "create" };
        let installed = durable.and_then(|()| self.store.install(&mut tmp, &entry, expected.as_ref()).map_err(|e| e.to_string()));
        let stat = installed.as_ref().ok().copied().flatten();
        let result = installed.map(|_| wire_bytes);
        match &result {
            Ok(wire_bytes) => {
                let mode = match transfer {
                    Transfer::Delta => "delta",
                    Transfer::Full => "full",
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
                // A temp file no longer at its name (the user moved its
                // folder) is swept by name.
                if !tmp.discard() {
                    self.arrivals.sweep(&self.store);
                }
            }
        }
        self.engine.handle_received(peer, entry.clone(), transfer, result);
        if let Some(stat) = stat {
            self.engine.handle_installed(&entry, stat);
        }
    }
}
