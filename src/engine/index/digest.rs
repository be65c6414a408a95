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
//! The leaf of an entry is what protocol 6 and later compare (modes,
//! symlinks, extended attributes). Sums stored by older builds kept it in
//! three parts, one per protocol that added to it; they still read, as
//! the whole they add up to.
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
/// Sums stored by builds of protocol 5 (`sum`, then what protocol 5
/// adds, at word 6) and of protocols 6 and 7 (then what 6 adds, at 10).
const DIR_SUM_LEN_V5: usize = 80;
const DIR_SUM_LEN_V6: usize = 112;

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

    /// The digest: a hash of the whole sum.
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
        let parts: &[usize] = match bytes.len() {
            DIR_SUM_LEN => &[0],
            DIR_SUM_LEN_V5 => &[0, 6],
            DIR_SUM_LEN_V6 => &[0, 6, 10],
            _ => return None,
        };
        let word = |i: usize| {
            let mut w = [0; 8];
            w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        let mut sum = [0u64; 4];
        for from in parts {
            for (lane, s) in sum.iter_mut().enumerate() {
                *s = s.wrapping_add(word(from + lane));
            }
        }
        Some(DirSum {
            sum,
            files: word(4),
            bytes: word(5),
        })
    }
}

/// What two nodes holding the same tree agree on: a folder by its path
/// and mode, a file by its path, size, mtime, mode and content hash, a
/// symlink by its path, mtime and target, a deletion by its path alone;
/// a folder's and a file's extended attributes where they are known.
/// Version ranks, vectors, folder times and tombstone times are left out:
/// they say when a node saw something, not what it holds.
fn leaf(e: &Entry) -> [u64; 4] {
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
    // The parts add up lane by lane, as the three sums of older builds
    // did: the digest is the one nodes of protocol 7 compute.
    let plus = |a: [u64; 4], b: [u64; 4]| std::array::from_fn(|i| a[i].wrapping_add(b[i]));
    match (e.deleted, e.kind) {
        (true, _) => hashed(e, |h| {
            h.update(b"x");
        }),
        (false, Kind::Dir) => plus(
            hashed(e, |h| {
                h.update(b"d");
            }),
            plus(of_mode(), of_xattrs()),
        ),
        (false, Kind::File) => plus(
            hashed(e, |h| {
                h.update(if e.exec { b"e" } else { b"f" })
                    .update(&e.size.to_be_bytes())
                    .update(&e.mtime.to_be_bytes())
                    .update(&e.hash.0);
            }),
            plus(of_mode(), of_xattrs()),
        ),
        (false, Kind::Symlink) => hashed(e, |h| {
            h.update(b"l").update(&e.mtime.to_be_bytes()).update(&e.hash.0);
        }),
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
        let mut both = ours;
        both.remove(&l);
        both.remove(&with_mode);
        assert_eq!(both, DirSum::default());
    }

    #[test]
    fn extended_attributes_count() {
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
        assert_ne!(ours.digest(), sum(&[&two]).digest());
        assert_ne!(ours.digest(), sum(&[&f]).digest());
        let none = Entry {
            xattrs: Some(Default::default()),
            ..f.clone()
        };
        assert_ne!(sum(&[&none]).digest(), sum(&[&f]).digest(), "known to have none is not unknown");
    }

    /// What a build of protocol 7 gave as the digest of that tree.
    const PINNED: &str = "78b7fe71383c26b06b514ec218572cf34eb8f9d24faec6dbffa8df0d2380b552";

    /// The digest is the one builds of protocol 7 computed (the sum of
    /// their three parts), pinned by a value they gave, and their stored
    /// sums read as that whole.
    #[test]
    fn the_digest_and_stored_sums_of_older_builds_still_hold() {
        let mut s = DirSum::default();
        for e in [
            &Entry {
                mode: 0o600,
                ..file("d/f", 1, b"x")
            },
            &link("l", 2, "../t"),
            &tomb("gone", 3),
            &Entry {
                xattrs: Some(crate::wire::Xattrs([("user.k".to_string(), b"v".to_vec())].into())),
                ..file("g", 4, b"y")
            },
        ] {
            s.add(e);
        }
        assert_eq!(s.digest().to_string(), PINNED);
        // The same whole, stored in three parts and in two.
        let (k, j) = ([1u64, 2, 3, u64::MAX], [7u64, 0, 9, 11]);
        let part = |a: [u64; 4], b: [u64; 4]| -> [u64; 4] { std::array::from_fn(|i| a[i].wrapping_sub(b[i])) };
        let words = |lanes: &[[u64; 4]]| -> Vec<u8> {
            let mut out = s.encode().to_vec();
            out[..32].copy_from_slice(&lanes[0].iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<_>>());
            for l in &lanes[1..] {
                out.extend(l.iter().flat_map(|w| w.to_le_bytes()));
            }
            out
        };
        assert_eq!(DirSum::decode(&words(&[part(part(s.sum, k), j), k, j])), Some(s));
        assert_eq!(DirSum::decode(&words(&[part(s.sum, k), k])), Some(s));
        assert_eq!(DirSum::decode(&s.encode()), Some(s));
    }
}
