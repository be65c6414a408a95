//! Changing the synced directory: everything dirsync writes there.
//!
//! Owns: every write, which is atomic
//! (temp file in the same folder, fsync, mtime, rename). Before replacing or
//! deleting anything it checks that the path still holds what the index
//! says (`expected`), so a change the user made meanwhile is never lost, and
//! that no symlink lies on the way, so nothing is written outside the root.
//! Must not: decide what to change (the engine does).

use super::files::{filetime_of, io_err, is_absent, rename_if_absent, set_mode};
pub use super::files::{is_exec, mtime_ns, system_time_ns, StoreError};
use super::hashing::{stat_of, BackgroundHashes, HashJob, Hashed, INLINE_HASH_MAX};
use super::special::{open_for_reading, WarnOnce};
use super::temp::{DiskFaults, TempFile};
use super::trash::Trash;
use super::writers::Writers;
use crate::engine::Stat;
use crate::wire::{temp_name, temp_name_device, Entry, Hash, Kind, NodeId, RelPath, STATE_DIR_NAME};
use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tracing::warn;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// What `Store::seen_matches` saw at a path: its full path (its folders
/// checked to be no links) and its metadata, `None` when nothing is there.
struct Seen {
    full: PathBuf,
    meta: Option<fs::Metadata>,
}

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
    /// The device DIR is on: a folder on another one is a mount point,
    /// checked for a pseudo filesystem before it is read.
    pub(super) root_device: Option<u64>,
    /// Skipped paths already warned about.
    pub(super) warned: WarnOnce,
    /// Who holds a file open for writing.
    writers: Writers,
    /// Permission bits are looked at and set (off: `--no-perms`, the
    /// execute bit alone).
    pub(super) perms: bool,
    /// `user.` extended attributes are looked at and set (`--xattrs`).
    pub(super) xattrs: bool,
}

impl Store {
    /// Files read to hash them by a look at the disk, so far.
    pub fn files_hashed(&self) -> u64 {
        self.files_hashed.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn new(root: PathBuf, state_dir: PathBuf, device: NodeId) -> Self {
        let root_device = fs::metadata(&root).ok().map(|m| std::os::unix::fs::MetadataExt::dev(&m));
        Store {
            root,
            state_dir,
            device,
            faults: DiskFaults::default(),
            trash: None,
            files_hashed: Default::default(),
            inline_hash_max: INLINE_HASH_MAX,
            background: BackgroundHashes::default(),
            root_device,
            warned: WarnOnce::default(),
            writers: Writers::default(),
            perms: true,
            xattrs: false,
        }
    }

    /// Look at and set the execute bit alone, not the other permission
    /// bits (`--no-perms`: a filesystem that does not keep them).
    pub fn with_perms(mut self, perms: bool) -> Self {
        self.perms = perms;
        self
    }

    /// Look at and set `user.` extended attributes (`--xattrs`).
    pub fn with_xattrs(mut self, xattrs: bool) -> Self {
        self.xattrs = xattrs;
        self
    }

    /// Give `full` the extended attributes of `entry`, where this node
    /// carries them and the version knows them.
    fn set_xattrs(&self, full: &Path, entry: &Entry) -> Result<(), StoreError> {
        match &entry.xattrs {
            Some(x) if self.xattrs => super::xattrs::apply(full, x).map_err(io_err(full)),
            _ => Ok(()),
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
                Err(e) if is_absent(&e) => break,
                Err(e) => return Err(io_err(&p)(e)),
            }
        }
        Ok(rel.to_fs(&self.root))
    }

    /// The directory's device id (the one in the state directory).
    pub fn device(&self) -> NodeId {
        self.device
    }

    /// The folder whose presence proves DIR is the directory we synced:
    /// `DIR/.dirsync` (the state directory by default, else kept empty).
    pub fn marker(&self) -> PathBuf {
        self.root.join(STATE_DIR_NAME)
    }

    pub(super) fn skip(&self, full: &Path) -> bool {
        full == self.state_dir || full == self.marker() || full.file_name().and_then(|n| n.to_str()).and_then(temp_name_device).is_some()
    }

    /// The folder under DIR that holds `full` (`None`: DIR itself, or not
    /// under DIR).
    pub fn folder_of(&self, full: &Path) -> Option<RelPath> {
        let rel = full.parent()?.strip_prefix(&self.root).ok()?;
        RelPath::new(rel.to_str()?).ok()
    }

    /// Open our copy of `entry` if the path still holds that version.
    /// A file that is there but cannot be read (a permission) is said in
    /// a warning: the peer that asked keeps trying, and the user sees why
    /// here (issue 24, case 4: nothing was logged).
    pub fn open_version(&self, entry: &Entry) -> Option<fs::File> {
        let full = match self.seen_matches(&entry.path, Some(entry)) {
            Ok((true, seen)) => seen.full,
            Ok((false, _)) => return None,
            Err(e) => {
                warn!(path = %entry.path, error = %e, "cannot send this file to a peer: it cannot be read here");
                return None;
            }
        };
        open_for_reading(&full)
            .map_err(|e| warn!(path = %entry.path, error = %e, "cannot send this file to a peer: it cannot be read here"))
            .ok()
    }

    /// True if `rel` holds what `expected` says (`None`: nothing, or an
    /// empty folder). A deleted folder is one kept as the container of what
    /// it held: a folder, or nothing once it is emptied and removed.
    pub fn matches(&self, rel: &RelPath, expected: Option<&Entry>) -> Result<bool, StoreError> {
        Ok(self.seen_matches(rel, expected)?.0)
    }

    /// `matches`, with what it saw: the callers that go on to change the
    /// path need not look up its folders again.
    fn seen_matches(&self, rel: &RelPath, expected: Option<&Entry>) -> Result<(bool, Seen), StoreError> {
        let full = self.full_path(rel)?;
        let meta = match fs::symlink_metadata(&full) {
            Ok(m) => m,
            Err(e) if is_absent(&e) => return Ok((expected.is_none_or(|e| e.deleted), Seen { full, meta: None })),
            Err(e) => return Err(io_err(&full)(e)),
        };
        let ft = meta.file_type();
        if !ft.is_file() && !ft.is_dir() && !ft.is_symlink() {
            // A FIFO, socket or device: not synced, and not ours to
            // replace (it too read "changed on disk meanwhile").
            return Err(StoreError::Special(rel.to_string()));
        }
        let matches = match expected {
            Some(e) if e.kind == Kind::Dir => meta.is_dir(),
            // An empty folder holds nothing: it counts as nothing (a file
            // beats an empty folder, see `engine::folders`; found by the
            // workload, faults seed 7200021945: one made on the way to a
            // received file, emptied since, failed every file that came
            // for its path, and was then announced as new).
            None if meta.is_dir() => is_empty_dir(&full),
            Some(e) if e.deleted => false,
            Some(e) if e.kind == Kind::Symlink => {
                ft.is_symlink() && fs::read_link(&full).ok().as_deref() == e.target.as_deref().map(Path::new)
            }
            Some(e) => ft.is_file() && meta.len() == e.size && mtime_ns(&meta) == e.mtime && is_exec(&meta) == e.exec,
            None => false,
        };
        Ok((matches, Seen { full, meta: Some(meta) }))
    }

    /// Every change under DIR starts here: the path must still hold
    /// `expected`, and an injected disk fault fails it.
    /// What it saw, for the change that follows.
    fn ensure_matches(&self, rel: &RelPath, expected: Option<&Entry>) -> Result<Seen, StoreError> {
        self.faults.check(&rel.to_fs(&self.root))?;
        let (matches, seen) = self.seen_matches(rel, expected)?;
        if !matches {
            return Err(StoreError::Changed(rel.to_string()));
        }
        // Never under a writer (a database holds its file open for as long
        // as it runs): the file stays, and the engine tries again later.
        if expected.is_some_and(|e| !e.deleted && e.kind == Kind::File) {
            let writer = match self.faults.held_open(&seen.full) {
                true => Some("the simulation".to_string()),
                false => seen.meta.as_ref().and_then(|m| self.writers.writer_of(m)),
            };
            if let Some(who) = writer {
                return Err(StoreError::Busy(rel.to_string(), who));
            }
        }
        Ok(seen)
    }

    /// Create the parent folders of `rel` (refusing symlinks on the way).
    fn make_parents(&self, rel: &RelPath) -> Result<(), StoreError> {
        if let Some(parent) = rel.parent() {
            self.make_dir(&parent)?;
        }
        Ok(())
    }

    /// Create directory `entry.path` with its mode, replacing `local`, the
    /// file or link it holds now (checked to be unchanged first).
    pub fn make_dir_over(&self, entry: &Entry, local: Option<&Entry>) -> Result<(), StoreError> {
        let rel = &entry.path;
        if let Some(l) = local.filter(|l| !l.deleted && l.kind != Kind::Dir) {
            self.ensure_matches(rel, Some(l))?;
            let full = self.full_path(rel)?;
            if l.kind == Kind::Symlink || !self.trash_moved(&full, rel) {
                fs::remove_file(&full).map_err(io_err(&full))?;
            }
        }
        self.make_dir(rel)?;
        let full = self.full_path(rel)?;
        if self.perms {
            set_mode(&full, entry, true)?;
        }
        self.set_xattrs(&full, entry)
    }

    /// Make symlink `entry.path` pointing to `entry.target` (never
    /// followed), replacing `local`, as a file is: made beside it under a
    /// temp name, then renamed over it.
    pub fn make_link(&self, entry: &Entry, local: Option<&Entry>) -> Result<(), StoreError> {
        let Some(target) = entry.target.as_deref() else {
            return Err(StoreError::Changed(entry.path.to_string()));
        };
        self.ensure_matches(&entry.path, local)?;
        self.make_parents(&entry.path)?;
        let full = self.full_path(&entry.path)?;
        let tmp = self.temp_path(&full);
        self.faults.check(&tmp)?;
        std::os::unix::fs::symlink(target, &tmp).map_err(io_err(&tmp))?;
        let placed = (|| {
            let mtime = filetime_of(entry.mtime);
            filetime::set_symlink_file_times(&tmp, mtime, mtime).map_err(io_err(&tmp))?;
            Self::clear_folder(&full, full.is_dir(), local)?;
            self.trash_linked(&full, &entry.path, local);
            fs::rename(&tmp, &full).map_err(io_err(&full))
        })();
        if placed.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        placed
    }

    /// Make room at `full` for a file where the index says `expected` is:
    /// a folder there (ours, or a container, emptied by the deletions that
    /// came with the file, or an empty one the index does not hold) is
    /// removed; one that still holds something fails as not empty.
    /// `folder_there`: whether a look just saw a folder at `full`.
    fn clear_folder(full: &Path, folder_there: bool, expected: Option<&Entry>) -> Result<(), StoreError> {
        if expected.is_none_or(|e| e.kind == Kind::Dir) && folder_there {
            fs::remove_dir(full).map_err(io_err(full))?;
        }
        Ok(())
    }

    /// Create directory `rel` and its parents. A folder made on the way
    /// gets the mode of a container (its own version, if it has a live one,
    /// sets its mode when it is applied).
    pub fn make_dir(&self, rel: &RelPath) -> Result<(), StoreError> {
        let full = self.full_path(rel)?;
        if full.is_dir() {
            return Ok(());
        }
        self.faults.check(&full)?;
        let missing: Vec<PathBuf> = rel
            .ancestors()
            .iter()
            .chain([rel])
            .map(|a| a.to_fs(&self.root))
            .filter(|p| !p.exists())
            .collect();
        fs::create_dir_all(&full).map_err(io_err(&full))?;
        for made in &missing {
            self.became_container(made);
        }
        Ok(())
    }

    /// A folder kept only for what it holds (its deletion is recorded, see
    /// `Engine::deleted_ancestors`) has no version of its own to take a
    /// mode from: it has 0o755 on every node, not what one node's umask
    /// or last chmod left (found by the workload, faults seed 7200021603),
    /// and no extended attributes.
    fn became_container(&self, full: &Path) {
        if self.perms {
            let _ = fs::set_permissions(
                full,
                std::os::unix::fs::PermissionsExt::from_mode(crate::engine::DEFAULT_FOLDER_MODE),
            );
        }
        // Nor extended attributes (found by the workload, everyday seed
        // 7100021742: a container kept those of the version it had been
        // on one host alone).
        if self.xattrs {
            let _ = super::xattrs::apply(full, &crate::wire::Xattrs::default());
        }
    }

    /// A new temp file in the folder of `rel`, created with its parents.
    pub fn create_temp(&self, rel: &RelPath) -> Result<TempFile, StoreError> {
        self.create_temp_in(rel, None)
    }

    /// `create_temp`, only while `folder` (an ancestor of `rel` the index
    /// holds) is a folder on disk: one gone was removed by the user (a
    /// look will tell), and made again on the way its deletion would be
    /// lost (found by the scenario `faults`, seed 20260102: a file
    /// received into a folder just removed brought it back everywhere).
    pub fn create_temp_in(&self, rel: &RelPath, folder: Option<&RelPath>) -> Result<TempFile, StoreError> {
        if let Some(d) = folder {
            let full = self.full_path(d)?;
            if !fs::symlink_metadata(&full).is_ok_and(|m| m.is_dir()) {
                return Err(StoreError::Changed(d.to_string()));
            }
        }
        // A folder that holds `rel` itself was just seen to be one, and
        // not a link, below folders checked to be none: nothing to make
        // and nothing to check again (most received files).
        let full = if folder.is_some() && rel.parent().as_ref() == folder {
            rel.to_fs(&self.root)
        } else {
            self.make_parents(rel)?;
            self.full_path(rel)?
        };
        let path = self.temp_path(&full);
        self.faults.check(&path)?;
        // Readable too: a range copied in the kernel is read back to hash it.
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err(&path))?;
        Ok(TempFile {
            file: Some(file),
            ino: None,
            faults: self.faults.clone(),
            path,
            committed: false,
            len: 0,
            perms: self.perms,
            xattrs: self.xattrs,
            prepared: false,
        })
    }

    /// A new temp name beside `full`.
    fn temp_path(&self, full: &Path) -> PathBuf {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = full.parent().unwrap_or(&self.root);
        dir.join(temp_name(&self.device.to_string(), n))
    }

    /// Make `tmp` visible as `entry.path`: fsync, set the mtime, check the
    /// target still holds `expected`, rename over it. What a look would
    /// see of it then, as `install`.
    pub fn commit(&self, mut tmp: TempFile, entry: &Entry, expected: Option<&Entry>) -> Result<Option<Stat>, StoreError> {
        tmp.make_durable(entry)?;
        self.install(&mut tmp, entry, expected)
    }

    /// The second half of `commit`, for a `tmp` already made durable: check
    /// the target still holds `expected`, rename over it. On failure `tmp`
    /// is left as it was, for the caller to discard. Returns the file's
    /// inode and change time once in place: what the next look compares
    /// with, since the watcher raises none for our own installs (`None` if
    /// the file cannot be looked at). The temp file is closed first
    /// (`TempFile::close`).
    pub fn install(&self, tmp: &mut TempFile, entry: &Entry, expected: Option<&Entry>) -> Result<Option<Stat>, StoreError> {
        tmp.close();
        // The rename changes the file's change time: looked at after it,
        // by path, and only if the path still holds our file (the user may
        // have put another there since).
        let ino = tmp.ino;
        let stat = |full: &Path| {
            let stat = fs::symlink_metadata(full).ok().map(|m| stat_of(&m));
            stat.filter(|s| Some(s.ino) == ino)
        };
        if expected.is_none_or(|e| e.deleted) {
            // Nothing should be there: the common case of a new file takes
            // one call, and anything found there goes the checked way.
            let full = self.full_path(&entry.path)?;
            self.faults.check(&full)?;
            if rename_if_absent(&tmp.path, &full).map_err(io_err(&full))? {
                tmp.committed = true;
                return Ok(stat(&full));
            }
        }
        let Seen { full, meta } = self.ensure_matches(&entry.path, expected)?;
        Self::clear_folder(&full, meta.is_some_and(|m| m.is_dir()), expected)?;
        self.trash_linked(&full, &entry.path, expected);
        fs::rename(&tmp.path, &full).map_err(io_err(&full))?;
        // The rename consumed the temp file's name: dropping it now only
        // closes the file. (It was `mem::forget`, which leaked one open file
        // per received file until the node ran out of descriptors; found by
        // the simulation.)
        tmp.committed = true;
        Ok(stat(&full))
    }

    /// Remove `local` (a file, or a directory if it is empty).
    pub fn delete(&self, local: &Entry) -> Result<(), StoreError> {
        let full = self.full_path(&local.path)?;
        match self.ensure_matches(&local.path, Some(local)) {
            // Gone already (moved or removed here, not looked at yet): the
            // deletion is done, and nothing is lost. Refused as a change,
            // it was never recorded, and a peer that heard of it from us
            // kept what it deleted (found by the workload, everyday seed
            // 7100021554: a file that replaced the folder became a
            // conflict copy there).
            Err(StoreError::Changed(_)) if fs::symlink_metadata(&full).is_err_and(|e| is_absent(&e)) => return Ok(()),
            r => drop(r?),
        }
        match local.kind {
            Kind::Dir => fs::remove_dir(&full).inspect_err(|e| {
                if e.kind() == io::ErrorKind::DirectoryNotEmpty {
                    self.became_container(&full);
                }
            }),
            Kind::File if self.trash_moved(&full, &local.path) => Ok(()),
            Kind::File | Kind::Symlink => fs::remove_file(&full),
        }
        .map_err(io_err(&full))
    }

    /// Remove `dirs`, innermost first, while each is empty; one already
    /// gone does not stop the ones above it (found by the workload, faults
    /// seed 7200022236). The folders removed, or the first that could not
    /// be (a read-only disk: worth another try) with why.
    pub fn remove_empty_dirs(&self, dirs: &[RelPath]) -> Result<Vec<RelPath>, (RelPath, StoreError)> {
        let mut removed = Vec::new();
        for dir in dirs {
            let full = self.full_path(dir).map_err(|e| (dir.clone(), e))?;
            self.faults.check(&full).map_err(|e| (dir.clone(), e))?;
            match fs::remove_dir(&full) {
                Ok(()) => removed.push(dir.clone()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::NotADirectory) => break,
                Err(e) => return Err((dir.clone(), io_err(&full)(e))),
            }
        }
        Ok(removed)
    }

    /// Give file `local.path` the mtime of `entry` (same content).
    pub fn set_mtime(&self, entry: &Entry, local: &Entry) -> Result<(), StoreError> {
        self.ensure_matches(&local.path, Some(local))?;
        let full = self.full_path(&entry.path)?;
        set_mode(&full, entry, self.perms)?;
        self.set_xattrs(&full, entry)?;
        filetime::set_file_mtime(&full, filetime_of(entry.mtime)).map_err(io_err(&full))
    }

    /// Move file `from` to `entry.path`, which must hold `local`.
    pub fn rename(&self, from: &Entry, entry: &Entry, local: Option<&Entry>) -> Result<(), StoreError> {
        self.ensure_matches(&from.path, Some(from))?;
        self.ensure_matches(&entry.path, local)?;
        self.make_parents(&entry.path)?;
        let src = self.full_path(&from.path)?;
        let dst = self.full_path(&entry.path)?;
        Self::clear_folder(&dst, dst.is_dir(), local)?;
        // The source takes the new version's mode and mtime before it moves
        // (so the path never shows the new name with the old mtime), and
        // gets its own back if the move fails: a source left touched would
        // look like a local edit of it.
        let before = fs::symlink_metadata(&src).map_err(io_err(&src))?;
        set_mode(&src, entry, self.perms)?;
        self.set_xattrs(&src, entry)?;
        filetime::set_file_mtime(&src, filetime_of(entry.mtime)).map_err(io_err(&src))?;
        self.trash_linked(&dst, &entry.path, local);
        fs::rename(&src, &dst).map_err(io_err(&dst)).inspect_err(|_| {
            let _ = fs::set_permissions(&src, before.permissions());
            let _ = filetime::set_file_mtime(&src, filetime::FileTime::from_last_modification_time(&before));
        })
    }

    /// Copy file `from` to `entry.path` (which must hold `local`), checking
    /// the copy's hash.
    pub fn copy(&self, from: &Entry, entry: &Entry, local: Option<&Entry>) -> Result<Option<Stat>, StoreError> {
        let src = self.full_path(&from.path)?;
        let mut tmp = self.create_temp(&entry.path)?;
        let input = File::open(&src).map_err(io_err(&src))?;
        let mut hasher = blake3::Hasher::new();
        let mut offset = 0;
        while offset < entry.size {
            // Copied in the kernel, then hashed as read back from the copy:
            // what is verified is what was written, even if the source
            // changes meanwhile.
            let n = (entry.size - offset).min(256 * 1024) as usize;
            hasher.update(&tmp.append_range(&input, offset, n)?);
            offset += n as u64;
        }
        if Hash::from(hasher.finalize()) != entry.hash {
            return Err(StoreError::HashMismatch(entry.path.to_string()));
        }
        self.commit(tmp, entry, local)
    }

    /// Remove temp files left by a crash. Returns how many.
    pub fn clean_temp_files(&self) -> usize {
        self.remove_temp_files_except(&BTreeSet::new()).len()
    }

    /// Remove every temp file but those in `keep` (being written now).
    /// Returns the ones removed.
    pub fn remove_temp_files_except(&self, keep: &BTreeSet<PathBuf>) -> Vec<PathBuf> {
        let mut removed = Vec::new();
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
                        removed.push(full);
                    }
                } else if ft.is_dir() && full != self.state_dir {
                    stack.push(full);
                }
            }
        }
        removed
    }
}

/// True if `dir` is a folder with nothing in it.
fn is_empty_dir(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none())
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
