//! Changing the synced directory: everything dirsync writes there.
//!
//! Owns: every write, which is atomic
//! (temp file in the same folder, fsync, mtime, rename). Before replacing or
//! deleting anything it checks that the path still holds what the index
//! says (`expected`), so a change the user made meanwhile is never lost, and
//! that no symlink lies on the way, so nothing is written outside the root.
//! Must not: decide what to change (the engine does).

use super::hashing::{BackgroundHashes, HashJob, Hashed, INLINE_HASH_MAX};
use super::temp::{DiskFaults, TempFile};
use super::trash::Trash;
use crate::engine::ActionError;
use crate::wire::{temp_name, temp_name_device, Entry, Hash, Kind, NodeId, PathError, RelPath, STATE_DIR_NAME};
use std::collections::BTreeSet;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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
    #[error("{0}: changed on disk meanwhile; keeping the local version")]
    Changed(String),
    #[error("{0}: large file queued to be hashed off the loop")]
    Hashing(String),
    #[error("{0}: content does not match the announced hash")]
    HashMismatch(String),
    #[error(transparent)]
    Path(#[from] PathError),
}

impl From<StoreError> for ActionError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Changed(_) => ActionError::Changed(e.to_string()),
            StoreError::Io { ref source, .. } if source.kind() == io::ErrorKind::DirectoryNotEmpty => ActionError::NotEmpty(e.to_string()),
            e => ActionError::Failed(e.to_string()),
        }
    }
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Whether a file has an execute bit set.
pub fn is_exec(meta: &Metadata) -> bool {
    meta.permissions().mode() & 0o111 != 0
}

/// Give file `path` execute bits where it has read bits (`exec`), or take
/// them all away, unless it is so already.
pub(super) fn set_exec(path: &Path, exec: bool) -> Result<(), StoreError> {
    let meta = fs::metadata(path).map_err(io_err(path))?;
    if is_exec(&meta) == exec {
        return Ok(());
    }
    let mode = meta.permissions().mode();
    let mode = if exec { mode | ((mode & 0o444) >> 2) } else { mode & !0o111 };
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io_err(path))
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
pub(super) fn filetime_of(ns: i128) -> filetime::FileTime {
    let secs = ns.div_euclid(1_000_000_000);
    let secs = i64::try_from(secs).unwrap_or(if secs < 0 { i64::MIN } else { i64::MAX });
    filetime::FileTime::from_unix_time(secs, ns.rem_euclid(1_000_000_000) as u32)
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, Clone)]
pub struct Store {
    pub(super) root: PathBuf,
    /// The state directory, when it lies inside the root (never scanned).
    state_dir: PathBuf,
    /// This directory's device id: it names our temp files, so only those
    /// are ever swept.
    device: NodeId,
    faults: DiskFaults,
    /// Where what a peer's change deletes or replaces goes first.
    trash: Option<Trash>,
    /// Files read to hash them by a look at the disk.
    pub(super) files_hashed: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Files larger than this are hashed off the loop (`background`).
    pub(super) inline_hash_max: u64,
    pub(super) background: BackgroundHashes,
}

impl Store {
    /// Files read to hash them by a look at the disk, so far.
    pub fn files_hashed(&self) -> u64 {
        self.files_hashed.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn new(root: PathBuf, state_dir: PathBuf, device: NodeId) -> Self {
        Store {
            root,
            state_dir,
            device,
            faults: DiskFaults::default(),
            trash: None,
            files_hashed: Default::default(),
            inline_hash_max: INLINE_HASH_MAX,
            background: BackgroundHashes::default(),
        }
    }

    /// Hash files larger than `bytes` off the loop (the simulation lowers
    /// it so that its small files take that way too).
    pub fn with_inline_hash_max(mut self, bytes: u64) -> Self {
        self.inline_hash_max = bytes;
        self
    }

    /// The next large file to hash off the loop, if any.
    pub fn next_hash_job(&self) -> Option<HashJob> {
        self.background.next_job()
    }

    /// Large files queued or being hashed off the loop.
    pub fn files_hashing(&self) -> usize {
        self.background.pending()
    }

    /// Take in a finished `HashJob`: `Ok` when a look at its path now finds
    /// the hash, `Err` with why not.
    pub fn finish_hash(&self, hashed: Hashed) -> Result<(), String> {
        self.background.finish(hashed)?;
        self.files_hashed.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Keep what a peer's change deletes or replaces in `trash`.
    pub fn with_trash(mut self, trash: Trash) -> Self {
        self.trash = Some(trash).filter(Trash::enabled);
        self
    }

    /// Move file `full` (at `rel`) to the trash; false without one.
    fn trash_moved(&self, full: &Path, rel: &RelPath) -> bool {
        self.trash.as_ref().is_some_and(|t| t.keep_moved(full, rel))
    }

    /// Link file `full` (at `rel`), about to be replaced, into the trash.
    fn trash_linked(&self, full: &Path, rel: &RelPath, expected: Option<&Entry>) {
        if let Some(t) = &self.trash {
            if expected.is_some_and(|e| !e.deleted && e.kind == Kind::File) {
                t.keep_linked(full, rel);
            }
        }
    }

    /// Inject the failures `faults` is set to into every write.
    pub fn with_faults(mut self, faults: DiskFaults) -> Self {
        self.faults = faults;
        self
    }

    /// The full path of `rel`, after checking that no ancestor inside the
    /// root is a symlink.
    pub fn full_path(&self, rel: &RelPath) -> Result<PathBuf, StoreError> {
        for anc in rel.ancestors() {
            let p = anc.to_fs(&self.root);
            match fs::symlink_metadata(&p) {
                Ok(m) if m.file_type().is_symlink() => return Err(StoreError::Symlink(rel.to_string())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(io_err(&p)(e)),
            }
        }
        Ok(rel.to_fs(&self.root))
    }

    /// The folder whose presence proves DIR is the directory we synced:
    /// `DIR/.dirsync` (the state directory by default, else kept empty).
    pub fn marker(&self) -> PathBuf {
        self.root.join(STATE_DIR_NAME)
    }

    pub(super) fn skip(&self, full: &Path) -> bool {
        full == self.state_dir || full == self.marker() || full.file_name().and_then(|n| n.to_str()).and_then(temp_name_device).is_some()
    }

    /// True if `rel` holds what `expected` says (`None`: nothing).
    pub fn matches(&self, rel: &RelPath, expected: Option<&Entry>) -> Result<bool, StoreError> {
        let full = self.full_path(rel)?;
        let meta = match fs::symlink_metadata(&full) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(expected.is_none_or(|e| e.deleted)),
            Err(e) => return Err(io_err(&full)(e)),
        };
        if meta.file_type().is_symlink() {
            // Not synced, and not ours to replace: say so (it used to read
            // "changed on disk meanwhile").
            return Err(StoreError::Symlink(rel.to_string()));
        }
        Ok(match expected {
            Some(e) if !e.deleted && e.kind == Kind::Dir => meta.is_dir(),
            Some(e) if !e.deleted => {
                meta.file_type().is_file() && meta.len() == e.size && mtime_ns(&meta) == e.mtime && is_exec(&meta) == e.exec
            }
            _ => false,
        })
    }

    /// Every change under DIR starts here: the path must still hold
    /// `expected`, and an injected disk fault fails it.
    fn ensure_matches(&self, rel: &RelPath, expected: Option<&Entry>) -> Result<(), StoreError> {
        self.faults.check(&rel.to_fs(&self.root))?;
        if self.matches(rel, expected)? {
            Ok(())
        } else {
            Err(StoreError::Changed(rel.to_string()))
        }
    }

    /// Create the parent folders of `rel` (refusing symlinks on the way).
    fn make_parents(&self, rel: &RelPath) -> Result<(), StoreError> {
        if let Some(parent) = rel.parent() {
            self.make_dir(&parent)?;
        }
        Ok(())
    }

    /// Create directory `rel`, replacing `local`, the file it holds now
    /// (checked to be unchanged first).
    pub fn make_dir_over(&self, rel: &RelPath, local: Option<&Entry>) -> Result<(), StoreError> {
        if let Some(file) = local.filter(|l| !l.deleted && l.kind == Kind::File) {
            self.ensure_matches(rel, Some(file))?;
            let full = self.full_path(rel)?;
            if !self.trash_moved(&full, rel) {
                fs::remove_file(&full).map_err(io_err(&full))?;
            }
        }
        self.make_dir(rel)
    }

    /// Make room at `full` for a file where the index says `expected` is:
    /// a folder there (emptied by the deletions that came with the file)
    /// is removed; one that still holds something fails as not empty.
    fn clear_folder(full: &Path, expected: Option<&Entry>) -> Result<(), StoreError> {
        if expected.is_some_and(|e| !e.deleted && e.kind == Kind::Dir) && full.is_dir() {
            fs::remove_dir(full).map_err(io_err(full))?;
        }
        Ok(())
    }

    /// Create directory `rel` and its parents.
    pub fn make_dir(&self, rel: &RelPath) -> Result<(), StoreError> {
        let full = self.full_path(rel)?;
        if !full.is_dir() {
            self.faults.check(&full)?;
        }
        fs::create_dir_all(&full).map_err(io_err(&full))
    }

    /// A new temp file in the folder of `rel`, created with its parents.
    pub fn create_temp(&self, rel: &RelPath) -> Result<TempFile, StoreError> {
        self.make_parents(rel)?;
        let dir = self
            .full_path(rel)?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.clone());
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(temp_name(&self.device.to_string(), n));
        self.faults.check(&path)?;
        let file = File::options().write(true).create_new(true).open(&path).map_err(io_err(&path))?;
        Ok(TempFile {
            file,
            faults: self.faults.clone(),
            path,
            committed: false,
        })
    }

    /// Make `tmp` visible as `entry.path`: fsync, set the mtime, check the
    /// target still holds `expected`, rename over it.
    pub fn commit(&self, tmp: TempFile, entry: &Entry, expected: Option<&Entry>) -> Result<(), StoreError> {
        tmp.make_durable(entry)?;
        self.install(tmp, entry, expected)
    }

    /// The second half of `commit`, for a `tmp` already made durable: check
    /// the target still holds `expected`, rename over it.
    pub fn install(&self, mut tmp: TempFile, entry: &Entry, expected: Option<&Entry>) -> Result<(), StoreError> {
        self.ensure_matches(&entry.path, expected)?;
        let full = self.full_path(&entry.path)?;
        Self::clear_folder(&full, expected)?;
        self.trash_linked(&full, &entry.path, expected);
        fs::rename(&tmp.path, &full).map_err(io_err(&full))?;
        // The rename consumed the temp file's name: dropping it now only
        // closes the file. (It was `mem::forget`, which leaked one open file
        // per received file until the node ran out of descriptors; found by
        // the simulation.)
        tmp.committed = true;
        Ok(())
    }

    /// Remove `local` (a file, or a directory if it is empty).
    pub fn delete(&self, local: &Entry) -> Result<(), StoreError> {
        self.ensure_matches(&local.path, Some(local))?;
        let full = self.full_path(&local.path)?;
        match local.kind {
            Kind::Dir => fs::remove_dir(&full),
            Kind::File if self.trash_moved(&full, &local.path) => Ok(()),
            Kind::File => fs::remove_file(&full),
        }
        .map_err(io_err(&full))
    }

    /// Remove folder `rel` if it is empty: `Ok(true)` if it was removed,
    /// `Ok(false)` if it holds something or is gone, `Err` if it could not
    /// be (a read-only disk: worth another try).
    pub fn remove_dir_if_empty(&self, rel: &RelPath) -> Result<bool, StoreError> {
        let full = self.full_path(rel)?;
        self.faults.check(&full)?;
        match fs::remove_dir(&full) {
            Ok(()) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(io_err(&full)(e)),
        }
    }

    /// Give file `local.path` the mtime of `entry` (same content).
    pub fn set_mtime(&self, entry: &Entry, local: &Entry) -> Result<(), StoreError> {
        self.ensure_matches(&local.path, Some(local))?;
        let full = self.full_path(&entry.path)?;
        set_exec(&full, entry.exec)?;
        filetime::set_file_mtime(&full, filetime_of(entry.mtime)).map_err(io_err(&full))
    }

    /// Move file `from` to `entry.path`, which must hold `local`.
    pub fn rename(&self, from: &Entry, entry: &Entry, local: Option<&Entry>) -> Result<(), StoreError> {
        self.ensure_matches(&from.path, Some(from))?;
        self.ensure_matches(&entry.path, local)?;
        self.make_parents(&entry.path)?;
        let src = self.full_path(&from.path)?;
        let dst = self.full_path(&entry.path)?;
        set_exec(&src, entry.exec)?;
        filetime::set_file_mtime(&src, filetime_of(entry.mtime)).map_err(io_err(&src))?;
        Self::clear_folder(&dst, local)?;
        self.trash_linked(&dst, &entry.path, local);
        fs::rename(&src, &dst).map_err(io_err(&dst))
    }

    /// Copy file `from` to `entry.path` (which must hold `local`), checking
    /// the copy's hash.
    pub fn copy(&self, from: &Entry, entry: &Entry, local: Option<&Entry>) -> Result<(), StoreError> {
        let src = self.full_path(&from.path)?;
        let mut tmp = self.create_temp(&entry.path)?;
        let mut input = File::open(&src).map_err(io_err(&src))?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut offset = 0;
        loop {
            // Read to hash (the copy must be what the entry says); the bytes
            // themselves are copied in the kernel.
            let n = input.read(&mut buf).map_err(io_err(&src))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            tmp.append_range(&input, offset, &buf[..n])?;
            offset += n as u64;
        }
        if Hash::from(hasher.finalize()) != entry.hash {
            return Err(StoreError::HashMismatch(entry.path.to_string()));
        }
        self.commit(tmp, entry, local)
    }

    /// Remove temp files left by a crash. Returns how many.
    pub fn clean_temp_files(&self) -> usize {
        self.remove_temp_files_except(&BTreeSet::new())
    }

    /// Remove every temp file but those in `keep` (being written now).
    /// Returns how many.
    pub fn remove_temp_files_except(&self, keep: &BTreeSet<PathBuf>) -> usize {
        let mut removed = 0;
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else { continue };
            for de in entries.flatten() {
                let full = de.path();
                let Ok(ft) = de.file_type() else { continue };
                // Only ours: another device's are not ours to remove (a
                // copy of DIR from elsewhere), and a user's file that only
                // looks like one is not a temp file at all.
                let device = self.device.to_string();
                let is_temp = de.file_name().to_str().and_then(temp_name_device) == Some(device.as_str());
                if is_temp && ft.is_file() && !keep.contains(&full) {
                    if fs::remove_file(&full).is_ok() {
                        removed += 1;
                    }
                } else if ft.is_dir() && full != self.state_dir {
                    stack.push(full);
                }
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::testing::{entry_for, rel, setup};

    /// Group commit: a batch of temp files made durable by one flush, each
    /// with its mode and mtime; a file that fails is reported alone.
    #[test]
    fn a_batch_is_made_durable_at_once_and_a_failure_stays_its_own() {
        let (dir, store) = setup();
        let entry = |name: &str, t: i128| Entry {
            mtime: t,
            exec: t % 2 == 0,
            ..crate::wire::testing::file(name, t, b"content")
        };
        let entries: Vec<Entry> = (1..=3).map(|i| entry(&format!("b/f{i}"), 1_600_000_000_000_000_000 + i)).collect();
        let tmps: Vec<TempFile> = entries
            .iter()
            .map(|e| {
                let mut t = store.create_temp(&e.path).unwrap();
                t.write(b"content").unwrap();
                t
            })
            .collect();
        let results = TempFile::make_all_durable(tmps.iter().zip(&entries));
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        for ((tmp, e), _) in tmps.into_iter().zip(&entries).zip(&results) {
            store.install(tmp, e, None).unwrap();
            assert!(store.matches(&e.path, Some(e)).unwrap(), "{} has its mtime and mode", e.path);
        }
        // A failing disk fails each file of a batch.
        let faults = crate::fs::temp::DiskFaults::default();
        let store = store.with_faults(faults.clone());
        let e = entry("b/g", 1_600_000_000_000_000_009);
        let tmps: Vec<TempFile> = (0..2).map(|_| store.create_temp(&e.path).unwrap()).collect();
        faults.set(Some(crate::fs::temp::DiskFault::Io));
        let results = TempFile::make_all_durable(tmps.iter().map(|t| (t, &e)));
        assert!(results.iter().all(Result::is_err), "{results:?}");
        assert!(!dir.path().join("b/g").exists());
    }

    #[test]
    fn commit_is_atomic_and_sets_mtime() {
        let (dir, store) = setup();
        let mut tmp = store.create_temp(&rel("d/new.txt")).unwrap();
        tmp.write(b"data").unwrap();
        let e = Entry {
            path: rel("d/new.txt"),
            kind: Kind::File,
            deleted: false,
            size: 4,
            mtime: 1_500_000_000_123_456_789,
            version: 1_500_000_000_123_456_789,
            hash: Hash::of(b"data"),
            vector: Default::default(),
            by: Default::default(),
            exec: false,
        };
        assert!(!dir.path().join("d/new.txt").exists());
        store.commit(tmp, &e, None).unwrap();
        assert_eq!(fs::read(dir.path().join("d/new.txt")).unwrap(), b"data");
        assert!(store.matches(&e.path, Some(&e)).unwrap());
        let names: Vec<_> = fs::read_dir(dir.path().join("d")).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file left");
    }

    /// Issue 13, bug 1: mtimes after 2262 (the end of 64-bit nanoseconds)
    /// were stored as 2262-04-11 and ranked wrong. Every time a filesystem
    /// holds round-trips: written, read back by a scan, still matching.
    #[test]
    fn far_past_and_far_future_mtimes_round_trip() {
        let (_dir, store) = setup();
        // 1950, 2300 and 2400, to the nanosecond.
        for (i, mtime) in [-631_152_000_000_000_001i128, 10_413_792_000_123_456_789, 13_569_465_600_987_654_321]
            .into_iter()
            .enumerate()
        {
            let path = rel(&format!("t{i}"));
            let mut tmp = store.create_temp(&path).unwrap();
            tmp.write(b"when").unwrap();
            let e = Entry {
                path: path.clone(),
                kind: Kind::File,
                deleted: false,
                size: 4,
                mtime,
                version: mtime,
                hash: Hash::of(b"when"),
                vector: Default::default(),
                by: Default::default(),
                exec: false,
            };
            store.commit(tmp, &e, None).unwrap();
            let seen = store.observe(&path, None).unwrap().unwrap();
            assert_eq!(seen.mtime, mtime, "{path}");
            assert!(store.matches(&path, Some(&e)).unwrap());
        }
    }

    /// Issue 13, bug 5: a folder where a file was, and a file where a
    /// folder was.
    #[test]
    fn a_folder_replaces_a_file_and_a_file_an_emptied_folder() {
        let (dir, store) = setup();
        fs::write(dir.path().join("x"), b"old").unwrap();
        let file = entry_for(&store, "x");
        store.make_dir_over(&rel("x"), Some(&file)).unwrap();
        assert!(dir.path().join("x").is_dir());
        let folder = Entry {
            kind: Kind::Dir,
            size: 0,
            hash: Hash::ZERO,
            ..file.clone()
        };
        // A folder that still holds something is not replaced.
        fs::write(dir.path().join("x/inner"), b"i").unwrap();
        let mut tmp = store.create_temp(&rel("y")).unwrap();
        tmp.write(b"new").unwrap();
        let new = Entry {
            path: rel("x"),
            size: 3,
            hash: Hash::of(b"new"),
            ..file
        };
        assert!(store.commit(tmp, &new, Some(&folder)).is_err());
        fs::remove_file(dir.path().join("x/inner")).unwrap();
        let mut tmp = store.create_temp(&rel("y")).unwrap();
        tmp.write(b"new").unwrap();
        store.commit(tmp, &new, Some(&folder)).unwrap();
        assert_eq!(fs::read(dir.path().join("x")).unwrap(), b"new");
    }

    /// Issue 13: the executable bit travels: set by a commit and by a
    /// touch, and a chmod here counts as a local change.
    #[test]
    fn the_executable_bit_is_written_and_checked() {
        let (dir, store) = setup();
        fs::write(dir.path().join("run.sh"), b"#!/bin/sh").unwrap();
        let plain = entry_for(&store, "run.sh");
        assert!(!plain.exec);
        let runnable = Entry {
            exec: true,
            ..plain.clone()
        };
        assert!(
            !store.matches(&rel("run.sh"), Some(&runnable)).unwrap(),
            "the mode is part of what a path holds"
        );
        store.set_mtime(&runnable, &plain).unwrap();
        let mode = fs::metadata(dir.path().join("run.sh")).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, (mode & 0o444) >> 2, "execute where readable");
        assert!(store.observe(&rel("run.sh"), None).unwrap().unwrap().exec);
        let mut tmp = store.create_temp(&rel("new.sh")).unwrap();
        tmp.write(b"#!/bin/sh").unwrap();
        store
            .commit(
                tmp,
                &Entry {
                    path: rel("new.sh"),
                    ..runnable
                },
                None,
            )
            .unwrap();
        assert!(store.observe(&rel("new.sh"), None).unwrap().unwrap().exec);
    }

    #[test]
    fn a_local_edit_is_never_overwritten() {
        let (dir, store) = setup();
        fs::write(dir.path().join("f"), b"old").unwrap();
        let known = entry_for(&store, "f");
        // The user edits the file after the index saw it.
        fs::write(dir.path().join("f"), b"user edit!").unwrap();
        let mut tmp = store.create_temp(&rel("f")).unwrap();
        tmp.write(b"remote").unwrap();
        let remote = Entry {
            size: 6,
            hash: Hash::of(b"remote"),
            ..known.clone()
        };
        assert!(matches!(store.commit(tmp, &remote, Some(&known)), Err(StoreError::Changed(_))));
        assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"user edit!");
        assert!(matches!(store.delete(&known), Err(StoreError::Changed(_))));
        assert_eq!(store.clean_temp_files(), 0, "the abandoned temp file was removed");
    }

    /// Issue 13: a symlink as the last component of an incoming path was
    /// reported as "changed on disk meanwhile".
    #[test]
    fn a_symlink_where_a_file_would_go_is_named_as_such() {
        let (dir, store) = setup();
        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("link")).unwrap();
        assert!(matches!(store.matches(&rel("link"), None), Err(StoreError::Symlink(_))));
        assert!(dir.path().join("link").symlink_metadata().unwrap().file_type().is_symlink());
    }

    #[test]
    fn no_write_through_a_symlinked_folder() {
        let (dir, store) = setup();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("escape")).unwrap();
        assert!(matches!(store.create_temp(&rel("escape/x")), Err(StoreError::Symlink(_))));
        assert!(matches!(store.make_dir(&rel("escape/sub")), Err(StoreError::Symlink(_))));
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn rename_and_copy_keep_content() {
        let (dir, store) = setup();
        fs::write(dir.path().join("a"), b"content").unwrap();
        let a = entry_for(&store, "a");
        let b = Entry {
            path: rel("x/b"),
            ..a.clone()
        };
        store.copy(&a, &b, None).unwrap();
        assert_eq!(fs::read(dir.path().join("x/b")).unwrap(), b"content");
        let c = Entry {
            path: rel("c"),
            ..a.clone()
        };
        store.rename(&a, &c, None).unwrap();
        assert!(!dir.path().join("a").exists());
        assert!(store.matches(&c.path, Some(&c)).unwrap());
        let wrong = Entry {
            path: rel("d"),
            hash: Hash::of(b"other"),
            ..c.clone()
        };
        assert!(matches!(store.copy(&c, &wrong, None), Err(StoreError::HashMismatch(_))));
        assert!(!dir.path().join("d").exists());
        // Several reads' worth, copied in the kernel piece by piece.
        let big: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(dir.path().join("big"), &big).unwrap();
        let big_entry = entry_for(&store, "big");
        let copy = Entry {
            path: rel("y/big"),
            ..big_entry.clone()
        };
        store.copy(&big_entry, &copy, None).unwrap();
        assert_eq!(fs::read(dir.path().join("y/big")).unwrap(), big);
    }
}
