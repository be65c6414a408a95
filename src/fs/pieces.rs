//! Pieces on disk: the piece map of a file we hold, and the temp file a
//! file fetched in pieces is written into (`engine::swarm` decides what
//! to fetch and from whom; `wire::pieces` says how a file is cut).
//!
//! Owns: writing pieces at their place and hashing each as it arrives.
//! Must not: decide whether a piece is good (the engine compares its
//! value with the map).

use crate::engine::Transfer;
use crate::fs::receive::Received;
use crate::fs::store::Store;
use crate::fs::temp::TempFile;
use crate::wire::pieces::{root_of, Layout, PieceHasher, PieceValue};
use crate::wire::{Entry, RelPath};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The piece map of our copy of `entry`, cut in pieces of `piece_size`:
/// each piece's chaining value, concatenated. `Err` if the file is not
/// that version any more (or cannot be read).
pub fn piece_map(store: &Store, entry: &Entry, piece_size: u64) -> Result<Vec<u8>, String> {
    let layout = Layout::new(entry.size, piece_size).ok_or("not a file of several pieces")?;
    let mut file = store.open_version(entry).ok_or("changed since it was announced")?;
    let mut values = Vec::with_capacity(layout.count() as usize);
    let mut buf = vec![0u8; piece_size.min(entry.size) as usize];
    for index in 0..layout.count() {
        let Some((offset, len)) = layout.range(index) else { break };
        let piece = &mut buf[..len as usize];
        file.read_exact(piece).map_err(|e| e.to_string())?;
        let mut h = PieceHasher::new(offset);
        h.update_rayon(piece);
        values.push(h.value());
    }
    // The file may have changed while it was read.
    if root_of(&values) != Some(entry.hash) {
        return Err("changed while its piece map was made".into());
    }
    Ok(values.concat())
}

/// A file being fetched in pieces: its temp file, into which pieces land
/// at their place in any order (the gaps read as zeros and take no disk).
/// The temp file (and the folders on its way) is made when the first
/// piece arrives: an announcement whose content never comes leaves nothing
/// on disk (found by the simulation, hostile seed 21000079).
pub struct PieceFile {
    pub entry: Entry,
    /// What the path must still hold when the file replaces it.
    expected: Option<Entry>,
    /// `None` until the first piece, and once handed over to be made
    /// durable and installed.
    tmp: Option<TempFile>,
    /// Where the pieces are, to serve them (while the temp file exists).
    temp_path: Option<PathBuf>,
    /// What the pieces cost on the wire.
    wire_bytes: u64,
}

impl PieceFile {
    pub fn new(entry: Entry, expected: Option<Entry>) -> PieceFile {
        PieceFile {
            entry,
            expected,
            tmp: None,
            temp_path: None,
            wire_bytes: 0,
        }
    }

    /// The temp file, while it is still being written.
    pub fn writing(&self) -> Option<&Path> {
        self.tmp.as_ref().map(|t| t.path.as_path())
    }

    /// Where the pieces are, since the first arrived.
    pub fn temp_path(&self) -> Option<&Path> {
        self.temp_path.as_deref()
    }

    /// Write `data` at `at` in the file; `frame_bytes` it cost.
    pub fn write(&mut self, store: &Store, at: u64, data: &[u8], frame_bytes: usize) -> Result<(), String> {
        self.wire_bytes += frame_bytes as u64;
        if self.tmp.is_none() && self.temp_path.is_none() {
            let tmp = store.create_temp(&self.entry.path).map_err(|e| e.to_string())?;
            self.temp_path = Some(tmp.path.clone());
            self.tmp = Some(tmp);
        }
        let tmp = self.tmp.as_ref().ok_or("no temp file")?;
        tmp.write_at(at, data).map_err(|e| e.to_string())
    }

    /// Every piece is here and verified (their values merge to the
    /// entry's hash): hand the file over to be made durable and installed.
    pub fn finish(&mut self) -> Option<Received> {
        Some(Received {
            entry: self.entry.clone(),
            tmp: self.tmp.take()?,
            expected: self.expected.clone(),
            wire_bytes: self.wire_bytes,
            transfer: Transfer::Full,
        })
    }
}

/// The piece a peer is sending now: its bytes come in order.
pub struct Arriving {
    path: RelPath,
    index: u64,
    /// The offset in the piece the next bytes must have.
    next: u64,
    hasher: PieceHasher,
}

impl Arriving {
    /// Bytes at `offset` in piece `index` of `path`, which starts at
    /// `start` in the file. `None` if they do not continue this piece
    /// and do not start another.
    pub fn next(current: Option<Arriving>, path: &RelPath, index: u64, start: u64, offset: u64) -> Option<Arriving> {
        match current {
            Some(a) if &a.path == path && a.index == index && a.next == offset => Some(a),
            _ if offset == 0 => Some(Arriving {
                path: path.clone(),
                index,
                next: 0,
                hasher: PieceHasher::new(start),
            }),
            _ => None,
        }
    }

    /// Add `data`; the piece's value once it has `piece_len` bytes.
    pub fn add(&mut self, data: &[u8], piece_len: u64) -> Option<PieceValue> {
        self.hasher.update(data);
        self.next += data.len() as u64;
        (self.next == piece_len && piece_len > 0).then(|| self.hasher.value())
    }

    pub fn path(&self) -> &RelPath {
        &self.path
    }
}
