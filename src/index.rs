//! The index: what this node believes each path holds, tombstones included,
//! and the one rule that decides between two versions of a path.
//!
//! Owns: `beats` (last-modified-wins with a deterministic tie-break), the
//! path and hash lookups, and the index file's format (zlib JSON, written
//! atomically). Must not: scan the disk or decide what to send.

use crate::wire::{Entry, Hash, Kind, RelPath};
use flate2::{read::ZlibDecoder, write::ZlibEncoder, Compression};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

/// Version of the index file format. Format 1 (before version vectors)
/// still loads: its entries get empty vectors (history unknown).
const INDEX_FORMAT: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("index file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("index file {path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
}

/// The order in which versions win. Newer version time (the mtime, see
/// `Entry::version`) wins; at equal times an
/// existing path beats a tombstone, then a file beats a directory, then the
/// larger content hash wins, then the later mtime. Two versions equal in all
/// of these hold the same content and metadata, so no further tie-break (such
/// as node id) is ever needed, and every node picks the same winner.
fn rank(e: &Entry) -> (i64, bool, Kind, Hash, i64) {
    (e.version, !e.deleted, e.kind, e.hash, e.mtime)
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

#[derive(Deserialize)]
struct IndexFile {
    format: u32,
    entries: Vec<Entry>,
}

/// What `save` writes: `IndexFile`, borrowing the entries.
#[derive(Serialize)]
struct IndexFileRef<'a> {
    format: u32,
    entries: Vec<&'a Entry>,
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

    /// Entries at `dir` and below it (everything when `dir` is `None`).
    pub fn under<'a>(&'a self, dir: Option<&'a RelPath>) -> impl Iterator<Item = &'a Entry> + 'a {
        let start = dir.cloned();
        let iter: Box<dyn Iterator<Item = (&RelPath, &Entry)>> = match &start {
            Some(d) => Box::new(self.entries.range(d.clone()..)),
            None => Box::new(self.entries.iter()),
        };
        // Children of `d` sort after `d` but may interleave with siblings
        // such as `d.txt` (since '.' < '/'), so filter rather than stop early.
        iter.map(|(_, e)| e).filter(move |e| dir.is_none_or(|d| e.path.is_within(d)))
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

    /// Read an index file. A missing file is an empty index.
    pub fn load(path: &Path) -> Result<Index, IndexError> {
        let err = |source| IndexError::Io {
            path: path.display().to_string(),
            source,
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Index::default()),
            Err(e) => return Err(err(e)),
        };
        let corrupt = |reason: String| IndexError::Corrupt {
            path: path.display().to_string(),
            reason,
        };
        let mut json = Vec::new();
        ZlibDecoder::new(&bytes[..])
            .read_to_end(&mut json)
            .map_err(|e| corrupt(e.to_string()))?;
        let file: IndexFile = serde_json::from_slice(&json).map_err(|e| corrupt(e.to_string()))?;
        if file.format != INDEX_FORMAT && file.format != 1 {
            return Err(corrupt(format!("unknown format {}", file.format)));
        }
        let mut index = Index::default();
        for e in file.entries {
            index.insert(e);
        }
        Ok(index)
    }

    /// Write the index to `path` atomically: temp file, fsync, rename, then
    /// fsync the folder so the rename itself survives a power loss.
    pub fn save(&self, path: &Path) -> Result<(), IndexError> {
        let err = |source| IndexError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = IndexFileRef {
            format: INDEX_FORMAT,
            entries: self.entries.values().collect(),
        };
        let tmp = path.with_extension("tmp");
        {
            // Streamed: the JSON of a large index is never whole in memory.
            let f = std::fs::File::create(&tmp).map_err(err)?;
            let mut z = ZlibEncoder::new(std::io::BufWriter::new(f), Compression::fast());
            serde_json::to_writer(&mut z, &file).map_err(|e| err(std::io::Error::other(e)))?;
            let w = z.finish().map_err(err)?;
            let f = w.into_inner().map_err(|e| err(e.into_error()))?;
            f.sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, path).map_err(err)?;
        if let Some(dir) = path.parent() {
            // Not every filesystem lets a folder be opened for fsync; the
            // rename is atomic either way.
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(path: &str, mtime: i64, content: &[u8]) -> Entry {
        Entry {
            path: RelPath::new(path).unwrap(),
            kind: Kind::File,
            deleted: false,
            size: content.len() as u64,
            mtime,
            version: mtime,
            hash: Hash::of(content),
            vector: crate::version::Vector::default(),
            by: crate::wire::NodeId(0),
        }
    }

    fn tomb(path: &str, mtime: i64) -> Entry {
        Entry {
            deleted: true,
            size: 0,
            hash: Hash::ZERO,
            ..file(path, mtime, b"")
        }
    }

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
        for p in ["d", "d/x", "d.txt", "d/y/z", "e"] {
            idx.insert(file(p, 1, b""));
        }
        let d = RelPath::new("d").unwrap();
        let got: Vec<_> = idx.under(Some(&d)).map(|e| e.path.as_str()).collect();
        assert_eq!(got, ["d", "d/x", "d/y/z"]);
        assert_eq!(idx.under(None).count(), 5);
    }

    #[test]
    fn save_and_load_round_trip_and_corruption_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        assert!(Index::load(&path).unwrap().is_empty());
        let mut idx = Index::default();
        idx.insert(file("a/b", 7, b"x"));
        idx.insert(tomb("gone", 9));
        idx.save(&path).unwrap();
        let back = Index::load(&path).unwrap();
        assert_eq!(back.iter().cloned().collect::<Vec<_>>(), idx.iter().cloned().collect::<Vec<_>>());
        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(Index::load(&path), Err(IndexError::Corrupt { .. })));
    }

    #[test]
    fn a_format_1_index_loads_with_unknown_histories() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index");
        // What dirsync wrote before version vectors.
        let json = br#"{"format":1,"entries":[{"path":"a","kind":"file","size":1,"mtime":7,"version":7,"hash":"0000000000000000000000000000000000000000000000000000000000000000"}]}"#;
        let mut z = ZlibEncoder::new(Vec::new(), Compression::fast());
        z.write_all(json).unwrap();
        std::fs::write(&path, z.finish().unwrap()).unwrap();
        let idx = Index::load(&path).unwrap();
        let a = idx.get(&RelPath::new("a").unwrap()).unwrap();
        assert!(a.vector.is_empty());
        assert_eq!((a.size, a.version, a.by), (1, 7, crate::wire::NodeId(0)));
    }
}
