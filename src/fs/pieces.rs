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

/// The piece map of a file: each piece's chaining value, concatenated,
/// and the ranges `[first, end)` of pieces whose bytes are all zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapOfPieces {
    pub values: Vec<u8>,
    pub zeros: Vec<(u64, u64)>,
}

/// The piece map of our copy of `entry`, cut in pieces of `piece_size`.
/// `Err` if the file is not that version any more (or cannot be read).
pub fn piece_map(store: &Store, entry: &Entry, piece_size: u64) -> Result<MapOfPieces, String> {
    let layout = Layout::new(entry.size, piece_size).ok_or("not a file of several pieces")?;
    let mut file = store.open_version(entry).ok_or("changed since it was announced")?;
    let mut values = Vec::with_capacity(layout.count() as usize);
    let mut zeros: Vec<(u64, u64)> = Vec::new();
    let mut buf = vec![0u8; piece_size.min(entry.size) as usize];
    for index in 0..layout.count() {
        let Some((offset, len)) = layout.range(index) else { break };
        let piece = &mut buf[..len as usize];
        file.read_exact(piece).map_err(|e| e.to_string())?;
        let mut h = PieceHasher::new(offset);
        h.update_rayon(piece);
        values.push(h.value());
        if all_zero(piece) {
            match zeros.last_mut() {
                Some((_, end)) if *end == index => *end += 1,
                _ => zeros.push((index, index + 1)),
            }
        }
    }
    // The file may have changed while it was read.
    if root_of(&values) != Some(entry.hash) {
        return Err("changed while its piece map was made".into());
    }
    Ok(MapOfPieces {
        values: values.concat(),
        zeros,
    })
}

/// True if every byte of `data` is zero.
pub(crate) fn all_zero(data: &[u8]) -> bool {
    // An OR over each block vectorizes (this runs over every byte of every
    // file sent in pieces); the first block with data ends the look.
    data.chunks(4096).all(|block| block.iter().fold(0u8, |acc, b| acc | b) == 0)
}

/// Of the pieces a peer's map says are all zero (`zeros`, ranges of piece
/// indexes), those whose value in `values` (the map's payload, checked
/// against the file's hash) is indeed that of zeros at their place: a
/// claim that fails would make a hole where the file holds data. `None`
/// if any claim fails or lies outside the file (the map is not to be
/// trusted). Costs a hash of each claimed piece's length, so it runs off
/// the event loop.
pub fn checked_zeros(zeros: &[(u64, u64)], values: &[u8], layout: Layout) -> Option<Vec<(u64, u64)>> {
    let zero = vec![0u8; layout.piece_size.min(layout.size) as usize];
    let mut claimed = 0u64;
    for &(first, end) in zeros {
        if first >= end || end > layout.count() {
            return None;
        }
        claimed += end - first;
        if claimed > layout.count() {
            return None;
        }
        for index in first..end {
            let (offset, len) = layout.range(index)?;
            let mut h = PieceHasher::new(offset);
            h.update_rayon(&zero[..len as usize]);
            let at = index as usize * 32;
            if values.get(at..at + 32)? != h.value().as_slice() {
                return None;
            }
        }
    }
    Some(zeros.to_vec())
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
        self.make_temp(store)?;
        let tmp = self.tmp.as_mut().ok_or("no temp file")?;
        tmp.write_at(at, data).map_err(|e| e.to_string())
    }

    /// Make the temp file (and the folders on its way), unless it was made.
    fn make_temp(&mut self, store: &Store) -> Result<(), String> {
        if self.tmp.is_none() && self.temp_path.is_none() {
            let tmp = store.create_temp(&self.entry.path).map_err(|e| e.to_string())?;
            self.temp_path = Some(tmp.path.clone());
            self.tmp = Some(tmp);
        }
        Ok(())
    }

    /// `len` bytes of zeros at `at` (what a sender skipped): holes where
    /// nothing was written, zeros over what was.
    pub fn write_zeros(&mut self, store: &Store, at: u64, len: u64) -> Result<(), String> {
        let block = vec![0u8; len.min(1 << 20) as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(block.len() as u64);
            self.write(store, at + done, &block[..n as usize], 0)?;
            done += n;
        }
        Ok(())
    }

    /// Every piece is here and verified (their values merge to the
    /// entry's hash), the pieces of zeros left as holes: hand the file over
    /// to be made durable and installed. `None` if it was handed over
    /// already.
    pub fn finish(&mut self, store: &Store) -> Result<Option<Received>, String> {
        // Nothing but holes: no piece came to make the file.
        self.make_temp(store)?;
        let Some(mut tmp) = self.tmp.take() else { return Ok(None) };
        tmp.extend_to(self.entry.size).map_err(|e| e.to_string())?;
        Ok(Some(Received {
            entry: self.entry.clone(),
            tmp,
            expected: self.expected.clone(),
            wire_bytes: self.wire_bytes,
            transfer: Transfer::Full,
        }))
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
    /// `start` in the file, and how many bytes of zeros the sender skipped
    /// before them (only a sender that `skips_zeros` may: see
    /// `wire::FEATURE_SPARSE_PIECES`), added to the piece's hash. `None`
    /// if they do not continue this piece and do not start another.
    pub fn next(
        current: Option<Arriving>,
        path: &RelPath,
        index: u64,
        start: u64,
        offset: u64,
        skips_zeros: bool,
    ) -> Option<(Arriving, u64)> {
        let mut arriving = match current {
            Some(a) if &a.path == path && a.index == index && (a.next == offset || (skips_zeros && a.next < offset)) => a,
            _ if offset == 0 || skips_zeros => Arriving {
                path: path.clone(),
                index,
                next: 0,
                hasher: PieceHasher::new(start),
            },
            _ => return None,
        };
        let zeros = offset - arriving.next;
        let block = [0u8; 64 * 1024];
        let mut left = zeros;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            arriving.hasher.update(&block[..n]);
            left -= n as u64;
        }
        arriving.next = offset;
        Some((arriving, zeros))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer's claim that pieces are all zero is taken only where their
    /// values say so: a false claim would leave a hole where data is.
    #[test]
    fn claims_of_zero_pieces_are_checked_against_their_values() {
        let piece = 64 * 1024;
        let layout = Layout::new(4 * piece, piece).unwrap();
        let mut file = vec![0u8; 4 * piece as usize];
        file[(2 * piece) as usize] = 1;
        let values: Vec<u8> = (0..4)
            .flat_map(|i| {
                let (offset, len) = layout.range(i).unwrap();
                let mut h = PieceHasher::new(offset);
                h.update(&file[offset as usize..(offset + len) as usize]);
                h.value()
            })
            .collect();
        assert_eq!(checked_zeros(&[(0, 2), (3, 4)], &values, layout), Some(vec![(0, 2), (3, 4)]));
        assert_eq!(checked_zeros(&[(1, 3)], &values, layout), None, "piece 2 holds a byte");
        assert_eq!(checked_zeros(&[(3, 5)], &values, layout), None, "beyond the file");
        assert_eq!(checked_zeros(&[(2, 2)], &values, layout), None, "an empty range");
        assert!(all_zero(&[0; 10_000]) && !all_zero(&[0, 0, 1]));
    }

    /// A sender that skips zeros (`FEATURE_SPARSE_PIECES`) leaves gaps
    /// between frames: they hash as zeros, so the piece's value is the
    /// value of all its bytes. From any other sender a gap is a break.
    #[test]
    fn gaps_in_a_piece_are_zeros_from_a_sender_that_skips_them() {
        let path = RelPath::new("disk.img").unwrap();
        let (start, len) = (1 << 20, 64 * 1024u64);
        let mut piece = vec![0u8; len as usize];
        piece[8192..8200].copy_from_slice(b"8 bytes!");
        let whole = {
            let mut h = PieceHasher::new(start);
            h.update(&piece);
            h.value()
        };
        let (mut a, skipped) = Arriving::next(None, &path, 3, start, 8192, true).unwrap();
        assert_eq!(skipped, 8192);
        assert_eq!(a.add(&piece[8192..8200], len), None);
        let (mut a, skipped) = Arriving::next(Some(a), &path, 3, start, len, true).unwrap();
        assert_eq!(skipped, len - 8200);
        assert_eq!(a.add(&[], len), Some(whole));
        assert!(
            Arriving::next(None, &path, 3, start, 8192, false).is_none(),
            "no gaps from this sender"
        );
    }
}
