//! What every module that touches files under DIR shares: the fs
//! domain's error (`StoreError`), and reading and setting a file's mtime
//! and permission bits. A leaf of its own, so that the store, its temp files
//! and the hashing of large files use it without depending on each other.
//!
//! Owns: those helpers. Must not: change anything under DIR by itself.

use crate::engine::{mode_on_disk, ActionError};
use crate::wire::{Entry, Kind, PathError};
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}: a symlink is there or on the way; refusing to write through it")]
    Symlink(String),
    #[error("{0}: a FIFO, socket or device file is there; it is not synced and not replaced (remove it to take the peer's file)")]
    Special(String),
    #[error("{0}: open for writing by {1}; the peer's version waits until it is closed")]
    Busy(String, String),
    #[error("{0}: changed on disk meanwhile; keeping the local version")]
    Changed(String),
    #[error("{0}: large file queued to be hashed off the loop")]
    Hashing(String),
    #[error("{0}: a mount of the kernel's {1} filesystem; not synced")]
    Pseudo(String, &'static str),
    #[error("{0}: content does not match the announced hash")]
    HashMismatch(String),
    #[error(transparent)]
    Path(#[from] PathError),
}

impl From<StoreError> for ActionError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Changed(_) => ActionError::Changed(e.to_string()),
            StoreError::Busy(..) => ActionError::Busy(e.to_string()),
            StoreError::Io { ref source, .. } if source.kind() == io::ErrorKind::DirectoryNotEmpty => ActionError::NotEmpty(e.to_string()),
            e => ActionError::Failed(e.to_string()),
        }
    }
}

/// True if `e` says nothing is at the path: not found, or one of the
/// folders on its way is a file now (ENOTDIR).
pub(crate) fn is_absent(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory)
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Whether a file has an execute bit set.
pub fn is_exec(meta: &Metadata) -> bool {
    meta.permissions().mode() & 0o111 != 0
}

/// The permission bits dirsync carries (never set-uid, set-gid, sticky).
pub fn mode_of(meta: &Metadata) -> u32 {
    meta.permissions().mode() & 0o777
}

/// `set_mode` through an open file.
pub(crate) fn set_mode_of(file: &fs::File, entry: &Entry, perms: bool) -> io::Result<()> {
    match mode_for(&file.metadata()?, entry, perms) {
        Some(mode) => file.set_permissions(mode),
        None => Ok(()),
    }
}

/// Give `path` the mode `entry` puts on disk (`mode_on_disk`), or, with
/// `perms` off (`--no-perms`), only its execute bit, unless it has it.
pub(crate) fn set_mode(path: &Path, entry: &Entry, perms: bool) -> Result<(), StoreError> {
    match mode_for(&fs::symlink_metadata(path).map_err(io_err(path))?, entry, perms) {
        Some(mode) => fs::set_permissions(path, mode).map_err(io_err(path)),
        None => Ok(()),
    }
}

/// The permissions `meta`'s file gets for `entry`; `None` if it has them.
fn mode_for(meta: &Metadata, entry: &Entry, perms: bool) -> Option<fs::Permissions> {
    match (perms, entry.kind) {
        (_, Kind::Symlink) | (false, Kind::Dir) => return None,
        (false, _) => return with_exec(meta, entry.exec),
        (true, _) => {}
    }
    let want = mode_on_disk(entry);
    (meta.permissions().mode() & 0o7777 != want).then(|| fs::Permissions::from_mode(want))
}

/// The permissions `meta`'s file gets with its execute bits set (where it
/// may be read) or cleared; `None` if they are already so.
fn with_exec(meta: &Metadata, exec: bool) -> Option<fs::Permissions> {
    if is_exec(meta) == exec {
        return None;
    }
    let mode = meta.permissions().mode();
    let mode = if exec { mode | ((mode & 0o444) >> 2) } else { mode & !0o111 };
    Some(fs::Permissions::from_mode(mode))
}

/// A file's mtime as nanoseconds since the Unix epoch.
pub fn mtime_ns(meta: &Metadata) -> i128 {
    meta.modified().map(system_time_ns).unwrap_or(0)
}

pub fn system_time_ns(t: SystemTime) -> i128 {
    // A duration's nanoseconds fit i128 for any SystemTime (u64 seconds).
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// `ns` as a file time; times no filesystem holds saturate (setting one
/// then fails or clamps in the kernel, and a rescan reads what it kept).
pub(crate) fn filetime_of(ns: i128) -> filetime::FileTime {
    let secs = ns.div_euclid(1_000_000_000);
    let secs = i64::try_from(secs).unwrap_or(if secs < 0 { i64::MIN } else { i64::MAX });
    filetime::FileTime::from_unix_time(secs, ns.rem_euclid(1_000_000_000) as u32)
}

/// Rename `from` to `to` only if nothing is at `to`: `Ok(false)` when
/// something is (or this kernel or filesystem cannot tell in one call).
/// The check and the rename are one step, so nothing created meanwhile is
/// ever replaced, and a new file costs no look at its path first.
#[cfg(target_os = "linux")]
pub(crate) fn rename_if_absent(from: &Path, to: &Path) -> io::Result<bool> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let (from, to) = (c(from)?, c(to)?);
    // SAFETY: both are valid NUL-terminated paths for the call.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, from.as_ptr(), libc::AT_FDCWD, to.as_ptr(), libc::RENAME_NOREPLACE) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        // Something is there; or the kernel (before 3.15) or the
        // filesystem does not know the flag.
        Some(libc::EEXIST | libc::ENOSYS | libc::EINVAL) => Ok(false),
        _ => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn rename_if_absent(_from: &Path, _to: &Path) -> io::Result<bool> {
    Ok(false)
}
