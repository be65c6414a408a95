//! Temp files: a received (or copied) file is written under a temp name in
//! its target's folder, made durable, then renamed into place by the
//! store; dropped, it removes itself. And the disk faults the simulation
//! injects into every write (`DiskFaults`).
//!
//! Must not: put anything in place (`Store::install` does).

use super::files::{filetime_of, io_err, set_exec, StoreError};
use crate::wire::Entry;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

/// A disk failure to inject into every write under DIR: how the
/// simulation gives a node a full, read-only or failing disk for a while.
/// Production never sets one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFault {
    /// ENOSPC.
    NoSpace,
    /// EACCES, as a read-only folder gives.
    ReadOnly,
    /// EIO.
    Io,
}

/// The switch for `DiskFault`s, shared by the store, its temp files and
/// whoever injects them.
#[derive(Debug, Clone, Default)]
pub struct DiskFaults(Arc<AtomicU8>);

impl DiskFaults {
    /// Fail every write with `fault` from now on (`None`: writes work).
    pub fn set(&self, fault: Option<DiskFault>) {
        let v = match fault {
            None => 0,
            Some(DiskFault::NoSpace) => 1,
            Some(DiskFault::ReadOnly) => 2,
            Some(DiskFault::Io) => 3,
        };
        self.0.store(v, Ordering::Relaxed);
    }

    /// The injected failure for a write to `path`, if one is set.
    pub(super) fn check(&self, path: &Path) -> Result<(), StoreError> {
        let errno = match self.0.load(Ordering::Relaxed) {
            0 => return Ok(()),
            1 => 28,
            2 => 13,
            _ => 5,
        };
        Err(io_err(path)(io::Error::from_raw_os_error(errno)))
    }
}

/// A file being written; it becomes visible only through `Store::install`
/// (or `Store::commit`, which makes it durable first).
pub struct TempFile {
    pub(super) file: File,
    pub(super) faults: DiskFaults,
    pub path: PathBuf,
    /// Renamed into place: nothing to remove on drop.
    pub(super) committed: bool,
}

impl TempFile {
    /// Append `data`.
    pub fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.faults.check(&self.path)?;
        self.file.write_all(data).map_err(io_err(&self.path))
    }

    /// Write `data` at `offset` (a piece of a file fetched in pieces, which
    /// arrive in any order).
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        use std::os::unix::fs::FileExt;
        self.faults.check(&self.path)?;
        self.file.write_all_at(data, offset).map_err(io_err(&self.path))
    }

    /// Append `len` bytes of `src` from `offset`, copied in the kernel
    /// (`copy_file_range`: a shared extent on XFS and btrfs, a page-cache
    /// copy on ext4, never through our memory; where the kernel cannot, by
    /// read and write). Returns those bytes as read back from this file, so
    /// that what the caller hashes is what was written, even if `src`
    /// changes meanwhile. A source shorter than that fails.
    pub fn append_range(&mut self, src: &File, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        use std::io::Seek;
        use std::os::unix::fs::FileExt;
        self.faults.check(&self.path)?;
        let start = self.file.stream_position().map_err(io_err(&self.path))?;
        let copied = match copy_range(src, offset, &self.file, len as u64) {
            Ok(()) => len,
            Err(Fallback(copied)) => copied as usize,
        };
        if copied < len {
            let mut rest = vec![0u8; len - copied];
            src.read_exact_at(&mut rest, offset + copied as u64).map_err(io_err(&self.path))?;
            self.file.write_all(&rest).map_err(io_err(&self.path))?;
        }
        let mut written = vec![0u8; len];
        self.file.read_exact_at(&mut written, start).map_err(io_err(&self.path))?;
        Ok(written)
    }

    /// The first half of a commit: give the file the mode and mtime of
    /// `entry`, then fsync it. Touches only the temp file, so it may run off
    /// the event loop.
    pub fn make_durable(&self, entry: &Entry) -> Result<(), StoreError> {
        self.prepare(entry)?;
        self.file.sync_all().map_err(io_err(&self.path))
    }

    fn prepare(&self, entry: &Entry) -> Result<(), StoreError> {
        self.faults.check(&self.path)?;
        set_exec(&self.path, entry.exec)?;
        filetime::set_file_mtime(&self.path, filetime_of(entry.mtime)).map_err(io_err(&self.path))
    }

    /// `make_durable` for many files at once, paid once (group commit):
    /// each gets its mode and mtime, then one `syncfs` flushes the
    /// filesystem they are on, their data and metadata with it, where an
    /// fsync each would wait for a journal commit each. One file alone is
    /// fsynced (a `syncfs` would also flush whatever else is dirty). The
    /// result of each, in order.
    pub fn make_all_durable<'a>(files: impl IntoIterator<Item = (&'a TempFile, &'a Entry)>) -> Vec<Result<(), StoreError>> {
        let files: Vec<(&TempFile, &Entry)> = files.into_iter().collect();
        if files.len() == 1 || cfg!(not(target_os = "linux")) {
            return files.iter().map(|(file, entry)| file.make_durable(entry)).collect();
        }
        let mut results: Vec<Result<(), StoreError>> = files.iter().map(|(f, e)| f.prepare(e)).collect();
        let Some(first) = files.iter().zip(&results).find(|(_, r)| r.is_ok()).map(|((f, _), _)| *f) else {
            return results;
        };
        if let Err(e) = syncfs(&first.file) {
            // Not flushed: none of them may become visible.
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(io_err(&first.path)(io::Error::new(e.kind(), e.to_string())));
            }
        }
        results
    }

    /// Remove the temp file now. False when its name no longer held it: the
    /// user moved the folder it was written in, and only a sweep by name
    /// pattern finds it (found by the simulation).
    pub fn discard(mut self) -> bool {
        self.committed = true;
        !matches!(fs::remove_file(&self.path), Err(e) if e.kind() == io::ErrorKind::NotFound)
    }
}

/// A range copy the kernel stopped short of, after this many bytes.
struct Fallback(u64);

/// Copy `len` bytes of `src` from `offset` to the end of `dst` (at its
/// file position) in the kernel.
#[cfg(target_os = "linux")]
fn copy_range(src: &File, offset: u64, dst: &File, len: u64) -> Result<(), Fallback> {
    use std::os::fd::AsRawFd;
    let mut copied = 0u64;
    while copied < len {
        let Ok(mut off_in) = libc::loff_t::try_from(offset + copied) else {
            return Err(Fallback(copied));
        };
        let want = usize::try_from(len - copied).unwrap_or(usize::MAX);
        // SAFETY: both descriptors are open for the call; `off_in` is a
        // valid loff_t the kernel updates; a null `off_out` means dst's own
        // file position, which the kernel advances.
        let n = unsafe { libc::copy_file_range(src.as_raw_fd(), &mut off_in, dst.as_raw_fd(), std::ptr::null_mut(), want, 0) };
        match n {
            // 0: the source ended early; an error: not supported here.
            n if n <= 0 => return Err(Fallback(copied)),
            n => copied += n as u64,
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn copy_range(_src: &File, _offset: u64, _dst: &File, _len: u64) -> Result<(), Fallback> {
    Err(Fallback(0))
}

/// Flush the whole filesystem `file` is on (Linux `syncfs`).
#[cfg(target_os = "linux")]
fn syncfs(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `file` is open for the whole call; syncfs reads nothing else.
    match unsafe { libc::syncfs(file.as_raw_fd()) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Elsewhere there is no `syncfs` that waits: each file is fsynced.
#[cfg(not(target_os = "linux"))]
fn syncfs(_file: &File) -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "no syncfs"))
}

impl Drop for TempFile {
    fn drop(&mut self) {
        // Committed temp files were renamed away; this removes abandoned ones.
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}
