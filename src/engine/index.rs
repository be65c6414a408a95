//! The index: what this node believes each path holds, tombstones included,
//! and the one rule that decides between two versions of a path.
//!
//! Owns: `beats` (last-modified-wins with a deterministic tie-break), the
//! path and hash lookups. Must not: touch the disk (the index file is
//! `fs::state`'s) or decide what to send.

use crate::wire::{Entry, Hash, Kind, RelPath};
use std::collections::{BTreeMap, HashMap};

/// The order in which versions win. Newer version time (the mtime, see
/// `Entry::version`) wins; at equal times an
/// existing path beats a tombstone, then a file beats a directory, then the
/// larger content hash wins, then the later mtime. Two versions equal in all
/// of these hold the same content and metadata, so no further tie-break (such
/// as node id) is ever needed, and every node picks the same winner.
fn rank(e: &Entry) -> (i128, bool, Kind, Hash, i128, bool) {
    (e.version, !e.deleted, e.kind, e.hash, e.mtime, e.exec)
}

/// True if `new` should replace `old`.
pub fn beats(new: &Entry, old: &Entry) -> bool {
    rank(new) > rank(old)
}

/// True if the two versions need no transfer between them.
pub fn same_version(a: &Entry, b: &Entry) -> bool {
    rank(a) == rank(b)
}

/// True if `new` should replace whatever this node holds (`None`: nothing).
pub fn wins_over(new: &Entry, old: Option<&Entry>) -> bool {
    match old {
        Some(old) => beats(new, old),
        // A tombstone for a path we never had changes nothing on disk, but
        // is still worth keeping so the delete is remembered.
        None => true,
    }
}

#[derive(Debug, Default, Clone)]
pub struct Index {
    entries: BTreeMap<RelPath, Entry>,
    /// Live files by content hash, to find local copies (renames, copies).
    /// Sorted `Vec`s: almost every hash has one path, and a `BTreeSet`'s
    /// first node costs about 280 bytes for each.
    by_hash: HashMap<Hash, Vec<RelPath>>,
}

impl Index {
    pub fn get(&self, path: &RelPath) -> Option<&Entry> {
        self.entries.get(path)
    }

    /// The live (not deleted) entry at `path`.
    pub fn live(&self, path: &RelPath) -> Option<&Entry> {
        self.entries.get(path).filter(|e| !e.deleted)
    }

    pub fn insert(&mut self, entry: Entry) {
        if let Some(old) = self.entries.get(&entry.path) {
            if old.kind == Kind::File && !old.deleted {
                if let Some(paths) = self.by_hash.get_mut(&old.hash) {
                    if let Ok(i) = paths.binary_search(&old.path) {
                        paths.remove(i);
                    }
                    if paths.is_empty() {
                        self.by_hash.remove(&old.hash);
                    }
                }
            }
        }
        if entry.kind == Kind::File && !entry.deleted {
            let paths = self.by_hash.entry(entry.hash).or_default();
            if let Err(i) = paths.binary_search(&entry.path) {
                paths.insert(i, entry.path.clone());
            }
        }
        self.entries.insert(entry.path.clone(), entry);
    }

    /// Live files holding content `hash`, in path order.
    pub fn paths_with_hash(&self, hash: &Hash) -> impl Iterator<Item = &RelPath> {
        self.by_hash.get(hash).into_iter().flatten()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Entries at `dir` and below it (everything when `dir` is `None`), in
    /// O(log n) plus what it yields: the paths below `d` are one range
    /// (siblings such as `d.txt` sort between `d` and `d/`, outside it).
    /// It used to scan from `d` to the end, which made a look at many
    /// paths quadratic (100,000 files: 110 s instead of 37 in `just bench`).
    pub fn under<'a>(&'a self, dir: Option<&'a RelPath>) -> Box<dyn Iterator<Item = &'a Entry> + 'a> {
        match dir {
            Some(d) => {
                let (lo, hi) = d.below_bounds();
                Box::new(self.entries.get(d).into_iter().chain(self.entries.range(lo..hi).map(|(_, e)| e)))
            }
            None => Box::new(self.entries.values()),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of live files and their total size.
    pub fn live_files(&self) -> (usize, u64) {
        self.entries
            .values()
            .filter(|e| !e.deleted && e.kind == Kind::File)
            .fold((0, 0), |(n, b), e| (n + 1, b + e.size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::{file, tomb};

    #[test]
    fn newer_mtime_wins() {
        assert!(beats(&file("a", 2, b"x"), &file("a", 1, b"y")));
        assert!(!beats(&file("a", 1, b"y"), &file("a", 2, b"x")));
        assert!(beats(&tomb("a", 3), &file("a", 2, b"x")));
        assert!(beats(&file("a", 4, b"x"), &tomb("a", 3)));
    }

    #[test]
    fn equal_mtimes_break_ties_the_same_way_everywhere() {
        let a = file("a", 5, b"one");
        let b = file("a", 5, b"two");
        // Exactly one of them wins, whichever side compares.
        assert_ne!(beats(&a, &b), beats(&b, &a));
        // At equal times an existing file beats a tombstone.
        assert!(beats(&a, &tomb("a", 5)));
        assert!(!beats(&tomb("a", 5), &a));
        // Same content and time: the same version, nothing wins.
        assert!(same_version(&a, &a.clone()));
        assert!(!beats(&a, &a.clone()));
    }

    #[test]
    fn hash_lookup_follows_changes() {
        let mut idx = Index::default();
        idx.insert(file("a", 1, b"same"));
        idx.insert(file("b", 1, b"same"));
        let h = Hash::of(b"same");
        assert_eq!(idx.paths_with_hash(&h).count(), 2);
        idx.insert(tomb("a", 2));
        assert_eq!(idx.paths_with_hash(&h).map(|p| p.as_str()).collect::<Vec<_>>(), ["b"]);
        idx.insert(file("b", 3, b"other"));
        assert_eq!(idx.paths_with_hash(&h).count(), 0);
    }

    #[test]
    fn under_finds_a_subtree_only() {
        let mut idx = Index::default();
        for p in ["d", "d/x", "d.txt", "d-x", "d0", "d/y/z", "d/é", "e", "c/d"] {
            idx.insert(file(p, 1, b""));
        }
        let d = RelPath::new("d").unwrap();
        let got: Vec<_> = idx.under(Some(&d)).map(|e| e.path.as_str()).collect();
        assert_eq!(got, ["d", "d/x", "d/y/z", "d/é"]);
        assert_eq!(idx.under(None).count(), 9);
        let none = RelPath::new("nope").unwrap();
        assert_eq!(idx.under(Some(&none)).count(), 0);
    }
}
