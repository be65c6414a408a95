//! Temp files: a received (or copied) file is written under a temp name in
//! its target's folder, made durable, then renamed into place by the
//! store; dropped, it removes itself. And the disk faults the simulation
//! injects into every write (`DiskFaults`).
//!
//! Must not: put anything in place (`Store::install` does).

use super::files::{filetime_of, io_err, set_mode_of, StoreError};
use super::pieces::all_zero;
use crate::wire::Entry;
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

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
/// whoever injects them; and the files the simulation holds open for
/// writing (its nodes share one process, whose own descriptors
/// `fs::writers` leaves out).
#[derive(Debug, Clone, Default)]
pub struct DiskFaults {
    fault: Arc<AtomicU8>,
    held_open: Arc<Mutex<BTreeSet<PathBuf>>>,
}

impl DiskFaults {
    /// Fail every write with `fault` from now on (`None`: writes work).
    pub fn set(&self, fault: Option<DiskFault>) {
        let v = match fault {
            None => 0,
            Some(DiskFault::NoSpace) => 1,
            Some(DiskFault::ReadOnly) => 2,
            Some(DiskFault::Io) => 3,
        };
        self.fault.store(v, Ordering::Relaxed);
    }

    /// A program holds the file at `path` (full) open for writing from now
    /// on (`true`), or no more.
    pub fn hold_open(&self, path: &Path, held: bool) {
        if let Ok(mut set) = self.held_open.lock() {
            match held {
                true => set.insert(path.to_path_buf()),
                false => set.remove(path),
            };
        }
    }

    /// Whether the simulation holds `path` open for writing.
    pub(super) fn held_open(&self, path: &Path) -> bool {
        self.held_open.lock().is_ok_and(|set| set.contains(path))
    }

    /// The injected failure for a write to `path`, if one is set.
    pub(super) fn check(&self, path: &Path) -> Result<(), StoreError> {
        let errno = match self.fault.load(Ordering::Relaxed) {
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
///
/// Holes stay holes: blocks of zeros (`BLOCK` bytes, aligned in the file)
/// are not written where nothing was written before, and are punched out
/// where something was, so a sparse file arrives sparse, whichever way its
/// content came (whole, delta or pieces).
pub struct TempFile {
    /// `None` once closed (`close`), before its rename into place.
    pub(super) file: Option<File>,
    /// The file's inode, kept when it was closed.
    pub(super) ino: Option<u64>,
    pub(super) faults: DiskFaults,
    pub path: PathBuf,
    /// Renamed into place: nothing to remove on drop.
    pub(super) committed: bool,
    /// The file's length: the end of the furthest write (what `write`
    /// appends after). The file on disk is never shorter.
    pub(super) len: u64,
    /// Set all permission bits, not the execute bit alone (`Store::perms`).
    pub(super) perms: bool,
    /// Set the version's extended attributes (`Store::xattrs`).
    pub(super) xattrs: bool,
    /// Given its length, mode, attributes and mtime already (`prepare`).
    pub(super) prepared: bool,
}

/// The block size holes are kept at.
const BLOCK: u64 = 4096;

/// Bytes at the start of `data` (which starts at `offset` in the file)
/// that are whole blocks of zeros, aligned in the file.
fn zero_blocks(offset: u64, data: &[u8]) -> usize {
    let mut at = 0usize;
    loop {
        let end = next_block_end(offset, at, data.len());
        let block = &data[at..end];
        if block.len() as u64 != BLOCK || !all_zero(block) {
            return at;
        }
        at = end;
    }
}

/// Where the block holding byte `at` of `data` (at `offset` in the file)
/// ends, within `data` (`len` bytes).
fn next_block_end(offset: u64, at: usize, len: usize) -> usize {
    let pos = offset + at as u64;
    (((pos / BLOCK) + 1) * BLOCK - offset).min(len as u64) as usize
}

impl TempFile {
    /// Append `data`.
    pub fn write(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.write_at(self.len, data)
    }

    /// Write `data` at `offset` (a piece of a file fetched in pieces, which
    /// arrive in any order).
    pub fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        self.faults.check(&self.path)?;
        self.write_keeping_holes(offset, data).map_err(io_err(&self.path))
    }

    fn write_keeping_holes(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        // Runs of data and of whole zero blocks, each written (or left out)
        // with one call.
        let mut at = 0usize;
        let mut written_to = 0u64;
        while at < data.len() {
            let zeros = zero_blocks(offset + at as u64, &data[at..]);
            if zeros == 0 {
                let mut end = at;
                while end < data.len() && zero_blocks(offset + end as u64, &data[end..]) == 0 {
                    end = next_block_end(offset, end, data.len());
                }
                self.file()?.write_all_at(&data[at..end], offset + at as u64)?;
                written_to = offset + end as u64;
                at = end;
                continue;
            }
            // Below the furthest write something may be there already.
            let pos = offset + at as u64;
            let below = self.len.saturating_sub(pos).min(zeros as u64);
            if below > 0 && !punch_hole(self.file()?, pos, below) {
                self.file()?.write_all_at(&data[at..at + below as usize], pos)?;
            }
            at += zeros;
        }
        let end = offset + data.len() as u64;
        if written_to == end {
            // The write itself made the file this long: no truncate call
            // (one per small file received cost 2% of a first sync).
            self.len = self.len.max(end);
            return Ok(());
        }
        self.extend_to(end)
    }

    /// Make the file at least `len` bytes long (what is added reads as
    /// zeros and takes no disk).
    pub fn extend_to(&mut self, len: u64) -> io::Result<()> {
        if len > self.len {
            self.file()?.set_len(len)?;
            self.len = len;
        }
        Ok(())
    }

    /// Append `len` bytes of `src` from `offset`, copied in the kernel
    /// (`copy_file_range`: a shared extent on XFS and btrfs, a page-cache
    /// copy on ext4, never through our memory; where the kernel cannot, by
    /// read and write). Returns those bytes as read back from this file, so
    /// that what the caller hashes is what was written, even if `src`
    /// changes meanwhile. A source shorter than that fails.
    ///
    /// Only the data of `src` is copied: its holes stay holes here.
    pub fn append_range(&mut self, src: &File, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        use std::os::unix::fs::FileExt;
        self.faults.check(&self.path)?;
        let start = self.len;
        let end = offset + len as u64;
        // A hole at the end reads as zeros: a source that ends early must
        // fail, not copy less.
        let src_len = src.metadata().map_err(io_err(&self.path))?.len();
        if src_len < end {
            let short = io::Error::new(io::ErrorKind::UnexpectedEof, format!("the source ends at {src_len}, before {end}"));
            return Err(io_err(&self.path)(short));
        }
        let mut pos = offset;
        while pos < end {
            let Some((data, hole)) = next_data(src, pos, end) else { break };
            let to = start + (data - offset);
            let want = hole - data;
            let copied = match copy_range(src, data, self.file().map_err(io_err(&self.path))?, to, want) {
                Ok(()) => want,
                Err(Fallback(copied)) => copied,
            };
            if copied < want {
                let mut rest = vec![0u8; (want - copied) as usize];
                src.read_exact_at(&mut rest, data + copied).map_err(io_err(&self.path))?;
                self.write_keeping_holes(to + copied, &rest).map_err(io_err(&self.path))?;
            }
            pos = hole;
        }
        self.extend_to(start + len as u64).map_err(io_err(&self.path))?;
        let mut written = vec![0u8; len];
        self.file()
            .and_then(|f| f.read_exact_at(&mut written, start))
            .map_err(io_err(&self.path))?;
        Ok(written)
    }

    /// The first half of a commit: give the file the mode and mtime of
    /// `entry`, then fsync it. Touches only the temp file, so it may run off
    /// the event loop.
    pub fn make_durable(&self, entry: &Entry) -> Result<(), StoreError> {
        self.prepare(entry)?;
        self.file().and_then(File::sync_all).map_err(io_err(&self.path))
    }

    /// Give the file its final length, mode, attributes and mtime now,
    /// where it is written (off the loop), so that making it durable is
    /// one flush.
    pub fn prepare_now(&mut self, entry: &Entry) -> Result<(), StoreError> {
        self.prepare(entry)?;
        self.prepared = true;
        Ok(())
    }

    fn prepare(&self, entry: &Entry) -> Result<(), StoreError> {
        if self.prepared {
            return Ok(());
        }
        self.faults.check(&self.path)?;
        let file = self.file().map_err(io_err(&self.path))?;
        // The length the content says, whatever holes it ends with.
        if self.len < entry.size {
            file.set_len(entry.size).map_err(io_err(&self.path))?;
        }
        // Through the open file, not its name: no lookup in a folder of
        // thousands for each small file received.
        set_mode_of(file, entry, self.perms).map_err(io_err(&self.path))?;
        if let Some(x) = entry.xattrs.as_ref().filter(|_| self.xattrs) {
            super::xattrs::write_new(file, x).map_err(io_err(&self.path))?;
        }
        filetime::set_file_handle_times(file, None, Some(filetime_of(entry.mtime))).map_err(io_err(&self.path))
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
        if let Err(e) = first.file().and_then(syncfs) {
            // Not flushed: none of them may become visible.
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(io_err(&first.path)(io::Error::new(e.kind(), e.to_string())));
            }
        }
        results
    }

    /// The open file; an error once it was closed (`close`).
    fn file(&self) -> io::Result<&File> {
        self.file.as_ref().ok_or_else(|| io::Error::other("the temp file was closed"))
    }

    /// Close the file, which is whole and durable, before it is renamed
    /// into place: closing a file opened for writing raises `IN_CLOSE_WRITE`
    /// under the name it has then, and under its final name the watcher
    /// would report our own install as a change. Closing `make_all_durable`'s
    /// files on the thread that flushed them also takes the `close` off the
    /// node's loop.
    pub fn close(&mut self) {
        if let Some(file) = self.file.take() {
            self.ino = file.metadata().ok().map(|m| std::os::unix::fs::MetadataExt::ino(&m));
        }
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

/// Copy `len` bytes of `src` from `offset` to `dst` at `to`, in the kernel.
#[cfg(target_os = "linux")]
fn copy_range(src: &File, offset: u64, dst: &File, to: u64, len: u64) -> Result<(), Fallback> {
    use std::os::fd::AsRawFd;
    let mut copied = 0u64;
    while copied < len {
        let (Ok(mut off_in), Ok(mut off_out)) = (libc::loff_t::try_from(offset + copied), libc::loff_t::try_from(to + copied)) else {
            return Err(Fallback(copied));
        };
        let want = usize::try_from(len - copied).unwrap_or(usize::MAX);
        // SAFETY: both descriptors are open for the call; `off_in` and
        // `off_out` are valid loff_t values the kernel updates.
        let n = unsafe { libc::copy_file_range(src.as_raw_fd(), &mut off_in, dst.as_raw_fd(), &mut off_out, want, 0) };
        match n {
            // 0: the source ended early; an error: not supported here.
            n if n <= 0 => return Err(Fallback(copied)),
            n => copied += n as u64,
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn copy_range(_src: &File, _offset: u64, _dst: &File, _to: u64, _len: u64) -> Result<(), Fallback> {
    Err(Fallback(0))
}

/// The next run of data of `src` at or after `pos`, before `end`: its start
/// and its end (the next hole, or `end`). `None` if only holes are left.
/// Where the filesystem cannot tell, everything is data.
fn next_data(src: &File, pos: u64, end: u64) -> Option<(u64, u64)> {
    use std::os::fd::AsRawFd;
    let seek = |whence: libc::c_int, at: u64| -> Option<u64> {
        let at = libc::off_t::try_from(at).ok()?;
        // SAFETY: `src` is open for the call; lseek reads nothing else.
        let r = unsafe { libc::lseek(src.as_raw_fd(), at, whence) };
        u64::try_from(r).ok()
    };
    let data = match seek(libc::SEEK_DATA, pos) {
        Some(d) => d,
        // ENXIO: no data after `pos`; anything else: cannot tell.
        None if io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) => return None,
        None => return Some((pos, end)),
    };
    if data >= end {
        return None;
    }
    let hole = seek(libc::SEEK_HOLE, data).unwrap_or(end).min(end);
    Some((data, hole.max(data + 1).min(end)))
}

/// Deallocate `len` bytes at `offset` (they read as zeros after). False
/// where the filesystem cannot.
fn punch_hole(file: &File, offset: u64, len: u64) -> bool {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return false;
    };
    // SAFETY: `file` is open for the call.
    unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset,
            len,
        ) == 0
    }
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
