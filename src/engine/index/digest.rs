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
//! A folder keeps three sums: the tree as a node of protocol 4 holds it (no
//! symlinks, only the execute bit of a mode), what protocol 5 adds to it,
//! and what protocol 6 adds to that (extended attributes), so that a node
//! compares with an older peer exactly what both can hold: for protocol 5,
//! extended attributes count as nothing (`wire::Entry::spoken_in`).
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
    /// What protocol 6 adds to `sum + extra`: extended attributes.
    pub xattrs: [u64; 4],
}

/// The stored size of a `DirSum` (48 before `extra`, 80 before `xattrs`,
/// both still read).
pub const DIR_SUM_LEN: usize = 112;
const DIR_SUM_LEN_V5: usize = 80;
const DIR_SUM_LEN_V4: usize = 48;
/// The first protocol version whose digest covers symlinks and modes.
const LINKS_AND_MODES: u32 = 5;
/// The first protocol version whose digest covers extended attributes.
const XATTRS: u32 = 6;

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
        let leaf = leaves(e);
        for (sums, lanes) in [(&mut self.sum, leaf.v4), (&mut self.extra, leaf.v5), (&mut self.xattrs, leaf.v6)] {
            for (s, l) in sums.iter_mut().zip(lanes) {
                *s = op(*s, l);
            }
        }
        if !e.deleted && e.kind == Kind::File {
            self.files = op(self.files, 1);
            self.bytes = op(self.bytes, e.size);
        }
    }

    /// The digest shown: a hash of the whole sum.
    pub fn digest(&self) -> Hash {
        self.digest_in(XATTRS)
    }

    /// The digest exchanged with a peer speaking protocol `version`: a hash
    /// of the sum of what that version holds. (Equal to the protocol 4
    /// digest while nothing in the tree has a mode or is a symlink.)
    pub fn digest_in(&self, version: u32) -> Hash {
        let mut sum = self.sum;
        for (since, more) in [(LINKS_AND_MODES, self.extra), (XATTRS, self.xattrs)] {
            if version >= since {
                for (s, x) in sum.iter_mut().zip(more) {
                    *s = s.wrapping_add(x);
                }
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
        for (i, v) in self
            .sum
            .iter()
            .chain([&self.files, &self.bytes])
            .chain(&self.extra)
            .chain(&self.xattrs)
            .enumerate()
        {
            out[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<DirSum> {
        if ![DIR_SUM_LEN, DIR_SUM_LEN_V5, DIR_SUM_LEN_V4].contains(&bytes.len()) {
            return None;
        }
        let word = |i: usize| {
            let mut w = [0; 8];
            w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        let lanes = |from: usize| match bytes.len() >= (from + 4) * 8 {
            true => [word(from), word(from + 1), word(from + 2), word(from + 3)],
            false => [0; 4],
        };
        Some(DirSum {
            sum: lanes(0),
            files: word(4),
            bytes: word(5),
            extra: lanes(6),
            xattrs: lanes(10),
        })
    }
}

/// One entry's share of the sums: the leaf protocol 4 sees, what
/// protocol 5 adds to it, and what protocol 6 adds to that.
struct Leaf {
    v4: [u64; 4],
    v5: [u64; 4],
    v6: [u64; 4],
}

/// What two nodes holding the same tree agree on: a folder by its path
/// and mode, a file by its path, size, mtime, mode and content hash, a
/// symlink by its path, mtime and target, a deletion by its path alone;
/// a folder's and a file's extended attributes where they are known.
/// Version ranks, vectors, folder times and tombstone times are left out:
/// they say when a node saw something, not what it holds.
fn leaves(e: &Entry) -> Leaf {
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
    let of_xattrs = || match &e.xattrs {
        None => [0; 4],
        Some(x) => hashed(e, |h| {
            h.update(b"a");
            for (name, value) in &x.0 {
                h.update(&(name.len() as u64).to_be_bytes()).update(name.as_bytes());
                h.update(&(value.len() as u64).to_be_bytes()).update(value);
            }
        }),
    };
    match (e.deleted, e.kind) {
        (true, _) => Leaf {
            v4: tombstone(),
            v5: [0; 4],
            v6: [0; 4],
        },
        (false, Kind::Dir) => Leaf {
            v4: hashed(e, |h| {
                h.update(b"d");
            }),
            v5: of_mode(),
            v6: of_xattrs(),
        },
        (false, Kind::File) => Leaf {
            v4: hashed(e, |h| {
                h.update(if e.exec { b"e" } else { b"f" })
                    .update(&e.size.to_be_bytes())
                    .update(&e.mtime.to_be_bytes())
                    .update(&e.hash.0);
            }),
            v5: of_mode(),
            v6: of_xattrs(),
        },
        (false, Kind::Symlink) => {
            let link = hashed(e, |h| {
                h.update(b"l").update(&e.mtime.to_be_bytes()).update(&e.hash.0);
            });
            let old = tombstone();
            let mut v5 = [0; 4];
            for ((x, l), o) in v5.iter_mut().zip(link).zip(old) {
                *x = l.wrapping_sub(o);
            }
            Leaf { v4: old, v5, v6: [0; 4] }
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
    fn modes_targets_and_links_count_and_old_sums_still_read() {
        let sum = |entries: &[&Entry]| {
            let mut s = DirSum::default();
            entries.iter().for_each(|e| s.add(e));
            s
        };
        let (f, l) = (file("f", 1, b"x"), link("l", 2, "../t"));
        let with_mode = Entry { mode: 0o600, ..f.clone() };
        let ours = sum(&[&with_mode, &l]);
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

    #[test]
    fn a_peer_of_protocol_5_compares_no_extended_attributes() {
        let sum = |entries: &[&Entry]| {
            let mut s = DirSum::default();
            entries.iter().for_each(|e| s.add(e));
            s
        };
        let tagged = |value: &[u8]| Entry {
            xattrs: Some(crate::wire::Xattrs([("user.tag".to_string(), value.to_vec())].into())),
            ..file("f", 1, b"x")
        };
        let (f, one, two) = (file("f", 1, b"x"), tagged(b"1"), tagged(b"2"));
        let ours = sum(&[&one]);
        assert_eq!(ours.digest_in(5), sum(&[&one.spoken_in(5)]).digest());
        assert_eq!(ours.digest_in(5), sum(&[&f]).digest_in(5));
        assert_ne!(ours.digest(), sum(&[&two]).digest());
        assert_ne!(ours.digest(), sum(&[&f]).digest());
        let none = Entry {
            xattrs: Some(Default::default()),
            ..f.clone()
        };
        assert_ne!(sum(&[&none]).digest(), sum(&[&f]).digest(), "known to have none is not unknown");
        // Sums stored before protocol 6 still read, with no attributes.
        let old = sum(&[&f]);
        assert_eq!(DirSum::decode(&old.encode()[..80]), Some(old));
    }
}
