//! The filesystem seam: everything dirsync reads from or writes to disk.
//!
//! - [`files`]: the fs domain's error and a file's mtime and exec bits,
//!   shared by the store, temp files and hashing.
//! - [`store`]: every change under DIR (atomic writes,
//!   deletes, renames), each checked against what the index expects.
//! - [`receive`]: assembling and verifying one incoming file in a temp file.
//! - [`pieces`]: piece maps of our files, and files fetched in pieces.
//! - [`delta`]: segmented fast_rsync signatures, diffs and patches of files.
//! - [`watcher`]: inotify → `LocalEvent`s.
//! - [`state`]: the state directory: device id, the index file, the ignore
//!   file's text.
//! - [`index_db`]: the index's database on disk (redb), behind the
//!   engine's `IndexDb` seam.
//! - [`trash`]: what a peer's change deleted or replaced, kept for a while.
//! - [`scan`]: looking at the disk.
//! - `special`: what a look must never read (pseudo filesystems), and
//!   opening files so that no read blocks.
//! - [`temp`]: temp files, and the disk faults the simulation injects.
//! - `writers`: whether a process holds a file open for writing.
//! - `xattrs`: a path's `user.` extended attributes (`--xattrs`).
//!
//! Depends on `wire` and on the engine's data types (`Observed`, `Index`):
//! it produces the engine's inputs. Must not: decide what to change.

pub mod conflicts;
pub mod delta;
pub(crate) mod files;
pub(crate) mod hashing;
pub mod index_db;
pub(crate) mod pieces;
pub(crate) mod receive;
pub(crate) mod scan;
pub(crate) mod special;
pub mod state;
pub(crate) mod store;
pub mod temp;
pub mod trash;
pub mod watcher;
pub(crate) mod writers;
pub(crate) mod xattrs;

/// What the tests of this layer share: a store on a fresh folder, and the
/// entry of what a path holds.
#[cfg(test)]
pub(crate) mod testing {
    use super::store::Store;
    use crate::wire::{Entry, NodeId, RelPath};

    pub fn setup() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().to_path_buf(), dir.path().join(".dirsync"), NodeId(0xd1));
        (dir, store)
    }

    /// `len` pseudo-random bytes (xorshift from `seed`): content no delta
    /// or compressor finds patterns in.
    pub fn noise(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    pub fn rel(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    /// The entry of what `p` holds now, as if made there at its mtime.
    pub fn entry_for(store: &Store, p: &str) -> Entry {
        let o = store.observe(&rel(p), None).unwrap().unwrap();
        Entry {
            path: o.path,
            kind: o.kind,
            deleted: false,
            size: o.size,
            mtime: o.mtime,
            version: o.mtime,
            hash: o.hash,
            vector: Default::default(),
            by: Default::default(),
            exec: o.exec,
            mode: o.mode,
            target: o.target,
            xattrs: o.xattrs,
        }
    }
}
