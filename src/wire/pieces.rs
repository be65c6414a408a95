//! Pieces: how a large file's content is cut so that it can be fetched
//! from many peers at once, and how each piece is checked on its own.
//!
//! A file of more than one piece is split at multiples of its piece size
//! (a power of two, so every piece but the last is a whole BLAKE3 subtree).
//! A piece's *chaining value* is the BLAKE3 hash of that subtree, taken at
//! its offset (`blake3::hazmat`). Merged in BLAKE3's own tree order, the
//! chaining values give the file's content hash, the one its entry
//! announces: so a piece map (`PieceMap`) from any peer is checked against
//! the entry with no one to trust, and then each piece is checked against
//! its value before it is written anywhere but a temp file or passed on.
//!
//! Pure: no IO.

use super::Hash;
use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, HasherExt, Mode};

/// The piece size nodes use unless configured otherwise. Measured in
/// `just bench` W6 (one source, 7 receivers, 200 Mbit/s links): 4 MiB
/// pieces (Kraken's) took 1.34x the one-receiver time, 1 MiB 1.18x,
/// 512 KiB 1.12x; smaller pieces leave less of the file to the end game,
/// where receivers ask the source for the same last pieces.
pub const PIECE_SIZE: u64 = 512 * 1024;
/// Piece sizes a map may claim: powers of two in this range.
pub const MIN_PIECE_SIZE: u64 = 16 * 1024;
pub const MAX_PIECE_SIZE: u64 = 256 * 1024 * 1024;
/// Most pieces in one file: a larger file gets larger pieces. A map is
/// then at most 512 KiB of chaining values, a bitmap 2 KiB.
pub const MAX_PIECES: u64 = 16 * 1024;

/// A piece's chaining value.
pub type PieceValue = [u8; 32];

/// The piece size for a file of `size` bytes: `base`, doubled until the
/// file has at most `MAX_PIECES` pieces.
pub fn piece_size_for(size: u64, base: u64) -> u64 {
    let mut piece = base.clamp(MIN_PIECE_SIZE, MAX_PIECE_SIZE).next_power_of_two();
    while size.div_ceil(piece) > MAX_PIECES && piece < MAX_PIECE_SIZE {
        piece *= 2;
    }
    piece
}

/// A file's cut into pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub size: u64,
    pub piece_size: u64,
}

impl Layout {
    /// The layout a map claims for a file of `size` bytes, if it is one a
    /// peer may use: a valid piece size, and at least two pieces (a file of
    /// one piece is fetched whole).
    pub fn new(size: u64, piece_size: u64) -> Option<Layout> {
        let valid = piece_size.is_power_of_two() && (MIN_PIECE_SIZE..=MAX_PIECE_SIZE).contains(&piece_size);
        let layout = Layout { size, piece_size };
        (valid && (2..=MAX_PIECES).contains(&layout.count())).then_some(layout)
    }

    pub fn count(&self) -> u64 {
        self.size.div_ceil(self.piece_size)
    }

    /// Where piece `index` starts in the file, and its length (`None` past
    /// the end).
    pub fn range(&self, index: u64) -> Option<(u64, u64)> {
        let start = index.checked_mul(self.piece_size).filter(|s| *s < self.size)?;
        Some((start, self.piece_size.min(self.size - start)))
    }
}

/// Hashes one piece as it arrives, in order.
pub struct PieceHasher(blake3::Hasher);

impl PieceHasher {
    /// For the piece starting at `offset` (a multiple of the piece size).
    pub fn new(offset: u64) -> PieceHasher {
        let mut h = blake3::Hasher::new();
        h.set_input_offset(offset);
        PieceHasher(h)
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The same, spread over all cores (for a whole piece in memory).
    pub fn update_rayon(&mut self, data: &[u8]) {
        self.0.update_rayon(data);
    }

    /// The piece's chaining value. At least one byte must have been added.
    pub fn value(&self) -> PieceValue {
        self.0.finalize_non_root()
    }
}

/// The content hash the chaining values of a file's pieces (two or more,
/// in order, all but the last of one piece size) merge to; `None` for
/// fewer than two.
pub fn root_of(values: &[PieceValue]) -> Option<Hash> {
    if values.len() < 2 {
        return None;
    }
    // BLAKE3's tree over equal subtrees, layer by layer: neighbours merge,
    // an odd one out moves up (the `hazmat` module's grouped hash).
    let mut layer = values.to_vec();
    while layer.len() > 2 {
        let next = layer
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => merge_subtrees_non_root(left, right, Mode::Hash),
                [odd] => *odd,
                _ => unreachable!("chunks(2) yields one or two"),
            })
            .collect();
        layer = next;
    }
    Some(merge_subtrees_root(&layer[0], &layer[1], Mode::Hash).into())
}

/// Split a map's payload into chaining values: `None` unless it is whole
/// values, as many as `layout` has pieces, that merge to `hash`.
pub fn check_map(payload: &[u8], layout: Layout, hash: Hash) -> Option<Vec<PieceValue>> {
    if payload.len() as u64 != layout.count() * 32 {
        return None;
    }
    let values: Vec<PieceValue> = payload
        .chunks_exact(32)
        .map(|c| {
            let mut v = [0u8; 32];
            v.copy_from_slice(c);
            v
        })
        .collect();
    (root_of(&values) == Some(hash)).then_some(values)
}

/// Which pieces of a file a node holds: bit `i % 8` of byte `i / 8` for
/// piece `i` (as sent in `Have`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bitmap(Vec<u8>);

/// A peer's bitmap as sent: pieces past its end are not held.
impl From<Vec<u8>> for Bitmap {
    fn from(bytes: Vec<u8>) -> Bitmap {
        Bitmap(bytes)
    }
}

impl Bitmap {
    /// No piece of `count`.
    pub fn empty(count: u64) -> Bitmap {
        Bitmap(vec![0; count.div_ceil(8) as usize])
    }

    /// Whether piece `i` is held (false past the end).
    pub fn get(&self, i: u64) -> bool {
        self.0.get((i / 8) as usize).is_some_and(|b| b & (1 << (i % 8)) != 0)
    }

    pub fn set(&mut self, i: u64) {
        if let Some(b) = self.0.get_mut((i / 8) as usize) {
            *b |= 1 << (i % 8);
        }
    }

    pub fn count_ones(&self) -> u64 {
        self.0.iter().map(|b| u64::from(b.count_ones())).sum()
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The chaining values of `data` cut in pieces of `piece` bytes (for
/// tests: a node makes them from a file, `fs::pieces::piece_map`).
#[cfg(test)]
pub(crate) fn values_of(data: &[u8], piece: u64) -> Vec<PieceValue> {
    data.chunks(piece as usize)
        .enumerate()
        .map(|(i, c)| {
            let mut h = PieceHasher::new(i as u64 * piece);
            h.update(c);
            h.value()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piece_values_merge_to_the_file_hash() {
        let piece = MIN_PIECE_SIZE;
        // Two pieces, a short last piece, a power of two, odd counts.
        for len in [piece + 1, 2 * piece, 3 * piece - 5, 4 * piece, 5 * piece + 1024, 7 * piece + 3] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let values = values_of(&data, piece);
            assert_eq!(root_of(&values), Some(Hash::of(&data)), "{len} bytes");
            let layout = Layout::new(len, piece).unwrap();
            let payload: Vec<u8> = values.concat();
            assert_eq!(check_map(&payload, layout, Hash::of(&data)), Some(values.clone()));
            // One wrong value, one missing, another file's hash: refused.
            let mut bad = payload.clone();
            bad[5] ^= 1;
            assert_eq!(check_map(&bad, layout, Hash::of(&data)), None);
            assert_eq!(check_map(&payload[32..], layout, Hash::of(&data)), None);
            assert_eq!(check_map(&payload, layout, Hash::of(b"other")), None);
        }
    }

    #[test]
    fn layouts_a_peer_may_claim() {
        assert!(Layout::new(10 * PIECE_SIZE, PIECE_SIZE).is_some());
        // One piece, not a power of two, too small, too many pieces.
        assert!(Layout::new(PIECE_SIZE, PIECE_SIZE).is_none());
        assert!(Layout::new(10 * PIECE_SIZE, PIECE_SIZE + 1).is_none());
        assert!(Layout::new(10 * 1024, 1024).is_none());
        assert!(Layout::new((MAX_PIECES + 1) * MIN_PIECE_SIZE, MIN_PIECE_SIZE).is_none());
        let l = Layout::new(2 * PIECE_SIZE + 7, PIECE_SIZE).unwrap();
        assert_eq!((l.count(), l.range(2), l.range(3)), (3, Some((2 * PIECE_SIZE, 7)), None));
        assert_eq!(l.range(u64::MAX), None);
        // Huge files get larger pieces, never more than MAX_PIECES.
        let big = 1 << 40;
        let p = piece_size_for(big, PIECE_SIZE);
        assert!(Layout::new(big, p).is_some_and(|l| l.count() <= MAX_PIECES));
    }

    #[test]
    fn bitmaps() {
        let mut b = Bitmap::empty(10);
        b.set(0);
        b.set(9);
        b.set(10_000);
        assert!(b.get(0) && b.get(9) && !b.get(1) && !b.get(10_000));
        assert_eq!((b.count_ones(), b.bytes().len()), (2, 2));
        let sent = Bitmap::from(vec![0xff]);
        assert!(sent.get(7) && !sent.get(8));
    }
}
