//! rsync-style deltas over files of any size in bounded memory.
//!
//! A file is cut into segments of `SEGMENT` bytes. The signature of a file is
//! one fast_rsync signature per segment; a delta is one fast_rsync delta per
//! segment of the new file, computed against the signature of the same
//! segment of the base. So at most one segment of base, delta and output is
//! in memory at a time, and a small edit costs about one block per segment it
//! touches (an insertion shifts content, costing its length once per later
//! segment). fast_rsync's MD4 is weak, so whoever rebuilds a file must check
//! the result against the announced blake3 hash (the node does, rule 3).
//!
//! Owns: block sizing, the signature's byte format and its validation (a
//! peer's block size of 0 or hash size over 16 would make fast_rsync panic).
//! Must not: touch the network or decide what to send.

use fast_rsync::{Signature, SignatureOptions};
use std::io::{self, Read, Seek, SeekFrom};

/// Bytes per segment.
pub const SEGMENT: u64 = 4 * 1024 * 1024;
/// Bytes of MD4 kept per block (fast_rsync allows at most 16).
const CRYPTO_HASH_SIZE: u32 = 8;
const MIN_BLOCK: u32 = 512;
const MAX_BLOCK: u32 = 64 * 1024;
/// Most segments a signature may name: 2^40 bytes (1 TiB) of file.
const MAX_SEGMENTS: u64 = (1 << 40) / SEGMENT;

#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("malformed signature: {0}")]
    BadSignature(&'static str),
    #[error("delta does not apply: {0}")]
    Apply(String),
    #[error("delta could not be computed: {0}")]
    Diff(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Block size for a file of `len` bytes: about sqrt(len), a power of two,
/// clamped to 512 B..64 KiB (rsync sizes blocks the same way).
pub fn block_size_for(len: u64) -> u32 {
    let root = (len as f64).sqrt() as u64;
    let pow2 = root.next_power_of_two().min(MAX_BLOCK as u64) as u32;
    pow2.clamp(MIN_BLOCK, MAX_BLOCK)
}

/// Number of segments of a file of `len` bytes.
pub fn segment_count(len: u64) -> u64 {
    len.div_ceil(SEGMENT)
}

/// Read segment `index` of `file` (shorter at the end, empty past it).
pub fn read_segment<R: Read + Seek>(file: &mut R, len: u64, index: u64) -> io::Result<Vec<u8>> {
    let start = index.saturating_mul(SEGMENT);
    if start >= len {
        return Ok(Vec::new());
    }
    let n = SEGMENT.min(len - start) as usize;
    let mut buf = vec![0u8; n];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut buf)?;
    Ok(buf)
}

/// The signature of a file: `[u32 BE segment count]` then per segment
/// `[u32 BE length][fast_rsync signature]`.
pub struct FileSignature {
    segments: Vec<Signature>,
}

impl FileSignature {
    /// Compute the signature of the `len` bytes of `file`.
    pub fn of_file<R: Read + Seek>(file: &mut R, len: u64) -> io::Result<FileSignature> {
        let options = SignatureOptions {
            block_size: block_size_for(len),
            crypto_hash_size: CRYPTO_HASH_SIZE,
        };
        let mut segments = Vec::with_capacity(segment_count(len) as usize);
        for i in 0..segment_count(len) {
            let data = read_segment(file, len, i)?;
            segments.push(Signature::calculate(&data, options));
        }
        Ok(FileSignature { segments })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.segments.len() as u32).to_be_bytes());
        for s in &self.segments {
            out.extend_from_slice(&(s.serialized().len() as u32).to_be_bytes());
            out.extend_from_slice(s.serialized());
        }
        out
    }

    /// Parse and validate a signature received from a peer.
    pub fn from_bytes(bytes: &[u8]) -> Result<FileSignature, DeltaError> {
        let mut rest = bytes;
        let count = take_u32(&mut rest)? as u64;
        if count > MAX_SEGMENTS {
            return Err(DeltaError::BadSignature("too many segments"));
        }
        let mut segments = Vec::new();
        for _ in 0..count {
            let len = take_u32(&mut rest)? as usize;
            if len > rest.len() {
                return Err(DeltaError::BadSignature("segment past the end"));
            }
            let (raw, tail) = rest.split_at(len);
            rest = tail;
            let options = header(raw).ok_or(DeltaError::BadSignature("segment header too short"))?;
            let (block, hash_size) = (options.block_size, options.crypto_hash_size);
            if !(MIN_BLOCK..=MAX_BLOCK).contains(&block) || hash_size == 0 || hash_size > 16 {
                return Err(DeltaError::BadSignature("block or hash size out of range"));
            }
            let sig = Signature::deserialize(raw.to_vec()).map_err(|_| DeltaError::BadSignature("fast_rsync refused it"))?;
            segments.push(sig);
        }
        if !rest.is_empty() {
            return Err(DeltaError::BadSignature("trailing bytes"));
        }
        Ok(FileSignature { segments })
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The delta turning base segment `index` into `new_data`. Past the
    /// base's last segment the delta is all literal.
    pub fn diff_segment(&self, index: usize, new_data: &[u8]) -> Result<Vec<u8>, DeltaError> {
        // A segment the edit did not touch (most of a big file) is found by
        // signing it, several times cheaper than searching it for blocks.
        if let Some(sig) = self.segments.get(index) {
            let same = header(sig.serialized()).is_some_and(|o| Signature::calculate(new_data, o).serialized() == sig.serialized());
            if same {
                return Ok(copy_whole(new_data.len()));
            }
        }
        let mut out = Vec::with_capacity(new_data.len() / 8 + 64);
        let empty;
        let sig = match self.segments.get(index) {
            Some(s) => s,
            None => {
                empty = Signature::calculate(
                    &[],
                    SignatureOptions {
                        block_size: MIN_BLOCK,
                        crypto_hash_size: CRYPTO_HASH_SIZE,
                    },
                );
                &empty
            }
        };
        fast_rsync::diff(&sig.index(), new_data, &mut out).map_err(|e| DeltaError::Diff(e.to_string()))?;
        Ok(out)
    }
}

/// The options a serialized fast_rsync signature was made with, from its
/// header: 4-byte magic, block size, crypto hash size (all big-endian).
/// `None` if the header is cut short.
fn header(raw: &[u8]) -> Option<SignatureOptions> {
    let word = |at: usize| Some(u32::from_be_bytes(raw.get(at..at + 4)?.try_into().ok()?));
    Some(SignatureOptions {
        block_size: word(4)?,
        crypto_hash_size: word(8)?,
    })
}

/// The librsync delta "copy `len` bytes of the base from offset 0": magic,
/// `COPY_N1_N4` (a 1-byte offset, a 4-byte length), end. A segment is at
/// most `SEGMENT` bytes, so the length fits.
fn copy_whole(len: usize) -> Vec<u8> {
    const DELTA_MAGIC: u32 = 0x7273_0236;
    const OP_COPY_N1_N4: u8 = 0x47;
    const OP_END: u8 = 0;
    let mut out = DELTA_MAGIC.to_be_bytes().to_vec();
    if len > 0 {
        out.push(OP_COPY_N1_N4);
        out.push(0);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.push(OP_END);
    out
}

/// The length a delta copies whole from offset 0 of its base segment, if
/// that is all it does (what `copy_whole` makes for a segment the edit did
/// not touch): the receiver copies such a segment in the kernel instead
/// of applying it.
pub fn whole_copy_len(delta: &[u8]) -> Option<u64> {
    let template = copy_whole(1);
    let (head, rest) = (delta.get(..6)?, delta.get(6..)?);
    if head != &template[..6] || rest.len() != 5 || rest[4] != 0 {
        return None;
    }
    Some(u64::from(u32::from_be_bytes(rest[..4].try_into().ok()?)))
}

fn take_u32(rest: &mut &[u8]) -> Result<u32, DeltaError> {
    if rest.len() < 4 {
        return Err(DeltaError::BadSignature("truncated"));
    }
    let v = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
    *rest = &rest[4..];
    Ok(v)
}

/// Rebuild one segment from its base and delta, refusing to produce more
/// than a segment's worth of bytes whatever the delta says.
pub fn apply_segment(base: &[u8], delta: &[u8]) -> Result<Vec<u8>, DeltaError> {
    let mut out = Vec::with_capacity(SEGMENT as usize);
    fast_rsync::apply_limited(base, delta, &mut out, SEGMENT as usize).map_err(|e| DeltaError::Apply(e.to_string()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::testing::noise;
    use std::io::Cursor;

    /// Rebuild `new` from `base` through signature, per-segment deltas and
    /// apply, the way two nodes do; returns the rebuilt bytes and the total
    /// delta size.
    fn round_trip(base: &[u8], new: &[u8]) -> (Vec<u8>, usize) {
        let sig_bytes = FileSignature::of_file(&mut Cursor::new(base), base.len() as u64)
            .unwrap()
            .to_bytes();
        let sig = FileSignature::from_bytes(&sig_bytes).unwrap();
        let mut rebuilt = Vec::new();
        let mut wire = 0;
        let mut new_cur = Cursor::new(new);
        let mut base_cur = Cursor::new(base);
        for i in 0..segment_count(new.len() as u64) {
            let seg = read_segment(&mut new_cur, new.len() as u64, i).unwrap();
            let d = sig.diff_segment(i as usize, &seg).unwrap();
            wire += d.len();
            let b = read_segment(&mut base_cur, base.len() as u64, i).unwrap();
            rebuilt.extend(apply_segment(&b, &d).unwrap());
        }
        (rebuilt, wire)
    }

    #[test]
    fn small_edit_in_a_big_file_costs_little() {
        let base = noise(9 * 1024 * 1024 + 123, 1);
        let mut new = base.clone();
        let mid = new.len() / 2;
        new[mid..mid + 4096].copy_from_slice(&noise(4096, 2));
        let (rebuilt, wire) = round_trip(&base, &new);
        assert_eq!(Hash::of(&rebuilt), Hash::of(&new));
        assert!(wire < 64 * 1024, "delta was {wire} bytes");
    }

    #[test]
    fn an_untouched_segment_is_one_copy_command() {
        let base = noise(3 * 1024 * 1024 + 17, 9);
        let sig = FileSignature::of_file(&mut Cursor::new(&base), base.len() as u64).unwrap();
        let d = sig.diff_segment(0, &base).unwrap();
        assert_eq!(d, copy_whole(base.len()));
        assert_eq!(d.len(), 11);
        assert_eq!(whole_copy_len(&d), Some(base.len() as u64));
        assert_eq!(apply_segment(&base, &d).unwrap(), base);
        // One changed byte is searched, not copied whole.
        let mut new = base.clone();
        new[5] ^= 1;
        let d = sig.diff_segment(0, &new).unwrap();
        assert_ne!(d, copy_whole(new.len()));
        assert_eq!(whole_copy_len(&d), None);
        assert_eq!(apply_segment(&base, &d).unwrap(), new);
        // fast_rsync reads the hand-made copy of an empty segment too.
        assert_eq!(apply_segment(&[], &copy_whole(0)).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn growth_shrink_and_empty_round_trip() {
        let base = noise(5 * 1024 * 1024, 3);
        let mut grown = base.clone();
        grown.extend(noise(4 * 1024 * 1024, 4));
        for (b, n) in [
            (&base[..], &grown[..]),
            (&grown[..], &base[..]),
            (&base[..], &base[..1000]),
            (&[][..], &base[..70_000]),
            (&base[..], &[][..]),
        ] {
            let (rebuilt, _) = round_trip(b, n);
            assert_eq!(rebuilt, n);
        }
    }

    #[test]
    fn insertion_shifts_cost_about_its_length_per_segment() {
        let base = noise(12 * 1024 * 1024, 5);
        let mut new = base.clone();
        new.splice(1000..1000, noise(100, 6));
        let (rebuilt, wire) = round_trip(&base, &new);
        assert_eq!(rebuilt, new);
        assert!(wire < 1024 * 1024, "delta was {wire} bytes");
    }

    #[test]
    fn wrong_base_never_rebuilds_the_file() {
        let base = noise(200_000, 7);
        let other = noise(200_000, 8);
        let mut new = base.clone();
        new[100] ^= 1;
        let sig = FileSignature::of_file(&mut Cursor::new(&base), base.len() as u64).unwrap();
        let d = sig.diff_segment(0, &new).unwrap();
        // Applied to another base the delta either fails or yields other bytes,
        // which the blake3 check then rejects.
        if let Ok(out) = apply_segment(&other, &d) {
            assert_ne!(Hash::of(&out), Hash::of(&new));
        }
    }

    #[test]
    fn hostile_signatures_are_refused() {
        let good = FileSignature::of_file(&mut Cursor::new(noise(100_000, 9)), 100_000)
            .unwrap()
            .to_bytes();
        assert!(FileSignature::from_bytes(&good).is_ok());
        let mut zero_block = good.clone();
        zero_block[8 + 4..8 + 8].copy_from_slice(&0u32.to_be_bytes());
        let mut big_hash = good.clone();
        big_hash[8 + 8..8 + 12].copy_from_slice(&17u32.to_be_bytes());
        let mut trailing = good.clone();
        trailing.push(0);
        for bad in [
            &[][..],
            &[0, 0, 0, 1][..],
            &u32::MAX.to_be_bytes()[..],
            &good[..good.len() - 1],
            &zero_block,
            &big_hash,
            &trailing,
        ] {
            assert!(FileSignature::from_bytes(bad).is_err());
        }
    }

    #[test]
    fn hostile_delta_cannot_exceed_a_segment() {
        // A copy op asking for far more than the base holds fails cleanly.
        let mut delta = 0x72730236u32.to_be_bytes().to_vec();
        delta.push(0x54); // RS_OP_COPY_N8_N8
        delta.extend(0u64.to_be_bytes());
        delta.extend(u64::MAX.to_be_bytes());
        delta.push(0);
        assert!(apply_segment(&[1, 2, 3], &delta).is_err());
        assert!(apply_segment(&[1, 2, 3], b"junk").is_err());
    }

    #[test]
    fn block_sizes_follow_the_file() {
        assert_eq!(block_size_for(0), 512);
        assert_eq!(block_size_for(100_000), 512);
        assert_eq!(block_size_for(100 * 1024 * 1024), 16384);
        assert_eq!(block_size_for(512 * 1024 * 1024), 32768);
        assert_eq!(block_size_for(u64::MAX), 65536);
    }

    use crate::wire::Hash;
}
