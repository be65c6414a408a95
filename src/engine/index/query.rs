//! Reading the index in order: a folder's entries and children, the
//! changes after a sequence number, a live file by content hash. Each
//! merges the committed snapshot with the changes not yet committed, and
//! skips or pages rather than walking what it does not return.
//!
//! Owns: how the index is read in ranges. Must not: change it (`tables.rs`).

use super::codec::decode;
use super::db::{be, from_be, Table};
use super::digest::DirSum;
use super::tables::Index;
use crate::wire::{Entry, Hash, Kind, RelPath};
use std::ops::Bound;

impl Index {
    /// A live file holding content `hash` at a path `usable` accepts, if
    /// any (a source for a local copy or rename): the first that still
    /// holds it of those changed since the last commit, then of the
    /// committed ones in path order. Lazy: ten thousand empty files share
    /// one hash.
    pub fn live_file_with_hash(&self, hash: &Hash, usable: impl Fn(&RelPath) -> bool) -> Option<Entry> {
        let holds = |p: &RelPath| self.live(p).filter(|e| e.kind == Kind::File && e.hash == *hash && usable(p));
        if let Some(e) = self.pending_hashes.get(hash).into_iter().flatten().find_map(holds) {
            return Some(e);
        }
        let range = match self.db.range(Table::Hashes, Bound::Included(&hash.0[..]), Bound::Unbounded) {
            Ok(range) => range,
            Err(e) => {
                self.fail(e);
                return None;
            }
        };
        for item in range {
            let key = match item {
                Ok((k, _)) => k,
                Err(e) => {
                    self.fail(e);
                    return None;
                }
            };
            if !key.starts_with(&hash.0) {
                return None;
            }
            match std::str::from_utf8(&key[32..]).ok().and_then(|p| RelPath::new(p).ok()) {
                Some(p) => {
                    if let Some(e) = holds(&p) {
                        return Some(e);
                    }
                }
                None => self.fail("a damaged key in the hash table"),
            }
        }
        None
    }

    /// Every entry, in path order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = Entry> + '_> {
        self.under(None)
    }

    /// Entries at `dir` and below it (everything when `dir` is `None`), in
    /// path order, in O(log n) plus what it yields: the paths below `d` are
    /// one range (siblings such as `d.txt` sort between `d` and `d/`).
    pub fn under<'a>(&'a self, dir: Option<&RelPath>) -> Box<dyn Iterator<Item = Entry> + 'a> {
        match dir {
            Some(d) => {
                let (lo, hi) = d.below_bounds();
                let below = self.range(Bound::Included(lo), Bound::Excluded(hi));
                Box::new(self.get(d).into_iter().chain(below))
            }
            None => self.range(Bound::Unbounded, Bound::Unbounded),
        }
    }

    /// Every entry after path `after` (all of them for `None`), in path
    /// order.
    pub fn after(&self, after: Option<&RelPath>) -> Box<dyn Iterator<Item = Entry> + '_> {
        match after {
            Some(p) => self.range(Bound::Excluded(p.clone()), Bound::Unbounded),
            None => self.iter(),
        }
    }

    fn range(&self, lo: Bound<RelPath>, hi: Bound<RelPath>) -> Box<dyn Iterator<Item = Entry> + '_> {
        let as_bytes = |b: &Bound<RelPath>| match b {
            Bound::Included(p) => Bound::Included(p.as_str().as_bytes().to_vec()),
            Bound::Excluded(p) => Bound::Excluded(p.as_str().as_bytes().to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let (blo, bhi) = (as_bytes(&lo), as_bytes(&hi));
        let committed = match self
            .db
            .range(Table::Entries, blo.as_ref().map(Vec::as_slice), bhi.as_ref().map(Vec::as_slice))
        {
            Ok(r) => Some(r),
            Err(e) => {
                self.fail(e);
                None
            }
        };
        let committed = committed.into_iter().flatten().map_while(move |item| match item {
            Ok((k, v)) => match std::str::from_utf8(&k)
                .map_err(|e| e.to_string())
                .and_then(|k| RelPath::new(k).map_err(|e| e.to_string()))
                .and_then(|p| decode(p, &v))
            {
                Ok(s) => Some(s.entry),
                Err(e) => {
                    self.fail(format!("entry {:?}: {e}", String::from_utf8_lossy(&k)));
                    None
                }
            },
            Err(e) => {
                self.fail(e);
                None
            }
        });
        let pending = self
            .pending
            .range((lo, hi))
            .map(|(path, c)| (path.clone(), c.stored.as_ref().map(|s| s.entry.clone())));
        Box::new(Merge {
            committed: committed.peekable(),
            pending: pending.peekable(),
        })
    }

    /// The entries changed after sequence number `seq`, each once (as it
    /// is now), in the order of their last change, with its number.
    pub fn since(&self, seq: u64) -> Box<dyn Iterator<Item = (u64, Entry)> + '_> {
        let first = be(seq.saturating_add(1));
        let committed = match self.db.range(Table::Seqs, Bound::Included(&first[..]), Bound::Unbounded) {
            Ok(r) => Some(r),
            Err(e) => {
                self.fail(e);
                None
            }
        };
        let committed = committed.into_iter().flatten().map_while(move |item| match item {
            Ok((k, v)) => match from_be(&k) {
                Some(s) => Some((s, std::str::from_utf8(&v).ok().and_then(|p| RelPath::new(p).ok()))),
                None => {
                    self.fail("a damaged key in the sequence table");
                    None
                }
            },
            Err(e) => {
                self.fail(e);
                None
            }
        });
        let pending = self.pending_seqs.range(seq.saturating_add(1)..).map(|(s, p)| (*s, Some(p.clone())));
        Box::new(committed.chain(pending).filter_map(move |(s, path)| {
            let Some(path) = path else {
                self.fail("a damaged path in the sequence table");
                return None;
            };
            // A path changed again later is yielded at its later number.
            self.stored(&path).filter(|st| st.seq == s).map(|st| (s, st.entry))
        }))
    }

    /// The names of the direct children of folder `dir` (`None`: the
    /// root) that the index holds something at or below, in name order;
    /// `None` when there are more than `limit`. Each child's subtree is
    /// skipped with a new look past it, never walked.
    fn child_names(&self, dir: Option<&RelPath>, limit: usize) -> Option<Vec<String>> {
        // What a child's path starts with: the folder and a slash.
        let prefix_len = dir.map_or(0, |d| d.as_str().len() + 1);
        let (mut lo, hi) = match dir {
            Some(d) => {
                let (lo, hi) = d.below_bounds();
                (Bound::Included(lo), Bound::Excluded(hi))
            }
            None => (Bound::Unbounded, Bound::Unbounded),
        };
        let mut names: Vec<String> = Vec::new();
        'look: loop {
            for e in self.range(lo.clone(), hi.clone()) {
                let rest = &e.path.as_str()[prefix_len..];
                let (name, deeper) = match rest.split_once('/') {
                    Some((name, _)) => (name, true),
                    None => (rest, false),
                };
                // Only names that sort between "name" and "name/" (so
                // start with it) can come between a child and its subtree.
                let known = deeper && names.iter().rev().take_while(|n| n.starts_with(name)).any(|n| n == name);
                if !known {
                    if names.len() == limit {
                        return None;
                    }
                    names.push(name.to_string());
                }
                if deeper {
                    // Past the child's subtree: everything below sorts
                    // before "name0".
                    if let Ok(child) = RelPath::child_of(dir, name) {
                        lo = Bound::Included(child.below_bounds().1);
                        continue 'look;
                    }
                }
            }
            break;
        }
        names.sort();
        Some(names)
    }

    /// The direct children of folder `dir` (`None`: the root): every path
    /// the index holds something at or below.
    pub fn child_paths(&self, dir: Option<&RelPath>) -> Vec<RelPath> {
        let names = self.child_names(dir, usize::MAX).unwrap_or_default();
        names.into_iter().filter_map(|n| RelPath::child_of(dir, &n).ok()).collect()
    }

    /// The direct children of folder `dir` (`None`: the root) with the
    /// digest of each: its own entry's leaf plus everything below it, over
    /// the paths these rules do not ignore (a child with nothing counted is
    /// left out). `None` when there are more than `limit`.
    pub fn children(&self, dir: Option<&RelPath>, limit: usize) -> Option<Vec<(String, Hash)>> {
        let children = self
            .child_names(dir, limit)?
            .into_iter()
            .filter_map(|name| {
                let path = RelPath::child_of(dir, &name).ok()?;
                let mut sum = self.dir_sum(path.as_str());
                if let Some(e) = self.get(&path).filter(|e| self.counts(e)) {
                    sum.add(&e);
                }
                (sum != DirSum::default()).then(|| (name, sum.digest()))
            })
            .collect();
        Some(children)
    }
}

/// Two sorted sequences of entries as one; on equal paths the pending one
/// (newer) is taken, and a path forgotten since the commit (`None`) is
/// left out.
struct Merge<C: Iterator<Item = Entry>, P: Iterator<Item = (RelPath, Option<Entry>)>> {
    committed: std::iter::Peekable<C>,
    pending: std::iter::Peekable<P>,
}

impl<C: Iterator<Item = Entry>, P: Iterator<Item = (RelPath, Option<Entry>)>> Iterator for Merge<C, P> {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        loop {
            let pending = match (self.committed.peek(), self.pending.peek()) {
                (Some(c), Some((p, _))) => match c.path.cmp(p) {
                    std::cmp::Ordering::Less => return self.committed.next(),
                    std::cmp::Ordering::Equal => {
                        self.committed.next();
                        self.pending.next()
                    }
                    std::cmp::Ordering::Greater => self.pending.next(),
                },
                (Some(_), None) => return self.committed.next(),
                (None, _) => self.pending.next(),
            };
            match pending {
                Some((_, Some(e))) => return Some(e),
                Some((_, None)) => continue,
                None => return None,
            }
        }
    }
}
