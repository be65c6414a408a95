//! The tree digest as a hash tree over folders that a change updates in
//! O(depth): every folder keeps the sum, lane by lane modulo 2^64, of the
//! blake3 hashes of the entries below it ("leaves"). Replacing an entry
//! subtracts its old leaf from each folder above it and adds the new one;
//! no folder is ever rehashed from its children. Two folders with equal
//! sums hold the same entries (as far as 256-bit random sums tell: an
//! accidental collision is as unlikely as a blake3 collision; a cluster
//! member forging one would need a generalized-birthday attack, and it can
//! change the tree directly anyway), so a difference found at the root is
//! found again in exactly the folders that hold it.
//!
//! A folder keeps two sums: the tree as a node of protocol 4 holds it (no
//! symlinks, only the execute bit of a mode) and what protocol 5 adds to
//! it, so that a node compares with an older peer exactly what both can
//! hold: a symlink counts there as the tombstone that peer is sent
//! (`wire::Entry::spoken_in`), a mode as nothing.
//!
//! Owns: what a leaf covers and the sum's arithmetic. Must not: store
//! anything (`tables.rs` keeps the sums) or decide what is counted.

use crate::wire::{Entry, Hash, Kind};

/// The sum over the entries below one folder, and how many live files
/// and bytes they hold (for `dirsync status`, without a walk).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirSum {
    /// The sum of the leaves as protocol 4 sees them.
    pub sum: [u64; 4],
    pub files: u64,
    pub bytes: u64,
    /// What protocol 5 adds to `sum`: the whole leaves are `sum + extra`.
    pub extra: [u64; 4],
}

/// The stored size of a `DirSum` (48 before `extra`, still read).
pub const DIR_SUM_LEN: usize = 80;
const DIR_SUM_LEN_V4: usize = 48;
/// The first protocol version whose digest covers symlinks and modes.
const LINKS_AND_MODES: u32 = 5;

impl DirSum {
    pub fn add(&mut self, e: &Entry) {
        self.change(e, u64::wrapping_add);
    }

    pub fn remove(&mut self, e: &Entry) {
        self.change(e, u64::wrapping_sub);
    }

    /// Wrapping, lane by lane and in the counts: a peer's sizes may add
    /// up to more than 64 bits, and removal must undo addition exactly.
    fn change(&mut self, e: &Entry, op: fn(u64, u64) -> u64) {
        let (old, extra) = leaves(e);
        for (s, l) in self.sum.iter_mut().zip(old) {
            *s = op(*s, l);
        }
        for (s, l) in self.extra.iter_mut().zip(extra) {
            *s = op(*s, l);
        }
        if !e.deleted && e.kind == Kind::File {
            self.files = op(self.files, 1);
            self.bytes = op(self.bytes, e.size);
        }
    }

    /// The digest shown: a hash of the whole sum.
    pub fn digest(&self) -> Hash {
        self.digest_in(LINKS_AND_MODES)
    }

    /// The digest exchanged with a peer speaking protocol `version`: a hash
    /// of the sum of what that version holds. (Equal to the protocol 4
    /// digest while nothing in the tree has a mode or is a symlink.)
    pub fn digest_in(&self, version: u32) -> Hash {
        let mut sum = self.sum;
        if version >= LINKS_AND_MODES {
            for (s, x) in sum.iter_mut().zip(self.extra) {
                *s = s.wrapping_add(x);
            }
        }
        let mut h = blake3::Hasher::new();
        h.update(b"dirsync tree v2");
        for s in sum {
            h.update(&s.to_le_bytes());
        }
        Hash::from(h.finalize())
    }

    pub fn encode(&self) -> [u8; DIR_SUM_LEN] {
        let mut out = [0; DIR_SUM_LEN];
        for (i, v) in self.sum.iter().chain([&self.files, &self.bytes]).chain(&self.extra).enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<DirSum> {
        if bytes.len() != DIR_SUM_LEN && bytes.len() != DIR_SUM_LEN_V4 {
            return None;
        }
        let word = |i: usize| {
            let mut w = [0; 8];
            w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        let extra = match bytes.len() {
            DIR_SUM_LEN => [word(6), word(7), word(8), word(9)],
            _ => [0; 4],
        };
        Some(DirSum {
            sum: [word(0), word(1), word(2), word(3)],
            files: word(4),
            bytes: word(5),
            extra,
        })
    }
}

/// What two nodes holding the same tree agree on: a folder by its path
/// and mode, a file by its path, size, mtime, mode and content hash, a
/// symlink by its path, mtime and target, a deletion by its path alone.
/// Version ranks, vectors, folder times and tombstone times are left out:
/// they say when a node saw something, not what it holds. Returned as the
/// leaf protocol 4 sees and what protocol 5 adds to it.
fn leaves(e: &Entry) -> ([u64; 4], [u64; 4]) {
    let tombstone = || {
        hashed(e, |h| {
            h.update(b"x");
        })
    };
    let of_mode = || match e.mode {
        0 => [0; 4],
        mode => hashed(e, |h| {
            h.update(b"m").update(&mode.to_be_bytes());
        }),
    };
    match (e.deleted, e.kind) {
        (true, _) => (tombstone(), [0; 4]),
        (false, Kind::Dir) => {
            let dir = hashed(e, |h| {
                h.update(b"d");
            });
            (dir, of_mode())
        }
        (false, Kind::File) => {
            let file = hashed(e, |h| {
                h.update(if e.exec { b"e" } else { b"f" })
                    .update(&e.size.to_be_bytes())
                    .update(&e.mtime.to_be_bytes())
                    .update(&e.hash.0);
            });
            (file, of_mode())
        }
        (false, Kind::Symlink) => {
            let link = hashed(e, |h| {
                h.update(b"l").update(&e.mtime.to_be_bytes()).update(&e.hash.0);
            });
            let old = tombstone();
            let mut extra = [0; 4];
            for ((x, l), o) in extra.iter_mut().zip(link).zip(old) {
                *x = l.wrapping_sub(o);
            }
            (old, extra)
        }
    }
}

/// The hash of `e`'s path and what `more` adds, as four lanes.
fn hashed(e: &Entry, more: impl FnOnce(&mut blake3::Hasher)) -> [u64; 4] {
    let mut h = blake3::Hasher::new();
    h.update(e.path.as_str().as_bytes());
    h.update(&[0]);
    more(&mut h);
    let bytes = h.finalize();
    let mut out = [0u64; 4];
    for (i, w) in out.iter_mut().enumerate() {
        let mut b = [0; 8];
        b.copy_from_slice(&bytes.as_bytes()[i * 8..i * 8 + 8]);
        *w = u64::from_le_bytes(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::{file, link, tomb};

    #[test]
    fn a_sum_is_independent_of_order_and_undone_by_removal() {
        let (a, b, c) = (file("a", 1, b"x"), file("b/c", 2, b"y"), tomb("d", 3));
        let mut one = DirSum::default();
        for e in [&a, &b, &c] {
            one.add(e);
        }
        let mut two = DirSum::default();
        for e in [&c, &a, &b] {
            two.add(e);
        }
        assert_eq!(one, two);
        assert_eq!((one.files, one.bytes), (2, 2));
        two.remove(&b);
        assert_ne!(one.digest(), two.digest());
        let mut three = DirSum::default();
        three.add(&a);
        three.add(&c);
        assert_eq!(two, three);
        assert_eq!(DirSum::decode(&one.encode()), Some(one));
        assert_eq!(DirSum::decode(&[0; 3]), None);
    }

    #[test]
    fn what_a_node_holds_changes_the_digest_and_when_it_saw_it_does_not() {
        let a = file("a", 1, b"x");
        let digest = |e: &Entry| {
            let mut s = DirSum::default();
            s.add(e);
            s.digest()
        };
        let mut later = a.clone();
        later.version += 5;
        later.vector = crate::wire::version::Vector::single(crate::wire::NodeId(9), 3);
        assert_eq!(digest(&a), digest(&later));
        let mut exec = a.clone();
        exec.exec = true;
        assert_ne!(digest(&a), digest(&exec));
        assert_ne!(digest(&a), digest(&file("a", 2, b"x")));
        assert_eq!(digest(&tomb("a", 1)), digest(&tomb("a", 7)));
    }

    #[test]
    fn a_peer_of_protocol_4_compares_a_link_as_its_tombstone_and_no_modes() {
        let sum = |entries: &[&Entry]| {
            let mut s = DirSum::default();
            entries.iter().for_each(|e| s.add(e));
            s
        };
        let (f, l) = (file("f", 1, b"x"), link("l", 2, "../t"));
        let with_mode = Entry { mode: 0o600, ..f.clone() };
        let ours = sum(&[&with_mode, &l]);
        // What a node of protocol 4 holds after it was sent these.
        let theirs = sum(&[&with_mode.spoken_in(4), &l.spoken_in(4)]);
        assert_eq!(ours.digest_in(4), theirs.digest());
        assert_ne!(ours.digest_in(5), theirs.digest());
        assert_eq!(theirs.digest_in(5), theirs.digest_in(4));
        // Protocol 5 tells modes, targets and links from tombstones.
        assert_ne!(sum(&[&f]).digest(), sum(&[&with_mode]).digest());
        assert_ne!(sum(&[&l]).digest(), sum(&[&tomb("l", 2)]).digest());
        assert_ne!(sum(&[&l]).digest(), sum(&[&link("l", 2, "../u")]).digest());
        // Sums stored before protocol 5 still read, with nothing extra.
        let old = sum(&[&f]);
        assert_eq!(DirSum::decode(&old.encode()[..48]), Some(old));
        let mut both = ours;
        both.remove(&l);
        both.remove(&with_mode);
        assert_eq!(both, DirSum::default());
    }
}
