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
//! Owns: what a leaf covers and the sum's arithmetic. Must not: store
//! anything (`tables.rs` keeps the sums) or decide what is counted.

use crate::wire::{Entry, Hash, Kind};

/// The sum over the entries below one folder, and how many live files
/// and bytes they hold (for `dirsync status`, without a walk).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirSum {
    pub sum: [u64; 4],
    pub files: u64,
    pub bytes: u64,
}

/// The stored size of a `DirSum`.
pub const DIR_SUM_LEN: usize = 48;

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
        for (s, l) in self.sum.iter_mut().zip(leaf(e)) {
            *s = op(*s, l);
        }
        if !e.deleted && e.kind == Kind::File {
            self.files = op(self.files, 1);
            self.bytes = op(self.bytes, e.size);
        }
    }

    /// The digest shown and exchanged: a hash of the sum.
    pub fn digest(&self) -> Hash {
        let mut h = blake3::Hasher::new();
        h.update(b"dirsync tree v2");
        for s in self.sum {
            h.update(&s.to_le_bytes());
        }
        Hash::from(h.finalize())
    }

    pub fn encode(&self) -> [u8; DIR_SUM_LEN] {
        let mut out = [0; DIR_SUM_LEN];
        for (i, v) in self.sum.iter().chain([&self.files, &self.bytes]).enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<DirSum> {
        if bytes.len() != DIR_SUM_LEN {
            return None;
        }
        let word = |i: usize| {
            let mut w = [0; 8];
            w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        Some(DirSum {
            sum: [word(0), word(1), word(2), word(3)],
            files: word(4),
            bytes: word(5),
        })
    }
}

/// What two nodes holding the same tree agree on: a folder by its path, a
/// file by its path, size, mtime, mode and content hash, a deletion by its
/// path alone. Version ranks, vectors, folder times and tombstone times
/// are left out: they say when a node saw something, not what it holds.
fn leaf(e: &Entry) -> [u64; 4] {
    let mut h = blake3::Hasher::new();
    h.update(e.path.as_str().as_bytes());
    h.update(&[0]);
    match (e.deleted, e.kind) {
        (true, _) => {
            h.update(b"x");
        }
        (false, Kind::Dir) => {
            h.update(b"d");
        }
        (false, Kind::File) => {
            h.update(if e.exec { b"e" } else { b"f" });
            h.update(&e.size.to_be_bytes());
            h.update(&e.mtime.to_be_bytes());
            h.update(&e.hash.0);
        }
    }
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
    use crate::wire::testing::{file, tomb};

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
}
