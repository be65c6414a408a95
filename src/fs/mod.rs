//! The filesystem seam: everything dirsync reads from or writes to disk.
//!
//! - [`store`]: scans, hashing, and every change under DIR (atomic writes,
//!   deletes, renames), each checked against what the index expects.
//! - [`receive`]: assembling and verifying one incoming file in a temp file.
//! - [`delta`]: segmented fast_rsync signatures, diffs and patches of files.
//! - [`watcher`]: notify → `LocalEvent`s.
//! - [`state`]: the state directory: device id, the index file, the ignore
//!   file's text.
//! - [`trash`]: what a peer's change deleted or replaced, kept for a while.
//! - [`scan`]: looking at the disk.
//!
//! Depends on `wire` and on the engine's data types (`Observed`, `Index`):
//! it produces the engine's inputs. Must not: decide what to change.

pub mod delta;
pub mod receive;
pub mod scan;
pub mod state;
pub mod store;
pub mod trash;
pub mod watcher;
